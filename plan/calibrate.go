package plan

import (
	"fmt"
	"time"
)

// RunFigures are what one `gxconf loadtest` run against one node measured
// (loadtest.Report, mapped by cmd/gxconf).
type RunFigures struct {
	Participants     int // joined
	TracksSubscribed int // over all participants
	// MicrosPerPacket is the SFU's CPU over the window per packet the
	// participants received.
	MicrosPerPacket float64
	// JoinCPUSeconds is the SFU's CPU during the join phase and
	// JoinPackets the packets received meanwhile.
	JoinCPUSeconds float64
	JoinPackets    uint64
	// RSSStart (before the first join) and RSSEnd (end of the window), bytes.
	RSSStart, RSSEnd uint64

	Date             time.Time
	Machine, Command string
}

// FromRun derives a calibration from a run. Figures a single-node run
// cannot measure keep base's value, and Sources says so:
//   - relay costs (measured by the bridge benchmark or a cluster run);
//   - the split of memory between a participant and its subscribed
//     tracks: one run measures the total for its mix, which is shared
//     out in base's proportion (two runs with different track counts
//     would separate them);
//   - the join cost, when the forwarding during the joins already
//     accounts for all CPU measured then.
func FromRun(r RunFigures, base Calibration) (Calibration, error) {
	if r.Participants <= 0 {
		return Calibration{}, fmt.Errorf("%w: the run has no joined participants", ErrCalibration)
	}
	if r.MicrosPerPacket <= 0 {
		return Calibration{}, fmt.Errorf("%w: the run measured no SFU CPU per packet (give -sfu-pid, and let media flow)", ErrCalibration)
	}
	c := base
	c.Kind, c.Version = CalibrationKind, CalibrationVersion
	c.Date = r.Date.UTC().Format(time.RFC3339)
	c.Machine, c.Command = r.Machine, r.Command
	src := map[string]string{}
	kept := func(field string) {
		s := base.Sources[field]
		if s == "" {
			s = "the default calibration"
		}
		src[field] = "kept from the base calibration: " + s
	}
	run := fmt.Sprintf("measured by the command above (%d participants)", r.Participants)

	c.ForwardMicros = r.MicrosPerPacket
	src["forward_us_per_packet"] = run + ": SFU CPU over the window / packets the participants received"

	kept("relay_send_us_per_packet")
	kept("relay_receive_us_per_packet")

	if r.RSSStart > 0 {
		c.NodeBaseMiB = float64(r.RSSStart) / (1 << 20)
		src["node_base_memory_mib"] = run + ": SFU RSS before the first join"
	} else {
		kept("node_base_memory_mib")
	}

	tracks := float64(r.TracksSubscribed) / float64(r.Participants)
	if r.RSSEnd > r.RSSStart && r.RSSStart > 0 {
		perPart := float64(r.RSSEnd-r.RSSStart) / 1024 / float64(r.Participants)
		f := perPart / (base.ParticipantKiB + base.SubscribedTrackKiB*tracks)
		c.ParticipantKiB = base.ParticipantKiB * f
		c.SubscribedTrackKiB = base.SubscribedTrackKiB * f
		s := fmt.Sprintf("%s: (end − start RSS) / participants = %.0f KiB with %.2f subscribed tracks each, split between participant and tracks in the base calibration's proportion", run, perPart, tracks)
		src["participant_memory_kib"], src["subscribed_track_memory_kib"] = s, s
	} else {
		kept("participant_memory_kib")
		kept("subscribed_track_memory_kib")
	}

	forwarding := float64(r.JoinPackets) * c.ForwardMicros / 1e6
	if join := (r.JoinCPUSeconds - forwarding) / float64(r.Participants) * 1000; join > 0 && r.JoinCPUSeconds > 0 {
		c.JoinCPUMillis = join
		src["join_cpu_ms"] = fmt.Sprintf("%s: (SFU CPU during the joins %.2f s − %d packets forwarded meanwhile × forward cost) / participants", run, r.JoinCPUSeconds, r.JoinPackets)
	} else {
		kept("join_cpu_ms")
	}
	c.Sources = src
	if err := c.Validate(); err != nil {
		return Calibration{}, err
	}
	return c, nil
}
