package focus

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"

	"github.com/gxfs-conf/gxconf/internal/logbuf"
	testharness "github.com/gxfs-conf/gxconf/test/harness"
	"github.com/gxfs-conf/gxconf/test/msc4140"
)

// delayStack is a running focus (Serve, so delegations run) whose users on
// local.test have their Client-Server API at a fake MSC4140 homeserver.
type delayStack struct {
	*harness
	mhs    *msc4140.Server
	dbPath string
	stop   func()
}

// newDelayStack opens the focus on the SQLite file at dbPath ("" for a new
// one), or the PostgreSQL database at dbPath when it is a postgres:// URI,
// with short intervals, and serves it until stop or the test ends; opts
// change its options.
func newDelayStack(t *testing.T, mhs *msc4140.Server, dbPath string, rooms *fakeRooms, opts ...func(*Options)) *delayStack {
	t.Helper()
	if dbPath == "" {
		dbPath = filepath.Join(t.TempDir(), "focus.db")
	}
	if rooms == nil {
		rooms = &fakeRooms{absent: map[string]bool{}}
	}
	hsrv := httptest.NewServer(mhs)
	t.Cleanup(hsrv.Close)
	hs := newFakeHomeserver(t)
	cfg := DefaultConfig()
	cfg.SFU = SFUConfig{URL: "wss://sfu.test", APIKey: testKey, APISecret: testSecret}
	cfg.OpenID.ServerOverrides = map[string]string{"local.test": hs.srv.URL, "remote.test": hs.srv.URL}
	cfg.RateLimit.PerIP, cfg.RateLimit.PerUser = RateConfig{}, RateConfig{}
	d := &cfg.DelayedEvents
	d.CSAPIURLOverrides = map[string]string{"local.test": hsrv.URL}
	d.MinDelayTimeout = 10 * time.Millisecond
	d.PollInterval = 20 * time.Millisecond
	d.RetryInitialInterval, d.RetryMaxInterval = 10*time.Millisecond, 50*time.Millisecond
	dsn, dialect := "file:"+dbPath+"?_txlock=immediate", "sqlite3-fk-wal"
	if isPostgres(dbPath) {
		dsn, dialect = dbPath, "postgres"
	}
	db, err := dbutil.NewWithDialect(dsn, dialect)
	require.NoError(t, err)
	o := Options{
		Config: cfg, LocalDomain: "local.test", DB: db, Rooms: rooms,
		Members: fakeMembers{
			"!room:local.test|@alice:local.test": true,
			"!room:local.test|@bob:local.test":   true,
			"!room:local.test|@rita:remote.test": true,
		},
		Log: zerolog.New(zerolog.NewTestWriter(t)), Registerer: prometheus.NewRegistry(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	svc, err := New(context.Background(), o)
	require.NoError(t, err)
	hs.issue("tok-alice", "@alice:local.test")
	hs.issue("tok-bob", "@bob:local.test")
	hs.issue("tok-rita", "@rita:remote.test")
	hs.issue("tok-mallory", "@mallory:local.test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx, ln) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		require.NoError(t, <-done)
		require.NoError(t, db.Close())
	}
	t.Cleanup(stop)
	return &delayStack{
		harness: &harness{svc: svc, hs: hs, rooms: rooms, srv: &httptest.Server{URL: "http://" + ln.Addr().String()}},
		mhs:     mhs, dbPath: dbPath, stop: stop,
	}
}

func delayedBody(token, server, user, delayID string, timeout time.Duration) map[string]any {
	b := tokenBody(token, server, user)
	b["delay_id"], b["delay_timeout"] = delayID, timeout.Milliseconds()
	return b
}

var (
	aliceLKRoom   = LiveKitRoomAlias("!room:local.test", "m.call#ROOM")
	aliceIdentity = LiveKitIdentity("@alice:local.test", "DEV1", "member1")
)

func isPostgres(dbPath string) bool {
	return strings.HasPrefix(dbPath, "postgres://") || strings.HasPrefix(dbPath, "postgresql://")
}

// rawDB opens the stack's database directly, as another program would.
func rawDB(t *testing.T, s *delayStack) *sql.DB {
	t.Helper()
	driver, dsn := "sqlite3", "file:"+s.dbPath+"?_txlock=immediate"
	if isPostgres(s.dbPath) {
		driver, dsn = "postgres", s.dbPath
	}
	db, err := sql.Open(driver, dsn)
	require.NoError(t, err)
	return db
}

// postgresFor starts a PostgreSQL server for the test and returns its URI.
func postgresFor(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg, err := testharness.StartPostgres(context.Background())
	require.NoError(t, err, "PostgreSQL (scripts/deps.sh installs it)")
	t.Cleanup(pg.Stop)
	return pg.URI
}

func delegationRows(t *testing.T, s *delayStack) int {
	t.Helper()
	db := rawDB(t, s)
	defer db.Close()
	var n int
	require.NoError(t, db.QueryRow("SELECT COUNT(*) FROM focus_delayed_leave").Scan(&n))
	return n
}

// The whole life of a delegation through /get_token: restarted while the
// participant is connected, so it never fires by itself; sent as soon as the
// participant is gone.
func TestDelayedLeaveRestartWhileConnectedSendAfterDisconnect(t *testing.T) {
	mhs := msc4140.New(nil)
	s := newDelayStack(t, mhs, "", nil)
	const timeout = 1500 * time.Millisecond
	mhs.Schedule("syd_a", timeout)

	resp, out := s.post(t, "/get_token", delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_a", timeout))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.NotEmpty(t, out["jwt"])
	require.Equal(t, 1, delegationRows(t, s))
	// Not connected yet: nothing is restarted.
	require.Never(t, func() bool { return len(mhs.Requests()) > 0 }, 100*time.Millisecond, 10*time.Millisecond)

	s.rooms.setPresent(aliceLKRoom, aliceIdentity, true)
	// Restarted at once, then every 80 % of the timeout.
	require.Eventually(t, func() bool { return mhs.Count("restart", 200) >= 3 }, 10*time.Second, 10*time.Millisecond)
	e, _ := mhs.Event("syd_a")
	require.Equal(t, msc4140.Scheduled, e.Outcome, "kept alive well past its timeout")

	s.rooms.setPresent(aliceLKRoom, aliceIdentity, false)
	require.Eventually(t, func() bool {
		e, _ := mhs.Event("syd_a")
		return e.Outcome == msc4140.Sent
	}, 5*time.Second, 10*time.Millisecond)
	e, _ = mhs.Event("syd_a")
	require.Equal(t, "action", e.SentBy, "sent by the focus, not by the timeout")
	require.Eventually(t, func() bool { return delegationRows(t, s) == 0 }, 5*time.Second, 10*time.Millisecond)
	for _, r := range mhs.Requests() {
		require.Equal(t, "syd_a", r.DelayID)
		require.False(t, r.Authorized)
	}
}

// A participant who never connects: the event is sent once it would have
// fired anyway (min(1h, delay_timeout)), as lk-jwt-service.
func TestDelayedLeaveNeverConnected(t *testing.T) {
	mhs := msc4140.New(nil)
	mhs.ForgetFinalised()
	s := newDelayStack(t, mhs, "", nil)
	mhs.Schedule("syd_n", time.Hour)
	resp, out := s.post(t, "/delegate_delayed_leave", delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_n", 200*time.Millisecond))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Empty(t, out, "the answer is {}")
	require.Eventually(t, func() bool { return mhs.Count("send", 200) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Zero(t, mhs.Count("restart", 200))
}

// 404 on restart: the event was sent or cancelled on the homeserver; the job
// stops without sending.
func TestDelayedLeaveRestartNotFoundStops(t *testing.T) {
	mhs := msc4140.New(nil)
	s := newDelayStack(t, mhs, "", nil)
	s.rooms.setPresent(aliceLKRoom, aliceIdentity, true)
	resp, _ := s.post(t, "/delegate_delayed_leave", delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_unknown", time.Second))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Eventually(t, func() bool { return mhs.Count("restart", 404) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return delegationRows(t, s) == 0 }, 5*time.Second, 10*time.Millisecond)
	s.rooms.setPresent(aliceLKRoom, aliceIdentity, false)
	require.Never(t, func() bool { return len(mhs.Requests()) > 1 }, 200*time.Millisecond, 20*time.Millisecond)
}

// 429 and 5xx on restart are retried (after the hint, with backoff) while
// the event would not yet have fired.
func TestDelayedLeaveRestartRetries(t *testing.T) {
	mhs := msc4140.New(nil)
	s := newDelayStack(t, mhs, "", nil)
	mhs.Schedule("syd_r", 2*time.Second)
	mhs.Fail(
		msc4140.Failure{Status: 429, Body: map[string]any{"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 50}},
		msc4140.Failure{Status: 503},
		msc4140.Failure{Status: 500},
	)
	s.rooms.setPresent(aliceLKRoom, aliceIdentity, true)
	resp, _ := s.post(t, "/delegate_delayed_leave", delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_r", 2*time.Second))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Eventually(t, func() bool { return mhs.Count("restart", 200) >= 1 }, 5*time.Second, 10*time.Millisecond)
	reqs := mhs.Requests()
	require.Equal(t, []int{429, 503, 500, 200}, []int{reqs[0].Status, reqs[1].Status, reqs[2].Status, reqs[3].Status})
	require.GreaterOrEqual(t, reqs[1].At.Sub(reqs[0].At), 50*time.Millisecond, "the retry hint is honoured")
}

// Removing the user from the call (they left or were banned) sends their
// delayed leave at once, even while the SFU still lists them.
func TestDelayedLeaveSentOnRemoval(t *testing.T) {
	mhs := msc4140.New(nil)
	s := newDelayStack(t, mhs, "", nil)
	mhs.Schedule("syd_b", time.Hour)
	s.rooms.setPresent(aliceLKRoom, aliceIdentity, true)
	resp, _ := s.post(t, "/get_token", delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_b", time.Hour))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Eventually(t, func() bool { return mhs.Count("restart", 200) == 1 }, 5*time.Second, 10*time.Millisecond)
	_, err := s.svc.RemoveUser(context.Background(), "!room:local.test", "@alice:local.test", "banned from the room")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		e, _ := mhs.Event("syd_b")
		return e.Outcome == msc4140.Sent && e.SentBy == "action"
	}, 5*time.Second, 10*time.Millisecond)
}

// A new delegation for the same participant replaces the old one: the old
// delay ID is neither restarted nor sent any more.
func TestDelayedLeaveReplaced(t *testing.T) {
	mhs := msc4140.New(nil)
	s := newDelayStack(t, mhs, "", nil)
	mhs.Schedule("syd_old", time.Hour)
	mhs.Schedule("syd_new", time.Hour)
	s.rooms.setPresent(aliceLKRoom, aliceIdentity, true)
	resp, _ := s.post(t, "/delegate_delayed_leave", delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_old", 300*time.Millisecond))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Eventually(t, func() bool { return mhs.Count("restart", 200) >= 1 }, 5*time.Second, 10*time.Millisecond)
	resp, _ = s.post(t, "/delegate_delayed_leave", delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_new", 300*time.Millisecond))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Eventually(t, func() bool { e, _ := mhs.Event("syd_new"); return e.Restarts >= 2 }, 5*time.Second, 10*time.Millisecond)
	old, _ := mhs.Event("syd_old")
	s.rooms.setPresent(aliceLKRoom, aliceIdentity, false)
	require.Eventually(t, func() bool { e, _ := mhs.Event("syd_new"); return e.Outcome == msc4140.Sent }, 5*time.Second, 10*time.Millisecond)
	after, _ := mhs.Event("syd_old")
	require.Equal(t, old.Restarts, after.Restarts, "the replaced delay ID is left alone")
	require.Equal(t, msc4140.Scheduled, after.Outcome)
	require.Eventually(t, func() bool { return delegationRows(t, s) == 0 }, 5*time.Second, 10*time.Millisecond)
}

// One user cannot hold more than maxDelegationsPerUser jobs by varying
// member.id: the next is refused with 429 M_LIMIT_EXCEEDED and the running
// ones are kept; another user is unaffected, replacing one's own delegation
// takes no new slot, and a delegation that ends frees its slot.
func TestDelegationsCappedPerUser(t *testing.T) {
	mhs := msc4140.New(nil)
	s := newDelayStack(t, mhs, "", nil)
	delegate := func(token, user, member, delayID string) (*http.Response, map[string]any) {
		mhs.Schedule(delayID, time.Hour)
		b := delayedBody(token, "local.test", user, delayID, time.Hour)
		b["member"].(map[string]any)["id"] = member
		return s.post(t, "/delegate_delayed_leave", b)
	}
	for i := range 20 {
		resp, out := delegate("tok-alice", "@alice:local.test", fmt.Sprintf("m%d", i), fmt.Sprintf("syd_%d", i))
		if i < maxDelegationsPerUser {
			require.Equal(t, http.StatusOK, resp.StatusCode, "delegation %d: %v", i, out)
			continue
		}
		require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "delegation %d", i)
		require.Equal(t, "M_LIMIT_EXCEEDED", out["errcode"])
		require.Contains(t, out["error"], fmt.Sprint(maxDelegationsPerUser))
	}
	require.Equal(t, maxDelegationsPerUser, delegationRows(t, s))
	b := delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_token", time.Hour)
	b["member"].(map[string]any)["id"] = "m-token"
	resp, out := s.post(t, "/get_token", b)
	// On a token endpoint the refusal is 400 M_BAD_JSON, on which Element
	// Call asks again without delay fields: the user still joins.
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "a token endpoint's delegation counts too: %v", out)
	require.Equal(t, "M_BAD_JSON", out["errcode"])
	require.Contains(t, out["error"], fmt.Sprint(maxDelegationsPerUser))
	delete(b, "delay_id")
	delete(b, "delay_timeout")
	resp, out = s.post(t, "/get_token", b)
	require.Equal(t, http.StatusOK, resp.StatusCode, "without delay fields: %v", out)

	resp, out = delegate("tok-bob", "@bob:local.test", "m0", "syd_bob")
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	resp, out = delegate("tok-alice", "@alice:local.test", "m1", "syd_1b")
	require.Equal(t, http.StatusOK, resp.StatusCode, "a replacement takes no new slot: %v", out)

	// m0's participant comes and goes: its job sends the leave and ends.
	identity := LiveKitIdentity("@alice:local.test", "DEV1", "m0")
	s.rooms.setPresent(aliceLKRoom, identity, true)
	require.Eventually(t, func() bool { return mhs.Count("restart", 200) >= 1 }, 5*time.Second, 10*time.Millisecond)
	s.rooms.setPresent(aliceLKRoom, identity, false)
	require.Eventually(t, func() bool { e, _ := mhs.Event("syd_0"); return e.Outcome == msc4140.Sent }, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		resp, _ := delegate("tok-alice", "@alice:local.test", "m16", "syd_16")
		return resp.StatusCode == http.StatusOK
	}, 5*time.Second, 50*time.Millisecond, "the ended delegation's slot is free")
	for i := 2; i < maxDelegationsPerUser; i++ {
		e, _ := mhs.Event(fmt.Sprintf("syd_%d", i))
		require.Equal(t, msc4140.Scheduled, e.Outcome, "refusals dropped no running delegation")
	}
	resp, _ = delegate("tok-alice", "@alice:local.test", "m17", "syd_17")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "at the cap again")
	require.Equal(t, maxDelegationsPerUser+1, delegationRows(t, s), "alice's 16 and bob's")
}

// The node runs at most delayed_events.max_jobs delegations, whoever they
// are from: the next is refused as over the per-user cap (429
// M_LIMIT_EXCEEDED on /delegate_delayed_leave, 400 M_BAD_JSON on the token
// endpoints, which a client retries without delay fields) and logged once, not per refusal; a job that ends, sent
// or cancelled on the homeserver, frees its slot; the gauges show the jobs
// held and the cap.
func TestDelegationsCappedPerNode(t *testing.T) {
	mhs := msc4140.New(nil)
	var logs logbuf.Buffer
	s := newDelayStack(t, mhs, "", nil, func(o *Options) {
		o.Config.DelayedEvents.MaxJobs = 2
		o.Log = zerolog.New(io.MultiWriter(&logs, zerolog.NewTestWriter(t)))
	})
	jobs := func() float64 { return testutil.ToFloat64(s.svc.metrics.delegations) }
	require.Equal(t, 2.0, testutil.ToFloat64(s.svc.metrics.delegationsLimit))
	delegate := func(token, user, member, delayID string) (*http.Response, map[string]any) {
		b := delayedBody(token, "local.test", user, delayID, time.Hour)
		b["member"].(map[string]any)["id"] = member
		return s.post(t, "/delegate_delayed_leave", b)
	}
	mhs.Schedule("syd_a0", time.Hour)
	resp, out := delegate("tok-alice", "@alice:local.test", "m0", "syd_a0")
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	// syd_b0 is not scheduled: cancelled on the homeserver.
	resp, out = delegate("tok-bob", "@bob:local.test", "m0", "syd_b0")
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Equal(t, 2.0, jobs())

	const full = "Refusing delayed leave delegations"
	b := delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_a1", time.Hour)
	b["member"].(map[string]any)["id"] = "m1"
	resp, out = s.post(t, "/delegate_delayed_leave", b)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, out)
	require.Equal(t, "M_LIMIT_EXCEEDED", out["errcode"])
	// The token endpoints answer 400 M_BAD_JSON, on which Element Call asks
	// again without delay fields, and the user joins.
	legacy := map[string]any{"room": b["room_id"], "openid_token": b["openid_token"], "device_id": "DEV1",
		"delay_id": "syd_a1", "delay_timeout": b["delay_timeout"]}
	for path, body := range map[string]map[string]any{"/get_token": b, "/sfu/get": legacy} {
		resp, out = s.post(t, path, body)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %v", path, out)
		require.Equal(t, "M_BAD_JSON", out["errcode"], path)
		delete(body, "delay_id")
		delete(body, "delay_timeout")
		resp, out = s.post(t, path, body)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s without delay fields: %v", path, out)
	}
	require.Equal(t, 1, strings.Count(logs.String(), full), "logged once")
	resp, out = delegate("tok-alice", "@alice:local.test", "m0", "syd_a0")
	require.Equal(t, http.StatusOK, resp.StatusCode, "a replacement takes no new slot: %v", out)
	require.Equal(t, 2, delegationRows(t, s))

	// Bob's participant connects; the restart finds the event cancelled
	// (404) and the job ends.
	s.rooms.setPresent(aliceLKRoom, LiveKitIdentity("@bob:local.test", "DEV1", "m0"), true)
	require.Eventually(t, func() bool { return jobs() == 1 }, 5*time.Second, 10*time.Millisecond)
	mhs.Schedule("syd_a1", time.Hour)
	resp, out = delegate("tok-alice", "@alice:local.test", "m1", "syd_a1")
	require.Equal(t, http.StatusOK, resp.StatusCode, "the cancelled job's slot is free: %v", out)

	// Alice's m0 comes and goes: its leave is sent and its slot is free.
	identity := LiveKitIdentity("@alice:local.test", "DEV1", "m0")
	s.rooms.setPresent(aliceLKRoom, identity, true)
	require.Eventually(t, func() bool { e, _ := mhs.Event("syd_a0"); return e.Restarts >= 1 }, 5*time.Second, 10*time.Millisecond)
	s.rooms.setPresent(aliceLKRoom, identity, false)
	require.Eventually(t, func() bool { return jobs() == 1 }, 5*time.Second, 10*time.Millisecond)
	e, _ := mhs.Event("syd_a0")
	require.Equal(t, msc4140.Sent, e.Outcome)
	mhs.Schedule("syd_a2", time.Hour)
	resp, out = delegate("tok-alice", "@alice:local.test", "m2", "syd_a2")
	require.Equal(t, http.StatusOK, resp.StatusCode, "the sent job's slot is free: %v", out)
	require.Equal(t, 2.0, jobs())

	// Full again after having been below the cap: logged again.
	resp, _ = delegate("tok-bob", "@bob:local.test", "m1", "syd_b1")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Equal(t, 2, strings.Count(logs.String(), full))
}

// A restart of gxconf: the job is in the database; the next focus on the
// same file resumes it, restarting the event while the participant is there
// and sending it when they are gone. A job whose event must have fired while
// the focus was down is dropped.
func TestDelayedLeaveSurvivesRestart(t *testing.T) {
	mhs := msc4140.New(nil)
	rooms := &fakeRooms{absent: map[string]bool{}}
	rooms.setPresent(aliceLKRoom, aliceIdentity, true)
	s := newDelayStack(t, mhs, "", rooms)
	mhs.Schedule("syd_s", 2*time.Second)
	resp, _ := s.post(t, "/delegate_delayed_leave", delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_s", 2*time.Second))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Eventually(t, func() bool { return mhs.Count("restart", 200) >= 1 }, 5*time.Second, 10*time.Millisecond)
	s.stop()
	require.Equal(t, 1, delegationRows(t, s), "a shutdown keeps the job")
	require.Zero(t, mhs.Count("send", 200), "a shutdown sends nothing")
	before := mhs.Count("restart", 200)

	// An expired job of another participant, left over from long ago.
	db, err := sql.Open("sqlite3", "file:"+s.dbPath+"?_txlock=immediate")
	require.NoError(t, err)
	_, err = db.Exec(`INSERT INTO focus_delayed_leave (lk_room, identity, delay_id, delay_timeout, server_name, room_id, user_id, created_at, restarted_at)
		VALUES ('lk', 'gone', 'syd_expired', 1000, 'local.test', '!room:local.test', '@bob:local.test', 0, 0)`)
	require.NoError(t, err)
	require.NoError(t, db.Close())

	s2 := newDelayStack(t, mhs, s.dbPath, rooms)
	require.Eventually(t, func() bool { return mhs.Count("restart", 200) > before }, 5*time.Second, 10*time.Millisecond)
	rooms.setPresent(aliceLKRoom, aliceIdentity, false)
	require.Eventually(t, func() bool {
		e, _ := mhs.Event("syd_s")
		return e.Outcome == msc4140.Sent && e.SentBy == "action"
	}, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return delegationRows(t, s2) == 0 }, 5*time.Second, 10*time.Millisecond)
	for _, r := range mhs.Requests() {
		require.NotEqual(t, "syd_expired", r.DelayID)
	}
}

// Nodes sharing a database run each job once: a node that starts leaves
// the jobs of a live node alone, takes over those of a node that stopped
// (it hands them over) or died (it stopped renewing its liveness), and the
// job it took is restarted and sent from there.
func TestDelayedLeaveResumedByOneNode(t *testing.T) {
	onBothDatabases(t, testDelayedLeaveResumedByOneNode)
}

// onBothDatabases runs test on a new SQLite file and on a new PostgreSQL
// database.
func onBothDatabases(t *testing.T, test func(t *testing.T, dbPath string)) {
	t.Run("sqlite", func(t *testing.T) { test(t, "") })
	t.Run("postgres", func(t *testing.T) { test(t, postgresFor(t)) })
}

// node makes a stack cluster node id. Liveness lapses after 7.5 poll
// intervals: long enough here that a busy test machine does not make a
// live node look dead.
func node(id string) func(*Options) {
	return func(o *Options) { o.NodeID, o.Config.DelayedEvents.PollInterval = id, 250*time.Millisecond }
}

func testDelayedLeaveResumedByOneNode(t *testing.T, dbPath string) {
	mhs := msc4140.New(nil)
	rooms := &fakeRooms{absent: map[string]bool{}}
	rooms.setPresent(aliceLKRoom, aliceIdentity, true)
	a := newDelayStack(t, mhs, dbPath, rooms, node("a"))
	mhs.Schedule("syd_a", time.Hour)
	resp, out := a.post(t, "/delegate_delayed_leave", delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_a", time.Hour))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Eventually(t, func() bool { return mhs.Count("restart", 200) >= 1 }, 5*time.Second, 10*time.Millisecond)

	b := newDelayStack(t, mhs, a.dbPath, rooms, node("b"))
	jobsOf := func(s *delayStack) float64 { return testutil.ToFloat64(s.svc.metrics.delegations) }
	// b answers a delegation only after its start-up resume.
	mhs.Schedule("syd_b", time.Hour)
	resp, out = b.post(t, "/delegate_delayed_leave", delayedBody("tok-bob", "local.test", "@bob:local.test", "syd_b", time.Hour))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Equal(t, 1.0, jobsOf(b), "bob's, not a's")
	require.Equal(t, 1.0, jobsOf(a))

	// A job of a node that died, which never renews its liveness.
	db := rawDB(t, a)
	deadIdentity := LiveKitIdentity("@bob:local.test", "DEV1", "dead")
	mhs.Schedule("syd_dead", time.Hour)
	rooms.setPresent(aliceLKRoom, deadIdentity, true)
	_, err := db.Exec(`INSERT INTO focus_delayed_leave (lk_room, identity, delay_id, delay_timeout, server_name, room_id, user_id, created_at, restarted_at, node_id)
		VALUES ($1, $2, 'syd_dead', 3600000, 'local.test', '!room:local.test', '@bob:local.test', $3, $3, 'dead')`,
		aliceLKRoom, deadIdentity, time.Now().UnixMilli())
	require.NoError(t, err)
	require.NoError(t, db.Close())
	require.Eventually(t, func() bool { e, _ := mhs.Event("syd_dead"); return e.Restarts >= 1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 3.0, jobsOf(a)+jobsOf(b), "taken by one node (either)")

	before, _ := mhs.Event("syd_a")
	a.stop()
	require.Eventually(t, func() bool { return jobsOf(b) == 3 }, 5*time.Second, 10*time.Millisecond, "a's job handed over")
	require.Eventually(t, func() bool { e, _ := mhs.Event("syd_a"); return e.Restarts > before.Restarts }, 5*time.Second, 10*time.Millisecond)
	rooms.setPresent(aliceLKRoom, aliceIdentity, false)
	require.Eventually(t, func() bool {
		e, _ := mhs.Event("syd_a")
		return e.Outcome == msc4140.Sent && e.SentBy == "action"
	}, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return jobsOf(b) == 2 }, 5*time.Second, 10*time.Millisecond)
}

// A delegation replaced through another node moves its row there: the old
// job stops at its next restart instead of keeping the old delay ID alive
// beside the new job.
func TestDelayedLeaveReplacedOnAnotherNode(t *testing.T) {
	onBothDatabases(t, testDelayedLeaveReplacedOnAnotherNode)
}

func testDelayedLeaveReplacedOnAnotherNode(t *testing.T, dbPath string) {
	mhs := msc4140.New(nil)
	rooms := &fakeRooms{absent: map[string]bool{}}
	rooms.setPresent(aliceLKRoom, aliceIdentity, true)
	a := newDelayStack(t, mhs, dbPath, rooms, node("a"))
	b := newDelayStack(t, mhs, a.dbPath, rooms, node("b"))
	mhs.Schedule("syd_old", time.Hour)
	mhs.Schedule("syd_new", time.Hour)
	resp, out := a.post(t, "/delegate_delayed_leave", delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_old", 300*time.Millisecond))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Eventually(t, func() bool { e, _ := mhs.Event("syd_old"); return e.Restarts >= 1 }, 5*time.Second, 10*time.Millisecond)
	resp, out = b.post(t, "/delegate_delayed_leave", delayedBody("tok-alice", "local.test", "@alice:local.test", "syd_new", 300*time.Millisecond))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Eventually(t, func() bool { return testutil.ToFloat64(a.svc.metrics.delegations) == 0 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(b.svc.metrics.delegations))
	require.Equal(t, 1, delegationRows(t, a), "the new row stays")
	old, _ := mhs.Event("syd_old")
	require.Eventually(t, func() bool { e, _ := mhs.Event("syd_new"); return e.Restarts >= old.Restarts+2 }, 5*time.Second, 10*time.Millisecond)
	after, _ := mhs.Event("syd_old")
	require.Equal(t, old.Restarts, after.Restarts, "the old delay ID is left alone")
}

// The answers to delegations the focus does not take, as lk-jwt-service's.
func TestDelegationErrors(t *testing.T) {
	mhs := msc4140.New(nil)
	s := newDelayStack(t, mhs, "", nil)
	alice := func(id string, timeout time.Duration) map[string]any {
		return delayedBody("tok-alice", "local.test", "@alice:local.test", id, timeout)
	}
	cases := []struct {
		name   string
		path   string
		body   any
		status int
		code   string
	}{
		{"restricted user, token", "/get_token", delayedBody("tok-rita", "remote.test", "@rita:remote.test", "d", time.Second), 400, "M_BAD_JSON"},
		{"restricted user, legacy", "/sfu/get", map[string]any{
			"room": "!room:local.test", "device_id": "D", "delay_id": "d", "delay_timeout": 1000,
			"openid_token": map[string]any{"access_token": "tok-rita", "matrix_server_name": "remote.test"},
		}, 400, "M_BAD_JSON"},
		{"restricted user, delegate", "/delegate_delayed_leave", delayedBody("tok-rita", "remote.test", "@rita:remote.test", "d", time.Second), 403, "M_FORBIDDEN"},
		{"forged token", "/delegate_delayed_leave", delayedBody("forged", "local.test", "@alice:local.test", "d", time.Second), 401, "M_UNAUTHORIZED"},
		{"claimed other user", "/delegate_delayed_leave", delayedBody("tok-alice", "local.test", "@bob:local.test", "d", time.Second), 401, "M_UNAUTHORIZED"},
		{"not a member", "/delegate_delayed_leave", delayedBody("tok-mallory", "local.test", "@mallory:local.test", "d", time.Second), 403, "M_FORBIDDEN"},
		{"missing delay_id", "/delegate_delayed_leave", alice("", time.Second), 400, "M_BAD_JSON"},
		{"missing delay_timeout", "/delegate_delayed_leave", alice("d", 0), 400, "M_BAD_JSON"},
		{"missing member", "/delegate_delayed_leave", delayedBody("tok-alice", "local.test", "", "d", time.Second), 400, "M_BAD_JSON"},
		{"not json", "/delegate_delayed_leave", `{"room_id":`, 400, "M_NOT_JSON"},
		{"timeout too short", "/get_token", alice("d", 5*time.Millisecond), 400, "M_BAD_JSON"},
		{"timeout too long", "/delegate_delayed_leave", alice("d", 25*time.Hour), 400, "M_BAD_JSON"},
		{"dot-dot delay ID", "/delegate_delayed_leave", alice("..", time.Second), 400, "M_BAD_JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := s.post(t, tc.path, tc.body)
			require.Equal(t, tc.status, resp.StatusCode, out)
			require.Equal(t, tc.code, out["errcode"])
		})
	}
	require.Zero(t, delegationRows(t, s))
	require.Empty(t, mhs.Requests())

	// delay_cs_api_url alone is ignored, as lk-jwt-service does: a token, no delegation.
	b := tokenBody("tok-alice", "local.test", "@alice:local.test")
	b["delay_cs_api_url"] = "https://evil.test"
	resp, out := s.post(t, "/get_token", b)
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Zero(t, delegationRows(t, s))
}

// Every bad delayed_events key is reported under its name.
func TestDelayedEventsConfigValidation(t *testing.T) {
	cfg := DefaultConfig()
	require.NoError(t, cfg.Validate())
	d := &cfg.DelayedEvents
	d.CSAPIURLOverrides = map[string]string{"bad name/": "https://x", "hs.test": "ftp://x"}
	d.DiscoveryCacheTTL = -time.Second
	d.MinDelayTimeout = time.Millisecond
	d.MaxDelayTimeout = 0
	d.PollInterval = 0
	d.RequestTimeout = 0
	d.RetryInitialInterval = 0
	d.RetryMaxInterval = -1
	d.MaxJobs = 0
	err := cfg.Validate()
	require.Error(t, err)
	for _, key := range []string{
		"delayed_events.cs_api_url_overrides.bad name/", "delayed_events.cs_api_url_overrides.hs.test",
		"delayed_events.discovery_cache_ttl", "delayed_events.min_delay_timeout", "delayed_events.max_delay_timeout",
		"delayed_events.poll_interval", "delayed_events.request_timeout", "delayed_events.retry_initial_interval",
		"delayed_events.retry_max_interval", "delayed_events.max_jobs",
	} {
		require.Contains(t, err.Error(), key+":")
	}
}
