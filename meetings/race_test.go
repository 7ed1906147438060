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
