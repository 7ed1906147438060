package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the plan as indented JSON.
func (p *Plan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

// WriteText writes the plan as a table with a summary.
func (p *Plan) WriteText(w io.Writer) error {
	in := p.Input
	var b strings.Builder
	pf := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	pf("load:        %d session(s) × %d participants (%.0f %% from a peered federation, peering %s), %d site(s)",
		in.Sessions, in.Participants, in.RemoteShare*100, onOff(in.Peering), in.Sites)
	pf("media:       %d video publisher(s) received at %q, %d audio track(s) of which %d speak; per participant %.0f packets/s, %.2f Mbit/s in, %d subscribed tracks",
		in.VideoPublishers, in.ReceiveLayer, in.AudioPublishers, in.Speakers, p.Stream.ReceivePPS, p.Stream.ReceiveMbps, p.Stream.SubscribedTracks)
	pf("level:       %s, redundancy %s, headroom %.0f %%, nodes of %g cores and %g GiB", in.Level, in.Redundancy, in.Headroom*100, in.NodeCores, in.NodeMemoryGiB)
	c := p.Calibration
	pf("calibration: %s v%d of %s: %.2f µs/forwarded packet, relay %.2f+%.2f µs, join %.1f ms, %.0f KiB/participant + %.0f KiB/track, node %.0f MiB",
		c.Kind, c.Version, c.Date, c.ForwardMicros, c.RelaySendMicros, c.RelayReceiveMicros, c.JoinCPUMillis, c.ParticipantKiB, c.SubscribedTrackKiB, c.NodeBaseMiB)
	pf("             measured on: %s", c.Machine)
	pf("")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "site\tparticipants\tcpu needed\tmemory needed\tnodes\tcores\tram GiB\tto clients\tfrom clients\trelay out\trelay in\t")
	row := func(s Site) {
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f cores\t%.2f GiB\t%s\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t\n", s.Name, s.Participants, s.CPUCores, s.MemoryGiB,
			nodes(s), s.Cores, s.RAMGiB, mbps(s.ToClientsMbps), mbps(s.FromClientsMbps), mbps(s.RelayOutMbps), mbps(s.RelayInMbps))
	}
	for _, s := range p.Sites {
		row(s)
	}
	t := p.Totals
	fmt.Fprintf(tw, "total\t\t%.2f cores\t%.2f GiB\t%d\t%.0f\t%.0f\t\t\t\t\t\n", t.CPUCores, t.MemoryGiB, t.Nodes, t.Cores, t.RAMGiB)
	if p.Peer != nil {
		row(*p.Peer)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	pf("")
	if p.Peer != nil {
		pf("peer:        the peered federation's deployment for its %.0f participants (their operator's bill, same figures)", p.Peer.Participants)
	}
	pf("between sites %s, on the IX %s; a session spans %s node(s) per site", mbps(p.InterSiteMbps), mbps(p.IXMbps), sessionNodes(p.Sites))
	pf("egress:      %s = %.1f TB per month at %g hours", mbps(t.EgressMbps), t.EgressTBMonth, in.HoursPerMonth)
	k := p.Cost
	pf("cost/month:  cores %.0f × %.2f = %.2f; RAM %.0f GiB × %.2f = %.2f; egress %.1f TB × %.2f = %.2f; total %.2f %s (%.2f per concurrent participant)",
		t.Cores, in.Prices.CoreMonth, k.Cores, t.RAMGiB, in.Prices.GiBMonth, k.Memory, t.EgressTBMonth, in.Prices.EgressTB, k.Egress, k.Total, k.Currency, k.PerParticipant)
	for _, n := range p.Notes {
		pf("note:        %s", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func nodes(s Site) string {
	if s.Nodes == s.LoadNodes {
		return fmt.Sprint(s.Nodes)
	}
	return fmt.Sprintf("%d+%d", s.LoadNodes, s.Nodes-s.LoadNodes)
}

func mbps(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2f Gbit/s", v/1000)
	}
	return fmt.Sprintf("%.1f Mbit/s", v)
}

func sessionNodes(sites []Site) string {
	parts := make([]string, len(sites))
	for i, s := range sites {
		parts[i] = fmt.Sprint(s.SessionNodes)
	}
	return strings.Join(parts, "/")
}
