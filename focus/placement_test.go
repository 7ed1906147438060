package focus

import (
	"context"
	"net/http"
	"net/netip"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/cluster"
)

// placerFunc records the requests and answers with f.
type placerFunc struct {
	mu   sync.Mutex
	reqs []cluster.PlacementRequest
	f    func(cluster.PlacementRequest) (cluster.Placement, error)
}

func (p *placerFunc) Place(_ context.Context, req cluster.PlacementRequest) (cluster.Placement, error) {
	p.mu.Lock()
	p.reqs = append(p.reqs, req)
	p.mu.Unlock()
	return p.f(req)
}

// The token response carries the URL the cluster chose; the room is created
// here only when it was placed on this node; a full cluster is a 503.
func TestPlacementDecidesURLAndRoomCreation(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	h.svc.nodeID = "node-a"
	var node cluster.NodeID = "node-a"
	placer := &placerFunc{f: func(req cluster.PlacementRequest) (cluster.Placement, error) {
		if node == "" {
			return cluster.Placement{}, cluster.ErrNoCapacity
		}
		return cluster.Placement{Site: "berlin", URL: "wss://sfu-berlin.test", Node: cluster.Node{ID: node}}, nil
	}}
	h.svc.placer = placer

	resp, out := h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Equal(t, "wss://sfu-berlin.test", out["url"])
	require.Len(t, h.rooms.created, 1, "placed here: created here")
	wantRoom := LiveKitRoomAlias("!room:local.test", "m.call#ROOM")
	require.Equal(t, cluster.PlacementRequest{Room: cluster.RoomName(wantRoom), ServerName: "local.test",
		ClientIP: netip.MustParseAddr("127.0.0.1")}, placer.reqs[0])

	node = "node-b"
	resp, out = h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Len(t, h.rooms.created, 1, "placed elsewhere: that node creates it at join")

	node = ""
	resp, out = h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, out)
	require.Equal(t, "M_UNKNOWN", out["errcode"])
}
