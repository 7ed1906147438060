package loadtest

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReportPrintsSends: with a node's send counters the report says how
// many packets each UDP message carried and how many messages each
// sendmmsg call; without them it says nothing about sends.
func TestReportPrintsSends(t *testing.T) {
	o := Options{Rooms: 1, URLs: []string{"ws://a"}}
	r := &Report{Nodes: []NodeReport{{URL: "ws://a", SendMeasured: true, DirectPackets: 4000, SendMessages: 1500, SendCalls: 300}}}
	var out strings.Builder
	r.print(&out, o)
	require.Contains(t, out.String(), "sfu sends:         4000 packets on the direct path in 1500 UDP messages (2.67 packets per message) in 300 sendmmsg calls (5.0 messages per call)\n")

	o.URLs = []string{"ws://a", "ws://b"}
	r.Nodes = append(r.Nodes, NodeReport{URL: "ws://b"})
	out.Reset()
	r.print(&out, o)
	require.NotContains(t, out.String(), "sfu sends:")
	require.Contains(t, out.String(), "  sends 4000 packets on the direct path")
	require.Equal(t, 1, strings.Count(out.String(), "sends "), "only the node measured")

	r.Nodes[0].SendMeasured = false
	out.Reset()
	r.print(&out, o)
	require.NotContains(t, out.String(), "sends")
}
