package bridge

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// metricValue reads one sample of a gathered family (labels as k=v pairs).
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for _, kv := range labels {
				k, v, _ := strings.Cut(kv, "=")
				if have[k] != v {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return 0
}

// The relay's per-peer metrics count what crosses in both directions, the
// relayed tracks and the link's RTT; Bitrate (the heartbeat's relay
// bitrate) follows; counters keep what an ended link carried.
func TestRelayMetrics(t *testing.T) {
	verifyNoLeaks(t)
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	require.NoError(t, regA.Register(a.br.Collector()))
	require.NoError(t, regB.Register(b.br.Collector()))
	require.NoError(t, testutil.GatherAndCompare(regA, strings.NewReader(""), "gxconf_bridge_relay_links"), "no peer, no series")

	link(t, "room", a, b)
	alice := a.join(t, "room", "alice")
	bob := b.join(t, "room", "bob")
	alice.publish(t, avOpts())
	bob.waitMedia(t, []string{"alice"}, 10, 10, 20*time.Second)

	require.Eventually(t, func() bool {
		return metricValue(t, regA, "gxconf_bridge_relay_bytes_total", "peer=node-b", "direction=out") > 0 &&
			metricValue(t, regA, "gxconf_bridge_relay_packets_total", "peer=node-b", "direction=out") > 0 &&
			metricValue(t, regB, "gxconf_bridge_relay_bytes_total", "peer=node-a", "direction=in") > 0 &&
			metricValue(t, regA, "gxconf_bridge_relay_tracks", "peer=node-b", "direction=out") == 2 &&
			metricValue(t, regB, "gxconf_bridge_relay_tracks", "peer=node-a", "direction=in") == 2 &&
			metricValue(t, regA, "gxconf_bridge_relay_links", "peer=node-b") == 1
	}, 20*time.Second, 50*time.Millisecond, "relay metrics stay zero while media crosses")
	require.Eventually(t, func() bool {
		return metricValue(t, regA, "gxconf_bridge_relay_rtt_seconds", "peer=node-b") > 0
	}, 20*time.Second, 100*time.Millisecond, "no RTT measured on the relay link")

	a.br.Bitrate()
	require.Eventually(t, func() bool { return a.br.Bitrate() > 0 && b.br.Bitrate() > 0 },
		20*time.Second, 600*time.Millisecond, "relay bitrate stays zero")

	// bob unsubscribes alice's video: nothing of it crosses any more, and
	// both nodes count only her audio; subscribing again brings it back.
	video := bob.publication("alice/video")
	require.NotNil(t, video)
	tracks := func() (out, in float64) {
		return metricValue(t, regA, "gxconf_bridge_relay_tracks", "peer=node-b", "direction=out"),
			metricValue(t, regB, "gxconf_bridge_relay_tracks", "peer=node-a", "direction=in")
	}
	require.NoError(t, video.SetSubscribed(false))
	require.Eventually(t, func() bool { out, in := tracks(); return out == 1 && in == 1 },
		20*time.Second, 50*time.Millisecond, "a track nobody on node-b wants is counted as relayed")
	require.NoError(t, video.SetSubscribed(true))
	require.Eventually(t, func() bool { out, in := tracks(); return out == 2 && in == 2 },
		20*time.Second, 50*time.Millisecond, "a track wanted again is not counted as relayed")

	// The link ends: its bytes stay counted.
	sent := metricValue(t, regA, "gxconf_bridge_relay_bytes_total", "peer=node-b", "direction=out")
	a.br.Unlink("room", b.id)
	require.Eventually(t, func() bool { return metricValue(t, regA, "gxconf_bridge_relay_links", "peer=node-b") == 0 },
		10*time.Second, 20*time.Millisecond)
	require.GreaterOrEqual(t, metricValue(t, regA, "gxconf_bridge_relay_bytes_total", "peer=node-b", "direction=out"), sent)
	require.Zero(t, metricValue(t, regA, "gxconf_bridge_relay_tracks", "peer=node-b", "direction=out"))
}
