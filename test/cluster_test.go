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
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
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
// one PostgreSQL behind one Dendrite. The homeserver's users are placed in
// site "b"; a token from one node's focus is checked by the other node's SFU
// (grants are shared); node-b takes one participant, so the room's second
// participant goes to site "a" and the bridge relays media both ways
// between the nodes; `gxconf cluster status` shows both nodes and the room;
// `gxconf cluster drain` empties node-b and stops it cleanly; after a
// restart and `kill -9`, node-a drops node-b within the liveness TTL.
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
	relayA, relayB := freeAddr(t), freeAddr(t)
	clusterCfg := func(node, site, relay string, maxParticipants int) map[string]any {
		return map[string]any{
			"node_id": node, "site": site, "relay_address": relay,
			"heartbeat_interval": "200ms", "liveness_ttl": "1s",
			"redis":       map[string]any{"address": rds.Addr, "op_timeout": "500ms"},
			"sites":       map[string]any{"a": map[string]any{"url": urlA}, "b": map[string]any{"url": urlB, "fallback": []string{"a"}}},
			"homeservers": map[string]any{"localhost": "b"},
			// The CI machine's load is not the nodes' own: no CPU limit.
			"limits": map[string]any{"max_cpu": 0, "max_participants": maxParticipants},
		}
	}
	relaySecret := "relay-secret-of-this-test-run-0123456789abcdef"
	s := startStack(t, harness.StackOptions{SFUPort: portA, Config: map[string]any{
		"database": map[string]any{"type": "postgres", "uri": pg.URI},
		"cluster":  clusterCfg("node-a", "a", relayA, 100),
		"bridge":   map[string]any{"secret": relaySecret},
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
		// node-b takes one participant: the second one of the room goes to
		// the fallback site, and the bridge relays between the two nodes.
		"cluster": clusterCfg("node-b", "b", relayB, 1),
		"bridge":  map[string]any{"secret": relaySecret},
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

	// Bob asks node B's focus: node-b is full, so he goes to site a's node
	// and the room spans both nodes.
	require.Eventually(t, func() bool { return nodeLoad(t, s.MetricsURL, "node-b").Participants == 1 },
		30*time.Second, 100*time.Millisecond, "node-a does not see alice on node-b")
	status, bURL, bJWT := token(focusB, bob, "bob-1")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, urlA, bURL, "the hosting node is full: fallback site")
	b := joinWithToken(t, bURL, bJWT)
	aliceID := focus.LiveKitIdentity(alice.ID.String(), alice.Client.DeviceID.String(), "alice-1")
	bobID := focus.LiveKitIdentity(bob.ID.String(), bob.Client.DeviceID.String(), "bob-1")
	// The bridge carries alice's media from node-b to bob on node-a, and
	// bob's data the other way, under their own identities.
	bpub, err := loadtest.StartPublisher(b.room, loadtest.PublishOptions{Audio: true})
	require.NoError(t, err)
	t.Cleanup(bpub.Stop)
	require.Eventually(t, func() bool {
		v, au := b.stream(aliceID+"/video"), a.stream(bobID+"/audio")
		return v != nil && v.Frames.Load() > 10 && au != nil && au.Frames.Load() > 10
	}, 30*time.Second, 50*time.Millisecond, "media does not cross the bridge between node-a and node-b")
	require.Zero(t, b.stream(aliceID+"/video").Corrupt.Load(), "relayed video arrives intact")

	// The directory knows where each participant and track lives: alice
	// (audio, video) on node-b, bob (audio) on node-a; relayed copies are
	// not counted.
	roomOn := func(metricsURL string) map[cluster.NodeID]cluster.RoomNodeStatus {
		out := map[cluster.NodeID]cluster.RoomNodeStatus{}
		for _, r := range clusterStatus(t, metricsURL).Rooms {
			if string(r.Room) == lkRoom {
				for _, n := range r.Nodes {
					out[n.Node] = n
				}
			}
		}
		return out
	}
	require.Eventually(t, func() bool {
		on := roomOn(s.MetricsURL)
		return on["node-a"].Participants == 1 && on["node-a"].Tracks == 1 && on["node-b"].Participants == 1 && on["node-b"].Tracks == 2
	}, 30*time.Second, 100*time.Millisecond, "the directory does not place alice and bob: %+v", roomOn(s.MetricsURL))

	// Twirp on node-a lists the room's participants once each: bob is
	// here, alice is relayed from node-b.
	rsA := lksdk.NewRoomServiceClient(httpOf(urlA), s.SFUKey, s.SFUSecret)
	list, err := rsA.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: lkRoom})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{aliceID, bobID}, identitiesOf(list.Participants))

	// Relay metrics on both nodes while media crosses, and the relay
	// bitrate in the heartbeat.
	require.Eventually(t, func() bool {
		return scrapeMetric(t, metricsB, "gxconf_bridge_relay_bytes_total", `peer="node-a"`, `direction="out"`) > 0 &&
			scrapeMetric(t, metricsB, "gxconf_bridge_relay_bytes_total", `peer="node-a"`, `direction="in"`) > 0 &&
			scrapeMetric(t, s.MetricsURL, "gxconf_bridge_relay_bytes_total", `peer="node-b"`, `direction="in"`) > 0 &&
			scrapeMetric(t, s.MetricsURL, "gxconf_bridge_relay_tracks", `peer="node-b"`, `direction="in"`) >= 2 &&
			scrapeMetric(t, metricsB, "gxconf_bridge_relay_tracks", `peer="node-a"`, `direction="out"`) >= 2 &&
			scrapeMetric(t, s.MetricsURL, "gxconf_bridge_relay_rtt_seconds", `peer="node-b"`) > 0
	}, 30*time.Second, 200*time.Millisecond, "relay metrics stay zero while media crosses")
	require.Eventually(t, func() bool { return nodeLoad(t, s.MetricsURL, "node-b").RelayBitrate > 0 },
		30*time.Second, 200*time.Millisecond, "node-b's heartbeat carries no relay bitrate")

	// The operator's view, with participants and tracks per node.
	out, err := exec.Command(gxconfBin, "cluster", "status", "-url", metricsB).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, want := range []string{"node-a", "node-b", lkRoom, urlA, urlB} {
		require.True(t, bytes.Contains(out, []byte(want)), "cluster status shows %s:\n%s", want, out)
	}
	for _, line := range []string{`node-b\s+1\s+2`, `node-a\s+1\s+1`} {
		require.Regexp(t, regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(lkRoom)+`\s+`+line+`\s*$`), string(out),
			"cluster status counts the room's participants and tracks per node")
	}
	// node-b's relay link for the room: bob's two tracks out to node-a,
	// alice's one in, media flowing both ways.
	require.Contains(t, string(out), "Relay links of node-b")
	require.Regexp(t, regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(lkRoom)+`\s+node-a\s+connected\s+2\s+1\s+[1-9]\d*\s+[1-9]\d*\s`), string(out),
		"cluster status shows node-b's relay link with its tracks and bitrates")

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
	// The clients would try to come back to node-b's own URL (no balancer in
	// this test): they go.
	a.room.Disconnect()
	b.room.Disconnect()
	status, url, _ := token(s.FocusURL, alice, "alice-2")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, urlA, url, "a drained node gets no placements")

	// node-b comes back; then kill -9: node-a stops counting it and places
	// the room in the fallback site again.
	startB(2)
	seesB := func() bool {
		for _, s := range clusterStatus(t, s.MetricsURL).Sites {
			for _, n := range s.Nodes {
				if n.ID == "node-b" && n.State == cluster.NodeServing {
					return true
				}
			}
		}
		return false
	}
	require.Eventually(t, seesB, 30*time.Second, 100*time.Millisecond, "node-a does not see node-b after its restart")

	// A removal reaches a node that shares nothing with the one deciding it:
	// carol's call lives on node-b only; node-a's appservice processes her
	// leave and its focus removes her there over the node bus.
	carol := register(t, s, "carol")
	other, err := carol.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	require.NoError(t, err)
	status, out2 := postJSON(t, s.FocusURL+"/get_token", getTokenBody(other.RoomID, carol, "carol-1", openID(t, carol)))
	require.Equal(t, http.StatusOK, status, out2)
	require.Equal(t, urlB, out2["url"])
	c := joinWithToken(t, out2["url"].(string), out2["jwt"].(string))
	cpub, err := loadtest.StartPublisher(c.room, loadtest.PublishOptions{Audio: true})
	require.NoError(t, err)
	t.Cleanup(cpub.Stop)

	// The Twirp RoomService of node-a, which does not host carol's room,
	// acts on node-b: list, get, mute, update, data.
	otherLk := focus.LiveKitRoomAlias(other.RoomID.String(), "m.call#ROOM")
	carolID := focus.LiveKitIdentity(carol.ID.String(), carol.Client.DeviceID.String(), "carol-1")
	require.Eventually(t, func() bool {
		l, err := rsA.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: otherLk})
		return err == nil && len(l.Participants) == 1 && l.Participants[0].GetIdentity() == carolID && len(l.Participants[0].GetTracks()) == 1
	}, 30*time.Second, 100*time.Millisecond, "node-a's ListParticipants does not show carol on node-b")
	got, err := rsA.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: otherLk, Identity: carolID})
	require.NoError(t, err)
	require.Equal(t, carolID, got.GetIdentity())
	mute, err := rsA.MutePublishedTrack(ctx, &livekit.MuteRoomTrackRequest{Room: otherLk, Identity: carolID, TrackSid: cpub.AudioPub.SID(), Muted: true})
	require.NoError(t, err)
	require.True(t, mute.GetTrack().GetMuted())
	require.Eventually(t, func() bool { return cpub.AudioPub.IsMuted() }, 10*time.Second, 20*time.Millisecond,
		"carol's client on node-b is not told of the mute from node-a")
	_, err = rsA.UpdateParticipant(ctx, &livekit.UpdateParticipantRequest{Room: otherLk, Identity: carolID, Metadata: "set-on-node-a"})
	require.NoError(t, err)
	rsB := lksdk.NewRoomServiceClient(httpOf(urlB), s.SFUKey, s.SFUSecret)
	got, err = rsB.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: otherLk, Identity: carolID})
	require.NoError(t, err)
	require.Equal(t, "set-on-node-a", got.GetMetadata())
	_, err = rsA.SendData(ctx, &livekit.SendDataRequest{Room: otherLk, Data: []byte("from-node-a"), Kind: livekit.DataPacket_RELIABLE})
	require.NoError(t, err)
	select {
	case d := <-c.data:
		require.Equal(t, "from-node-a", string(d))
	case <-time.After(10 * time.Second):
		t.Fatal("data sent through node-a's RoomService did not reach carol on node-b")
	}
	_, err = rsA.UpdateRoomMetadata(ctx, &livekit.UpdateRoomMetadataRequest{Room: otherLk, Metadata: "md-from-node-a"})
	require.NoError(t, err)
	rooms, err := rsB.ListRooms(ctx, &livekit.ListRoomsRequest{Names: []string{otherLk}})
	require.NoError(t, err)
	require.Len(t, rooms.Rooms, 1)
	require.Equal(t, "md-from-node-a", rooms.Rooms[0].GetMetadata())
	require.Eventually(t, func() bool { return c.room.Metadata() == "md-from-node-a" }, 10*time.Second, 20*time.Millisecond,
		"carol's client on node-b is not told of the room metadata set through node-a")
	_, err = rsA.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: otherLk, Identity: "nobody"})
	requireTwirpNotFound(t, err)

	_, err = carol.Client.LeaveRoom(ctx, other.RoomID)
	require.NoError(t, err)
	select {
	case r := <-c.disconnected:
		require.Equal(t, lksdk.ParticipantRemoved, r)
	case <-time.After(30 * time.Second):
		t.Fatal("carol's session on node-b did not end after node-a processed her leave")
	}
	// RemoveParticipant through node-a's Twirp ends dave's call on node-b.
	dave := register(t, s, "dave")
	third, err := dave.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	require.NoError(t, err)
	// node-b (one participant at most) has room again once carol is gone
	// and her placement no longer counts as pending (5 s).
	var out3 map[string]any
	require.Eventually(t, func() bool {
		status, out3 = postJSON(t, s.FocusURL+"/get_token", getTokenBody(third.RoomID, dave, "dave-1", openID(t, dave)))
		return status == http.StatusOK && out3["url"] == urlB
	}, 30*time.Second, 500*time.Millisecond, "dave is not placed on node-b")
	d := joinWithToken(t, out3["url"].(string), out3["jwt"].(string))
	thirdLk := focus.LiveKitRoomAlias(third.RoomID.String(), "m.call#ROOM")
	daveID := focus.LiveKitIdentity(dave.ID.String(), dave.Client.DeviceID.String(), "dave-1")
	require.Eventually(t, func() bool {
		_, err := rsA.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: thirdLk, Identity: daveID})
		return err == nil
	}, 30*time.Second, 100*time.Millisecond, "node-a does not find dave on node-b")
	_, err = rsA.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: thirdLk, Identity: daveID})
	require.NoError(t, err)
	select {
	case r := <-d.disconnected:
		require.Equal(t, lksdk.ParticipantRemoved, r)
	case <-time.After(30 * time.Second):
		t.Fatal("dave's session on node-b did not end after node-a's RemoveParticipant")
	}

	killedAt := time.Now()
	require.NoError(t, syscall.Kill(-nodeB.Pid(), syscall.SIGKILL))
	<-nodeB.Done()
	require.Eventually(t, func() bool { return !seesB() }, 30*time.Second, 20*time.Millisecond, "node-a still counts node-b after kill -9")
	t.Logf("node-a dropped node-b %s after kill -9 (liveness_ttl 1s)", time.Since(killedAt).Round(10*time.Millisecond))
	status, url, _ = token(s.FocusURL, alice, "alice-3")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, urlA, url, "a dead node gets no placements")
}

// nodeLoad is a node's load as another node's registry sees it.
func nodeLoad(t *testing.T, metricsURL string, node cluster.NodeID) cluster.Load {
	t.Helper()
	for _, s := range clusterStatus(t, metricsURL).Sites {
		for _, n := range s.Nodes {
			if n.ID == node {
				return n.Load
			}
		}
	}
	return cluster.Load{}
}

// freeAddr is a free loopback host:port.
func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := harness.FreePort()
	require.NoError(t, err)
	return fmt.Sprintf("127.0.0.1:%d", p)
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
