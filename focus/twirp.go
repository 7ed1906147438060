package focus

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/twitchtv/twirp"
)

// TwirpRoomService is a RoomService backed by a LiveKit server's Twirp API,
// which makes the focus a drop-in replacement for lk-jwt-service in front of a
// stock LiveKit server. Each call carries a short-lived token with just the
// grant the call needs.
type TwirpRoomService struct {
	client    livekit.RoomService
	apiKey    string
	apiSecret string
}

// NewTwirpRoomService talks to the server at baseURL (http(s)://host[:port];
// ws(s):// is converted as LiveKit's SDKs do).
func NewTwirpRoomService(baseURL, apiKey, apiSecret string, httpClient *http.Client) (*TwirpRoomService, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("bad LiveKit URL: %w", err)
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	case "http", "https":
	default:
		return nil, fmt.Errorf("bad LiveKit URL scheme %q", u.Scheme)
	}
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 10 * time.Second}
	}
	return &TwirpRoomService{
		client:    livekit.NewRoomServiceProtobufClient(strings.TrimRight(u.String(), "/"), httpClient),
		apiKey:    apiKey,
		apiSecret: apiSecret,
	}, nil
}

func (t *TwirpRoomService) authorize(ctx context.Context, grant *auth.VideoGrant) (context.Context, error) {
	token, err := auth.NewAccessToken(t.apiKey, t.apiSecret).SetVideoGrant(grant).SetValidFor(time.Minute).ToJWT()
	if err != nil {
		return nil, fmt.Errorf("failed to sign Twirp token: %w", err)
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	return twirp.WithHTTPRequestHeaders(ctx, h)
}

// CreateRoom creates the room or returns the existing one.
func (t *TwirpRoomService) CreateRoom(ctx context.Context, req *livekit.CreateRoomRequest) (*livekit.Room, error) {
	ctx, err := t.authorize(ctx, &auth.VideoGrant{RoomCreate: true})
	if err != nil {
		return nil, err
	}
	return t.client.CreateRoom(ctx, req)
}

// ListParticipants lists a room's participants.
func (t *TwirpRoomService) ListParticipants(ctx context.Context, req *livekit.ListParticipantsRequest) (*livekit.ListParticipantsResponse, error) {
	ctx, err := t.authorize(ctx, &auth.VideoGrant{RoomAdmin: true, Room: req.Room})
	if err != nil {
		return nil, err
	}
	return t.client.ListParticipants(ctx, req)
}

// GetParticipant finds a participant; absent ones give twirp.NotFound.
func (t *TwirpRoomService) GetParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.ParticipantInfo, error) {
	ctx, err := t.authorize(ctx, &auth.VideoGrant{RoomAdmin: true, Room: req.Room})
	if err != nil {
		return nil, err
	}
	return t.client.GetParticipant(ctx, req)
}

// RemoveParticipant disconnects a participant; absent ones give twirp.NotFound.
func (t *TwirpRoomService) RemoveParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error) {
	ctx, err := t.authorize(ctx, &auth.VideoGrant{RoomAdmin: true, Room: req.Room})
	if err != nil {
		return nil, err
	}
	return t.client.RemoveParticipant(ctx, req)
}
