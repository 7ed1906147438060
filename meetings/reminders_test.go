package meetings

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// runService runs the reminder loop until the returned stop is called.
func runService(t *testing.T, svc *Service) (stop func()) {
	t.Helper()
	// Changes made before the loop runs poked it; it reads them at start
	// anyway, and a leftover poke would race the fake clock.
	select {
	case <-svc.wake:
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		require.NoError(t, <-done)
	}
	t.Cleanup(stop)
	return stop
}

// awaitIdle waits until the loop is waiting on the clock again, after the
// clock's last move.
func (env *testEnv) awaitIdle(t *testing.T) {
	t.Helper()
	for !env.clock.idle() {
		select {
		case <-env.clock.waiting:
		case <-time.After(30 * time.Second):
			t.Fatal("the reminder loop did not go back to waiting")
		}
	}
}

func (env *testEnv) drainWaiting() {
	env.clock.Set(env.clock.Now()) // a new generation: idle only after the next After
	for {
		select {
		case <-env.clock.waiting:
		default:
			return
		}
	}
}

func (env *testEnv) expectReminder(t *testing.T, room string) map[string]any {
	t.Helper()
	for {
		select {
		case m := <-env.mx.sent:
			if _, ok := m.content["de.gxconf.reminder"]; ok {
				require.Equal(t, room, m.room)
				return m.content
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no reminder was sent")
		}
	}
}

func (env *testEnv) reminders(room string) int {
	n := 0
	for _, m := range env.mx.roomMessages(room) {
		if _, ok := m["de.gxconf.reminder"]; ok {
			n++
		}
	}
	return n
}

// The reminder fires exactly reminder_before ahead of each occurrence, by
// the injected clock, and mentions everyone with the join link.
func TestReminderAtTheRightInstant(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	// 2026-03-23 10:00 Berlin = 09:00 UTC; weekly, so the next is 08:00 UTC (CEST).
	res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("Lage"), Start: ptr("2026-03-23 10:00"), RRule: ptr("FREQ=WEEKLY;COUNT=2"), Invite: []string{bob}})
	require.NoError(t, err)
	room := res.Meeting.RoomID
	env.drainWaiting()
	runService(t, env.svc)
	env.awaitIdle(t)

	env.clock.Set(utc("2026-03-23 08:49").Add(59 * time.Second))
	env.awaitIdle(t)
	require.Zero(t, env.reminders(room), "one second early: nothing")

	env.clock.Set(utc("2026-03-23 08:50"))
	c := env.expectReminder(t, room)
	require.Equal(t, utc("2026-03-23 08:50"), env.clock.Now())
	require.Contains(t, c["body"], "⏰ Lage starts in 10 minutes (10:00 Europe/Berlin). Join the call: https://matrix.to/#/"+room)
	require.Equal(t, map[string]any{"user_ids": []string{alice, bob}}, c["m.mentions"])
	require.Contains(t, c["formatted_body"], `<a href="https://matrix.to/#/@bob:hs.test">`)
	env.awaitIdle(t)

	// The second occurrence is in CEST: 10:00 local = 08:00 UTC, reminder 07:50.
	env.clock.Set(utc("2026-03-30 07:49"))
	env.awaitIdle(t)
	require.Equal(t, 1, env.reminders(room))
	env.clock.Set(utc("2026-03-30 07:50"))
	env.expectReminder(t, room)
	env.awaitIdle(t)
	require.Equal(t, 2, env.reminders(room))
}

// A restart in the middle loses no reminder and doubles none: missed while
// down and the meeting not over → sent once at start; over → not sent.
func TestRemindersSurviveRestart(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	a, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("A"), Start: ptr("2026-03-23 10:00"), Duration: ptr("1h")})
	require.NoError(t, err)
	b, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("B"), Start: ptr("2026-03-23 10:30"), Duration: ptr("30m")})
	require.NoError(t, err)
	c, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("C"), Start: ptr("2026-03-23 12:00"), Duration: ptr("1h")})
	require.NoError(t, err)

	// First run: A's reminder at 08:50 UTC.
	env.drainWaiting()
	stop := runService(t, env.svc)
	env.awaitIdle(t)
	env.clock.Set(utc("2026-03-23 08:50"))
	env.expectReminder(t, a.Meeting.RoomID)
	env.awaitIdle(t)
	stop()

	// Down from 08:50 to 09:45 UTC: B (09:30–10:00 UTC) is running, its
	// reminder (09:20) was missed; A is running and was reminded already.
	env.clock.Set(utc("2026-03-23 09:45"))
	env.drainWaiting()
	svc2 := env.newService(t)
	stop = runService(t, svc2)
	got := env.expectReminder(t, b.Meeting.RoomID)
	require.Contains(t, got["body"], "B starts since 10:30")
	env.awaitIdle(t)
	stop()
	require.Equal(t, 1, env.reminders(a.Meeting.RoomID))
	require.Equal(t, 1, env.reminders(b.Meeting.RoomID))

	// Down again until after B ended and C's reminder time passed: C runs
	// from 11:00 UTC; restart at 11:05 sends C once, B nothing more.
	env.clock.Set(utc("2026-03-23 11:05"))
	env.drainWaiting()
	svc3 := env.newService(t)
	stop = runService(t, svc3)
	env.expectReminder(t, c.Meeting.RoomID)
	env.awaitIdle(t)
	stop()
	// And once more: nothing is sent twice.
	env.drainWaiting()
	svc4 := env.newService(t)
	runService(t, svc4)
	env.awaitIdle(t)
	env.clock.Set(utc("2026-03-23 11:30"))
	env.awaitIdle(t)
	require.Equal(t, 1, env.reminders(a.Meeting.RoomID))
	require.Equal(t, 1, env.reminders(b.Meeting.RoomID))
	require.Equal(t, 1, env.reminders(c.Meeting.RoomID))
}

// A meeting that ended while gxconf was down gets no late reminder; a
// cancelled occurrence gets none.
func TestNoReminderForEndedOrCancelled(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	a, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("A"), Start: ptr("2026-03-23 10:00"), Duration: ptr("1h")})
	require.NoError(t, err)
	s, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("S"), Start: ptr("2026-03-24 10:00"), RRule: ptr("FREQ=DAILY;COUNT=3")})
	require.NoError(t, err)
	_, err = env.svc.Cancel(ctx, alice, s.Meeting.ID, "2026-03-25")
	require.NoError(t, err)
	env.clock.Set(utc("2026-03-23 10:30")) // A ended at 10:00 UTC
	env.drainWaiting()
	runService(t, env.svc)
	env.awaitIdle(t)
	require.Zero(t, env.reminders(a.Meeting.RoomID))
	for _, at := range []string{"2026-03-24 08:50", "2026-03-25 08:50", "2026-03-26 08:50"} {
		env.clock.Set(utc(at))
		env.awaitIdle(t)
	}
	require.Equal(t, 2, env.reminders(s.Meeting.RoomID), "24th and 26th, not the cancelled 25th")
}

// A failed send is retried, not lost.
func TestFailedReminderIsRetried(t *testing.T) {
	env := newTestService(t)
	a, err := env.svc.Create(context.Background(), alice, &Spec{Title: ptr("A"), Start: ptr("2026-03-23 10:00")})
	require.NoError(t, err)
	env.mx.mu.Lock()
	env.mx.failSend = true
	env.mx.mu.Unlock()
	env.drainWaiting()
	runService(t, env.svc)
	env.awaitIdle(t)
	env.clock.Set(utc("2026-03-23 08:50"))
	env.awaitIdle(t)
	require.Zero(t, env.reminders(a.Meeting.RoomID))
	env.mx.mu.Lock()
	env.mx.failSend = false
	env.mx.mu.Unlock()
	env.clock.Set(utc("2026-03-23 08:51"))
	env.expectReminder(t, a.Meeting.RoomID)
}

// refusingMatrix is a homeserver that refuses some messages: those refuse
// returns an error for.
type refusingMatrix struct {
	*fakeMatrix
	refuse func(roomID string, content map[string]any) error
}

func (r refusingMatrix) SendMessage(ctx context.Context, roomID string, content map[string]any) error {
	if err := r.refuse(roomID, content); err != nil {
		return err
	}
	return r.fakeMatrix.SendMessage(ctx, roomID, content)
}

// maxEventSize is the limit the Matrix spec puts on an event (65536 bytes);
// a homeserver answers a larger one with M_TOO_LARGE.
const maxEventSize = 65536

func refuseTooLarge(_ string, content map[string]any) error {
	if b, _ := json.Marshal(content); len(b) > maxEventSize {
		return errors.New("M_TOO_LARGE: event too large")
	}
	return nil
}

// createOrdered creates two meetings at the same time and returns them
// ordered by id, the order the reminder loop reads them in.
func createOrdered(t *testing.T, env *testEnv, invite []string) (first, second *Meeting) {
	t.Helper()
	ctx := context.Background()
	a, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("A"), Start: ptr("2026-03-23 10:00"), Duration: ptr("1h"), Invite: invite})
	require.NoError(t, err)
	b, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("B"), Start: ptr("2026-03-23 10:00"), Duration: ptr("1h")})
	require.NoError(t, err)
	if a.Meeting.ID > b.Meeting.ID {
		return b.Meeting, a.Meeting
	}
	return a.Meeting, b.Meeting
}

func reminderClaimed(t *testing.T, env *testEnv, m *Meeting) bool {
	t.Helper()
	start, err := m.Schedule.StartTime()
	require.NoError(t, err)
	sent, err := env.svc.store.reminderSent(context.Background(), m.ID, start)
	require.NoError(t, err)
	return sent
}

// A reminder the homeserver refuses does not hold back the meetings read
// after it, and stays unclaimed so a later round retries it.
func TestRefusedReminderDoesNotStarveOthers(t *testing.T) {
	fm := newFakeMatrix()
	var refused string
	env := newTestService(t, func(o *Options) {
		o.Matrix = refusingMatrix{fm, func(roomID string, _ map[string]any) error {
			if roomID == refused {
				return errors.New("M_FORBIDDEN")
			}
			return nil
		}}
	})
	first, second := createOrdered(t, env, nil)
	refused = first.RoomID
	env.clock.Set(utc("2026-03-23 08:55"))
	_, err := env.svc.remind(context.Background())
	require.Error(t, err, "the failure is still reported, so Run retries in a minute")
	require.True(t, reminderClaimed(t, env, second), "the later meeting's reminder was sent")
	require.Len(t, fm.roomMessages(second.RoomID), 1)
	require.False(t, reminderClaimed(t, env, first), "the refused reminder stays unclaimed for a retry")
}

// A meeting with a thousand invitees gets a reminder a homeserver accepts:
// it names the first 50 people and mentions the room for the rest, and
// the meeting after it is reminded too.
func TestLargeMeetingReminderStaysSmall(t *testing.T) {
	fm := newFakeMatrix()
	fm.sent = make(chan sentMessage, 5000) // room for the messages about 1000 invitations
	env := newTestService(t, func(o *Options) { o.Matrix = refusingMatrix{fm, refuseTooLarge} })
	var people []string
	for i := range 1000 {
		people = append(people, fmt.Sprintf("@participant.number.%04d:ministerium.bund.example", i))
	}
	first, second := createOrdered(t, env, people)
	big := first
	if len(second.Participants) > len(first.Participants) {
		big = second
	}
	env.clock.Set(utc("2026-03-23 08:55"))
	_, err := env.svc.remind(context.Background())
	require.NoError(t, err)
	require.True(t, reminderClaimed(t, env, first))
	require.True(t, reminderClaimed(t, env, second))

	msgs := fm.roomMessages(big.RoomID)
	require.Len(t, msgs, 1)
	b, err := json.Marshal(msgs[0])
	require.NoError(t, err)
	require.Less(t, len(b), maxEventSize, "the reminder event stays under 64 KiB")
	mentions := msgs[0]["m.mentions"].(map[string]any)
	require.Len(t, mentions["user_ids"], 50)
	require.Equal(t, alice, mentions["user_ids"].([]string)[0], "the organiser is named first")
	require.Equal(t, true, mentions["room"])
	require.Contains(t, msgs[0]["body"], "and 951 more: @room")
}
