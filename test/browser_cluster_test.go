package test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/cluster"
)

// TestBrowserAcrossNodes is TestBrowserCallE2EE on two nodes: alice's and
// bob's browsers join one end-to-end encrypted call, placed on different
// gxconf nodes (node-b takes one participant, as in TestClusterPlacement),
// and the bridge carries what Chrome sends between them: simulcast VP8
// (the layer the other side wants, switched on request), Opus, frames with
// the E2EE trailer, data messages, mute state and the leave. MatrixRTC binds
// the media keys to LiveKit identities, so the call decrypts only if each
// node presents the other's participant under its own identity.
func TestBrowserAcrossNodes(t *testing.T) {
	start := time.Now()
	if os.Getenv("GXTEST_SFU_URL") != "" {
		t.Log("GXTEST_SFU_URL is ignored: this test runs gxconf's own SFUs on both nodes")
	}
	pair := newNodePair(t)
	e := startBrowserEnvWith(t, testSFU{}, pair.stackOptions(100))
	s := e.stack
	nodeB := pair.startNodeB(t, s, 1)
	require.Eventually(t, func() bool { return serves(t, s.MetricsURL, "node-b") && serves(t, nodeB.metricsURL, "node-a") },
		30*time.Second, 100*time.Millisecond, "the nodes do not see each other")

	alice, bob := register(t, s, "alice"), register(t, s, "bob")
	room := createCallRoom(t, s, alice, true, bob)

	// Alice comes first: localhost's users belong to site b, so node-b.
	a := e.join("alice", alice, room, callOptions{E2EE: true, JWT: "legacy"})
	as := a.await(t, `s.phase === "in-call" && s.e2eeActive`, joinTimeout)
	require.Equal(t, pair.urlB, as.SFU.URL, "alice is placed in her site")
	// Bob asks once node-a counts alice on node-b, which is then full: he
	// goes to the fallback site's node-a.
	require.Eventually(t, func() bool { return nodeLoad(t, s.MetricsURL, "node-b").Participants == 1 },
		30*time.Second, 100*time.Millisecond, "node-a does not see alice on node-b")
	b := e.join("bob", bob, room, callOptions{E2EE: true, JWT: "legacy"})
	bs := b.await(t, `s.phase === "in-call" && s.e2eeActive`, joinTimeout)
	require.Equal(t, pair.urlA, bs.SFU.URL, "node-b is full: bob is placed in the fallback site")
	aliceID, bobID := as.SFU.Identity, bs.SFU.Identity
	require.Equal(t, alice.ID.String()+":"+as.DeviceID, aliceID)
	require.Equal(t, bob.ID.String()+":"+bs.DeviceID, bobID)
	lkRoom := as.SFU.LKRoom
	require.Equal(t, lkRoom, bs.SFU.LKRoom)
	for _, st := range []pageState{as, bs} {
		require.Equal(t, []tokenAttempt{{Endpoint: "sfu_get", Status: 200}}, st.TokenAttempts)
		require.Equal(t, 1, st.SFUConnectAttempts)
	}

	t.Run("the room lives on both nodes, one participant each", func(t *testing.T) {
		// Camera and microphone each; relayed copies are not counted.
		for _, metricsURL := range []string{s.MetricsURL, nodeB.metricsURL} {
			require.Eventually(t, func() bool {
				on := roomPlacement(t, metricsURL, lkRoom)
				return len(on) == 2 && on["node-a"] == cluster.RoomNodeStatus{Node: "node-a", Participants: 1, Tracks: 2} &&
					on["node-b"] == cluster.RoomNodeStatus{Node: "node-b", Participants: 1, Tracks: 2}
			}, mediaTimeout, 100*time.Millisecond, "the directory does not place alice and bob: %+v", roomPlacement(t, metricsURL, lkRoom))
		}
		// Each node's RoomService lists both, once each.
		require.ElementsMatch(t, []string{aliceID, bobID}, e.sfu.participants(t, lkRoom))
		nodeBSFU := testSFU{URL: pair.urlB, Key: s.SFUKey, Secret: s.SFUSecret}
		require.ElementsMatch(t, []string{aliceID, bobID}, nodeBSFU.participants(t, lkRoom))
	})

	t.Run("media keys travel through the MatrixRTC session", func(t *testing.T) {
		a.await(t, fmt.Sprintf(`[%s, %s].every(id => s.mediaKeys.includes(id))`, js(aliceID), js(bobID)), mediaTimeout)
		b.await(t, fmt.Sprintf(`[%s, %s].every(id => s.mediaKeys.includes(id))`, js(aliceID), js(bobID)), mediaTimeout)
	})

	t.Run("each decodes the other's encrypted video and hears their audio across the bridge", func(t *testing.T) {
		relay := func() [4]float64 {
			return [4]float64{
				scrapeMetric(t, s.MetricsURL, "gxconf_bridge_relay_bytes_total", `peer="node-b"`, `direction="in"`),
				scrapeMetric(t, s.MetricsURL, "gxconf_bridge_relay_bytes_total", `peer="node-b"`, `direction="out"`),
				scrapeMetric(t, nodeB.metricsURL, "gxconf_bridge_relay_bytes_total", `peer="node-a"`, `direction="in"`),
				scrapeMetric(t, nodeB.metricsURL, "gxconf_bridge_relay_bytes_total", `peer="node-a"`, `direction="out"`),
			}
		}
		before := relay()
		for _, c := range []struct {
			viewer *participant
			other  string
		}{{a, bobID}, {b, aliceID}} {
			st := c.viewer.await(t, remoteHas(c.other)+fmt.Sprintf(` && Object.values(s.remote[%s].tracks).every(t => t.encrypted)`, js(c.other)), mediaTimeout)
			require.NotEmpty(t, st.Remote[c.other].Tracks)
			requireMediaFlows(t, c.viewer, c.other)
		}
		// Both directions of the bridge carried media meanwhile (in at one
		// node is out at the other).
		var after [4]float64
		require.Eventually(t, func() bool {
			after = relay()
			for i := range after {
				if after[i] <= before[i] {
					return false
				}
			}
			return true
		}, mediaTimeout, 200*time.Millisecond, "relay bytes (node-a in, out; node-b in, out) did not rise: %v → %v", before, after)
		t.Logf("relay bytes while the media was checked: node-a in %.0f→%.0f, out %.0f→%.0f; node-b in %.0f→%.0f, out %.0f→%.0f",
			before[0], after[0], before[1], after[1], before[2], after[2], before[3], after[3])
		a.screenshot(t, "browser-across-nodes-alice.png")
		b.screenshot(t, "browser-across-nodes-bob.png")
	})

	t.Run("data messages cross the bridge both ways", func(t *testing.T) {
		for _, c := range []struct {
			from, to *participant
			fromID   string
		}{{a, b, aliceID}, {b, a, bobID}} {
			msg := fmt.Sprintf("Guten Tag from %s on another node %s", c.from.name, time.Now().Format(time.RFC3339Nano))
			c.from.do(t, fmt.Sprintf("sendData(%s)", js(msg)))
			c.to.await(t, fmt.Sprintf(`s.dataMessages.some(m => m.text === %s && m.from === %s && m.topic === "gxconf-test")`, js(msg), js(c.fromID)), mediaTimeout)
		}
	})

	t.Run("bob's text streams cross the bridge to alice", func(t *testing.T) {
		requireTextStreams(t, b, a, bobID)
	})

	t.Run("alice calls bob's client on the other node with a 20 kB payload", func(t *testing.T) {
		// node-a shows bob's client_protocol in the info node-b relayed.
		requireLargeRpc(t, a, bobID, bob.ID.String())
	})

	t.Run("alice's data track crosses the bridge to bob's subscription on the other node", func(t *testing.T) {
		// node-b shows it in alice's info; bob's livekit-client subscribes there.
		requireDataTrackFlows(t, a, b, aliceID, "gxconf.cursor")
	})

	t.Run("simulcast: bob asks for a small video and node-b relays a lower layer", func(t *testing.T) {
		v := videoOf(aliceID)
		big := b.awaitStats(t, fmt.Sprintf(`(v => v && v.frameHeight >= %d)(%s)`, captureHeight*3/4, v), mediaTimeout)
		before := findStats(big, aliceID, "video")
		// The wanted layer crosses the bridge to alice's node, whose
		// publisher's dynacast and the relayed layer follow it.
		b.do(t, fmt.Sprintf("requestVideoSize(%s, 160, 90)", js(aliceID)))
		small := b.awaitStats(t, fmt.Sprintf(`(v => v && v.frameHeight > 0 && v.frameHeight <= %d && v.elementHeight <= 90)(%s)`, captureHeight/2, v), mediaTimeout)
		after := findStats(small, aliceID, "video")
		require.Less(t, after.FrameHeight, before.FrameHeight)
		t.Logf("bob receives alice at %dx%d, then %dx%d after asking for 160x90", before.FrameWidth, before.FrameHeight, after.FrameWidth, after.FrameHeight)
		b.do(t, fmt.Sprintf("requestVideoSize(%s, 480, 270)", js(aliceID)))
		b.awaitStats(t, fmt.Sprintf(`(v => v && v.frameHeight >= %d)(%s)`, captureHeight*3/4, v), mediaTimeout)
	})

	t.Run("alice mutes her camera and bob, on the other node, sees it", func(t *testing.T) {
		a.do(t, "setCamera(false)")
		b.await(t, fmt.Sprintf(`Object.values(s.remote[%s].tracks).some(t => t.source === "camera" && t.muted)`, js(aliceID)), mediaTimeout)
		a.do(t, "setCamera(true)")
		b.await(t, fmt.Sprintf(`Object.values(s.remote[%s].tracks).some(t => t.source === "camera" && !t.muted)`, js(aliceID)), mediaTimeout)
		// And her video flows again, in the layer bob asked for last.
		requireMediaFlows(t, b, aliceID)
		back := b.awaitStats(t, fmt.Sprintf(`(v => v && v.frameHeight >= %d)(%s)`, captureHeight*3/4, videoOf(aliceID)), mediaTimeout)
		t.Logf("after her camera is back, bob receives alice at %dx%d", findStats(back, aliceID, "video").FrameWidth, findStats(back, aliceID, "video").FrameHeight)
	})

	t.Run("bob leaves and alice, on the other node, sees him go", func(t *testing.T) {
		b.do(t, "leave()")
		a.await(t, fmt.Sprintf(`s.departed.includes(%s) && !(%s in s.remote)`, js(bobID), js(bobID)), mediaTimeout)
		require.Eventually(t, func() bool {
			on := roomPlacement(t, nodeB.metricsURL, lkRoom)
			return on["node-a"].Participants == 0 && on["node-b"].Participants == 1
		}, mediaTimeout, 100*time.Millisecond, "the directory still places bob: %+v", roomPlacement(t, nodeB.metricsURL, lkRoom))
		a.do(t, "leave()")
	})

	for _, p := range []*participant{a, b} {
		require.Empty(t, p.state(t).Errors, "%s's page reported errors", p.name)
	}
	t.Logf("E2EE browser call across two nodes took %s", time.Since(start).Round(time.Millisecond))
}
