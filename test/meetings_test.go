package test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/test/harness"
)

var meetingIDRe = regexp.MustCompile(`\(meeting ([a-z2-7]{8})\)`)

// botDM opens u's direct chat with the bot: the room gxconf recorded (the
// bot creates it when it first writes), joined.
func botDM(t *testing.T, s *harness.Stack, u *harness.User) id.RoomID {
	t.Helper()
	var room string
	require.Eventually(t, func() bool {
		db, err := sql.Open(s.DBDriver, s.DBURI)
		require.NoError(t, err)
		defer db.Close()
		return db.QueryRow("SELECT room_id FROM as_dm_room WHERE user_id=$1", u.ID.String()).Scan(&room) == nil
	}, 60*time.Second, 100*time.Millisecond, "the bot opened no direct chat with %s", u.ID)
	_, err := u.Client.JoinRoomByID(context.Background(), id.RoomID(room))
	require.NoError(t, err)
	return id.RoomID(room)
}

// calendarFile is one .ics the bot posted.
type calendarFile struct {
	Method   string
	Sequence int
	ID       string
	Body     string
	Data     []byte
}

// calendarFiles downloads the .ics files the bot posted in a room, oldest first.
func calendarFiles(t *testing.T, s *harness.Stack, u *harness.User, room id.RoomID, bot id.UserID) []calendarFile {
	t.Helper()
	resp, err := u.Client.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 100)
	require.NoError(t, err)
	var out []calendarFile
	for i := len(resp.Chunk) - 1; i >= 0; i-- {
		evt := resp.Chunk[i]
		if evt.Sender != bot || evt.Type != event.EventMessage || evt.Content.Raw["msgtype"] != "m.file" {
			continue
		}
		meta, _ := evt.Content.Raw["de.gxconf.meeting"].(map[string]any)
		require.NotNil(t, meta)
		mxc, err := id.ParseContentURI(evt.Content.Raw["url"].(string))
		require.NoError(t, err)
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/_matrix/media/v3/download/%s/%s", s.Dendrite.URL, mxc.Homeserver, mxc.FileID), nil)
		req.Header.Set("Authorization", "Bearer "+u.Client.AccessToken)
		dl, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		data, _ := io.ReadAll(dl.Body)
		dl.Body.Close()
		require.Equal(t, 200, dl.StatusCode, string(data))
		out = append(out, calendarFile{Method: meta["method"].(string), Sequence: int(meta["sequence"].(float64)),
			ID: meta["id"].(string), Body: evt.Content.Raw["body"].(string), Data: data})
	}
	return out
}

// awaitFiles waits until n calendar files are in the room.
func awaitFiles(t *testing.T, s *harness.Stack, u *harness.User, room id.RoomID, bot id.UserID, n int) []calendarFile {
	t.Helper()
	var files []calendarFile
	require.Eventually(t, func() bool {
		files = calendarFiles(t, s, u, room, bot)
		return len(files) >= n
	}, 60*time.Second, 200*time.Millisecond, "%s did not get %d calendar files", u.ID, n)
	return files
}

// inviteReason waits for u's invite to room and returns its reason.
func inviteReason(t *testing.T, u *harness.User, room id.RoomID) string {
	t.Helper()
	var reason string
	require.Eventually(t, func() bool {
		resp, err := u.Client.SyncRequest(context.Background(), 0, "", "", false, "")
		if err != nil {
			return false
		}
		inv, ok := resp.Rooms.Invite[room]
		if !ok {
			return false
		}
		for _, evt := range inv.State.Events {
			if evt.Type == event.StateMember && evt.GetStateKey() == u.ID.String() {
				reason, _ = evt.Content.Raw["reason"].(string)
				return true
			}
		}
		return false
	}, 60*time.Second, 200*time.Millisecond, "%s saw no invite to %s", u.ID, room)
	return reason
}

// awaitInviteReason waits until u's pending invite to room carries want as
// its reason (what Element shows on the invite).
func awaitInviteReason(t *testing.T, u *harness.User, room id.RoomID, want string) {
	t.Helper()
	var last string
	require.Eventually(t, func() bool {
		resp, err := u.Client.SyncRequest(context.Background(), 0, "", "", false, "")
		if err != nil {
			return false
		}
		inv, ok := resp.Rooms.Invite[room]
		if !ok {
			return false
		}
		for _, evt := range inv.State.Events {
			if evt.Type == event.StateMember && evt.GetStateKey() == u.ID.String() {
				last, _ = evt.Content.Raw["reason"].(string)
			}
		}
		return last == want
	}, 60*time.Second, 200*time.Millisecond, "%s's invite to %s did not become %q (last: %q)", u.ID, room, want, last)
}

func meetingCount(t *testing.T, s *harness.Stack) int {
	t.Helper()
	db, err := sql.Open(s.DBDriver, s.DBURI)
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.QueryRow("SELECT COUNT(*) FROM meet_meeting").Scan(&n))
	return n
}

// api calls the meetings HTTP API.
func api(t *testing.T, s *harness.Stack, method, path, auth string, body any) (int, map[string]any) {
	t.Helper()
	var raw []byte
	if body != nil {
		var err error
		raw, err = json.Marshal(body)
		require.NoError(t, err)
	}
	req, err := http.NewRequest(method, s.FocusURL+"/meetings/v1/"+path, bytes.NewReader(raw))
	require.NoError(t, err)
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	require.NoError(t, json.Unmarshal(data, &out), string(data))
	return resp.StatusCode, out
}

func mxIdentity(t *testing.T, u *harness.User) string {
	t.Helper()
	b, err := json.Marshal(openID(t, u))
	require.NoError(t, err)
	return "MX-Identity " + base64.StdEncoding.EncodeToString(b)
}

// TestMeetingsWithDendrite: organisers schedule a weekly series by bot
// command and by HTTP; the rooms, invites, calendar files, updates,
// cancellations, feeds, reminders and refusals as invitees see them on a
// real homeserver.
func TestMeetingsWithDendrite(t *testing.T) {
	ctx := context.Background()
	s := startStack(t, harness.StackOptions{Config: map[string]any{
		"meetings": map[string]any{"reminder_before": "10m", "levels": map[string]any{
			"kritis": map[string]any{"required_credentials": []any{map[string]any{"type": "EmployeeCredential"}}},
		}},
	}})
	alice, bob, carol := register(t, s, "alice"), register(t, s, "bob"), register(t, s, "carol")

	// Alice's direct chat with the bot, where she gives commands.
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{s.BotID}})
	require.NoError(t, err)
	cmdRoom := created.RoomID
	waitForMessage(t, alice, cmdRoom, s.BotID, "!conf help")
	say := func(text string) {
		t.Helper()
		_, err := alice.Client.SendText(ctx, cmdRoom, text)
		require.NoError(t, err)
	}

	say(`!conf help meeting`)
	waitForMessage(t, alice, cmdRoom, s.BotID, "!conf meeting create <title>")

	// A weekly series across the last Sunday of March and of October 2027,
	// 30 March... excluded: 5 April 2027.
	say(`!conf meeting create Weekly coordination start="2027-03-15 10:00" duration=1h repeat=weekly until=2027-11-15 except=2027-04-05 @bob:localhost @carol:localhost`)
	reply := waitForMessage(t, alice, cmdRoom, s.BotID, "✅ Scheduled")
	require.Contains(t, reply, "Mon 15 Mar 2027, 10:00–11:00 (Europe/Berlin); repeats every week, until 15 Nov 2027; except 5 Apr 2027")
	meetingID := meetingIDRe.FindStringSubmatch(reply)[1]
	var room id.RoomID
	status, out := api(t, s, "GET", "meeting/"+meetingID, "Bearer "+alice.Client.AccessToken, nil)
	require.Equal(t, 200, status, out)
	room = id.RoomID(out["room_id"].(string))

	t.Run("the room has the meeting's state and power levels", func(t *testing.T) {
		reason := inviteReason(t, bob, room)
		require.Equal(t, "📅 Weekly coordination — Mon 15 Mar 2027, 10:00–11:00 (Europe/Berlin); repeats every week, until 15 Nov 2027; except 5 Apr 2027 · invited by @alice:localhost", reason)
		require.Contains(t, inviteReason(t, carol, room), "invited by @alice:localhost")
		_, err := bob.Client.JoinRoomByID(ctx, room)
		require.NoError(t, err)
		var pl event.PowerLevelsEventContent
		require.NoError(t, bob.Client.StateEvent(ctx, room, event.StatePowerLevels, "", &pl))
		require.Equal(t, 0, pl.Events["org.matrix.msc3401.call.member"])
		require.Equal(t, 100, pl.Users[alice.ID])
		require.Equal(t, 100, pl.Users[s.BotID])
		require.Equal(t, 100, pl.Events["net.nordeck.meetings.metadata"])
		var access map[string]any
		require.NoError(t, bob.Client.StateEvent(ctx, room, event.Type{Type: "de.gxconf.access", Class: event.StateEventType}, "", &access))
		require.Equal(t, "public", access["level"])
		var md map[string]any
		require.NoError(t, bob.Client.StateEvent(ctx, room, event.Type{Type: "net.nordeck.meetings.metadata", Class: event.StateEventType}, "", &md))
		require.Equal(t, alice.ID.String(), md["creator"])
		entry := md["calendar"].([]any)[0].(map[string]any)
		require.Equal(t, map[string]any{"tzid": "Europe/Berlin", "value": "20270315T100000"}, entry["dtstart"])
		require.Equal(t, "FREQ=WEEKLY;UNTIL=20271115T225959Z", entry["rrule"])
		require.Equal(t, []any{map[string]any{"tzid": "Europe/Berlin", "value": "20270405T100000"}}, entry["exdate"])
		name, err := roomName(bob, room)
		require.NoError(t, err)
		require.Equal(t, "Weekly coordination", name)
	})

	var bobDM id.RoomID
	t.Run("each invitee gets an .ics that ical.js reads to the same occurrences", func(t *testing.T) {
		bobDM = botDM(t, s, bob)
		files := awaitFiles(t, s, bob, bobDM, s.BotID, 1)
		require.Equal(t, "REQUEST", files[0].Method)
		require.Contains(t, files[0].Body, "📅 Invitation from @alice:localhost: Weekly coordination")
		got := readICS(t, files[0].Data)
		require.Equal(t, "REQUEST", got.Method)
		require.Equal(t, []string{"Europe/Berlin"}, got.VTimezones)
		require.Equal(t, got.TZIDs, got.VTimezones)
		ev := got.Events[0]
		require.Equal(t, 0, ev.Sequence)
		require.Contains(t, ev.Location, room.String())
		starts := got.starts()
		require.Len(t, starts, 36-1, "36 Mondays from 15 Mar to 15 Nov 2027, less 5 April")
		require.Equal(t, "2027-03-22T09:00:00.000Z", starts[1], "CET before the last Sunday of March")
		require.Equal(t, "2027-03-29T08:00:00.000Z", starts[2], "CEST after it")
		require.NotContains(t, starts, "2027-04-05T08:00:00.000Z")
		require.Contains(t, starts, "2027-10-25T08:00:00.000Z", "CEST before the last Sunday of October")
		require.Contains(t, starts, "2027-11-01T09:00:00.000Z", "CET after it")
		carolDM := botDM(t, s, carol)
		cf := awaitFiles(t, s, carol, carolDM, s.BotID, 1)
		require.Equal(t, starts, readICS(t, cf[0].Data).starts())
	})

	var httpMeeting string
	var httpRoom id.RoomID
	t.Run("the same by HTTP with the organiser's access token", func(t *testing.T) {
		status, out := api(t, s, "POST", "meeting/create", "Bearer "+alice.Client.AccessToken, map[string]any{
			"title": "Weekly by API", "start": "2027-03-16T14:00", "duration": "30m", "rrule": "FREQ=WEEKLY;COUNT=8",
			"except": []string{"2027-03-30"}, "invite": []string{bob.ID.String()},
		})
		require.Equal(t, 201, status, out)
		httpMeeting = out["meeting_id"].(string)
		require.Equal(t, "2027-03-16T14:00:00+01:00", out["occurrences"].([]any)[0])
		require.Equal(t, "2027-03-23T14:00:00+01:00", out["occurrences"].([]any)[1])
		require.Equal(t, "2027-04-06T14:00:00+02:00", out["occurrences"].([]any)[2])
		httpRoom = id.RoomID(out["room_id"].(string))
		require.Contains(t, inviteReason(t, bob, httpRoom), "📅 Weekly by API — Tue 16 Mar 2027, 14:00–14:30 (Europe/Berlin); repeats every week, 8 times; except 30 Mar 2027")
		files := awaitFiles(t, s, bob, bobDM, s.BotID, 2)
		got := readICS(t, files[1].Data)
		require.Len(t, got.starts(), 7)
		require.Equal(t, "2027-04-06T12:00:00.000Z", got.starts()[2])
		// Carol, a participant of the first meeting only, reads it with an
		// OpenID token; she may not change it, nor see the second.
		status, out = api(t, s, "GET", "meeting/"+meetingID, mxIdentity(t, carol), nil)
		require.Equal(t, 200, status, out)
		status, out = api(t, s, "GET", "meeting/"+httpMeeting, mxIdentity(t, carol), nil)
		require.Equal(t, 404, status, out)
		status, out = api(t, s, "PUT", "meeting/update", mxIdentity(t, carol), map[string]any{"meeting_id": meetingID, "title": "Carol's now"})
		require.Equal(t, 403, status, out)
		require.Contains(t, out["error"], "only the organiser @alice:localhost may change meeting "+meetingID)
		status, out = api(t, s, "POST", "meeting/create", "Bearer not-a-token", map[string]any{"title": "x", "start": "2027-03-16T14:00"})
		require.Equal(t, 401, status, out)
	})

	t.Run("update and cancel send the right METHOD and SEQUENCE", func(t *testing.T) {
		say(`!conf meeting update ` + meetingID + ` start="2027-03-15 11:00"`)
		waitForMessage(t, alice, cmdRoom, s.BotID, "✅ Updated")
		files := awaitFiles(t, s, bob, bobDM, s.BotID, 3)
		f := files[2]
		require.Equal(t, meetingID, f.ID)
		got := readICS(t, f.Data)
		require.Equal(t, "REQUEST", got.Method)
		require.Equal(t, 1, got.Events[0].Sequence)
		require.Equal(t, "2027-03-15T10:00:00.000Z", got.starts()[0])
		require.NotContains(t, got.starts(), "2027-04-05T09:00:00.000Z", "the exception moved with the series")

		// Carol has not joined yet: her invite now shows the new time (a new
		// invite event, as Nordeck's bot sends); Bob, who joined, stays joined.
		awaitInviteReason(t, carol, room, "📅 Weekly coordination — Mon 15 Mar 2027, 11:00–12:00 (Europe/Berlin); repeats every week, until 15 Nov 2027; except 5 Apr 2027 · invited by @alice:localhost")
		var bobMember map[string]any
		require.NoError(t, bob.Client.StateEvent(ctx, room, event.StateMember, bob.ID.String(), &bobMember))
		require.Equal(t, "join", bobMember["membership"])

		// The same again: nothing changes, no file, no SEQUENCE.
		say(`!conf meeting update ` + meetingID + ` start="2027-03-15 11:00"`)
		waitForMessage(t, alice, cmdRoom, s.BotID, "Nothing changed")

		// Carol declines; the next change must not invite her again.
		_, err := carol.Client.LeaveRoom(ctx, room)
		require.NoError(t, err)

		say(`!conf meeting cancel ` + meetingID + ` 2027-03-22`)
		waitForMessage(t, alice, cmdRoom, s.BotID, "✅ Cancelled the occurrence on 2027-03-22")
		var carolMember map[string]any
		require.NoError(t, bob.Client.StateEvent(ctx, room, event.StateMember, carol.ID.String(), &carolMember))
		require.Equal(t, "leave", carolMember["membership"], "who declined is not invited again")
		files = awaitFiles(t, s, bob, bobDM, s.BotID, 4)
		require.Len(t, files, 4, "the unchanged update sent nothing")
		got = readICS(t, files[3].Data)
		require.Equal(t, "CANCEL", got.Method)
		require.Equal(t, 2, got.Events[0].Sequence)
		require.Equal(t, "2027-03-22T10:00:00.000Z", got.Events[0].RecurrenceID)

		status, out := api(t, s, "POST", "meeting/cancel", "Bearer "+alice.Client.AccessToken, map[string]any{"meeting_id": httpMeeting})
		require.Equal(t, 200, status, out)
		files = awaitFiles(t, s, bob, bobDM, s.BotID, 5)
		got = readICS(t, files[4].Data)
		require.Equal(t, "CANCEL", got.Method)
		require.Equal(t, "", got.Events[0].RecurrenceID)
		require.Equal(t, 1, got.Events[0].Sequence)
		require.Equal(t, httpMeeting, files[4].ID)
		// Bob never joined it: his pending invite now says it is cancelled.
		awaitInviteReason(t, bob, httpRoom, "❌ Cancelled: Weekly by API — Tue 16 Mar 2027, 14:00–14:30 (Europe/Berlin); repeats every week, 8 times; except 30 Mar 2027 · invited by @alice:localhost")

		// One occurrence moved: a REQUEST with a RECURRENCE-ID override.
		say(`!conf meeting update ` + meetingID + ` occurrence=2027-04-12 start="2027-04-13 15:00"`)
		waitForMessage(t, alice, cmdRoom, s.BotID, "12 Apr moved to Tue 13 Apr 15:00")
		files = awaitFiles(t, s, bob, bobDM, s.BotID, 6)
		got = readICS(t, files[5].Data)
		require.Equal(t, "REQUEST", got.Method)
		require.Equal(t, 3, got.Events[0].Sequence)
		require.Equal(t, 1, got.Overrides)
		require.Contains(t, got.starts(), "2027-04-13T13:00:00.000Z")
		require.NotContains(t, got.starts(), "2027-04-12T09:00:00.000Z")
		var md map[string]any
		require.NoError(t, bob.Client.StateEvent(ctx, room, event.Type{Type: "net.nordeck.meetings.metadata", Class: event.StateEventType}, "", &md))
		require.Len(t, md["calendar"], 2)
		require.Equal(t, map[string]any{"tzid": "Europe/Berlin", "value": "20270412T110000"}, md["calendar"].([]any)[1].(map[string]any)["recurrenceId"])
	})

	t.Run("the webcal feed lists exactly the user's meetings and refuses a wrong token", func(t *testing.T) {
		// Carol's own meeting, which must not show in Bob's feed.
		status, out := api(t, s, "POST", "meeting/create", "Bearer "+carol.Client.AccessToken, map[string]any{"title": "Carol alone", "start": "2027-05-01T09:00"})
		require.Equal(t, 201, status, out)
		// The feed address is issued for an access token only, not for an
		// OpenID token (which any call focus a room names gets).
		status, out = api(t, s, "POST", "feed", mxIdentity(t, bob), nil)
		require.Equal(t, 401, status, out)
		status, out = api(t, s, "POST", "feed", "Bearer "+bob.Client.AccessToken, nil)
		require.Equal(t, 200, status, out)
		feed := out["url"].(string)
		require.True(t, strings.HasPrefix(feed, s.FocusURL+"/meetings/cal/"), feed)
		resp, err := http.Get(feed)
		require.NoError(t, err)
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		got := readICS(t, data)
		var titles []string
		for _, e := range got.Events {
			titles = append(titles, e.Summary+"/"+e.Status)
		}
		require.ElementsMatch(t, []string{"Weekly coordination/CONFIRMED", "Weekly by API/CANCELLED"}, titles)
		last := feed[len(feed)-5 : len(feed)-4]
		other := map[bool]string{true: "b", false: "a"}[last == "a"]
		for _, bad := range []string{strings.Replace(feed, "/cal/", "/cal/x", 1), feed[:len(feed)-5] + other + ".ics", s.FocusURL + "/meetings/cal/.ics"} {
			resp, err := http.Get(bad)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, 404, resp.StatusCode, bad)
		}

		// Asked in the shared meeting room: bob has an address (the API's),
		// which the bot cannot resend and does not replace unasked; on
		// reset it sends a new one to the direct chat only, and the old one
		// stops working.
		_, err = bob.Client.SendText(ctx, room, "!conf meeting feed")
		require.NoError(t, err)
		waitForMessage(t, bob, room, s.BotID, "You already have a calendar address")
		_, err = bob.Client.SendText(ctx, room, "!conf meeting feed reset")
		require.NoError(t, err)
		answer := waitForMessage(t, bob, room, s.BotID, "Made a new calendar address; the old one no longer works. I sent it to you in our direct chat")
		require.NotContains(t, answer, "/meetings/cal/")
		dmText := waitForMessage(t, bob, bobDM, s.BotID, "Your private calendar address")
		newFeed := regexp.MustCompile(`https?://\S+\.ics`).FindString(dmText)
		require.NotEmpty(t, newFeed, dmText)
		resp, err = http.Get(newFeed)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		resp, err = http.Get(feed)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, 404, resp.StatusCode, "the old address stopped working")
	})

	t.Run("bad input is refused with a clear message and creates nothing", func(t *testing.T) {
		before := meetingCount(t, s)
		for cmd, want := range map[string]string{
			`!conf meeting create Impossible start="2027-02-29 10:00"`:                              `start: "2027-02-29" is not a date: February 2027 has 28 days`,
			`!conf meeting create Nowhere start="2027-03-15 10:00" tz=Atlantis/Poseidonia`:          `timezone: unknown time zone "Atlantis/Poseidonia"`,
			`!conf meeting create Forever start="2027-03-15 10:00" rrule=FREQ=SECONDLY`:             "rrule: FREQ=SECONDLY repeats more than daily",
			`!conf meeting create Millions start="2027-03-15 10:00" rrule=FREQ=DAILY;COUNT=9999999`: "rrule: COUNT=9999999 is more than the 1000 occurrences",
			`!conf meeting create Skipped start="2027-03-28 02:30"`:                                 "2027-03-28 02:30 does not exist in Europe/Berlin",
		} {
			say(cmd)
			reply := waitForMessage(t, alice, cmdRoom, s.BotID, want)
			require.True(t, strings.HasPrefix(reply, "❌ I did not schedule the meeting — "), reply)
		}
		many := make([]string, 10000)
		for i := range many {
			many[i] = fmt.Sprintf("@user%05d:localhost", i)
		}
		status, out := api(t, s, "POST", "meeting/create", "Bearer "+alice.Client.AccessToken, map[string]any{"title": "Huge", "start": "2027-03-15T10:00", "participants": many})
		require.Equal(t, 403, status, out)
		require.Contains(t, out["error"], "participants: 10000 invitees; a meeting may have at most 1000")
		status, out = api(t, s, "POST", "meeting/create", "Bearer "+alice.Client.AccessToken, map[string]any{
			"title": "KRITIS with a stranger", "start": "2027-03-15T10:00", "level": "kritis", "invite": []string{"@eve:elsewhere.example"}})
		require.Equal(t, 403, status, out)
		require.Equal(t, "participants: @eve:elsewhere.example is on elsewhere.example, which level kritis of this meeting does not allow (allowed: localhost)", out["error"])
		// Bob, not the organiser, tries to change Alice's meeting in its room.
		_, err := bob.Client.SendText(ctx, room, "!conf meeting update title=Mine")
		require.NoError(t, err)
		waitForMessage(t, bob, room, s.BotID, "❌ I did not change the meeting — forbidden: only the organiser @alice:localhost may change meeting "+meetingID)
		require.Equal(t, before, meetingCount(t, s), "nothing was half-created")
	})

	t.Run("the reminder arrives before the start, mentioning everyone", func(t *testing.T) {
		start := time.Now().Add(10*time.Minute + 5*time.Second).In(mustZone(t, "Europe/Berlin"))
		status, out := api(t, s, "POST", "meeting/create", "Bearer "+alice.Client.AccessToken, map[string]any{
			"title": "Soon", "start": start.Format("2006-01-02T15:04:05"), "invite": []string{bob.ID.String()}})
		require.Equal(t, 201, status, out)
		soon := id.RoomID(out["room_id"].(string))
		_, err := bob.Client.JoinRoomByID(ctx, soon)
		require.NoError(t, err)
		body := waitForMessage(t, bob, soon, s.BotID, "⏰ Soon starts in")
		require.Contains(t, body, "Join the call: https://matrix.to/#/"+soon.String())
		require.Contains(t, body, bob.ID.String())
		require.True(t, time.Now().Before(start), "the reminder came before the start")
	})
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	require.NoError(t, err)
	return loc
}
