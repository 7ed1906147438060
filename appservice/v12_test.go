package appservice

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// confirmingBookings records who confirmed which booking for a room.
type confirmingBookings struct{ confirmed []string }

func (b *confirmingBookings) RoomBookings(context.Context, string) (string, error) {
	return "none", nil
}
func (b *confirmingBookings) ConfirmRoom(_ context.Context, _, bookingID, by string) (bool, error) {
	b.confirmed = append(b.confirmed, by+" "+bookingID)
	return true, nil
}

// createServingHomeserver is recordingHomeserver that answers the room's
// m.room.create state with content only, as Dendrite does (it ignores
// ?format=event).
type createServingHomeserver struct {
	recordingHomeserver
	createContent string
}

func (h *createServingHomeserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/state/m.room.create/") {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(h.createContent))
		return
	}
	h.recordingHomeserver.ServeHTTP(w, r)
}

// In a room of version 12 (MSC4289) the creators hold unlimited power and
// are not in power_levels.users: the room's highest level is theirs, so a
// member at the highest level of the users map (or anyone, with users
// empty) may not do what needs the room's top power — accept a booking for
// the room, clear its access policy. The creator may.
func TestRoomVersion12CreatorsHoldTheTopPower(t *testing.T) {
	ctx := context.Background()
	hs := &recordingHomeserver{}
	srv := httptest.NewServer(hs)
	defer srv.Close()
	a := newTestAppservice(t, srv.URL)
	bookings := &confirmingBookings{}
	a.bookings = bookings
	room := id.RoomID("!v12:hs.test")
	alice, mod, mallory := id.UserID("@alice:hs.test"), id.UserID("@mod:hs.test"), id.UserID("@mallory:hs.test")
	require.NoError(t, a.state.SetCreate(ctx, &event.Event{Type: event.StateCreate, Sender: alice, RoomID: room, StateKey: new(""),
		Content: event.Content{VeryRaw: []byte(`{"room_version":"12"}`), Parsed: &event.CreateEventContent{RoomVersion: "12"}}}))
	sd := 50
	require.NoError(t, a.state.SetPowerLevels(ctx, room, &event.PowerLevelsEventContent{
		Users: map[id.UserID]int{mod: 50, a.botID: 50}, StateDefaultPtr: &sd}))
	require.NoError(t, a.state.SetMembership(ctx, room, a.botID, event.MembershipJoin))

	a.command(ctx, room, mallory, " bookings accept bk_evil")
	a.command(ctx, room, mod, " bookings accept bk_mod")
	require.Empty(t, bookings.confirmed, "only the creators hold the room's top power")
	a.command(ctx, room, alice, " bookings accept bk_alice")
	require.Equal(t, []string{"@alice:hs.test bk_alice"}, bookings.confirmed)

	require.NoError(t, a.store.putRoomPolicy(ctx, room.String(),
		`{"level":"kritis","required_credentials":[{"type":"EmployeeCredential"}],"allowed_homeservers":["hs.test"]}`, "$p", alice.String(), a.now()))
	a.command(ctx, room, mod, " policy clear")
	require.Zero(t, hs.policyWrites(), "the moderator cleared the policy")
	a.command(ctx, room, alice, " policy clear")
	require.Equal(t, 1, hs.policyWrites(), "the creator may clear the policy")
}

// When the bot knows no create event, it asks the homeserver; one that
// answers with the content only (no sender) still tells the room's version:
// nobody is taken for a creator, and nobody in the users map holds the top
// power. A room of an older version is as before.
func TestRoomVersionFromTheHomeserver(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		version    string
		modConfirm bool
	}{{"12", false}, {"10", true}} {
		hs := &createServingHomeserver{createContent: `{"room_version":"` + tc.version + `","creator":"@alice:hs.test"}`}
		srv := httptest.NewServer(hs)
		a := newTestAppservice(t, srv.URL)
		bookings := &confirmingBookings{}
		a.bookings = bookings
		room := id.RoomID("!v" + tc.version + ":hs.test")
		mod := id.UserID("@mod:hs.test")
		require.NoError(t, a.state.SetPowerLevels(ctx, room, &event.PowerLevelsEventContent{Users: map[id.UserID]int{mod: 100}}))
		require.NoError(t, a.state.SetMembership(ctx, room, a.botID, event.MembershipJoin))
		a.command(ctx, room, mod, " bookings accept bk_1")
		require.Equal(t, tc.modConfirm, len(bookings.confirmed) == 1, "room version %s: %v", tc.version, bookings.confirmed)
		srv.Close()
	}
}

// The bot's notices mention nobody: an explicit, empty m.mentions, so that
// "@room" in text the bot repeats (an unknown command, a policy, a meeting
// title through the meetings bot) does not notify the room with the bot's
// power. An unknown command is repeated only in part.
func TestBotNoticesMentionNobody(t *testing.T) {
	ctx := context.Background()
	hs := &recordingHomeserver{}
	srv := httptest.NewServer(hs)
	defer srv.Close()
	a := newTestAppservice(t, srv.URL)
	room, mallory := id.RoomID("!r:hs.test"), id.UserID("@mallory:hs.test")
	for _, cmd := range []string{" @room", " policy @room", " help", " " + strings.Repeat("@room", 10000)} {
		reply := a.command(ctx, room, mallory, cmd)
		require.NotNil(t, reply, cmd)
		raw, err := json.Marshal(reply)
		require.NoError(t, err)
		require.Contains(t, string(raw), `"m.mentions":{}`, cmd)
		require.Less(t, len(reply.Body), 8<<10, "the unknown command is repeated in full")
	}
}
