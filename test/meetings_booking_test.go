package test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestMeetingsUnderBooking: meetings × catalogue end to end. An
// organisation's admin (Hydra login with password and TOTP) books a 20-tier
// for one organiser; she schedules a weekly meeting under it by bot
// command; the new room is bound at once and the focus enforces the tier in
// it with the booking's reason; someone the booking does not list, more
// participants than the tier, and occurrences outside the booking's window
// are refused at scheduling time, with nothing created.
func TestMeetingsUnderBooking(t *testing.T) {
	ctx := context.Background()
	s, idp := startCatalogStack(t)
	adminAPI := s.FocusURL + "/catalog/admin/api/"
	alice, mallory := register(t, s, "alice"), register(t, s, "mallory")

	// --- The admin books a 20-tier for 30 days, for alice only.
	admin, status, page := idp.adminSession(t, s.FocusURL, "alice", "alice-pw", true)
	require.Equal(t, http.StatusOK, status, page)
	req := bookingRequest("public-20-gold")
	delete(req, "rooms")
	validUntil := time.Now().UTC().Add(30 * 24 * time.Hour)
	req["valid_until"] = validUntil.Format(time.RFC3339)
	req["organisers"] = []string{alice.ID.String()}
	code, booked := adminCall(t, admin, "", http.MethodPost, adminAPI+"bookings", req)
	require.Equal(t, http.StatusOK, code, booked)
	require.Equal(t, "active", booked["state"])
	require.Equal(t, []any{alice.ID.String()}, booked["organisers"])
	booking := booked["id"].(string)

	// Organisers talk to the bot in a direct chat.
	dm := func(u string, cli *mautrix.Client) func(string) id.RoomID {
		created, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{s.BotID}})
		require.NoError(t, err, u)
		return func(text string) id.RoomID {
			t.Helper()
			_, err := cli.SendText(ctx, created.RoomID, text)
			require.NoError(t, err)
			return created.RoomID
		}
	}
	aliceSay := dm("alice", alice.Client)
	aliceDM := aliceSay("hello")
	waitForMessage(t, alice, aliceDM, s.BotID, "!conf help")

	berlin := mustZone(t, "Europe/Berlin")
	start := time.Now().Add(2 * time.Hour).In(berlin).Truncate(time.Minute)
	startArg := start.Format("2006-01-02 15:04")
	guests := make([]string, 20)
	for i := range guests {
		guests[i] = fmt.Sprintf("@guest%02d:localhost", i+1)
	}
	create := func(extra string, invitees []string) string {
		return fmt.Sprintf(`!conf meeting create Weekly under booking start="%s" duration=1h repeat=weekly %s booking=%s %s`,
			startArg, extra, booking, strings.Join(invitees, " "))
	}

	t.Run("more participants than the tier are refused at scheduling", func(t *testing.T) {
		before := meetingCount(t, s)
		aliceSay(create("count=3", guests))
		reply := waitForMessage(t, alice, aliceDM, s.BotID, "❌ I did not schedule the meeting")
		require.Contains(t, reply, "booking: invalid request: 21 participants exceed booking "+booking+"'s 20")
		require.Equal(t, before, meetingCount(t, s))
	})

	t.Run("an occurrence outside the booking's window is refused", func(t *testing.T) {
		before := meetingCount(t, s)
		// Weekly for ten weeks: the last ones lie after the 30 days booked.
		aliceSay(create("count=10", guests[:2]))
		reply := waitForMessage(t, alice, aliceDM, s.BotID, "lies outside booking "+booking)
		require.True(t, strings.HasPrefix(reply, "❌ I did not schedule the meeting — booking: outside the booking's window: the occurrence "), reply)
		require.Equal(t, before, meetingCount(t, s))
	})

	var meetingID string
	var room id.RoomID
	t.Run("the organiser schedules under the booking; the room is bound at once", func(t *testing.T) {
		// Alice and 19 invitees: the tier's 20.
		aliceSay(create("count=3", guests[:19]))
		// The answer comes once 19 invites and calendar files are out.
		var reply string
		require.Eventually(t, func() bool {
			resp, err := alice.Client.Messages(ctx, aliceDM, "", "", mautrix.DirectionBackward, nil, 50)
			if err != nil {
				return false
			}
			for _, evt := range resp.Chunk {
				if body, _ := evt.Content.Raw["body"].(string); evt.Sender == s.BotID && strings.Contains(body, "✅ Scheduled") {
					reply = body
					return true
				}
			}
			return false
		}, 3*time.Minute, 200*time.Millisecond, "alice's meeting was not scheduled")
		meetingID = meetingIDRe.FindStringSubmatch(reply)[1]
		status, out := api(t, s, "GET", "meeting/"+meetingID, "Bearer "+alice.Client.AccessToken, nil)
		require.Equal(t, http.StatusOK, status, out)
		room = id.RoomID(out["room_id"].(string))

		// The organiser is invited to her meeting's room and joins it.
		require.Contains(t, inviteReason(t, alice, room), "📅 Weekly under booking — ")
		_, err := alice.Client.JoinRoomByID(ctx, room)
		require.NoError(t, err)
		var md map[string]any
		require.NoError(t, alice.Client.StateEvent(ctx, room, event.Type{Type: "net.nordeck.meetings.metadata", Class: event.StateEventType}, "", &md))
		require.Equal(t, booking, md["external_data"].(map[string]any)["de.gxconf.booking"])

		// The bot names the booking in the meeting room: bound, and no
		// "accept" needed, since the scheduler created the room.
		_, err = alice.Client.SendText(ctx, room, "!conf bookings")
		require.NoError(t, err)
		answer := waitForMessage(t, alice, room, s.BotID, "Booking "+booking)
		require.Contains(t, answer, "tier public-20-gold")
		require.Contains(t, answer, "counted with meeting "+meetingID)
		require.NotContains(t, answer, "does not count until")

		code, out := adminCall(t, admin, "", http.MethodGet, adminAPI+"bookings/"+booking, nil)
		require.Equal(t, http.StatusOK, code, out)
		rooms := out["bound_rooms"].([]any)
		require.Len(t, rooms, 1)
		require.Equal(t, room.String(), rooms[0].(map[string]any)["room_id"])
		require.Equal(t, "meetings:"+alice.ID.String(), rooms[0].(map[string]any)["confirmed_by"])
	})
	require.NotEmpty(t, room, "the meeting exists")

	t.Run("the focus refuses a token beyond the tier with the booking's reason", func(t *testing.T) {
		oid := openID(t, alice)
		for i := range 20 {
			code, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, alice, fmt.Sprintf("p%02d", i), oid))
			require.Equal(t, http.StatusOK, code, "participant %d: %v", i+1, out)
		}
		code, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, alice, "p20", oid))
		require.Equal(t, http.StatusForbidden, code, out)
		require.Equal(t, "M_FORBIDDEN", out["errcode"])
		require.Equal(t, "The booking "+booking+" (public, up to 20 participants) allows at most 20 participants in this meeting; 20 are already in the call.", out["error"])
	})

	t.Run("someone the booking does not list cannot spend it", func(t *testing.T) {
		before := meetingCount(t, s)
		mallorySay := dm("mallory", mallory.Client)
		malloryDM := mallorySay("hello")
		waitForMessage(t, mallory, malloryDM, s.BotID, "!conf help")
		mallorySay(fmt.Sprintf(`!conf meeting create Hijack start="%s" booking=%s @guest01:localhost`, startArg, booking))
		reply := waitForMessage(t, mallory, malloryDM, s.BotID, "❌ I did not schedule the meeting")
		require.Equal(t, "❌ I did not schedule the meeting — booking: forbidden: booking "+booking+" does not list "+mallory.ID.String()+" as an organiser", reply)
		// The same by HTTP.
		status, out := api(t, s, "POST", "meeting/create", mxIdentity(t, mallory), map[string]any{
			"title": "Hijack", "start": start.Format("2006-01-02T15:04"), "booking": booking})
		require.Equal(t, http.StatusForbidden, status, out)
		require.Equal(t, "DE_GXCONF_POLICY", out["errcode"])
		require.Equal(t, "booking: forbidden: booking "+booking+" does not list "+mallory.ID.String()+" as an organiser", out["error"])
		require.Equal(t, before, meetingCount(t, s), "nothing was created")
		code, booked := adminCall(t, admin, "", http.MethodGet, adminAPI+"bookings/"+booking, nil)
		require.Equal(t, http.StatusOK, code, booked)
		require.Len(t, booked["bound_rooms"], 1, "no room was bound")
	})

	t.Run("an update that leaves the booking's window is refused", func(t *testing.T) {
		_, err := alice.Client.SendText(ctx, room, "!conf meeting update rrule=FREQ=WEEKLY;COUNT=10")
		require.NoError(t, err)
		reply := waitForMessage(t, alice, room, s.BotID, "❌ I did not change the meeting")
		require.Contains(t, reply, "lies outside booking "+booking)
		status, out := api(t, s, "GET", "meeting/"+meetingID, "Bearer "+alice.Client.AccessToken, nil)
		require.Equal(t, http.StatusOK, status, out)
		require.Contains(t, out["summary"], "repeats every week, 3 times", "the meeting is as it was")
	})
}
