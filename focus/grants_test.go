package focus

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
)

func openGrantDB(t *testing.T) *dbutil.Database {
	t.Helper()
	db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "g.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// The focus's migrations run once and are recorded in its own version table.
func TestGrantMigrationsAndQueries(t *testing.T) {
	ctx := context.Background()
	db := openGrantDB(t)
	s, err := newGrantStore(ctx, db)
	require.NoError(t, err)
	_, err = newGrantStore(ctx, db) // idempotent
	require.NoError(t, err)
	var version int
	require.NoError(t, db.QueryRow(ctx, "SELECT version FROM "+VersionTable).Scan(&version))
	require.Equal(t, len(upgradeTable), version)

	now := time.Now().Truncate(time.Millisecond)
	for i, g := range []Grant{
		{TokenID: "t1", LiveKitRoom: "lk1", Identity: "a1", RoomID: "!r1", UserID: "@a", DeviceID: "D1", IssuedAt: now.Add(-2 * time.Hour)},
		{TokenID: "t2", LiveKitRoom: "lk1", Identity: "a2", RoomID: "!r1", UserID: "@a", DeviceID: "D2", IssuedAt: now},
		{TokenID: "t3", LiveKitRoom: "lk2", Identity: "a3", RoomID: "!r2", UserID: "@a", DeviceID: "D1", IssuedAt: now},
		{TokenID: "t4", LiveKitRoom: "lk1", Identity: "b1", RoomID: "!r1", UserID: "@b", DeviceID: "D9", IssuedAt: now},
		{TokenID: "t5", LiveKitRoom: "lk1", Identity: "a5", RoomID: "!r1", UserID: "@a", DeviceID: "D5", IssuedAt: now}, // never activated
	} {
		g.ExpiresAt = g.IssuedAt.Add(time.Hour)
		require.NoError(t, s.reserve(ctx, g), i)
		if g.TokenID != "t5" {
			require.NoError(t, s.activate(ctx, g.TokenID, g.ExpiresAt, time.Time{}, g.IssuedAt, ""), i)
		}
	}
	_, ok, err := s.get(ctx, "t5")
	require.NoError(t, err)
	require.False(t, ok, "a reserved grant is not usable")
	rooms, err := s.roomsForUser(ctx, "@a")
	require.NoError(t, err)
	require.Len(t, rooms, 2)
	require.Equal(t, "a2", rooms[0].Identity, "the newest grant of the room")
	require.Equal(t, "!r2", rooms[1].RoomID)

	revoked, err := s.revokeUser(ctx, "!r1", "@a", now)
	require.NoError(t, err)
	require.Len(t, revoked, 3, "active and reserved grants")
	require.ErrorIs(t, s.activate(ctx, "t5", now.Add(time.Hour), time.Time{}, now, ""), ErrGrantRevoked)
	revoked, err = s.revokeUser(ctx, "!r1", "@a", now)
	require.NoError(t, err)
	require.Empty(t, revoked, "revoked once")
	g, ok, err := s.get(ctx, "t2")
	require.NoError(t, err)
	require.True(t, ok, "revoked grants are kept")
	require.True(t, g.RevokedAt.Equal(now))

	// Refreshed tokens extend a grant's life; purge waits for the last token.
	require.NoError(t, s.extend(ctx, "t1", now.Add(3*time.Hour)))
	n, err := s.purge(ctx, now.Add(90*time.Minute))
	require.NoError(t, err)
	require.EqualValues(t, 4, n, "t2..t5 expired; t1 was extended")
	_, ok, err = s.get(ctx, "t1")
	require.NoError(t, err)
	require.True(t, ok)
}

// Grants of schema v1 (tokens without ID) survive the upgrade and can still
// be revoked per identity.
func TestGrantMigrationFromV1(t *testing.T) {
	ctx := context.Background()
	db := openGrantDB(t)
	require.NoError(t, db.Child(VersionTable, upgradeTable[:1], nil).Upgrade(ctx))
	now := time.Now().Truncate(time.Millisecond)
	_, err := db.Exec(ctx, `INSERT INTO focus_grant (lk_room, identity, room_id, user_id, device_id, issued_at, expires_at)
		VALUES ('lk', 'id', '!r', '@u', 'D', $1, $2)`, now.UnixMilli(), now.Add(time.Hour).UnixMilli())
	require.NoError(t, err)
	s, err := newGrantStore(ctx, db)
	require.NoError(t, err)
	rooms, err := s.roomsForUser(ctx, "@u")
	require.NoError(t, err)
	require.Len(t, rooms, 1)
	require.Equal(t, "id", rooms[0].Identity)
	revoked, err := s.revokeUser(ctx, "!r", "@u", now)
	require.NoError(t, err)
	require.Len(t, revoked, 1)
	at, err := s.lastRevocation(ctx, "lk", "id")
	require.NoError(t, err)
	require.True(t, at.Equal(now))
}
