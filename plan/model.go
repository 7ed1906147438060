package plan

import (
	"fmt"
	"math"
)

// Plan is the planner's answer. Rates are per second at full load;
// Mbit/s are 10^6 bits; GiB are 2^30 bytes.
type Plan struct {
	Input       Input           `json:"input"`
	Calibration CalibrationInfo `json:"calibration"`
	// Stream is what one participant receives and the publishers of one
	// session send.
	Stream Stream `json:"stream"`
	Sites  []Site `json:"sites"`
	// Peer is the peered federation's deployment serving the remote
	// participants (their operator's bill, sized with the same figures);
	// nil without remote participants or without peering.
	Peer *Site `json:"peer,omitempty"`
	// InterSiteMbps crosses between this deployment's sites, IXMbps
	// between the deployments (with peering one copy per track and peer
	// node; without, one per remote participant).
	InterSiteMbps float64  `json:"inter_site_mbps"`
	IXMbps        float64  `json:"ix_mbps"`
	Totals        Totals   `json:"totals"`
	Cost          Cost     `json:"cost"`
	Notes         []string `json:"notes"`
}

// CalibrationInfo names the calibration a plan used.
type CalibrationInfo struct {
	Kind    string `json:"kind"`
	Version int    `json:"version"`
	Date    string `json:"date"`
	Machine string `json:"machine"`
	Command string `json:"command"`
	// The figures, repeated so a plan's JSON stands on its own.
	ForwardMicros      float64 `json:"forward_us_per_packet"`
	RelaySendMicros    float64 `json:"relay_send_us_per_packet"`
	RelayReceiveMicros float64 `json:"relay_receive_us_per_packet"`
	NodeBaseMiB        float64 `json:"node_base_memory_mib"`
	ParticipantKiB     float64 `json:"participant_memory_kib"`
	SubscribedTrackKiB float64 `json:"subscribed_track_memory_kib"`
	JoinCPUMillis      float64 `json:"join_cpu_ms"`
}

// Stream describes one session's media.
type Stream struct {
	ReceivePPS       float64 `json:"receive_pps"`       // per participant
	ReceiveMbps      float64 `json:"receive_mbps"`      // per participant, headers included
	PublishMbps      float64 `json:"publish_mbps"`      // all publishers of a session, all layers
	SubscribedTracks int     `json:"subscribed_tracks"` // per participant
}

// Site is the sizing of one site (or of the peer deployment).
type Site struct {
	Name         string  `json:"name"`
	Participants float64 `json:"participants"` // over all sessions
	// SessionNodes is how many nodes one session occupies here (a
	// session larger than a node spreads, linked by the bridge).
	SessionNodes int `json:"session_nodes"`
	// Needed, before headroom and redundancy.
	CPUCores   float64 `json:"cpu_cores"`
	ForwardPPS float64 `json:"forward_pps"`
	RelayPPS   float64 `json:"relay_pps"` // sent plus received
	MemoryGiB  float64 `json:"memory_gib"`
	// Provisioned: nodes of Input.NodeCores and NodeMemoryGiB.
	LoadNodes int     `json:"load_nodes"` // for the load with headroom
	Nodes     int     `json:"nodes"`      // with redundancy
	Cores     float64 `json:"cores"`
	RAMGiB    float64 `json:"ram_gib"`
	// Bandwidth at this site's edge.
	ToClientsMbps   float64 `json:"to_clients_mbps"`
	FromClientsMbps float64 `json:"from_clients_mbps"`
	RelayOutMbps    float64 `json:"relay_out_mbps"` // to other sites and the IX
	RelayInMbps     float64 `json:"relay_in_mbps"`
}

// Totals add up this deployment's sites (the peer is not included).
type Totals struct {
	Nodes         int     `json:"nodes"`
	CPUCores      float64 `json:"cpu_cores"`
	Cores         float64 `json:"cores"`
	MemoryGiB     float64 `json:"memory_gib"`
	RAMGiB        float64 `json:"ram_gib"`
	EgressMbps    float64 `json:"egress_mbps"` // to clients and relays leaving a site
	EgressTBMonth float64 `json:"egress_tb_month"`
}

// Cost is per month, in Input.Prices.Currency.
type Cost struct {
	Cores    float64 `json:"cores"`
	Memory   float64 `json:"memory"`
	Egress   float64 `json:"egress"`
	Total    float64 `json:"total"`
	Currency string  `json:"currency"`
	// PerParticipant is Total divided by the concurrent participants
	// this deployment serves.
	PerParticipant float64 `json:"per_participant"`
}

// ceil rounds up, forgiving float noise (2.0000000001 is 2).
func ceil(x float64) int { return int(math.Ceil(x - 1e-9)) }

// Compute sizes the deployment. The model (a fluid approximation; see
// docs/concept for its limits):
//
//   - every participant receives every speaker's audio and every video in
//     ReceiveLayer; publishers send the layers up to it (Layers are listed
//     from low to high; dynacast pauses the others) (publishers receive themselves too: a slight
//     overestimate); each holds a subscription to every audio and video
//     track (memory);
//   - CPU = forwarded packets × ForwardMicros + relayed packets ×
//     (RelaySendMicros at the sender, RelayReceiveMicros at the receiver)
//   - joins × JoinCPUMillis spread over JoinWindowSeconds;
//   - memory = participants × (ParticipantKiB + tracks × SubscribedTrackKiB)
//   - nodes × NodeBaseMiB;
//   - publishers sit on site 1; local participants are spread evenly over
//     the sites; a session larger than one node spreads over several, and
//     the publishers' node sends one copy of what is received to every
//     other node hosting the session (the bridge: one association per
//     room and node pair), over the IX to each peer node;
//   - nodes per site = the larger of CPU and memory need divided by a
//     node's capacity less Headroom; redundancy adds one node per site
//     (n+1) or sizes each site for S/(S−1) of its load (per-site);
//   - cost = provisioned cores and GiB × monthly prices + egress (to
//     clients and relays leaving a site) × HoursPerMonth × price per TB.
func Compute(in Input, cal Calibration) (*Plan, error) {
	if err := in.Validate(); err != nil {
		return nil, err
	}
	if err := cal.Validate(); err != nil {
		return nil, err
	}
	p := &Plan{Input: in, Calibration: CalibrationInfo{
		Kind: cal.Kind, Version: cal.Version, Date: cal.Date, Machine: cal.Machine, Command: cal.Command,
		ForwardMicros: cal.ForwardMicros, RelaySendMicros: cal.RelaySendMicros, RelayReceiveMicros: cal.RelayReceiveMicros,
		NodeBaseMiB: cal.NodeBaseMiB, ParticipantKiB: cal.ParticipantKiB, SubscribedTrackKiB: cal.SubscribedTrackKiB,
		JoinCPUMillis: cal.JoinCPUMillis,
	}}

	// One participant's downstream and the publishers' upstream.
	oh := in.OverheadBytes * 8
	audioBps := in.AudioKbps*1000 + in.AudioPPS*oh
	recvPPS := float64(in.Speakers) * in.AudioPPS
	recvBps := float64(in.Speakers) * audioBps
	pubBps := recvBps
	if in.VideoPublishers > 0 {
		// Dynacast: nobody receives the layers above ReceiveLayer, so
		// the SFU pauses them at the publisher.
		var lay Layer
		var sentBps float64
		for _, l := range in.Layers {
			sentBps += l.Kbps*1000 + l.PPS*oh
			if l.Name == in.ReceiveLayer {
				lay = l
				break
			}
		}
		v := float64(in.VideoPublishers)
		recvPPS += v * lay.PPS
		recvBps += v * (lay.Kbps*1000 + lay.PPS*oh)
		pubBps += v * sentBps
	}
	tracks := in.AudioPublishers + in.VideoPublishers
	p.Stream = Stream{ReceivePPS: recvPPS, ReceiveMbps: recvBps / 1e6, PublishMbps: pubBps / 1e6, SubscribedTracks: tracks}

	sessions := float64(in.Sessions)
	local := float64(in.Participants) * (1 - in.RemoteShare)
	remote := float64(in.Participants) * in.RemoteShare
	perSite := local / float64(in.Sites)
	usableCores := in.NodeCores * (1 - in.Headroom)
	usableKiB := in.NodeMemoryGiB * (1 - in.Headroom) * (1 << 20)
	baseKiB := cal.NodeBaseMiB * 1024
	if usableKiB <= baseKiB {
		return nil, fmt.Errorf("%w: node_memory_gib: %g GiB less headroom does not hold a node's base memory (%g MiB)", ErrInput, in.NodeMemoryGiB, cal.NodeBaseMiB)
	}
	partKiB := cal.ParticipantKiB + float64(tracks)*cal.SubscribedTrackKiB
	joinCores := cal.JoinCPUMillis / 1000 / in.JoinWindowSeconds // per participant joining in the window

	// Per session and site: who is served where, and how many nodes one
	// session needs there (from its forwarding, joins and memory).
	type part struct {
		name              string
		participants      float64 // per session
		fwdPPS, toClients float64
		fromClients       float64
		sendPPS, recvPPS  float64 // relay
		relayOut, relayIn float64 // bits/s leaving/entering the site
		nodes             int     // per session
	}
	span := func(participants, fwdPPS float64) int {
		cpu := fwdPPS*cal.ForwardMicros/1e6 + participants*joinCores
		return max(1, ceil(cpu/usableCores), ceil(participants*partKiB/(usableKiB-baseKiB)))
	}
	sites := make([]part, in.Sites)
	for i := range sites {
		s := &sites[i]
		s.name = fmt.Sprintf("site-%d", i+1)
		s.participants = perSite
		s.fwdPPS, s.toClients = perSite*recvPPS, perSite*recvBps
	}
	sites[0].fromClients = pubBps
	var peer *part
	if remote > 0 {
		if in.Peering {
			peer = &part{name: "peer", participants: remote, fwdPPS: remote * recvPPS, toClients: remote * recvBps}
		} else {
			// Each remote participant pulls its own copy from site 1.
			sites[0].participants += remote
			sites[0].fwdPPS += remote * recvPPS
			sites[0].toClients += remote * recvBps
			p.IXMbps = sessions * remote * recvBps / 1e6
		}
	}
	for i := range sites {
		sites[i].nodes = span(sites[i].participants, sites[i].fwdPPS)
	}
	// The publishers' node sends a copy to every other node of the
	// session: the other nodes of site 1, every node of the other sites
	// and of the peer.
	origin := &sites[0]
	copies := float64(origin.nodes - 1)
	origin.recvPPS += copies * recvPPS
	for i := 1; i < len(sites); i++ {
		s := &sites[i]
		if s.participants <= 0 {
			continue
		}
		n := float64(s.nodes)
		copies += n
		s.recvPPS += n * recvPPS
		s.relayIn += n * recvBps
		origin.relayOut += n * recvBps
		p.InterSiteMbps += sessions * n * recvBps / 1e6
	}
	if peer != nil {
		peer.nodes = span(peer.participants, peer.fwdPPS)
		n := float64(peer.nodes)
		copies += n
		peer.recvPPS += n * recvPPS
		peer.relayIn += n * recvBps
		origin.relayOut += n * recvBps
		p.IXMbps = sessions * n * recvBps / 1e6
	}
	origin.sendPPS += copies * recvPPS

	size := func(s part, redundancy Redundancy, share float64) Site {
		out := Site{Name: s.name, Participants: sessions * s.participants, SessionNodes: s.nodes}
		out.ForwardPPS = sessions * s.fwdPPS
		out.RelayPPS = sessions * (s.sendPPS + s.recvPPS)
		out.CPUCores = sessions * ((s.fwdPPS*cal.ForwardMicros+s.sendPPS*cal.RelaySendMicros+s.recvPPS*cal.RelayReceiveMicros)/1e6 +
			s.participants*joinCores)
		memKiB := sessions * s.participants * partKiB
		// A session spread over k nodes needs k nodes at least.
		n := max(s.nodes, ceil(share*out.CPUCores/usableCores), ceil(share*memKiB/(usableKiB-baseKiB)))
		if out.Participants == 0 {
			n = 1
		}
		out.LoadNodes = n
		if redundancy == RedundancyNPlus1 {
			n++
		}
		out.Nodes = n
		out.MemoryGiB = (memKiB + float64(out.LoadNodes)*baseKiB) / (1 << 20)
		out.Cores = float64(n) * in.NodeCores
		out.RAMGiB = float64(n) * in.NodeMemoryGiB
		out.ToClientsMbps = sessions * s.toClients / 1e6
		out.FromClientsMbps = sessions * s.fromClients / 1e6
		out.RelayOutMbps = sessions * s.relayOut / 1e6
		out.RelayInMbps = sessions * s.relayIn / 1e6
		return out
	}
	share := 1.0
	if in.Redundancy == RedundancyPerSite {
		share = float64(in.Sites) / float64(in.Sites-1)
	}
	for _, s := range sites {
		site := size(s, in.Redundancy, share)
		p.Sites = append(p.Sites, site)
		t := &p.Totals
		t.Nodes += site.Nodes
		t.CPUCores += site.CPUCores
		t.Cores += site.Cores
		t.MemoryGiB += site.MemoryGiB
		t.RAMGiB += site.RAMGiB
		t.EgressMbps += site.ToClientsMbps + site.RelayOutMbps
	}
	if peer != nil {
		r := in.Redundancy
		if r == RedundancyPerSite {
			r = RedundancyNPlus1
		}
		ps := size(*peer, r, 1)
		p.Peer = &ps
	}
	p.Totals.EgressTBMonth = p.Totals.EgressMbps * 1e6 / 8 * in.HoursPerMonth * 3600 / 1e12
	c := &p.Cost
	c.Currency = in.Prices.Currency
	c.Cores = p.Totals.Cores * in.Prices.CoreMonth
	c.Memory = p.Totals.RAMGiB * in.Prices.GiBMonth
	c.Egress = p.Totals.EgressTBMonth * in.Prices.EgressTB
	c.Total = c.Cores + c.Memory + c.Egress
	if served := sessions * (local + boolf(!in.Peering)*remote); served > 0 {
		c.PerParticipant = c.Total / served
	}
	p.Notes = notes(in)
	return p, nil
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// notes are what the level asks of the operator beyond the numbers.
func notes(in Input) []string {
	n := []string{} // JSON: [] rather than null
	switch in.Level {
	case LevelKRITIS:
		n = append(n, "kritis: E2EE is required (frames pass the SFU untouched: no CPU change, a few bytes per frame more); allowed homeservers only; attestations re-checked hourly")
	case LevelVSNfD:
		n = append(n, "vs-nfd: nodes only on sites flagged approved (focus.sfu.approved_site) in an environment approved for VS-NfD; cloud list prices rarely apply",
			"vs-nfd: credentials re-verified before every token (the join cost measured does not include the credential check)")
		if in.RemoteShare > 0 && in.Peering {
			n = append(n, "vs-nfd: relaying to the peer needs vs-nfd in its peering levels, i.e. an approved peer")
		}
	}
	if in.Redundancy == RedundancyNone {
		n = append(n, "no redundancy: a node failure drops its participants until they rejoin elsewhere, if capacity is left")
	}
	return n
}
