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

// delegationStore persists delegations so that they survive restarts, and
// assigns each to one node: its row names the node (node_id) that runs it,
// and a node that stopped (released) or has not renewed its liveness
// (focus_delayed_leave_node) loses its rows to the first live node that
// claims them. Claims are single UPDATE statements, atomic on SQLite and
// PostgreSQL alike.
type delegationStore struct {
	db *dbutil.Database
	// node is this node's cluster ID; "" when it has none (no embedded SFU,
	// tests), which is also the owner of rows stored before nodes were named.
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

// restarted records a successful restart of the delegation's delay ID. It
// reports false when this node no longer holds the row: it was replaced,
// finished or claimed by another node, which runs the job now.
func (s *delegationStore) restarted(ctx context.Context, k delegationKey, delayID string, at time.Time) (bool, error) {
	res, err := s.db.Exec(ctx, "UPDATE focus_delayed_leave SET restarted_at=$4 WHERE lk_room=$1 AND identity=$2 AND delay_id=$3 AND node_id=$5",
		k.room, k.identity, delayID, at.UnixMilli(), s.node)
	if err != nil {
		return true, fmt.Errorf("failed to update delayed leave: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return true, fmt.Errorf("failed to update delayed leave: %w", err)
	}
	return n > 0, nil
}

// alive records that this node runs its jobs until at least until.
func (s *delegationStore) alive(ctx context.Context, until time.Time) error {
	_, err := s.db.Exec(ctx, `
		INSERT INTO focus_delayed_leave_node (node_id, alive_until) VALUES ($1, $2)
		ON CONFLICT (node_id) DO UPDATE SET alive_until=excluded.alive_until`, s.node, until.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to renew the delayed leave node: %w", err)
	}
	return nil
}

// release gives up this node's rows (it stops): the next claim of a live
// node takes them, without waiting for the liveness to lapse.
func (s *delegationStore) release(ctx context.Context) error {
	if _, err := s.db.Exec(ctx, "DELETE FROM focus_delayed_leave_node WHERE node_id=$1", s.node); err != nil {
		return fmt.Errorf("failed to release the delayed leave node: %w", err)
	}
	return nil
}

// claim takes over the rows of nodes not alive at now and reports how many.
// A node whose row says it is alive keeps its rows, so a job that node runs
// is not started twice.
func (s *delegationStore) claim(ctx context.Context, now time.Time) (int64, error) {
	res, err := s.db.Exec(ctx, `
		UPDATE focus_delayed_leave SET node_id=$1
		WHERE node_id<>$1 AND node_id NOT IN (SELECT node_id FROM focus_delayed_leave_node WHERE alive_until>$2)`,
		s.node, now.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("failed to claim delayed leaves: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("failed to claim delayed leaves: %w", err)
	}
	return n, nil
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
