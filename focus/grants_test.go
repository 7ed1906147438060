package focus

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
)

// The focus's migrations run once and are recorded in its own version table.
func TestGrantMigrationsAndQueries(t *testing.T) {
	ctx := context.Background()
	db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "g.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	require.NoError(t, err)
	defer db.Close()
	s, err := newGrantStore(ctx, db)
	require.NoError(t, err)
	_, err = newGrantStore(ctx, db) // idempotent
	require.NoError(t, err)
	var version int
	require.NoError(t, db.QueryRow(ctx, "SELECT version FROM "+VersionTable).Scan(&version))
	require.Equal(t, len(upgradeTable), version)

	now := time.Now().Truncate(time.Millisecond)
	for i, g := range []Grant{
		{LiveKitRoom: "lk1", Identity: "a1", RoomID: "!r1", UserID: "@a", DeviceID: "D1", IssuedAt: now.Add(-2 * time.Hour)},
		{LiveKitRoom: "lk1", Identity: "a2", RoomID: "!r1", UserID: "@a", DeviceID: "D2", IssuedAt: now},
		{LiveKitRoom: "lk2", Identity: "a3", RoomID: "!r2", UserID: "@a", DeviceID: "D1", IssuedAt: now},
		{LiveKitRoom: "lk1", Identity: "b1", RoomID: "!r1", UserID: "@b", DeviceID: "D9", IssuedAt: now},
	} {
		g.ExpiresAt = g.IssuedAt.Add(time.Hour)
		require.NoError(t, s.put(ctx, g), i)
	}
	got, err := s.forUser(ctx, "!r1", "@a")
	require.NoError(t, err)
	require.Len(t, got, 2)
	rooms, err := s.roomsForUser(ctx, "@a")
	require.NoError(t, err)
	require.Len(t, rooms, 2)
	require.Equal(t, "a2", rooms[0].Identity, "the newest grant of the room")
	require.Equal(t, "!r2", rooms[1].RoomID)
	n, err := s.purge(ctx, now.Add(-time.Hour))
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}
