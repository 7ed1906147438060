package appservice

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// failingBookings fails every confirmation with the store's text, or finds
// no binding.
type failingBookings struct{ err error }

func (b failingBookings) RoomBookings(context.Context, string) (string, error) { return "", b.err }
func (b failingBookings) ConfirmRoom(context.Context, string, string, string) (bool, error) {
	return false, b.err
}

// The bot's replies carry no internal text: a failure of the store or of
// the homeserver's transport (an internal address, a driver's message) is
// the operator's, logged, and the room is told so; a homeserver's refusal
// is named by its Matrix error, and a room's invalid policy event by what
// is wrong with it.
func TestBotKeepsInternalFailuresOutOfTheRoom(t *testing.T) {
	ctx := context.Background()
	const internal = "10.66.0.7:5432 pq: password authentication failed"
	type answerer = func(w http.ResponseWriter, r *http.Request) bool // true: answered
	var answer atomic.Pointer[answerer]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := answer.Load(); f != nil && (*f)(w, r) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"event_id":"$x"}`))
	}))
	defer srv.Close()
	a := newTestAppservice(t, srv.URL)
	room, alice := id.RoomID("!r:hs.test"), id.UserID("@alice:hs.test")
	require.NoError(t, a.state.SetPowerLevels(ctx, room, &event.PowerLevelsEventContent{Users: map[id.UserID]int{a.botID: 100, alice: 100}}))
	require.NoError(t, a.state.SetMembership(ctx, room, a.botID, event.MembershipJoin))
	text := func(cmd string) string {
		t.Helper()
		reply := a.command(ctx, room, alice, cmd)
		require.NotNil(t, reply, cmd)
		return reply.Body
	}
	a.mx.DefaultHTTPRetries = 0 // the failures below are not retried
	a.mx.BotClient().DefaultHTTPRetries = 0
	var dropped, refuse atomic.Bool
	fail := func(w http.ResponseWriter) { // a proxy's page, or the connection drops
		if !dropped.Load() {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("<html>upstream 10.66.0.7:8008 unreachable</html>"))
			return
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}
	internalText := []string{"10.66.0.7", strings.TrimPrefix(srv.URL, "http://"), "EOF", "HTTP 500"}
	requireNoInternalText := func(got, what string) {
		t.Helper()
		for _, s := range internalText {
			require.NotContains(t, got, s, what)
		}
	}

	// The room's state cannot be read: a proxy answers, the connection drops.
	answer.Store(new(answerer(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/state") {
			fail(w)
			return true
		}
		return false
	})))
	for _, drop := range []bool{false, true} {
		dropped.Store(drop)
		for _, cmd := range []string{" policy", " status"} {
			got := text(cmd)
			require.Contains(t, got, seeTheLog, cmd)
			requireNoInternalText(got, cmd)
		}
	}

	// The room's policy event is not valid: the room may know why.
	answer.Store(new(answerer(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/state") {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`[{"type":"de.gxconf.access","state_key":"","content":{"level":"geheim"}}]`))
			return true
		}
		return false
	})))
	got := text(" policy")
	require.Contains(t, got, "its event is not valid: ")
	require.Contains(t, got, "level")

	// Setting the policy: the homeserver refuses (its Matrix error is
	// named), then a proxy answers or the connection drops (nothing of
	// either is).
	require.NoError(t, a.store.putRoomPolicy(ctx, room.String(), "", "$p", alice.String(), a.now()))
	refuse.Store(true)
	answer.Store(new(answerer(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/state/de.gxconf.access") {
			return false
		}
		if refuse.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"You don't have permission"}`))
		} else {
			fail(w)
		}
		return true
	})))
	set := ` policy set {"level":"public","allowed_homeservers":["hs.test"]}`
	require.Contains(t, text(set), "(M_FORBIDDEN: You don't have permission)")
	refuse.Store(false)
	for _, drop := range []bool{false, true} {
		dropped.Store(drop)
		got = text(set)
		require.Contains(t, got, "(the homeserver did not answer)")
		requireNoInternalText(got, set)
	}

	// Accepting a booking: the store fails, or the room is not bound to it.
	a.bookings = failingBookings{err: errors.New(internal)}
	got = text(" bookings accept bk_1")
	require.Contains(t, got, seeTheLog)
	requireNoInternalText(got, "bookings accept")
	a.bookings = failingBookings{}
	require.Contains(t, text(" bookings accept bk_1"), `"bk_1": this room is not bound to it`)
}
