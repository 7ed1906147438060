package focus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/test/msc4140"
)

func testCSAPI(t *testing.T) *csAPI {
	t.Helper()
	cfg := DefaultConfig()
	return newCSAPI(cfg.DelayedEvents, newOpenIDVerifier(cfg.OpenID))
}

// The restart and send calls against an MSC4140 endpoint: the wire (POST {},
// no access token, the delay ID as one escaped path segment) and how each
// answer is taken.
func TestDelayedEventActions(t *testing.T) {
	ctx := context.Background()
	hs := msc4140.New(nil)
	srv := httptest.NewServer(hs)
	t.Cleanup(srv.Close)
	c := testCSAPI(t)

	t.Run("restart then send", func(t *testing.T) {
		hs.Schedule("syd_1", time.Hour)
		_, _, err := c.do(ctx, srv.URL, "syd_1", actionRestart)
		require.NoError(t, err)
		e, _ := hs.Event("syd_1")
		require.Equal(t, 1, e.Restarts)
		_, _, err = c.do(ctx, srv.URL, "syd_1", actionSend)
		require.NoError(t, err)
		e, _ = hs.Event("syd_1")
		require.Equal(t, msc4140.Sent, e.Outcome)
		require.Equal(t, "action", e.SentBy)
		// MSC4140: retrying a send of a sent event succeeds.
		_, _, err = c.do(ctx, srv.URL, "syd_1", actionSend)
		require.NoError(t, err)
		// Restarting a finalised event conflicts (409): nothing left to do.
		status, _, err := c.do(ctx, srv.URL, "syd_1", actionRestart)
		require.Equal(t, http.StatusConflict, status)
		require.ErrorIs(t, err, errDelayedEventGone)
		for _, r := range hs.Requests() {
			require.False(t, r.Authorized, "no access token is sent")
		}
	})
	t.Run("unknown delay ID", func(t *testing.T) {
		status, _, err := c.do(ctx, srv.URL, "syd_unknown", actionRestart)
		require.Equal(t, http.StatusNotFound, status)
		require.ErrorIs(t, err, errDelayedEventGone, "404 on restart: sent or cancelled, stop")
		status, _, err = c.do(ctx, srv.URL, "syd_unknown", actionSend)
		require.Equal(t, http.StatusNotFound, status)
		require.NoError(t, err, "404 on send: already sent or cancelled, done")
	})
	t.Run("cancelled by the client", func(t *testing.T) {
		hs.Schedule("syd_2", time.Hour)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+msc4140.Path+"syd_2/cancel", strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		_, _, err = c.do(ctx, srv.URL, "syd_2", actionSend)
		require.ErrorIs(t, err, errDelayedEventGone, "send after cancel is 409")
	})
	t.Run("path escaping", func(t *testing.T) {
		for _, id := range []string{"a/b", "../../_matrix/x", "a?b#c", "100%", "sp ace", "ü"} {
			hs.Schedule(id, time.Hour)
			_, _, err := c.do(ctx, srv.URL, id, actionRestart)
			require.NoError(t, err, id)
			reqs := hs.Requests()
			require.Equal(t, id, reqs[len(reqs)-1].DelayID, "the homeserver sees the delay ID unchanged")
		}
		u, err := actionURL("https://hs.test/base/", "a/../b", actionSend)
		require.NoError(t, err)
		require.Equal(t, "https://hs.test/base/_matrix/client/unstable/org.matrix.msc4140/delayed_events/a%2F..%2Fb/send", u)
	})
	t.Run("transient failures", func(t *testing.T) {
		hs.Schedule("syd_3", time.Hour)
		hs.Fail(msc4140.Failure{Status: http.StatusBadGateway, Body: map[string]any{"errcode": "M_UNKNOWN", "error": "x"}})
		status, hint, err := c.do(ctx, srv.URL, "syd_3", actionRestart)
		require.Equal(t, http.StatusBadGateway, status)
		require.Error(t, err)
		require.False(t, errors.Is(err, errDelayedEventGone))
		require.Zero(t, hint)
	})
}

// 429 answers: Retry-After (seconds or date) first, then retry_after_ms.
func TestRateLimitHint(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	hs := msc4140.New(nil)
	srv := httptest.NewServer(hs)
	t.Cleanup(srv.Close)
	c := testCSAPI(t)
	c.now = func() time.Time { return now }
	hs.Schedule("syd", time.Hour)
	limit := func(h http.Header, body map[string]any) msc4140.Failure {
		if body == nil {
			body = map[string]any{}
		}
		body["errcode"] = "M_LIMIT_EXCEEDED"
		return msc4140.Failure{Status: http.StatusTooManyRequests, Header: h, Body: body}
	}
	cases := []struct {
		name string
		f    msc4140.Failure
		want time.Duration
	}{
		{"seconds", limit(http.Header{"Retry-After": {"3"}}, nil), 3 * time.Second},
		{"date", limit(http.Header{"Retry-After": {now.Add(7 * time.Second).Format(http.TimeFormat)}}, nil), 7 * time.Second},
		{"retry_after_ms", limit(nil, map[string]any{"retry_after_ms": 1500}), 1500 * time.Millisecond},
		{"header wins", limit(http.Header{"Retry-After": {"2"}}, map[string]any{"retry_after_ms": 9000}), 2 * time.Second},
		{"no hint", limit(nil, nil), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hs.Fail(tc.f)
			status, hint, err := c.do(context.Background(), srv.URL, "syd", actionRestart)
			require.Equal(t, http.StatusTooManyRequests, status)
			require.Error(t, err)
			require.Equal(t, tc.want, hint)
		})
	}
}

// recordingWaiter returns at once and remembers what it was asked to wait,
// advancing the fake clock.
type recordingWaiter struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func (w *recordingWaiter) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *recordingWaiter) wait(_ context.Context, d time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waits = append(w.waits, d)
	w.now = w.now.Add(d)
	return nil
}

// retry: the homeserver's hint is waited when it is longer than the backoff's
// interval (never shorter); otherwise the backoff grows
// ×1.5 with ±50 % jitter up to its maximum; it gives up when the next try
// would start after the deadline and stops at once when the event is gone.
func TestRetry(t *testing.T) {
	cfg := DefaultConfig().DelayedEvents
	cfg.RetryInitialInterval, cfg.RetryMaxInterval = time.Second, 4*time.Second
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	errTransient := errors.New("status 503")

	t.Run("429 hint then success", func(t *testing.T) {
		w := &recordingWaiter{now: start}
		calls := 0
		err := retry(context.Background(), cfg, w.clock, w.wait, start.Add(time.Minute), func(context.Context) (time.Duration, error) {
			calls++
			if calls < 3 {
				return 1500 * time.Millisecond, errTransient
			}
			return 0, nil
		})
		require.NoError(t, err)
		require.Equal(t, []time.Duration{1500 * time.Millisecond, 1500 * time.Millisecond}, w.waits)
	})
	t.Run("5xx backoff until the deadline", func(t *testing.T) {
		w := &recordingWaiter{now: start}
		err := retry(context.Background(), cfg, w.clock, w.wait, start.Add(30*time.Second), func(context.Context) (time.Duration, error) {
			return 0, errTransient
		})
		require.ErrorIs(t, err, errTransient)
		require.GreaterOrEqual(t, len(w.waits), 5)
		base := []time.Duration{time.Second, 1500 * time.Millisecond, 2250 * time.Millisecond, 3375 * time.Millisecond, 4 * time.Second}
		var total time.Duration
		for i, d := range w.waits {
			b := base[min(i, len(base)-1)]
			require.GreaterOrEqual(t, d, b/2, "wait %d", i)
			require.LessOrEqual(t, d, b*3/2, "wait %d", i)
			total += d
		}
		require.LessOrEqual(t, total, 30*time.Second, "no try starts after the deadline")
	})
	// A homeserver answering every request with 429 and retry_after_ms 1
	// must not get a retry every millisecond until the deadline (tens of
	// thousands here, one per millisecond of a delay_timeout of up to 24 h):
	// the waits are the backoff's, as without a hint.
	t.Run("tiny hint does not shorten the backoff", func(t *testing.T) {
		w := &recordingWaiter{now: start}
		calls := 0
		err := retry(context.Background(), cfg, w.clock, w.wait, start.Add(30*time.Second), func(context.Context) (time.Duration, error) {
			calls++
			return time.Millisecond, errTransient
		})
		require.ErrorIs(t, err, errTransient)
		require.Less(t, calls, 15)
		want := []time.Duration{time.Second, 1500 * time.Millisecond, 2250 * time.Millisecond, 3375 * time.Millisecond, 4 * time.Second}
		for i, d := range w.waits {
			require.Equal(t, want[min(i, len(want)-1)], d, "wait %d", i)
		}
	})
	t.Run("hint beyond the deadline", func(t *testing.T) {
		w := &recordingWaiter{now: start}
		err := retry(context.Background(), cfg, w.clock, w.wait, start.Add(5*time.Second), func(context.Context) (time.Duration, error) {
			return 10 * time.Second, errTransient
		})
		require.ErrorIs(t, err, errTransient)
		require.Empty(t, w.waits)
	})
	t.Run("gone stops at once", func(t *testing.T) {
		w := &recordingWaiter{now: start}
		calls := 0
		err := retry(context.Background(), cfg, w.clock, w.wait, start.Add(time.Minute), func(context.Context) (time.Duration, error) {
			calls++
			return 0, errDelayedEventGone
		})
		require.ErrorIs(t, err, errDelayedEventGone)
		require.Equal(t, 1, calls)
	})
}

// The Client-Server API: override first, then the cached or discovered
// m.homeserver.base_url of /.well-known/matrix/client.
func TestResolveCSAPI(t *testing.T) {
	var fetches int
	var mu sync.Mutex
	wk := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/.well-known/matrix/client", r.URL.Path)
		mu.Lock()
		fetches++
		mu.Unlock()
		_, _ = w.Write([]byte(`{"m.homeserver":{"base_url":"https://matrix.hs.test/"}}`))
	}))
	t.Cleanup(wk.Close)
	cfg := DefaultConfig()
	cfg.OpenID.DangerouslySkipTLSVerify = true
	cfg.DelayedEvents.CSAPIURLOverrides = map[string]string{"over.test": "http://10.0.0.1:8008/"}
	v := newOpenIDVerifier(cfg.OpenID)
	_, port, _ := net.SplitHostPort(wk.Listener.Addr().String())
	v.wellKnownPort = port
	// DNS sees every name as 127.0.0.1.
	base := &net.Dialer{Timeout: time.Second}
	v.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(addr)
		return base.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}
	c := newCSAPI(cfg.DelayedEvents, v)
	now := time.Now()
	c.now = func() time.Time { return now }

	got, err := c.resolve(context.Background(), "over.test")
	require.NoError(t, err)
	require.Equal(t, "http://10.0.0.1:8008", got)

	for range 3 {
		got, err = c.resolve(context.Background(), "hs.test")
		require.NoError(t, err)
		require.Equal(t, "https://matrix.hs.test", got)
	}
	require.Equal(t, 1, fetches, "cached")
	now = now.Add(cfg.DelayedEvents.DiscoveryCacheTTL + time.Second)
	_, err = c.resolve(context.Background(), "hs.test")
	require.NoError(t, err)
	require.Equal(t, 2, fetches, "refetched after the cache TTL")

	// A user of any new server name adds an entry; a full cache stays full
	// (a smaller cap than maxDiscoveryCache keeps the test fast).
	c.cache = newTTLCache[string, string](3)
	for i := range 10 {
		got, err = c.resolve(context.Background(), fmt.Sprintf("hs%d.test", i))
		require.NoError(t, err, "resolving works whether or not the answer fits")
		require.Equal(t, "https://matrix.hs.test", got)
	}
	require.Equal(t, 3, c.cache.len())
}

// A homeserver whose /.well-known/matrix/client names a plain-http
// base_url (here an "internal" service on loopback) does not get the
// focus's restart and send POSTs sent there: the delegation is refused as
// unresolvable, as lk-jwt-service refuses one without a Client-Server API.
func TestDelegationRefusesPlainHTTPBaseURL(t *testing.T) {
	var hits atomic.Int32
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("{}"))
	}))
	t.Cleanup(internal.Close)
	wk := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, `{"m.homeserver":{"base_url":%q}}`, internal.URL)
	}))
	t.Cleanup(wk.Close)

	h := newHarness(t, func(c *Config) { c.OpenID.DangerouslySkipTLSVerify = true })
	_, port, _ := net.SplitHostPort(wk.Listener.Addr().String())
	h.svc.openid.wellKnownPort = port
	base := &net.Dialer{Timeout: time.Second}
	h.svc.openid.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(addr)
		return base.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}
	h.hs.issue("tok-alice", "@alice:local.test")
	h.rooms.setPresent(aliceLKRoom, aliceIdentity, true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.svc.delegations.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return h.svc.delegations.running() != nil }, 5*time.Second, 5*time.Millisecond)

	resp, out := h.post(t, "/delegate_delayed_leave", delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_x", time.Minute))
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, out)
	require.Equal(t, "M_BAD_JSON", out["errcode"])
	require.Equal(t, msgUnresolvedCSAPI, out["error"])
	require.Never(t, func() bool { return hits.Load() > 0 }, 300*time.Millisecond, 10*time.Millisecond,
		"nothing is POSTed to the plain-http base_url")
}
