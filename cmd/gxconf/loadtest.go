package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/gxfs-conf/gxconf/loadtest"
)

// loadtestUsage explains the cluster mode, which the flag list alone does not.
const loadtestUsage = `Usage: LIVEKIT_API_KEY=K LIVEKIT_API_SECRET=S gxconf loadtest -url ws://… [flags]

The key and secret may be given as -api-key and -api-secret too, but a
secret on the command line is in the process list and the shell history.

Synthetic participants against any LiveKit-compatible server (gxconf's SFU or
a stock LiveKit server).

Cluster load: give -url a comma-separated list of nodes of one cluster (the
same sfu.keys on each). Every room then spans them: subscribers are spread
round-robin starting at the first URL (-subscriber-offset: another one),
publishers all join the first URL (-spread-publishers: round-robin too), so
each subscriber gets its media either from its own node or over the bridge.
-sfu-pid and -metrics-url take one entry per URL (a node's PID for CPU and
RSS from /proc; its metrics listener, e.g. http://127.0.0.1:9464, for
gxconf_bridge_relay_* and the direct send path's packets, UDP messages and
sendmmsg calls over the window). The report adds per-node joins, tracks,
loss, CPU, RSS, relay traffic and sends, and frame delivery latency for
subscribers on the publisher's node and on another node; their difference is
what the hop adds. With one URL, -metrics-url adds the sends to the report.

Flags:
`

// cmdLoadtest runs `gxconf loadtest`: synthetic participants against any
// LiveKit-compatible server (gxconf's SFU or a stock LiveKit server), or
// against several nodes of a gxconf cluster.
func cmdLoadtest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = io.WriteString(stderr, loadtestUsage)
		fs.PrintDefaults()
	}
	var o loadtest.Options
	var urls, pids, metrics string
	fs.StringVar(&urls, "url", "ws://127.0.0.1:7880", "ws(s):// URL of the SFU; comma-separated for the nodes of a cluster")
	fs.BoolVar(&o.SpreadPublishers, "spread-publishers", false, "with several URLs: publishers round-robin too (default: all on the first URL)")
	fs.IntVar(&o.SubscriberOffset, "subscriber-offset", 0, "with several URLs: the URL index (0-based) the subscribers' round-robin starts at")
	fs.StringVar(&o.APIKey, "api-key", "", "API key the SFU accepts (or env LIVEKIT_API_KEY)")
	fs.StringVar(&o.APISecret, "api-secret", "", "API secret (or env LIVEKIT_API_SECRET)")
	fs.IntVar(&o.Rooms, "rooms", 1, "number of rooms")
	fs.IntVar(&o.Publishers, "publishers", 1, "publishers per room (audio + simulcast video; they also subscribe)")
	fs.IntVar(&o.Subscribers, "subscribers", 10, "subscribe-only participants per room")
	fs.BoolVar(&o.PublishersOnly, "publishers-only", false, "publishers subscribe to nothing (only the subscribers receive)")
	fs.DurationVar(&o.Duration, "duration", 30*time.Second, "measurement window")
	fs.DurationVar(&o.Warmup, "warmup", 10*time.Second, "wait between the last join and the window")
	fs.Float64Var(&o.JoinRate, "join-rate", 10, "joins per second")
	fs.BoolVar(&o.NoAudio, "no-audio", false, "publishers send no audio")
	fs.BoolVar(&o.AudioVBR, "audio-vbr", false, "audio frames of varying size (0.5-1.5 x 80 bytes, as Opus VBR) instead of 80 bytes each")
	fs.BoolVar(&o.NoVideo, "no-video", false, "publishers send no video")
	fs.IntVar(&o.FPS, "fps", 30, "video frames per second")
	fs.StringVar(&o.Quality, "quality", "", "layer subscribers ask for: low, medium, high (empty: server default)")
	fs.StringVar(&pids, "sfu-pid", "", "PID of the SFU process, to report its CPU time and RSS from /proc; comma-separated, one per -url (0 skips one)")
	fs.StringVar(&metrics, "metrics-url", "", "gxconf metrics listener (http://host:port) per -url, comma-separated (empty skips one): relay packets and bytes, and the direct send path's UDP messages and sendmmsg calls")
	fs.StringVar(&o.RoomPrefix, "room-prefix", "loadtest", "room name prefix")
	var calibrationOut string
	fs.StringVar(&calibrationOut, "calibration-out", "", "write a calibration file for gxconf plan from this run (one -url, with -sfu-pid of a fresh SFU process)")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	o.URLs = splitList(urls)
	if pids != "" {
		for i, s := range splitList(pids) {
			pid, err := strconv.Atoi(s)
			if err != nil || pid < 0 {
				return &usageError{fmt.Sprintf("-sfu-pid: entry %d (%q) is not a PID", i+1, s)}
			}
			o.SFUPids = append(o.SFUPids, pid)
		}
	}
	if metrics != "" {
		o.MetricsURLs = splitList(metrics)
	}
	if o.APIKey == "" {
		o.APIKey = os.Getenv("LIVEKIT_API_KEY")
	}
	if o.APISecret == "" {
		o.APISecret = os.Getenv("LIVEKIT_API_SECRET")
	}
	if o.APIKey == "" || o.APISecret == "" {
		return &usageError{"-api-key and -api-secret (or LIVEKIT_API_KEY/LIVEKIT_API_SECRET) are required"}
	}
	if calibrationOut != "" && (len(o.URLs) != 1 || len(o.SFUPids) != 1 || o.SFUPids[0] <= 0) {
		return &usageError{"-calibration-out needs exactly one -url and its -sfu-pid"}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	rep, err := loadtest.Run(ctx, o, stdout, log)
	if err != nil || calibrationOut == "" {
		return err
	}
	return writeCalibration(calibrationOut, rep, args, stdout)
}

// splitList splits a comma-separated flag value, trimming spaces.
func splitList(s string) []string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}
