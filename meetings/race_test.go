package meetings

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// holdingMatrix holds the first reminder posted in room until release is
// closed, after saying so on entered.
type holdingMatrix struct {
	*fakeMatrix
	room             string
	entered, release chan struct{}
	once             sync.Once
}

func (h *holdingMatrix) SendMessage(ctx context.Context, roomID string, content map[string]any) error {
	if _, ok := content["de.gxconf.reminder"]; ok && roomID == h.room {
		h.once.Do(func() {
			close(h.entered)
			<-h.release
		})
	}
	return h.fakeMatrix.SendMessage(ctx, roomID, content)
}

// A cancel that returned while the reminder round was under way (it had
// read the meeting before) is honoured: no reminder for the cancelled
// meeting or occurrence is posted after it.
func TestNoReminderAfterCancelReturned(t *testing.T) {
	for name, occurrence := range map[string]string{"meeting": "", "occurrence": "2026-03-23"} {
		t.Run(name, func(t *testing.T) {
			fm := newFakeMatrix()
			hm := &holdingMatrix{fakeMatrix: fm, entered: make(chan struct{}), release: make(chan struct{})}
			env := newTestService(t, func(o *Options) { o.Matrix = hm })
			ctx := context.Background()
			a, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("A"), Start: ptr("2026-03-23 10:00"), RRule: ptr("FREQ=DAILY;COUNT=2")})
			require.NoError(t, err)
			b, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("B"), Start: ptr("2026-03-23 10:00"), RRule: ptr("FREQ=DAILY;COUNT=2")})
			require.NoError(t, err)
			// The round reads meetings in id order: hold the first one's reminder.
			first, second := a.Meeting, b.Meeting
			if first.ID > second.ID {
				first, second = second, first
			}
			hm.room = first.RoomID
			env.clock.Set(utc("2026-03-23 08:50"))
			done := make(chan error, 1)
			go func() {
				_, err := env.svc.remind(ctx)
				done <- err
			}()
			select {
			case <-hm.entered:
			case <-time.After(30 * time.Second):
				t.Fatal("no reminder was posted")
			}
			_, err = env.svc.Cancel(ctx, alice, second.ID, occurrence)
			require.NoError(t, err)
			close(hm.release)
			require.NoError(t, <-done)
			require.Len(t, fm.roomMessages(first.RoomID), 1)
			require.Zero(t, (&testEnv{mx: fm}).reminders(second.RoomID))
		})
	}
}

// holdingCreate holds CreateRoom of a room named "held" (so its Create
// holds the service lock) until release is closed, after saying so on
// entered.
type holdingCreate struct {
	*fakeMatrix
	entered, release chan struct{}
}

func (h *holdingCreate) CreateRoom(ctx context.Context, req RoomRequest) (string, error) {
	if req.Name == "held" {
		close(h.entered)
		<-h.release
	}
	return h.fakeMatrix.CreateRoom(ctx, req)
}

// neverMatches is a rule the recurrence library looks for up to the year
// 9999 (~100 ms) before it says there is no occurrence.
const neverMatches = "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30;COUNT=5"

// Checking a new rule does not take the service lock: while a create that
// waits on the homeserver holds it, a create and an update with a rule
// that never matches are refused.
func TestRuleCheckedOutsideTheLock(t *testing.T) {
	fm := newFakeMatrix()
	hc := &holdingCreate{fakeMatrix: fm, entered: make(chan struct{}), release: make(chan struct{})}
	env := newTestService(t, func(o *Options) { o.Matrix = hc })
	ctx := context.Background()
	mine, err := env.svc.Create(ctx, bob, &Spec{Title: ptr("B"), Start: ptr("2026-03-23 10:00")})
	require.NoError(t, err)

	held := make(chan error, 1)
	go func() {
		_, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("held"), Start: ptr("2026-03-23 10:00")})
		held <- err
	}()
	<-hc.entered
	refused := make(chan error, 2)
	go func() {
		_, err := env.svc.Create(ctx, bob, &Spec{Title: ptr("C"), Start: ptr("2026-03-23 10:00"), RRule: ptr(neverMatches)})
		refused <- err
		_, err = env.svc.Update(ctx, bob, mine.Meeting.ID, &Spec{RRule: ptr(neverMatches)})
		refused <- err
	}()
	for range 2 {
		select {
		case err := <-refused:
			require.ErrorContains(t, err, "rrule: the series has no occurrence")
		case <-time.After(30 * time.Second):
			t.Fatal("the refusal waited for the service lock")
		}
	}
	close(hc.release)
	require.NoError(t, <-held)
}
