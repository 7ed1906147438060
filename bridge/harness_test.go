package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/auth"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/test/harness"
	"go.uber.org/goleak"
)

func init() {
	zl, err := protoLogger.NewZapLogger(&protoLogger.Config{Level: "error"})
	if err != nil {
		panic(err)
	}
	lksdk.SetLogger(zl)
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// freeUDPPort hands out a loopback port from below the kernel's ephemeral
// range (see harness.FreeUDPPort for why).
func freeUDPPort(t testing.TB) int {
	port, err := harness.FreeUDPPort()
	require.NoError(t, err)
	return port
}

func testLogger(t testing.TB) zerolog.Logger {
	if os.Getenv("SFU_TEST_LOG") != "" {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	}
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

func verifyNoLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		goleak.VerifyNone(t,
			goleak.IgnoreCurrent(),
			goleak.IgnoreTopFunction("github.com/pion/transport/v4/deadline.(*Deadline).handler"),
			goleak.IgnoreTopFunction("github.com/pion/transport/v3/deadline.(*Deadline).handler"),
			goleak.IgnoreAnyFunction("github.com/livekit/protocol/logger.(*deferredValueLogger)"),
			goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		)
	})
}

// node is one SFU with its bridge, in-process on loopback.
type node struct {
	id     string
	srv    *sfu.Server
	sfuReg *prometheus.Registry // the SFU's metrics
	br     *Bridge
	key    string
	secret string
	url    string
	stop   func() // stops bridge and SFU and waits (also run at cleanup)
}

const testSecret = "0123456789abcdef0123456789abcdef-cluster"

func startNode(t testing.TB, id string) *node {
	t.Helper()
	return startNodeWith(t, id, nil)
}

func startNodeWith(t testing.TB, id string, mut func(*Config)) *node {
	t.Helper()
	return startNodeFull(t, id, mut, nil)
}

// startNodeFull is startNodeWith with prepare run on the node before its
// SFU and bridge run.
func startNodeFull(t testing.TB, id string, mut func(*Config), prepare func(*node)) *node {
	t.Helper()
	n := &node{id: id, key: "APItest" + randHex(t, 4), secret: randHex(t, 24)}
	cfg := sfu.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Keys = map[string]string{n.key: n.secret}
	cfg.RTC.UDPPort = freeUDPPort(t)
	cfg.RTC.TCPPort = 0
	cfg.RTC.NodeIP = "127.0.0.1"
	cfg.NodeID = id
	n.sfuReg = prometheus.NewRegistry()
	srv, err := sfu.New(cfg, testLogger(t).With().Str("node", id).Logger(), n.sfuReg)
	require.NoError(t, err)
	n.srv = srv
	bcfg := DefaultConfig()
	bcfg.NodeID = id
	bcfg.Listen = "127.0.0.1:0"
	bcfg.Secret = testSecret
	if mut != nil {
		mut(&bcfg)
	}
	br, err := New(bcfg, srv, testLogger(t).With().Str("node", id).Logger())
	require.NoError(t, err)
	n.br = br
	if prepare != nil {
		prepare(n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	sdone := make(chan error, 1)
	bdone := make(chan error, 1)
	go func() { sdone <- srv.Run(ctx) }()
	<-srv.Ready()
	n.url = srv.URL()
	go func() { bdone <- br.Run(ctx) }()
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			cancel()
			for _, c := range []chan error{bdone, sdone} {
				select {
				case err := <-c:
					require.NoError(t, err)
				case <-time.After(30 * time.Second):
					t.Error("node did not stop in time")
				}
			}
		})
	}
	t.Cleanup(n.stop)
	return n
}

// link makes room span a and b (a's id sorts lower, it dials).
func link(t testing.TB, room string, a, b *node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	require.NoError(t, b.br.Link(ctx, room, a.id, a.br.Addr()))
	require.NoError(t, a.br.Link(ctx, room, b.id, b.br.Addr()))
	require.Eventually(t, func() bool { return b.br.Linked(room, a.id) }, 10*time.Second, 10*time.Millisecond)
}

func (n *node) token(t testing.TB, room, identity string) string {
	t.Helper()
	g := &auth.VideoGrant{RoomJoin: true, Room: room}
	tok, err := auth.NewAccessToken(n.key, n.secret).SetIdentity(identity).SetName(identity).SetVideoGrant(g).SetValidFor(time.Hour).ToJWT()
	require.NoError(t, err)
	return tok
}

type dataMsg struct{ from, payload string }

// client is a server-sdk-go participant with receive bookkeeping.
type client struct {
	identity string
	room     *lksdk.Room
	pub      *loadtest.Publisher

	mu      sync.Mutex
	streams map[string]*loadtest.StreamStats
	pubs    map[string]*lksdk.RemoteTrackPublication
	data    []dataMsg
	muted   map[string]bool
	left    map[string]bool
	speaker map[string]bool // identities in the last active speakers list
	ended   map[string]int  // by stream key: subscribed tracks whose reading ended (the track left the connection)
	readers loadtest.Readers
	once    sync.Once
}

func (n *node) join(t *testing.T, room, identity string) *client {
	t.Helper()
	return n.joinToken(t, identity, n.token(t, room, identity))
}

// joinToken joins with the given access token.
func (n *node) joinToken(t *testing.T, identity, token string) *client {
	t.Helper()
	c := &client{identity: identity, streams: map[string]*loadtest.StreamStats{}, pubs: map[string]*lksdk.RemoteTrackPublication{},
		muted: map[string]bool{}, left: map[string]bool{}, speaker: map[string]bool{}, ended: map[string]int{}}
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		key := rp.Identity() + "/" + pub.Kind().String()
		st := &loadtest.StreamStats{}
		c.mu.Lock()
		c.streams[key] = st
		c.pubs[key] = pub
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
			c.data = append(c.data, dataMsg{from: params.SenderIdentity, payload: string(u.Payload)})
			c.mu.Unlock()
		}
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
	cb.OnActiveSpeakersChanged = func(ps []lksdk.Participant) {
		c.mu.Lock()
		c.speaker = map[string]bool{}
		for _, p := range ps {
			c.speaker[p.Identity()] = true
		}
		c.mu.Unlock()
	}
	cb.OnParticipantDisconnected = func(rp *lksdk.RemoteParticipant) {
		c.mu.Lock()
		c.left[rp.Identity()] = true
		c.mu.Unlock()
	}
	r, err := lksdk.ConnectToRoomWithToken(n.url, token, cb, lksdk.WithAutoSubscribe(true))
	require.NoError(t, err, "join %s", identity)
	c.room = r
	t.Cleanup(c.close)
	return c
}

func (c *client) publish(t *testing.T, opts loadtest.PublishOptions) {
	t.Helper()
	p, err := loadtest.StartPublisher(c.room, opts)
	require.NoError(t, err)
	c.pub = p
}

func (c *client) close() {
	c.once.Do(func() {
		if c.pub != nil {
			c.pub.Stop()
		}
		c.room.Disconnect()
		c.readers.Wait()
	})
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

// flag reads key of one of c's flag maps, chosen under the lock (the
// speakers callback replaces its map).
func (c *client) flag(which func(*client) map[string]bool, key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return which(c)[key]
}

func speakers(c *client) map[string]bool { return c.speaker }
func mutes(c *client) map[string]bool    { return c.muted }
func lefts(c *client) map[string]bool    { return c.left }

func (c *client) hasData(from, payload string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.data {
		if d.from == from && d.payload == payload {
			return true
		}
	}
	return false
}

// waitMedia waits until c received intact audio and video from each of from.
func (c *client) waitMedia(t *testing.T, from []string, frames, audio uint64, timeout time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, f := range from {
			v, a := c.stream(f+"/video"), c.stream(f+"/audio")
			if v == nil || a == nil || v.Frames.Load() < frames || a.Frames.Load() < audio {
				return false
			}
		}
		return true
	}, timeout, 50*time.Millisecond, "%s did not receive media from %v", c.identity, from)
	for _, f := range from {
		require.Zero(t, c.stream(f+"/video").Corrupt.Load(), "corrupt video %s -> %s", f, c.identity)
		require.Zero(t, c.stream(f+"/audio").Corrupt.Load(), "corrupt audio %s -> %s", f, c.identity)
	}
}
