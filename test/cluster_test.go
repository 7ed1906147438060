package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// TestClusterPlacement runs two gxconf nodes in two sites with one Redis and
// one PostgreSQL, behind one Dendrite: the homeserver's users are placed in
// site "b"; a room stays on the node that hosts it whichever node's focus is
// asked; a token from one node's focus is checked by the other node's SFU
// (grants are shared); `gxconf cluster status` shows both nodes and the
// room; after `kill -9` of the hosting node, requests fall back to site "a".
func TestClusterPlacement(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rds, err := harness.StartRedis(ctx, dir)
	require.NoError(t, err)
	t.Cleanup(rds.Stop)
	pg, err := harness.StartPostgres(ctx)
	require.NoError(t, err)
	t.Cleanup(pg.Stop)

	portA, err := harness.FreePort()
	require.NoError(t, err)
	portB, err := harness.FreePort()
	require.NoError(t, err)
	urlA, urlB := fmt.Sprintf("ws://127.0.0.1:%d", portA), fmt.Sprintf("ws://127.0.0.1:%d", portB)
	clusterCfg := func(node, site string) map[string]any {
		return map[string]any{
			"node_id": node, "site": site,
			"heartbeat_interval": "200ms", "liveness_ttl": "1s",
			"redis":       map[string]any{"address": rds.Addr, "op_timeout": "500ms"},
			"sites":       map[string]any{"a": map[string]any{"url": urlA}, "b": map[string]any{"url": urlB, "fallback": []string{"a"}}},
			"homeservers": map[string]any{"localhost": "b"},
			// The CI machine's load is not the nodes' own: no CPU limit.
			"limits": map[string]any{"max_cpu": 0},
		}
	}
	s := startStack(t, harness.StackOptions{SFUPort: portA, Config: map[string]any{
		"database": map[string]any{"type": "postgres", "uri": pg.URI},
		"cluster":  clusterCfg("node-a", "a"),
	}})

	// Node B: the same registration, database and SFU keys, its own ports.
	ports := make([]int, 4)
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
		"cluster": clusterCfg("node-b", "b"),
		"metrics": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", ports[2])},
		"logging": map[string]any{"level": "debug"},
	}
	raw, err := yaml.Marshal(cfgB)
	require.NoError(t, err)
	cfgPathB := filepath.Join(dir, "node-b.yaml")
	require.NoError(t, os.WriteFile(cfgPathB, raw, 0o600))
	var nodeB *harness.Process
	startB := func(run int) {
		nodeB, err = harness.StartGxconf(ctx, gxconfBin, cfgPathB, s.RegistrationPath, filepath.Join(dir, fmt.Sprintf("node-b-%d.log", run)), focusB+"/healthz")
		require.NoError(t, err)
	}
	startB(1)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node-b log:\n%s", tail(nodeB.Log(), 20000))
		}
		select {
		case <-nodeB.Done():
		default:
			require.NoError(t, nodeB.Stop())
		}
	})

	alice, bob := register(t, s, "alice"), register(t, s, "bob")
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.ID}})
	require.NoError(t, err)
	room := created.RoomID
	_, err = bob.Client.JoinRoomByID(ctx, room)
	require.NoError(t, err)
	lkRoom := focus.LiveKitRoomAlias(room.String(), "m.call#ROOM")

	token := func(focusURL string, u *harness.User, member string) (int, string, string) {
		status, out := postJSON(t, focusURL+"/get_token", getTokenBody(room, u, member, openID(t, u)))
		if status != http.StatusOK {
			return status, "", ""
		}
		return status, out["url"].(string), out["jwt"].(string)
	}
	// Both nodes see each other before anything is placed.
	require.Eventually(t, func() bool { return len(clusterStatus(t, metricsB).Sites) == 2 },
		30*time.Second, 100*time.Millisecond, "node-b does not see node-a")

	// Alice asks node A's focus: localhost's users belong to site b.
	status, aURL, aJWT := token(s.FocusURL, alice, "alice-1")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, urlB, aURL, "placed in the requester's site")
	a := joinWithToken(t, aURL, aJWT) // node B checks node A's grant in the shared database
	pub, err := loadtest.StartPublisher(a.room, loadtest.PublishOptions{Audio: true, Video: true})
	require.NoError(t, err)
	t.Cleanup(pub.Stop)

	// The room is hosted on node-b, and the directory says so.
	require.Eventually(t, func() bool {
		for _, r := range clusterStatus(t, s.MetricsURL).Rooms {
			if string(r.Room) == lkRoom && len(r.Nodes) == 1 && r.Nodes[0].Node == "node-b" {
				return true
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond, "node-a does not see the room on node-b")

	// Bob asks node B's focus and lands in the same room on node-b.
	status, bURL, bJWT := token(focusB, bob, "bob-1")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, urlB, bURL)
	b := joinWithToken(t, bURL, bJWT)
	aliceID := focus.LiveKitIdentity(alice.ID.String(), alice.Client.DeviceID.String(), "alice-1")
	require.Eventually(t, func() bool {
		v := b.stream(aliceID + "/video")
		return v != nil && v.Frames.Load() > 10
	}, 30*time.Second, 50*time.Millisecond, "bob does not receive alice's video on node-b")

	// The operator's view.
	out, err := exec.Command(gxconfBin, "cluster", "status", "-url", metricsB).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, want := range []string{"node-a", "node-b", lkRoom, urlA, urlB} {
		require.True(t, bytes.Contains(out, []byte(want)), "cluster status shows %s:\n%s", want, out)
	}

	// `gxconf cluster drain`: node-b leaves placement at once, tells its
	// participants to reconnect elsewhere (MIGRATION) and exits cleanly.
	out, err = exec.Command(gxconfBin, "cluster", "drain", "-url", metricsB).CombinedOutput()
	require.NoError(t, err, "%s", out)
	// Drain returns only when no participant is left on the node.
	select {
	case <-nodeB.Done():
		require.NoError(t, nodeB.Stop(), "a drained node exits cleanly")
	case <-time.After(60 * time.Second):
		t.Fatal("node-b did not stop after draining")
	}
	require.Contains(t, nodeB.Log(), `"message":"drained"`, "node-b moved its participants before stopping")
	status, url, _ := token(s.FocusURL, alice, "alice-2")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, urlA, url, "a drained node gets no placements")

	// node-b comes back; then kill -9: node-a stops counting it and places
	// the room in the fallback site again.
	startB(2)
	require.Eventually(t, func() bool {
		status, url, _ := token(s.FocusURL, alice, "alice-3")
		return status == http.StatusOK && url == urlB
	}, 30*time.Second, 100*time.Millisecond, "node-b not placed again after its restart")
	killedAt := time.Now()
	require.NoError(t, syscall.Kill(-nodeB.Pid(), syscall.SIGKILL))
	<-nodeB.Done()
	require.Eventually(t, func() bool {
		status, url, _ := token(s.FocusURL, alice, "alice-4")
		return status == http.StatusOK && url == urlA
	}, 30*time.Second, 100*time.Millisecond, "no fallback to site a after node-b died")
	t.Logf("placement moved to site a %s after kill -9 of node-b", time.Since(killedAt).Round(10*time.Millisecond))
}

// clusterStatus asks a node's metrics listener for its view of the cluster.
func clusterStatus(t *testing.T, metricsURL string) cluster.Status {
	t.Helper()
	resp, err := http.Get(metricsURL + "/cluster/status")
	require.NoError(t, err)
	defer resp.Body.Close()
	var st cluster.Status
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}
