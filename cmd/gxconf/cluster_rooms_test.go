package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/livekit/protocol/livekit"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twitchtv/twirp"
	"google.golang.org/protobuf/proto"

	"github.com/gxfs-conf/gxconf/cluster"
)

// memBus is an in-memory node bus: each node's request and reply inboxes,
// and the removals sent to it.
type memBus struct {
	mu       sync.Mutex
	reqs     map[cluster.NodeID]chan cluster.Message
	replies  map[cluster.NodeID]chan cluster.Message
	removals map[cluster.NodeID][]string
}

func newMemBus(nodes ...cluster.NodeID) *memBus {
	b := &memBus{reqs: map[cluster.NodeID]chan cluster.Message{}, replies: map[cluster.NodeID]chan cluster.Message{},
		removals: map[cluster.NodeID][]string{}}
	for _, n := range nodes {
		b.reqs[n], b.replies[n] = make(chan cluster.Message, 16), make(chan cluster.Message, 16)
	}
	return b
}

func (b *memBus) removalsOf(n cluster.NodeID) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.removals[n]
}

// memReg is one node's view: the bus, and a directory shared by all.
type memReg struct {
	cluster.Directory // only the methods below are used
	self              cluster.NodeID
	bus               *memBus
	nodes             []cluster.NodeID
	parts             map[string]cluster.NodeID   // identity → node
	rooms             map[string][]cluster.NodeID // room → nodes
}

func (r *memReg) Self() cluster.Node { return cluster.Node{ID: r.self} }
func (r *memReg) Nodes() []cluster.Node {
	var out []cluster.Node
	for _, n := range r.nodes {
		out = append(out, cluster.Node{ID: n})
	}
	return out
}

func (r *memReg) Participant(_ context.Context, room cluster.RoomName, id cluster.ParticipantIdentity) (cluster.ParticipantEntry, error) {
	n, ok := r.parts[string(id)]
	if !ok {
		return cluster.ParticipantEntry{}, cluster.ErrNotFound
	}
	return cluster.ParticipantEntry{Room: room, Identity: id, Node: n}, nil
}

func (r *memReg) Rooms(context.Context) ([]cluster.RoomName, error) {
	var out []cluster.RoomName
	for room := range r.rooms {
		out = append(out, cluster.RoomName(room))
	}
	return out, nil
}

func (r *memReg) RoomNodes(_ context.Context, room cluster.RoomName) ([]cluster.RoomEntry, error) {
	var out []cluster.RoomEntry
	for _, n := range r.rooms[string(room)] {
		out = append(out, cluster.RoomEntry{Room: room, Node: n})
	}
	return out, nil
}

func (r *memReg) Send(_ context.Context, to cluster.NodeID, topic string, payload []byte) error {
	b := r.bus
	m := cluster.Message{From: r.self, Topic: topic, Payload: append([]byte(nil), payload...)}
	var ch chan cluster.Message
	switch topic {
	case rsTopic:
		ch = b.reqs[to]
	case rsReplyTopic:
		ch = b.replies[to]
	case removeTopic:
		var req livekit.RoomParticipantIdentity
		if err := proto.Unmarshal(payload, &req); err != nil {
			return err
		}
		b.mu.Lock()
		b.removals[to] = append(b.removals[to], req.GetIdentity())
		b.mu.Unlock()
		return nil
	}
	if ch == nil {
		return cluster.ErrNotDelivered
	}
	ch <- m
	return nil
}

// bobsNode is the local RoomService of the node that has bob.
type bobsNode struct {
	livekit.RoomService // only the methods below are used
	mu                  sync.Mutex
	done                []string
}

func (n *bobsNode) note(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.done = append(n.done, s)
}

func (n *bobsNode) GetParticipant(_ context.Context, req *livekit.RoomParticipantIdentity) (*livekit.ParticipantInfo, error) {
	if req.GetIdentity() != "bob" {
		return nil, twirp.NotFoundError("participant does not exist")
	}
	return &livekit.ParticipantInfo{Identity: "bob", Metadata: "on n2"}, nil
}

func (n *bobsNode) RemoveParticipant(_ context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error) {
	n.note("remove " + req.GetIdentity())
	return &livekit.RemoveParticipantResponse{}, nil
}

func (n *bobsNode) MutePublishedTrack(_ context.Context, req *livekit.MuteRoomTrackRequest) (*livekit.MuteRoomTrackResponse, error) {
	n.note("mute " + req.GetTrackSid())
	return &livekit.MuteRoomTrackResponse{Track: &livekit.TrackInfo{Sid: req.GetTrackSid(), Muted: true}}, nil
}

func (n *bobsNode) UpdateSubscriptions(_ context.Context, req *livekit.UpdateSubscriptionsRequest) (*livekit.UpdateSubscriptionsResponse, error) {
	n.note("subscribe " + req.GetIdentity() + " " + strings.Join(req.GetTrackSids(), ","))
	return &livekit.UpdateSubscriptionsResponse{}, nil
}

// DeleteRoom: n2 has closed "gone" already (the directory lags).
func (n *bobsNode) DeleteRoom(_ context.Context, req *livekit.DeleteRoomRequest) (*livekit.DeleteRoomResponse, error) {
	if req.GetRoom() == "gone" {
		return nil, twirp.NotFoundError("requested room does not exist")
	}
	n.note("delete " + req.GetRoom())
	return &livekit.DeleteRoomResponse{}, nil
}

func (n *bobsNode) SendData(_ context.Context, req *livekit.SendDataRequest) (*livekit.SendDataResponse, error) {
	n.note("data " + string(req.GetData()))
	return &livekit.SendDataResponse{}, nil
}

// The forwarder carries RoomService calls to the owning node and back:
// answers and Twirp error codes cross, ListParticipants merges the nodes
// that answer in time, a removal also reaches every other node.
func TestRoomForwarderOverTheNodeBus(t *testing.T) {
	bus := newMemBus("n1", "n2", "n3") // n3 is on the bus but never answers
	dir := func(self cluster.NodeID) *memReg {
		return &memReg{self: self, bus: bus, nodes: []cluster.NodeID{"n1", "n2", "n3"},
			parts: map[string]cluster.NodeID{"bob": "n2", "ghost": "n2", "amy": "n1", "lost": "n4"},
			rooms: map[string][]cluster.NodeID{"r": {"n1", "n2", "n3"}, "r2": {"n2"}, "gone": {"n2"}}}
	}
	// n1 hosts "r" (amy; bob relayed from n2 is not counted); n2's copy of
	// "r" is the older one.
	rooms1 := func(names []string) []*livekit.Room {
		if len(names) > 0 && !slices.Contains(names, "r") {
			return nil
		}
		return []*livekit.Room{{Name: "r", Sid: "RM_n1", CreationTimeMs: 2000, Metadata: "md", NumParticipants: 1, NumPublishers: 1}}
	}
	rooms2 := func(names []string) []*livekit.Room {
		var out []*livekit.Room
		for _, r := range []*livekit.Room{
			{Name: "r", Sid: "RM_n2", CreationTimeMs: 1000, Metadata: "md", NumParticipants: 2, NumPublishers: 1},
			{Name: "r2", Sid: "RM_r2", CreationTimeMs: 1500, NumParticipants: 1},
		} {
			if slices.Contains(names, r.Name) {
				out = append(out, r)
			}
		}
		return out
	}
	n2 := &bobsNode{}
	f1 := &roomForwarder{reg: dir("n1"), localRooms: rooms1, log: zerolog.Nop(), pending: map[uint64]pendingCall{}}
	f2 := &roomForwarder{reg: dir("n2"), local: n2, localRooms: rooms2, log: zerolog.Nop(), pending: map[uint64]pendingCall{},
		localParticipants: func(room string) ([]*livekit.ParticipantInfo, error) {
			if room != "r" {
				return nil, errors.New("requested room does not exist")
			}
			return []*livekit.ParticipantInfo{{Identity: "bob"}, {Identity: "ghost"}}, nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, f := range []*roomForwarder{f1, f2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			self := f.reg.Self().ID
			_ = f.loop(ctx, bus.reqs[self], bus.replies[self])
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	code := func(err error) twirp.ErrorCode {
		var te twirp.Error
		require.True(t, errors.As(err, &te), "not a twirp error: %v", err)
		return te.Code()
	}

	p, err := f1.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "bob"})
	require.NoError(t, err)
	require.Equal(t, "on n2", p.GetMetadata())
	_, err = f1.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "ghost"})
	require.Equal(t, twirp.NotFound, code(err), "the owner's not_found crosses the bus")
	_, err = f1.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "nobody"})
	require.Equal(t, twirp.NotFound, code(err), "not in the directory")
	_, err = f1.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "amy"})
	require.Equal(t, twirp.NotFound, code(err), "the directory names this node: not forwarded to itself")
	_, err = f1.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "lost"})
	require.Equal(t, twirp.Unavailable, code(err), "the owner is not on the bus")

	m, err := f1.MutePublishedTrack(ctx, &livekit.MuteRoomTrackRequest{Room: "r", Identity: "bob", TrackSid: "TR_1", Muted: true})
	require.NoError(t, err)
	require.True(t, m.GetTrack().GetMuted())
	_, err = f1.SendData(ctx, &livekit.SendDataRequest{Room: "r2", Data: []byte("hi")})
	require.NoError(t, err)
	_, err = f1.SendData(ctx, &livekit.SendDataRequest{Room: "r3", Data: []byte("hi")})
	require.Equal(t, twirp.NotFound, code(err), "no node hosts the room")
	_, err = f1.UpdateSubscriptions(ctx, &livekit.UpdateSubscriptionsRequest{Room: "r", Identity: "bob", TrackSids: []string{"TR_2"}, Subscribe: true})
	require.NoError(t, err)
	_, err = f1.UpdateSubscriptions(ctx, &livekit.UpdateSubscriptionsRequest{Room: "r", Identity: "nobody", TrackSids: []string{"TR_2"}})
	require.Equal(t, twirp.NotFound, code(err))
	_, err = f1.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "bob"})
	require.NoError(t, err)

	// Rooms: a filtered list asks only the hosting node; CreateRoom of a
	// room hosted elsewhere returns it; DeleteRoom reaches the hosts.
	rl, err := f1.ListRooms(ctx, &livekit.ListRoomsRequest{Names: []string{"r2", "r9"}})
	require.NoError(t, err)
	require.Len(t, rl.GetRooms(), 1)
	require.Equal(t, "RM_r2", rl.GetRooms()[0].GetSid())
	cr, err := f1.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "r2", Metadata: "other settings"})
	require.NoError(t, err)
	require.Equal(t, "RM_r2", cr.GetSid(), "the room n2 hosts, not a second copy")
	_, err = f1.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "r9"})
	require.Equal(t, twirp.NotFound, code(err), "nobody hosts it: the SFU creates it here")
	_, err = f1.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "r2"})
	require.NoError(t, err)
	_, err = f1.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "gone"})
	require.Equal(t, twirp.NotFound, code(err), "the directory's host closed it already")
	_, err = f1.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "r9"})
	require.Equal(t, twirp.NotFound, code(err))
	n2.mu.Lock()
	require.Equal(t, []string{"mute TR_1", "data hi", "subscribe bob TR_2", "remove bob", "delete r2"}, n2.done)
	n2.mu.Unlock()
	require.Equal(t, []string{"bob"}, bus.removalsOf("n3"), "the other nodes refuse bob's older tokens too")
	require.Empty(t, bus.removalsOf("n2"), "the owner removes once")

	// n3 does not answer: the list has n2's participants after the timeout.
	l, err := f1.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: "r"})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"bob", "ghost"}, identitiesOf(l.GetParticipants()))
	_, err = f1.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: "r9"})
	require.Equal(t, twirp.NotFound, code(err))
	// Every room once (n3 does not answer): r's counts are n1's and n2's
	// own participants, the rest is from n2's older copy.
	rl, err = f1.ListRooms(ctx, &livekit.ListRoomsRequest{})
	require.NoError(t, err)
	require.Len(t, rl.GetRooms(), 2)
	r := rl.GetRooms()[0]
	require.Equal(t, "r", r.GetName())
	require.Equal(t, "RM_n2", r.GetSid())
	require.EqualValues(t, 3, r.GetNumParticipants())
	require.EqualValues(t, 2, r.GetNumPublishers())
	require.Equal(t, "r2", rl.GetRooms()[1].GetName())

	// A late or foreign answer is dropped.
	f1.complete(cluster.Message{From: "n2", Payload: []byte(`{"id":12345}`)})
	f1.complete(cluster.Message{From: "n2", Payload: []byte(`not json`)})
	f1.mu.Lock()
	require.Empty(t, f1.pending, "calls left pending")
	f1.mu.Unlock()
}

func identitiesOf(ps []*livekit.ParticipantInfo) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.GetIdentity())
	}
	return out
}
