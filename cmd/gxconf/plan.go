package main

import (
	"flag"
	"io"

	"github.com/gxfs-conf/gxconf/plan"
)

const planUsage = `Usage: gxconf plan [-calibration FILE] [-json] [load, redundancy and price flags]

Capacity and cost planner: nodes, cores, memory and bandwidth per site and on
the IX, and the monthly cost, for a load of alike sessions. The costs per
forwarded and relayed packet, per join and per participant come from a
calibration file written by
  gxconf loadtest … -sfu-pid PID -calibration-out FILE
on your own hardware; without -calibration the figures measured in gxconf's
repository are used (-print-calibration shows them and their sources).
Errors name the input field (JSON name; flags use "-" for "_").

Flags:
`

// cmdPlan runs `gxconf plan`.
func cmdPlan(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = io.WriteString(stderr, planUsage)
		fs.PrintDefaults()
	}
	in := plan.DefaultInput()
	var calFile, layers, level, redundancy string
	var asJSON, printCal bool
	fs.StringVar(&calFile, "calibration", "", "calibration file from gxconf loadtest -calibration-out (default: the embedded figures)")
	fs.BoolVar(&printCal, "print-calibration", false, "print the calibration in use as JSON and exit")
	fs.BoolVar(&asJSON, "json", false, "print the plan as JSON")
	fs.IntVar(&in.Sessions, "sessions", in.Sessions, "concurrent sessions (all alike)")
	fs.IntVar(&in.Participants, "participants", in.Participants, "participants per session")
	fs.IntVar(&in.VideoPublishers, "video-publishers", in.VideoPublishers, "video publishers per session (camera or screen, every layer)")
	fs.IntVar(&in.AudioPublishers, "audio-publishers", in.AudioPublishers, "microphone tracks per session, muted ones included")
	fs.IntVar(&in.Speakers, "speakers", in.Speakers, "audio tracks sending at the same time")
	fs.StringVar(&layers, "layers", "low:150:30,medium:500:60,high:1700:186", "simulcast layers as name:kbps:pps,…")
	fs.StringVar(&in.ReceiveLayer, "receive-layer", in.ReceiveLayer, "layer every participant receives of every video")
	fs.Float64Var(&in.AudioKbps, "audio-kbps", in.AudioKbps, "bitrate of a speaking audio track")
	fs.Float64Var(&in.AudioPPS, "audio-pps", in.AudioPPS, "packets per second of a speaking audio track")
	fs.Float64Var(&in.OverheadBytes, "packet-overhead-bytes", in.OverheadBytes, "IP, UDP, RTP and SRTP bytes per packet")
	fs.Float64Var(&in.RemoteShare, "remote-share", in.RemoteShare, "share (0 to below 1) of participants from a peered federation (they only receive)")
	fs.BoolVar(&in.Peering, "peering", in.Peering, "the peered federation relays (one copy per track and peer node over the IX); false: each remote participant pulls its own")
	fs.IntVar(&in.Sites, "sites", in.Sites, "sites of this deployment (local participants spread evenly)")
	fs.StringVar(&level, "level", string(in.Level), "confidentiality level: public, kritis, vs-nfd")
	fs.StringVar(&redundancy, "redundancy", string(in.Redundancy), "none, n+1 (one spare node per site) or per-site (survive losing a site)")
	fs.Float64Var(&in.Headroom, "headroom", in.Headroom, "share of each node's cores and memory kept free (0 to 0.9)")
	fs.Float64Var(&in.NodeCores, "node-cores", in.NodeCores, "vCPUs per node")
	fs.Float64Var(&in.NodeMemoryGiB, "node-memory-gib", in.NodeMemoryGiB, "RAM per node, GiB")
	fs.Float64Var(&in.JoinWindowSeconds, "join-window-s", in.JoinWindowSeconds, "seconds within which a session's participants all join")
	fs.Float64Var(&in.HoursPerMonth, "hours-per-month", in.HoursPerMonth, "hours per month the load runs (egress); nodes are paid for the whole month")
	fs.Float64Var(&in.Prices.CoreMonth, "price-core-month", in.Prices.CoreMonth, "price per vCPU and month")
	fs.Float64Var(&in.Prices.GiBMonth, "price-gib-month", in.Prices.GiBMonth, "price per GiB of RAM and month")
	fs.Float64Var(&in.Prices.EgressTB, "price-egress-tb", in.Prices.EgressTB, "price per TB of egress")
	fs.StringVar(&in.Prices.Currency, "currency", in.Prices.Currency, "currency of the prices")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	in.Level, in.Redundancy = plan.Level(level), plan.Redundancy(redundancy)
	var err error
	if in.Layers, err = plan.ParseLayers(layers); err != nil {
		return &usageError{err.Error()}
	}
	cal := plan.DefaultCalibration()
	if calFile != "" {
		if cal, err = plan.ReadCalibrationFile(calFile); err != nil {
			return err
		}
	}
	if printCal {
		b, err := cal.Marshal()
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	}
	p, err := plan.Compute(in, cal)
	if err != nil {
		return &usageError{err.Error()}
	}
	if asJSON {
		return p.WriteJSON(stdout)
	}
	return p.WriteText(stdout)
}
