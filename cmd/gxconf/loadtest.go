package main

import (
	"context"
	"flag"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/gxfs-conf/gxconf/loadtest"
)

// cmdLoadtest runs `gxconf loadtest`: synthetic participants against any
// LiveKit-compatible server (gxconf's SFU or a stock LiveKit server).
func cmdLoadtest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	var o loadtest.Options
	fs.StringVar(&o.URL, "url", "ws://127.0.0.1:7880", "ws(s):// URL of the SFU")
	fs.StringVar(&o.APIKey, "api-key", "", "API key the SFU accepts (or env LIVEKIT_API_KEY)")
	fs.StringVar(&o.APISecret, "api-secret", "", "API secret (or env LIVEKIT_API_SECRET)")
	fs.IntVar(&o.Rooms, "rooms", 1, "number of rooms")
	fs.IntVar(&o.Publishers, "publishers", 1, "publishers per room (audio + simulcast video; they also subscribe)")
	fs.IntVar(&o.Subscribers, "subscribers", 10, "subscribe-only participants per room")
	fs.DurationVar(&o.Duration, "duration", 30*time.Second, "measurement window")
	fs.DurationVar(&o.Warmup, "warmup", 10*time.Second, "wait between the last join and the window")
	fs.Float64Var(&o.JoinRate, "join-rate", 10, "joins per second")
	fs.BoolVar(&o.NoAudio, "no-audio", false, "publishers send no audio")
	fs.BoolVar(&o.NoVideo, "no-video", false, "publishers send no video")
	fs.IntVar(&o.FPS, "fps", 30, "video frames per second")
	fs.StringVar(&o.Quality, "quality", "", "layer subscribers ask for: low, medium, high (empty: server default)")
	fs.IntVar(&o.SFUPid, "sfu-pid", 0, "PID of the SFU process, to report its CPU time and RSS from /proc")
	fs.StringVar(&o.RoomPrefix, "room-prefix", "loadtest", "room name prefix")
	if err := parseArgs(fs, args); err != nil {
		return err
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	_, err := loadtest.Run(ctx, o, stdout, log)
	return err
}
