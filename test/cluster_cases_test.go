package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
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

// Token requests from siteAClient are placed in site a by client prefix;
// every other request of localhost's users goes to site b by homeserver.
// Linux routes all of 127.0.0.0/8 to the loopback interface, so a client
// can pick its source address there.
const siteAClient, siteBClient = "127.0.0.2", "127.0.0.1"

// crossNodes is a two-node cluster on loopback: node-a (site a) is the
// stack's gxconf, node-b (site b) a second process; one Redis, one
// PostgreSQL, one Dendrite.
type crossNodes struct {
	s                  *harness.Stack
	rds                *harness.Redis
	urlA, urlB         string
	focusB             string
	metricsA, metricsB string
	rsA, rsB           *lksdk.RoomServiceClient
}

// startCrossNodes starts the cluster and waits until each node sees the other.
func startCrossNodes(t *testing.T) *crossNodes {
	t.Helper()
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
	c := &crossNodes{rds: rds, urlA: fmt.Sprintf("ws://127.0.0.1:%d", portA), urlB: fmt.Sprintf("ws://127.0.0.1:%d", portB)}
	clusterCfg := func(node, site, relay string) map[string]any {
		return map[string]any{
			"node_id": node, "site": site, "relay_address": relay,
			"heartbeat_interval": "200ms", "liveness_ttl": "1s",
			"redis":           map[string]any{"address": rds.Addr, "op_timeout": "500ms"},
			"sites":           map[string]any{"a": map[string]any{"url": c.urlA}, "b": map[string]any{"url": c.urlB}},
			"homeservers":     map[string]any{"localhost": "b"},
			"client_prefixes": map[string]any{siteAClient + "/32": "a"},
			// The CI machine's load is not the nodes' own: no CPU limit.
			"limits": map[string]any{"max_cpu": 0},
		}
	}
	relaySecret := "relay-secret-of-this-test-run-0123456789abcdef"
	c.s = startStack(t, harness.StackOptions{SFUPort: portA, Config: map[string]any{
		"database": map[string]any{"type": "postgres", "uri": pg.URI},
		"cluster":  clusterCfg("node-a", "a", freeAddr(t)),
		"bridge":   map[string]any{"secret": relaySecret},
	}})
	c.metricsA = c.s.MetricsURL

	// node-b: the same registration, database and SFU keys, its own ports.
	ports := make([]int, 3)
	for i := range ports {
		ports[i], err = harness.FreePort()
		require.NoError(t, err)
	}
	udp, err := harness.FreeUDPPort()
	require.NoError(t, err)
	c.focusB, c.metricsB = fmt.Sprintf("http://127.0.0.1:%d", ports[1]), fmt.Sprintf("http://127.0.0.1:%d", ports[2])
	cfgB := map[string]any{
		"homeserver": map[string]any{"domain": "localhost", "address": c.s.Dendrite.URL},
		"database":   map[string]any{"type": "postgres", "uri": pg.URI},
		"appservice": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", ports[0])},
		"focus": map[string]any{
			"listen": fmt.Sprintf("127.0.0.1:%d", ports[1]),
			"openid": map[string]any{"server_overrides": map[string]any{"localhost": c.s.Dendrite.URL}},
			"rate_limit": map[string]any{"per_ip": map[string]any{"rate": 1000, "burst": 1000},
				"per_user": map[string]any{"rate": 1000, "burst": 1000}},
		},
		"sfu": map[string]any{
			"listen": fmt.Sprintf("127.0.0.1:%d", portB),
			"keys":   map[string]any{c.s.SFUKey: c.s.SFUSecret},
			"rtc":    map[string]any{"udp_port": udp, "tcp_port": 0, "node_ip": "127.0.0.1"},
		},
		"cluster": clusterCfg("node-b", "b", freeAddr(t)),
		"bridge":  map[string]any{"secret": relaySecret},
		"metrics": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", ports[2])},
		"logging": map[string]any{"level": "debug"},
	}
	raw, err := yaml.Marshal(cfgB)
	require.NoError(t, err)
	cfgPathB := filepath.Join(dir, "node-b.yaml")
	require.NoError(t, os.WriteFile(cfgPathB, raw, 0o600))
	nodeB, err := harness.StartGxconf(ctx, gxconfBin, cfgPathB, c.s.RegistrationPath, filepath.Join(dir, "node-b.log"), c.focusB+"/healthz")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node-b log:\n%s", tail(nodeB.Log(), 20000))
			t.Logf("redis log:\n%s", tail(rds.Log(), 4000))
		}
		require.NoError(t, nodeB.Stop())
	})
	c.rsA = lksdk.NewRoomServiceClient(httpOf(c.urlA), c.s.SFUKey, c.s.SFUSecret)
	c.rsB = lksdk.NewRoomServiceClient(httpOf(c.urlB), c.s.SFUKey, c.s.SFUSecret)
	require.Eventually(t, func() bool { return c.seesBoth(t, c.metricsA) && c.seesBoth(t, c.metricsB) },
		30*time.Second, 100*time.Millisecond, "the nodes do not see each other")
	return c
}

// seesBoth tells whether a node's registry lists both nodes as serving.
func (c *crossNodes) seesBoth(t *testing.T, metricsURL string) bool {
	t.Helper()
	seen := map[cluster.NodeID]bool{}
	for _, s := range clusterStatus(t, metricsURL).Sites {
		for _, n := range s.Nodes {
			seen[n.ID] = n.State == cluster.NodeServing
		}
	}
	return seen["node-a"] && seen["node-b"]
}

// roomOn is the directory's view of a room per node, as a node reports it.
func roomOn(t *testing.T, metricsURL, lkRoom string) map[cluster.NodeID]cluster.RoomNodeStatus {
	t.Helper()
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

// tokenFrom asks a focus for a token as a client at source address src;
// it answers the status, the placement's URL and the JWT, and how long
// the request took. The client gives up after 10 s so a hanging focus
// fails the test instead of stalling it.
func tokenFrom(t *testing.T, focusURL, src string, room id.RoomID, u *harness.User, member string) (status int, url, jwt string, took time.Duration) {
	t.Helper()
	body, err := json.Marshal(getTokenBody(room, u, member, openID(t, u)))
	require.NoError(t, err)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dialer.DialContext}}
	defer client.CloseIdleConnections()
	start := time.Now()
	resp, err := client.Post(focusURL+"/get_token", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	took = time.Since(start)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(data, &out), "answer is JSON: %s", data)
	if resp.StatusCode != http.StatusOK {
		t.Logf("token request for %s: %d %s", u.ID, resp.StatusCode, data)
		return resp.StatusCode, "", "", took
	}
	return resp.StatusCode, out["url"].(string), out["jwt"].(string), took
}

// callEvents records what a client was told about others.
type callEvents struct {
	mu           sync.Mutex
	muted        map[string]int  // track sid -> TrackMuted count
	unmuted      map[string]int  // track sid -> TrackUnmuted count
	spoke        map[string]bool // identity ever listed as an active speaker
	reconnecting int
}

func newCallEvents() (*callEvents, *lksdk.RoomCallback) {
	e := &callEvents{muted: map[string]int{}, unmuted: map[string]int{}, spoke: map[string]bool{}}
	cb := &lksdk.RoomCallback{
		OnActiveSpeakersChanged: func(ps []lksdk.Participant) {
			e.mu.Lock()
			defer e.mu.Unlock()
			for _, p := range ps {
				e.spoke[p.Identity()] = true
			}
		},
		OnReconnecting: func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.reconnecting++
		},
	}
	cb.OnTrackMuted = func(pub lksdk.TrackPublication, _ lksdk.Participant) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.muted[pub.SID()]++
	}
	cb.OnTrackUnmuted = func(pub lksdk.TrackPublication, _ lksdk.Participant) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.unmuted[pub.SID()]++
	}
	return e, cb
}

func (e *callEvents) mutes(sid string) (muted, unmuted int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.muted[sid], e.unmuted[sid]
}

func (e *callEvents) hasSpoken(identity string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.spoke[identity]
}

func (e *callEvents) reconnects() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reconnecting
}

// remotePub is the publication of identity's track of kind as c sees it.
func remotePub(c *sdkClient, identity string, kind lksdk.TrackKind) *lksdk.RemoteTrackPublication {
	rp := c.room.GetParticipantByIdentity(identity)
	if rp == nil {
		return nil
	}
	for _, p := range rp.TrackPublications() {
		if rp, ok := p.(*lksdk.RemoteTrackPublication); ok && p.Kind() == kind {
			return rp
		}
	}
	return nil
}

// relayRate is the bit rate node (metricsURL) sends to peer over the
// bridge, measured over window.
func relayRate(t *testing.T, metricsURL, peer string, window time.Duration) float64 {
	t.Helper()
	labels := []string{`peer="` + peer + `"`, `direction="out"`}
	b0, t0 := scrapeMetric(t, metricsURL, "gxconf_bridge_relay_bytes_total", labels...), time.Now()
	// A rate needs a window of time; there is no event to wait for.
	time.Sleep(window)
	b1, t1 := scrapeMetric(t, metricsURL, "gxconf_bridge_relay_bytes_total", labels...), time.Now()
	return (b1 - b0) * 8 / t1.Sub(t0).Seconds()
}

// nominalBitrate is a synthetic layer's bit rate at 30 fps: a key frame
// (3x) every 2 s adds one frame's bytes per second.
func nominalBitrate(l loadtest.Layer) float64 {
	return float64(l.FrameBytes) * 8 * (30 + 1)
}

// TestClusterCrossNode proves with two gxconf processes that what a client
// does on one node reaches the clients of the other: simulcast layers
// cross the relay only as wanted there (measured in relay bytes), active
// speakers and client-side mutes cross both ways, a Redis outage (hang,
// crash, restart empty) drops no call, token requests during it are placed
// on what the focus last knew, the nodes re-publish their state after it,
// and a leave reaches the other node's clients and its RoomService.
func TestClusterCrossNode(t *testing.T) {
	ctx := context.Background()
	c := startCrossNodes(t)
	s := c.s
	identity := func(u *harness.User, member string) string {
		return focus.LiveKitIdentity(u.ID.String(), u.Client.DeviceID.String(), member)
	}
	// join gets a token as a client at src and connects with exactly the
	// answer, checking the placement; the session lasts until the test ends.
	parent := t
	join := func(t *testing.T, focusURL, src, wantURL string, room id.RoomID, u *harness.User, member string, cb *lksdk.RoomCallback) *sdkClient {
		t.Helper()
		status, url, jwt, _ := tokenFrom(t, focusURL, src, room, u, member)
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, wantURL, url, "placement of %s from %s", u.ID, src)
		return joinWithTokenUntil(t, parent, url, jwt, cb) // a nil cb adds nothing
	}

	// Case 4 runs first, alone in the cluster: the relay byte counters are
	// per peer node, so no other room may send from node-a to node-b.
	t.Run("OnlyWantedLayersCross", func(t *testing.T) {
		erin, frank := register(t, s, "erin"), register(t, s, "frank")
		created, err := erin.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{frank.ID}})
		require.NoError(t, err)
		_, err = frank.Client.JoinRoomByID(ctx, created.RoomID)
		require.NoError(t, err)
		layers := loadtest.DefaultLayers()
		low, mid, high := nominalBitrate(layers[0]), nominalBitrate(layers[1]), nominalBitrate(layers[2])

		// erin publishes three layers on node-a, where nobody subscribes;
		// frank watches on node-b.
		e := join(t, c.focusB, siteAClient, c.urlA, created.RoomID, erin, "erin-1", nil)
		pub, err := loadtest.StartPublisher(e.room, loadtest.PublishOptions{Video: true, Layers: layers})
		require.NoError(t, err)
		f := join(t, s.FocusURL, siteBClient, c.urlB, created.RoomID, frank, "frank-1", nil)
		erinID := identity(erin, "erin-1")
		var video *lksdk.RemoteTrackPublication
		require.Eventually(t, func() bool {
			video = remotePub(f, erinID, lksdk.TrackKindVideo)
			st := f.stream(erinID + "/video")
			return video != nil && st != nil && st.Frames.Load() > 10
		}, 30*time.Second, 50*time.Millisecond, "erin's video does not reach frank across the relay")

		// measure switches frank to quality q, waits until its frames
		// arrive and the relay follows (settled tells the rate of a 1 s
		// window that does), then measures what node-a sends to node-b
		// over 3 s. The receiving node drops a layer it no longer forwards
		// at its next periodic want update (about every 1.2 s), so the
		// first window after a downswitch may still carry the old layer.
		measure := func(q livekit.VideoQuality, settled func(rate float64) bool) float64 {
			require.NoError(t, video.SetVideoQuality(q))
			marker := loadtest.VideoMarker(erinID, q)
			st := f.stream(erinID + "/video")
			require.Eventually(t, func() bool { return st.LastMarker() == marker },
				30*time.Second, 50*time.Millisecond, "frank does not receive layer %s", q)
			deadline := time.Now().Add(20 * time.Second)
			for r := relayRate(t, c.metricsA, "node-b", time.Second); !settled(r); r = relayRate(t, c.metricsA, "node-b", time.Second) {
				require.False(t, time.Now().After(deadline), "the relay does not follow frank's switch to %s: %.0f kbit/s", q, r/1000)
			}
			rate := relayRate(t, c.metricsA, "node-b", 3*time.Second)
			t.Logf("relay node-a -> node-b with frank on %s: %.0f kbit/s over 3 s (nominal layers q %.0f, h %.0f, f %.0f kbit/s)",
				q, rate/1000, low/1000, mid/1000, high/1000)
			return rate
		}
		r := measure(livekit.VideoQuality_LOW, func(r float64) bool { return r < mid/2 })
		require.Less(t, r, mid/2, "more than the low layer crosses the relay")
		require.Greater(t, r, low/2, "the low layer does not cross the relay")
		r = measure(livekit.VideoQuality_HIGH, func(r float64) bool { return r > high/2 })
		require.Greater(t, r, high/2, "the high layer does not cross the relay")
		require.Less(t, r, high+mid/2, "more than the high layer crosses the relay")

		// frank unsubscribes: the track no longer crosses.
		require.Equal(t, 1.0, scrapeMetric(t, c.metricsA, "gxconf_bridge_relay_tracks", `peer="node-b"`, `direction="out"`))
		require.NoError(t, video.SetSubscribed(false))
		require.Eventually(t, func() bool {
			return scrapeMetric(t, c.metricsA, "gxconf_bridge_relay_tracks", `peer="node-b"`, `direction="out"`) == 0
		}, 30*time.Second, 100*time.Millisecond, "node-a still relays erin's video after frank unsubscribed")
		r = relayRate(t, c.metricsA, "node-b", 3*time.Second)
		t.Logf("relay node-a -> node-b after frank unsubscribed: %.1f kbit/s", r/1000)
		require.Less(t, r, low/20, "erin's video still crosses the relay after frank unsubscribed")

		pub.Stop()
		e.room.Disconnect()
		f.room.Disconnect()
	})

	// The main room: alice on node-b, bob on node-a, both speaking.
	alice, bob, carol, dave := register(t, s, "alice"), register(t, s, "bob"), register(t, s, "carol"), register(t, s, "dave")
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.ID, carol.ID, dave.ID}})
	require.NoError(t, err)
	room := created.RoomID
	for _, u := range []*harness.User{bob, carol, dave} {
		_, err = u.Client.JoinRoomByID(ctx, room)
		require.NoError(t, err)
	}
	lkRoom := focus.LiveKitRoomAlias(room.String(), "m.call#ROOM")
	aliceID, bobID, carolID, daveID := identity(alice, "alice-1"), identity(bob, "bob-1"), identity(carol, "carol-1"), identity(dave, "dave-1")
	aliceEv, aliceCB := newCallEvents()
	bobEv, bobCB := newCallEvents()
	a := join(t, s.FocusURL, siteBClient, c.urlB, room, alice, "alice-1", aliceCB)
	b := join(t, c.focusB, siteAClient, c.urlA, room, bob, "bob-1", bobCB)
	// -dBov 30: speech.
	apub, err := loadtest.StartPublisher(a.room, loadtest.PublishOptions{Audio: true, AudioLevel: 30})
	require.NoError(t, err)
	t.Cleanup(apub.Stop)
	bpub, err := loadtest.StartPublisher(b.room, loadtest.PublishOptions{Audio: true, AudioLevel: 30})
	require.NoError(t, err)
	t.Cleanup(bpub.Stop)
	require.Eventually(t, func() bool {
		ab, ba := b.stream(aliceID+"/audio"), a.stream(bobID+"/audio")
		return ab != nil && ab.Frames.Load() > 10 && ba != nil && ba.Frames.Load() > 10
	}, 30*time.Second, 50*time.Millisecond, "audio does not cross between node-a and node-b")

	t.Run("ActiveSpeakersCross", func(t *testing.T) {
		require.Eventually(t, func() bool { return bobEv.hasSpoken(aliceID) }, 30*time.Second, 50*time.Millisecond,
			"bob on node-a is not told that alice on node-b speaks")
		require.Eventually(t, func() bool { return aliceEv.hasSpoken(bobID) }, 30*time.Second, 50*time.Millisecond,
			"alice on node-b is not told that bob on node-a speaks")
	})

	t.Run("ClientMuteCrosses", func(t *testing.T) {
		// from is muted by its own client; to, on the other node, is told.
		for _, dir := range []struct {
			name     string
			pub      *loadtest.Publisher
			fromID   string
			to       *sdkClient
			toEvents *callEvents
		}{
			{"node-b to node-a", apub, aliceID, b, bobEv},
			{"node-a to node-b", bpub, bobID, a, aliceEv},
		} {
			sid := dir.pub.AudioPub.SID()
			seen := remotePub(dir.to, dir.fromID, lksdk.TrackKindAudio)
			require.NotNil(t, seen, dir.name)
			require.False(t, seen.IsMuted(), dir.name)
			dir.pub.AudioPub.SetMuted(true)
			require.Eventually(t, func() bool { m, _ := dir.toEvents.mutes(sid); return m == 1 && seen.IsMuted() },
				10*time.Second, 20*time.Millisecond, "%s: the mute is not seen on the other node", dir.name)
			dir.pub.AudioPub.SetMuted(false)
			require.Eventually(t, func() bool { _, u := dir.toEvents.mutes(sid); return u == 1 && !seen.IsMuted() },
				10*time.Second, 20*time.Millisecond, "%s: the unmute is not seen on the other node", dir.name)
		}
	})

	// listed is the room's participants as a node's Twirp RoomService lists them.
	listed := func(rs *lksdk.RoomServiceClient) ([]string, error) {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		l, err := rs.ListParticipants(lctx, &livekit.ListParticipantsRequest{Room: lkRoom})
		if err != nil {
			return nil, err
		}
		ids := identitiesOf(l.Participants)
		slices.Sort(ids)
		return ids, nil
	}
	sorted := func(ids ...string) []string { slices.Sort(ids); return ids }

	var ca, d *sdkClient
	t.Run("RedisRestartDropsNoCall", func(t *testing.T) {
		frames := func() (uint64, uint64) {
			return b.stream(aliceID + "/audio").Frames.Load(), a.stream(bobID + "/audio").Frames.Load()
		}
		noDrop := func() bool {
			return len(a.disconnected) == 0 && len(b.disconnected) == 0 && aliceEv.reconnects() == 0 && bobEv.reconnects() == 0
		}
		// Redis first hangs (SIGSTOP: connections stay open and get no
		// answer, as behind a partition), then crashes (kill -9: the nodes
		// see their connections reset), then comes back empty.
		ab0, ba0 := frames()
		require.NoError(t, c.rds.Freeze())
		down := time.Now()

		// A token request during the outage is placed on what the focus
		// last knew, after at most redis.op_timeout (500 ms) for the
		// directory: carol (site b) goes to node-b.
		status, url, jwt, took := tokenFrom(t, s.FocusURL, siteBClient, room, carol, "carol-1")
		t.Logf("token request while Redis hangs: %d in %s", status, took.Round(time.Millisecond))
		require.Equal(t, http.StatusOK, status, "a token request fails while Redis hangs")
		require.Equal(t, c.urlB, url, "placement while Redis hangs")
		c.rds.Stop()
		status, url2, _, took := tokenFrom(t, c.focusB, siteBClient, room, carol, "carol-probe")
		t.Logf("token request while Redis is down: %d in %s", status, took.Round(time.Millisecond))
		require.Equal(t, http.StatusOK, status, "a token request fails while Redis is down")
		require.Equal(t, c.urlB, url2, "placement while Redis is down")

		// carol's client joins node-b during the outage and receives both
		// others, bob's audio over the relay.
		ca = joinWithTokenUntil(t, parent, url, jwt)
		require.Eventually(t, func() bool {
			ab, cb := ca.stream(aliceID+"/audio"), ca.stream(bobID+"/audio")
			return ab != nil && ab.Frames.Load() > 10 && cb != nil && cb.Frames.Load() > 10
		}, 30*time.Second, 50*time.Millisecond, "carol, joining node-b during the outage, does not receive alice and bob")

		// Both nodes still list the participants.
		for _, rs := range []*lksdk.RoomServiceClient{c.rsA, c.rsB} {
			ids, err := listed(rs)
			require.NoError(t, err, "ListParticipants during the outage")
			require.Equal(t, sorted(aliceID, bobID, carolID), ids, "ListParticipants during the outage")
		}
		// Keep watching for a few seconds: media flows, nobody drops.
		require.Never(t, func() bool { return !noDrop() }, 3*time.Second, 50*time.Millisecond, "a client was disconnected during the Redis outage")
		ab1, ba1 := frames()
		t.Logf("during the outage: bob got %d frames of alice, alice %d of bob", ab1-ab0, ba1-ba0)
		for name, st := range map[string]*loadtest.StreamStats{"alice -> bob": b.stream(aliceID + "/audio"), "bob -> alice": a.stream(bobID + "/audio")} {
			expected, received := st.Loss()
			t.Logf("audio %s: %d of %d packets received (counted from 1 s after the first)", name, received, expected)
		}
		require.Greater(t, ab1-ab0, uint64(100), "alice's audio stopped reaching bob during the outage")
		require.Greater(t, ba1-ba0, uint64(100), "bob's audio stopped reaching alice during the outage")

		// Redis comes back empty on the same port: both nodes re-publish
		// their records and their part of the room.
		require.NoError(t, c.rds.Restart(ctx))
		up := time.Now()
		t.Logf("Redis was out (hung, then dead) for %s", up.Sub(down).Round(time.Millisecond))
		for _, m := range []string{c.metricsA, c.metricsB} {
			require.Eventually(t, func() bool {
				on := roomOn(t, m, lkRoom)
				return c.seesBoth(t, m) && len(on) == 2 &&
					on["node-a"].Participants == 1 && on["node-a"].Tracks == 1 &&
					on["node-b"].Participants == 2 && on["node-b"].Tracks == 1
			}, 30*time.Second, 50*time.Millisecond, "%s does not show the cluster after the Redis restart: %+v", m, roomOn(t, m, lkRoom))
		}
		t.Logf("both nodes show the cluster again %s after the Redis restart", time.Since(up).Round(time.Millisecond))
		require.True(t, noDrop(), "a client was disconnected by the Redis restart")

		// A fresh request is placed by the rules again: dave (site a by
		// client address) on node-a, from node-b's focus.
		d = join(t, c.focusB, siteAClient, c.urlA, room, dave, "dave-1", nil)
		require.Eventually(t, func() bool {
			st := d.stream(aliceID + "/audio")
			return st != nil && st.Frames.Load() > 10
		}, 30*time.Second, 50*time.Millisecond, "dave, joining after the restart, does not receive alice")
		ids, err := listed(c.rsA)
		require.NoError(t, err)
		require.Equal(t, sorted(aliceID, bobID, carolID, daveID), ids)
	})

	t.Run("LeaveCrosses", func(t *testing.T) {
		require.NotNil(t, ca, "carol did not join")
		require.NotNil(t, d, "dave did not join")
		ca.room.Disconnect()
		for name, cl := range map[string]*sdkClient{"bob": b, "dave": d} {
			select {
			case who := <-cl.left:
				require.Equal(t, carolID, who, "%s on node-a", name)
			case <-time.After(30 * time.Second):
				t.Fatalf("%s on node-a is not told that carol left node-b", name)
			}
		}
		require.Eventually(t, func() bool {
			ids, err := listed(c.rsA)
			return err == nil && slices.Equal(ids, sorted(aliceID, bobID, daveID))
		}, 30*time.Second, 100*time.Millisecond, "node-a's ListParticipants still lists carol")
	})
}
