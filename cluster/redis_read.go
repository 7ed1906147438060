package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Nodes returns the live nodes of the last heartbeat round and this node.
// While Redis is unreachable the last known view is kept: media between
// nodes does not depend on Redis, so peers are not declared down for it.
// While a newer run of this node ID is in the registry (see supersede) this
// node is listed as draining: whoever it took now would be missing from the
// directory.
func (r *Redis) Nodes() []Node {
	v := r.view.Load()
	out := make([]Node, 0, len(v.nodes)+1)
	out = append(out, v.nodes...)
	self := r.Self()
	if r.superseded.Load() {
		self.State = NodeDraining
	}
	out = append(out, self)
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

// live reports whether an entry of (id, epoch) belongs to a live node.
func (r *Redis) live(id NodeID, epoch uint64) bool {
	for _, n := range r.view.Load().nodes {
		if n.ID == id {
			return n.Epoch == epoch
		}
	}
	return false
}

func (r *Redis) unavailable(what string, err error) error {
	return fmt.Errorf("failed to read %s: %w: %w", what, ErrUnavailable, err)
}

// RoomNodes returns the live nodes hosting the room.
func (r *Redis) RoomNodes(ctx context.Context, room RoomName) ([]RoomEntry, error) {
	local := r.localRoomNodes(room)
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	m, err := r.client.HGetAll(ctx, r.keys.roomNodes(room)).Result()
	if err != nil {
		return local, r.unavailable("room nodes", err)
	}
	out := local
	for _, id := range sortedKeys(m) {
		e, err := ParseRoomEntry([]byte(m[id]))
		if err != nil || e.Room != room || e.Node == r.self.ID || !r.live(e.Node, e.Epoch) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// Participants returns the room's participants on live nodes.
func (r *Redis) Participants(ctx context.Context, room RoomName) ([]ParticipantEntry, error) {
	local := r.localParticipants(room)
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	m, err := r.client.HGetAll(ctx, r.keys.roomParts(room)).Result()
	if err != nil {
		return local, r.unavailable("participants", err)
	}
	out := local
	mine := make(map[ParticipantIdentity]bool, len(local))
	for _, p := range local {
		mine[p.Identity] = true
	}
	for _, id := range sortedKeys(m) {
		p, err := ParseParticipantEntry([]byte(m[id]))
		if err != nil || p.Room != room || mine[p.Identity] || p.Node == r.self.ID || !r.live(p.Node, p.Epoch) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// Participant finds a participant on any live node.
func (r *Redis) Participant(ctx context.Context, room RoomName, identity ParticipantIdentity) (ParticipantEntry, error) {
	if p, ok := r.localParticipant(room, identity); ok {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	v, err := r.client.HGet(ctx, r.keys.roomParts(room), string(identity)).Result()
	if errors.Is(err, redis.Nil) {
		return ParticipantEntry{}, ErrNotFound
	}
	if err != nil {
		return ParticipantEntry{}, r.unavailable("participant", err)
	}
	p, err := ParseParticipantEntry([]byte(v))
	if err != nil || p.Room != room || p.Identity != identity || p.Node == r.self.ID || !r.live(p.Node, p.Epoch) {
		return ParticipantEntry{}, ErrNotFound
	}
	return p, nil
}

// Tracks returns the room's tracks on live nodes.
func (r *Redis) Tracks(ctx context.Context, room RoomName) ([]TrackEntry, error) {
	local := r.localTracks(room)
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	m, err := r.client.HGetAll(ctx, r.keys.roomTracks(room)).Result()
	if err != nil {
		return local, r.unavailable("tracks", err)
	}
	out := local
	for _, sid := range sortedKeys(m) {
		t, err := ParseTrackEntry([]byte(m[sid]))
		if err != nil || t.Room != room || t.Node == r.self.ID || !r.live(t.Node, t.Epoch) {
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

// Rooms returns the rooms hosted by any live node.
func (r *Redis) Rooms(ctx context.Context) ([]RoomName, error) {
	local := r.localRooms()
	v := r.view.Load()
	if len(v.nodes) == 0 {
		return local, nil
	}
	keys := make([]string, 0, len(v.nodes))
	for _, n := range v.nodes {
		keys = append(keys, r.keys.nodeRooms(n.ID))
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	names, err := r.client.SUnion(ctx, keys...).Result()
	if err != nil {
		return local, r.unavailable("rooms", err)
	}
	set := make(map[RoomName]struct{}, len(names)+len(local))
	for _, n := range local {
		set[n] = struct{}{}
	}
	for _, n := range names {
		set[RoomName(n)] = struct{}{}
	}
	return sortedKeys(set), nil
}
