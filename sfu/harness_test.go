package sfu_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/test/harness"
	"go.uber.org/goleak"
)

// testServer is an SFU running in-process on loopback.
type testServer struct {
	stop   func() // stops the server and waits (also run at cleanup)
	srv    *sfu.Server
	key    string
	secret string
	reg    *prometheus.Registry
	url    string
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// freeTCPPort and freeUDPPort hand out loopback ports from below the
// kernel's ephemeral range (see harness.FreePort for why).
func freeTCPPort(t testing.TB) int {
	port, err := harness.FreePort()
	require.NoError(t, err)
	return port
}

func freeUDPPort(t testing.TB) int {
	port, err := harness.FreeUDPPort()
	require.NoError(t, err)
	return port
}

func testLogger(t testing.TB) zerolog.Logger {
	if os.Getenv("SFU_TEST_LOG") != "" {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.TraceLevel).With().Timestamp().Logger()
	}
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

// startServer runs an SFU until the test ends; mut may change the config.
func startServer(t *testing.T, mut func(*sfu.Config)) *testServer {
	t.Helper()
	return startServerWith(t, mut, nil)
}

// startServerWith is startServer with prepare run on the server before Run.
func startServerWith(t *testing.T, mut func(*sfu.Config), prepare func(*sfu.Server)) *testServer {
	t.Helper()
	ts := &testServer{key: "APItest" + randHex(t, 4), secret: randHex(t, 24), reg: prometheus.NewRegistry()}
	cfg := sfu.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Keys = map[string]string{ts.key: ts.secret}
	cfg.RTC.UDPPort = freeUDPPort(t)
	cfg.RTC.TCPPort = 0
	cfg.RTC.NodeIP = "127.0.0.1"
	// TURN relay ports above freeUDPPort's (20000-32000) and the kernel's
	// ephemeral range (32768-60999): validation refuses an overlap with
	// rtc.udp_port or turn.udp_port.
	cfg.TURN.RelayPortRangeStart, cfg.TURN.RelayPortRangeEnd = 61000, 64999
	if mut != nil {
		mut(&cfg)
	}
	srv, err := sfu.New(cfg, testLogger(t), ts.reg)
	require.NoError(t, err)
	ts.srv = srv
	if prepare != nil {
		prepare(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("sfu did not start: %v", err)
	}
	ts.url = srv.URL()
	var once sync.Once
	ts.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				buf := make([]byte, 16<<20)
				t.Errorf("sfu did not stop in time; %s", harness.CondenseGoroutines(string(buf[:runtime.Stack(buf, true)])))
			}
		})
	}
	t.Cleanup(ts.stop)
	return ts
}

// verifyNoLeaks is deferred first in every test so it runs after all
// cleanups of the test (servers, clients).
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		goleak.VerifyNone(t,
			goleak.IgnoreCurrent(),
			// process-wide pools and tickers of dependencies, started once
			goleak.IgnoreTopFunction("github.com/pion/transport/v4/deadline.(*Deadline).handler"),
			goleak.IgnoreAnyFunction("github.com/livekit/protocol/logger.(*deferredValueLogger)"),
			goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		)
	})
}

func (ts *testServer) token(t testing.TB, room, identity string, mut func(*auth.VideoGrant)) string {
	t.Helper()
	g := &auth.VideoGrant{RoomJoin: true, Room: room}
	if mut != nil {
		mut(g)
	}
	tok, err := auth.NewAccessToken(ts.key, ts.secret).SetIdentity(identity).SetName(identity).SetVideoGrant(g).SetValidFor(time.Hour).ToJWT()
	require.NoError(t, err)
	return tok
}

func (ts *testServer) adminToken(t testing.TB, g *auth.VideoGrant) string {
	t.Helper()
	tok, err := auth.NewAccessToken(ts.key, ts.secret).SetVideoGrant(g).SetValidFor(time.Hour).ToJWT()
	require.NoError(t, err)
	return tok
}

// client is one server-sdk-go participant with receive bookkeeping.
type client struct {
	t        *testing.T
	ts       *testServer
	identity string
	room     *lksdk.Room
	pub      *loadtest.Publisher

	mu           sync.Mutex
	streams      map[string]*loadtest.StreamStats // by publisher identity + "/audio" or "/video"
	ended        map[string]int                   // by the same key: subscribed tracks whose reading ended (the track left the connection)
	pubs         map[string]*lksdk.RemoteTrackPublication
	data         []dataMsg
	transcripts  []string        // "speaker: text" of the transcription segments received
	muted        map[string]bool // by publisher identity + track sid
	left         map[string]bool
	failed       []string // track sids server-sdk-go gave up subscribing to
	tracks       []*webrtc.TrackRemote
	disconnected chan lksdk.DisconnectionReason
	readers      loadtest.Readers
	closeOnce    sync.Once
}

type dataMsg struct {
	from    string
	payload string
	topic   string
}

func init() {
	// server-sdk-go logs to the standard logger by default; tests assert
	// behaviour instead. A zap logger (errors only) makes its pion adapter
	// check the level before formatting: the generic adapter formats every
	// debug line, reading pion structs that pion writes concurrently.
	level := "error"
	if l := os.Getenv("GXTEST_LKSDK_LOG"); l != "" {
		level = l // e.g. info, to see a client's reconnect decisions
	}
	zl, err := protoLogger.NewZapLogger(&protoLogger.Config{Level: level})
	if err != nil {
		panic(err)
	}
	lksdk.SetLogger(zl)
}

// join connects identity to room with auto-subscribe.
func (ts *testServer) join(t *testing.T, roomName, identity string, mut func(*auth.VideoGrant), opts ...lksdk.ConnectOption) *client {
	t.Helper()
	return ts.connect(t, roomName, identity, mut, nil, opts...)
}

// joinWith is join with extra room callbacks.
func (ts *testServer) joinWith(t *testing.T, roomName, identity string, extra func(*lksdk.RoomCallback)) *client {
	t.Helper()
	return ts.connect(t, roomName, identity, nil, extra)
}

func (ts *testServer) connect(t *testing.T, roomName, identity string, mut func(*auth.VideoGrant), extra func(*lksdk.RoomCallback), opts ...lksdk.ConnectOption) *client {
	t.Helper()
	c := &client{
		t:            t,
		ts:           ts,
		identity:     identity,
		streams:      map[string]*loadtest.StreamStats{},
		ended:        map[string]int{},
		pubs:         map[string]*lksdk.RemoteTrackPublication{},
		muted:        map[string]bool{},
		left:         map[string]bool{},
		disconnected: make(chan lksdk.DisconnectionReason, 1),
	}
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		key := rp.Identity() + "/" + pub.Kind().String()
		st := &loadtest.StreamStats{}
		c.mu.Lock()
		c.streams[key] = st
		c.pubs[key] = pub
		c.tracks = append(c.tracks, track)
		c.mu.Unlock()
		c.readers.Go(func() {
			loadtest.ReadTrack(track, st, time.Second)
			c.mu.Lock()
			c.ended[key]++
			c.mu.Unlock()
		})
	}
	cb.OnDataPacket = func(data lksdk.DataPacket, params lksdk.DataReceiveParams) {
		if u, ok := data.(*lksdk.UserDataPacket); ok {
			c.mu.Lock()
			c.data = append(c.data, dataMsg{from: params.SenderIdentity, payload: string(u.Payload), topic: u.Topic})
			c.mu.Unlock()
		}
	}
	cb.OnTranscriptionReceived = func(segs []*lksdk.TranscriptionSegment, p lksdk.Participant, _ lksdk.TrackPublication) {
		c.mu.Lock()
		for _, s := range segs {
			c.transcripts = append(c.transcripts, p.Identity()+": "+s.Text)
		}
		c.mu.Unlock()
	}
	cb.OnTrackMuted = func(pub lksdk.TrackPublication, p lksdk.Participant) {
		c.mu.Lock()
		c.muted[p.Identity()+"/"+pub.SID()] = true
		c.mu.Unlock()
	}
	cb.OnTrackUnmuted = func(pub lksdk.TrackPublication, p lksdk.Participant) {
		c.mu.Lock()
		c.muted[p.Identity()+"/"+pub.SID()] = false
		c.mu.Unlock()
	}
	cb.OnTrackSubscriptionFailed = func(sid string, rp *lksdk.RemoteParticipant) {
		c.mu.Lock()
		c.failed = append(c.failed, rp.Identity()+"/"+sid)
		c.mu.Unlock()
	}
	cb.OnParticipantDisconnected = func(rp *lksdk.RemoteParticipant) {
		c.mu.Lock()
		c.left[rp.Identity()] = true
		c.mu.Unlock()
	}
	cb.OnDisconnectedWithReason = func(r lksdk.DisconnectionReason) {
		select {
		case c.disconnected <- r:
		default:
		}
	}
	if extra != nil {
		extra(cb)
	}
	opts = append([]lksdk.ConnectOption{lksdk.WithAutoSubscribe(true)}, opts...)
	room, err := lksdk.ConnectToRoomWithToken(ts.url, ts.token(t, roomName, identity, mut), cb, opts...)
	require.NoError(t, err, "join %s", identity)
	c.room = room
	t.Cleanup(c.close)
	return c
}

// lightMedia is media light enough for ten publishers and ninety
// subscriptions on a 2-core box under the race detector: 10 fps, two
// small layers.
func lightMedia() loadtest.PublishOptions {
	return loadtest.PublishOptions{Audio: true, Video: true, FPS: 10, Layers: []loadtest.Layer{
		{Quality: livekit.VideoQuality_LOW, Width: 320, Height: 180, FrameBytes: 300},
		{Quality: livekit.VideoQuality_HIGH, Width: 640, Height: 360, FrameBytes: 900},
	}}
}

// gxtestRuns is GXTEST_RUNS, for tests that repeat a race, or def.
func gxtestRuns(def int) int {
	if v, err := strconv.Atoi(os.Getenv("GXTEST_RUNS")); err == nil && v > 0 {
		return v
	}
	return def
}

func (c *client) publish(t *testing.T, opts loadtest.PublishOptions) {
	t.Helper()
	p, err := loadtest.StartPublisher(c.room, opts)
	require.NoError(t, err)
	c.pub = p
}

func (c *client) close() {
	c.closeOnce.Do(func() {
		if c.pub != nil {
			c.pub.Stop()
		}
		c.room.Disconnect()
		// pion (client side) can start a receiver's streams after the
		// connection stopped it, when a description's queued start runs
		// late; nobody closes those, and their reader would wait forever.
		c.mu.Lock()
		for _, tr := range c.tracks {
			_ = tr.SetReadDeadline(time.Now())
		}
		c.mu.Unlock()
		c.readers.Wait()
	})
}

// describeSubscriptions says what the client knows of others' tracks:
// each publication with its subscription state, and the subscriptions
// server-sdk-go gave up on (no publication 5 s after the track came).
func (c *client) describeSubscriptions() string {
	var b strings.Builder
	for _, rp := range c.room.GetRemoteParticipants() {
		for _, pub := range rp.TrackPublications() {
			r, _ := pub.(*lksdk.RemoteTrackPublication)
			fmt.Fprintf(&b, "%s/%s %s subscribed=%v track=%v; ", rp.Identity(), pub.Kind(), pub.SID(), r != nil && r.IsSubscribed(), r != nil && r.TrackRemote() != nil)
		}
	}
	c.mu.Lock()
	fmt.Fprintf(&b, "subscriptions failed: %v", c.failed)
	c.mu.Unlock()
	return b.String()
}

func (c *client) stream(key string) *loadtest.StreamStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[key]
}

func (c *client) publication(key string) *lksdk.RemoteTrackPublication {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pubs[key]
}

func (c *client) dataFrom(from string) []dataMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []dataMsg
	for _, d := range c.data {
		if d.from == from {
			out = append(out, d)
		}
	}
	return out
}

// waitMedia waits until c received at least frames intact video frames
// and audio payloads from each of from, with no corruption.
func (c *client) waitMedia(t *testing.T, from []string, frames, audio uint64, timeout time.Duration) {
	t.Helper()
	// short names the streams still short of the goal, with what came.
	short := func() []string {
		var out []string
		for _, f := range from {
			if f == c.identity {
				continue
			}
			for kind, goal := range map[string]uint64{"video": frames, "audio": audio} {
				st := c.stream(f + "/" + kind)
				switch {
				case st == nil:
					out = append(out, f+"/"+kind+": not subscribed")
				case st.Frames.Load() < goal:
					out = append(out, fmt.Sprintf("%s/%s: %d of %d frames", f, kind, st.Frames.Load(), goal))
				}
			}
		}
		return out
	}
	deadline := time.Now().Add(timeout)
	for len(short()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not receive media within %s: %v; the client knows: %s; the server has: %v", c.identity, timeout, short(),
				c.describeSubscriptions(), c.ts.srv.DescribeSubscriptions(c.room.Name(), c.identity))
		}
		time.Sleep(50 * time.Millisecond) // polling the client's counters
	}
	for _, f := range from {
		if f == c.identity {
			continue
		}
		require.Zero(t, c.stream(f+"/video").Corrupt.Load(), "corrupt video %s -> %s", f, c.identity)
		require.Zero(t, c.stream(f+"/audio").Corrupt.Load(), "corrupt audio %s -> %s", f, c.identity)
	}
}

var _ = livekit.VideoQuality_LOW

type sfuConfig = sfu.Config

// metric returns the value of a counter or gauge (summed over labels).
func (ts *testServer) metric(t testing.TB, name string) float64 {
	t.Helper()
	mfs, err := ts.reg.Gather()
	require.NoError(t, err)
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return v
}
