package loadtest

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Report is the outcome of a run. Counters of received media cover the
// measurement window only.
type Report struct {
	Participants     int
	JoinFailures     int
	JoinP50, JoinP99 time.Duration
	TracksSubscribed int
	TracksExpected   int
	// TracksUnsubscribed and Reconnects (clients that started to
	// reconnect) count during the whole run; both are 0 in an undisturbed
	// one.
	TracksUnsubscribed int
	Reconnects         int

	Window          time.Duration
	PacketsReceived uint64
	BytesReceived   uint64
	BitrateMbps     float64 // aggregate received
	LossPercent     float64 // RTP sequence gaps within the window (streams past their grace period)
	CorruptFrames   uint64
	// Freezes counts gaps longer than FreezeGap between the intact frames
	// of a received stream in the window (a stream stopped at the end
	// counts too); FrozenPercent is their time against all streams' time,
	// LongestFreeze the longest of them.
	Freezes       uint64
	FrozenPercent float64
	LongestFreeze time.Duration

	// Latency is the delivery time of frames in the window (publisher's
	// send stamp to the first packet at the subscriber's track reader), for
	// subscribers on their publisher's node ([0]) or on another node ([1]),
	// audio ([.][0]) and video ([.][1]) apart. The difference of the two
	// classes is what the bridge hop adds.
	Latency [2][2]LatencyStats

	GeneratorCPUPercent float64 // this process, % of one core over the window
	// JoinPhase is from the first join to the last one's end, and
	// GeneratorJoinCPUPercent this process's CPU meanwhile (joins cost the
	// clients more than media does).
	JoinPhase               time.Duration
	GeneratorJoinCPUPercent float64
	// SFUJoinCPUSeconds is the measured SFUs' CPU time during the join
	// phase, and JoinPhasePackets the packets the participants received
	// meanwhile: what the joins cost the SFU is the CPU time less the
	// forwarding of those packets (gxconf plan's join cost).
	SFUJoinCPUSeconds float64
	JoinPhasePackets  uint64
	// HostUDPDrops counts datagrams the host dropped for full socket
	// receive buffers during the window (any process); LoadAverage is the
	// host's 1-minute load at the end. Both flag runs disturbed by other
	// work on the machine.
	HostUDPDrops uint64
	LoadAverage  float64

	// The SFU figures add up the nodes measured (one URL: that server).
	SFUMeasured   bool
	SFUCPUSeconds float64 // over the window
	// SFUKernelSeconds is the part of SFUCPUSeconds spent in the kernel
	// (stime: system calls; on loopback also the delivery of what the SFU
	// sends into the generator's sockets).
	SFUKernelSeconds float64
	SFUCPUPercent    float64
	SFURSSStart      uint64  // bytes, before the first join
	SFURSSEnd        uint64  // bytes, at the end of the window
	SFUPeakRSS       uint64  // bytes, VmHWM
	MicrosPerPacket  float64 // SFU CPU µs per packet received by the generator
	RSSPerSubscribe  float64 // (end - start RSS) / participants that subscribe, bytes

	// Nodes has one entry per URL.
	Nodes []NodeReport
}

// NodeReport is what concerns one URL (node) of a run: its participants'
// joins and media, and with a pid and a metrics URL its process and relay.
type NodeReport struct {
	URL          string
	ServerNodeID string // server_info.node_id of the joins
	Participants int
	JoinFailures int
	JoinP50      time.Duration
	JoinP99      time.Duration
	// TracksSubscribed, PacketsReceived and LossPercent cover the
	// participants connected to this node.
	TracksSubscribed int
	PacketsReceived  uint64
	LossPercent      float64

	SFUMeasured      bool
	SFUCPUSeconds    float64
	SFUKernelSeconds float64
	SFUCPUPercent    float64
	SFURSSStart      uint64
	SFURSSEnd        uint64
	SFUPeakRSS       uint64
	// MicrosPerPacket is the node's CPU per packet its own participants
	// received: it includes the node's relay work (sending to, and
	// receiving from, other nodes).
	MicrosPerPacket float64

	RelayMeasured                   bool
	RelayPacketsOut, RelayPacketsIn uint64
	RelayBytesOut, RelayBytesIn     uint64

	// SendMeasured: the node's metrics named what its direct send path
	// handed the kernel over the window: packets, UDP messages (a
	// segmented one counts once) and sendmmsg calls. Packets per message
	// is what segmentation offload saved; messages per call what batching
	// did.
	SendMeasured                           bool
	DirectPackets, SendMessages, SendCalls uint64
}

// LatencyStats summarise delivery times.
type LatencyStats struct {
	Frames             uint64
	P50, P90, P99, Max time.Duration
}

func latencyOf(s HistSnapshot) LatencyStats {
	l := LatencyStats{Frames: s.Count(), P50: s.Quantile(0.50), P90: s.Quantile(0.90), P99: s.Quantile(0.99)}
	l.Max = s.Quantile(1)
	return l
}

func (r *Report) print(w io.Writer, o Options) {
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format+"\n", args...) }
	p("load: %d room(s) x (%d publishers + %d subscribers) against %s", o.Rooms, o.Publishers, o.Subscribers, strings.Join(o.URLs, ", "))
	p("joined:            %d (failed %d), join latency p50 %s p99 %s", r.Participants, r.JoinFailures, r.JoinP50.Round(time.Millisecond), r.JoinP99.Round(time.Millisecond))
	p("tracks subscribed: %d / %d expected", r.TracksSubscribed, r.TracksExpected)
	if r.TracksUnsubscribed > 0 || r.Reconnects > 0 {
		p("disturbed:         %d tracks ended, %d client reconnects", r.TracksUnsubscribed, r.Reconnects)
	}
	p("window:            %s", r.Window.Round(time.Millisecond))
	p("received:          %d packets (%.0f/s), %.2f Mbit/s", r.PacketsReceived, float64(r.PacketsReceived)/r.Window.Seconds(), r.BitrateMbps)
	p("packet loss:       %.3f %% (corrupt frames %d)", r.LossPercent, r.CorruptFrames)
	p("freezes:           %d (over %s between frames), %.3f %% of stream time, longest %s", r.Freezes, FreezeGap, r.FrozenPercent, r.LongestFreeze.Round(time.Millisecond))
	classes := []string{"same node", "cross node"}
	for c, name := range classes {
		for k, kind := range []string{"audio", "video"} {
			l := r.Latency[c][k]
			if l.Frames == 0 || (len(r.Nodes) == 1 && c == crossNode) {
				continue
			}
			label := fmt.Sprintf("latency %s", kind)
			if len(r.Nodes) > 1 {
				label += " " + name
			}
			p("%-18s p50 %s p90 %s p99 %s max %s (%d frames)", label+":", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), l.Frames)
		}
	}
	if len(r.Nodes) > 1 {
		for k, kind := range []string{"audio", "video"} {
			same, cross := r.Latency[sameNode][k], r.Latency[crossNode][k]
			if same.Frames > 0 && cross.Frames > 0 {
				p("%-18s p50 %s p99 %s (cross node minus same node)", "hop adds "+kind+":", ms(cross.P50-same.P50), ms(cross.P99-same.P99))
			}
		}
	}
	p("generator cpu:     %.1f %% of one core (joins: %.1f %% over %s)", r.GeneratorCPUPercent, r.GeneratorJoinCPUPercent, r.JoinPhase.Round(time.Second))
	p("host:              %d udp receive-buffer drops in the window, load average %.2f", r.HostUDPDrops, r.LoadAverage)
	if r.SFUMeasured {
		p("sfu cpu:           %.2f s over the window (%.1f %% of one core; %.2f s of it in the kernel)", r.SFUCPUSeconds, r.SFUCPUPercent, r.SFUKernelSeconds)
		p("sfu cpu / packet:  %.2f us per forwarded packet", r.MicrosPerPacket)
		p("sfu cpu in joins:  %.2f s over %s (%d packets forwarded meanwhile)", r.SFUJoinCPUSeconds, r.JoinPhase.Round(time.Millisecond), r.JoinPhasePackets)
		p("sfu rss:           start %.1f MB, end %.1f MB, peak %.1f MB, %.0f KB per participant", mb(r.SFURSSStart), mb(r.SFURSSEnd), mb(r.SFUPeakRSS), r.RSSPerSubscribe/1024)
	}
	if len(r.Nodes) == 1 && r.Nodes[0].SendMeasured {
		p("sfu sends:         %s", r.Nodes[0].sends())
	}
	if len(r.Nodes) < 2 {
		return
	}
	for i, n := range r.Nodes {
		id := n.ServerNodeID
		if id == "" {
			id = "?"
		}
		p("node %d (%s, %s):", i, n.URL, id)
		p("  joined %d (failed %d), join p50 %s p99 %s, tracks %d, received %d packets, loss %.3f %%",
			n.Participants, n.JoinFailures, n.JoinP50.Round(time.Millisecond), n.JoinP99.Round(time.Millisecond),
			n.TracksSubscribed, n.PacketsReceived, n.LossPercent)
		if n.SFUMeasured {
			p("  cpu %.2f s (%.1f %% of one core), %.2f us per packet its participants received, rss start %.1f MB end %.1f MB peak %.1f MB",
				n.SFUCPUSeconds, n.SFUCPUPercent, n.MicrosPerPacket, mb(n.SFURSSStart), mb(n.SFURSSEnd), mb(n.SFUPeakRSS))
		}
		if n.RelayMeasured {
			p("  relay out %d packets %.2f MB, in %d packets %.2f MB", n.RelayPacketsOut, mb(n.RelayBytesOut), n.RelayPacketsIn, mb(n.RelayBytesIn))
		}
		if n.SendMeasured {
			p("  sends %s", n.sends())
		}
	}
}

// sends describes the direct send path's system call work.
func (n NodeReport) sends() string {
	return fmt.Sprintf("%d packets on the direct path in %d UDP messages (%.2f packets per message) in %d sendmmsg calls (%.1f messages per call)",
		n.DirectPackets, n.SendMessages, float64(n.DirectPackets)/float64(n.SendMessages), n.SendCalls, float64(n.SendMessages)/float64(n.SendCalls))
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

// ms formats a latency in milliseconds to the microsecond.
func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }
