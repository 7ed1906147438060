package test

import (
	"context"
	"database/sql"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/test/harness"
)

// reminderRows counts the reminders gxconf recorded for a meeting.
func reminderRows(t *testing.T, s *harness.Stack, meetingID string) int {
	t.Helper()
	db, err := sql.Open(s.DBDriver, s.DBURI)
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.QueryRow("SELECT COUNT(*) FROM meet_reminder WHERE meeting_id=$1", meetingID).Scan(&n))
	return n
}

// botReminders returns the bodies of the reminders the bot posted in room.
func botReminders(t *testing.T, u *harness.User, room id.RoomID, bot id.UserID) []string {
	t.Helper()
	resp, err := u.Client.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 100)
	require.NoError(t, err)
	var out []string
	for _, evt := range resp.Chunk {
		if evt.Sender != bot || evt.Type != event.EventMessage {
			continue
		}
		if _, ok := evt.Content.Raw["de.gxconf.reminder"]; ok {
			out = append(out, evt.Content.Raw["body"].(string))
		}
	}
	return out
}

// TestMeetingReminderAcrossGxconfRestart: a reminder falls due while gxconf
// is down; the restarted gxconf sends it once, and another restart does not
// send it again.
func TestMeetingReminderAcrossGxconfRestart(t *testing.T) {
	ctx := context.Background()
	const before = 2 * time.Minute
	s := startStack(t, harness.StackOptions{Config: map[string]any{
		"meetings": map[string]any{"reminder_before": before.String()},
	}})
	alice, bob := register(t, s, "alice"), register(t, s, "bob")
	berlin := mustZone(t, "Europe/Berlin")
	restart := func(n string) {
		t.Helper()
		startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		var err error
		s.Gxconf, err = harness.StartGxconf(startCtx, gxconfBin, s.ConfigPath, s.RegistrationPath,
			s.Gxconf.LogPath+"."+n, s.FocusURL+"/healthz")
		require.NoError(t, err)
	}

	// The reminder is due 40 s from now; gxconf stops before that.
	start := time.Now().Add(before + 40*time.Second).In(berlin).Truncate(time.Second)
	due := start.Add(-before)
	status, out := api(t, s, "POST", "meeting/create", "Bearer "+alice.Client.AccessToken, map[string]any{
		"title": "Across the restart", "start": start.Format("2006-01-02T15:04:05"), "duration": "1h", "invite": []string{bob.ID.String()}})
	require.Equal(t, http.StatusCreated, status, out)
	meetingID, room := out["meeting_id"].(string), id.RoomID(out["room_id"].(string))
	_, err := bob.Client.JoinRoomByID(ctx, room)
	require.NoError(t, err)
	require.NoError(t, s.Gxconf.Stop())
	require.True(t, time.Now().Before(due), "gxconf stopped before the reminder was due (the machine was too slow to test this)")
	require.Zero(t, reminderRows(t, s, meetingID))

	// gxconf stays down until the reminder is overdue: a deadline, not an
	// event to await.
	<-time.After(time.Until(due.Add(2 * time.Second)))
	restart("2")
	body := waitForMessage(t, bob, room, s.BotID, "⏰ Across the restart starts")
	require.Contains(t, body, bob.ID.String(), "it mentions the participants")
	require.True(t, time.Now().Before(start), "the missed reminder came before the start")
	require.Equal(t, 1, reminderRows(t, s, meetingID))

	// Another restart: the stored claim keeps it from being sent again. A
	// second meeting whose reminder is due at once is sent by the same
	// reminder loop after its startup round; once it is there, that round
	// has passed the first meeting.
	require.NoError(t, s.Gxconf.Stop())
	restart("3")
	markerStart := time.Now().Add(before - 30*time.Second).In(berlin).Truncate(time.Second)
	status, out = api(t, s, "POST", "meeting/create", "Bearer "+alice.Client.AccessToken, map[string]any{
		"title": "Marker", "start": markerStart.Format("2006-01-02T15:04:05"), "invite": []string{bob.ID.String()}})
	require.Equal(t, http.StatusCreated, status, out)
	marker := out["meeting_id"].(string)
	require.Eventually(t, func() bool { return reminderRows(t, s, marker) == 1 }, 60*time.Second, 100*time.Millisecond,
		"the marker meeting's reminder was sent")
	markerRoom := id.RoomID(out["room_id"].(string))
	_, err = bob.Client.JoinRoomByID(ctx, markerRoom)
	require.NoError(t, err)
	waitForMessage(t, bob, markerRoom, s.BotID, "⏰ Marker starts")

	reminders := botReminders(t, bob, room, s.BotID)
	require.Len(t, reminders, 1, "sent once, never twice: %v", reminders)
	require.Equal(t, 1, reminderRows(t, s, meetingID))
	require.True(t, strings.HasPrefix(reminders[0], "⏰ Across the restart starts in "), reminders[0])
}
