package appservice

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/lib/pq"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/test/harness"
)

// testPostgres starts a throwaway PostgreSQL cluster for the test and
// returns its empty database. Without the server binaries (scripts/deps.sh
// installs them) the test fails; only -short skips it.
func testPostgres(t *testing.T) *dbutil.Database {
	t.Helper()
	pg, err := harness.StartPostgres(context.Background())
	if err != nil && testing.Short() {
		t.Skipf("PostgreSQL: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres log:\n%s", pg.Log())
		}
		pg.Stop()
	})
	db, err := dbutil.NewWithDialect(pg.URI, "postgres")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// testDialects runs fn once on SQLite and once on PostgreSQL.
func testDialects(t *testing.T, fn func(t *testing.T, db *dbutil.Database)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, testSQLite(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, testPostgres(t)) })
}

// putTransaction sends one transaction as the homeserver does and returns
// the status.
func putTransaction(t *testing.T, a *Appservice, txnID string, events ...string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/"+txnID,
		strings.NewReader(`{"events":[`+strings.Join(events, ",")+`]}`))
	req.Header.Set("Authorization", "Bearer "+a.reg.ServerToken)
	a.Handler().ServeHTTP(rec, req)
	return rec.Code
}

// TestUnstorableContentDoesNotWedgeTransactions: PostgreSQL text cannot hold
// a NUL (JSON "\u0000") and jsonb cannot either, and any room member can put
// one into an event. Such an event used to fail its transaction with 500, so
// the homeserver retried the same transaction for ever and no later event — a
// leave, a ban — reached gxconf. Now malformed memberships (control
// characters in IDs, an unknown membership) are ignored, NULs are stripped
// from display names and avatar URLs, and an event whose content the
// database still refuses is skipped; every transaction is answered 200 and
// the events after the poison are applied.
func TestUnstorableContentDoesNotWedgeTransactions(t *testing.T) {
	testDialects(t, func(t *testing.T, db *dbutil.Database) {
		ctx := context.Background()
		a := newTestAppserviceOn(t, "http://127.0.0.1:1", db)
		room := "!r:hs.test"
		for i, tc := range []struct {
			name, event string
			malformed   float64
		}{
			{"rtc.member with a NUL in device_id",
				`{"type":"org.matrix.msc4143.rtc.member","room_id":"!r:hs.test","sender":"@mallory:hs.test","event_id":"$a","origin_server_ts":1,` +
					`"content":{"slot_id":"m.call#ROOM","sticky_key":"k","member":{"id":"m1","device_id":"D\u0000"}}}`, 1},
			{"call.member with a NUL in device_id",
				`{"type":"org.matrix.msc3401.call.member","state_key":"_@mallory:hs.test_D","room_id":"!r:hs.test","sender":"@mallory:hs.test","event_id":"$b","origin_server_ts":1,` +
					`"content":{"application":"m.call","call_id":"","device_id":"D\u0000","scope":"m.room"}}`, 1},
			{"call.member with a NUL in its state key",
				`{"type":"org.matrix.msc3401.call.member","state_key":"_@mallory:hs.test_D\u0000","room_id":"!r:hs.test","sender":"@mallory:hs.test","event_id":"$c","origin_server_ts":1,` +
					`"content":{"application":"m.call","call_id":"","device_id":"D","scope":"m.room"}}`, 1},
			{"member with a NUL in display name and avatar",
				`{"type":"m.room.member","state_key":"@mallory:hs.test","room_id":"!r:hs.test","sender":"@mallory:hs.test","event_id":"$d","origin_server_ts":1,` +
					`"content":{"membership":"join","displayname":"Mal\u0000lory","avatar_url":"mxc://hs.test/a\u0000b"}}`, 0},
			{"member with an unknown membership",
				`{"type":"m.room.member","state_key":"@mallory:hs.test","room_id":"!r:hs.test","sender":"@mallory:hs.test","event_id":"$e","origin_server_ts":1,` +
					`"content":{"membership":"join\u0000"}}`, 1},
		} {
			txnID := "poison" + strconv.Itoa(i)
			t.Run(tc.name, func(t *testing.T) {
				before := testutil.ToFloat64(a.metrics.eventsIgnored.WithLabelValues("malformed"))
				require.Equal(t, http.StatusOK, putTransaction(t, a, txnID, tc.event))
				require.Equal(t, tc.malformed, testutil.ToFloat64(a.metrics.eventsIgnored.WithLabelValues("malformed"))-before)
			})
		}
		member, err := a.state.GetMember(ctx, id.RoomID(room), "@mallory:hs.test")
		require.NoError(t, err)
		require.Equal(t, "Mallory", member.Displayname, "the display name is kept without its NUL")
		require.Equal(t, id.ContentURIString("mxc://hs.test/ab"), member.AvatarURL)

		// Power levels naming a user with a NUL: jsonb refuses them in
		// PostgreSQL, SQLite stores them. Either way the transaction goes
		// through.
		require.Equal(t, http.StatusOK, putTransaction(t, a, "pl",
			`{"type":"m.room.power_levels","state_key":"","room_id":"!r:hs.test","sender":"@mallory:hs.test","event_id":"$pl","origin_server_ts":1,`+
				`"content":{"users":{"@mallory:hs.test":100,"@x\u0000:hs.test":50}}}`))
		unstorable := 0.0
		if db.Dialect == dbutil.Postgres {
			unstorable = 1
		}
		require.Equal(t, unstorable, testutil.ToFloat64(a.metrics.eventsIgnored.WithLabelValues("unstorable")))

		// Alice is in the call; a transaction holding a poison event and
		// then her leave is applied: her membership ends.
		require.Equal(t, http.StatusOK, putTransaction(t, a, "alice-joins",
			`{"type":"org.matrix.msc4143.rtc.member","room_id":"!r:hs.test","sender":"@alice:hs.test","event_id":"$j","origin_server_ts":`+
				strconv.FormatInt(time.Now().UnixMilli(), 10)+`,"content":{"slot_id":"m.call#ROOM","sticky_key":"k","member":{"id":"m1","device_id":"ADEV"}}}`))
		list, err := a.store.callMembers(ctx, room, time.Now())
		require.NoError(t, err)
		require.Len(t, list, 1)
		require.Equal(t, http.StatusOK, putTransaction(t, a, "poison-then-leave",
			`{"type":"org.matrix.msc4143.rtc.member","room_id":"!r:hs.test","sender":"@mallory:hs.test","event_id":"$p","origin_server_ts":1,`+
				`"content":{"slot_id":"m.call#ROOM","sticky_key":"k","member":{"id":"m1\u0000","device_id":"D"}}}`,
			`{"type":"m.room.member","state_key":"@alice:hs.test","room_id":"!r:hs.test","sender":"@alice:hs.test","event_id":"$l","origin_server_ts":2,`+
				`"content":{"membership":"leave","displayname":"Al\u0000ice"}}`))
		list, err = a.store.callMembers(ctx, room, time.Now())
		require.NoError(t, err)
		require.Empty(t, list, "the leave after the poison event was applied")
		require.Zero(t, testutil.ToFloat64(a.metrics.transactions.WithLabelValues("error")))
	})
}
