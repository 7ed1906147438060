package plan

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Level is a room's confidentiality level (as in de.gxconf.access).
type Level string

// The levels gxconf enforces.
const (
	LevelPublic Level = "public"
	LevelKRITIS Level = "kritis"
	LevelVSNfD  Level = "vs-nfd"
)

// Redundancy is what failure the plan absorbs.
type Redundancy string

const (
	// RedundancyNone sizes for the load alone.
	RedundancyNone Redundancy = "none"
	// RedundancyNPlus1 adds one node per site (and for the peer).
	RedundancyNPlus1 Redundancy = "n+1"
	// RedundancyPerSite sizes every site to take over an equal share of
	// a failed site's load: S sites each carry S/(S−1) of their own.
	RedundancyPerSite Redundancy = "per-site"
)

// Layer is one simulcast layer a video publisher sends; Input.Layers go
// from the lowest to the highest.
type Layer struct {
	Name string  `json:"name"`
	Kbps float64 `json:"kbps"` // media bitrate, without packet headers
	PPS  float64 `json:"pps"`  // packets per second
}

// DefaultLayers are the layers `gxconf loadtest` sends at 30 fps
// (600, 2,000 and 7,000 byte frames; 720p measured at 186 packets/s in the
// 1 → 150 run of README.md).
func DefaultLayers() []Layer {
	return []Layer{{"low", 150, 30}, {"medium", 500, 60}, {"high", 1700, 186}}
}

// ParseLayers reads "name:kbps:pps,…", e.g. "low:150:30,high:1700:186".
func ParseLayers(s string) ([]Layer, error) {
	var out []Layer
	for i, part := range strings.Split(s, ",") {
		f := strings.Split(strings.TrimSpace(part), ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("%w: layers: entry %d (%q) is not name:kbps:pps", ErrInput, i+1, clip(part))
		}
		kbps, err1 := strconv.ParseFloat(f[1], 64)
		pps, err2 := strconv.ParseFloat(f[2], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%w: layers: entry %d (%q): kbps and pps must be numbers", ErrInput, i+1, clip(part))
		}
		out = append(out, Layer{Name: f[0], Kbps: kbps, PPS: pps})
	}
	return out, nil
}

// Prices are what resources cost per month; any currency.
type Prices struct {
	CoreMonth float64 `json:"core_month"` // per provisioned vCPU and month
	GiBMonth  float64 `json:"gib_month"`  // per provisioned GiB of RAM and month
	EgressTB  float64 `json:"egress_tb"`  // per TB (10^12 bytes) leaving a site
	Currency  string  `json:"currency"`
}

// Input is the load to plan for. Publishers sit on this deployment's
// first site (the organiser's); the remote share are participants of a
// peered federation who only receive.
type Input struct {
	Sessions     int `json:"sessions"`     // concurrent sessions, all alike
	Participants int `json:"participants"` // per session
	// VideoPublishers send camera or screen video in every layer;
	// AudioPublishers have a microphone track (muted ones included:
	// every participant holds a subscription to each); Speakers is how
	// many of those send at the same time (the others are silent).
	VideoPublishers int     `json:"video_publishers"`
	AudioPublishers int     `json:"audio_publishers"`
	Speakers        int     `json:"speakers"`
	Layers          []Layer `json:"layers"`
	// ReceiveLayer is the layer every participant receives of every video.
	ReceiveLayer  string  `json:"receive_layer"`
	AudioKbps     float64 `json:"audio_kbps"`
	AudioPPS      float64 `json:"audio_pps"`
	OverheadBytes float64 `json:"packet_overhead_bytes"` // IP, UDP, RTP, SRTP per packet

	// RemoteShare of each session's participants belong to a peered
	// federation. With Peering their deployment relays one copy of each
	// track per node over the IX; without, each of them pulls its own
	// copy from our first site.
	RemoteShare float64 `json:"remote_share"`
	Peering     bool    `json:"peering"`
	// Sites share the local participants evenly; a session spans all.
	Sites      int        `json:"sites"`
	Level      Level      `json:"level"`
	Redundancy Redundancy `json:"redundancy"`
	// Headroom is the share of every node's cores and memory kept free.
	Headroom      float64 `json:"headroom"`
	NodeCores     float64 `json:"node_cores"`
	NodeMemoryGiB float64 `json:"node_memory_gib"`
	// JoinWindowSeconds: all participants of a session join within it
	// (a meeting's start); their join cost is spread over it.
	JoinWindowSeconds float64 `json:"join_window_s"`
	// HoursPerMonth the sessions run (egress is paid per byte; nodes
	// are provisioned for the whole month).
	HoursPerMonth float64 `json:"hours_per_month"`
	Prices        Prices  `json:"prices"`
}

// DefaultInput is one 50-person session on one site with list prices of
// zero; the caller sets what it knows.
func DefaultInput() Input {
	return Input{
		Sessions: 1, Participants: 50, VideoPublishers: 1, AudioPublishers: 1, Speakers: 1,
		Layers: DefaultLayers(), ReceiveLayer: "high", AudioKbps: 32, AudioPPS: 50, OverheadBytes: 60,
		Peering: true, Sites: 1, Level: LevelPublic, Redundancy: RedundancyNPlus1, Headroom: 0.3,
		NodeCores: 8, NodeMemoryGiB: 16, JoinWindowSeconds: 60, HoursPerMonth: 730,
		Prices: Prices{Currency: "EUR"},
	}
}

// Validate checks the input; every problem is reported, named by its
// field (the JSON name; the flag is the same with "-" for "_").
func (in Input) Validate() error {
	var errs fieldErrors
	errs.kind = ErrInput
	atLeast := func(field string, v, lo, hi int) {
		if v < lo || v > hi {
			errs.add(field, fmt.Sprintf("must be between %d and %d, got %d", lo, hi, v))
		}
	}
	atLeast("sessions", in.Sessions, 1, 100_000)
	atLeast("participants", in.Participants, 1, 100_000)
	atLeast("video_publishers", in.VideoPublishers, 0, 1000)
	atLeast("audio_publishers", in.AudioPublishers, 0, 100_000)
	atLeast("speakers", in.Speakers, 0, 1000)
	if in.VideoPublishers > in.Participants {
		errs.add("video_publishers", fmt.Sprintf("more than the %d participants", in.Participants))
	}
	if in.AudioPublishers > in.Participants {
		errs.add("audio_publishers", fmt.Sprintf("more than the %d participants", in.Participants))
	}
	if in.Speakers > in.AudioPublishers {
		errs.add("speakers", fmt.Sprintf("more than the %d audio publishers", in.AudioPublishers))
	}
	if in.VideoPublishers == 0 && in.Speakers == 0 {
		errs.add("video_publishers", "nobody sends anything (no video publishers and no speakers)")
	}
	num := func(field string, v, lo, hi float64, loOpen bool) {
		switch {
		case math.IsNaN(v) || math.IsInf(v, 0):
			errs.add(field, "not a number")
		case loOpen && v <= lo:
			errs.add(field, fmt.Sprintf("must be greater than %g, got %g", lo, v))
		case v < lo:
			errs.add(field, fmt.Sprintf("must not be below %g, got %g", lo, v))
		case v > hi:
			errs.add(field, fmt.Sprintf("must not exceed %g, got %g", hi, v))
		}
	}
	if in.VideoPublishers > 0 {
		if len(in.Layers) == 0 {
			errs.add("layers", "at least one layer is needed for video publishers")
		}
		seen := map[string]bool{}
		found := false
		for i, l := range in.Layers {
			f := fmt.Sprintf("layers[%d]", i)
			if l.Name == "" || checkText(l.Name) != "" || len(l.Name) > 32 {
				errs.add(f+".name", "must be a short printable name")
			} else if seen[l.Name] {
				errs.add(f+".name", fmt.Sprintf("duplicate layer %q", l.Name))
			}
			seen[l.Name] = true
			found = found || l.Name == in.ReceiveLayer
			num(f+".kbps", l.Kbps, 0, 100_000, true)
			num(f+".pps", l.PPS, 0, 10_000, true)
		}
		if !found && len(in.Layers) > 0 {
			errs.add("receive_layer", fmt.Sprintf("unknown layer %q (layers: %s)", clip(in.ReceiveLayer), layerNames(in.Layers)))
		}
	}
	if in.Speakers > 0 {
		num("audio_kbps", in.AudioKbps, 0, 10_000, true)
		num("audio_pps", in.AudioPPS, 0, 1000, true)
	}
	num("packet_overhead_bytes", in.OverheadBytes, 0, 1000, false)
	if in.RemoteShare < 0 || in.RemoteShare >= 1 || math.IsNaN(in.RemoteShare) {
		errs.add("remote_share", fmt.Sprintf("must be at least 0 and below 1 (a share; the publishers are local), got %g", in.RemoteShare))
	}
	atLeast("sites", in.Sites, 1, 100)
	switch in.Level {
	case LevelPublic, LevelKRITIS, LevelVSNfD:
	default:
		errs.add("level", fmt.Sprintf("unknown level %q (public, kritis, vs-nfd)", clip(string(in.Level))))
	}
	switch in.Redundancy {
	case RedundancyNone, RedundancyNPlus1:
	case RedundancyPerSite:
		if in.Sites < 2 {
			errs.add("redundancy", fmt.Sprintf("per-site needs at least 2 sites, got %d", in.Sites))
		}
	default:
		errs.add("redundancy", fmt.Sprintf("unknown redundancy %q (none, n+1, per-site)", clip(string(in.Redundancy))))
	}
	if in.Redundancy == RedundancyNone && (in.Level == LevelKRITIS || in.Level == LevelVSNfD) {
		errs.add("redundancy", fmt.Sprintf("level %s needs n+1 or per-site", in.Level))
	}
	num("headroom", in.Headroom, 0, 0.9, false)
	num("node_cores", in.NodeCores, 0, 1024, true)
	num("node_memory_gib", in.NodeMemoryGiB, 0, 65536, true)
	num("join_window_s", in.JoinWindowSeconds, 0, 86400, true)
	num("hours_per_month", in.HoursPerMonth, 0, 744, true)
	num("prices.core_month", in.Prices.CoreMonth, 0, 1e9, false)
	num("prices.gib_month", in.Prices.GiBMonth, 0, 1e9, false)
	num("prices.egress_tb", in.Prices.EgressTB, 0, 1e9, false)
	if checkText(in.Prices.Currency) != "" || len(in.Prices.Currency) > 8 {
		errs.add("prices.currency", "must be a short printable code")
	}
	return errs.err()
}

func layerNames(ls []Layer) string {
	names := make([]string, len(ls))
	for i, l := range ls {
		names[i] = l.Name
	}
	return strings.Join(names, ", ")
}
