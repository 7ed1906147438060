package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
)

// Options configure a load run against any LiveKit-compatible server.
type Options struct {
	URL       string // ws(s):// URL as given to clients
	APIKey    string
	APISecret string

	Rooms       int // default 1
	Publishers  int // per room: publish audio + simulcast video, subscribe to the others
	Subscribers int // per room: subscribe only

	Duration time.Duration // measurement window, default 30 s
	Warmup   time.Duration // from the last join to the window, default 10 s
	JoinRate float64       // joins per second, default 10
	Grace    time.Duration // per stream, packets before this are not counted for loss; default 1 s

	RoomPrefix string  // default "loadtest"
	NoAudio    bool    // publishers send no audio
	NoVideo    bool    // publishers send no video
	Layers     []Layer // default DefaultLayers()
	FPS        int     // default 30
	// Quality subscribers ask for (track_setting); empty leaves the server
	// default (highest).
	Quality string // "low", "medium", "high" or ""

	// ClientSocketBuffer is the SO_RCVBUF set on the clients' UDP sockets
	// after joining (default 4 MiB, capped by net.core.rmem_max; negative
	// leaves the system default).
	ClientSocketBuffer int

	// SFUPid, when set, is the server process whose CPU time (utime+stime
	// over the window) and RSS (/proc/<pid>) are reported.
	SFUPid int
}

func (o *Options) defaults() error {
	if o.URL == "" || o.APIKey == "" || o.APISecret == "" {
		return errors.New("url, api key and api secret are required")
	}
	if o.Rooms <= 0 {
		o.Rooms = 1
	}
	if o.Publishers < 0 || o.Subscribers < 0 || o.Publishers+o.Subscribers == 0 {
		return errors.New("need at least one publisher or subscriber per room")
	}
	if o.Duration <= 0 {
		o.Duration = 30 * time.Second
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	} else if o.Warmup == 0 {
		o.Warmup = 10 * time.Second
	}
	if o.JoinRate <= 0 {
		o.JoinRate = 10
	}
	if o.Grace <= 0 {
		o.Grace = time.Second
	}
	if o.ClientSocketBuffer == 0 {
		o.ClientSocketBuffer = 4 << 20
	}
	if o.RoomPrefix == "" {
		o.RoomPrefix = "loadtest"
	}
	switch strings.ToLower(o.Quality) {
	case "", "low", "medium", "high":
	default:
		return fmt.Errorf("quality must be low, medium or high, got %q", o.Quality)
	}
	return nil
}

// Report is the outcome of a run. Counters of received media cover the
// measurement window only.
type Report struct {
	Participants     int
	JoinFailures     int
	JoinP50, JoinP99 time.Duration
	TracksSubscribed int
	TracksExpected   int

	Window          time.Duration
	PacketsReceived uint64
	BytesReceived   uint64
	BitrateMbps     float64 // aggregate received
	LossPercent     float64 // RTP sequence gaps within the window (streams past their grace period)
	CorruptFrames   uint64

	GeneratorCPUPercent float64 // this process, % of one core over the window
	// HostUDPDrops counts datagrams the host dropped for full socket
	// receive buffers during the window (any process); LoadAverage is the
	// host's 1-minute load at the end. Both flag runs disturbed by other
	// work on the machine.
	HostUDPDrops uint64
	LoadAverage  float64

	SFUMeasured     bool
	SFUCPUSeconds   float64 // over the window
	SFUCPUPercent   float64
	SFURSSStart     uint64  // bytes, before the first join
	SFURSSEnd       uint64  // bytes, at the end of the window
	SFUPeakRSS      uint64  // bytes, VmHWM
	MicrosPerPacket float64 // SFU CPU µs per packet received by the generator
	RSSPerSubscribe float64 // (end - start RSS) / participants that subscribe, bytes
}

type participant struct {
	identity string
	room     *lksdk.Room
	pub      *Publisher

	mu      sync.Mutex
	streams []*StreamStats
	readers sync.WaitGroup
}

// Run joins Rooms × (Publishers + Subscribers) participants, lets them run
// for Warmup + Duration, writes a report to out and returns it.
//
// It sets server-sdk-go's process-wide logger to errors only: the SDK's
// pion logs otherwise go to the standard logger at debug level, one line
// per duplicated packet under loss, which costs the generator CPU.
func Run(ctx context.Context, opts Options, out io.Writer, log zerolog.Logger) (*Report, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	sdkLog, err := protoLogger.NewZapLogger(&protoLogger.Config{Level: "error"})
	if err != nil {
		return nil, err
	}
	lksdk.SetLogger(sdkLog)
	rep := &Report{}
	var rssStart uint64
	if opts.SFUPid > 0 {
		if st, err := readProc(opts.SFUPid); err == nil {
			rssStart = st.rss
		} else {
			log.Warn().Err(err).Int("pid", opts.SFUPid).Msg("cannot read sfu process stats")
		}
	}

	var (
		mu         sync.Mutex
		parts      []*participant
		latencies  []time.Duration
		failures   int
		subscribed atomic.Int64
		wg         sync.WaitGroup
	)
	defer func() {
		var dwg sync.WaitGroup
		for _, p := range parts {
			dwg.Add(1)
			go func(p *participant) {
				defer dwg.Done()
				if p.pub != nil {
					p.pub.Stop()
				}
				p.room.Disconnect()
				p.readers.Wait()
			}(p)
		}
		dwg.Wait()
	}()

	quality := map[string]livekit.VideoQuality{"low": livekit.VideoQuality_LOW, "medium": livekit.VideoQuality_MEDIUM, "high": livekit.VideoQuality_HIGH}
	wantQuality, setQuality := quality[strings.ToLower(opts.Quality)]
	join := func(roomName, identity string, publish bool) {
		defer wg.Done()
		p := &participant{identity: identity}
		cb := lksdk.NewRoomCallback()
		cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
			subscribed.Add(1)
			st := &StreamStats{}
			p.mu.Lock()
			p.streams = append(p.streams, st)
			p.mu.Unlock()
			if setQuality && pub.Kind() == lksdk.TrackKindVideo {
				_ = pub.SetVideoQuality(wantQuality)
			}
			p.readers.Add(1)
			go func() {
				defer p.readers.Done()
				ReadTrack(track, st, opts.Grace)
			}()
		}
		tok, err := auth.NewAccessToken(opts.APIKey, opts.APISecret).SetIdentity(identity).SetName(identity).
			SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: roomName}).SetValidFor(2 * time.Hour).ToJWT()
		if err != nil {
			log.Error().Err(err).Msg("failed to mint token")
			return
		}
		start := time.Now()
		room, err := lksdk.ConnectToRoomWithToken(opts.URL, tok, cb, lksdk.WithAutoSubscribe(true), lksdk.WithLogger(sdkLog))
		lat := time.Since(start)
		if err != nil {
			mu.Lock()
			failures++
			mu.Unlock()
			log.Warn().Err(err).Str("lk_identity", identity).Msg("join failed")
			return
		}
		p.room = room
		if publish {
			pub, err := StartPublisher(room, PublishOptions{Audio: !opts.NoAudio, Video: !opts.NoVideo, Layers: opts.Layers, FPS: opts.FPS})
			if err != nil {
				log.Warn().Err(err).Str("lk_identity", identity).Msg("publish failed")
			}
			p.pub = pub
		}
		mu.Lock()
		parts = append(parts, p)
		latencies = append(latencies, lat)
		mu.Unlock()
	}

	interval := time.Duration(float64(time.Second) / opts.JoinRate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	total := 0
	for r := 0; r < opts.Rooms; r++ {
		roomName := fmt.Sprintf("%s-%d", opts.RoomPrefix, r)
		for i := 0; i < opts.Publishers+opts.Subscribers; i++ {
			publish := i < opts.Publishers
			kind := "sub"
			if publish {
				kind = "pub"
			}
			identity := fmt.Sprintf("%s-%d-%d", kind, r, i)
			select {
			case <-ctx.Done():
				wg.Wait()
				return nil, ctx.Err()
			case <-tick.C:
			}
			wg.Add(1)
			total++
			go join(roomName, identity, publish)
		}
	}
	wg.Wait()
	sockets := 0
	if opts.ClientSocketBuffer > 0 {
		sockets = raiseUDPBuffers(opts.ClientSocketBuffer)
	}
	log.Info().Int("participants", len(parts)).Int("failed", failures).Int("udp_sockets_tuned", sockets).Msg("all joined")

	perAV := 0
	if !opts.NoAudio {
		perAV++
	}
	if !opts.NoVideo {
		perAV++
	}
	rep.Participants = len(parts)
	rep.JoinFailures = failures
	rep.TracksExpected = opts.Rooms * (opts.Publishers*(opts.Publishers-1) + opts.Subscribers*opts.Publishers) * perAV
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	rep.JoinP50, rep.JoinP99 = percentile(latencies, 0.50), percentile(latencies, 0.99)

	sleep := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}
	if err := sleep(opts.Warmup); err != nil {
		return nil, err
	}
	sum := func() (pk, by uint64) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range parts {
			p.mu.Lock()
			for _, s := range p.streams {
				pk += s.Packets.Load()
				by += s.Bytes.Load()
			}
			p.mu.Unlock()
		}
		return
	}
	type mark struct{ highest, received uint64 }
	marks := func() map[*StreamStats]mark {
		m := map[*StreamStats]mark{}
		mu.Lock()
		defer mu.Unlock()
		for _, p := range parts {
			p.mu.Lock()
			for _, s := range p.streams {
				if h, r, ok := s.counts(); ok {
					m[s] = mark{h, r}
				}
			}
			p.mu.Unlock()
		}
		return m
	}
	pk0, by0 := sum()
	marks0 := marks()
	self0, _ := readProc(0)
	drops0, _ := udpRcvbufErrors()
	var sfu0 procStats
	if opts.SFUPid > 0 {
		sfu0, _ = readProc(opts.SFUPid)
	}
	t0 := time.Now()
	if err := sleep(opts.Duration); err != nil {
		return nil, err
	}
	window := time.Since(t0)
	pk1, by1 := sum()
	marks1 := marks()
	self1, _ := readProc(0)
	drops1, _ := udpRcvbufErrors()
	rep.HostUDPDrops = drops1 - drops0
	rep.LoadAverage = loadAverage()
	rep.Window = window
	rep.PacketsReceived = pk1 - pk0
	rep.BytesReceived = by1 - by0
	rep.BitrateMbps = float64(rep.BytesReceived) * 8 / window.Seconds() / 1e6
	rep.GeneratorCPUPercent = (self1.cpu - self0.cpu) / window.Seconds() * 100
	rep.TracksSubscribed = int(subscribed.Load())
	if opts.SFUPid > 0 {
		if sfu1, err := readProc(opts.SFUPid); err == nil && sfu0.cpu > 0 {
			rep.SFUMeasured = true
			rep.SFUCPUSeconds = sfu1.cpu - sfu0.cpu
			rep.SFUCPUPercent = rep.SFUCPUSeconds / window.Seconds() * 100
			rep.SFURSSStart, rep.SFURSSEnd, rep.SFUPeakRSS = rssStart, sfu1.rss, sfu1.hwm
			if rep.PacketsReceived > 0 {
				rep.MicrosPerPacket = rep.SFUCPUSeconds * 1e6 / float64(rep.PacketsReceived)
			}
			if rep.Participants > 0 && sfu1.rss > rssStart {
				rep.RSSPerSubscribe = float64(sfu1.rss-rssStart) / float64(rep.Participants)
			}
		}
	}
	// Loss over the window only: sequence numbers the streams advanced by
	// against packets that arrived (streams counted at both ends).
	var expected, received uint64
	for s, m1 := range marks1 {
		m0, ok := marks0[s]
		if !ok {
			continue
		}
		e, r := m1.highest-m0.highest, m1.received-m0.received
		expected += e
		received += min(r, e)
	}
	mu.Lock()
	for _, p := range parts {
		p.mu.Lock()
		for _, s := range p.streams {
			rep.CorruptFrames += s.Corrupt.Load()
		}
		p.mu.Unlock()
	}
	mu.Unlock()
	if expected > 0 {
		rep.LossPercent = float64(expected-received) / float64(expected) * 100
	}
	rep.print(out, opts)
	return rep, nil
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[min(i, len(sorted)-1)]
}

func (r *Report) print(w io.Writer, o Options) {
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format+"\n", args...) }
	p("load: %d room(s) x (%d publishers + %d subscribers) against %s", o.Rooms, o.Publishers, o.Subscribers, o.URL)
	p("joined:            %d (failed %d), join latency p50 %s p99 %s", r.Participants, r.JoinFailures, r.JoinP50.Round(time.Millisecond), r.JoinP99.Round(time.Millisecond))
	p("tracks subscribed: %d / %d expected", r.TracksSubscribed, r.TracksExpected)
	p("window:            %s", r.Window.Round(time.Millisecond))
	p("received:          %d packets (%.0f/s), %.2f Mbit/s", r.PacketsReceived, float64(r.PacketsReceived)/r.Window.Seconds(), r.BitrateMbps)
	p("packet loss:       %.3f %% (corrupt frames %d)", r.LossPercent, r.CorruptFrames)
	p("generator cpu:     %.1f %% of one core", r.GeneratorCPUPercent)
	p("host:              %d udp receive-buffer drops in the window, load average %.2f", r.HostUDPDrops, r.LoadAverage)
	if r.SFUMeasured {
		p("sfu cpu:           %.2f s over the window (%.1f %% of one core)", r.SFUCPUSeconds, r.SFUCPUPercent)
		p("sfu cpu / packet:  %.2f us per forwarded packet", r.MicrosPerPacket)
		p("sfu rss:           start %.1f MB, end %.1f MB, peak %.1f MB, %.0f KB per participant", mb(r.SFURSSStart), mb(r.SFURSSEnd), mb(r.SFUPeakRSS), r.RSSPerSubscribe/1024)
	}
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }
