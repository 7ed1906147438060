package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// signalProxy relays TCP connections to the embedded SFU's signalling
// port; the SFU's public_url points at it, so the browsers' signal
// WebSockets run through it and the test can cut them while media (UDP,
// straight to the SFU) flows on.
type signalProxy struct {
	l      net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startSignalProxy(t *testing.T, target string) *signalProxy {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	p := &signalProxy{l: l, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp4", target)
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
	}()
	t.Cleanup(func() {
		_ = l.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

// cut closes every relayed connection (the browsers' signal sockets, and
// the self-test page's validate requests if any are open).
func (p *signalProxy) cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// sfuJoins reads gxconf_sfu_joins_total from gxconf's /metrics, by
// outcome and path ("joined rtc_v1").
func sfuJoins(t *testing.T, s *harness.Stack) map[string]float64 {
	t.Helper()
	resp, err := http.Get(s.MetricsURL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "gxconf_sfu_joins_total{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		var outcome, path string
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			v = strings.Trim(v, `"`)
			switch k {
			case "outcome":
				outcome = v
			case "path":
				path = v
			}
		}
		f, err := strconv.ParseFloat(value, 64)
		require.NoError(t, err)
		out[outcome+" "+path] += f
	}
	require.NoError(t, sc.Err())
	return out
}

// TestBrowserV1: livekit-client 2.x joins over /rtc/v1 with one peer
// connection (no "v1 RTC path not found" fallback to /rtc), media flows
// both ways; when the signal sockets are cut, both browsers resume their
// sessions (no rejoin, no republish) and media comes back. The media gap
// is logged.
func TestBrowserV1(t *testing.T) {
	sfuPort, err := harness.FreePort()
	require.NoError(t, err)
	proxy := startSignalProxy(t, fmt.Sprintf("127.0.0.1:%d", sfuPort))
	e := startBrowserEnvWith(t, testSFU{}, harness.StackOptions{
		SFUPort: sfuPort,
		Config:  map[string]any{"sfu": map[string]any{"public_url": "ws://" + proxy.l.Addr().String()}},
	})
	s := e.stack
	alice, bob := register(t, s, "alice"), register(t, s, "bob")
	room := createCallRoom(t, s, alice, false, bob)
	lkRoom := focus.LiveKitRoomAlias(room.String(), "m.call#ROOM")

	start := time.Now()
	// Both append frame metadata to their video and read the other's.
	a := e.join("alice", alice, room, callOptions{FrameMetadata: true})
	b := e.join("bob", bob, room, callOptions{FrameMetadata: true})
	as := a.await(t, `s.phase === "in-call"`, joinTimeout)
	bs := b.await(t, `s.phase === "in-call"`, joinTimeout)
	aliceID, bobID := as.SFU.Identity, bs.SFU.Identity
	require.Equal(t, lkRoom, as.SFU.LKRoom)
	a.await(t, remoteHas(bobID), mediaTimeout)
	b.await(t, remoteHas(aliceID), mediaTimeout)
	requireMediaFlows(t, b, aliceID)
	requireMediaFlows(t, a, bobID)
	t.Logf("both pages joined and receive media %s after opening them", time.Since(start).Round(time.Millisecond))

	t.Run("frame metadata in packet trailers reaches the other's livekit-client", func(t *testing.T) {
		requireFrameMetadata(t, b, aliceID)
		requireFrameMetadata(t, a, bobID)
	})

	t.Run("joined over /rtc/v1 without a fallback", func(t *testing.T) {
		j := sfuJoins(t, s)
		require.EqualValues(t, 2, j["joined rtc_v1"], "joins: %v", j)
		require.Zero(t, j["joined rtc"], "joins: %v", j)
		require.Zero(t, j["refused rtc_v1"], "joins: %v", j)
		for _, p := range []*participant{a, b} {
			require.NotContains(t, p.page.Console(), "v1 RTC path not found", "%s fell back to /rtc", p.name)
		}
	})

	t.Run("a cut signal socket resumes the session", func(t *testing.T) {
		tracks := func(st pageState, id string) []string {
			var out []string
			for sid := range st.Remote[id].Tracks {
				out = append(out, sid)
			}
			return out
		}
		before := b.state(t)
		beforeA := a.state(t)
		vb := findStats(b.awaitStats(t, fmt.Sprintf(`(v => v && v.framesDecoded > 0)(%s)`, videoOf(aliceID)), mediaTimeout), aliceID, "video")

		// Measure bob's longest wait for a new frame of alice's video while
		// the sockets are cut and resumed (polled through the page).
		stop := make(chan struct{})
		gapc := make(chan time.Duration, 1)
		go func() {
			var maxGap time.Duration
			last, lastAt := vb.FramesDecoded, time.Now()
			for {
				select {
				case <-stop:
					gapc <- maxGap
					return
				default:
				}
				var n int64
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := b.page.Eval(ctx, fmt.Sprintf(`window.gxconf.stats().then(st => (v => v ? v.framesDecoded : 0)(%s))`, videoOf(aliceID)), &n)
				cancel()
				now := time.Now()
				if err == nil && n > last {
					maxGap = max(maxGap, now.Sub(lastAt))
					last, lastAt = n, now
				}
			}
		}()
		proxy.cut()
		require.Eventually(t, func() bool { return sfuJoins(t, s)["resumed rtc_v1"] >= 2 }, mediaTimeout, 50*time.Millisecond,
			"both pages resume: %v", sfuJoins(t, s))
		b.awaitStats(t, fmt.Sprintf(`(v => v && v.framesDecoded >= %d)(%s)`, vb.FramesDecoded+60, videoOf(aliceID)), mediaTimeout)
		close(stop)
		gap := <-gapc
		t.Logf("bob's longest wait for a frame of alice's video across the resume: %s", gap)

		j := sfuJoins(t, s)
		require.EqualValues(t, 2, j["joined rtc_v1"], "a page joined again instead of resuming: %v", j)
		require.Zero(t, j["reconnect_refused rtc_v1"], "joins: %v", j)
		after, afterA := b.state(t), a.state(t)
		require.ElementsMatch(t, tracks(before, aliceID), tracks(after, aliceID), "alice republished")
		require.ElementsMatch(t, tracks(beforeA, bobID), tracks(afterA, bobID), "bob republished")
		require.Equal(t, before.SFUConnectAttempts, after.SFUConnectAttempts)
		requireMediaFlows(t, a, bobID)
	})

	for _, p := range []*participant{a, b} {
		require.Empty(t, p.state(t).Errors, "%s's page reported errors", p.name)
	}
}
