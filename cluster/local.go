package cluster

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Option configures a registry.
type Option func(*options)

type options struct {
	load  LoadSource
	epoch uint64
	now   func() time.Time
}

// WithLoadSource makes the registry report load from src.
func WithLoadSource(src LoadSource) Option { return func(o *options) { o.load = src } }

// withEpoch fixes the epoch (tests that simulate a restart).
func withEpoch(e uint64) Option { return func(o *options) { o.epoch = e } }

func buildOptions(opts []Option) options {
	o := options{now: time.Now}
	for _, fn := range opts {
		fn(&o)
	}
	if o.epoch == 0 {
		o.epoch = uint64(o.now().UnixNano())
	}
	return o
}

type entryKind uint8

const (
	kindRoom entryKind = iota + 1
	kindParticipant
	kindTrack
)

// entryKey names one directory entry this node owns.
type entryKey struct {
	kind entryKind
	room RoomName
	id   string // identity or track SID; empty for kindRoom
	// owner is the publishing participant of a track (for its removal event).
	owner ParticipantIdentity
}

type ownedRoom struct {
	entry  RoomEntry
	parts  map[ParticipantIdentity]ParticipantEntry
	tracks map[TrackID]TrackEntry
}

// core is the node's own record and entries, shared by both registries.
type core struct {
	log  zerolog.Logger
	opts options
	bus  *broker
	mail *mailboxes

	mu    sync.Mutex
	self  Node
	rooms map[RoomName]*ownedRoom
	// changed is called under mu for every entry that changed (the Redis
	// registry marks it dirty); nil for the embedded registry.
	changed func(entryKey)
	// stateChanged is called under mu after SetState changed the state.
	stateChanged func()
}

func newCore(cfg Config, log zerolog.Logger, opts []Option) (*core, error) {
	id, err := cfg.ResolveNodeID()
	if err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	return &core{
		log:  log.With().Str("node_id", string(id)).Str("site", string(cfg.Site)).Logger(),
		opts: o,
		bus:  newBroker(),
		mail: newMailboxes(),
		self: Node{
			ID: id, Site: cfg.Site, Federation: cfg.Federation, Epoch: o.epoch,
			SignalURL: cfg.SignalURL, MediaAddrs: slices.Clone(cfg.MediaAddresses), RelayAddr: cfg.RelayAddress,
			State: NodeServing, Limits: cfg.Limits,
		},
		rooms: map[RoomName]*ownedRoom{},
	}, nil
}

// Self is this node's current record with its load.
func (c *core) Self() Node {
	c.mu.Lock()
	n := c.selfLocked()
	c.mu.Unlock()
	if c.opts.load != nil {
		n.Load = c.opts.load.Load()
	}
	return n
}

func (c *core) selfLocked() Node {
	n := c.self
	n.MediaAddrs = slices.Clone(n.MediaAddrs)
	n.UpdatedAt = c.opts.now()
	if c.opts.load == nil {
		for _, r := range c.rooms {
			n.Load.Participants += uint32(len(r.parts))
			n.Load.Tracks += uint32(len(r.tracks))
		}
	}
	return n
}

// Subscribe returns a subscription to cluster events.
func (c *core) Subscribe(buffer int) *Subscription { return c.bus.subscribe(buffer) }

// Listen opens an inbox for topic.
func (c *core) Listen(topic string, buffer int) *Inbox { return c.mail.listen(topic, buffer) }

// checkSend validates a message and, when it is for this node, delivers it.
func (c *core) checkSend(to NodeID, topic string, payload []byte) (local bool, err error) {
	if !validTopic(topic) {
		return false, fmt.Errorf("invalid topic %q", topic)
	}
	if len(payload) > MaxPayload {
		return false, fmt.Errorf("payload of %d bytes exceeds %d", len(payload), MaxPayload)
	}
	if to != c.self.ID {
		return false, nil
	}
	msg := Message{From: c.self.ID, FromEpoch: c.self.Epoch, Topic: topic, Payload: slices.Clone(payload)}
	if msg.Payload == nil {
		msg.Payload = []byte{}
	}
	if !c.mail.deliver(msg) {
		return true, fmt.Errorf("topic %s on node %s: %w", topic, to, ErrNotDelivered)
	}
	return true, nil
}

// SetState switches between serving and draining.
func (c *core) SetState(state NodeState) {
	if state != NodeServing && state != NodeDraining {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.self.State == state {
		return
	}
	c.self.State = state
	c.log.Info().Str("state", string(state)).Msg("node state changed")
	c.bus.publish(Event{Type: EventNodeUpdated, Node: c.self.ID, Epoch: c.self.Epoch})
	if c.stateChanged != nil {
		c.stateChanged()
	}
}

func (c *core) mark(k entryKey) {
	if c.changed != nil {
		c.changed(k)
	}
}

// hostLocked returns the owned room, creating it (and announcing it).
func (c *core) hostLocked(room RoomName) *ownedRoom {
	r := c.rooms[room]
	if r != nil {
		return r
	}
	r = &ownedRoom{
		entry:  RoomEntry{Room: room, Node: c.self.ID, Epoch: c.self.Epoch, Since: c.opts.now()},
		parts:  map[ParticipantIdentity]ParticipantEntry{},
		tracks: map[TrackID]TrackEntry{},
	}
	c.rooms[room] = r
	c.mark(entryKey{kind: kindRoom, room: room})
	c.bus.publish(Event{Type: EventRoomHosted, Node: c.self.ID, Epoch: c.self.Epoch, Room: room})
	return r
}

// HostRoom marks the room as hosted here.
func (c *core) HostRoom(room RoomName) {
	if !validName(string(room), maxNameLen) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hostLocked(room)
}

// ReleaseRoom drops the room with its participants and tracks.
func (c *core) ReleaseRoom(room RoomName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rooms[room]
	if r == nil {
		return
	}
	for _, id := range sortedKeys(r.parts) {
		c.removeParticipantLocked(r, id)
	}
	for _, sid := range sortedKeys(r.tracks) {
		c.removeTrackLocked(r, sid)
	}
	delete(c.rooms, room)
	c.mark(entryKey{kind: kindRoom, room: room})
	c.bus.publish(Event{Type: EventRoomReleased, Node: c.self.ID, Epoch: c.self.Epoch, Room: room})
}

// AddParticipant upserts a participant, hosting its room.
func (c *core) AddParticipant(p ParticipantEntry) {
	if !validName(string(p.Room), maxNameLen) || !validName(string(p.Identity), maxNameLen) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.hostLocked(p.Room)
	p.Node, p.Epoch = c.self.ID, c.self.Epoch
	if p.JoinedAt.IsZero() {
		p.JoinedAt = c.opts.now()
	}
	r.parts[p.Identity] = p
	c.mark(entryKey{kind: kindParticipant, room: p.Room, id: string(p.Identity)})
	c.bus.publish(Event{Type: EventParticipantAdded, Node: p.Node, Epoch: p.Epoch, Room: p.Room, Identity: p.Identity, Participant: &p})
}

// RemoveParticipant drops a participant and its tracks.
func (c *core) RemoveParticipant(room RoomName, identity ParticipantIdentity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.rooms[room]; r != nil {
		c.removeParticipantLocked(r, identity)
	}
}

func (c *core) removeParticipantLocked(r *ownedRoom, identity ParticipantIdentity) {
	if _, ok := r.parts[identity]; !ok {
		return
	}
	for _, sid := range sortedKeys(r.tracks) {
		if r.tracks[sid].Participant == identity {
			c.removeTrackLocked(r, sid)
		}
	}
	delete(r.parts, identity)
	room := r.entry.Room
	c.mark(entryKey{kind: kindParticipant, room: room, id: string(identity)})
	c.bus.publish(Event{Type: EventParticipantRemoved, Node: c.self.ID, Epoch: c.self.Epoch, Room: room, Identity: identity})
}

// AddTrack upserts a track, hosting its room.
func (c *core) AddTrack(t TrackEntry) {
	if !validName(string(t.Room), maxNameLen) || !validName(string(t.SID), maxNameLen) || !validName(string(t.Participant), maxNameLen) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.hostLocked(t.Room)
	t.Node, t.Epoch = c.self.ID, c.self.Epoch
	r.tracks[t.SID] = t
	c.mark(entryKey{kind: kindTrack, room: t.Room, id: string(t.SID), owner: t.Participant})
	c.bus.publish(Event{Type: EventTrackAdded, Node: t.Node, Epoch: t.Epoch, Room: t.Room, Identity: t.Participant, Track: t.SID, TrackInfo: &t})
}

// RemoveTrack drops a track.
func (c *core) RemoveTrack(room RoomName, sid TrackID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.rooms[room]; r != nil {
		c.removeTrackLocked(r, sid)
	}
}

func (c *core) removeTrackLocked(r *ownedRoom, sid TrackID) {
	t, ok := r.tracks[sid]
	if !ok {
		return
	}
	delete(r.tracks, sid)
	c.mark(entryKey{kind: kindTrack, room: r.entry.Room, id: string(sid), owner: t.Participant})
	c.bus.publish(Event{Type: EventTrackRemoved, Node: c.self.ID, Epoch: c.self.Epoch, Room: r.entry.Room, Identity: t.Participant, Track: sid})
}

// Local lookups: this node's own entries.

func (c *core) localRoomNodes(room RoomName) []RoomEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.rooms[room]; r != nil {
		return []RoomEntry{r.entry}
	}
	return nil
}

func (c *core) localParticipants(room RoomName) []ParticipantEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rooms[room]
	if r == nil {
		return nil
	}
	out := make([]ParticipantEntry, 0, len(r.parts))
	for _, id := range sortedKeys(r.parts) {
		out = append(out, r.parts[id])
	}
	return out
}

func (c *core) localParticipant(room RoomName, identity ParticipantIdentity) (ParticipantEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.rooms[room]; r != nil {
		p, ok := r.parts[identity]
		return p, ok
	}
	return ParticipantEntry{}, false
}

func (c *core) localTracks(room RoomName) []TrackEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rooms[room]
	if r == nil {
		return nil
	}
	out := make([]TrackEntry, 0, len(r.tracks))
	for _, sid := range sortedKeys(r.tracks) {
		out = append(out, r.tracks[sid])
	}
	return out
}

func (c *core) localRooms() []RoomName {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sortedKeys(c.rooms)
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b K) int { return strings.Compare(string(a), string(b)) })
	return keys
}
