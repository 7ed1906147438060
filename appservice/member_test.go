package appservice

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestMembershipReadAsTheHomeserverDoes: a member event's membership is
// the member named exactly "membership", as the homeserver's auth rules
// read it. A user who left with {"membership":"leave","Membership":"join"}
// stayed joined here (encoding/json matches names case-insensitively, the
// last spelling won), and one who left with a mistyped free-text field
// ("displayname": 1) too (the whole event was ignored): their call
// participants were kept and IsJoined kept answering yes from the store.
func TestMembershipReadAsTheHomeserverDoes(t *testing.T) {
	ctx := context.Background()
	a := newTestAppservice(t, "http://127.0.0.1:1")
	const room, user = "!r:hs.test", "@mallory:hs.test"
	n := 0
	member := func(content string) {
		t.Helper()
		n++
		evt := fmt.Sprintf(`{"type":"m.room.member","state_key":%q,"room_id":%q,"sender":%q,"event_id":"$m%d","origin_server_ts":1,"content":%s}`,
			user, room, user, n, content)
		require.Equal(t, http.StatusOK, putTransaction(t, a, fmt.Sprintf("t%d", n), evt))
	}
	membership := func() event.Membership {
		t.Helper()
		m, err := a.state.GetMembership(ctx, room, id.UserID(user))
		require.NoError(t, err)
		return m
	}
	removals := func() int {
		k := 0
		for {
			select {
			case j := <-a.jobs:
				if j.name == "remove_participants" {
					k++
				}
			default:
				return k
			}
		}
	}

	for _, leave := range []string{
		`{"membership":"leave","Membership":"join"}`,
		`{"membership":"leave","displayname":1}`,
		`{"membership":"leave","is_direct":"yes","reason":{"x":1}}`,
		`{"membership":"leave","membership":"leave"}`,
	} {
		member(`{"membership":"join","displayname":"Mallory"}`)
		require.Equal(t, event.MembershipJoin, membership())
		require.Zero(t, removals())
		member(leave)
		require.Equal(t, event.MembershipLeave, membership(), leave)
		require.Equal(t, 1, removals(), "the participants of %s are removed", leave)
	}

	// The other way round: the homeserver reads a join.
	member(`{"membership":"join","MEMBERSHIP":"leave"}`)
	require.Equal(t, event.MembershipJoin, membership())
	require.Zero(t, removals())

	// Without a membership string the homeserver accepts no member event:
	// ignored as malformed, the membership stays.
	before := testutil.ToFloat64(a.metrics.eventsIgnored.WithLabelValues("malformed"))
	member(`{"Membership":"leave"}`)
	member(`{"membership":0}`)
	require.Equal(t, before+2, testutil.ToFloat64(a.metrics.eventsIgnored.WithLabelValues("malformed")))
	require.Equal(t, event.MembershipJoin, membership())
	require.Zero(t, removals())
}

// TestIsJoinedAsksForTheMembershipAsTheHomeserverReadsIt: when the store
// does not say joined, IsJoined asks the homeserver for the member event;
// one whose content is {"membership":"leave","Membership":"join"} (a user
// who left so) was taken for a join — and written into the store as one.
func TestIsJoinedAsksForTheMembershipAsTheHomeserverReadsIt(t *testing.T) {
	ctx := context.Background()
	const room, user = "!r:hs.test", "@mallory:hs.test"
	asked := 0
	var mu sync.Mutex
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked++
		mu.Unlock()
		if r.Method != http.MethodGet || r.URL.Path != "/_matrix/client/v3/rooms/!r:hs.test/state/m.room.member/@mallory:hs.test" {
			http.Error(w, `{"errcode":"M_NOT_FOUND"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"membership":"leave","Membership":"join"}`))
	}))
	defer hs.Close()
	a := newTestAppservice(t, hs.URL)
	joined, err := a.IsJoined(ctx, room, user)
	require.NoError(t, err)
	require.False(t, joined)
	mu.Lock()
	require.Equal(t, 1, asked)
	mu.Unlock()
	m, err := a.state.GetMembership(ctx, room, id.UserID(user))
	require.NoError(t, err)
	require.Equal(t, event.MembershipLeave, m, "the store keeps what the homeserver reads")
}

// TestPowerLevelsReadAsTheHomeserverDoes: power levels are the members
// named exactly, as the homeserver's auth rules read them. A member who
// may send m.room.power_levels added {"Users":{"@mod:hs.test":1000}},
// which the homeserver ignores and encoding/json merged into users: mod
// was the room's top level here and could, for one, remove its access
// policy. Levels given as strings (room versions 1 to 9 allow them) made
// the whole event be ignored and the previous levels stay in force here.
func TestPowerLevelsReadAsTheHomeserverDoes(t *testing.T) {
	ctx := context.Background()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"errcode":"M_NOT_FOUND","error":"no"}`, http.StatusNotFound)
	}))
	defer hs.Close()
	a := newTestAppservice(t, hs.URL)
	const room = "!r:hs.test"
	n := 0
	levels := func(content string) {
		t.Helper()
		n++
		evt := fmt.Sprintf(`{"type":"m.room.power_levels","state_key":"","room_id":%q,"sender":"@admin:hs.test","event_id":"$p%d","origin_server_ts":1,"content":%s}`,
			room, n, content)
		require.Equal(t, http.StatusOK, putTransaction(t, a, fmt.Sprintf("t%d", n), evt))
	}
	powers := func(user string) [2]int64 {
		s, top := a.powers(ctx, room, id.UserID(user))
		return [2]int64{s, top}
	}

	levels(`{"users":{"@admin:hs.test":100,"@mod:hs.test":50},"Users":{"@mod:hs.test":1000},"state_default":50}`)
	require.Equal(t, [2]int64{50, 100}, powers("@mod:hs.test"))
	require.Equal(t, [2]int64{100, 100}, powers("@admin:hs.test"))

	levels(`{"users":{"@admin:hs.test":"100","@mod:hs.test":" 10"},"users_default":"0","events":{"de.gxconf.access":"75"}}`)
	require.Equal(t, [2]int64{10, 100}, powers("@mod:hs.test"))
	require.Equal(t, int64(75), accessEventLevel(a.powerLevels(ctx, room)))

	// A level the homeserver would refuse: the event is ignored.
	before := testutil.ToFloat64(a.metrics.eventsIgnored.WithLabelValues("malformed"))
	levels(`{"users":{"@mod:hs.test":"lots"}}`)
	require.Equal(t, before+1, testutil.ToFloat64(a.metrics.eventsIgnored.WithLabelValues("malformed")))
	require.Equal(t, [2]int64{10, 100}, powers("@mod:hs.test"))
}
