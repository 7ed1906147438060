package cluster

import "context"

// NodeView is the set of live nodes. Implementations answer from memory (the
// Redis registry from its last heartbeat round), so calls are cheap and work
// while Redis is unreachable.
type NodeView interface {
	// Self is this node's current record, load included.
	Self() Node
	// Nodes are the live nodes, this one included, in ID order.
	Nodes() []Node
}

// Directory tells where rooms, participants and tracks live. Entries of
// nodes that are not live are never returned. With ErrUnavailable the result
// holds this node's own entries.
type Directory interface {
	RoomNodes(ctx context.Context, room RoomName) ([]RoomEntry, error)
	Participants(ctx context.Context, room RoomName) ([]ParticipantEntry, error)
	// Participant returns ErrNotFound when no live node has the identity.
	Participant(ctx context.Context, room RoomName, identity ParticipantIdentity) (ParticipantEntry, error)
	Tracks(ctx context.Context, room RoomName) ([]TrackEntry, error)
	Rooms(ctx context.Context) ([]RoomName, error)
}

// Announcer records what this node owns. Calls change the local view at once
// and never block on the network (the SFU calls them from its hooks); entries
// are stamped with this node's ID and epoch.
type Announcer interface {
	// SetState switches between serving and draining.
	SetState(state NodeState)
	// HostRoom marks the room as hosted here (idempotent).
	HostRoom(room RoomName)
	// ReleaseRoom drops the room with its participants and tracks.
	ReleaseRoom(room RoomName)
	// AddParticipant upserts a participant (hosting its room).
	AddParticipant(p ParticipantEntry)
	// RemoveParticipant drops a participant and its tracks.
	RemoveParticipant(room RoomName, identity ParticipantIdentity)
	// AddTrack upserts a track (hosting its room).
	AddTrack(t TrackEntry)
	RemoveTrack(room RoomName, sid TrackID)
}

// Notifier delivers change events.
type Notifier interface {
	// Subscribe returns a subscription with a queue of buffer events; a
	// subscriber that lets it fill up gets EventResync.
	Subscribe(buffer int) *Subscription
}

// NodeBus carries messages between nodes (bridge signalling, cluster-wide
// RoomService calls), best effort and at most once.
type NodeBus interface {
	// Send delivers payload (at most MaxPayload bytes) to the inboxes of
	// topic on node to. ErrNotDelivered: the node is not on the bus (or,
	// for this node itself, no inbox listens to the topic; a remote node
	// drops messages of topics nobody listens to).
	Send(ctx context.Context, to NodeID, topic string, payload []byte) error
	// Listen opens an inbox for topic (letters, digits, '.', '_', '-');
	// a full inbox drops messages and counts them.
	Listen(topic string, buffer int) *Inbox
}

// Registry is the whole cluster view of one node. Embedded and Redis implement it.
type Registry interface {
	NodeView
	Directory
	Announcer
	Notifier
	NodeBus
	// Run keeps the registry up to date until ctx ends, then deregisters
	// the node, closes every subscription and returns.
	Run(ctx context.Context) error
}

// LoadSource reports this node's load; the SFU (with a CPU sampler) provides
// it. Without one, Participants and Tracks are counted from the node's own
// directory entries.
type LoadSource interface {
	Load() Load
}

// PlacementSource is what the Placer reads.
type PlacementSource interface {
	Nodes() []Node
	RoomNodes(ctx context.Context, room RoomName) ([]RoomEntry, error)
}

var (
	_ Registry        = (*Embedded)(nil)
	_ Registry        = (*Redis)(nil)
	_ PlacementSource = Registry(nil)
)
