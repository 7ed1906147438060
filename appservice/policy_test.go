package appservice

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

type nopRemover struct{}

func (nopRemover) RemoveUser(context.Context, string, string, string) (int, error) { return 0, nil }

// recordingHomeserver answers every request with an event ID and records
// "METHOD path" of each.
type recordingHomeserver struct {
	mu   sync.Mutex
	reqs []string
}

func (h *recordingHomeserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	h.mu.Lock()
	h.reqs = append(h.reqs, r.Method+" "+r.URL.Path)
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"event_id":"$x"}`))
}

// count counts the requests with method whose path contains part.
func (h *recordingHomeserver) count(method, part string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.reqs {
		if strings.HasPrefix(r, method+" ") && strings.Contains(r, part) {
			n++
		}
	}
	return n
}

// policyWrites counts the PUTs of the access policy state event.
func (h *recordingHomeserver) policyWrites() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.reqs {
		if strings.HasPrefix(r, http.MethodPut+" ") && strings.Contains(r, "/state/de.gxconf.access") {
			n++
		}
	}
	return n
}

func newTestAppservice(t *testing.T, hsURL string) *Appservice {
	t.Helper()
	return newTestAppserviceOn(t, hsURL, testSQLite(t))
}

// testSQLite is an empty SQLite database in the test's temporary directory.
func testSQLite(t *testing.T) *dbutil.Database {
	t.Helper()
	db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "as.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newTestAppserviceOn(t *testing.T, hsURL string, db *dbutil.Database) *Appservice {
	t.Helper()
	ctx := context.Background()
	cfg := DefaultConfig()
	a, err := New(ctx, Options{Config: cfg, Registration: NewRegistration(cfg, "hs.test"), HomeserverDomain: "hs.test",
		HomeserverURL: hsURL, DB: db, Remover: nopRemover{}, Log: zerolog.Nop(), Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	return a
}

// The bot writes de.gxconf.access with its own power, so "policy set" and
// "policy clear" are refused to a member who could not send that state event
// themselves; a member who could still may, and "show" stays open.
func TestPolicyCommandNeedsStatePower(t *testing.T) {
	ctx := context.Background()
	hs := &recordingHomeserver{}
	srv := httptest.NewServer(hs)
	defer srv.Close()
	a := newTestAppservice(t, srv.URL)
	room := id.RoomID("!meeting:hs.test")
	alice, mallory := id.UserID("@alice:hs.test"), id.UserID("@mallory:hs.test")
	stateDefault := 50
	require.NoError(t, a.state.SetPowerLevels(ctx, room, &event.PowerLevelsEventContent{
		Users:           map[id.UserID]int{a.botID: 100, alice: 100},
		StateDefaultPtr: &stateDefault,
		Events:          map[string]int{"de.gxconf.access": 100},
	}))
	require.NoError(t, a.state.SetMembership(ctx, room, a.botID, event.MembershipJoin))
	require.NoError(t, a.store.putRoomPolicy(ctx, room.String(),
		`{"level":"kritis","required_credentials":[{"type":"EmployeeCredential"}],"allowed_homeservers":["hs.test"]}`, "$p", alice.String(), a.now()))
	set := ` policy set {"level":"kritis","required_credentials":[{"type":"Anything"}],"allowed_homeservers":["hs.test","evil.example"]}`

	for _, cmd := range []string{set, " policy clear"} {
		reply := a.command(ctx, room, mallory, cmd)
		require.NotNil(t, reply, cmd)
		require.Contains(t, reply.Body, "needs power level 100", cmd)
		require.Contains(t, reply.Body, "you have 0", cmd)
		require.Zero(t, hs.policyWrites(), "a power-0 member made the bot write the access policy: %s", cmd)
	}

	reply := a.command(ctx, room, mallory, " policy")
	require.NotNil(t, reply)
	require.Contains(t, reply.Body, "level kritis", "show stays open to every member")

	require.Nil(t, a.command(ctx, room, alice, set), "alice may send the state event, so the bot sets it for her")
	require.Equal(t, 1, hs.policyWrites())
}
