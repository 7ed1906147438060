package focus

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/credentials"
)

type entitleFunc func(context.Context, EntitlementRequest) (Entitlement, error)

func (f entitleFunc) Admit(ctx context.Context, req EntitlementRequest) (Entitlement, error) {
	return f(ctx, req)
}

type recordingPlacer struct{ reqs []cluster.PlacementRequest }

func (p *recordingPlacer) Place(_ context.Context, req cluster.PlacementRequest) (cluster.Placement, error) {
	p.reqs = append(p.reqs, req)
	return cluster.Placement{URL: "wss://booked.test", Node: cluster.Node{ID: "n1"}, Site: req.Sites[0]}, nil
}

// TestEntitlements: the booking check runs after the access policy with the
// room's level; its refusal reaches the user verbatim, its cap and end
// tighten the token, its sites restrict placement; a failing check is 503.
func TestEntitlements(t *testing.T) {
	placer := &recordingPlacer{}
	h := newHarnessOpts(t, nil, func(o *Options) { o.Placer = placer; o.NodeID = "n1" })
	h.hs.issue("tok-alice", "@alice:local.test")
	h.svc.access = deciderFunc(func(context.Context, AccessRequest) (AccessDecision, error) {
		return AccessDecision{Level: credentials.LevelKritis, MaxParticipants: 100}, nil
	})
	var seen EntitlementRequest
	h.svc.entitle = entitleFunc(func(_ context.Context, req EntitlementRequest) (Entitlement, error) {
		seen = req
		return Entitlement{Refused: "The booking b1 allows at most 20 participants in this meeting; 20 are in the call."}, nil
	})
	resp, out := h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Equal(t, "M_FORBIDDEN", out["errcode"])
	require.Equal(t, "The booking b1 allows at most 20 participants in this meeting; 20 are in the call.", out["error"])
	require.Equal(t, credentials.LevelKritis, seen.Level)
	require.Equal(t, "!room:local.test", seen.RoomID)
	require.Equal(t, LiveKitRoomAlias("!room:local.test", "m.call#ROOM"), seen.LiveKitRoom)
	require.Empty(t, placer.reqs, "refused before placement")

	end := time.Now().Add(90 * time.Second)
	h.svc.entitle = entitleFunc(func(context.Context, EntitlementRequest) (Entitlement, error) {
		return Entitlement{Booking: "b1", MaxParticipants: 20, Sites: []cluster.SiteID{"de-ber-1"}, NotAfter: end}, nil
	})
	resp, out = h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Equal(t, "wss://booked.test", out["url"])
	require.Equal(t, []cluster.SiteID{"de-ber-1"}, placer.reqs[0].Sites)
	require.EqualValues(t, 20, h.rooms.created[len(h.rooms.created)-1].MaxParticipants, "the smaller cap wins")
	claims := jwtClaims(t, out["jwt"].(string))
	require.LessOrEqual(t, int64(claims["exp"].(float64)), end.Unix(), "the token ends with the booking")

	// The moment between the request's clock reading and the signature
	// must not carry the token past the booking: a request clock 700 ms
	// behind the signer's and a booking ending 300 ms into a second put
	// a token cut by duration alone a second past the end (seen once in CI).
	end = time.Now().Add(time.Minute).Truncate(time.Second).Add(300 * time.Millisecond)
	h.svc.now = func() time.Time { return time.Now().Add(-700 * time.Millisecond) }
	resp, out = h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	h.svc.now = time.Now
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	claims = jwtClaims(t, out["jwt"].(string))
	require.Equal(t, end.Unix(), int64(claims["exp"].(float64)), "the token ends with the booking, not after it")

	h.svc.entitle = entitleFunc(func(context.Context, EntitlementRequest) (Entitlement, error) {
		return Entitlement{}, errors.New("database is locked")
	})
	resp, out = h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "Unable to check the room's service booking, try again later.", out["error"])
}
