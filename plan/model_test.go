package plan

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// roundCal has round figures so the expected plans can be computed by hand.
func roundCal() Calibration {
	return Calibration{
		Kind: CalibrationKind, Version: CalibrationVersion, Date: "2026-12-02T12:00:00Z", Machine: "test", Command: "test",
		ForwardMicros: 10, RelaySendMicros: 5, RelayReceiveMicros: 5,
		NodeBaseMiB: 50, ParticipantKiB: 500, SubscribedTrackKiB: 100, JoinCPUMillis: 10,
	}
}

// roundInput: 1 session of 100, one video publisher (one 1000 kbit/s
// layer at 100 packets/s) and one speaker (32 kbit/s, 50 packets/s), no
// header overhead, one site, no redundancy or headroom.
func roundInput() Input {
	return Input{
		Sessions: 1, Participants: 100, VideoPublishers: 1, AudioPublishers: 1, Speakers: 1,
		Layers: []Layer{{"high", 1000, 100}}, ReceiveLayer: "high", AudioKbps: 32, AudioPPS: 50,
		Sites: 1, Level: LevelPublic, Redundancy: RedundancyNone, NodeCores: 4, NodeMemoryGiB: 8,
		JoinWindowSeconds: 10, HoursPerMonth: 100, Peering: true,
		Prices: Prices{CoreMonth: 10, GiBMonth: 1, EgressTB: 2, Currency: "EUR"},
	}
}

func near(t *testing.T, want, got float64, what string) {
	t.Helper()
	require.InDelta(t, want, got, 1e-6*math.Max(1, math.Abs(want)), what)
}

func TestComputeOneSite(t *testing.T) {
	p, err := Compute(roundInput(), roundCal())
	require.NoError(t, err)
	// Per participant: 50 + 100 packets/s, 32 + 1000 kbit/s.
	near(t, 150, p.Stream.ReceivePPS, "receive pps")
	near(t, 1.032, p.Stream.ReceiveMbps, "receive mbps")
	near(t, 1.032, p.Stream.PublishMbps, "publish mbps")
	require.Equal(t, 2, p.Stream.SubscribedTracks)
	require.Len(t, p.Sites, 1)
	s := p.Sites[0]
	near(t, 100, s.Participants, "participants")
	near(t, 15000, s.ForwardPPS, "forwarded pps")
	near(t, 0, s.RelayPPS, "relay pps")
	// 15,000 × 10 µs = 0.15 cores; joins 100 × 10 ms / 10 s = 0.1 cores.
	near(t, 0.25, s.CPUCores, "cpu")
	// 100 × (500 + 2 × 100) KiB + one node's 50 MiB = 121,200 KiB.
	near(t, 121200.0/(1<<20), s.MemoryGiB, "memory")
	require.Equal(t, 1, s.Nodes)
	require.Equal(t, 1, s.SessionNodes)
	near(t, 4, s.Cores, "cores")
	near(t, 8, s.RAMGiB, "ram")
	near(t, 103.2, s.ToClientsMbps, "to clients")
	near(t, 1.032, s.FromClientsMbps, "from clients")
	near(t, 0, p.IXMbps, "ix")
	near(t, 0, p.InterSiteMbps, "inter-site")
	require.Nil(t, p.Peer)
	// 103.2 Mbit/s × 100 h = 12.9 MB/s × 360,000 s = 4.644 TB.
	near(t, 4.644, p.Totals.EgressTBMonth, "egress TB")
	near(t, 40, p.Cost.Cores, "core cost")
	near(t, 8, p.Cost.Memory, "memory cost")
	near(t, 9.288, p.Cost.Egress, "egress cost")
	near(t, 57.288, p.Cost.Total, "total")
	near(t, 0.57288, p.Cost.PerParticipant, "per participant")
}

func TestComputeTwoSitesPeeringSpread(t *testing.T) {
	in := roundInput()
	in.Participants, in.RemoteShare, in.Sites = 1000, 0.5, 2
	in.Redundancy, in.Headroom, in.NodeCores = RedundancyNPlus1, 0.5, 2 // 1 usable core per node
	p, err := Compute(in, roundCal())
	require.NoError(t, err)
	// Local 500 (250 per site), remote 500 on the peer.
	// A site's session: 250 × 150 = 37,500 pkt/s → 0.375 cores + joins
	// 250 × 1 ms/s = 0.25: one node. The peer's: 0.75 + 0.5 = 1.25: two.
	s1, s2, peer := p.Sites[0], p.Sites[1], p.Peer
	require.NotNil(t, peer)
	require.Equal(t, 1, s1.SessionNodes)
	require.Equal(t, 1, s2.SessionNodes)
	require.Equal(t, 2, peer.SessionNodes)
	// The publishers' node sends 1 copy to site 2 and 2 to the peer's nodes:
	// 3 × 150 pkt/s × 5 µs.
	near(t, 450, s1.RelayPPS, "site 1 relay pps")
	near(t, 0.625+0.00225, s1.CPUCores, "site 1 cpu")
	near(t, 150, s2.RelayPPS, "site 2 relay pps")
	near(t, 0.625+0.00075, s2.CPUCores, "site 2 cpu")
	near(t, 1.25+0.0015, peer.CPUCores, "peer cpu")
	require.Equal(t, 2, s1.Nodes, "1 + 1 spare")
	require.Equal(t, 2, s2.Nodes)
	require.Equal(t, 2, peer.LoadNodes)
	require.Equal(t, 3, peer.Nodes, "2 + 1 spare")
	near(t, 3*1.032, s1.RelayOutMbps, "site 1 relay out")
	near(t, 1.032, s2.RelayInMbps, "site 2 relay in")
	near(t, 2*1.032, peer.RelayInMbps, "peer relay in")
	near(t, 1.032, p.InterSiteMbps, "inter-site")
	near(t, 2*1.032, p.IXMbps, "ix: one copy per peer node")
	near(t, 500*1.032, peer.ToClientsMbps, "peer to clients")
	require.Equal(t, 4, p.Totals.Nodes, "the peer is not ours")
	near(t, 8, p.Totals.Cores, "cores")
	// Egress: 2 × 250 × 1.032 to clients + 3.096 relayed out of site 1.
	near(t, 516+3.096, p.Totals.EgressMbps, "egress")
}

func TestComputeNoPeeringPerSite(t *testing.T) {
	in := roundInput()
	in.RemoteShare, in.Peering, in.Sites, in.Redundancy = 0.2, false, 2, RedundancyPerSite
	in.NodeCores = 0.25
	p, err := Compute(in, roundCal())
	require.NoError(t, err)
	require.Nil(t, p.Peer)
	// 80 local (40 per site); the 20 remote pull from site 1: 60 there.
	s1, s2 := p.Sites[0], p.Sites[1]
	near(t, 60, s1.Participants, "site 1 participants")
	near(t, 40, s2.Participants, "site 2 participants")
	near(t, 20*1.032, p.IXMbps, "ix: a copy per remote participant")
	// Site 1: 9,000 pkt/s → 0.09 + joins 0.06 + 1 relay copy 150 × 5 µs.
	near(t, 0.15075, s1.CPUCores, "site 1 cpu")
	near(t, 0.10075, s2.CPUCores, "site 2 cpu")
	// per-site: each site carries 2/(2−1) of its load: 0.3015 / 0.25 → 2;
	// 0.2015 / 0.25 → 1.
	require.Equal(t, 2, s1.Nodes)
	require.Equal(t, 1, s2.Nodes)
	near(t, 61.92, s1.ToClientsMbps, "site 1 to clients")
	// The served participants include the remote ones (they are ours).
	near(t, p.Cost.Total/100, p.Cost.PerParticipant, "per participant")
}

func TestComputeMemoryBound(t *testing.T) {
	in := roundInput()
	in.Participants, in.NodeMemoryGiB, in.NodeCores = 1000, 0.5, 64
	// 1000 × 700 KiB = 700,000 KiB; a node holds 512 MiB − 50 MiB =
	// 473,088 KiB: the session spreads over 2 nodes though CPU fits one.
	p, err := Compute(in, roundCal())
	require.NoError(t, err)
	require.Equal(t, 2, p.Sites[0].SessionNodes)
	require.Equal(t, 2, p.Sites[0].Nodes)
	// The second node gets one relayed copy: 150 pkt/s sent + received.
	near(t, 300, p.Sites[0].RelayPPS, "relay pps")

	in.NodeMemoryGiB = 0.04 // less than the node's base memory
	_, err = Compute(in, roundCal())
	require.ErrorIs(t, err, ErrInput)
	require.Contains(t, err.Error(), "node_memory_gib")
}

func TestComputeManySessions(t *testing.T) {
	in := roundInput()
	in.Sessions = 40
	p, err := Compute(in, roundCal())
	require.NoError(t, err)
	// 40 × 0.25 cores = 10 cores on 4-core nodes: 3 nodes.
	near(t, 10, p.Sites[0].CPUCores, "cpu")
	require.Equal(t, 3, p.Sites[0].Nodes)
	require.Equal(t, 1, p.Sites[0].SessionNodes)
}

func TestComputeDynacast(t *testing.T) {
	in := roundInput()
	in.Layers = []Layer{{"low", 100, 20}, {"medium", 400, 40}, {"high", 1000, 100}}
	in.ReceiveLayer, in.VideoPublishers, in.Speakers = "medium", 2, 0
	p, err := Compute(in, roundCal())
	require.NoError(t, err)
	// Receive 2 × medium; publish low + medium (high paused), twice.
	near(t, 80, p.Stream.ReceivePPS, "pps")
	near(t, 0.8, p.Stream.ReceiveMbps, "receive")
	near(t, 1.0, p.Stream.PublishMbps, "publish")
}

func TestComputeAudioOnly(t *testing.T) {
	in := roundInput()
	in.VideoPublishers, in.Layers, in.ReceiveLayer = 0, nil, ""
	in.OverheadBytes = 60
	p, err := Compute(in, roundCal())
	require.NoError(t, err)
	near(t, 50, p.Stream.ReceivePPS, "pps")
	// 32,000 + 50 × 60 × 8 = 56,000 bit/s.
	near(t, 0.056, p.Stream.ReceiveMbps, "mbps")
}

func TestInputErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Input)
		want []string
	}{
		{"negative sessions", func(in *Input) { in.Sessions = -1 }, []string{"sessions: must be between 1 and 100000, got -1"}},
		{"zero participants", func(in *Input) { in.Participants = 0 }, []string{"participants: must be between 1"}},
		{"unknown level", func(in *Input) { in.Level = "geheim" }, []string{`level: unknown level "geheim" (public, kritis, vs-nfd)`}},
		{"share above 1", func(in *Input) { in.RemoteShare = 1.5 }, []string{"remote_share: must be at least 0 and below 1", "got 1.5"}},
		{"share of 1", func(in *Input) { in.RemoteShare = 1 }, []string{"remote_share"}},
		{"negative share", func(in *Input) { in.RemoteShare = -0.1 }, []string{"remote_share"}},
		{"NaN share", func(in *Input) { in.RemoteShare = math.NaN() }, []string{"remote_share"}},
		{"unknown redundancy", func(in *Input) { in.Redundancy = "n+2" }, []string{`redundancy: unknown redundancy "n+2"`}},
		{"per-site on one site", func(in *Input) { in.Redundancy = RedundancyPerSite }, []string{"redundancy: per-site needs at least 2 sites, got 1"}},
		{"kritis without redundancy", func(in *Input) { in.Level = LevelKRITIS }, []string{"redundancy: level kritis needs n+1 or per-site"}},
		{"unknown layer", func(in *Input) { in.ReceiveLayer = "4k" }, []string{`receive_layer: unknown layer "4k" (layers: high)`}},
		{"zero bitrate", func(in *Input) { in.Layers[0].Kbps = 0 }, []string{"layers[0].kbps: must be greater than 0"}},
		{"duplicate layer", func(in *Input) { in.Layers = append(in.Layers, in.Layers[0]) }, []string{`layers[1].name: duplicate layer "high"`}},
		{"speakers above audio publishers", func(in *Input) { in.Speakers = 2 }, []string{"speakers: more than the 1 audio publishers"}},
		{"publishers above participants", func(in *Input) { in.Participants, in.VideoPublishers = 1, 2 }, []string{"video_publishers: more than the 1 participants"}},
		{"nothing sent", func(in *Input) { in.VideoPublishers, in.Speakers = 0, 0 }, []string{"video_publishers: nobody sends anything"}},
		{"headroom of 1", func(in *Input) { in.Headroom = 1 }, []string{"headroom: must not exceed 0.9, got 1"}},
		{"infinite cores", func(in *Input) { in.NodeCores = math.Inf(1) }, []string{"node_cores: not a number"}},
		{"zero memory", func(in *Input) { in.NodeMemoryGiB = 0 }, []string{"node_memory_gib: must be greater than 0, got 0"}},
		{"negative price", func(in *Input) { in.Prices.EgressTB = -1 }, []string{"prices.egress_tb: must not be below 0, got -1"}},
		{"hours beyond a month", func(in *Input) { in.HoursPerMonth = 800 }, []string{"hours_per_month: must not exceed 744"}},
		{"zero join window", func(in *Input) { in.JoinWindowSeconds = 0 }, []string{"join_window_s: must be greater than 0"}},
		{"escape in currency", func(in *Input) { in.Prices.Currency = "\x1b[2J" }, []string{"prices.currency"}},
		{"all at once", func(in *Input) { in.Sessions, in.Level, in.RemoteShare = 0, "x", 2 }, []string{"sessions:", "level:", "remote_share:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := roundInput()
			tc.mod(&in)
			_, err := Compute(in, roundCal())
			require.ErrorIs(t, err, ErrInput)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestParseLayers(t *testing.T) {
	ls, err := ParseLayers("low:150:30, high:1700.5:186")
	require.NoError(t, err)
	require.Equal(t, []Layer{{"low", 150, 30}, {"high", 1700.5, 186}}, ls)
	for _, bad := range []string{"low:150", "low:x:30", "a:1:2:3", ""} {
		_, err := ParseLayers(bad)
		require.ErrorIs(t, err, ErrInput, bad)
		require.True(t, strings.HasPrefix(strings.TrimPrefix(err.Error(), ErrInput.Error()+": "), "layers:"), err.Error())
	}
}

func TestWriteText(t *testing.T) {
	in := roundInput()
	in.RemoteShare, in.Sites = 0.2, 2
	p, err := Compute(in, roundCal())
	require.NoError(t, err)
	var b strings.Builder
	require.NoError(t, p.WriteText(&b))
	out := b.String()
	for _, w := range []string{"site-1", "site-2", "peer", "total", "cost/month:", "EUR", "on the IX"} {
		require.Contains(t, out, w)
	}
	b.Reset()
	require.NoError(t, p.WriteJSON(&b))
	require.Contains(t, b.String(), `"ix_mbps"`)
}
