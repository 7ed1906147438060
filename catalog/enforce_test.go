package catalog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/credentials"
)

func (e *env) admit(t *testing.T, room, lk, identity string, level credentials.Level) Admission {
	t.Helper()
	a, err := e.c.Admit(context.Background(), AdmitRequest{RoomID: room, UserID: "@" + identity + ":x", LiveKitRoom: lk, Identity: identity, Level: level})
	require.NoError(t, err)
	return a
}

// TestAdmitParticipantCap: a 20-tier meeting refuses the 21st participant
// with the booking's reason, counting connected participants on any node
// (federated users too), admitted ones not yet connected, and the
// meeting's breakout rooms; a rejoin is no new participant.
func TestAdmitParticipantCap(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	b := e.book(t, "public-20-gold", func(r *BookingRequest) { r.Rooms = []string{"!main:x"} })
	require.NoError(t, e.c.BindRoom(ctx, orgAdmin, b.ID, "!breakout:x", "!main:x"))
	bound, err := e.c.ConfirmRoom(ctx, "!breakout:x", b.ID, "@roomadmin:x")
	require.NoError(t, err)
	require.True(t, bound)

	// 12 connected in the main room (some of them federated), 5 admitted
	// but not connected yet, 2 in a breakout room.
	var connected []string
	for i := range 12 {
		connected = append(connected, fmt.Sprintf("@u%d:remote.example|DEV", i))
	}
	e.dir.set("lk-main", connected...)
	for i := range 5 {
		a := e.admit(t, "!main:x", "lk-main", fmt.Sprintf("new%d", i), credentials.LevelPublic)
		require.Empty(t, a.Refused)
		require.EqualValues(t, 20, a.MaxParticipants)
		require.Equal(t, []cluster.SiteID{"de-ber-1", "de-bon-1"}, a.Sites)
		require.Equal(t, b.ValidUntil, a.NotAfter)
	}
	require.Empty(t, e.admit(t, "!breakout:x", "lk-breakout", "br0", credentials.LevelPublic).Refused)
	e.dir.set("lk-breakout", "br0", "br1")
	// 12 + 5 + 2 = 19: the 20th gets in, the 21st not.
	require.Empty(t, e.admit(t, "!main:x", "lk-main", "twentieth", credentials.LevelPublic).Refused)
	a := e.admit(t, "!main:x", "lk-main", "twentyfirst", credentials.LevelPublic)
	require.Equal(t, "The booking "+b.ID+" (public, up to 20 participants) allows at most 20 participants in this meeting; 20 are already in the call.", a.Refused)
	a = e.admit(t, "!breakout:x", "lk-breakout", "twentyfirst", credentials.LevelPublic)
	require.Contains(t, a.Refused, "allows at most 20 participants", "breakouts count with their meeting")
	// Someone already in the call reconnects.
	require.Empty(t, e.admit(t, "!main:x", "lk-main", connected[3], credentials.LevelPublic).Refused)

	// Admitted participants who never connect stop counting after the window.
	e.clock.add(e.c.cfg.PendingWindow)
	require.Empty(t, e.admit(t, "!main:x", "lk-main", "late", credentials.LevelPublic).Refused)

	got, err := e.c.Get(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, 20, got.Usage.PeakParticipants)
	require.Equal(t, 1, got.Usage.Sessions, "the breakout; the main room's 12 were admitted elsewhere, its session was running")
}

func TestAdmitSessions(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	// bronze: one concurrent session; a quota of 2 sessions.
	b := e.book(t, "public-50-bronze", func(r *BookingRequest) {
		r.Rooms = []string{"!a:x", "!b:x"}
		r.Unit, r.Sessions = UnitSessions, 2
	})
	require.Empty(t, e.admit(t, "!a:x", "lk-a", "u1", credentials.LevelPublic).Refused)
	e.dir.set("lk-a", "u1")
	a := e.admit(t, "!b:x", "lk-b", "u2", credentials.LevelPublic)
	require.Equal(t, "The booking "+b.ID+" (public, up to 50 participants) allows 1 concurrent session(s); 1 are running now.", a.Refused)
	require.Empty(t, e.admit(t, "!a:x", "lk-a", "u3", credentials.LevelPublic).Refused, "joining the open session")

	// Room a empties; after the idle time its session closes.
	e.dir.set("lk-a")
	e.clock.add(e.c.cfg.PendingWindow)
	e.c.sample(ctx, e.clock.now())
	e.clock.add(e.c.cfg.SessionIdle)
	e.c.sample(ctx, e.clock.now())
	require.Empty(t, e.admit(t, "!b:x", "lk-b", "u2", credentials.LevelPublic).Refused, "second session of the quota")
	e.dir.set("lk-b", "u2")
	e.clock.add(2 * time.Minute)
	e.c.sample(ctx, e.clock.now())
	e.dir.set("lk-b")
	e.clock.add(e.c.cfg.PendingWindow + e.c.cfg.SessionIdle + time.Minute)
	e.c.sample(ctx, e.clock.now())
	a = e.admit(t, "!a:x", "lk-a", "u1", credentials.LevelPublic)
	require.Equal(t, "The booking "+b.ID+" (public, up to 50 participants) has used all of its 2 sessions.", a.Refused)

	got, err := e.c.Get(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, 2, got.Usage.Sessions)
	require.Equal(t, 1, got.Usage.PeakSessions)
	require.InDelta(t, 2.0, got.Usage.ParticipantMinutes, 0.001, "one participant for two minutes")
}

func TestAdmitStateLevelSite(t *testing.T) {
	ctx := context.Background()
	provider := Principal{Subject: "https://idp|bob", Roles: []string{"provider"}}
	e := newEnv(t, nil)

	// Unbound rooms are not the catalog's business, unless bookings are required.
	require.Empty(t, e.admit(t, "!free:x", "lk-free", "u", credentials.LevelPublic).Refused)
	e.c.cfg.RequireBooking = true
	require.Contains(t, e.admit(t, "!free:x", "lk-free", "u", credentials.LevelPublic).Refused, "not bound to a service booking")

	vs := e.book(t, "vs-nfd-20-gold", func(r *BookingRequest) { r.Rooms = []string{"!vs:x"} })
	require.Equal(t, "The booking "+vs.ID+" (VS-NfD, up to 20 participants) awaits the provider's confirmation; calls can start once it is confirmed.",
		e.admit(t, "!vs:x", "lk-vs", "u", credentials.LevelVSNfD).Refused)
	_, err := e.c.Act(ctx, provider, vs.ID, "confirm", "")
	require.NoError(t, err)
	require.Empty(t, e.admit(t, "!vs:x", "lk-vs", "u", credentials.LevelVSNfD).Refused)

	pub := e.book(t, "public-20-gold", func(r *BookingRequest) { r.Rooms = []string{"!pub:x"} })
	require.Equal(t, "This room is classified KRITIS, but the booking "+pub.ID+" (public, up to 20 participants) covers public rooms only.",
		e.admit(t, "!pub:x", "lk-pub", "u", credentials.LevelKritis).Refused)
	require.Empty(t, e.admit(t, "!pub:x", "lk-pub", "u", credentials.LevelPublic).Refused)

	_, err = e.c.Act(ctx, provider, pub.ID, "revoke", "")
	require.NoError(t, err)
	require.Contains(t, e.admit(t, "!pub:x", "lk-pub", "u", credentials.LevelPublic).Refused, "was revoked by the provider")

	later := e.book(t, "public-20-gold", func(r *BookingRequest) {
		r.Rooms = []string{"!later:x"}
		r.ValidFrom, r.ValidUntil = e.clock.now().Add(time.Hour), e.clock.now().Add(2*time.Hour)
	})
	require.Contains(t, e.admit(t, "!later:x", "lk-later", "u", credentials.LevelPublic).Refused, "starts only at")
	e.clock.add(90 * time.Minute)
	require.Empty(t, e.admit(t, "!later:x", "lk-later", "u", credentials.LevelPublic).Refused)
	e.clock.add(time.Hour)
	require.Contains(t, e.admit(t, "!later:x", "lk-later", "u", credentials.LevelPublic).Refused, "has expired")
	got, err := e.c.Get(ctx, later.ID)
	require.NoError(t, err)
	require.Equal(t, StateExpired, got.State)

	// Without cluster placement, the deployment's own site must be booked.
	e2 := newEnv(t, nil)
	e2.c.localSite = "de-bon-1"
	k := e2.book(t, "kritis-20-gold", func(r *BookingRequest) { r.Rooms = []string{"!k:x"} })
	require.Equal(t, "The booking "+k.ID+" (KRITIS, up to 20 participants) is for the sites de-ber-1 only; this deployment runs at de-bon-1.",
		e2.admit(t, "!k:x", "lk-k", "u", credentials.LevelKritis).Refused)
}

// TestUnconfirmedBinding: an organisation's admin binding a room does not
// restrict it until the room accepts; another organisation's unconfirmed
// claim does not block the room's own organisation.
func TestUnconfirmedBinding(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	mallory := Principal{Subject: "idp|mallory", Org: "stadt-x"}
	now := e.clock.now()
	// Mallory claims a room she does not control with a tiny, ended-soon booking.
	mb, err := e.c.Book(ctx, mallory, "stadt-x", BookingRequest{Tier: "public-20-bronze", Unit: UnitDateRange,
		ValidFrom: now, ValidUntil: now.Add(time.Hour), Rooms: []string{"!victim:x"}, AcceptTerms: testTerms})
	require.NoError(t, err)
	require.Empty(t, e.admit(t, "!victim:x", "lk-v", "u", credentials.LevelPublic).Refused, "the claim does not count")
	e.c.cfg.RequireBooking = true
	require.Equal(t, "This room's binding to the booking "+mb.ID+" awaits a room admin's acceptance: send \"!conf bookings accept "+mb.ID+"\" in the room.",
		e.admit(t, "!victim:x", "lk-v", "u", credentials.LevelPublic).Refused)
	text, err := e.c.RoomBookings(ctx, "!victim:x")
	require.NoError(t, err)
	require.Contains(t, text, "does not count until a room admin sends")
	// The room's own organisation binds it anyway, and the room accepts.
	own := e.book(t, "public-20-gold", func(r *BookingRequest) { r.Rooms = []string{"!victim:x"} })
	a := e.admit(t, "!victim:x", "lk-v", "u", credentials.LevelPublic)
	require.Empty(t, a.Refused)
	require.Equal(t, own.ID, a.Booking)
	// Confirming another booking than the bound one fails.
	bound, err := e.c.ConfirmRoom(ctx, "!victim:x", mb.ID, "@roomadmin:x")
	require.NoError(t, err)
	require.False(t, bound)
}

// TestAdmitJoinsRunningSession: a room whose participants another node
// admitted is a running session; joining it here opens none (no quota, no
// concurrency refusal).
func TestAdmitJoinsRunningSession(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	b := e.book(t, "public-50-bronze", func(r *BookingRequest) {
		r.Rooms = []string{"!a:x"}
		r.Unit, r.Sessions = UnitSessions, 1
	})
	e.dir.set("lk-a", "elsewhere1", "elsewhere2")
	require.Empty(t, e.admit(t, "!a:x", "lk-a", "u1", credentials.LevelPublic).Refused)
	got, err := e.c.Get(ctx, b.ID)
	require.NoError(t, err)
	require.Zero(t, got.Usage.Sessions, "the other node opened it")
	require.Equal(t, 3, got.Usage.PeakParticipants)
}
