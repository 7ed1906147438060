package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func newTestEmbedded(t *testing.T) *Embedded {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeID = "solo"
	cfg.SignalURL = "ws://127.0.0.1:7880"
	e, err := NewEmbedded(cfg, zerolog.Nop())
	require.NoError(t, err)
	return e
}

// next reads one event or fails.
func next(t *testing.T, s *Subscription) Event {
	t.Helper()
	select {
	case ev, ok := <-s.C():
		require.True(t, ok, "subscription closed")
		return ev
	case <-time.After(5 * time.Second):
		require.FailNow(t, "no event")
		return Event{}
	}
}

func TestEmbeddedDirectory(t *testing.T) {
	ctx := context.Background()
	e := newTestEmbedded(t)
	sub := e.Subscribe(16)
	defer sub.Close()

	self := e.Self()
	require.Equal(t, NodeID("solo"), self.ID)
	require.Equal(t, NodeServing, self.State)
	require.Equal(t, []Node{self}, stripTimes(e.Nodes(), self.UpdatedAt))

	e.AddParticipant(ParticipantEntry{Room: "r1", Identity: "@a:x|D", SID: "PA_1", Node: "forged"})
	require.Equal(t, EventRoomHosted, next(t, sub).Type)
	ev := next(t, sub)
	require.Equal(t, EventParticipantAdded, ev.Type)
	require.Equal(t, NodeID("solo"), ev.Participant.Node, "entries are stamped with this node")
	e.AddTrack(TrackEntry{Room: "r1", SID: "TR_1", Participant: "@a:x|D", Kind: "video", Layers: 3})
	require.Equal(t, EventTrackAdded, next(t, sub).Type)
	e.AddParticipant(ParticipantEntry{Room: "r1", Identity: "@b:x|E"})
	next(t, sub)

	hosts, err := e.RoomNodes(ctx, "r1")
	require.NoError(t, err)
	require.Len(t, hosts, 1)
	require.Equal(t, self.Epoch, hosts[0].Epoch)
	parts, err := e.Participants(ctx, "r1")
	require.NoError(t, err)
	require.Len(t, parts, 2)
	p, err := e.Participant(ctx, "r1", "@a:x|D")
	require.NoError(t, err)
	require.Equal(t, "PA_1", p.SID)
	_, err = e.Participant(ctx, "r1", "@nobody:x")
	require.ErrorIs(t, err, ErrNotFound)
	tracks, err := e.Tracks(ctx, "r1")
	require.NoError(t, err)
	require.Len(t, tracks, 1)
	rooms, err := e.Rooms(ctx)
	require.NoError(t, err)
	require.Equal(t, []RoomName{"r1"}, rooms)
	require.Equal(t, uint32(2), e.Self().Load.Participants, "without a LoadSource the directory is counted")
	require.Equal(t, uint32(1), e.Self().Load.Tracks)

	// Removing a participant removes its tracks first.
	e.RemoveParticipant("r1", "@a:x|D")
	ev = next(t, sub)
	require.Equal(t, EventTrackRemoved, ev.Type)
	require.Equal(t, ParticipantIdentity("@a:x|D"), ev.Identity)
	require.Equal(t, EventParticipantRemoved, next(t, sub).Type)
	tracks, _ = e.Tracks(ctx, "r1")
	require.Empty(t, tracks)

	// Releasing the room removes everything in it.
	e.ReleaseRoom("r1")
	ev = next(t, sub)
	require.Equal(t, EventParticipantRemoved, ev.Type)
	require.Equal(t, ParticipantIdentity("@b:x|E"), ev.Identity)
	require.Equal(t, EventRoomReleased, next(t, sub).Type)
	rooms, _ = e.Rooms(ctx)
	require.Empty(t, rooms)

	e.SetState(NodeDraining)
	require.Equal(t, EventNodeUpdated, next(t, sub).Type)
	require.Equal(t, NodeDraining, e.Self().State)
	e.SetState("bogus")
	require.Equal(t, NodeDraining, e.Self().State)

	// Invalid names are ignored rather than stored.
	e.AddParticipant(ParticipantEntry{Room: "", Identity: "x"})
	e.HostRoom("bad\x00room")
	rooms, _ = e.Rooms(ctx)
	require.Empty(t, rooms)
}

type fixedLoad Load

func (f fixedLoad) Load() Load { return Load(f) }

func TestEmbeddedLoadSource(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeID = "solo"
	e, err := NewEmbedded(cfg, zerolog.Nop(), WithLoadSource(fixedLoad{CPU: 0.5, Participants: 7}))
	require.NoError(t, err)
	e.AddParticipant(ParticipantEntry{Room: "r", Identity: "a"})
	require.Equal(t, Load{CPU: 0.5, Participants: 7}, e.Self().Load)
}

func TestSlowSubscriberGetsResync(t *testing.T) {
	e := newTestEmbedded(t)
	sub := e.Subscribe(2)
	defer sub.Close()
	for i := range 10 {
		e.HostRoom(RoomName(rune('a' + i)))
	}
	ev := next(t, sub)
	require.Equal(t, EventResync, ev.Type)
	// What is still queued is newer than the resync; later events arrive normally.
	for len(sub.C()) > 0 {
		require.NotEqual(t, EventResync, next(t, sub).Type)
	}
	e.ReleaseRoom("a")
	require.Equal(t, EventRoomReleased, next(t, sub).Type)
}

func TestEmbeddedRunClosesSubscriptions(t *testing.T) {
	e := newTestEmbedded(t)
	sub := e.Subscribe(1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	cancel()
	require.NoError(t, <-done)
	_, ok := <-sub.C()
	require.False(t, ok)
	sub.Close() // idempotent
}

func nopLog() zerolog.Logger { return zerolog.Nop() }

func stripTimes(nodes []Node, at time.Time) []Node {
	for i := range nodes {
		nodes[i].UpdatedAt = at
	}
	return nodes
}
