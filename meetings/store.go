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
	// unreadable is told of a stored meeting that cannot be decoded; the
	// lists leave it out rather than fail.
	unreadable func(id string, err error)
}

func newStore(ctx context.Context, parent *dbutil.Database) (*store, error) {
	db := parent.Child(VersionTable, upgradeTable, nil)
	if err := db.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade meetings tables: %w", err)
	}
	st := &store{db: db}
	if err := st.fillSpans(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// fillSpans writes starts_at, and ends_at again, for the meetings stored
// before v2 (once: every later put writes both). ends_at was the end of the
// last occurrence in start order, or 0 when the schedule failed to expand,
// which the purge would take for "ended in 1970".
func (s *store) fillSpans(ctx context.Context) error {
	ms, err := s.query(ctx, "SELECT "+meetingColumns+" FROM meet_meeting m WHERE starts_at=0")
	if err != nil {
		return err
	}
	for _, m := range ms {
		first, last := m.span()
		if _, err := s.db.Exec(ctx, "UPDATE meet_meeting SET starts_at=$2, ends_at=$3 WHERE id=$1", m.ID, spanMilli(first), last.UnixMilli()); err != nil {
			return fmt.Errorf("failed to store a meeting's span: %w", err)
		}
	}
	return nil
}

// spanMilli is a start as stored: never 0, which marks "not filled in".
func spanMilli(t time.Time) int64 {
	if ms := t.UnixMilli(); ms != 0 {
		return ms
	}
	return 1
}

// put inserts or replaces a meeting and its participant rows in one transaction.
func (s *store) put(ctx context.Context, m *Meeting) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	first, last := m.span()
	return s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		_, err := s.db.Exec(ctx, `
			INSERT INTO meet_meeting (id, room_id, organiser, data, cancelled, starts_at, ends_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (id) DO UPDATE SET data=excluded.data, cancelled=excluded.cancelled,
			    starts_at=excluded.starts_at, ends_at=excluded.ends_at, updated_at=excluded.updated_at`,
			m.ID, m.RoomID, m.Organiser, string(data), m.Cancelled, spanMilli(first), last.UnixMilli(), m.UpdatedAt.UnixMilli())
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

// meetingColumns are what scanMeeting reads.
const meetingColumns = "m.id, m.data, m.starts_at, m.ends_at"

// errUndecodable marks a stored meeting whose data is not a meeting.
var errUndecodable = errors.New("failed to decode stored meeting")

func scanMeeting(row dbutil.Scannable) (*Meeting, error) {
	var id, data string
	var first, last int64
	if err := row.Scan(&id, &data, &first, &last); err != nil {
		return nil, err
	}
	var m Meeting
	if err := json.Unmarshal([]byte(data), &m); err != nil {
		return &Meeting{ID: id}, fmt.Errorf("%w %s: %w", errUndecodable, id, err)
	}
	if first != 0 {
		m.first, m.last = time.UnixMilli(first), time.UnixMilli(last)
	}
	return &m, nil
}

// get finds a meeting by its ID or its room ID.
func (s *store) get(ctx context.Context, idOrRoom string) (*Meeting, error) {
	m, err := scanMeeting(s.db.QueryRow(ctx, "SELECT "+meetingColumns+" FROM meet_meeting m WHERE id=$1 OR room_id=$1", idOrRoom))
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
		if errors.Is(err, errUndecodable) && s.unreadable != nil {
			s.unreadable(m.ID, err)
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// listing says which of a user's meetings a feed or list shows.
type listing struct {
	now time.Time
	// endedAfter and cancelledAfter drop the meetings that ended or were
	// cancelled before them (retention); cancelled ones only with
	// withCancelled.
	endedAfter, cancelledAfter time.Time
	withCancelled              bool
	limit                      int
}

// ofUser lists at most l.limit of the meetings userID organises or is
// invited to: those not over yet (running series first, then by first
// start), then the ended ones (most recent first), then the cancelled ones
// (most recently cancelled first).
func (s *store) ofUser(ctx context.Context, userID string, l listing) ([]*Meeting, error) {
	now := l.now.UnixMilli()
	// The order and the limit are taken on the index columns alone, and
	// only the meetings shown are read in full: a user can be invited to
	// many more.
	const order = `CASE WHEN m.cancelled THEN 2 WHEN m.ends_at>$5 THEN 0 ELSE 1 END,
		    CASE WHEN m.cancelled THEN -m.updated_at WHEN m.ends_at>$5 THEN m.starts_at ELSE -m.ends_at END, m.id`
	return s.query(ctx, `
		SELECT `+meetingColumns+` FROM meet_meeting m WHERE m.id IN (
		    SELECT m.id FROM meet_meeting m JOIN meet_participant p ON p.meeting_id=m.id
		    WHERE p.user_id=$1 AND ((m.cancelled=false AND m.ends_at>$2) OR (m.cancelled=true AND $3 AND m.updated_at>$4))
		    ORDER BY `+order+` LIMIT $6)
		ORDER BY `+order,
		userID, l.endedAfter.UnixMilli(), l.withCancelled, l.cancelledAfter.UnixMilli(), now, l.limit)
}

// purge deletes the meetings that ended before ended or were cancelled
// before cancelled, with their participants and reminder records, and
// returns how many of each it deleted.
func (s *store) purge(ctx context.Context, ended, cancelled time.Time) (nEnded, nCancelled int64, err error) {
	err = s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for _, c := range []struct {
			where string
			at    int64
			n     *int64
		}{
			{"cancelled=false AND ends_at<=$1", ended.UnixMilli(), &nEnded},
			{"cancelled=true AND updated_at<=$1", cancelled.UnixMilli(), &nCancelled},
		} {
			sel := "SELECT id FROM meet_meeting WHERE " + c.where
			if _, err := s.db.Exec(ctx, "DELETE FROM meet_reminder WHERE meeting_id IN ("+sel+")", c.at); err != nil {
				return err
			}
			if _, err := s.db.Exec(ctx, "DELETE FROM meet_participant WHERE meeting_id IN ("+sel+")", c.at); err != nil {
				return err
			}
			res, err := s.db.Exec(ctx, "DELETE FROM meet_meeting WHERE "+c.where, c.at)
			if err != nil {
				return err
			}
			if *c.n, err = res.RowsAffected(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("failed to purge meetings: %w", err)
	}
	return nEnded, nCancelled, nil
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
	return s.query(ctx, "SELECT "+meetingColumns+" FROM meet_meeting m WHERE cancelled=false AND ends_at>$1 ORDER BY id", now.UnixMilli())
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
