package catalog

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"

	"github.com/gxfs-conf/gxconf/credentials"
	gxstore "github.com/gxfs-conf/gxconf/store"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// testPG is one throwaway PostgreSQL server for the package's tests, started
// by the first test that needs it; each test gets a database of its own.
var testPG struct {
	once sync.Once
	pg   *harness.Postgres
	err  error
	n    atomic.Int64
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testPG.pg != nil {
		testPG.pg.Stop()
	}
	os.Exit(code)
}

// newPostgresURI creates an empty database on the package's PostgreSQL
// server. Without a PostgreSQL server the test fails (scripts/deps.sh
// installs it); under -short it skips.
func newPostgresURI(t *testing.T) string {
	t.Helper()
	testPG.once.Do(func() { testPG.pg, testPG.err = harness.StartPostgres(context.Background()) })
	if testPG.err != nil {
		if testing.Short() && strings.Contains(testPG.err.Error(), "not installed") {
			t.Skip(testPG.err)
		}
		t.Fatal(testPG.err)
	}
	name := fmt.Sprintf("catalog_%d", testPG.n.Add(1))
	admin, err := sql.Open("postgres", testPG.pg.URI)
	require.NoError(t, err)
	defer admin.Close()
	_, err = admin.Exec("CREATE DATABASE " + name)
	require.NoError(t, err)
	return strings.Replace(testPG.pg.URI, "/gxconf?", "/"+name+"?", 1)
}

// replicas are two Catalog instances on one PostgreSQL database, each with
// its own connection pool, as two gxconf nodes of a cluster run them; they
// share the cluster directory and the clock.
type replicas struct {
	a, b  *Catalog
	dir   *fakeDir
	clock *clock
	db    *dbutil.Database
}

func newReplicas(t *testing.T, mutate func(*Config)) *replicas {
	t.Helper()
	ctx := context.Background()
	cfg := testConfig(t)
	if mutate != nil {
		mutate(&cfg)
	}
	uri := newPostgresURI(t)
	r := &replicas{dir: &fakeDir{rooms: map[string][]string{}}, clock: &clock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}}
	open := func() *Catalog {
		dbc := gxstore.DefaultConfig()
		dbc.Type, dbc.URI, dbc.MaxOpenConns = "postgres", uri, 8
		db, err := gxstore.Open(ctx, dbc, zerolog.Nop())
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		audit, err := credentials.OpenAuditLog(ctx, db, nil, zerolog.Nop())
		require.NoError(t, err)
		c, err := New(ctx, Options{Config: cfg, DB: db, Audit: audit, Directory: r.dir, Log: zerolog.New(zerolog.NewTestWriter(t)), Now: r.clock.now})
		require.NoError(t, err)
		if r.db == nil {
			r.db = db
		}
		return c
	}
	r.a, r.b = open(), open()
	return r
}

func (r *replicas) replica(i int) *Catalog {
	if i%2 == 0 {
		return r.a
	}
	return r.b
}

// hammer runs n calls of fn at once (a start barrier), the even ones on
// replica a, the odd ones on replica b, and waits for them.
func (r *replicas) hammer(n int, fn func(i int, c *Catalog)) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn(i, r.replica(i))
		}()
	}
	close(start)
	wg.Wait()
}

func (r *replicas) request(mutate func(*BookingRequest)) BookingRequest {
	now := r.clock.now()
	req := BookingRequest{Tier: "public-20-gold", Unit: UnitDateRange, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(30 * 24 * time.Hour),
		TZ: "Europe/Berlin", AcceptTerms: testTerms, Organisers: []string{"@org:x"}}
	if mutate != nil {
		mutate(&req)
	}
	return req
}

// book books on replica a and accepts the rooms' bindings.
func (r *replicas) book(t *testing.T, org string, mutate func(*BookingRequest)) *Booking {
	t.Helper()
	ctx := context.Background()
	req := r.request(mutate)
	b, err := r.a.Book(ctx, Principal{Subject: "https://idp|" + org, Org: org}, org, req)
	require.NoError(t, err)
	for _, room := range req.Rooms {
		bound, err := r.a.ConfirmRoom(ctx, room, b.ID, "@roomadmin:x")
		require.NoError(t, err)
		require.True(t, bound)
	}
	return b
}

// TestReplicasOpenBookingLimit: an organisation's bookings requested at
// once on two replicas stay within max_open_bookings_per_org; the rest are
// refused with the limit's reason.
func TestReplicasOpenBookingLimit(t *testing.T) {
	ctx := context.Background()
	r := newReplicas(t, func(c *Config) { c.MaxOpenBookingsPerOrg = 3 })
	var booked atomic.Int64
	errs := make([]error, 16)
	r.hammer(len(errs), func(i int, c *Catalog) {
		_, errs[i] = c.Book(ctx, orgAdmin, "land-nrw", r.request(nil))
		if errs[i] == nil {
			booked.Add(1)
		}
	})
	for _, err := range errs {
		if err != nil {
			require.ErrorIs(t, err, ErrInvalid)
			require.ErrorContains(t, err, "max_open_bookings_per_org")
		}
	}
	open, err := r.a.st.countOpen(ctx, "land-nrw")
	require.NoError(t, err)
	require.EqualValues(t, 3, booked.Load(), "bookings accepted")
	require.Equal(t, 3, open, "open bookings stored")
}

// TestReplicasRoomBinding: two organisations' schedulers binding the same
// rooms at once through two replicas: each room ends up bound to one of
// them, and the other is refused — never both accepted, the later binding
// silently taking the room from the first.
func TestReplicasRoomBinding(t *testing.T) {
	ctx := context.Background()
	r := newReplicas(t, nil)
	own := r.book(t, "land-nrw", nil)
	other := r.book(t, "stadt-x", nil)
	const rooms = 20
	errs := make([]error, 2*rooms)
	r.hammer(len(errs), func(i int, c *Catalog) {
		bk := own.ID
		if i%2 == 1 {
			bk = other.ID
		}
		errs[i] = c.BindMeetingRoom(ctx, bk, fmt.Sprintf("!room%d:x", i/2), "", "@org:x")
	})
	for n := range rooms {
		room := fmt.Sprintf("!room%d:x", n)
		a, b := errs[2*n], errs[2*n+1]
		require.True(t, (a == nil) != (b == nil), "%s: exactly one binding succeeds; got %v and %v", room, a, b)
		winner, loser := own.ID, b
		if a != nil {
			winner, loser = other.ID, a
		}
		require.ErrorIs(t, loser, ErrState)
		bd, ok, err := r.b.st.binding(ctx, room)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, winner, bd.Booking, room)
	}
}

// TestReplicasStatusIndex: bookings of two organisations made at once on
// two replicas whose index draws coincide still get distinct status list
// indexes, and none is refused for it.
func TestReplicasStatusIndex(t *testing.T) {
	ctx := context.Background()
	r := newReplicas(t, nil)
	for _, c := range []*Catalog{r.a, r.b} {
		var next atomic.Int64
		c.pickIndex = func() (int, error) { return int(next.Add(1)), nil }
	}
	ids := make([]*Booking, 16)
	errs := make([]error, len(ids))
	r.hammer(len(ids), func(i int, c *Catalog) {
		org := "land-nrw"
		if i%2 == 1 {
			org = "stadt-x"
		}
		ids[i], errs[i] = c.Book(ctx, Principal{Subject: "https://idp|" + org, Org: org}, org, r.request(nil))
	})
	seen := map[int]string{}
	for i, b := range ids {
		require.NoError(t, errs[i])
		require.NotContains(t, seen, b.StatusIndex, "bookings %s and %s share a status list index", seen[b.StatusIndex], b.ID)
		seen[b.StatusIndex] = b.ID
	}
}

// TestReplicasAdmissionCaps: joins arriving at once on two replicas hold
// the booking's caps: concurrent sessions, the sessions quota, and the
// participants of a meeting (admitted ones not connected yet included).
func TestReplicasAdmissionCaps(t *testing.T) {
	for name, tc := range map[string]struct {
		tier     string
		sessions int // a sessions booking's quota; 0: dateRange
		// sameRoom: every join is to one LiveKit room (else one room each).
		sameRoom bool
		joins    int
		want     int
		usage    func(Usage) int
	}{
		"concurrent sessions": {tier: "public-50-bronze", joins: 16, want: 1, usage: func(u Usage) int { return u.Sessions }},
		"sessions quota":      {tier: "public-20-gold", sessions: 2, joins: 16, want: 2, usage: func(u Usage) int { return u.Sessions }},
		"participants":        {tier: "public-20-gold", sameRoom: true, joins: 30, want: 20, usage: func(u Usage) int { return u.PeakParticipants }},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			r := newReplicas(t, nil)
			b := r.book(t, "land-nrw", func(req *BookingRequest) {
				req.Tier, req.Rooms = tc.tier, []string{"!meeting:x"}
				if tc.sessions > 0 {
					req.Unit, req.Sessions = UnitSessions, tc.sessions
				}
			})
			var admitted atomic.Int64
			r.hammer(tc.joins, func(i int, c *Catalog) {
				lk := fmt.Sprintf("lk-%d", i)
				if tc.sameRoom {
					lk = "lk-meeting"
				}
				a, err := c.Admit(ctx, AdmitRequest{RoomID: "!meeting:x", UserID: fmt.Sprintf("@u%d:x", i), LiveKitRoom: lk, Identity: fmt.Sprintf("u%d", i), Level: credentials.LevelPublic})
				if err != nil {
					t.Errorf("join %d: %v", i, err)
					return
				}
				if a.Refused == "" {
					admitted.Add(1)
				}
			})
			require.EqualValues(t, tc.want, admitted.Load(), "joins admitted")
			got, err := r.b.Get(ctx, b.ID)
			require.NoError(t, err)
			require.Equal(t, tc.want, tc.usage(got.Usage), "usage recorded")
		})
	}
}

// TestReplicasTransitions: a booking's transitions and admissions on two
// replicas at once do not undo each other. A cancel that succeeded stays:
// neither a confirm that read the booking before it nor an admission that
// recorded usage meanwhile writes it back to active; the stored state and
// the status bit agree.
func TestReplicasTransitions(t *testing.T) {
	ctx := context.Background()
	r := newReplicas(t, nil)
	provider := Principal{Subject: "https://idp|bob", Roles: []string{"provider"}}
	const n = 12
	var vs, pub []*Booking
	for i := range n {
		vs = append(vs, r.book(t, "land-nrw", func(req *BookingRequest) { req.Tier = "vs-nfd-20-gold" }))
		pub = append(pub, r.book(t, "stadt-x", func(req *BookingRequest) { req.Rooms = []string{fmt.Sprintf("!pub%d:x", i)} }))
	}
	cancelled := make([]error, 2*n)
	// Per booking: one cancel on replica b, and on replica a a confirm (VS-NfD)
	// or four joins that each open a session (public, gold: 4 concurrent).
	r.hammer(2*n*10, func(i int, c *Catalog) {
		k, j := i/10, (i%10)/2 // booking k of vs+pub, its j-th call on this replica
		var b *Booking
		if k < n {
			b = vs[k]
		} else {
			b = pub[k-n]
		}
		switch {
		case c == r.b && j == 0:
			_, cancelled[k] = c.Act(ctx, orgAdmin, b.ID, "cancel", "")
		case c == r.b:
		case k < n && j == 0:
			_, _ = c.Act(ctx, provider, b.ID, "confirm", "")
		case k >= n && j < 4:
			_, err := c.Admit(ctx, AdmitRequest{RoomID: b.Rooms[0], UserID: "@u:x", LiveKitRoom: fmt.Sprintf("lk-%d-%d", k, j), Identity: fmt.Sprintf("u%d", j), Level: credentials.LevelPublic})
			if err != nil {
				t.Errorf("admit: %v", err)
			}
		}
	})
	for k, b := range append(vs, pub...) {
		require.NoError(t, cancelled[k], b.ID)
		var state string
		var revoked bool
		require.NoError(t, r.db.QueryRow(ctx, `SELECT state, revoked FROM catalog_booking WHERE id = $1`, b.ID).Scan(&state, &revoked))
		got, err := r.a.Get(ctx, b.ID)
		require.NoError(t, err)
		require.Equal(t, StateCancelled, got.State, "booking %d (%s): a cancel that succeeded was undone", k, b.ID)
		require.Equal(t, string(StateCancelled), state, b.ID)
		require.True(t, revoked, b.ID)
	}
}

// TestReplicasUsageSampledOnce: every node samples usage; samples of two
// replicas at once count a session's participant-minutes once, and a
// sample does not undo a cancel made meanwhile on the other replica.
func TestReplicasUsageSampledOnce(t *testing.T) {
	ctx := context.Background()
	r := newReplicas(t, nil)
	b := r.book(t, "land-nrw", func(req *BookingRequest) { req.Rooms = []string{"!m:x"} })
	for i := range 3 {
		a, err := r.a.Admit(ctx, AdmitRequest{RoomID: "!m:x", UserID: "@u:x", LiveKitRoom: "lk-m", Identity: fmt.Sprintf("u%d", i), Level: credentials.LevelPublic})
		require.NoError(t, err)
		require.Empty(t, a.Refused)
	}
	r.dir.set("lk-m", "u0", "u1", "u2")
	r.clock.add(2 * time.Minute)
	now := r.clock.now()
	r.hammer(8, func(_ int, c *Catalog) { c.sample(ctx, now) })
	got, err := r.b.Get(ctx, b.ID)
	require.NoError(t, err)
	require.InDelta(t, 6.0, got.Usage.ParticipantMinutes, 0.001, "three participants for two minutes, however many samples")
	require.Equal(t, 3, got.Usage.PeakParticipants)

	r.clock.add(time.Minute)
	now = r.clock.now()
	var cancel error
	r.hammer(8, func(i int, c *Catalog) {
		if i == 1 {
			_, cancel = c.Act(ctx, orgAdmin, b.ID, "cancel", "")
			return
		}
		c.sample(ctx, now)
	})
	require.NoError(t, cancel)
	got, err = r.a.Get(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, StateCancelled, got.State, "a sample wrote the booking back")
}
