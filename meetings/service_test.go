package meetings

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-ical"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/credentials"
)

const (
	alice = "@alice:hs.test"
	bob   = "@bob:hs.test"
	carol = "@carol:other.test"
)

func decodeICS(t *testing.T, data string) (*ical.Calendar, *ical.Event) {
	t.Helper()
	cal, err := ical.NewDecoder(strings.NewReader(data)).Decode()
	require.NoError(t, err, data)
	ev := cal.Events()
	require.Len(t, ev, 1)
	return cal, &ev[0]
}

func prop(t *testing.T, c *ical.Component, name string) string {
	t.Helper()
	p := c.Props.Get(name)
	if p == nil {
		return ""
	}
	return p.Value
}

func TestCreateByCommand(t *testing.T) {
	env := newTestService(t)
	bot := env.svc.Bot("!conf")
	ctx := context.Background()
	reply, _ := bot.HandleCommand(ctx, "!dm-alice", alice, `create Weekly coordination start="2026-03-23 10:00" duration=1h repeat=weekly count=10 except=2026-03-30 @bob:hs.test invite=@carol:other.test`)
	require.Contains(t, reply, `✅ Scheduled "Weekly coordination"`)
	require.Contains(t, reply, "Mon 23 Mar 2026, 10:00–11:00 (Europe/Berlin); repeats every week, 10 times; except 30 Mar 2026")
	require.Contains(t, reply, "Mon 6 Apr 10:00 CEST", "confirmation in the organiser's zone")
	require.Contains(t, reply, "Invited (2): @bob:hs.test, @carol:other.test")

	ms, err := env.svc.List(ctx, alice)
	require.NoError(t, err)
	require.Len(t, ms, 1)
	m := ms[0]
	room := env.mx.rooms[m.RoomID]
	require.Equal(t, "Weekly coordination", room.Name)
	pl := room.PowerLevels
	require.Equal(t, 0, pl["events"].(map[string]any)["org.matrix.msc3401.call.member"])
	require.Equal(t, 100, pl["users"].(map[string]any)[alice])
	require.Equal(t, 100, pl["events"].(map[string]any)[MetadataEventType])
	pol := env.mx.state[m.RoomID][credentials.AccessEventType].(credentials.AccessPolicy)
	require.Equal(t, credentials.LevelPublic, pol.Level)
	md := env.mx.state[m.RoomID][MetadataEventType].(map[string]any)
	require.Equal(t, alice, md["creator"])
	entry := md["calendar"].([]any)[0].(map[string]any)
	require.Equal(t, dateTimeValue{"Europe/Berlin", "20260323T100000"}, entry["dtstart"])
	require.Equal(t, dateTimeValue{"Europe/Berlin", "20260323T110000"}, entry["dtend"])
	require.Equal(t, "FREQ=WEEKLY;COUNT=10", entry["rrule"])
	require.Equal(t, []dateTimeValue{{"Europe/Berlin", "20260330T100000"}}, entry["exdate"])
	require.Contains(t, env.mx.invites[m.RoomID][bob], "📅 Weekly coordination — Mon 23 Mar 2026, 10:00–11:00 (Europe/Berlin); repeats every week, 10 times; except 30 Mar 2026 · invited by @alice:hs.test")

	for _, u := range []string{bob, carol} {
		files := env.mx.files(u)
		require.Len(t, files, 1, u)
		cal, ev := decodeICS(t, files[0])
		require.Equal(t, "REQUEST", prop(t, cal.Component, ical.PropMethod))
		require.Equal(t, m.UID, prop(t, ev.Component, ical.PropUID))
		require.Equal(t, "0", prop(t, ev.Component, ical.PropSequence))
		require.Equal(t, "Europe/Berlin", ev.Props.Get(ical.PropDateTimeStart).Params.Get(ical.PropTimezoneID))
		require.Equal(t, "https://matrix.to/#/"+m.RoomID+"?via=hs.test", prop(t, ev.Component, ical.PropLocation))
		require.Equal(t, "https://matrix.to/#/"+m.RoomID+"?via=hs.test", prop(t, ev.Component, ical.PropURL))
		set, err := ev.RecurrenceSet(time.UTC)
		require.NoError(t, err)
		all := set.All()
		require.Len(t, all, 9)
		require.Equal(t, utc("2026-03-23 09:00"), all[0].UTC())
		require.Equal(t, utc("2026-04-06 08:00"), all[1].UTC(), "30 March is excluded, CEST after")
		// Every TZID has its VTIMEZONE.
		var zones []string
		for _, c := range cal.Children {
			if c.Name == ical.CompTimezone {
				zones = append(zones, prop(t, c, ical.PropTimezoneID))
			}
		}
		require.Equal(t, []string{"Europe/Berlin"}, zones)
	}
	require.Empty(t, env.mx.files(alice), "the organiser gets no invitation")
}

func TestUpdateSequenceAndFiles(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("Lage"), Start: ptr("2026-03-23 10:00"), RRule: ptr("FREQ=WEEKLY;COUNT=5"), Invite: []string{bob}})
	require.NoError(t, err)
	id := res.Meeting.ID

	// The same values again: no change, no file, no SEQUENCE.
	res, err = env.svc.Update(ctx, alice, id, &Spec{Title: ptr("Lage"), Start: ptr("2026-03-23T10:00")})
	require.NoError(t, err)
	require.True(t, res.Unchanged)
	require.Len(t, env.mx.files(bob), 1)

	// A new invitee: they get the current version, SEQUENCE stays.
	res, err = env.svc.Update(ctx, alice, id, &Spec{Invite: []string{"@dave:hs.test"}})
	require.NoError(t, err)
	require.Equal(t, 0, res.Meeting.Sequence)
	require.Len(t, env.mx.files(bob), 1)
	require.Len(t, env.mx.files("@dave:hs.test"), 1)
	require.Contains(t, env.mx.invites[res.Meeting.RoomID], "@dave:hs.test")

	// A real change: SEQUENCE 1, everyone gets a REQUEST.
	res, err = env.svc.Update(ctx, alice, id, &Spec{Start: ptr("2026-03-23 11:00")})
	require.NoError(t, err)
	require.Equal(t, 1, res.Meeting.Sequence)
	files := env.mx.files(bob)
	require.Len(t, files, 2)
	cal, ev := decodeICS(t, files[1])
	require.Equal(t, "REQUEST", prop(t, cal.Component, ical.PropMethod))
	require.Equal(t, "1", prop(t, ev.Component, ical.PropSequence))
	require.Equal(t, "20260323T110000", prop(t, ev.Component, ical.PropDateTimeStart))

	// Removing someone: a CANCEL for them only.
	res, err = env.svc.Update(ctx, alice, id, &Spec{Uninvite: []string{"@dave:hs.test"}})
	require.NoError(t, err)
	require.Equal(t, 1, res.Meeting.Sequence)
	df := env.mx.files("@dave:hs.test")
	require.Len(t, df, 3, "invitation, the change, the cancellation")
	cal, _ = decodeICS(t, df[2])
	require.Equal(t, "CANCEL", prop(t, cal.Component, ical.PropMethod))
	require.Len(t, env.mx.files(bob), 2)

	// Cancelling one occurrence: CANCEL with RECURRENCE-ID, SEQUENCE 2.
	res, err = env.svc.Cancel(ctx, alice, id, "2026-03-30")
	require.NoError(t, err)
	require.Equal(t, 2, res.Meeting.Sequence)
	files = env.mx.files(bob)
	cal, ev = decodeICS(t, files[2])
	require.Equal(t, "CANCEL", prop(t, cal.Component, ical.PropMethod))
	require.Equal(t, "20260330T110000", prop(t, ev.Component, ical.PropRecurrenceID))
	require.Equal(t, "2", prop(t, ev.Component, ical.PropSequence))
	_, err = env.svc.Cancel(ctx, alice, id, "2026-03-30")
	require.ErrorContains(t, err, "already cancelled")

	// Cancelling the series: CANCEL without RECURRENCE-ID, SEQUENCE 3.
	res, err = env.svc.Cancel(ctx, alice, id, "")
	require.NoError(t, err)
	require.True(t, res.Meeting.Cancelled)
	cal, ev = decodeICS(t, env.mx.files(bob)[3])
	require.Equal(t, "CANCEL", prop(t, cal.Component, ical.PropMethod))
	require.Equal(t, "", prop(t, ev.Component, ical.PropRecurrenceID))
	require.Equal(t, "3", prop(t, ev.Component, ical.PropSequence))
	require.Equal(t, "CANCELLED", prop(t, ev.Component, ical.PropStatus))
	require.Equal(t, res.Meeting.UID, prop(t, ev.Component, ical.PropUID), "the UID never changes")
}

// Refusals name the wrong part and leave nothing behind: no room, no
// invite, no file, no stored meeting.
func TestRefusalsCreateNothing(t *testing.T) {
	many := make([]string, 10000)
	for i := range many {
		many[i] = fmt.Sprintf("@u%d:hs.test", i)
	}
	for _, tc := range []struct {
		name string
		spec *Spec
		kind error
		want string
	}{
		{"10000 invitees", &Spec{Title: ptr("x"), Start: ptr("2026-03-23 10:00"), Participants: &many}, ErrPolicy, "participants: 10000 invitees; a meeting may have at most 1000"},
		{"kritis with a foreign invitee", &Spec{Title: ptr("x"), Start: ptr("2026-03-23 10:00"), Level: ptr("kritis"), Invite: []string{bob, carol}}, ErrPolicy,
			"participants: @carol:other.test is on other.test, which level kritis of this meeting does not allow (allowed: hs.test)"},
		{"more than the policy's max", &Spec{Title: ptr("x"), Start: ptr("2026-03-23 10:00"), MaxParticipants: ptr(2), Invite: []string{bob, carol}}, ErrPolicy,
			"participants: 3 people (with the organiser) but the policy allows at most 2"},
		{"bad user ID", &Spec{Title: ptr("x"), Start: ptr("2026-03-23 10:00"), Invite: []string{"bob"}}, ErrInvalid, `participants: "bob" is not a Matrix user ID`},
		{"unknown level", &Spec{Title: ptr("x"), Start: ptr("2026-03-23 10:00"), Level: ptr("secret")}, ErrInvalid, `level: "secret" is not a level`},
		{"endless rule", &Spec{Title: ptr("x"), Start: ptr("2026-03-23 10:00"), RRule: ptr("FREQ=MINUTELY")}, ErrInvalid, "rrule: FREQ=MINUTELY repeats more than daily"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestService(t, func(o *Options) {
				o.Config.Levels = map[credentials.Level]LevelDefaults{credentials.LevelKritis: {RequiredCredentials: []credentials.CredentialRequirement{{Type: "EmployeeCredential"}}}}
			})
			_, err := env.svc.Create(context.Background(), alice, tc.spec)
			require.ErrorIs(t, err, tc.kind)
			require.ErrorContains(t, err, tc.want)
			require.Zero(t, env.mx.roomCount())
			require.Empty(t, env.mx.dms)
			ms, err := env.svc.List(context.Background(), alice)
			require.NoError(t, err)
			require.Empty(t, ms)
		})
	}
	t.Run("the homeserver refuses the room", func(t *testing.T) {
		env := newTestService(t)
		env.mx.failCreate = true
		_, err := env.svc.Create(context.Background(), alice, &Spec{Title: ptr("x"), Start: ptr("2026-03-23 10:00"), Invite: []string{bob}})
		require.Error(t, err)
		require.Empty(t, env.mx.dms, "no invitation went out")
		ms, _ := env.svc.List(context.Background(), alice)
		require.Empty(t, ms)
	})
}

// Only the organiser changes a meeting; others do not even learn that a
// meeting they are not in exists.
func TestOnlyTheOrganiserChanges(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("Lage"), Start: ptr("2026-03-23 10:00"), Invite: []string{bob}})
	require.NoError(t, err)
	id := res.Meeting.ID
	_, err = env.svc.Update(ctx, bob, id, &Spec{Title: ptr("Hijacked")})
	require.ErrorIs(t, err, ErrForbidden)
	require.ErrorContains(t, err, "only the organiser @alice:hs.test may change meeting "+id)
	_, err = env.svc.Cancel(ctx, bob, id, "")
	require.ErrorIs(t, err, ErrForbidden)
	_, err = env.svc.Update(ctx, bob, res.Meeting.RoomID, &Spec{Invite: []string{"@mallory:hs.test"}})
	require.ErrorIs(t, err, ErrForbidden)
	m, err := env.svc.Get(ctx, bob, id)
	require.NoError(t, err, "a participant may look")
	require.Equal(t, "Lage", m.Title)
	require.Equal(t, 0, m.Sequence)
	_, err = env.svc.Get(ctx, "@mallory:hs.test", id)
	require.ErrorIs(t, err, ErrNotFound)
	// Changing it is answered as for a meeting that does not exist: an
	// outsider learns neither that it exists nor who organises it.
	for _, key := range []string{id, res.Meeting.RoomID} {
		_, err = env.svc.Update(ctx, "@mallory:hs.test", key, &Spec{Title: ptr("Hijacked")})
		require.ErrorIs(t, err, ErrNotFound, key)
		require.NotContains(t, err.Error(), alice)
		_, err = env.svc.Cancel(ctx, "@mallory:hs.test", key, "")
		require.ErrorIs(t, err, ErrNotFound, key)
	}
	_, err = env.svc.Update(ctx, "@mallory:hs.test", "nosuchmeeting", &Spec{Title: ptr("x")})
	require.ErrorIs(t, err, ErrNotFound)

	reply, _ := env.svc.Bot("!conf").HandleCommand(ctx, m.RoomID, bob, "cancel")
	require.Contains(t, reply, "❌ I did not cancel anything — forbidden: only the organiser")
}

type refuseBookings struct {
	got   BookingRequest
	bound []string // booking ref, room, meeting, organiser
}

func (r *refuseBookings) CheckMeeting(_ context.Context, req BookingRequest) (string, error) {
	r.got = req
	if req.BookingRef == "" {
		return "", nil
	}
	if req.BookingRef != "b-1" {
		return "", errors.New("booking " + req.BookingRef + " does not list you as an organiser")
	}
	if req.Participants > 2 {
		return "", errors.New("booking b-1 covers at most 2 participants")
	}
	return "b-1", nil
}

func (r *refuseBookings) BindRoom(_ context.Context, ref, room, meeting, organiser string) error {
	r.bound = []string{ref, room, meeting, organiser}
	return nil
}

func TestBookingHook(t *testing.T) {
	b := &refuseBookings{}
	env := newTestService(t, func(o *Options) { o.Bookings = b })
	ctx := context.Background()
	// Without a booking named, the hook is asked and the meeting is unbound.
	res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("free"), Start: ptr("2026-03-23 10:00")})
	require.NoError(t, err)
	require.Empty(t, res.Meeting.BookingRef)
	require.Nil(t, b.bound)
	// Someone else's booking is refused and nothing is created.
	rooms := len(env.mx.state)
	_, err = env.svc.Create(ctx, alice, &Spec{Title: ptr("x"), Start: ptr("2026-03-23 10:00"), Booking: ptr("b-2")})
	require.ErrorIs(t, err, ErrPolicy)
	require.ErrorContains(t, err, "booking: booking b-2 does not list you as an organiser")
	require.Len(t, env.mx.state, rooms)

	res, err = env.svc.Create(ctx, alice, &Spec{Title: ptr("x"), Start: ptr("2026-03-23 10:00"), RRule: ptr("FREQ=DAILY;COUNT=3"), Invite: []string{bob}, Booking: ptr("b-1")})
	require.NoError(t, err)
	require.Equal(t, "b-1", res.Meeting.BookingRef)
	require.Len(t, b.got.Occurrences, 3)
	require.Equal(t, []string{"b-1", res.Meeting.RoomID, res.Meeting.ID, alice}, b.bound, "the new room is bound to the booking")
	_, err = env.svc.Update(ctx, alice, res.Meeting.ID, &Spec{Booking: ptr("b-3")})
	require.ErrorIs(t, err, ErrInvalid)
	md := env.mx.state[res.Meeting.RoomID][MetadataEventType].(map[string]any)
	require.Equal(t, "b-1", md["external_data"].(map[string]any)["de.gxconf.booking"])
	_, err = env.svc.Update(ctx, alice, res.Meeting.ID, &Spec{Invite: []string{"@dave:hs.test"}})
	require.ErrorIs(t, err, ErrPolicy)
	require.ErrorContains(t, err, "booking: booking b-1 covers at most 2 participants")
}

func TestFeed(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	_, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("Mine"), Start: ptr("2026-03-23 10:00"), Invite: []string{bob}})
	require.NoError(t, err)
	_, err = env.svc.Create(ctx, "@eve:hs.test", &Spec{Title: ptr("Not bobs"), Start: ptr("2026-03-24 10:00")})
	require.NoError(t, err)
	u, err := env.svc.FeedURL(ctx, bob)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(u, "https://conf.hs.test/meetings/cal/"), u)
	token := strings.TrimSuffix(strings.TrimPrefix(u, "https://conf.hs.test/meetings/cal/"), ".ics")
	body, ok, err := env.svc.Feed(ctx, token)
	require.NoError(t, err)
	require.True(t, ok)
	cal, err := ical.NewDecoder(bytes.NewReader(body)).Decode()
	require.NoError(t, err)
	require.Len(t, cal.Events(), 1)
	require.Equal(t, "Mine", prop(t, cal.Events()[0].Component, ical.PropSummary))

	wrong := token[:len(token)-1] + map[bool]string{true: "b", false: "a"}[strings.HasSuffix(token, "a")]
	_, ok, err = env.svc.Feed(ctx, wrong)
	require.NoError(t, err)
	require.False(t, ok, "a wrong token is refused")
	// A reset makes the old address stop working.
	_, err = env.svc.FeedURL(ctx, bob)
	require.NoError(t, err)
	_, ok, _ = env.svc.Feed(ctx, token)
	require.False(t, ok)
	// An empty feed is still a calendar.
	u, err = env.svc.FeedURL(ctx, "@nobody:hs.test")
	require.NoError(t, err)
	body, ok, err = env.svc.Feed(ctx, strings.TrimSuffix(u[strings.LastIndex(u, "/")+1:], ".ics"))
	require.NoError(t, err)
	require.True(t, ok)
	_, err = ical.NewDecoder(bytes.NewReader(body)).Decode()
	require.NoError(t, err)
}

// A user of another homeserver cannot make the bot invite people in its
// name unless the operator allows that homeserver.
func TestOrganisersFromOtherHomeservers(t *testing.T) {
	env := newTestService(t)
	_, err := env.svc.Create(context.Background(), carol, &Spec{Title: ptr("x"), Start: ptr("2026-03-23 10:00"), Invite: []string{bob}})
	require.ErrorIs(t, err, ErrForbidden)
	require.ErrorContains(t, err, "only users of hs.test may schedule meetings here")
	require.Zero(t, env.mx.roomCount())
	env = newTestService(t, func(o *Options) { o.Config.OrganiserHomeservers = []string{"hs.test", "other.test"} })
	_, err = env.svc.Create(context.Background(), carol, &Spec{Title: ptr("x"), Start: ptr("2026-03-23 10:00"), Invite: []string{bob}})
	require.NoError(t, err)
}

// Moving one occurrence is an override: SEQUENCE rises, the metadata gets a
// recurrenceId entry, the .ics a second VEVENT with RECURRENCE-ID, and the
// reminder follows the new time.
func TestMoveOneOccurrence(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	bot := env.svc.Bot("!conf")
	res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("Lage"), Start: ptr("2026-03-23 10:00"), RRule: ptr("FREQ=WEEKLY;COUNT=4"), Invite: []string{bob}})
	require.NoError(t, err)
	id := res.Meeting.ID
	reply, _ := bot.HandleCommand(ctx, "!dm", alice, `update `+id+` occurrence=2026-03-30 start="2026-03-31 15:00" duration=30m`)
	require.Contains(t, reply, "✅ Updated")
	require.Contains(t, reply, "30 Mar moved to Tue 31 Mar 15:00")
	m, err := env.svc.Get(ctx, alice, id)
	require.NoError(t, err)
	require.Equal(t, 1, m.Sequence)
	require.Equal(t, []Override{{RecurrenceID: "20260330T100000", Start: "20260331T150000", Duration: 30 * time.Minute}}, m.Schedule.Overrides)
	md := env.mx.state[m.RoomID][MetadataEventType].(map[string]any)
	cal := md["calendar"].([]any)
	require.Len(t, cal, 2)
	require.Equal(t, dateTimeValue{"Europe/Berlin", "20260330T100000"}, cal[1].(map[string]any)["recurrenceId"])
	files := env.mx.files(bob)
	require.Len(t, files, 2)
	c, err := ical.NewDecoder(strings.NewReader(files[1])).Decode()
	require.NoError(t, err)
	require.Len(t, c.Events(), 2)
	require.Equal(t, "20260330T100000", prop(t, c.Events()[1].Component, ical.PropRecurrenceID))
	require.Equal(t, "20260331T150000", prop(t, c.Events()[1].Component, ical.PropDateTimeStart))
	occ, err := m.Schedule.Occurrences(10)
	require.NoError(t, err)
	require.Equal(t, utc("2026-03-31 13:00"), occ[1].Start.UTC())
	require.Equal(t, utc("2026-03-31 13:30"), occ[1].End.UTC())

	_, err = env.svc.Update(ctx, alice, id, &Spec{Occurrence: ptr("2026-03-31"), Start: ptr("2026-03-31 16:00")})
	require.ErrorContains(t, err, "occurrence: the series has no occurrence on Tue 2026-03-31", "occurrences are named by their original date")
	_, err = env.svc.Update(ctx, alice, id, &Spec{Occurrence: ptr("2026-03-30"), Title: ptr("x"), RRule: ptr("FREQ=DAILY")})
	require.ErrorContains(t, err, "with occurrence= give only the new start")

	// Cancelling the moved occurrence drops the override.
	_, err = env.svc.Cancel(ctx, alice, id, "2026-03-30")
	require.NoError(t, err)
	m, _ = env.svc.Get(ctx, alice, id)
	require.Empty(t, m.Schedule.Overrides)
	occ, _ = m.Schedule.Occurrences(10)
	require.Len(t, occ, 3)
}

// Text from organisers cannot break out of the calendar file or the
// reminder's HTML.
func TestInjectionIsEscaped(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	_, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("x\r\nBEGIN:VEVENT"), Start: ptr("2026-03-23 10:00")})
	require.ErrorContains(t, err, "title: must be one line")
	res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr(`<img src=x onerror=alert(1)>`), Description: ptr("a\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:evil"),
		Start: ptr("2026-03-23 10:00"), Invite: []string{bob}})
	require.NoError(t, err)
	_, ev := decodeICS(t, env.mx.files(bob)[0]) // exactly one VEVENT
	require.Equal(t, res.Meeting.UID, prop(t, ev.Component, ical.PropUID))
	c := env.svc.reminderContent(res.Meeting, Occurrence{Start: utc("2026-03-23 09:00")}, utc("2026-03-23 08:50"))
	require.NotContains(t, c["formatted_body"], "<img")
	require.Contains(t, c["formatted_body"], "&lt;img src=x onerror=alert(1)&gt;")
}

// TestChangesRewritePendingInvites: a change of time or title rewrites the
// reason of every invite still pending (a new invite event, as Nordeck's
// bot sends), for the organiser too; people who joined, declined or left
// are not invited again; a change the reason does not show (the level) and
// a new invitee's fresh invite send no second event.
func TestChangesRewritePendingInvites(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	dave, erin := "@dave:hs.test", "@erin:hs.test"
	res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("Lage"), Start: ptr("2026-03-23 10:00"), RRule: ptr("FREQ=WEEKLY;COUNT=5"), Invite: []string{bob, carol, dave}})
	require.NoError(t, err)
	m := res.Meeting
	room := m.RoomID
	require.Equal(t, "📅 Lage — Mon 23 Mar 2026, 10:00–11:00 (Europe/Berlin); repeats every week, 5 times · your meeting", env.mx.invites[room][alice],
		"the organiser is invited to the invite-only room")
	env.mx.setMembership(room, alice, "join")
	env.mx.setMembership(room, carol, "join")
	env.mx.setMembership(room, dave, "leave") // declined

	_, err = env.svc.Update(ctx, alice, m.ID, &Spec{Start: ptr("2026-03-23 11:00"), Title: ptr("Lagebesprechung"), Invite: []string{erin}})
	require.NoError(t, err)
	want := "📅 Lagebesprechung — Mon 23 Mar 2026, 11:00–12:00 (Europe/Berlin); repeats every week, 5 times · invited by @alice:hs.test"
	require.Equal(t, want, env.mx.invites[room][bob], "bob has not joined: his invite shows the new time and title")
	require.Equal(t, want, env.mx.invites[room][erin])
	require.Equal(t, []string{room + " " + bob}, env.mx.refreshed, "joined (alice, carol), declined (dave) and new (erin) get no second invite")
	require.Contains(t, env.mx.invites[room][dave], "10:00–11:00", "a declined invite stays as it was")

	// Only the level changes: the reason is the same, nothing is resent.
	_, err = env.svc.Update(ctx, alice, m.ID, &Spec{MaxParticipants: ptr(10)})
	require.NoError(t, err)
	require.Len(t, env.mx.refreshed, 1)

	// One occurrence cancelled: the exception shows in the reason.
	_, err = env.svc.Cancel(ctx, alice, m.ID, "2026-03-30")
	require.NoError(t, err)
	require.Contains(t, env.mx.invites[room][bob], "except 30 Mar 2026")
	require.Len(t, env.mx.refreshed, 3, "bob and erin")

	// The whole meeting cancelled: pending invites say so.
	_, err = env.svc.Cancel(ctx, alice, m.ID, "")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(env.mx.invites[room][bob], "❌ Cancelled: Lagebesprechung — "), env.mx.invites[room][bob])
	require.Len(t, env.mx.refreshed, 5)
}

// What the bot posts about a meeting mentions nobody unless it names people
// (reminders): a title with "@room" must not notify the room with the bot's
// power.
func TestMeetingNoticesMentionNobody(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("@room urgent"), Start: ptr("2026-03-23 10:00"), Invite: []string{bob}})
	require.NoError(t, err)
	_, err = env.svc.Update(ctx, alice, res.Meeting.ID, &Spec{Title: ptr("@room still urgent")})
	require.NoError(t, err)
	_, err = env.svc.Cancel(ctx, alice, res.Meeting.ID, "")
	require.NoError(t, err)
	msgs := append(env.mx.roomMessages(res.Meeting.RoomID), env.mx.roomMessages("!dm-"+bob)...)
	require.NotEmpty(t, msgs)
	for _, m := range msgs {
		require.Equal(t, map[string]any{}, m["m.mentions"], "%v", m)
	}
}
