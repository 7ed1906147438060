package meetings

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-ical"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// feedOf renders user's feed and returns each event's SUMMARY and STATUS.
func feedOf(t *testing.T, env *testEnv, user string) map[string]string {
	t.Helper()
	ctx := context.Background()
	u, err := env.svc.FeedURL(ctx, user)
	require.NoError(t, err)
	body, ok, err := env.svc.Feed(ctx, strings.TrimSuffix(u[strings.LastIndex(u, "/")+1:], ".ics"))
	require.NoError(t, err)
	require.True(t, ok)
	cal, err := ical.NewDecoder(bytes.NewReader(body)).Decode()
	require.NoError(t, err)
	out := map[string]string{}
	for _, ev := range cal.Events() {
		out[prop(t, ev.Component, ical.PropSummary)] = prop(t, ev.Component, ical.PropStatus)
	}
	return out
}

func listed(t *testing.T, env *testEnv, user string) []string {
	t.Helper()
	ms, err := env.svc.List(context.Background(), user)
	require.NoError(t, err)
	var out []string
	for _, m := range ms {
		out = append(out, m.Title)
	}
	return out
}

func storedRows(t *testing.T, env *testEnv, table string) int {
	t.Helper()
	var n int
	require.NoError(t, env.db.QueryRow(context.Background(), "SELECT COUNT(*) FROM "+table).Scan(&n))
	return n
}

// A feed (and a list) shows at most max_feed_meetings meetings: the
// running and next ones first, then the recently ended, then the
// cancelled; meetings from many organisers cannot push that past the cap.
func TestFeedListsAtMostTheCap(t *testing.T) {
	env := newTestService(t, func(o *Options) { o.Config.MaxFeedMeetings = 4 })
	ctx := context.Background()
	mk := func(org, title, start, rule string) *Meeting {
		t.Helper()
		sp := &Spec{Title: ptr(title), Start: ptr(start), Invite: []string{bob}}
		if rule != "" {
			sp.RRule = ptr(rule)
		}
		res, err := env.svc.Create(ctx, org, sp)
		require.NoError(t, err)
		return res.Meeting
	}
	// Now is 2026-03-01 09:00 UTC.
	mk(alice, "ended", "2026-02-20 10:00", "")
	mk("@eve:hs.test", "far", "2026-09-01 10:00", "")
	mk("@mallory:hs.test", "next week", "2026-03-08 10:00", "")
	mk("@trent:hs.test", "running series", "2026-01-05 10:00", "FREQ=WEEKLY;COUNT=20")
	mk(alice, "later", "2026-05-01 10:00", "")
	c := mk("@eve:hs.test", "cancelled", "2026-03-02 10:00", "")
	_, err := env.svc.Cancel(ctx, "@eve:hs.test", c.ID, "")
	require.NoError(t, err)
	mk(bob, "tomorrow", "2026-03-02 10:00", "")

	want := []string{"running series", "tomorrow", "next week", "later"}
	require.Equal(t, want, listed(t, env, bob))
	feed := feedOf(t, env, bob)
	require.Len(t, feed, 4)
	for _, w := range want {
		require.Contains(t, feed, w)
	}

	env.svc.cfg.MaxFeedMeetings = 7
	require.Equal(t, append(want, "far", "ended"), listed(t, env, bob), "ended after the running, cancelled not listed")
	feed = feedOf(t, env, bob)
	require.Len(t, feed, 7)
	require.Equal(t, "CANCELLED", feed["cancelled"])
}

// Meetings past their retention leave the feeds and lists at once, and
// the purge (run by the reminder loop) deletes them with their rows; a
// series that has not ended stays.
func TestRetentionDropsAndPurges(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	// Now is 2026-03-01 09:00 UTC; "ended" ends 2026-03-02 09:00 UTC.
	ended, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("ended"), Start: ptr("2026-03-02 09:00"), Invite: []string{bob}})
	require.NoError(t, err)
	start, err := ended.Meeting.Schedule.StartTime()
	require.NoError(t, err)
	_, err = env.svc.store.claimReminder(ctx, ended.Meeting.ID, start, env.clock.Now())
	require.NoError(t, err)
	cancelled, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("cancelled"), Start: ptr("2026-04-01 10:00"), Invite: []string{bob}})
	require.NoError(t, err)
	_, err = env.svc.Create(ctx, alice, &Spec{Title: ptr("series"), Start: ptr("2026-03-02 10:00"), RRule: ptr("FREQ=DAILY"), Invite: []string{bob}})
	require.NoError(t, err)
	_, err = env.svc.Cancel(ctx, alice, cancelled.Meeting.ID, "")
	require.NoError(t, err)

	env.clock.Set(utc("2026-03-08 08:00")) // 7 days after the cancel, minus an hour
	require.Equal(t, map[string]string{"ended": "CONFIRMED", "cancelled": "CANCELLED", "series": "CONFIRMED"}, feedOf(t, env, bob))
	env.clock.Set(utc("2026-03-08 10:00"))
	require.Equal(t, map[string]string{"ended": "CONFIRMED", "series": "CONFIRMED"}, feedOf(t, env, bob))

	env.clock.Set(utc("2026-04-01 08:00")) // 30 days after "ended" ended, minus an hour
	require.Equal(t, []string{"series", "ended"}, listed(t, env, bob))
	env.clock.Set(utc("2026-04-01 10:00"))
	require.Equal(t, []string{"series"}, listed(t, env, bob))
	require.Equal(t, map[string]string{"series": "CONFIRMED"}, feedOf(t, env, bob))
	require.Equal(t, 3, storedRows(t, env, "meet_meeting"), "not purged yet")

	env.drainWaiting()
	runService(t, env.svc)
	env.awaitIdle(t)
	require.Equal(t, 1, storedRows(t, env, "meet_meeting"))
	require.Equal(t, 2, storedRows(t, env, "meet_participant"), "the series' organiser and invitee")
	var n int
	require.NoError(t, env.db.QueryRow(ctx, "SELECT COUNT(*) FROM meet_reminder WHERE meeting_id=$1", ended.Meeting.ID).Scan(&n))
	require.Zero(t, n)
	_, err = env.svc.Get(ctx, alice, ended.Meeting.ID)
	require.ErrorIs(t, err, ErrNotFound)
}

// The purge runs again every hour, not only at start.
func TestPurgeRunsPeriodically(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	_, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("ended"), Start: ptr("2026-03-02 09:00")})
	require.NoError(t, err)
	env.drainWaiting()
	runService(t, env.svc)
	env.awaitIdle(t)
	// It ends 2026-03-02 09:00 UTC, so it is past retention at 2026-04-01 09:00.
	for _, at := range []string{"2026-03-02 08:50", "2026-04-01 08:30", "2026-04-01 09:15"} {
		env.clock.Set(utc(at))
		env.awaitIdle(t)
		require.Equal(t, 1, storedRows(t, env, "meet_meeting"), at)
	}
	env.clock.Set(utc("2026-04-01 09:30")) // an hour after the last purge
	env.awaitIdle(t)
	require.Zero(t, storedRows(t, env, "meet_meeting"))
}

// A feed takes each meeting's span from the store and expands no
// schedule: a stored rule that cannot be expanded still renders.
func TestFeedExpandsNoSchedule(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("weekly"), Start: ptr("2026-03-02 10:00"), RRule: ptr("FREQ=WEEKLY;COUNT=1000")})
	require.NoError(t, err)
	_, err = env.db.Exec(ctx, "UPDATE meet_meeting SET data=REPLACE(data, 'FREQ=WEEKLY', 'FREQ=NEVER') WHERE id=$1", res.Meeting.ID)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"weekly": "CONFIRMED"}, feedOf(t, env, alice))
}

// The (cap+1)th active meeting of an organiser is refused, by the bot and
// the HTTP API, naming the limit; cancelled and ended ones do not count.
func TestOrganiserCap(t *testing.T) {
	env := newTestService(t, func(o *Options) {
		o.Config.MaxMeetingsPerOrganiser = 2
		o.Auth = fakeAuth{}
	})
	ctx := context.Background()
	bot := env.svc.Bot("!conf")
	ended, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("soon over"), Start: ptr("2026-03-01 10:00")})
	require.NoError(t, err)
	_, err = env.svc.Create(ctx, alice, &Spec{Title: ptr("two"), Start: ptr("2026-03-23 10:00")})
	require.NoError(t, err)
	_, err = env.svc.Create(ctx, alice, &Spec{Title: ptr("three"), Start: ptr("2026-03-24 10:00")})
	require.ErrorIs(t, err, ErrPolicy)
	const limit = "you have 2 active meetings and an organiser may have at most 2 (meetings.max_meetings_per_organiser)"
	reply, _ := bot.HandleCommand(ctx, "!dm", alice, `create three start="2026-03-24 10:00"`)
	require.Contains(t, reply, limit)
	srv := httptest.NewServer(env.svc.Handler())
	defer srv.Close()
	status, out := call(t, srv, "POST", "/meetings/v1/meeting/create", "Bearer token-alice", `{"title":"three","start":"2026-03-24T10:00"}`)
	require.Equal(t, 403, status)
	require.Contains(t, out["error"], limit)
	require.Equal(t, 2, env.mx.roomCount(), "no room for a refused meeting")

	_, err = env.svc.Create(ctx, bob, &Spec{Title: ptr("bob's"), Start: ptr("2026-03-24 10:00")})
	require.NoError(t, err, "the cap is per organiser")
	env.clock.Set(utc("2026-03-01 10:00")) // "soon over" ended
	_, err = env.svc.Create(ctx, alice, &Spec{Title: ptr("three"), Start: ptr("2026-03-24 10:00")})
	require.NoError(t, err)
	_, err = env.svc.Cancel(ctx, alice, ended.Meeting.ID, "")
	require.NoError(t, err)
	res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("four"), Start: ptr("2026-03-25 10:00")})
	require.ErrorIs(t, err, ErrPolicy, fmt.Sprint(res))
}

// Meetings stored before the span columns (starts_at 0; ends_at 0 when the
// old code could not expand the schedule) get their span at start, so the
// purge does not take them for ended in 1970.
func TestSpansFilledForOlderRows(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("old"), Start: ptr("2026-03-23 10:00"), Invite: []string{bob}})
	require.NoError(t, err)
	_, err = env.db.Exec(ctx, "UPDATE meet_meeting SET starts_at=0, ends_at=0")
	require.NoError(t, err)
	svc := env.newService(t)
	require.NoError(t, svc.purge(ctx))
	ms, err := svc.List(ctx, bob)
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.Equal(t, utc("2026-03-23 09:00"), ms[0].first.UTC())
	require.Equal(t, utc("2026-03-23 10:00"), ms[0].last.UTC())
	require.Equal(t, res.Meeting.ID, ms[0].ID)
}

// "list" names at most maxListed meetings: one message holds them.
func TestBotListIsBounded(t *testing.T) {
	env := newTestService(t, func(o *Options) { o.Config.CreateRate.Burst = 100 })
	ctx := context.Background()
	for i := range maxListed + 2 {
		_, err := env.svc.Create(ctx, alice, &Spec{Title: ptr(fmt.Sprint("m", i)), Start: ptr(fmt.Sprintf("2026-04-%02d 10:00", i%28+1))})
		require.NoError(t, err)
	}
	reply, _ := env.svc.Bot("!conf").HandleCommand(ctx, "!dm", alice, "list")
	require.Equal(t, maxListed+1, strings.Count(reply, "\n"), "a heading, 50 meetings and the rest counted")
	require.True(t, strings.HasSuffix(reply, "… and 2 more (your calendar feed lists them: !conf meeting feed)"), reply[len(reply)-100:])
}

// A feed cut to its size limit is logged and counted; the meetings it
// holds are the first of the feed's order.
func TestFeedCutIsCounted(t *testing.T) {
	env := newTestService(t)
	env.svc.feedLimits.bytes = 2000
	ctx := context.Background()
	for _, day := range []string{"02", "03", "04"} {
		_, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("on " + day), Start: ptr("2026-03-" + day + " 10:00"), Invite: []string{bob}})
		require.NoError(t, err)
	}
	feed := feedOf(t, env, bob)
	require.NotEmpty(t, feed)
	require.Less(t, len(feed), 3)
	require.Contains(t, feed, "on 02")
	require.Equal(t, 1.0, testutil.ToFloat64(env.svc.metrics.feedsCut))
}

// One stored meeting that cannot be read (its data is not JSON), whose
// zone is unknown, or whose schedule could not be expanded made the
// whole feed (and, for the first, the list) fail for every participant.
// Now each is left out, logged once with its ID and counted once, and
// the rest is served.
func TestUnreadableMeetingIsLeftOut(t *testing.T) {
	var logs bytes.Buffer
	env := newTestService(t, func(o *Options) { o.Log = zerolog.New(&logs) })
	ctx := context.Background()
	ids := map[string]string{}
	for _, title := range []string{"good", "not json", "no zone", "unexpandable"} {
		res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr(title), Start: ptr("2026-03-02 10:00"), RRule: ptr("FREQ=WEEKLY;COUNT=3"), Invite: []string{bob}})
		require.NoError(t, err)
		ids[title] = res.Meeting.ID
	}
	for _, q := range []struct{ title, sql string }{
		{"not json", "UPDATE meet_meeting SET data='{' WHERE id=$1"},
		{"no zone", "UPDATE meet_meeting SET data=REPLACE(data, 'Europe/Berlin', 'Nowhere/Atlantis') WHERE id=$1"},
		{"unexpandable", fmt.Sprintf("UPDATE meet_meeting SET data=REPLACE(data, 'FREQ=WEEKLY', 'FREQ=NEVER'), ends_at=%d WHERE id=$1", neverEnds.UnixMilli())},
	} {
		_, err := env.db.Exec(ctx, q.sql, ids[q.title])
		require.NoError(t, err)
	}
	logs.Reset()
	for range 2 {
		require.Equal(t, map[string]string{"good": "CONFIRMED"}, feedOf(t, env, bob))
		require.Equal(t, []string{"good"}, listed(t, env, bob))
	}
	require.Equal(t, 3.0, testutil.ToFloat64(env.svc.metrics.unreadable))
	for _, title := range []string{"not json", "no zone", "unexpandable"} {
		require.Equal(t, 1, strings.Count(logs.String(), `"meeting_id":"`+ids[title]+`"`), title)
	}
}

// Creating and cancelling in a loop is bounded: cancelled meetings do not
// count toward the organiser cap, so creates are limited per organiser
// (a burst, then one every create_rate.every), refused by the bot and the
// HTTP API (429) naming the limit. A refused create gives its token back.
func TestCreateRateLimit(t *testing.T) {
	env := newTestService(t, func(o *Options) {
		o.Config.CreateRate = CreateRate{Burst: 3, Every: 10 * time.Minute}
		o.Auth = fakeAuth{}
	})
	ctx := context.Background()
	create := func(user string) error {
		res, err := env.svc.Create(ctx, user, &Spec{Title: ptr("churn"), Start: ptr("2026-03-23 10:00")})
		if err == nil {
			_, cerr := env.svc.Cancel(ctx, user, res.Meeting.ID, "")
			require.NoError(t, cerr)
		}
		return err
	}
	_, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("bad"), Start: ptr("2026-13-23 10:00")})
	require.ErrorIs(t, err, ErrInvalid)
	for range 3 {
		require.NoError(t, create(alice))
	}
	err = create(alice)
	require.ErrorIs(t, err, ErrRateLimited)
	const limit = "an organiser may create 3 meetings at once and then one every 10m0s (meetings.create_rate); try again in 10m0s"
	require.ErrorContains(t, err, limit)
	reply, _ := env.svc.Bot("!conf").HandleCommand(ctx, "!dm", alice, `create churn start="2026-03-23 10:00"`)
	require.Contains(t, reply, limit)
	srv := httptest.NewServer(env.svc.Handler())
	defer srv.Close()
	status, out := call(t, srv, "POST", "/meetings/v1/meeting/create", "Bearer token-alice", `{"title":"churn","start":"2026-03-23T10:00"}`)
	require.Equal(t, 429, status)
	require.Equal(t, "M_LIMIT_EXCEEDED", out["errcode"])
	require.Contains(t, out["error"], limit)
	require.NoError(t, create(bob), "per organiser")

	env.clock.Set(env.clock.Now().Add(10 * time.Minute))
	require.NoError(t, create(alice))
	require.ErrorIs(t, create(alice), ErrRateLimited)
	require.Equal(t, 5, env.mx.roomCount(), "no room for a refused create")
}
