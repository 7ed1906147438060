package focus

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/credentials"
)

// roomInfoFunc answers RoomPolicy with a fixed result.
type roomInfoFunc func() (*credentials.AccessPolicy, error)

func (f roomInfoFunc) RoomPolicy(context.Context, string) (*credentials.AccessPolicy, error) {
	return f()
}

func (roomInfoFunc) RoomEncrypted(context.Context, string) (bool, error) { return false, nil }

// A room whose state cannot be read now is a 503 to retry, never a 500; a
// room whose policy event does not parse refuses (403) instead of counting
// as a room without a policy.
func TestRoomPolicyFailuresAreNotServerErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"homeserver unreachable", errors.New("failed to read the room's state: connection refused"), http.StatusServiceUnavailable, "M_UNKNOWN"},
		{"invalid policy", credentials.ErrInvalidPolicy, http.StatusForbidden, "M_FORBIDDEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.hs.issue("tok-alice", "@alice:local.test")
			h.svc.access = NewCredentialAccess(nil, roomInfoFunc(func() (*credentials.AccessPolicy, error) {
				return nil, tc.err
			}), nil, false, zerolog.Nop())
			resp, out := h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
			require.Equal(t, tc.status, resp.StatusCode, out)
			require.Equal(t, tc.code, out["errcode"])
			require.Empty(t, h.rooms.created, "no room is created for a refused request")
		})
	}
}

// Every token says explicitly whether its holder may send data: LiveKit reads
// a missing canPublishData as "like canPublish" in some versions and as
// allowed in others. Subscribe-only (remote) users may not send data.
func TestCanPublishDataIsExplicit(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	h.hs.issue("tok-rita", "@rita:remote.test")
	for _, tc := range []struct {
		token, server, user string
		want                bool
	}{
		{"tok-alice", "local.test", "@alice:local.test", true},
		{"tok-rita", "remote.test", "@rita:remote.test", false},
	} {
		resp, out := h.post(t, "/get_token", tokenBody(tc.token, tc.server, tc.user))
		require.Equal(t, http.StatusOK, resp.StatusCode, out)
		video, ok := jwtClaims(t, out["jwt"].(string))["video"].(map[string]any)
		require.True(t, ok)
		require.Contains(t, video, "canPublishData", "set explicitly for %s", tc.user)
		require.Equal(t, tc.want, video["canPublishData"], tc.user)
	}
}
