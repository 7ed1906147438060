package sfu_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sigProxy relays TCP connections to the SFU's signalling listener, so a
// test can cut every signal WebSocket going through it while media (UDP,
// straight to the SFU) keeps flowing.
type sigProxy struct {
	l      net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, ts *testServer) *sigProxy {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	target := strings.TrimPrefix(ts.url, "ws://")
	if i := strings.IndexByte(target, '/'); i >= 0 {
		target = target[:i]
	}
	p := &sigProxy{l: l, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = l.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

// url is the SFU's ws URL through the proxy.
func (p *sigProxy) url() string { return "ws://" + p.l.Addr().String() }

func (p *sigProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp4", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); _, _ = io.Copy(u, c); _ = u.Close() }()
		go func() { defer p.wg.Done(); _, _ = io.Copy(c, u); _ = c.Close() }()
	}
}

// cut closes every connection relayed so far (both sides: the SFU and the
// client each see their socket end).
func (p *sigProxy) cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// via returns a copy of ts whose clients connect through the proxy.
func (ts *testServer) via(p *sigProxy) *testServer {
	c := *ts
	c.url = p.url()
	return &c
}

// metricWith returns a counter's value for one label value.
func (ts *testServer) metricWith(t testing.TB, name, label, value string) float64 {
	t.Helper()
	mfs, err := ts.reg.Gather()
	require.NoError(t, err)
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					v += m.GetCounter().GetValue()
				}
			}
		}
	}
	return v
}

// gapMeter samples how many frames of one stream a client has received
// (across resubscriptions: the stream is looked up by key each time) and
// keeps the longest time without a new frame.
type gapMeter struct {
	stop chan struct{}
	done chan struct{}
	max  atomic.Int64 // ns
}

func meterGap(c *client, key string) *gapMeter {
	g := &gapMeter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var last *loadtest.StreamStats
		var frames uint64
		lastAt := time.Now()
		for {
			select {
			case <-g.stop:
				return
			case now := <-tick.C:
				st := c.stream(key)
				if st == nil {
					continue
				}
				if n := st.Frames.Load(); st != last || n != frames {
					if st != last && last != nil && n == 0 {
						continue // a new subscription, no frame yet
					}
					if gap := now.Sub(lastAt); gap > time.Duration(g.max.Load()) {
						g.max.Store(int64(gap))
					}
					last, frames, lastAt = st, n, now
				}
			}
		}
	}()
	return g
}

func (g *gapMeter) result() time.Duration {
	close(g.stop)
	<-g.done
	return time.Duration(g.max.Load())
}

// trackSIDs returns the sids of a client's own published tracks.
func trackSIDs(c *client) []string {
	var out []string
	for _, p := range c.room.LocalParticipant.TrackPublications() {
		out = append(out, p.SID())
	}
	sort.Strings(out)
	return out
}

// cutAndRecover cuts both clients' signal sockets and waits until media
// from alice flows again at bob; it returns the longest audio and video
// gaps bob saw. The waits are generous: a server-sdk-go client whose
// first recovery attempt fails backs off (0.3 s × attempt²) before the next.
func cutAndRecover(t *testing.T, ts *testServer, proxy *sigProxy, bob *client, sessions string, want float64) (audio, video time.Duration) {
	t.Helper()
	ga, gv := meterGap(bob, "alice/audio"), meterGap(bob, "alice/video")
	proxy.cut()
	require.Eventually(t, func() bool { return ts.metricWith(t, "gxconf_sfu_joins_total", "outcome", sessions) >= want },
		60*time.Second, 10*time.Millisecond, "sessions not %s", sessions)
	// Media is back once both streams advanced well past the cut.
	base := func(key string) uint64 {
		if st := bob.stream(key); st != nil {
			return st.Frames.Load()
		}
		return 0
	}
	a0, v0 := base("alice/audio"), base("alice/video")
	if !assert.Eventually(t, func() bool {
		a, v := bob.stream("alice/audio"), bob.stream("alice/video")
		return a != nil && v != nil && a.Frames.Load() > a0+25 && v.Frames.Load() > v0+15
	}, 60*time.Second, 10*time.Millisecond, "media did not come back") {
		t.Logf("frames at bob before the cut: audio %d, video %d\n%s", a0, v0, describeCall(ts, bob))
		t.FailNow()
	}
	return ga.result(), gv.result()
}

// TestResume cuts the signal sockets of a publisher and a subscriber
// (server-sdk-go, two peer connections): both resume their sessions (same
// participant and track sids, no new publication, the subscriber's
// subscription object untouched), and media keeps flowing.
func TestResume(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	proxy := startProxy(t, ts)
	pts := ts.via(proxy)
	alice := pts.join(t, "rs", "alice", nil)
	alice.publish(t, loadtest.PublishOptions{Audio: true, Video: true})
	bob := pts.join(t, "rs", "bob", nil)
	bob.waitMedia(t, []string{"alice"}, 10, 10, 10*time.Second)

	aliceSID, bobSID := alice.room.LocalParticipant.SID(), bob.room.LocalParticipant.SID()
	tracks := trackSIDs(alice)
	require.Len(t, tracks, 2)
	videoStream := bob.stream("alice/video")
	videoPub := bob.publication("alice/video").SID()
	published := ts.metric(t, "gxconf_sfu_published_tracks")

	ga, gv := cutAndRecover(t, ts, proxy, bob, "resumed", 2)
	t.Logf("media gap at the subscriber on resume: audio %s, video %s", ga, gv)

	require.Equal(t, aliceSID, alice.room.LocalParticipant.SID())
	require.Equal(t, bobSID, bob.room.LocalParticipant.SID())
	require.Equal(t, tracks, trackSIDs(alice), "no republish")
	require.Same(t, videoStream, bob.stream("alice/video"), "subscription kept (no new OnTrackSubscribed)")
	require.Equal(t, videoPub, bob.publication("alice/video").SID())
	require.Equal(t, published, ts.metric(t, "gxconf_sfu_published_tracks"))
	require.Zero(t, ts.metricWith(t, "gxconf_sfu_joins_total", "outcome", "reconnect_refused"))
	require.EqualValues(t, 2, ts.metricWith(t, "gxconf_sfu_joins_total", "outcome", "joined"))
	require.Zero(t, videoStream.Corrupt.Load())

	// The resumed sessions still signal: a mute reaches the other side.
	for _, p := range alice.room.LocalParticipant.TrackPublications() {
		if p.Kind() == lksdk.TrackKindAudio {
			p.(*lksdk.LocalTrackPublication).SetMuted(true)
		}
	}
	require.Eventually(t, func() bool {
		pub := bob.publication("alice/audio")
		return pub != nil && pub.IsMuted()
	}, 10*time.Second, 10*time.Millisecond)
}

// TestResumeWindowOff: with resume_window 0 a cut socket ends the session
// and the client rejoins (new sid, new tracks): the old behaviour.
func TestResumeWindowOff(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, func(c *sfuConfig) { c.ResumeWindow = 0 })
	proxy := startProxy(t, ts)
	pts := ts.via(proxy)
	alice := pts.join(t, "rw", "alice", nil)
	alice.publish(t, loadtest.PublishOptions{Audio: true, Video: true})
	bob := pts.join(t, "rw", "bob", nil)
	bob.waitMedia(t, []string{"alice"}, 10, 10, 10*time.Second)
	aliceSID := alice.room.LocalParticipant.SID()
	// A reconnect that arrives while the session is still live (before
	// the old socket's loss was noticed) is refused as well.
	ws, code := rawResume(t, ts, ts.token(t, "rw", "alice", nil), alice.room.LocalParticipant.SID())
	require.Equal(t, http.StatusSwitchingProtocols, code)
	requireLeaveReconnect(t, ws)
	require.Zero(t, ts.metricWith(t, "gxconf_sfu_joins_total", "outcome", "resumed"))
	require.Equal(t, lksdk.ConnectionStateConnected, alice.room.ConnectionState(), "the live session is untouched")

	ga, gv := cutAndRecover(t, ts, proxy, bob, "joined", 4)
	t.Logf("media gap at the subscriber on full rejoin: audio %s, video %s", ga, gv)
	require.NotEqual(t, aliceSID, alice.room.LocalParticipant.SID())
	require.NotZero(t, ts.metricWith(t, "gxconf_sfu_joins_total", "outcome", "reconnect_refused"))
}

// TestResumeGap measures the media gap of a resume against a full rejoin
// (resume_window 0) over several runs (GXTEST_RUNS, default 5).
func TestResumeGap(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	runs := gxtestRuns(5)
	measure := func(t *testing.T, window time.Duration) (audio, video []time.Duration) {
		for i := range runs {
			func() {
				ts := startServer(t, func(c *sfuConfig) { c.ResumeWindow = window })
				defer ts.stop()
				proxy := startProxy(t, ts)
				pts := ts.via(proxy)
				room := "gap" + strconv.Itoa(i)
				alice := pts.join(t, room, "alice", nil)
				defer alice.close()
				alice.publish(t, loadtest.PublishOptions{Audio: true, Video: true})
				bob := pts.join(t, room, "bob", nil)
				defer bob.close()
				bob.waitMedia(t, []string{"alice"}, 10, 10, 10*time.Second)
				tracks := trackSIDs(alice)
				outcome, want := "resumed", 2.0
				if window == 0 {
					outcome, want = "joined", 4
				}
				a, v := cutAndRecover(t, ts, proxy, bob, outcome, want)
				if window > 0 {
					require.Equal(t, tracks, trackSIDs(alice), "no republish")
				}
				audio, video = append(audio, a), append(video, v)
			}()
		}
		return audio, video
	}
	ra, rv := measure(t, 15*time.Second)
	fa, fv := measure(t, 0)
	t.Logf("media gap over %d runs (p50 / p95): resume audio %s / %s, video %s / %s; full rejoin audio %s / %s, video %s / %s",
		runs, pct(ra, 50), pct(ra, 95), pct(rv, 50), pct(rv, 95), pct(fa, 50), pct(fa, 95), pct(fv, 50), pct(fv, 95))
}

// describeCall says what the server and c see of c's room, for a failure
// message: the server's participants and their tracks, c's connection, the
// remote tracks c knows and whether it subscribed them, and the frames of
// each stream c has read.
func describeCall(ts *testServer, c *client) string {
	var b strings.Builder
	room := c.room.Name()
	// As listParticipants, without failing the test before the rest is said.
	ps, err := ts.srv.RoomService().ListParticipants(context.Background(), &livekit.ListParticipantsRequest{Room: room})
	if err != nil {
		fmt.Fprintf(&b, "server: listing %s: %v\n", room, err)
	} else {
		for _, p := range ps.Participants {
			fmt.Fprintf(&b, "server: %s %s %s", p.Identity, p.Sid, p.State)
			for _, tr := range p.Tracks {
				fmt.Fprintf(&b, " [%s %s muted=%v]", tr.Sid, tr.Type, tr.Muted)
			}
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "%s: connection %s, sid %s\n", c.identity, c.room.ConnectionState(), c.room.LocalParticipant.SID())
	for _, rp := range c.room.GetRemoteParticipants() {
		fmt.Fprintf(&b, "%s sees %s %s:", c.identity, rp.Identity(), rp.SID())
		for _, pub := range rp.TrackPublications() {
			rt, _ := pub.(*lksdk.RemoteTrackPublication)
			fmt.Fprintf(&b, " [%s %s subscribed=%v track=%v]", pub.SID(), pub.Kind(), pub.IsSubscribed(), rt != nil && rt.TrackRemote() != nil)
		}
		b.WriteString("\n")
	}
	c.mu.Lock()
	keys := slices.Sorted(maps.Keys(c.streams))
	for _, k := range keys {
		fmt.Fprintf(&b, "%s reads %s: %d frames\n", c.identity, k, c.streams[k].Frames.Load())
	}
	c.mu.Unlock()
	return b.String()
}

// pct is the nearest-rank percentile.
func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}

// rawResume opens /rtc with reconnect=1 for sid with token and returns the
// socket (nil when the upgrade was refused) and the HTTP status.
func rawResume(t *testing.T, ts *testServer, token, sid string) (*websocket.Conn, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	ws, res, err := websocket.Dial(ctx, ts.url+"/rtc?protocol=16&sdk=go&reconnect=1&sid="+sid, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		require.NotNil(t, res, "dial: %v", err)
		return nil, res.StatusCode
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	return ws, http.StatusSwitchingProtocols
}

func requireLeaveReconnect(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	m := readSignal(t, ws)
	l := m.GetLeave()
	require.NotNil(t, l, "want leave, got %v", m)
	require.Equal(t, livekit.LeaveRequest_RECONNECT, l.GetAction())
}

// TestResumeSecurity: a resume must name a live session of the token's
// identity in the token's room; a removed participant cannot resume; a
// second resume of a live session replaces its socket cleanly.
func TestResumeSecurity(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, func(c *sfuConfig) { c.ResumeWindow = time.Second })
	bob := ts.join(t, "sec", "bob", nil)
	ws, first := rawJoin(t, ts, "sec", "alice", "")
	defer ws.CloseNow()
	sid := first.GetJoin().GetParticipant().GetSid()
	require.NotEmpty(t, sid)

	t.Run("other identity", func(t *testing.T) {
		c, code := rawResume(t, ts, ts.token(t, "sec", "mallory", nil), sid)
		require.Equal(t, http.StatusSwitchingProtocols, code)
		requireLeaveReconnect(t, c)
	})
	t.Run("other room", func(t *testing.T) {
		ts.join(t, "sec2", "carol", nil) // the room exists
		c, code := rawResume(t, ts, ts.token(t, "sec2", "alice", nil), sid)
		require.Equal(t, http.StatusSwitchingProtocols, code)
		requireLeaveReconnect(t, c)
	})
	t.Run("wrong sid", func(t *testing.T) {
		c, code := rawResume(t, ts, ts.token(t, "sec", "alice", nil), bob.room.LocalParticipant.SID())
		require.Equal(t, http.StatusSwitchingProtocols, code)
		requireLeaveReconnect(t, c)
	})
	t.Run("expired token", func(t *testing.T) {
		tok := mintToken(t, ts, "sec", "alice", time.Now().Add(-2*time.Hour)) // expired an hour ago
		_, code := rawResume(t, ts, tok, sid)
		require.Equal(t, http.StatusUnauthorized, code)
	})
	t.Run("single mode", func(t *testing.T) {
		c := rawV1(t, ts, ts.token(t, "sec", "alice", nil), &livekit.JoinRequest{Reconnect: true, ParticipantSid: sid})
		requireLeaveReconnect(t, c)
	})

	// A second connection for the live session replaces the first.
	c, code := rawResume(t, ts, ts.token(t, "sec", "alice", nil), sid)
	require.Equal(t, http.StatusSwitchingProtocols, code)
	m := readSignal(t, c)
	require.NotNil(t, m.GetReconnect(), "want reconnect response, got %v", m)
	require.Equal(t, livekit.ClientConfigSetting_ENABLED, m.GetReconnect().GetClientConfiguration().GetResumeConnection())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			require.NotErrorIs(t, err, context.DeadlineExceeded, "old socket not closed")
			break
		}
	}
	// The replay: everyone's state, the room's, then the ICE restart offer.
	var update, offer bool
	for !update || !offer {
		m := readSignal(t, c)
		if u := m.GetUpdate(); u != nil {
			for _, p := range u.GetParticipants() {
				update = update || p.GetSid() == sid
			}
		}
		offer = offer || m.GetOffer() != nil
	}
	infos := listParticipants(t, ts, "sec")
	require.Len(t, infos, 2)
	require.Contains(t, []string{infos[0].GetSid(), infos[1].GetSid()}, sid)

	// Removed: the old token cannot resume (nor join).
	_, err := ts.srv.RoomService().RemoveParticipant(context.Background(), &livekit.RoomParticipantIdentity{Room: "sec", Identity: "alice"})
	require.NoError(t, err)
	_, code = rawResume(t, ts, ts.token(t, "sec", "alice", nil), sid)
	require.Equal(t, http.StatusForbidden, code)
}

// TestResumeWindowExpires: a session whose socket is gone longer than the
// resume window leaves the room; resuming it then gets Leave{RECONNECT}.
func TestResumeWindowExpires(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, func(c *sfuConfig) { c.ResumeWindow = time.Second })
	ts.join(t, "exp", "bob", nil)
	ws, first := rawJoin(t, ts, "exp", "alice", "")
	sid := first.GetJoin().GetParticipant().GetSid()
	require.NoError(t, ws.CloseNow())
	// Still there during the window, gone after it.
	require.Len(t, listParticipants(t, ts, "exp"), 2)
	require.Eventually(t, func() bool { return len(listParticipants(t, ts, "exp")) == 1 }, 10*time.Second, 20*time.Millisecond)
	c, code := rawResume(t, ts, ts.token(t, "exp", "alice", nil), sid)
	require.Equal(t, http.StatusSwitchingProtocols, code)
	requireLeaveReconnect(t, c)
}

func listParticipants(t *testing.T, ts *testServer, room string) []*livekit.ParticipantInfo {
	t.Helper()
	res, err := ts.srv.RoomService().ListParticipants(context.Background(), &livekit.ListParticipantsRequest{Room: room})
	require.NoError(t, err)
	return res.GetParticipants()
}
