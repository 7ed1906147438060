package cluster

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"
)

// Embedded is the single-node registry: everything lives in this process.
type Embedded struct {
	*core
}

// NewEmbedded returns the single-node registry for cfg (only the node's own
// keys are used).
func NewEmbedded(cfg Config, log zerolog.Logger, opts ...Option) (*Embedded, error) {
	c, err := newCore(cfg, log, opts)
	if err != nil {
		return nil, err
	}
	return &Embedded{core: c}, nil
}

// Nodes is this node alone.
func (e *Embedded) Nodes() []Node { return []Node{e.Self()} }

// RoomNodes returns this node if it hosts the room.
func (e *Embedded) RoomNodes(_ context.Context, room RoomName) ([]RoomEntry, error) {
	return e.localRoomNodes(room), nil
}

// Participants returns the room's participants.
func (e *Embedded) Participants(_ context.Context, room RoomName) ([]ParticipantEntry, error) {
	return e.localParticipants(room), nil
}

// Participant returns one participant or ErrNotFound.
func (e *Embedded) Participant(_ context.Context, room RoomName, identity ParticipantIdentity) (ParticipantEntry, error) {
	if p, ok := e.localParticipant(room, identity); ok {
		return p, nil
	}
	return ParticipantEntry{}, ErrNotFound
}

// Tracks returns the room's tracks.
func (e *Embedded) Tracks(_ context.Context, room RoomName) ([]TrackEntry, error) {
	return e.localTracks(room), nil
}

// Rooms returns the hosted rooms.
func (e *Embedded) Rooms(context.Context) ([]RoomName, error) { return e.localRooms(), nil }

// Send delivers a message to this node's inboxes; there are no others.
func (e *Embedded) Send(_ context.Context, to NodeID, topic string, payload []byte) error {
	local, err := e.checkSend(to, topic, payload)
	if err != nil || local {
		return err
	}
	return fmt.Errorf("node %s: %w", to, ErrNotDelivered)
}

// Run waits for ctx to end, then closes every subscription and inbox.
func (e *Embedded) Run(ctx context.Context) error {
	<-ctx.Done()
	e.bus.closeAll()
	e.mail.closeAll()
	return nil
}
