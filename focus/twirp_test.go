package focus

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
	"github.com/twitchtv/twirp"
)

// stubLiveKit answers GetParticipant as a LiveKit server would and checks the
// call's token.
type stubLiveKit struct {
	livekit.RoomService // other methods are not called
	t                   *testing.T
}

func (s *stubLiveKit) GetParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.ParticipantInfo, error) {
	authz, _ := ctx.Value(authzKey{}).(string)
	v, err := auth.ParseAPIToken(strings.TrimPrefix(authz, "Bearer "))
	if err != nil {
		return nil, twirp.NewError(twirp.Unauthenticated, "no token")
	}
	_, grants, err := v.Verify(testSecret)
	if err != nil || !grants.Video.RoomAdmin || grants.Video.Room != req.Room {
		return nil, twirp.NewError(twirp.PermissionDenied, "needs roomAdmin for the room")
	}
	if req.Identity != "present" {
		return nil, twirp.NotFoundError("participant not found")
	}
	return &livekit.ParticipantInfo{Identity: req.Identity, State: livekit.ParticipantInfo_ACTIVE}, nil
}

type authzKey struct{}

// GetParticipant over Twirp (drop-in mode) carries a roomAdmin token for the
// room; an absent participant is twirp.NotFound, which delayed-leave jobs
// take as gone.
func TestTwirpGetParticipant(t *testing.T) {
	twirpSrv := livekit.NewRoomServiceServer(&stubLiveKit{t: t}, twirp.WithServerPathPrefix("/twirp"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		twirpSrv.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), authzKey{}, r.Header.Get("Authorization"))))
	}))
	t.Cleanup(srv.Close)
	rs, err := NewTwirpRoomService(strings.Replace(srv.URL, "http://", "ws://", 1), testKey, testSecret, nil)
	require.NoError(t, err)
	p, err := rs.GetParticipant(context.Background(), &livekit.RoomParticipantIdentity{Room: "r", Identity: "present"})
	require.NoError(t, err)
	require.Equal(t, "present", p.Identity)
	_, err = rs.GetParticipant(context.Background(), &livekit.RoomParticipantIdentity{Room: "r", Identity: "absent"})
	var terr twirp.Error
	require.True(t, errors.As(err, &terr))
	require.Equal(t, twirp.NotFound, terr.Code())

	g := &delegator{rooms: rs, cfg: DefaultConfig().DelayedEvents}
	present, err := g.present(context.Background(), &delegation{LiveKitRoom: "r", Identity: "present"})
	require.NoError(t, err)
	require.True(t, present)
	present, err = g.present(context.Background(), &delegation{LiveKitRoom: "r", Identity: "absent"})
	require.NoError(t, err)
	require.False(t, present)
}
