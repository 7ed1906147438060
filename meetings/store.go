package meetings

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
)

//go:embed migrations/*.sql
var migrations embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(migrations, "migrations").Finish()

// VersionTable is the meetings package's own schema version table.
const VersionTable = "meetings_version"

type store struct {
	db *dbutil.Database
}

func newStore(ctx context.Context, parent *dbutil.Database) (*store, error) {
	db := parent.Child(VersionTable, upgradeTable, nil)
	if err := db.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade meetings tables: %w", err)
	}
	return &store{db: db}, nil
}

// put inserts or replaces a meeting and its participant rows in one transaction.
func (s *store) put(ctx context.Context, m *Meeting, endsAt time.Time) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		_, err := s.db.Exec(ctx, `
			INSERT INTO meet_meeting (id, room_id, organiser, data, cancelled, ends_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (id) DO UPDATE SET data=excluded.data, cancelled=excluded.cancelled,
			    ends_at=excluded.ends_at, updated_at=excluded.updated_at`,
			m.ID, m.RoomID, m.Organiser, string(data), m.Cancelled, endsAt.UnixMilli(), m.UpdatedAt.UnixMilli())
		if err != nil {
			return fmt.Errorf("failed to store meeting: %w", err)
		}
		if _, err := s.db.Exec(ctx, "DELETE FROM meet_participant WHERE meeting_id=$1", m.ID); err != nil {
			return fmt.Errorf("failed to store participants: %w", err)
		}
		for _, u := range append([]string{m.Organiser}, m.Participants...) {
			if _, err := s.db.Exec(ctx, "INSERT INTO meet_participant (meeting_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", m.ID, u); err != nil {
				return fmt.Errorf("failed to store participants: %w", err)
			}
		}
		return nil
	})
}

func scanMeeting(row dbutil.Scannable) (*Meeting, error) {
	var data string
	if err := row.Scan(&data); err != nil {
		return nil, err
	}
	var m Meeting
	if err := json.Unmarshal([]byte(data), &m); err != nil {
		return nil, fmt.Errorf("failed to decode stored meeting: %w", err)
	}
	return &m, nil
}

// get finds a meeting by its ID or its room ID.
func (s *store) get(ctx context.Context, idOrRoom string) (*Meeting, error) {
	m, err := scanMeeting(s.db.QueryRow(ctx, "SELECT data FROM meet_meeting WHERE id=$1 OR room_id=$1", idOrRoom))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read meeting: %w", err)
	}
	return m, nil
}

func (s *store) query(ctx context.Context, q string, args ...any) ([]*Meeting, error) {
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("failed to list meetings: %w", err)
	}
	defer rows.Close()
	var out []*Meeting
	for rows.Next() {
		m, err := scanMeeting(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// ofUser lists the meetings userID organises or is invited to, by first start.
func (s *store) ofUser(ctx context.Context, userID string, withCancelled bool) ([]*Meeting, error) {
	return s.query(ctx, `
		SELECT m.data FROM meet_meeting m JOIN meet_participant p ON p.meeting_id=m.id
		WHERE p.user_id=$1 AND (m.cancelled=false OR $2) ORDER BY m.id`, userID, withCancelled)
}

// countActive counts an organiser's meetings that are not cancelled and not over.
func (s *store) countActive(ctx context.Context, organiser string, now time.Time) (int, error) {
	var n int
	err := s.db.QueryRow(ctx, "SELECT COUNT(*) FROM meet_meeting WHERE organiser=$1 AND cancelled=false AND ends_at>$2",
		organiser, now.UnixMilli()).Scan(&n)
	return n, err
}

// active lists the meetings that may still need reminders.
func (s *store) active(ctx context.Context, now time.Time) ([]*Meeting, error) {
	return s.query(ctx, "SELECT data FROM meet_meeting WHERE cancelled=false AND ends_at>$1 ORDER BY id", now.UnixMilli())
}

// claimReminder records that the reminder of one occurrence is being sent;
// false means it was sent (or claimed) before.
func (s *store) claimReminder(ctx context.Context, meetingID string, occurrence, now time.Time) (bool, error) {
	res, err := s.db.Exec(ctx, `INSERT INTO meet_reminder (meeting_id, occurrence, sent_at) VALUES ($1, $2, $3)
		ON CONFLICT (meeting_id, occurrence) DO NOTHING`, meetingID, occurrence.UnixMilli(), now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to record reminder: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// unclaimReminder forgets a claim whose sending failed, so it is retried.
func (s *store) unclaimReminder(ctx context.Context, meetingID string, occurrence time.Time) error {
	_, err := s.db.Exec(ctx, "DELETE FROM meet_reminder WHERE meeting_id=$1 AND occurrence=$2", meetingID, occurrence.UnixMilli())
	return err
}

func (s *store) reminderSent(ctx context.Context, meetingID string, occurrence time.Time) (bool, error) {
	var n int
	err := s.db.QueryRow(ctx, "SELECT COUNT(*) FROM meet_reminder WHERE meeting_id=$1 AND occurrence=$2", meetingID, occurrence.UnixMilli()).Scan(&n)
	return n > 0, err
}

// user returns a user's time zone and feed token hash ("" when unset).
func (s *store) user(ctx context.Context, userID string) (tz, feedHash string, err error) {
	err = s.db.QueryRow(ctx, "SELECT timezone, feed_token_hash FROM meet_user WHERE user_id=$1", userID).Scan(&tz, &feedHash)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", nil
	}
	return tz, feedHash, err
}

func (s *store) setTimezone(ctx context.Context, userID, tz string) error {
	_, err := s.db.Exec(ctx, `INSERT INTO meet_user (user_id, timezone, feed_token_hash) VALUES ($1, $2, '')
		ON CONFLICT (user_id) DO UPDATE SET timezone=excluded.timezone`, userID, tz)
	return err
}

func (s *store) setFeedHash(ctx context.Context, userID, hash string) error {
	_, err := s.db.Exec(ctx, `INSERT INTO meet_user (user_id, timezone, feed_token_hash) VALUES ($1, '', $2)
		ON CONFLICT (user_id) DO UPDATE SET feed_token_hash=excluded.feed_token_hash`, userID, hash)
	return err
}

// feedUser finds the user whose feed token hashes to hash.
func (s *store) feedUser(ctx context.Context, hash string) (string, error) {
	var userID string
	err := s.db.QueryRow(ctx, "SELECT user_id FROM meet_user WHERE feed_token_hash=$1 AND feed_token_hash<>''", hash).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return userID, err
}
