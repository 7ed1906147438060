package appservice

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
)

//go:embed migrations/*.sql
var migrations embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(migrations, "migrations").Finish()

// VersionTable is the appservice's own schema version table.
const VersionTable = "appservice_version"

// CallMember is one MatrixRTC membership of a device in a room.
type CallMember struct {
	RoomID string
	// Kind is "msc3401" (org.matrix.msc3401.call.member state events) or
	// "msc4143" (org.matrix.msc4143.rtc.member).
	Kind string
	// Key is the state key (MSC3401) or sticky key (MSC4143).
	Key      string
	UserID   string
	DeviceID string
	// MemberID is the MatrixRTC member ID (MSC4143); empty for MSC3401.
	MemberID string
	SlotID   string
	// FocusURL is the livekit_service_url the member uses, if it says.
	FocusURL string
	// ExpiresAt is when the membership lapses; zero means no expiry was given.
	ExpiresAt time.Time
	UpdatedAt time.Time
}

type store struct {
	db *dbutil.Database
}

// contentRefused reports whether the database refused a statement for the
// values it was given rather than for being unavailable, and returns the
// SQLSTATE: class 22 (data exception, such as a NUL in text or jsonb), 23
// (integrity constraint violation) or 54 (program limit, such as an index
// row too large). Such a statement fails the same way on every retry.
// Connection failures, deadlocks, serialization failures, shutdowns and
// errors without a SQLSTATE (SQLite's) are not content refusals.
func contentRefused(err error) (sqlstate string, ok bool) {
	var se interface{ SQLState() string }
	if !errors.As(err, &se) {
		return "", false
	}
	code := se.SQLState()
	if len(code) != 5 {
		return "", false
	}
	switch code[:2] {
	case "22", "23", "54":
		return code, true
	}
	return "", false
}

func newStore(ctx context.Context, parent *dbutil.Database) (*store, error) {
	db := parent.Child(VersionTable, upgradeTable, nil)
	if err := db.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade appservice tables: %w", err)
	}
	return &store{db: db}, nil
}

// seenTxn reports whether a transaction ID was already processed.
func (s *store) seenTxn(ctx context.Context, txnID string) (bool, error) {
	var n int
	err := s.db.QueryRow(ctx, "SELECT COUNT(*) FROM as_txn WHERE txn_id=$1", txnID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("failed to look up transaction: %w", err)
	}
	return n > 0, nil
}

func (s *store) markTxn(ctx context.Context, txnID string, now time.Time) error {
	_, err := s.db.Exec(ctx, "INSERT INTO as_txn (txn_id, received_at) VALUES ($1, $2) ON CONFLICT (txn_id) DO NOTHING", txnID, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to record transaction: %w", err)
	}
	return nil
}

// purgeTxns forgets transaction IDs older than cutoff; homeservers do not
// redeliver after days.
func (s *store) purgeTxns(ctx context.Context, cutoff time.Time) error {
	_, err := s.db.Exec(ctx, "DELETE FROM as_txn WHERE received_at < $1", cutoff.UnixMilli())
	return err
}

func (s *store) putCallMember(ctx context.Context, m CallMember) error {
	var exp int64
	if !m.ExpiresAt.IsZero() {
		exp = m.ExpiresAt.UnixMilli()
	}
	_, err := s.db.Exec(ctx, `
		INSERT INTO as_call_member (room_id, kind, member_key, user_id, device_id, member_id, slot_id, focus_url, expires_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (room_id, kind, member_key) DO UPDATE
		SET user_id=excluded.user_id, device_id=excluded.device_id, member_id=excluded.member_id,
		    slot_id=excluded.slot_id, focus_url=excluded.focus_url, expires_at=excluded.expires_at,
		    updated_at=excluded.updated_at`,
		m.RoomID, m.Kind, m.Key, m.UserID, m.DeviceID, m.MemberID, m.SlotID, m.FocusURL, exp, m.UpdatedAt.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to store call member: %w", err)
	}
	return nil
}

func (s *store) deleteCallMember(ctx context.Context, roomID, kind, key string) error {
	_, err := s.db.Exec(ctx, "DELETE FROM as_call_member WHERE room_id=$1 AND kind=$2 AND member_key=$3", roomID, kind, key)
	if err != nil {
		return fmt.Errorf("failed to delete call member: %w", err)
	}
	return nil
}

func (s *store) deleteUserCallMembers(ctx context.Context, roomID, userID string) error {
	_, err := s.db.Exec(ctx, "DELETE FROM as_call_member WHERE room_id=$1 AND user_id=$2", roomID, userID)
	if err != nil {
		return fmt.Errorf("failed to delete call members: %w", err)
	}
	return nil
}

// CallMembers lists the room's current (unexpired) call memberships.
func (s *store) callMembers(ctx context.Context, roomID string, now time.Time) ([]CallMember, error) {
	rows, err := s.db.Query(ctx, `
		SELECT room_id, kind, member_key, user_id, device_id, member_id, slot_id, focus_url, expires_at, updated_at
		FROM as_call_member WHERE room_id=$1 AND (expires_at=0 OR expires_at>$2)
		ORDER BY user_id, device_id`, roomID, now.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("failed to query call members: %w", err)
	}
	defer rows.Close()
	var out []CallMember
	for rows.Next() {
		var m CallMember
		var exp, upd int64
		if err := rows.Scan(&m.RoomID, &m.Kind, &m.Key, &m.UserID, &m.DeviceID, &m.MemberID, &m.SlotID, &m.FocusURL, &exp, &upd); err != nil {
			return nil, fmt.Errorf("failed to scan call member: %w", err)
		}
		if exp != 0 {
			m.ExpiresAt = time.UnixMilli(exp)
		}
		m.UpdatedAt = time.UnixMilli(upd)
		out = append(out, m)
	}
	return out, rows.Err()
}

// roomPolicy returns the stored policy content ("" = none) and whether the
// room is known at all.
func (s *store) roomPolicy(ctx context.Context, roomID string) (content string, known bool, err error) {
	err = s.db.QueryRow(ctx, "SELECT content FROM as_room_policy WHERE room_id=$1", roomID).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("failed to read room policy: %w", err)
	}
	return content, true, nil
}

func (s *store) putRoomPolicy(ctx context.Context, roomID, content, eventID, sender string, now time.Time) error {
	_, err := s.db.Exec(ctx, `
		INSERT INTO as_room_policy (room_id, content, event_id, sender, updated_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_id) DO UPDATE SET content=excluded.content, event_id=excluded.event_id,
		    sender=excluded.sender, updated_at=excluded.updated_at`,
		roomID, content, eventID, sender, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to store room policy: %w", err)
	}
	return nil
}

// initRoomPolicy records what a lookup found for a room gxconf had no record
// of, unless a policy event stored meanwhile (a transaction racing the lookup)
// already did; it returns the content in force either way.
func (s *store) initRoomPolicy(ctx context.Context, roomID, content string, now time.Time) (string, error) {
	_, err := s.db.Exec(ctx, `
		INSERT INTO as_room_policy (room_id, content, event_id, sender, updated_at) VALUES ($1, $2, '', '', $3)
		ON CONFLICT (room_id) DO NOTHING`, roomID, content, now.UnixMilli())
	if err != nil {
		return "", fmt.Errorf("failed to store room policy: %w", err)
	}
	stored, _, err := s.roomPolicy(ctx, roomID)
	return stored, err
}

func (s *store) dmRoom(ctx context.Context, userID string) (string, error) {
	var roomID string
	err := s.db.QueryRow(ctx, "SELECT room_id FROM as_dm_room WHERE user_id=$1", userID).Scan(&roomID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return roomID, err
}

func (s *store) putDMRoom(ctx context.Context, userID, roomID string) error {
	_, err := s.db.Exec(ctx, `INSERT INTO as_dm_room (user_id, room_id) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET room_id=excluded.room_id`, userID, roomID)
	return err
}
