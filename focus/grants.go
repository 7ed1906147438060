package focus

import (
	"context"
	"embed"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
)

//go:embed migrations/*.sql
var migrations embed.FS

// upgradeTable holds the focus's schema migrations.
var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(migrations, "migrations").Finish()

// VersionTable is the focus's own schema version table.
const VersionTable = "focus_version"

// Grant is a LiveKit token handed out for a Matrix user in a room.
type Grant struct {
	LiveKitRoom string
	Identity    string
	RoomID      string
	UserID      string
	DeviceID    string
	IssuedAt    time.Time
	ExpiresAt   time.Time
}

// grantStore remembers grants so that participants can be removed later.
type grantStore struct {
	db *dbutil.Database
}

func newGrantStore(ctx context.Context, parent *dbutil.Database) (*grantStore, error) {
	db := parent.Child(VersionTable, upgradeTable, nil)
	if err := db.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade focus tables: %w", err)
	}
	return &grantStore{db: db}, nil
}

func (s *grantStore) put(ctx context.Context, g Grant) error {
	_, err := s.db.Exec(ctx, `
		INSERT INTO focus_grant (lk_room, identity, room_id, user_id, device_id, issued_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (lk_room, identity) DO UPDATE
		SET room_id=excluded.room_id, user_id=excluded.user_id, device_id=excluded.device_id,
		    issued_at=excluded.issued_at, expires_at=excluded.expires_at`,
		g.LiveKitRoom, g.Identity, g.RoomID, g.UserID, g.DeviceID, g.IssuedAt.UnixMilli(), g.ExpiresAt.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to store grant: %w", err)
	}
	return nil
}

const grantColumns = "lk_room, identity, room_id, user_id, device_id, issued_at, expires_at"

func (s *grantStore) forUser(ctx context.Context, roomID, userID string) ([]Grant, error) {
	return s.query(ctx, "SELECT "+grantColumns+" FROM focus_grant WHERE room_id=$1 AND user_id=$2", roomID, userID)
}

func (s *grantStore) query(ctx context.Context, query string, args ...any) ([]Grant, error) {
	rows, err := s.db.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("failed to query grants: %w", err)
	}
	defer rows.Close()
	var out []Grant
	for rows.Next() {
		var g Grant
		var issued, expires int64
		if err := rows.Scan(&g.LiveKitRoom, &g.Identity, &g.RoomID, &g.UserID, &g.DeviceID, &issued, &expires); err != nil {
			return nil, fmt.Errorf("failed to scan grant: %w", err)
		}
		g.IssuedAt, g.ExpiresAt = time.UnixMilli(issued), time.UnixMilli(expires)
		out = append(out, g)
	}
	return out, rows.Err()
}

// roomsForUser returns the newest grant of each Matrix room the user holds grants in.
func (s *grantStore) roomsForUser(ctx context.Context, userID string) ([]Grant, error) {
	all, err := s.query(ctx, "SELECT "+grantColumns+" FROM focus_grant WHERE user_id=$1 ORDER BY room_id, issued_at DESC", userID)
	if err != nil {
		return nil, err
	}
	var out []Grant
	for _, g := range all {
		if len(out) == 0 || out[len(out)-1].RoomID != g.RoomID {
			out = append(out, g)
		}
	}
	return out, nil
}

func (s *grantStore) delete(ctx context.Context, lkRoom, identity string) error {
	_, err := s.db.Exec(ctx, "DELETE FROM focus_grant WHERE lk_room=$1 AND identity=$2", lkRoom, identity)
	if err != nil {
		return fmt.Errorf("failed to delete grant: %w", err)
	}
	return nil
}

// purge forgets grants issued before cutoff.
func (s *grantStore) purge(ctx context.Context, cutoff time.Time) (int64, error) {
	res, err := s.db.Exec(ctx, "DELETE FROM focus_grant WHERE issued_at < $1", cutoff.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("failed to purge grants: %w", err)
	}
	return res.RowsAffected()
}
