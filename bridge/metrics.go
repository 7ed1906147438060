package bridge

import (
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// linkStats is the association's counters with the link's current RTT.
func (a *association) linkStats() LinkStats {
	s := a.stats.snapshot()
	if ps, ok := a.ice.GetSelectedCandidatePairStats(); ok && ps.CurrentRoundTripTime > 0 {
		s.RTT = time.Duration(ps.CurrentRoundTripTime * float64(time.Second))
	}
	return s
}

// PeerStats sums the links of all rooms with one peer node. Counters cover
// links that ended too, so they only grow; Links, TracksOut, TracksIn and
// RTT describe the live links.
type PeerStats struct {
	Peer string
	// Links is the number of live associations (one per shared room).
	Links                    int
	SentBytes, RecvBytes     uint64 // RTP bytes, audio and video
	SentPackets, RecvPackets uint64
	// Nacked counts sequence numbers found missing on packets from the
	// peer (relay loss, each NACKed); Retransmits the packets resent to it.
	Nacked, Retransmits       uint64
	KeyframesIn, KeyframesOut uint64
	TracksOut, TracksIn       int
	// RTT is the highest round trip time of the live links (0 unknown).
	RTT time.Duration
}

// add folds one link's counters into p.
func (p *PeerStats) add(s LinkStats) {
	for i := 0; i < 3; i++ {
		p.SentBytes += s.SentBytes[i]
		p.RecvBytes += s.RecvBytes[i]
		p.SentPackets += s.SentPackets[i]
		p.RecvPackets += s.RecvPackets[i]
	}
	p.SentBytes += s.SentAudioBytes
	p.RecvBytes += s.RecvAudioBytes
	p.SentPackets += s.SentAudio
	p.RecvPackets += s.RecvAudio
	p.Nacked += s.NACKsOut
	p.Retransmits += s.Retransmits
	p.KeyframesIn += s.PLIsIn
	p.KeyframesOut += s.PLIsOut
}

// retire keeps an ended association's counters in its peer's totals.
// Callers hold b.mu.
func (b *Bridge) retireLocked(a *association) {
	if b.retired == nil {
		b.retired = map[string]*PeerStats{}
	}
	p := b.retired[a.label()]
	if p == nil {
		p = &PeerStats{Peer: a.label()}
		b.retired[a.label()] = p
	}
	p.add(a.stats.snapshot())
}

// Peers returns the relay totals per peer node, in peer order.
func (b *Bridge) Peers() []PeerStats {
	b.mu.Lock()
	byPeer := make(map[string]*PeerStats, len(b.retired))
	for peer, r := range b.retired {
		c := *r
		byPeer[peer] = &c
	}
	assocs := make([]*association, 0, len(b.assocs))
	for _, a := range b.assocs {
		assocs = append(assocs, a)
	}
	b.mu.Unlock()
	for _, a := range assocs {
		p := byPeer[a.label()]
		if p == nil {
			p = &PeerStats{Peer: a.label()}
			byPeer[a.label()] = p
		}
		s := a.linkStats()
		p.add(s)
		p.Links++
		p.TracksOut += s.TracksOut
		p.TracksIn += s.TracksIn
		p.RTT = max(p.RTT, s.RTT)
	}
	out := make([]PeerStats, 0, len(byPeer))
	for _, p := range byPeer {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

// rateMeter turns the relay byte totals into a bitrate between readings.
type rateMeter struct {
	mu    sync.Mutex
	at    time.Time
	bytes uint64
	last  uint64
}

// Bitrate is the relay's bits per second in both directions, over all
// links, since the previous call (0 on the first; calls less than half a
// second apart repeat the last value). The cluster heartbeat reads it.
func (b *Bridge) Bitrate() uint64 {
	var total uint64
	for _, p := range b.Peers() {
		total += p.SentBytes + p.RecvBytes
	}
	now := time.Now()
	return b.rate.sample(now, total, now)
}

// sample returns the bits per second between the previous sample and now,
// given the byte total; the first sample measures from since (with zero
// bytes then). Samples less than half a second apart repeat the last value.
func (m *rateMeter) sample(now time.Time, total uint64, since time.Time) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	from, base := m.at, m.bytes
	if from.IsZero() {
		from, base = since, 0
	} else if now.Sub(from) < 500*time.Millisecond {
		return m.last
	}
	if dt := now.Sub(from).Seconds(); dt > 0 && total >= base {
		m.last = uint64(float64(total-base) * 8 / dt)
	}
	m.at, m.bytes = now, total
	return m.last
}

// Dropped returns how many relay RTP/RTCP datagrams were dropped on
// arrival, by reason ("address", "auth", "ssrc"), over all the node's
// relay sockets.
func (b *Bridge) Dropped() map[string]uint64 {
	return map[string]uint64{
		"address": b.drops.address.Load(),
		"auth":    b.drops.auth.Load(),
		"ssrc":    b.drops.ssrc.Load(),
	}
}

// Collector exports the relay's per-peer metrics; register it on the
// registry the binary serves. Names are documented in README.md.
func (b *Bridge) Collector() prometheus.Collector { return &collector{b: b} }

var (
	peerLabel     = []string{"peer"}
	dirLabels     = []string{"peer", "direction"}
	descBytes     = prometheus.NewDesc("gxconf_bridge_relay_bytes_total", "RTP bytes relayed to (direction=out) or from (in) a peer node.", dirLabels, nil)
	descPackets   = prometheus.NewDesc("gxconf_bridge_relay_packets_total", "RTP packets relayed to (out) or from (in) a peer node.", dirLabels, nil)
	descTracks    = prometheus.NewDesc("gxconf_bridge_relay_tracks", "Tracks relayed now to (out) or from (in) a peer node.", dirLabels, nil)
	descLinks     = prometheus.NewDesc("gxconf_bridge_relay_links", "Live relay associations (one per shared room) with a peer node.", peerLabel, nil)
	descRTT       = prometheus.NewDesc("gxconf_bridge_relay_rtt_seconds", "Round trip time of the relay link to a peer node (ICE consent checks; highest of its links).", peerLabel, nil)
	descNacked    = prometheus.NewDesc("gxconf_bridge_relay_lost_packets_total", "Packets from a peer node found missing on the relay link (each NACKed).", peerLabel, nil)
	descRetrans   = prometheus.NewDesc("gxconf_bridge_relay_retransmitted_packets_total", "Packets resent to a peer node on its NACKs.", peerLabel, nil)
	descKeyframes = prometheus.NewDesc("gxconf_bridge_relay_keyframe_requests_total", "Keyframe requests received from (in) or sent to (out) a peer node.", dirLabels, nil)
	descLossy     = prometheus.NewDesc("gxconf_bridge_relay_lossy_data_dropped_total", "Lossy data (_lossy data packets, data track packets) not relayed to a peer node because its control channel already held 1 MiB unsent.", nil, nil)
	descBacklog   = prometheus.NewDesc("gxconf_bridge_relay_backlog_failures_total", "Relay associations failed (and relinked) because the peer node left 16 MiB of control messages and reliable data unread.", nil, nil)
	descDropped   = prometheus.NewDesc("gxconf_bridge_relay_dropped_packets_total", "Relay RTP/RTCP datagrams dropped on arrival, by reason: address (not from a live association's selected pair), auth (failed SRTP authentication, replayed, malformed or before the keys), ssrc (authentic peer, SSRC not announced or gone).", []string{"reason"}, nil)

	descPeerRooms   = prometheus.NewDesc("gxconf_bridge_peer_rooms", "Rooms relayed now with a peered deployment: ours it relays (role=authority) or its that we relay (role=relay).", []string{"peer", "role"}, nil)
	descPeerTracks  = prometheus.NewDesc("gxconf_bridge_peer_tracks", "Tracks relayed now to (out) or from (in) a peered deployment.", dirLabels, nil)
	descPeerCopies  = prometheus.NewDesc("gxconf_bridge_peer_track_copies", "Copies of each track sent to a peered deployment over the IX now: tracks sent per distinct track (1: one copy, however many of its users subscribe; more when several of its nodes relay a room; 0: none sent).", peerLabel, nil)
	descPeerRefused = prometheus.NewDesc("gxconf_bridge_peer_refused_total", "Requests of a peered deployment on our rooms that were refused, by kind (track, data, control, participant: announced or staying without a grant, association, restricted_track: a want of a track none of its participants may receive; unauthenticated: a signalling request or grant check whose MAC does not verify, peer=\"(unknown)\" when it names no configured peer; replayed: one too old, from the future or replayed).", []string{"peer", "kind"}, nil)
)

// PeerDeployment is the live relay with one peered deployment.
type PeerDeployment struct {
	Peer string
	// Authority counts our rooms the peer relays; Relay its rooms we relay.
	Authority, Relay    int
	TracksOut, TracksIn int
	// DistinctOut counts the different tracks among TracksOut: more than
	// one of the peer's nodes relaying a room each get their copy.
	DistinctOut int
}

// PeerDeployments returns the live relays per peered deployment, in name
// order: connected associations only (not those still connecting, as
// re-linking attempts while the IX is down).
func (b *Bridge) PeerDeployments() []PeerDeployment {
	b.mu.Lock()
	var assocs []*association
	for _, a := range b.assocs {
		if a.pr != nil && a.isOpen() {
			assocs = append(assocs, a)
		}
	}
	b.mu.Unlock()
	by := map[string]*PeerDeployment{}
	distinct := map[string]map[string]bool{} // by peer: track sids sent
	for _, a := range assocs {
		d := by[a.pr.deployment]
		if d == nil {
			d = &PeerDeployment{Peer: a.pr.deployment}
			by[a.pr.deployment] = d
			distinct[a.pr.deployment] = map[string]bool{}
		}
		if a.pr.authority {
			d.Authority++
		} else {
			d.Relay++
		}
		if sids := a.outSIDs.Load(); sids != nil {
			for _, sid := range *sids {
				distinct[a.pr.deployment][sid] = true
			}
		}
		st := a.stats.snapshot()
		d.TracksOut += st.TracksOut
		d.TracksIn += st.TracksIn
	}
	out := make([]PeerDeployment, 0, len(by))
	for _, d := range by {
		d.DistinctOut = len(distinct[d.Peer])
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

type collector struct{ b *Bridge }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBytes, descPackets, descTracks, descLinks, descRTT, descNacked, descRetrans, descKeyframes, descDropped, descLossy, descBacklog,
		descPeerRooms, descPeerTracks, descPeerCopies, descPeerRefused} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.b.Peers() {
		counter := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
		}
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
		}
		counter(descBytes, p.SentBytes, p.Peer, "out")
		counter(descBytes, p.RecvBytes, p.Peer, "in")
		counter(descPackets, p.SentPackets, p.Peer, "out")
		counter(descPackets, p.RecvPackets, p.Peer, "in")
		counter(descNacked, p.Nacked, p.Peer)
		counter(descRetrans, p.Retransmits, p.Peer)
		counter(descKeyframes, p.KeyframesIn, p.Peer, "in")
		counter(descKeyframes, p.KeyframesOut, p.Peer, "out")
		gauge(descTracks, float64(p.TracksOut), p.Peer, "out")
		gauge(descTracks, float64(p.TracksIn), p.Peer, "in")
		gauge(descLinks, float64(p.Links), p.Peer)
		gauge(descRTT, p.RTT.Seconds(), p.Peer)
	}
	ch <- prometheus.MustNewConstMetric(descLossy, prometheus.CounterValue, float64(c.b.lossyDropped.Load()))
	ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.CounterValue, float64(c.b.backlogFailed.Load()))
	for reason, v := range c.b.Dropped() {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(v), reason)
	}
	for _, d := range c.b.PeerDeployments() {
		ch <- prometheus.MustNewConstMetric(descPeerRooms, prometheus.GaugeValue, float64(d.Authority), d.Peer, "authority")
		ch <- prometheus.MustNewConstMetric(descPeerRooms, prometheus.GaugeValue, float64(d.Relay), d.Peer, "relay")
		ch <- prometheus.MustNewConstMetric(descPeerTracks, prometheus.GaugeValue, float64(d.TracksOut), d.Peer, "out")
		ch <- prometheus.MustNewConstMetric(descPeerTracks, prometheus.GaugeValue, float64(d.TracksIn), d.Peer, "in")
		copies := 0.0
		if d.DistinctOut > 0 {
			copies = float64(d.TracksOut) / float64(d.DistinctOut)
		}
		ch <- prometheus.MustNewConstMetric(descPeerCopies, prometheus.GaugeValue, copies, d.Peer)
	}
	c.b.mu.Lock()
	refused := make(map[[2]string]uint64, len(c.b.refused))
	for k, v := range c.b.refused {
		refused[k] = v
	}
	c.b.mu.Unlock()
	for k, v := range refused {
		ch <- prometheus.MustNewConstMetric(descPeerRefused, prometheus.CounterValue, float64(v), k[0], k[1])
	}
}
