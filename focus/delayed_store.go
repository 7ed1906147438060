package focus

import (
	"context"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
)

// delegation is a delayed leave event (MSC4140) handed to the focus: while
// the LiveKit participant (LiveKitRoom, Identity) is connected, DelayID is
// restarted on the user's homeserver; when they are gone it is sent.
type delegation struct {
	LiveKitRoom string
	Identity    string
	DelayID     string
	Timeout     time.Duration
	// ServerName is the user's homeserver (the verified OpenID token's).
	ServerName string
	RoomID     string
	UserID     string
	CreatedAt  time.Time
	// RestartedAt is the last known restart: the event fires Timeout later.
	RestartedAt time.Time
}

func (d *delegation) key() delegationKey {
	return delegationKey{room: d.LiveKitRoom, identity: d.Identity}
}

// delegationKey names a job: one per LiveKit participant, as in
// lk-jwt-service; a new delegation for the same participant replaces it.
type delegationKey struct {
	room, identity string
}

// delegationStore persists delegations so that they survive restarts.
type delegationStore struct {
	db *dbutil.Database
	// node owns the rows this process runs; "" in a single-node setup.
	// TODO(cluster): the node ID, and adoption of a dead node's rows.
	node string
}

const delegationColumns = "lk_room, identity, delay_id, delay_timeout, server_name, room_id, user_id, created_at, restarted_at"

// save stores d, replacing the delegation of the same participant.
func (s *delegationStore) save(ctx context.Context, d *delegation) error {
	_, err := s.db.Exec(ctx, `
		INSERT INTO focus_delayed_leave (`+delegationColumns+`, node_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (lk_room, identity) DO UPDATE SET delay_id=excluded.delay_id, delay_timeout=excluded.delay_timeout,
			server_name=excluded.server_name, room_id=excluded.room_id, user_id=excluded.user_id,
			created_at=excluded.created_at, restarted_at=excluded.restarted_at, node_id=excluded.node_id`,
		d.LiveKitRoom, d.Identity, d.DelayID, d.Timeout.Milliseconds(), d.ServerName, d.RoomID, d.UserID,
		d.CreatedAt.UnixMilli(), d.RestartedAt.UnixMilli(), s.node)
	if err != nil {
		return fmt.Errorf("failed to store delayed leave: %w", err)
	}
	return nil
}

// restarted records a successful restart of the delegation's delay ID.
func (s *delegationStore) restarted(ctx context.Context, k delegationKey, delayID string, at time.Time) error {
	_, err := s.db.Exec(ctx, "UPDATE focus_delayed_leave SET restarted_at=$4 WHERE lk_room=$1 AND identity=$2 AND delay_id=$3",
		k.room, k.identity, delayID, at.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to update delayed leave: %w", err)
	}
	return nil
}

// remove forgets the delegation of delayID, unless another one replaced it.
func (s *delegationStore) remove(ctx context.Context, k delegationKey, delayID string) error {
	_, err := s.db.Exec(ctx, "DELETE FROM focus_delayed_leave WHERE lk_room=$1 AND identity=$2 AND delay_id=$3",
		k.room, k.identity, delayID)
	if err != nil {
		return fmt.Errorf("failed to delete delayed leave: %w", err)
	}
	return nil
}

// all returns the delegations this node runs.
func (s *delegationStore) all(ctx context.Context) ([]*delegation, error) {
	rows, err := s.db.Query(ctx, "SELECT "+delegationColumns+" FROM focus_delayed_leave WHERE node_id=$1", s.node)
	if err != nil {
		return nil, fmt.Errorf("failed to query delayed leaves: %w", err)
	}
	defer rows.Close()
	var out []*delegation
	for rows.Next() {
		var d delegation
		var timeout, created, restarted int64
		if err := rows.Scan(&d.LiveKitRoom, &d.Identity, &d.DelayID, &timeout, &d.ServerName, &d.RoomID, &d.UserID,
			&created, &restarted); err != nil {
			return nil, fmt.Errorf("failed to scan delayed leave: %w", err)
		}
		d.Timeout = time.Duration(timeout) * time.Millisecond
		d.CreatedAt, d.RestartedAt = time.UnixMilli(created), time.UnixMilli(restarted)
		out = append(out, &d)
	}
	return out, rows.Err()
}
