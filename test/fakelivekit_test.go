package test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/twitchtv/twirp"
)

// fakeLiveKit stands in for a stock LiveKit server's Twirp RoomService, to
// check gxconf's drop-in mode (focus.sfu.url pointing at another server). It
// verifies each call's token as LiveKit does and records the calls.
type fakeLiveKit struct {
	livekit.RoomService // unimplemented methods panic: gxconf must not call them
	key, secret         string
	srv                 *httptest.Server

	mu      sync.Mutex
	created []*livekit.CreateRoomRequest
	removed []*livekit.RoomParticipantIdentity
}

type grantsKey struct{}

func newFakeLiveKit(t *testing.T, key, secret string) *fakeLiveKit {
	f := &fakeLiveKit{key: key, secret: secret}
	twirpHandler := livekit.NewRoomServiceServer(f)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		v, err := auth.ParseAPIToken(token)
		if err != nil || v.APIKey() != f.key {
			http.Error(w, `{"code":"unauthenticated","msg":"bad token"}`, http.StatusUnauthorized)
			return
		}
		_, grants, err := v.Verify(f.secret)
		if err != nil {
			http.Error(w, `{"code":"unauthenticated","msg":"bad signature"}`, http.StatusUnauthorized)
			return
		}
		twirpHandler.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), grantsKey{}, grants)))
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeLiveKit) CreateRoom(ctx context.Context, req *livekit.CreateRoomRequest) (*livekit.Room, error) {
	if g := ctx.Value(grantsKey{}).(*auth.ClaimGrants); g.Video == nil || !g.Video.RoomCreate {
		return nil, twirp.NewError(twirp.PermissionDenied, "roomCreate grant required")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, req)
	return &livekit.Room{Name: req.Name, Sid: "RM_fake"}, nil
}

func (f *fakeLiveKit) ListParticipants(ctx context.Context, req *livekit.ListParticipantsRequest) (*livekit.ListParticipantsResponse, error) {
	if g := ctx.Value(grantsKey{}).(*auth.ClaimGrants); g.Video == nil || !g.Video.RoomAdmin || g.Video.Room != req.Room {
		return nil, twirp.NewError(twirp.PermissionDenied, "roomAdmin grant for the room required")
	}
	return &livekit.ListParticipantsResponse{}, nil
}

func (f *fakeLiveKit) RemoveParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error) {
	if g := ctx.Value(grantsKey{}).(*auth.ClaimGrants); g.Video == nil || !g.Video.RoomAdmin || g.Video.Room != req.Room {
		return nil, twirp.NewError(twirp.PermissionDenied, "roomAdmin grant for the room required")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, req)
	return &livekit.RemoveParticipantResponse{}, nil
}

func (f *fakeLiveKit) removedIdentities() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.removed {
		out = append(out, r.Room+"/"+r.Identity)
	}
	return out
}

func (f *fakeLiveKit) createdRooms() []*livekit.CreateRoomRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*livekit.CreateRoomRequest(nil), f.created...)
}
