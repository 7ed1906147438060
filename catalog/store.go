package catalog

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"go.mau.fi/util/dbutil"
)

//go:embed migrations/*.sql
var migrations embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(migrations, "migrations").Finish()

// VersionTable is the catalog's own schema version table.
const VersionTable = "catalog_version"

// store keeps bookings and room bindings.
type store struct {
	db *dbutil.Database
}

func newStore(ctx context.Context, parent *dbutil.Database) (*store, error) {
	db := parent.Child(VersionTable, upgradeTable, nil)
	if err := db.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade catalog tables: %w", err)
	}
	return &store{db: db}, nil
}

// locked runs fn in a transaction that holds the locks named by keys until
// it ends, so that replicas sharing one PostgreSQL database serialise what
// they check and then write (an organisation's open bookings, a room's
// binding, a booking's state, sessions and usage). On PostgreSQL these are
// transaction-level advisory locks (pg_advisory_xact_lock), taken in sorted
// order so that two transactions cannot wait for each other; on SQLite
// (one node) the transaction itself serialises writers: it holds the
// database's write lock from its start (_txlock=immediate) or fails rather
// than overwrite a concurrent write. fn must use the ctx it is given.
//
// Keys are "org:…", "room:…", "booking:…" and "status-index"; two keys
// whose hashes collide only serialise more than needed.
func (s *store) locked(ctx context.Context, fn func(ctx context.Context) error, keys ...string) error {
	return s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if s.db.Dialect == dbutil.Postgres {
			keys = slices.Clone(keys)
			slices.Sort(keys)
			for _, k := range slices.Compact(keys) {
				if _, err := s.db.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockID(k)); err != nil {
					return fmt.Errorf("failed to lock %s: %w", k, err)
				}
			}
		}
		return fn(ctx)
	})
}

// lockID is the advisory lock of a key, in the catalog's own namespace.
func lockID(key string) int64 {
	h := fnv.New64a()
	h.Write([]byte("gxconf/catalog\x00" + key))
	return int64(h.Sum64())
}

func (s *store) insert(ctx context.Context, b *Booking) error {
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	_, err = s.db.Exec(ctx, `INSERT INTO catalog_booking (id, org, state, status_index, revoked, created_at, data)
		VALUES ($1, $2, $3, $4, false, $5, $6)`, b.ID, b.Org, string(b.State), b.StatusIndex, b.CreatedAt.UnixMilli(), string(data))
	return err
}

// update writes b; revoked sets the status bit (never cleared again).
func (s *store) update(ctx context.Context, b *Booking) error {
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	revoked := b.State == StateRevoked || b.State == StateCancelled
	_, err = s.db.Exec(ctx, `UPDATE catalog_booking SET state = $2, data = $3, revoked = (revoked OR $4) WHERE id = $1`,
		b.ID, string(b.State), string(data), revoked)
	return err
}

func (s *store) get(ctx context.Context, id string) (*Booking, error) {
	var data string
	err := s.db.QueryRow(ctx, `SELECT data FROM catalog_booking WHERE id = $1`, id).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: booking %s", ErrNotFound, id)
	} else if err != nil {
		return nil, err
	}
	var b Booking
	if err := json.Unmarshal([]byte(data), &b); err != nil {
		return nil, fmt.Errorf("failed to decode booking %s: %w", id, err)
	}
	return &b, nil
}

// countOpen counts org's bookings in no terminal state.
func (s *store) countOpen(ctx context.Context, org string) (int, error) {
	var n int
	err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM catalog_booking WHERE org = $1 AND state NOT IN ($2, $3, $4)`,
		org, string(StateExpired), string(StateCancelled), string(StateRevoked)).Scan(&n)
	return n, err
}

// countSince counts org's bookings created at or after since, whatever
// their state.
func (s *store) countSince(ctx context.Context, org string, since time.Time) (int, error) {
	var n int
	err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM catalog_booking WHERE org = $1 AND created_at >= $2`,
		org, since.UnixMilli()).Scan(&n)
	return n, err
}

// list returns the bookings of org (all when org is empty), newest first.
func (s *store) list(ctx context.Context, org string) ([]*Booking, error) {
	q := `SELECT data FROM catalog_booking ORDER BY created_at DESC, id`
	args := []any{}
	if org != "" {
		q = `SELECT data FROM catalog_booking WHERE org = $1 ORDER BY created_at DESC, id`
		args = append(args, org)
	}
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Booking
	for rows.Next() {
		var data string
		if err := rows.Scan(&data); err != nil {
			return nil, err
		}
		var b Booking
		if err := json.Unmarshal([]byte(data), &b); err != nil {
			return nil, err
		}
		out = append(out, &b)
	}
	return out, rows.Err()
}

// revokedIndexes are the status list indexes whose bit is set.
func (s *store) revokedIndexes(ctx context.Context) ([]int, error) {
	rows, err := s.db.Query(ctx, `SELECT status_index FROM catalog_booking WHERE revoked`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var i int
		if err := rows.Scan(&i); err != nil {
			return nil, err
		}
		out = append(out, i)
	}
	return out, rows.Err()
}

func (s *store) indexUsed(ctx context.Context, i int) (bool, error) {
	var n int
	err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM catalog_booking WHERE status_index = $1`, i).Scan(&n)
	return n > 0, err
}

// Binding ties a Matrix room to a booking.
type Binding struct {
	RoomID  string    `json:"room_id"`
	Booking string    `json:"booking"`
	Meeting string    `json:"meeting"`
	BoundAt time.Time `json:"bound_at"`
	BoundBy string    `json:"bound_by"`
	// ConfirmedBy is the room admin (Matrix ID) or scheduler that accepted
	// the binding for the room; empty: it does not count yet.
	ConfirmedBy string `json:"confirmed_by"`
}

func (s *store) bind(ctx context.Context, b Binding) error {
	_, err := s.db.Exec(ctx, `INSERT INTO catalog_binding (room_id, booking_id, meeting, bound_at, bound_by, confirmed_by) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (room_id) DO UPDATE SET booking_id = excluded.booking_id, meeting = excluded.meeting,
			bound_at = excluded.bound_at, bound_by = excluded.bound_by, confirmed_by = excluded.confirmed_by`,
		b.RoomID, b.Booking, b.Meeting, b.BoundAt.UnixMilli(), b.BoundBy, b.ConfirmedBy)
	return err
}

// confirm marks the room's binding to bookingID as accepted by the room.
func (s *store) confirm(ctx context.Context, roomID, bookingID, by string) (bool, error) {
	res, err := s.db.Exec(ctx, `UPDATE catalog_binding SET confirmed_by = $3 WHERE room_id = $1 AND booking_id = $2`, roomID, bookingID, by)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

func (s *store) unbind(ctx context.Context, roomID string) error {
	_, err := s.db.Exec(ctx, `DELETE FROM catalog_binding WHERE room_id = $1`, roomID)
	return err
}

// unbindFrom deletes the room's binding if it is to bookingID; ok is
// false when the room is not bound to it.
func (s *store) unbindFrom(ctx context.Context, roomID, bookingID string) (bool, error) {
	res, err := s.db.Exec(ctx, `DELETE FROM catalog_binding WHERE room_id = $1 AND booking_id = $2`, roomID, bookingID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// binding returns the room's binding; ok is false when it has none.
func (s *store) binding(ctx context.Context, roomID string) (Binding, bool, error) {
	b := Binding{RoomID: roomID}
	var at int64
	err := s.db.QueryRow(ctx, `SELECT booking_id, meeting, bound_at, bound_by, confirmed_by FROM catalog_binding WHERE room_id = $1`, roomID).
		Scan(&b.Booking, &b.Meeting, &at, &b.BoundBy, &b.ConfirmedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return Binding{}, false, nil
	} else if err != nil {
		return Binding{}, false, err
	}
	b.BoundAt = time.UnixMilli(at)
	return b, true, nil
}

// bindings lists the rooms bound to a booking.
func (s *store) bindings(ctx context.Context, bookingID string) ([]Binding, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id, meeting, bound_at, bound_by, confirmed_by FROM catalog_binding WHERE booking_id = $1 ORDER BY room_id`, bookingID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Binding
	for rows.Next() {
		b := Binding{Booking: bookingID}
		var at int64
		if err := rows.Scan(&b.RoomID, &b.Meeting, &at, &b.BoundBy, &b.ConfirmedBy); err != nil {
			return nil, err
		}
		b.BoundAt = time.UnixMilli(at)
		out = append(out, b)
	}
	return out, rows.Err()
}

// sessionRow is a booked LiveKit room in use: opened by the first
// admission, closed after SessionIdle without participants.
type sessionRow struct {
	LKRoom    string
	Booking   string
	Meeting   string
	OpenedAt  time.Time
	LastSeen  time.Time
	SampledAt time.Time
}

const sessionColumns = `lk_room, booking_id, meeting, opened_at, last_seen, sampled_at`

func (s *store) sessionsWhere(ctx context.Context, where string, args ...any) ([]sessionRow, error) {
	rows, err := s.db.Query(ctx, `SELECT `+sessionColumns+` FROM catalog_session `+where+` ORDER BY lk_room`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sessionRow
	for rows.Next() {
		var r sessionRow
		var opened, seen, sampled int64
		if err := rows.Scan(&r.LKRoom, &r.Booking, &r.Meeting, &opened, &seen, &sampled); err != nil {
			return nil, err
		}
		r.OpenedAt, r.LastSeen, r.SampledAt = time.UnixMilli(opened), time.UnixMilli(seen), time.UnixMilli(sampled)
		out = append(out, r)
	}
	return out, rows.Err()
}

// session returns the session in a LiveKit room; ok is false when none is open.
func (s *store) session(ctx context.Context, lkRoom string) (sessionRow, bool, error) {
	rs, err := s.sessionsWhere(ctx, `WHERE lk_room = $1`, lkRoom)
	if err != nil || len(rs) == 0 {
		return sessionRow{}, false, err
	}
	return rs[0], true, nil
}

// sessionsOf lists a booking's open sessions.
func (s *store) sessionsOf(ctx context.Context, bookingID string) ([]sessionRow, error) {
	return s.sessionsWhere(ctx, `WHERE booking_id = $1`, bookingID)
}

// sessionBookings lists the bookings with an open session.
func (s *store) sessionBookings(ctx context.Context) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT DISTINCT booking_id FROM catalog_session ORDER BY booking_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// putSession opens (or replaces) the session in r.LKRoom, or records its
// times.
func (s *store) putSession(ctx context.Context, r sessionRow) error {
	_, err := s.db.Exec(ctx, `INSERT INTO catalog_session (`+sessionColumns+`) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (lk_room) DO UPDATE SET booking_id = excluded.booking_id, meeting = excluded.meeting,
			opened_at = excluded.opened_at, last_seen = excluded.last_seen, sampled_at = excluded.sampled_at`,
		r.LKRoom, r.Booking, r.Meeting, r.OpenedAt.UnixMilli(), r.LastSeen.UnixMilli(), r.SampledAt.UnixMilli())
	return err
}

// closeSession removes a session and its admitted participants.
func (s *store) closeSession(ctx context.Context, lkRoom string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM catalog_pending WHERE lk_room = $1`, lkRoom); err != nil {
		return err
	}
	_, err := s.db.Exec(ctx, `DELETE FROM catalog_session WHERE lk_room = $1`, lkRoom)
	return err
}

// pending returns the identities admitted to a LiveKit room, with when.
func (s *store) pending(ctx context.Context, lkRoom string) (map[string]time.Time, error) {
	rows, err := s.db.Query(ctx, `SELECT identity, admitted_at FROM catalog_pending WHERE lk_room = $1`, lkRoom)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var id string
		var at int64
		if err := rows.Scan(&id, &at); err != nil {
			return nil, err
		}
		out[id] = time.UnixMilli(at)
	}
	return out, rows.Err()
}

func (s *store) putPending(ctx context.Context, lkRoom, identity string, at time.Time) error {
	_, err := s.db.Exec(ctx, `INSERT INTO catalog_pending (lk_room, identity, admitted_at) VALUES ($1, $2, $3)
		ON CONFLICT (lk_room, identity) DO UPDATE SET admitted_at = excluded.admitted_at`, lkRoom, identity, at.UnixMilli())
	return err
}

func (s *store) deletePending(ctx context.Context, lkRoom, identity string) error {
	_, err := s.db.Exec(ctx, `DELETE FROM catalog_pending WHERE lk_room = $1 AND identity = $2`, lkRoom, identity)
	return err
}

// prunePending forgets admissions older than before (never connected).
func (s *store) prunePending(ctx context.Context, before time.Time) error {
	_, err := s.db.Exec(ctx, `DELETE FROM catalog_pending WHERE admitted_at <= $1`, before.UnixMilli())
	return err
}
