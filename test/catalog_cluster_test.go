package test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// TestCatalogClusterParticipantCap: a 20-tier meeting spread over two
// nodes in two sites. Twenty participants connect through node A's focus
// (node A takes ten, the rest fall back to node B); the 21st asks node B's focus, which admitted
// nobody itself: it refuses from the cluster directory's count alone.
func TestCatalogClusterParticipantCap(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rds, err := harness.StartRedis(ctx, dir)
	require.NoError(t, err)
	t.Cleanup(rds.Stop)
	pg, err := harness.StartPostgres(ctx)
	require.NoError(t, err)
	t.Cleanup(pg.Stop)

	focusPortA, err := harness.FreePort()
	require.NoError(t, err)
	focusA := fmt.Sprintf("http://127.0.0.1:%d", focusPortA)
	idp := startCatalogIdP(t, focusA)
	catCfg := idp.catalogConfig(t, focusA)
	catCfg["levels"].(map[string]any)["public"].(map[string]any)["sites"] = []string{"a", "b"}

	portA, err := harness.FreePort()
	require.NoError(t, err)
	portB, err := harness.FreePort()
	require.NoError(t, err)
	urlA, urlB := fmt.Sprintf("ws://127.0.0.1:%d", portA), fmt.Sprintf("ws://127.0.0.1:%d", portB)
	clusterCfg := func(node, site, relay string, maxParticipants int) map[string]any {
		return map[string]any{
			"node_id": node, "site": site, "relay_address": relay,
			"heartbeat_interval": "200ms", "liveness_ttl": "2s",
			"redis": map[string]any{"address": rds.Addr, "op_timeout": "500ms"},
			"sites": map[string]any{
				"a": map[string]any{"url": urlA, "fallback": []string{"b"}},
				"b": map[string]any{"url": urlB, "fallback": []string{"a"}},
			},
			"homeservers": map[string]any{"localhost": "a"},
			"limits":      map[string]any{"max_cpu": 0, "max_participants": maxParticipants},
		}
	}
	relaySecret := "relay-secret-of-this-test-run-0123456789abcdef"
	s := startStack(t, harness.StackOptions{SFUPort: portA, FocusPort: focusPortA, Config: map[string]any{
		"database": map[string]any{"type": "postgres", "uri": pg.URI},
		"cluster":  clusterCfg("node-a", "a", freeAddr(t), 10),
		"bridge":   map[string]any{"secret": relaySecret},
		"catalog":  catCfg,
	}})

	ports := make([]int, 3)
	for i := range ports {
		ports[i], err = harness.FreePort()
		require.NoError(t, err)
	}
	udp, err := harness.FreeUDPPort()
	require.NoError(t, err)
	focusB, metricsB := fmt.Sprintf("http://127.0.0.1:%d", ports[1]), fmt.Sprintf("http://127.0.0.1:%d", ports[2])
	cfgB := map[string]any{
		"homeserver": map[string]any{"domain": "localhost", "address": s.Dendrite.URL},
		"database":   map[string]any{"type": "postgres", "uri": pg.URI},
		"appservice": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", ports[0])},
		"focus": map[string]any{
			"listen": fmt.Sprintf("127.0.0.1:%d", ports[1]),
			"openid": map[string]any{"server_overrides": map[string]any{"localhost": s.Dendrite.URL}},
			"rate_limit": map[string]any{"per_ip": map[string]any{"rate": 1000, "burst": 1000},
				"per_user": map[string]any{"rate": 1000, "burst": 1000}},
		},
		"sfu": map[string]any{
			"listen": fmt.Sprintf("127.0.0.1:%d", portB),
			"keys":   map[string]any{s.SFUKey: s.SFUSecret},
			"rtc":    map[string]any{"udp_port": udp, "tcp_port": 0, "node_ip": "127.0.0.1"},
		},
		"cluster": clusterCfg("node-b", "b", freeAddr(t), 100),
		"bridge":  map[string]any{"secret": relaySecret},
		"catalog": catCfg,
		"metrics": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", ports[2])},
		"logging": map[string]any{"level": "debug"},
	}
	raw, err := yaml.Marshal(cfgB)
	require.NoError(t, err)
	cfgPathB := filepath.Join(dir, "node-b.yaml")
	require.NoError(t, os.WriteFile(cfgPathB, raw, 0o600))
	nodeB, err := harness.StartGxconf(ctx, gxconfBin, cfgPathB, s.RegistrationPath, filepath.Join(dir, "node-b.log"), focusB+"/healthz")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node-b log:\n%s", tail(nodeB.Log(), 20000))
		}
		require.NoError(t, nodeB.Stop())
	})
	require.Eventually(t, func() bool { return len(clusterStatus(t, metricsB).Sites) == 2 },
		30*time.Second, 100*time.Millisecond, "node-b does not see node-a")

	host := register(t, s, "host")
	created, err := host.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{s.BotID}})
	require.NoError(t, err)
	room := created.RoomID
	lkRoom := focus.LiveKitRoomAlias(room.String(), "m.call#ROOM")
	code, booked := adminCall(t, nil, idp.idToken(t, "alice", "alice-pw", true), http.MethodPost,
		focusA+"/catalog/admin/api/bookings", bookingRequest("public-20-gold", room))
	require.Equal(t, http.StatusOK, code, booked)
	bookingID := booked["id"].(string)
	acceptBooking(t, s, host, room, bookingID)

	oid := openID(t, host)
	for i := range 20 {
		status, out := postJSON(t, focusA+"/get_token", getTokenBody(room, host, fmt.Sprintf("m%02d", i), oid))
		require.Equal(t, http.StatusOK, status, "participant %d: %v", i+1, out)
		joinWithToken(t, out["url"].(string), out["jwt"].(string))
	}
	perNode := func() map[cluster.NodeID]int {
		out := map[cluster.NodeID]int{}
		for _, r := range clusterStatus(t, metricsB).Rooms {
			if string(r.Room) == lkRoom {
				for _, n := range r.Nodes {
					out[n.Node] = n.Participants
				}
			}
		}
		return out
	}
	require.Eventually(t, func() bool {
		n := perNode()
		return n["node-a"]+n["node-b"] == 20
	}, 60*time.Second, 200*time.Millisecond, "node-b's directory sees the 20 participants")
	n := perNode()
	require.Positive(t, n["node-a"])
	require.Positive(t, n["node-b"], "the meeting is spread over both nodes")

	status, out := postJSON(t, focusB+"/get_token", getTokenBody(room, host, "m20", oid))
	require.Equal(t, http.StatusForbidden, status, out)
	require.Equal(t, "The booking "+bookingID+" (public, up to 20 participants) allows at most 20 participants in this meeting; 20 are already in the call.", out["error"])
	// A connected participant asking node B again is no 21st.
	status, out = postJSON(t, focusB+"/get_token", getTokenBody(room, host, "m07", oid))
	require.Equal(t, http.StatusOK, status, out)
}
