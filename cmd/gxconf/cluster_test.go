package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/cluster"
)

// `gxconf drain` is `gxconf cluster drain`: both ask the node's metrics
// listener to drain.
func TestDrainCommand(t *testing.T) {
	var drains atomic.Int32
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/cluster/drain" {
			drains.Add(1)
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.WriteHeader(http.StatusNotFound)
	}))
	defer node.Close()

	for _, args := range [][]string{{"drain", "-url", node.URL}, {"cluster", "drain", "-url", node.URL}} {
		var out, errOut bytes.Buffer
		require.Equal(t, 0, run(args, &out, &errOut), errOut.String())
		require.Contains(t, out.String(), "draining")
	}
	require.EqualValues(t, 2, drains.Load())

	var out, errOut bytes.Buffer
	require.Equal(t, 1, run([]string{"drain", "-url", node.URL + "/elsewhere"}, &out, &errOut))
	require.Contains(t, errOut.String(), "gxconf drain: the node answered 404")
	errOut.Reset()
	require.Equal(t, 2, run([]string{"drain", "now"}, &out, &errOut))
	require.Contains(t, errOut.String(), `unexpected argument "now"`)
	out.Reset()
	require.Equal(t, 0, run([]string{"help"}, &out, &errOut))
	require.Contains(t, out.String(), "gxconf drain [-c config.yaml")
	require.EqualValues(t, 2, drains.Load())
}

// `gxconf cluster status` prints the asked node's relay links with the other
// nodes (and its peer links) as the node's status endpoint serves them.
func TestClusterStatusPrintsLinks(t *testing.T) {
	cfg := cluster.DefaultConfig()
	cfg.NodeID = "node-b"
	cfg.SignalURL = "ws://127.0.0.1:7880"
	reg, err := cluster.NewEmbedded(cfg, zerolog.Nop())
	require.NoError(t, err)
	links := func() []cluster.LinkStatus {
		return []cluster.LinkStatus{{
			Room: "standup", PeerNode: "node-a", Connected: true, TracksOut: 2, TracksIn: 1,
			BitrateOut: 1_700_000, BitrateIn: 650_000, RTT: 1234 * time.Microsecond, LostPackets: 3, Retransmits: 5,
		}, {Room: "standup", PeerNode: "node-c"}}
	}
	peering := func(context.Context) *cluster.PeeringStatus {
		return &cluster.PeeringStatus{Self: "fed-b", Links: []cluster.PeerLinkStatus{{
			LinkStatus: cluster.LinkStatus{Room: "gxpeer.fed-a.town", PeerNode: "a1", Connected: true, TracksIn: 2, BitrateIn: 96_000},
			Peer:       "fed-a", Direction: cluster.PeerIn,
		}}}
	}
	node := httptest.NewServer(http.StripPrefix("/cluster/status", statusHandler(reg, links, peering)))
	defer node.Close()

	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"cluster", "status", "-url", node.URL}, &out, &errOut), errOut.String())
	text := out.String()
	require.Contains(t, text, "Relay links of node-b")
	require.Regexp(t, `(?m)^standup\s+node-a\s+connected\s+2\s+1\s+1700\s+650\s+1\.2ms\s+3\s+5\s*$`, text)
	require.Regexp(t, `(?m)^standup\s+node-c\s+connecting\s+0\s+0\s+0\s+0\s+0s\s+0\s+0\s*$`, text)
	require.Regexp(t, `(?m)^gxpeer\.fed-a\.town\s+fed-a\s+a1\s+in\s+connected\s+0\s+2\s+0\s+96\s+0s\s+0\s+0\s*$`, text)

	// Without a bridge there is no links table.
	bare := httptest.NewServer(http.StripPrefix("/cluster/status", statusHandler(reg, nil, nil)))
	defer bare.Close()
	out.Reset()
	require.Equal(t, 0, run([]string{"cluster", "status", "-url", bare.URL}, &out, &errOut), errOut.String())
	require.NotContains(t, out.String(), "Relay links")
	require.Contains(t, out.String(), "node-b")
}

// The metrics listener (cluster status, metrics, profiles; no
// authentication) answers no web page: a page's request, cross-site or
// after a DNS rebinding, is refused; Prometheus, the CLI and an address
// typed into the browser are served.
func TestMetricsListenerRefusesPages(t *testing.T) {
	h := noPages(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("rooms")) }))
	for _, c := range []struct {
		header, value string
		want          int
	}{
		{"", "", http.StatusOK},
		{"Sec-Fetch-Site", "none", http.StatusOK},
		{"Sec-Fetch-Site", "same-origin", http.StatusForbidden},
		{"Sec-Fetch-Site", "cross-site", http.StatusForbidden},
		{"Sec-Fetch-Site", "same-site", http.StatusForbidden},
		{"Origin", "http://rebound.example", http.StatusForbidden},
	} {
		r := httptest.NewRequest(http.MethodGet, "/cluster/status", nil)
		if c.header != "" {
			r.Header.Set(c.header, c.value)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		require.Equal(t, c.want, w.Code, "%s: %s", c.header, c.value)
		if c.want != http.StatusOK {
			require.NotContains(t, w.Body.String(), "rooms")
		}
	}
}

// What clients and peers named (rooms, identities, peer deployments) is
// printed, not obeyed: a terminal escape, a tab that would shift the
// columns or a bidirectional override reaches the operator's terminal as
// U+FFFD.
func TestClusterStatusPrintsNamesInert(t *testing.T) {
	var out bytes.Buffer
	hostile := "\x1b]0;owned\x07evil\tcolumn\u202eroom\x9b2J"
	printStatus(&out, cluster.Status{
		Self:  "node-a",
		Rooms: []cluster.RoomStatus{{Room: cluster.RoomName(hostile), Nodes: []cluster.RoomNodeStatus{{Node: "node-a", Participants: 1}}}},
		Peering: &cluster.PeeringStatus{Self: "fed-b", Participants: []cluster.PeerParticipant{
			{Identity: hostile, Room: "r", Deployment: "fed-a", Node: "a1"},
		}},
	})
	text := out.String()
	for _, bad := range []string{"\x1b", "\x07", "\u202e", "\x9b", "evil\t"} {
		require.NotContains(t, text, bad)
	}
	require.Equal(t, 2, strings.Count(text, "]0;owned\uFFFDevil\uFFFDcolumn\uFFFDroom\uFFFD2J"), text)
}
