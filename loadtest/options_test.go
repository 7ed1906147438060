package loadtest

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOptionsNodes(t *testing.T) {
	base := func() Options {
		return Options{APIKey: "k", APISecret: "s", Publishers: 2, Subscribers: 5}
	}
	t.Run("one url", func(t *testing.T) {
		o := base()
		o.URL, o.SFUPid = "ws://a", 7
		require.NoError(t, o.defaults())
		require.Equal(t, []string{"ws://a"}, o.URLs)
		require.Equal(t, []int{7}, o.SFUPids)
		for i := range 7 {
			require.Zero(t, o.nodeOf(i))
		}
	})
	t.Run("publishers on the first node, subscribers round-robin", func(t *testing.T) {
		o := base()
		o.URLs = []string{"ws://a", "ws://b"}
		require.NoError(t, o.defaults())
		var got []int
		for i := range 7 {
			got = append(got, o.nodeOf(i))
		}
		require.Equal(t, []int{0, 0, 0, 1, 0, 1, 0}, got)
	})
	t.Run("subscriber offset", func(t *testing.T) {
		o := base()
		o.URLs, o.SubscriberOffset = []string{"ws://a", "ws://b"}, 1
		require.NoError(t, o.defaults())
		var got []int
		for i := range 7 {
			got = append(got, o.nodeOf(i))
		}
		require.Equal(t, []int{0, 0, 1, 0, 1, 0, 1}, got)
	})
	t.Run("spread publishers", func(t *testing.T) {
		o := base()
		o.URLs, o.SpreadPublishers = []string{"ws://a", "ws://b", "ws://c"}, true
		require.NoError(t, o.defaults())
		var got []int
		for i := range 7 {
			got = append(got, o.nodeOf(i))
		}
		require.Equal(t, []int{0, 1, 0, 1, 2, 0, 1}, got)
	})
	for _, tc := range []struct {
		name, want string
		mod        func(*Options)
	}{
		{"url and urls", "url and urls", func(o *Options) { o.URL, o.URLs = "ws://a", []string{"ws://b"} }},
		{"no url", "url, api key", func(o *Options) {}},
		{"empty url", "urls[1]: empty", func(o *Options) { o.URLs = []string{"ws://a", ""} }},
		{"pid and pids", "sfu pid and sfu pids", func(o *Options) { o.URL, o.SFUPid, o.SFUPids = "ws://a", 1, []int{2} }},
		{"pids per url", "sfu pids: need one per url (2), got 1", func(o *Options) { o.URLs, o.SFUPids = []string{"ws://a", "ws://b"}, []int{2} }},
		{"negative offset", "subscriber offset: must not be negative, got -1", func(o *Options) { o.URL, o.SubscriberOffset = "ws://a", -1 }},
		{"metrics per url", "metrics urls: need one per url (1), got 2", func(o *Options) { o.URL, o.MetricsURLs = "ws://a", []string{"a", "b"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base()
			tc.mod(&o)
			err := o.defaults()
			require.Error(t, err)
			require.True(t, strings.Contains(err.Error(), tc.want), "%v", err)
		})
	}
}

func TestParseNodeMetrics(t *testing.T) {
	const text = `# HELP gxconf_bridge_relay_packets_total RTP packets relayed.
# TYPE gxconf_bridge_relay_packets_total counter
gxconf_bridge_relay_packets_total{direction="in",peer="node-b"} 10
gxconf_bridge_relay_packets_total{direction="out",peer="node-b"} 1000
gxconf_bridge_relay_packets_total{direction="out",peer="node-c"} 5e+02
gxconf_bridge_relay_bytes_total{direction="in",peer="node-b"} 1200
gxconf_bridge_relay_bytes_total{direction="out",peer="node-b"} 700000
gxconf_bridge_relay_packets_totally_else{direction="out"} 3
gxconf_sfu_rtp_packets_in_total{layer="q"} 99
gxconf_sfu_rtp_packets_direct_out_total 4000
gxconf_sfu_rtp_packets_direct_out_totalx 5
gxconf_sfu_direct_send_messages_total 1500
gxconf_sfu_direct_send_calls_total 300
`
	c, err := parseNode(strings.NewReader(text))
	require.NoError(t, err)
	require.Equal(t, nodeCounters{packetsOut: 1500, packetsIn: 10, bytesOut: 700000, bytesIn: 1200,
		directOut: 4000, messages: 1500, calls: 300}, c)
	_, err = parseNode(strings.NewReader(`gxconf_bridge_relay_bytes_total{direction="in",peer="x"} NaNx` + "\n"))
	require.Error(t, err)
}
