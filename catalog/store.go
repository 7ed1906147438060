package catalog

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
