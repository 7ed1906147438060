package appservice

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"

	"github.com/gxfs-conf/gxconf/credentials"
)

// Unknown routes and unsupported methods are answered as the Application
// Service API requires: 404 / 405 with {"errcode":"M_UNRECOGNIZED"} JSON.
func TestUnrecognizedRequests(t *testing.T) {
	h := (&Appservice{metrics: newMetrics(prometheus.NewRegistry())}).Handler()
	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/_matrix/app/v1/nothing-here", http.StatusNotFound, ""},
		{http.MethodGet, "/", http.StatusNotFound, ""},
		{http.MethodPost, "/_matrix/app/v1/transactions/t1", http.StatusMethodNotAllowed, "PUT"},
		{http.MethodDelete, "/_matrix/app/v1/users/@a:b", http.StatusMethodNotAllowed, "GET, HEAD"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader("{}")))
			require.Equal(t, tc.status, rec.Code)
			require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			var body map[string]string
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), rec.Body.String())
			require.Equal(t, "M_UNRECOGNIZED", body["errcode"])
			if tc.allow != "" {
				require.Equal(t, tc.allow, rec.Header().Get("Allow"))
			}
		})
	}
	// Known routes still reach their handlers (here: no token → 401).
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/t1", strings.NewReader("{}")))
	require.Equal(t, http.StatusUnauthorized, rec.Code)
}

// TestRedeliveredTransactionProcessedOnce: a homeserver that gave up waiting
// sends a transaction again while the first delivery is still processed. The
// second waits for the first and finds it done: the events (a bot command
// among them would run twice) are processed once, and both are answered 200.
func TestRedeliveredTransactionProcessedOnce(t *testing.T) {
	a := newTestAppservice(t, "http://127.0.0.1:1")
	h := a.Handler()
	body := `{"events":[{"type":"m.room.message","room_id":"!r:hs.test","sender":"@alice:hs.test","event_id":"$m1",` +
		`"origin_server_ts":1,"content":{"msgtype":"m.text","body":"hello"}}]}`
	put := func() int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/t1", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+a.reg.ServerToken)
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	// The first delivery is held once it found the transaction new, until
	// the second waits for it (or, were it not to wait, is done).
	held, release := make(chan struct{}), make(chan struct{})
	var holding atomic.Bool
	var releaseOnce sync.Once
	testHookTxnNew = func(string) {
		if holding.CompareAndSwap(false, true) {
			close(held)
			<-release
		}
	}
	testHookTxnWaiting = func(string) { releaseOnce.Do(func() { close(release) }) }
	defer func() { testHookTxnNew, testHookTxnWaiting = nil, nil }()

	first, second := make(chan int, 1), make(chan int, 1)
	go func() { first <- put() }()
	<-held
	go func() {
		second <- put()
		releaseOnce.Do(func() { close(release) })
	}()
	require.Equal(t, http.StatusOK, <-first)
	require.Equal(t, http.StatusOK, <-second)
	require.Equal(t, 1.0, testutil.ToFloat64(a.metrics.events.WithLabelValues("m.room.message")), "the transaction's events were processed twice")
	require.Equal(t, 1.0, testutil.ToFloat64(a.metrics.transactions.WithLabelValues("duplicate")))
}

// TestRetriedTransactionRunsSideEffectsOnce: the database fails on an event
// after a bot command in the same transaction, so the transaction is
// answered 500 and the homeserver sends it again, here three times until the
// database is back. The command is answered once — its reply used to be
// queued at every delivery, before the transaction was known to succeed.
func TestRetriedTransactionRunsSideEffectsOnce(t *testing.T) {
	testDialects(t, func(t *testing.T, db *dbutil.Database) {
		ctx := context.Background()
		hs := &recordingHomeserver{}
		srv := httptest.NewServer(hs)
		defer srv.Close()
		a := newTestAppserviceOn(t, srv.URL, db)
		require.NoError(t, a.state.SetMembership(ctx, "!r:hs.test", a.botID, event.MembershipJoin))
		command := `{"type":"m.room.message","room_id":"!r:hs.test","sender":"@alice:hs.test","event_id":"$cmd","origin_server_ts":1,` +
			`"content":{"msgtype":"m.text","body":"!conf help"}}`
		join := `{"type":"org.matrix.msc4143.rtc.member","room_id":"!r:hs.test","sender":"@alice:hs.test","event_id":"$join","origin_server_ts":1,` +
			`"content":{"slot_id":"m.call#ROOM","sticky_key":"k","member":{"id":"m1","device_id":"ADEV"}}}`

		// The call member table is gone for a while: the store is
		// unavailable, which the homeserver must retry.
		_, err := db.Exec(ctx, "ALTER TABLE as_call_member RENAME TO as_call_member_away")
		require.NoError(t, err)
		for range 3 {
			require.Equal(t, http.StatusInternalServerError, putTransaction(t, a, "t1", command, join))
		}
		_, err = db.Exec(ctx, "ALTER TABLE as_call_member_away RENAME TO as_call_member")
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, putTransaction(t, a, "t1", command, join))
		require.Equal(t, http.StatusOK, putTransaction(t, a, "t1", command, join), "a redelivery after success is a duplicate")
		require.Equal(t, 1, len(a.jobs), "the command's reply is queued once")

		runJobs(t, a)
		require.Eventually(t, func() bool {
			return testutil.ToFloat64(a.metrics.jobs.WithLabelValues("bot_command", "ok")) == 1
		}, 10*time.Second, 10*time.Millisecond)
		require.Equal(t, 1, hs.count(http.MethodPut, "/send/m.room.message/"), "replies sent")
	})
}

// TestHomeserverTokenCheck: the hs_token comes as "Authorization: Bearer"
// (scheme in any case, RFC 9110 §11.1) or as ?access_token=; an empty bearer
// value counts as absent, so the query token counts (old Conduit sent both
// so); when both are given both must match (Application Service API,
// Authorization).
func TestHomeserverTokenCheck(t *testing.T) {
	a := newTestAppservice(t, "http://127.0.0.1:1")
	h := a.Handler()
	good := a.reg.ServerToken
	for name, tc := range map[string]struct {
		header []string
		query  string
		status int
		code   string
	}{
		"no token":                      {nil, "", http.StatusUnauthorized, "M_MISSING_TOKEN"},
		"bearer":                        {[]string{"Bearer " + good}, "", http.StatusOK, ""},
		"lower-case scheme":             {[]string{"bearer " + good}, "", http.StatusOK, ""},
		"upper-case scheme":             {[]string{"BEARER " + good}, "", http.StatusOK, ""},
		"wrong bearer":                  {[]string{"Bearer nope"}, "", http.StatusForbidden, "M_FORBIDDEN"},
		"query":                         {nil, "access_token=" + good, http.StatusOK, ""},
		"wrong query":                   {nil, "access_token=nope", http.StatusForbidden, "M_FORBIDDEN"},
		"empty bearer alone":            {[]string{"Bearer "}, "", http.StatusUnauthorized, "M_MISSING_TOKEN"},
		"empty bearer and query":        {[]string{"Bearer "}, "access_token=" + good, http.StatusOK, ""},
		"other scheme and query":        {[]string{"Basic Zm9vOmJhcg=="}, "access_token=" + good, http.StatusOK, ""},
		"both right":                    {[]string{"Bearer " + good}, "access_token=" + good, http.StatusOK, ""},
		"right header, wrong query":     {[]string{"Bearer " + good}, "access_token=nope", http.StatusForbidden, "M_FORBIDDEN"},
		"wrong header, right query":     {[]string{"Bearer nope"}, "access_token=" + good, http.StatusForbidden, "M_FORBIDDEN"},
		"right and wrong query":         {nil, "access_token=" + good + "&access_token=nope", http.StatusForbidden, "M_FORBIDDEN"},
		"right and wrong bearer header": {[]string{"Bearer " + good, "Bearer nope"}, "", http.StatusForbidden, "M_FORBIDDEN"},
	} {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/_matrix/app/v1/ping?"+tc.query, strings.NewReader("{}"))
			for _, v := range tc.header {
				req.Header.Add("Authorization", v)
			}
			h.ServeHTTP(rec, req)
			require.Equal(t, tc.status, rec.Code, rec.Body.String())
			if tc.code != "" {
				var body map[string]string
				require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
				require.Equal(t, tc.code, body["errcode"])
			}
		})
	}
}

// auditLog records audit entries.
type auditLog struct {
	mu      sync.Mutex
	entries []credentials.AuditEntry
}

func (l *auditLog) Audit(_ context.Context, e credentials.AuditEntry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, e)
	return nil
}

func (l *auditLog) count(decision string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.entries {
		if e.Decision == decision {
			n++
		}
	}
	return n
}

// TestRetriedTransactionAuditsOnce: a refused access policy change is
// audited once, however often the homeserver delivers its transaction
// before one succeeds (it was audited on every delivery that failed on a
// later event), and only once the transaction is recorded.
func TestRetriedTransactionAuditsOnce(t *testing.T) {
	testDialects(t, func(t *testing.T, db *dbutil.Database) {
		ctx := context.Background()
		hs := &recordingHomeserver{}
		srv := httptest.NewServer(hs)
		defer srv.Close()
		a := newTestAppserviceOn(t, srv.URL, db)
		audit := &auditLog{}
		a.audit = audit
		require.NoError(t, a.state.SetMembership(ctx, "!r:hs.test", a.botID, event.MembershipJoin))
		bad := `{"type":"de.gxconf.access","state_key":"","room_id":"!r:hs.test","sender":"@alice:hs.test","event_id":"$pol","origin_server_ts":1,` +
			`"content":{"level":"top-secret"}}`
		join := `{"type":"org.matrix.msc4143.rtc.member","room_id":"!r:hs.test","sender":"@alice:hs.test","event_id":"$join","origin_server_ts":1,` +
			`"content":{"slot_id":"m.call#ROOM","sticky_key":"k","member":{"id":"m1","device_id":"ADEV"}}}`
		_, err := db.Exec(ctx, "ALTER TABLE as_call_member RENAME TO as_call_member_away")
		require.NoError(t, err)
		for range 3 {
			require.Equal(t, http.StatusInternalServerError, putTransaction(t, a, "t1", bad, join))
		}
		_, err = db.Exec(ctx, "ALTER TABLE as_call_member_away RENAME TO as_call_member")
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, putTransaction(t, a, "t1", bad, join))
		require.Equal(t, http.StatusOK, putTransaction(t, a, "t1", bad, join))

		runJobs(t, a)
		require.Eventually(t, func() bool {
			return testutil.ToFloat64(a.metrics.jobs.WithLabelValues("policy_refused", "ok"))+
				testutil.ToFloat64(a.metrics.jobs.WithLabelValues("policy_refused", "error")) == 1
		}, 10*time.Second, 10*time.Millisecond)
		require.Equal(t, 1, audit.count(credentials.AuditPolicyRefused), "audited once")
		require.Zero(t, audit.count(credentials.AuditPolicyChanged))
	})
}

// TestTransactionIDsAnyDatabaseHolds: the transaction ID is the
// homeserver's choice; one with a NUL or invalid UTF-8 (a 500 on PostgreSQL
// for every delivery, so the homeserver retried it for ever) or a very long
// one is recorded under a digest, and its redelivery is still a duplicate.
func TestTransactionIDsAnyDatabaseHolds(t *testing.T) {
	testDialects(t, func(t *testing.T, db *dbutil.Database) {
		a := newTestAppserviceOn(t, "http://127.0.0.1:1", db)
		ping := `{"type":"m.room.message","room_id":"!r:hs.test","sender":"@alice:hs.test","event_id":"$m","origin_server_ts":1,"content":{"msgtype":"m.text","body":"hi"}}`
		ids := []string{"a%00b", "%ff%fe", strings.Repeat("x", 2000), "plain-1", "a%00c"}
		for _, id := range ids {
			require.Equal(t, http.StatusOK, putTransaction(t, a, id, ping), id)
		}
		for _, id := range ids {
			require.Equal(t, http.StatusOK, putTransaction(t, a, id, ping), id)
		}
		require.Equal(t, float64(len(ids)), testutil.ToFloat64(a.metrics.transactions.WithLabelValues("ok")))
		require.Equal(t, float64(len(ids)), testutil.ToFloat64(a.metrics.transactions.WithLabelValues("duplicate")))
		require.Equal(t, "plain-1", txnKey("plain-1"), "an ordinary ID is kept as it is")
	})
}

// runJobs runs a's job worker until the test ends.
func runJobs(t *testing.T, a *Appservice) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.work(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}
