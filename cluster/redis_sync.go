package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// heartbeatScript writes the node record with its TTL unless the record
// there is of a newer run of the same node ID (then this process is
// superseded and writes nothing), and returns "set" or "superseded", the
// previous record ("" if there was none) and then every registered node's id
// and record ("" once expired). A member that is not a node ID (anyone
// with write access may add one) is listed with "" and its key is not
// read: "x:rooms" would name node x's room set, and reading a key that is
// not a string fails the whole script, i.e. every node's heartbeat. A record
// key that is not a string is listed as "!" (malformed). Epochs are decimal
// strings without leading zeros: the longer is newer, else the greater.
//
// KEYS: node record, nodes set. ARGV: record, ttl ms, node id, record key
// prefix, epoch.
var heartbeatScript = redis.NewScript(`
local old = redis.call('GET', KEYS[1])
local status = 'set'
if old then
  local ok, e = pcall(cjson.decode, old)
  if ok and type(e) == 'table' and e.id == ARGV[3] and type(e.epoch) == 'string' and
     (#e.epoch > #ARGV[5] or (#e.epoch == #ARGV[5] and e.epoch > ARGV[5])) then
    status = 'superseded'
  end
end
if status == 'set' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
end
local out = {status, old or ''}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local v = ''
  if #id <= 64 and string.find(id, '^[A-Za-z0-9_%.%-]+$') then
    v = redis.pcall('GET', ARGV[4] .. id)
    if v == false then v = '' elseif type(v) ~= 'string' then v = '!' end
  end
  table.insert(out, id)
  table.insert(out, v)
end
return out
`)

// dropRecordScript deletes a node record if it still holds the given value
// ("!" stands for a key that is not a string, as heartbeatScript lists it).
//
// KEYS: node record. ARGV: value.
var dropRecordScript = redis.NewScript(`
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' then v = '!' end
if v ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`)

// deregisterScript deletes the node record unless it is of another run of
// the same node ID, and reports whether the record was this run's (or gone).
//
// KEYS: node record. ARGV: node id, epoch.
var deregisterScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local ok, e = pcall(cjson.decode, v)
  if ok and type(e) == 'table' and e.id == ARGV[1] and e.epoch ~= ARGV[2] then return 0 end
  redis.call('DEL', KEYS[1])
end
return 1
`)

// cdelScript deletes a hash field only if its entry belongs to the node's
// run (node id and epoch: two runs of one node ID may share it for a while,
// see supersede, and the older must not delete the newer's entry for the
// same room, identity or track), and then publishes the removal event. The
// room leaves the node's room set (which reaping walks) only while the node
// record is absent or this run's: the set is the node ID's, and a newer run
// may have entries in the room.
//
// KEYS: hash, events channel, node rooms set, node record. ARGV: field, node
// id, event, room to drop from the node's room set ("" keeps it), epoch.
var cdelScript = redis.NewScript(`
local n = 0
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local ok, e = pcall(cjson.decode, v)
  if ok and type(e) == 'table' and e.node == ARGV[2] and e.epoch == ARGV[5] then
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('PUBLISH', KEYS[2], ARGV[3])
    n = 1
  end
end
if ARGV[4] ~= '' then
  local r = redis.pcall('GET', KEYS[4])
  local mine = not r
  if type(r) == 'string' then
    local ok, e = pcall(cjson.decode, r)
    mine = not (ok and type(e) == 'table' and e.id == ARGV[2] and e.epoch ~= ARGV[5])
  end
  if mine then redis.call('SREM', KEYS[3], ARGV[4]) end
end
return n
`)

// cputScript writes a room, participant or track entry, then publishes the
// addition; it writes nothing if the entry there is a newer run's of the
// same node ID (an older run that has not yet found itself superseded
// must not replace it, see supersede), or, for a participant, if another
// node holds a newer session of the same identity (the participant
// reconnected there; this node's session is stale and will end). Epochs
// compare as in heartbeatScript.
//
// KEYS: hash, events channel, node rooms set. ARGV: field, entry, node id,
// joined_at (Unix ms; 0 for rooms and tracks), event, room, epoch.
var cputScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local ok, e = pcall(cjson.decode, v)
  if ok and type(e) == 'table' then
    if e.node ~= ARGV[3] and type(e.joined_at) == 'number' and e.joined_at > tonumber(ARGV[4]) then
      return 0
    end
    if e.node == ARGV[3] and type(e.epoch) == 'string' and
       (#e.epoch > #ARGV[7] or (#e.epoch == #ARGV[7] and e.epoch > ARGV[7])) then
      return 0
    end
  end
end
redis.call('SADD', KEYS[3], ARGV[6])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[5])
return 1
`)

// pruneScript deletes a node's directory entries and returns them as
// (kind, entry) pairs. Mode "dead" acts only while the node's record is
// absent and then forgets the node; mode "stale" keeps entries of the given
// epoch (the node's current run), and acts only while the record is that
// run's: else it returns {"superseded"}, as the entries it would delete are
// the newer run's (which may have registered since this run's heartbeat).
//
// KEYS: node record, node rooms set, nodes set. ARGV: node id, key prefix,
// mode, epoch to keep.
var pruneScript = redis.NewScript(`
if ARGV[3] == 'dead' and redis.call('EXISTS', KEYS[1]) == 1 then return {} end
if ARGV[3] == 'stale' then
  local v = redis.pcall('GET', KEYS[1])
  local ok, e = pcall(cjson.decode, type(v) == 'string' and v or '')
  if not (ok and type(e) == 'table' and e.id == ARGV[1] and e.epoch == ARGV[4]) then return {'superseded'} end
end
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  for _, kind in ipairs({'nodes', 'parts', 'tracks'}) do
    local h = ARGV[2] .. 'room:' .. room .. ':' .. kind
    local all = redis.call('HGETALL', h)
    for i = 1, #all, 2 do
      local ok, e = pcall(cjson.decode, all[i+1])
      if ok and type(e) == 'table' and e.node == ARGV[1] and (ARGV[3] == 'dead' or e.epoch ~= ARGV[4]) then
        redis.call('HDEL', h, all[i])
        table.insert(out, kind)
        table.insert(out, all[i+1])
      end
    end
  end
end
if ARGV[3] == 'dead' then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[1])
end
return out
`)

type pruneMode string

const (
	pruneDead  pruneMode = "dead"
	pruneStale pruneMode = "stale"
)

// flushBatch bounds one pipeline.
const flushBatch = 256

type flushOp struct {
	key   entryKey
	value []byte // nil: delete
	event []byte
	// joinedAt of a participant entry (Unix ms), for cputScript.
	joinedAt int64
}

func (op flushOp) rank() int {
	switch {
	case op.key.kind == kindRoom && op.value != nil:
		return 0
	case op.key.kind != kindRoom:
		return 1
	default:
		return 2
	}
}

// flush writes the dirty entries; on failure they stay dirty.
func (r *Redis) flush(ctx context.Context) error {
	r.mu.Lock()
	if len(r.dirty) == 0 {
		r.mu.Unlock()
		return nil
	}
	taken := r.dirty
	r.dirty = make(map[entryKey]struct{}, len(taken))
	ops := make([]flushOp, 0, len(taken))
	var encErr error
	for k := range taken {
		op, err := r.opLocked(k)
		if err != nil {
			encErr = err
			continue
		}
		ops = append(ops, op)
	}
	r.mu.Unlock()
	// Room entries are written before and deleted after the entries in them,
	// so that the node's room set (which reaping walks) always covers them.
	slices.SortFunc(ops, func(a, b flushOp) int { return cmp.Compare(a.rank(), b.rank()) })
	if encErr != nil {
		r.log.Error().Err(encErr).Msg("failed to encode a directory entry")
	}
	for len(ops) > 0 {
		n := min(len(ops), flushBatch)
		if err := r.exec(ctx, ops[:n]); err != nil {
			r.mu.Lock()
			for _, op := range ops {
				r.dirty[op.key] = struct{}{}
			}
			r.mu.Unlock()
			return err
		}
		ops = ops[n:]
	}
	return nil
}

func (r *Redis) exec(ctx context.Context, ops []flushOp) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	id := r.self.ID
	pipe := r.beat.Pipeline()
	type cput struct {
		key entryKey
		cmd *redis.Cmd
	}
	var cputs []cput
	for _, op := range ops {
		// Signed when sent, so that a retried flush is not stale.
		event, err := r.sig.seal(r.keys.events(), op.event)
		if err != nil {
			return err
		}
		field := op.key.id
		if op.key.kind == kindRoom {
			field = string(id)
		}
		hash := r.keys.hash(op.key)
		if op.value != nil {
			cmd := cputScript.Eval(ctx, pipe, []string{hash, r.keys.events(), r.keys.nodeRooms(id)},
				field, op.value, string(id), op.joinedAt, event, string(op.key.room), fmtEpoch(r.self.Epoch))
			cputs = append(cputs, cput{key: op.key, cmd: cmd})
			continue
		}
		drop := ""
		if op.key.kind == kindRoom {
			drop = string(op.key.room)
		}
		cdelScript.Eval(ctx, pipe, []string{hash, r.keys.events(), r.keys.nodeRooms(id), r.keys.node(id)},
			field, string(id), event, drop, fmtEpoch(r.self.Epoch))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("failed to write directory entries: %w", err)
	}
	// A participant held by a newer session elsewhere is retried every
	// heartbeat until this node drops it (or the other session ends); an
	// entry of a newer run of this node ID until this run finds itself
	// superseded (then it writes nothing until it registers again, and
	// reconciles).
	for _, c := range cputs {
		if n, err := c.cmd.Int(); err == nil && n == 0 {
			r.mu.Lock()
			r.dirty[c.key] = struct{}{}
			r.mu.Unlock()
		}
	}
	return nil
}

// opLocked builds the write for one dirty entry from the local view.
func (r *Redis) opLocked(k entryKey) (flushOp, error) {
	op := flushOp{key: k}
	self := r.self
	ev := Event{Node: self.ID, Epoch: self.Epoch, Room: k.room}
	room := r.rooms[k.room]
	var err error
	switch k.kind {
	case kindRoom:
		ev.Type = EventRoomReleased
		if room != nil {
			ev.Type = EventRoomHosted
			op.value, err = MarshalRoomEntry(room.entry)
		}
	case kindParticipant:
		ev.Type, ev.Identity = EventParticipantRemoved, ParticipantIdentity(k.id)
		if room != nil {
			if p, ok := room.parts[ParticipantIdentity(k.id)]; ok {
				ev.Type, ev.Participant = EventParticipantAdded, &p
				op.value, err = MarshalParticipantEntry(p)
				op.joinedAt = fmtTime(p.JoinedAt)
			}
		}
	case kindTrack:
		ev.Type, ev.Identity, ev.Track = EventTrackRemoved, k.owner, TrackID(k.id)
		if room != nil {
			if t, ok := room.tracks[TrackID(k.id)]; ok {
				ev.Type, ev.Identity, ev.TrackInfo = EventTrackAdded, t.Participant, &t
				op.value, err = MarshalTrackEntry(t)
			}
		}
	}
	if err != nil {
		return op, err
	}
	op.event, err = MarshalEvent(ev)
	return op, err
}

// errNotOwnRecord: the node record is not this run's any more (a newer run
// registered, or the record vanished) between the heartbeat and reconcile.
var errNotOwnRecord = errors.New("node record is not this run's")

// reconcile re-publishes everything this node owns after (re)registration:
// entries of an earlier run are deleted, every owned entry is written again,
// rooms the node no longer has leave its room set. It fails with
// errNotOwnRecord, writing nothing, if the record is not this run's.
func (r *Redis) reconcile(ctx context.Context) error {
	self := Node{ID: r.self.ID, Epoch: r.self.Epoch} // immutable fields only; State is under mu
	if err := r.prune(ctx, self.ID, self.Epoch, pruneStale); err != nil {
		return err
	}
	r.mu.Lock()
	for name, room := range r.rooms {
		r.dirty[entryKey{kind: kindRoom, room: name}] = struct{}{}
		for id := range room.parts {
			r.dirty[entryKey{kind: kindParticipant, room: name, id: string(id)}] = struct{}{}
		}
		for sid, t := range room.tracks {
			r.dirty[entryKey{kind: kindTrack, room: name, id: string(sid), owner: t.Participant}] = struct{}{}
		}
	}
	r.mu.Unlock()
	if err := r.flush(ctx); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	members, err := r.beat.SMembers(rctx, r.keys.nodeRooms(self.ID)).Result()
	if err != nil {
		return fmt.Errorf("failed to read own rooms: %w", err)
	}
	owned := map[RoomName]bool{}
	for _, name := range r.localRooms() {
		owned[name] = true
	}
	var gone []any
	for _, m := range members {
		if !owned[RoomName(m)] {
			gone = append(gone, m)
		}
	}
	if len(gone) > 0 {
		if err := r.beat.SRem(rctx, r.keys.nodeRooms(self.ID), gone...).Err(); err != nil {
			return fmt.Errorf("failed to trim own rooms: %w", err)
		}
	}
	if err := r.publish(rctx, Event{Type: EventNodeUp, Node: self.ID, Epoch: self.Epoch}); err != nil {
		return err
	}
	// Events of the time we were away may be lost.
	if r.everRegistered.Load() {
		r.bus.publish(Event{Type: EventResync})
	}
	return nil
}

// prune deletes a node's entries (all of a dead node, or the stale ones of
// this node) and publishes their removal.
func (r *Redis) prune(ctx context.Context, id NodeID, keep uint64, mode pruneMode) error {
	rctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	res, err := pruneScript.Run(rctx, r.beat,
		[]string{r.keys.node(id), r.keys.nodeRooms(id), r.keys.nodes()},
		string(id), r.keys.p, string(mode), fmtEpoch(keep)).StringSlice()
	if err != nil {
		return fmt.Errorf("failed to prune entries of node %s: %w", id, err)
	}
	if len(res) == 1 && res[0] == "superseded" {
		return errNotOwnRecord
	}
	if len(res) == 0 {
		return nil
	}
	pipe := r.beat.Pipeline()
	for i := 0; i+1 < len(res); i += 2 {
		ev, ok := removalEvent(res[i], []byte(res[i+1]))
		if !ok {
			continue
		}
		b, err := MarshalEvent(ev)
		if err != nil {
			continue
		}
		if b, err = r.sig.seal(r.keys.events(), b); err != nil {
			return err
		}
		pipe.Publish(rctx, r.keys.events(), b)
	}
	if _, err := pipe.Exec(rctx); err != nil {
		return fmt.Errorf("failed to publish pruned entries: %w", err)
	}
	if mode == pruneDead && id != r.self.ID {
		r.log.Info().Str("peer_node_id", string(id)).Int("entries", len(res)/2).Msg("reaped expired node")
	}
	return nil
}

// removalEvent is the event announcing that a pruned entry is gone.
func removalEvent(kind string, raw []byte) (Event, bool) {
	switch kind {
	case "nodes":
		e, err := ParseRoomEntry(raw)
		return Event{Type: EventRoomReleased, Node: e.Node, Epoch: e.Epoch, Room: e.Room}, err == nil
	case "parts":
		p, err := ParseParticipantEntry(raw)
		return Event{Type: EventParticipantRemoved, Node: p.Node, Epoch: p.Epoch, Room: p.Room, Identity: p.Identity}, err == nil
	case "tracks":
		t, err := ParseTrackEntry(raw)
		return Event{Type: EventTrackRemoved, Node: t.Node, Epoch: t.Epoch, Room: t.Room, Identity: t.Participant, Track: t.SID}, err == nil
	}
	return Event{}, false
}
