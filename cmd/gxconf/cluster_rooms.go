package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/utils"
	"github.com/rs/zerolog"
	"github.com/twitchtv/twirp"
	"google.golang.org/protobuf/proto"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/sfu"
)

// RoomService calls between nodes (the SFU's Forwarder), over the node bus.
//
// A request goes to rsTopic on the node the directory names (the
// participant's node, or the room's nodes); it is JSON {id, method, body}
// with body the protobuf of the livekit request. The node runs it on its
// local RoomService and answers on rsReplyTopic to the sender with
// {id, code, msg, body}: code is the Twirp error code (empty on success),
// body the protobuf of the livekit response. id correlates the answer; the
// caller gives up after rsTimeout (the bus is at most once). ListParticipants
// asks every node of the room at once and each answers with its local
// participants only (never relayed copies), so the merge has no duplicates;
// ListRooms likewise asks each node for its copies of the rooms the
// directory places there, counting local participants only.
//
// The bus carries only requests the Twirp edge of the sending node has
// authorized (sfu's guardedRoomService checks the caller's grant against
// the request's room before the forwarder sees it, and the request crosses
// unchanged); the receiving node runs them on its trusted RoomService.
const (
	rsTopic      = "sfu.room_service"
	rsReplyTopic = "sfu.room_service.reply"
	rsTimeout    = 3 * time.Second
	// rsRoomsBatch rooms are asked of a node per ListRooms call, so that
	// the answer fits a bus message (cluster.MaxPayload) unless the rooms'
	// metadata is large.
	rsRoomsBatch = 50
)

// Methods carried by rsRequest.
const (
	rsList     = "ListParticipants"
	rsGet      = "GetParticipant"
	rsRemove   = "RemoveParticipant"
	rsMute     = "MutePublishedTrack"
	rsUpdate   = "UpdateParticipant"
	rsData     = "SendData"
	rsMetadata = "UpdateRoomMetadata"
	rsSubs     = "UpdateSubscriptions"
	rsRooms    = "ListRooms"
	rsDelete   = "DeleteRoom"
	rsRPC      = "PerformRpc"
)

// PerformRpc waits for a participant's client: its call lasts up to the
// response timeout the request names (livekit's default 15 s, at most
// sfu.MaxRPCResponseTimeout) plus the 7 s the client has to acknowledge,
// and runs on its own goroutine on the serving node (at most rsRPCInFlight
// at once) so that it does not hold up the node's other RoomService calls.
const rsRPCInFlight = 64

// rpcWait is how long a node waits for another's PerformRpc answer: the
// call's own bounds and the bus's usual wait.
func rpcWait(req *livekit.PerformRpcRequest) time.Duration {
	d := time.Duration(req.GetResponseTimeoutMs()) * time.Millisecond
	if d <= 0 {
		d = utils.DataChannelRpcDefaultResponseTimeout
	}
	return min(d, sfu.MaxRPCResponseTimeout) + utils.DataChannelRpcMaxRoundTripLatency + rsTimeout
}

type rsRequest struct {
	ID     uint64 `json:"id"`
	Method string `json:"method"`
	Body   []byte `json:"body"`
}

type rsResponse struct {
	ID   uint64 `json:"id"`
	Code string `json:"code,omitempty"`
	Msg  string `json:"msg,omitempty"`
	Body []byte `json:"body,omitempty"`
}

// roomForwarder is the SFU's Forwarder in a cluster, and the server side
// that answers other nodes' calls.
//
// Concurrency: mu guards pending (correlation id → waiting caller); the
// reply loop (run) is the only one that completes a call.
type roomForwarder struct {
	reg   forwarderRegistry
	local livekit.RoomService
	// localParticipants lists a room's own participants (no relayed ones).
	localParticipants func(room string) ([]*livekit.ParticipantInfo, error)
	// localRooms are this node's copies of the named rooms (all when
	// names is empty), counting its own participants.
	localRooms func(names []string) []*livekit.Room
	log        zerolog.Logger

	next    atomic.Uint64
	mu      sync.Mutex
	pending map[uint64]pendingCall
	rpcs    chan struct{} // PerformRpc calls served at once (rsRPCInFlight)
}

// forwarderRegistry is what the forwarder needs of the registry: the live
// nodes, the directory, and the node bus's Send (run listens).
type forwarderRegistry interface {
	cluster.NodeView
	cluster.Directory
	Send(ctx context.Context, to cluster.NodeID, topic string, payload []byte) error
}

type pendingCall struct {
	node cluster.NodeID
	ch   chan rsResponse
}

func newRoomForwarder(reg forwarderRegistry, srv *sfu.Server, log zerolog.Logger) *roomForwarder {
	f := &roomForwarder{reg: reg, local: srv.RoomService(), localParticipants: srv.LocalParticipants,
		localRooms: srv.LocalRooms, log: log, pending: map[uint64]pendingCall{}, rpcs: make(chan struct{}, rsRPCInFlight)}
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	// Ids of a restarted node with the same node id do not collide with
	// answers still in flight to its predecessor.
	f.next.Store(binary.BigEndian.Uint64(seed[:]) >> 1)
	return f
}

var _ sfu.Forwarder = (*roomForwarder)(nil)

// call runs method on node and decodes the answer into resp.
func (f *roomForwarder) call(ctx context.Context, node cluster.NodeID, method string, req, resp proto.Message) error {
	return f.callWithin(ctx, rsTimeout, node, method, req, resp)
}

// callWithin is call, waiting up to wait for the answer.
func (f *roomForwarder) callWithin(ctx context.Context, wait time.Duration, node cluster.NodeID, method string, req, resp proto.Message) error {
	body, err := proto.Marshal(req)
	if err != nil {
		return twirp.InternalErrorWith(err)
	}
	id := f.next.Add(1)
	if id == 0 {
		id = f.next.Add(1)
	}
	payload, err := json.Marshal(rsRequest{ID: id, Method: method, Body: body})
	if err != nil {
		return twirp.InternalErrorWith(err)
	}
	ch := make(chan rsResponse, 1)
	f.mu.Lock()
	f.pending[id] = pendingCall{node: node, ch: ch}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.pending, id)
		f.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := f.reg.Send(ctx, node, rsTopic, payload); err != nil {
		return twirp.NewError(twirp.Unavailable, fmt.Sprintf("node %s: %v", node, err))
	}
	select {
	case <-ctx.Done():
		return twirp.NewError(twirp.DeadlineExceeded, fmt.Sprintf("node %s did not answer", node))
	case r := <-ch:
		if r.Code != "" {
			code := twirp.ErrorCode(r.Code)
			if !twirp.IsValidErrorCode(code) {
				code = twirp.Internal
			}
			return twirp.NewError(code, r.Msg)
		}
		if err := proto.Unmarshal(r.Body, resp); err != nil {
			return twirp.InternalErrorWith(err)
		}
		return nil
	}
}

// owner is the node a participant is connected to (never this one: the SFU
// asks only for what is not here).
func (f *roomForwarder) owner(ctx context.Context, room, identity string) (cluster.NodeID, error) {
	if room == "" || identity == "" {
		return "", twirp.RequiredArgumentError("identity")
	}
	p, err := f.reg.Participant(ctx, cluster.RoomName(room), cluster.ParticipantIdentity(identity))
	switch {
	case errors.Is(err, cluster.ErrNotFound):
		return "", twirp.NotFoundError(sfu.ErrParticipantNotFound.Error())
	case err != nil:
		return "", twirp.NewError(twirp.Unavailable, err.Error())
	case p.Node == f.reg.Self().ID:
		return "", twirp.NotFoundError(sfu.ErrParticipantNotFound.Error())
	}
	return p.Node, nil
}

// roomNodes are the other nodes hosting room.
func (f *roomForwarder) roomNodes(ctx context.Context, room string) ([]cluster.NodeID, error) {
	if room == "" {
		return nil, twirp.RequiredArgumentError("room")
	}
	entries, err := f.reg.RoomNodes(ctx, cluster.RoomName(room))
	if err != nil && !errors.Is(err, cluster.ErrUnavailable) {
		return nil, twirp.NewError(twirp.Unavailable, err.Error())
	}
	self := f.reg.Self().ID
	var out []cluster.NodeID
	for _, e := range entries {
		if e.Node != self {
			out = append(out, e.Node)
		}
	}
	if len(out) == 0 {
		if err != nil {
			return nil, twirp.NewError(twirp.Unavailable, err.Error())
		}
		return nil, twirp.NotFoundError(sfu.ErrRoomNotFound.Error())
	}
	return out, nil
}

// ListParticipants asks every other node of the room for its own
// participants; nodes that do not answer in time are left out.
func (f *roomForwarder) ListParticipants(ctx context.Context, req *livekit.ListParticipantsRequest) (*livekit.ListParticipantsResponse, error) {
	nodes, err := f.roomNodes(ctx, req.GetRoom())
	if err != nil {
		return nil, err
	}
	type answer struct {
		node cluster.NodeID
		res  *livekit.ListParticipantsResponse
		err  error
	}
	answers := make(chan answer, len(nodes))
	for _, n := range nodes {
		go func() {
			res := &livekit.ListParticipantsResponse{}
			err := f.call(ctx, n, rsList, req, res)
			answers <- answer{n, res, err}
		}()
	}
	out := &livekit.ListParticipantsResponse{}
	seen := map[string]bool{}
	var firstErr error
	ok := false
	for range nodes {
		a := <-answers
		if a.err != nil {
			if firstErr == nil {
				firstErr = a.err
			}
			f.log.Debug().Err(a.err).Str("node_id", string(a.node)).Str("lk_room", req.GetRoom()).Msg("A node did not list its participants")
			continue
		}
		ok = true
		for _, p := range a.res.GetParticipants() {
			if !seen[p.GetIdentity()] {
				seen[p.GetIdentity()] = true
				out.Participants = append(out.Participants, p)
			}
		}
	}
	if !ok {
		return nil, firstErr
	}
	return out, nil
}

func (f *roomForwarder) GetParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.ParticipantInfo, error) {
	node, err := f.owner(ctx, req.GetRoom(), req.GetIdentity())
	if err != nil {
		return nil, err
	}
	res := &livekit.ParticipantInfo{}
	return res, f.call(ctx, node, rsGet, req, res)
}

// RemoveParticipant removes the participant on its node and, as the
// focus's removals do, tells every other node (fire and forget) so tokens
// issued before are refused there too.
func (f *roomForwarder) RemoveParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error) {
	node, err := f.owner(ctx, req.GetRoom(), req.GetIdentity())
	skip := node
	if err != nil {
		skip = ""
	}
	f.broadcastRemoval(ctx, req, skip)
	if err != nil {
		return nil, err
	}
	res := &livekit.RemoveParticipantResponse{}
	return res, f.call(ctx, node, rsRemove, req, res)
}

// broadcastRemoval sends a removal to every other live node but skip.
func (f *roomForwarder) broadcastRemoval(ctx context.Context, req *livekit.RoomParticipantIdentity, skip cluster.NodeID) {
	payload, err := proto.Marshal(req)
	if err != nil {
		return
	}
	self := f.reg.Self().ID
	for _, n := range f.reg.Nodes() {
		if n.ID == self || n.ID == skip {
			continue
		}
		if serr := f.reg.Send(ctx, n.ID, removeTopic, payload); serr != nil {
			f.log.Warn().Err(serr).Str("node_id", string(n.ID)).Str("lk_room", req.GetRoom()).Msg("Failed to send a removal to a node")
		}
	}
}

func (f *roomForwarder) MutePublishedTrack(ctx context.Context, req *livekit.MuteRoomTrackRequest) (*livekit.MuteRoomTrackResponse, error) {
	node, err := f.owner(ctx, req.GetRoom(), req.GetIdentity())
	if err != nil {
		return nil, err
	}
	res := &livekit.MuteRoomTrackResponse{}
	return res, f.call(ctx, node, rsMute, req, res)
}

func (f *roomForwarder) UpdateParticipant(ctx context.Context, req *livekit.UpdateParticipantRequest) (*livekit.ParticipantInfo, error) {
	node, err := f.owner(ctx, req.GetRoom(), req.GetIdentity())
	if err != nil {
		return nil, err
	}
	res := &livekit.ParticipantInfo{}
	return res, f.call(ctx, node, rsUpdate, req, res)
}

// SendData goes to one node of the room; its relay carries the packet to
// the room's other nodes.
func (f *roomForwarder) SendData(ctx context.Context, req *livekit.SendDataRequest) (*livekit.SendDataResponse, error) {
	nodes, err := f.roomNodes(ctx, req.GetRoom())
	if err != nil {
		return nil, err
	}
	res := &livekit.SendDataResponse{}
	return res, f.call(ctx, nodes[0], rsData, req, res)
}

// UpdateRoomMetadata goes to one node of the room, which relays it.
func (f *roomForwarder) UpdateRoomMetadata(ctx context.Context, req *livekit.UpdateRoomMetadataRequest) (*livekit.Room, error) {
	nodes, err := f.roomNodes(ctx, req.GetRoom())
	if err != nil {
		return nil, err
	}
	res := &livekit.Room{}
	return res, f.call(ctx, nodes[0], rsMetadata, req, res)
}

func (f *roomForwarder) UpdateSubscriptions(ctx context.Context, req *livekit.UpdateSubscriptionsRequest) (*livekit.UpdateSubscriptionsResponse, error) {
	node, err := f.owner(ctx, req.GetRoom(), req.GetIdentity())
	if err != nil {
		return nil, err
	}
	res := &livekit.UpdateSubscriptionsResponse{}
	return res, f.call(ctx, node, rsSubs, req, res)
}

// PerformRpc goes to the participant's node and waits for its client.
func (f *roomForwarder) PerformRpc(ctx context.Context, req *livekit.PerformRpcRequest) (*livekit.PerformRpcResponse, error) {
	node, err := f.owner(ctx, req.GetRoom(), req.GetDestinationIdentity())
	if err != nil {
		return nil, err
	}
	res := &livekit.PerformRpcResponse{}
	return res, f.callWithin(ctx, rpcWait(req), node, rsRPC, req, res)
}

// ListRooms lists the rooms the directory knows (or the named ones), each
// once, from the nodes hosting them. A node that does not answer in time
// is left out (its rooms' counts lack its participants; a room only it
// hosts is not listed); the directory being unreachable is an error, not
// a shorter list.
func (f *roomForwarder) ListRooms(ctx context.Context, req *livekit.ListRoomsRequest) (*livekit.ListRoomsResponse, error) {
	names := req.GetNames()
	if len(names) == 0 {
		rooms, err := f.reg.Rooms(ctx)
		if err != nil {
			return nil, twirp.NewError(twirp.Unavailable, err.Error())
		}
		for _, r := range rooms {
			names = append(names, string(r))
		}
	}
	rooms, err := f.gatherRooms(ctx, names)
	if err != nil {
		return nil, err
	}
	return &livekit.ListRoomsResponse{Rooms: rooms}, nil
}

// CreateRoom returns the room when another node hosts it (the SFU asks
// only when it is not here). Two nodes creating the same room at the same
// moment both miss the other's and create it: the room then spans both,
// each copy with its own request's settings, linked by the bridge like
// any room placed on two nodes.
func (f *roomForwarder) CreateRoom(ctx context.Context, req *livekit.CreateRoomRequest) (*livekit.Room, error) {
	if req.GetName() == "" {
		return nil, twirp.RequiredArgumentError("name")
	}
	rooms, err := f.gatherRooms(ctx, []string{req.GetName()})
	if err != nil {
		return nil, err
	}
	if len(rooms) == 0 {
		return nil, twirp.NotFoundError(sfu.ErrRoomNotFound.Error())
	}
	return rooms[0], nil
}

// DeleteRoom closes the room on every other node hosting it, all at once.
// A node's not_found (its copy closed meanwhile) counts as done; any other
// failure is returned, as the room may still live there.
func (f *roomForwarder) DeleteRoom(ctx context.Context, req *livekit.DeleteRoomRequest) (*livekit.DeleteRoomResponse, error) {
	nodes, err := f.roomNodes(ctx, req.GetRoom())
	if err != nil {
		return nil, err
	}
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() { errs <- f.call(ctx, n, rsDelete, req, &livekit.DeleteRoomResponse{}) }()
	}
	var failed error
	deleted := false
	for range nodes {
		err := <-errs
		switch {
		case err == nil:
			deleted = true
		case isTwirpNotFound(err):
		case failed == nil:
			failed = err
		}
	}
	switch {
	case failed != nil:
		return nil, failed
	case !deleted:
		return nil, twirp.NotFoundError(sfu.ErrRoomNotFound.Error())
	}
	return &livekit.DeleteRoomResponse{}, nil
}

func isTwirpNotFound(err error) bool {
	var te twirp.Error
	return errors.As(err, &te) && te.Code() == twirp.NotFound
}

// gatherRooms returns the named rooms as the cluster has them, sorted by
// name: each node hosting one (per the directory, and this node from its
// own state) reports its copy with its own participants; the counts are
// summed and the rest (sid, metadata, creation time, settings) comes from
// the oldest copy, the one of the room's first node (copies share their
// metadata: the bridge relays its changes).
func (f *roomForwarder) gatherRooms(ctx context.Context, names []string) ([]*livekit.Room, error) {
	if len(names) == 0 {
		return nil, nil
	}
	self := f.reg.Self().ID
	// asked[node][room]: the directory places room on node.
	asked := map[cluster.NodeID]map[string]bool{}
	for _, name := range names {
		entries, err := f.reg.RoomNodes(ctx, cluster.RoomName(name))
		if err != nil {
			return nil, twirp.NewError(twirp.Unavailable, err.Error())
		}
		for _, e := range entries {
			if e.Node == self {
				continue
			}
			if asked[e.Node] == nil {
				asked[e.Node] = map[string]bool{}
			}
			asked[e.Node][name] = true
		}
	}
	type batch struct {
		node  cluster.NodeID
		rooms []string
	}
	var batches []batch
	for n, rooms := range asked {
		for b := range slices.Chunk(slices.Sorted(maps.Keys(rooms)), rsRoomsBatch) {
			batches = append(batches, batch{n, b})
		}
	}
	type answer struct {
		node  cluster.NodeID
		rooms []*livekit.Room
		err   error
	}
	answers := make(chan answer, len(batches))
	for _, b := range batches {
		go func() {
			res := &livekit.ListRoomsResponse{}
			err := f.call(ctx, b.node, rsRooms, &livekit.ListRoomsRequest{Names: b.rooms}, res)
			answers <- answer{b.node, res.GetRooms(), err}
		}()
	}
	type merged struct {
		info *livekit.Room
		node cluster.NodeID
	}
	out := map[string]*merged{}
	add := func(node cluster.NodeID, r *livekit.Room) {
		m := out[r.GetName()]
		if m == nil {
			out[r.GetName()] = &merged{info: proto.Clone(r).(*livekit.Room), node: node}
			return
		}
		n, pubs := m.info.GetNumParticipants()+r.GetNumParticipants(), m.info.GetNumPublishers()+r.GetNumPublishers()
		if older(r, node, m.info, m.node) {
			m.info, m.node = proto.Clone(r).(*livekit.Room), node
		}
		m.info.NumParticipants, m.info.NumPublishers = n, pubs
	}
	for _, r := range f.localRooms(names) {
		add(self, r)
	}
	var firstErr error
	answered := false
	for range batches {
		a := <-answers
		if a.err != nil {
			if firstErr == nil {
				firstErr = a.err
			}
			f.log.Debug().Err(a.err).Str("node_id", string(a.node)).Msg("A node did not list its rooms")
			continue
		}
		answered = true
		for _, r := range a.rooms {
			if asked[a.node][r.GetName()] {
				add(a.node, r)
			}
		}
	}
	if !answered && firstErr != nil && len(out) == 0 {
		return nil, firstErr
	}
	rooms := make([]*livekit.Room, 0, len(out))
	for _, m := range out {
		rooms = append(rooms, m.info)
	}
	slices.SortFunc(rooms, func(a, b *livekit.Room) int { return strings.Compare(a.GetName(), b.GetName()) })
	return rooms, nil
}

// older tells whether copy a (on node na) was created before copy b (on
// nb); the lower node id wins a tie.
func older(a *livekit.Room, na cluster.NodeID, b *livekit.Room, nb cluster.NodeID) bool {
	if ta, tb := a.GetCreationTimeMs(), b.GetCreationTimeMs(); ta != tb {
		return ta < tb
	}
	return na < nb
}

// run answers other nodes' calls and completes this node's calls until ctx
// ends. Calls are run one at a time: each is an in-memory operation of the
// local SFU.
func (f *roomForwarder) run(ctx context.Context, bus cluster.NodeBus) error {
	reqs := bus.Listen(rsTopic, 256)
	defer reqs.Close()
	replies := bus.Listen(rsReplyTopic, 256)
	defer replies.Close()
	return f.loop(ctx, reqs.C(), replies.C())
}

// loop serves the inboxes' messages until ctx ends or one closes.
func (f *roomForwarder) loop(ctx context.Context, reqs, replies <-chan cluster.Message) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-replies:
			if !ok {
				return nil
			}
			f.complete(m)
		case m, ok := <-reqs:
			if !ok {
				return nil
			}
			f.serve(ctx, m)
		}
	}
}

func (f *roomForwarder) complete(m cluster.Message) {
	var r rsResponse
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		f.log.Warn().Str("node_id", string(m.From)).Msg("Ignored a malformed RoomService answer from a node")
		return
	}
	f.mu.Lock()
	p, ok := f.pending[r.ID]
	f.mu.Unlock()
	if !ok || p.node != m.From {
		return // late (the caller gave up) or not from the asked node
	}
	select {
	case p.ch <- r:
	default:
	}
}

func (f *roomForwarder) serve(ctx context.Context, m cluster.Message) {
	var req rsRequest
	if err := json.Unmarshal(m.Payload, &req); err != nil || req.ID == 0 {
		f.log.Warn().Str("node_id", string(m.From)).Msg("Ignored a malformed RoomService call from a node")
		return
	}
	if req.Method == rsRPC {
		// Waits for a client: on its own goroutine, bounded.
		select {
		case f.rpcs <- struct{}{}:
			go func() {
				defer func() { <-f.rpcs }()
				f.answer(ctx, m.From, req)
			}()
		default:
			f.reply(ctx, m.From, rsResponse{ID: req.ID, Code: string(twirp.ResourceExhausted), Msg: "too many calls to clients in flight on this node"})
		}
		return
	}
	f.answer(ctx, m.From, req)
}

// answer runs a call of another node and sends the answer.
func (f *roomForwarder) answer(ctx context.Context, from cluster.NodeID, req rsRequest) {
	res, err := f.dispatch(ctx, req)
	out := rsResponse{ID: req.ID}
	if err != nil {
		var te twirp.Error
		if errors.As(err, &te) {
			out.Code, out.Msg = string(te.Code()), te.Msg()
		} else {
			out.Code, out.Msg = string(twirp.Internal), err.Error()
		}
	} else if out.Body, err = proto.Marshal(res); err != nil {
		out.Code, out.Msg, out.Body = string(twirp.Internal), err.Error(), nil
	}
	f.reply(ctx, from, out)
}

// reply sends an answer to the node that asked.
func (f *roomForwarder) reply(ctx context.Context, to cluster.NodeID, out rsResponse) {
	payload, err := json.Marshal(out)
	if err == nil && len(payload) > cluster.MaxPayload {
		payload, err = json.Marshal(rsResponse{ID: out.ID, Code: string(twirp.ResourceExhausted), Msg: "answer too large for the node bus"})
	}
	if err != nil {
		return
	}
	if err := f.reg.Send(ctx, to, rsReplyTopic, payload); err != nil {
		f.log.Debug().Err(err).Str("node_id", string(to)).Msg("Failed to answer a node's RoomService call")
	}
}

// dispatch runs a call of another node on the local RoomService.
func (f *roomForwarder) dispatch(ctx context.Context, req rsRequest) (proto.Message, error) {
	bad := func(err error) error { return twirp.NewError(twirp.Malformed, err.Error()) }
	switch req.Method {
	case rsList:
		var r livekit.ListParticipantsRequest
		if err := proto.Unmarshal(req.Body, &r); err != nil {
			return nil, bad(err)
		}
		ps, err := f.localParticipants(r.GetRoom())
		if err != nil {
			return nil, twirp.NotFoundError(err.Error())
		}
		return &livekit.ListParticipantsResponse{Participants: ps}, nil
	case rsGet:
		var r livekit.RoomParticipantIdentity
		if err := proto.Unmarshal(req.Body, &r); err != nil {
			return nil, bad(err)
		}
		return f.local.GetParticipant(ctx, &r)
	case rsRemove:
		var r livekit.RoomParticipantIdentity
		if err := proto.Unmarshal(req.Body, &r); err != nil {
			return nil, bad(err)
		}
		return f.local.RemoveParticipant(ctx, &r)
	case rsMute:
		var r livekit.MuteRoomTrackRequest
		if err := proto.Unmarshal(req.Body, &r); err != nil {
			return nil, bad(err)
		}
		return f.local.MutePublishedTrack(ctx, &r)
	case rsUpdate:
		var r livekit.UpdateParticipantRequest
		if err := proto.Unmarshal(req.Body, &r); err != nil {
			return nil, bad(err)
		}
		return f.local.UpdateParticipant(ctx, &r)
	case rsData:
		var r livekit.SendDataRequest
		if err := proto.Unmarshal(req.Body, &r); err != nil {
			return nil, bad(err)
		}
		return f.local.SendData(ctx, &r)
	case rsMetadata:
		var r livekit.UpdateRoomMetadataRequest
		if err := proto.Unmarshal(req.Body, &r); err != nil {
			return nil, bad(err)
		}
		return f.local.UpdateRoomMetadata(ctx, &r)
	case rsSubs:
		var r livekit.UpdateSubscriptionsRequest
		if err := proto.Unmarshal(req.Body, &r); err != nil {
			return nil, bad(err)
		}
		return f.local.UpdateSubscriptions(ctx, &r)
	case rsRooms:
		var r livekit.ListRoomsRequest
		if err := proto.Unmarshal(req.Body, &r); err != nil {
			return nil, bad(err)
		}
		if len(r.GetNames()) == 0 {
			return nil, twirp.RequiredArgumentError("names")
		}
		return &livekit.ListRoomsResponse{Rooms: f.localRooms(r.GetNames())}, nil
	case rsRPC:
		var r livekit.PerformRpcRequest
		if err := proto.Unmarshal(req.Body, &r); err != nil {
			return nil, bad(err)
		}
		return f.local.PerformRpc(ctx, &r)
	case rsDelete:
		var r livekit.DeleteRoomRequest
		if err := proto.Unmarshal(req.Body, &r); err != nil {
			return nil, bad(err)
		}
		return f.local.DeleteRoom(ctx, &r)
	}
	return nil, twirp.NewError(twirp.Unimplemented, "unknown method "+req.Method)
}
