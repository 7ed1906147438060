package sfu

import (
	"context"
	"errors"

	"github.com/livekit/protocol/livekit"
	"github.com/twitchtv/twirp"
	"google.golang.org/protobuf/proto"
)

// Forwarder carries RoomService calls to the other nodes of a cluster, so
// the Twirp RoomService works from any node. The SFU calls it only for
// what this node cannot answer: a room it does not host, or a participant
// that is not in the room here (participants relayed from another node are
// here: calls on them go to their origin through the relay's RemoteHooks).
// Methods return *twirp.Error values; not_found when no node has it.
// ListRooms is the Forwarder's alone: it merges every node's copy of a
// room, this node's included.
//
// The SFU knows nothing of the cluster: cmd implements Forwarder with the
// registry's directory and node bus.
type Forwarder interface {
	// ListParticipants returns the participants other nodes host locally
	// in req's room (never their relayed copies); not_found when no other
	// node hosts the room.
	ListParticipants(ctx context.Context, req *livekit.ListParticipantsRequest) (*livekit.ListParticipantsResponse, error)
	GetParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.ParticipantInfo, error)
	RemoveParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error)
	MutePublishedTrack(ctx context.Context, req *livekit.MuteRoomTrackRequest) (*livekit.MuteRoomTrackResponse, error)
	UpdateParticipant(ctx context.Context, req *livekit.UpdateParticipantRequest) (*livekit.ParticipantInfo, error)
	// SendData and UpdateRoomMetadata are asked only when the room is not
	// here; the node that takes them relays them to the room's other nodes.
	SendData(ctx context.Context, req *livekit.SendDataRequest) (*livekit.SendDataResponse, error)
	UpdateRoomMetadata(ctx context.Context, req *livekit.UpdateRoomMetadataRequest) (*livekit.Room, error)
	// UpdateSubscriptions goes to the participant's node (a relayed copy
	// here subscribes to nothing).
	UpdateSubscriptions(ctx context.Context, req *livekit.UpdateSubscriptionsRequest) (*livekit.UpdateSubscriptionsResponse, error)
	// PerformRpc goes to the participant's node and waits for its client
	// (up to the request's response timeout and the client's ack).
	PerformRpc(ctx context.Context, req *livekit.PerformRpcRequest) (*livekit.PerformRpcResponse, error)
	// ListRooms lists every room of the cluster once, this node's included
	// (LocalRooms), counting each node's own participants.
	ListRooms(ctx context.Context, req *livekit.ListRoomsRequest) (*livekit.ListRoomsResponse, error)
	// CreateRoom is asked when the room is not here: it returns the room
	// as ListRooms would when another node hosts it, not_found when none
	// does (the SFU then creates it here).
	CreateRoom(ctx context.Context, req *livekit.CreateRoomRequest) (*livekit.Room, error)
	// DeleteRoom closes the room on the other nodes hosting it; not_found
	// when none does.
	DeleteRoom(ctx context.Context, req *livekit.DeleteRoomRequest) (*livekit.DeleteRoomResponse, error)
}

// SetForwarder makes the Twirp RoomService cluster-wide; call it before Run.
// RoomService() (the trusted, in-process one) stays local: it is what a
// forwarder calls on the node that owns the participant.
func (s *Server) SetForwarder(f Forwarder) { s.fwd = f }

// LocalParticipants returns the infos of the participants connected to
// this node in room, hidden ones included, relayed ones not (what a node
// contributes to a cluster-wide ListParticipants).
func (s *Server) LocalParticipants(room string) ([]*livekit.ParticipantInfo, error) {
	r := s.getRoom(room)
	if r == nil {
		return nil, ErrRoomNotFound
	}
	var out []*livekit.ParticipantInfo
	for _, p := range r.participantList() {
		if p.remote == nil && !p.isClosed() {
			out = append(out, p.snapshot())
		}
	}
	return out, nil
}

// LocalRooms returns the infos of the named rooms hosted here (every room
// when names is empty), num_participants and num_publishers counting this
// node's own visible participants only, never relayed ones (what a node
// contributes to a cluster-wide ListRooms).
func (s *Server) LocalRooms(names []string) []*livekit.Room {
	var want map[string]bool
	if len(names) > 0 {
		want = make(map[string]bool, len(names))
		for _, n := range names {
			want[n] = true
		}
	}
	var out []*livekit.Room
	for _, r := range s.listRooms() {
		if want == nil || want[r.name] {
			out = append(out, r.localInfo())
		}
	}
	return out
}

// localInfo is roomInfo counting local participants only.
func (r *Room) localInfo() *livekit.Room {
	r.mu.Lock()
	defer r.mu.Unlock()
	info := proto.Clone(r.info).(*livekit.Room)
	var n, pubs uint32
	for _, p := range r.participants {
		if p.hidden || p.remote != nil {
			continue
		}
		n++
		if p.isPublisher() {
			pubs++
		}
	}
	info.NumParticipants, info.NumPublishers = n, pubs
	return info
}

// isNotFound reports a not_found answer of the local RoomService.
func isNotFound(err error) bool {
	var te twirp.Error
	return errors.As(err, &te) && te.Code() == twirp.NotFound
}

// forwardingRoomService is the Twirp RoomService of a cluster node: the
// local one, and the forwarder for what is not here.
type forwardingRoomService struct {
	*roomService
	fwd Forwarder
}

// ListParticipants merges this node's participants with the other nodes'
// local ones. A participant relayed here is replaced by its origin's info;
// an identity connected here wins over the same identity elsewhere.
func (f *forwardingRoomService) ListParticipants(ctx context.Context, req *livekit.ListParticipantsRequest) (*livekit.ListParticipantsResponse, error) {
	res := &livekit.ListParticipantsResponse{}
	seen := map[string]bool{}
	r, lerr := f.room(req.GetRoom())
	if r != nil {
		for _, p := range r.participantList() {
			if p.remote == nil {
				seen[p.identity] = true
				res.Participants = append(res.Participants, p.snapshot())
			}
		}
	} else if !isNotFound(lerr) {
		return nil, lerr
	}
	other, ferr := f.fwd.ListParticipants(ctx, req)
	if ferr != nil && r == nil {
		return nil, ferr
	}
	for _, pi := range other.GetParticipants() {
		if !seen[pi.GetIdentity()] {
			seen[pi.GetIdentity()] = true
			res.Participants = append(res.Participants, pi)
		}
	}
	if r != nil {
		// Relayed copies of participants whose origin did not answer.
		for _, p := range r.participantList() {
			if p.remote != nil && !seen[p.identity] {
				seen[p.identity] = true
				res.Participants = append(res.Participants, p.snapshot())
			}
		}
	}
	return res, nil
}

func (f *forwardingRoomService) GetParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.ParticipantInfo, error) {
	res, err := f.roomService.GetParticipant(ctx, req)
	if isNotFound(err) {
		return f.fwd.GetParticipant(ctx, req)
	}
	return res, err
}

func (f *forwardingRoomService) RemoveParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error) {
	res, err := f.roomService.RemoveParticipant(ctx, req)
	if isNotFound(err) {
		return f.fwd.RemoveParticipant(ctx, req)
	}
	return res, err
}

func (f *forwardingRoomService) MutePublishedTrack(ctx context.Context, req *livekit.MuteRoomTrackRequest) (*livekit.MuteRoomTrackResponse, error) {
	if _, _, err := f.participant(req.GetRoom(), req.GetIdentity()); isNotFound(err) {
		return f.fwd.MutePublishedTrack(ctx, req)
	}
	return f.roomService.MutePublishedTrack(ctx, req)
}

func (f *forwardingRoomService) UpdateParticipant(ctx context.Context, req *livekit.UpdateParticipantRequest) (*livekit.ParticipantInfo, error) {
	res, err := f.roomService.UpdateParticipant(ctx, req)
	if isNotFound(err) {
		return f.fwd.UpdateParticipant(ctx, req)
	}
	return res, err
}

func (f *forwardingRoomService) SendData(ctx context.Context, req *livekit.SendDataRequest) (*livekit.SendDataResponse, error) {
	res, err := f.roomService.SendData(ctx, req)
	if isNotFound(err) {
		return f.fwd.SendData(ctx, req)
	}
	return res, err
}

func (f *forwardingRoomService) UpdateRoomMetadata(ctx context.Context, req *livekit.UpdateRoomMetadataRequest) (*livekit.Room, error) {
	res, err := f.roomService.UpdateRoomMetadata(ctx, req)
	if isNotFound(err) {
		return f.fwd.UpdateRoomMetadata(ctx, req)
	}
	return res, err
}

// UpdateSubscriptions of a participant connected elsewhere (relayed here
// or not here at all) goes to its node.
func (f *forwardingRoomService) UpdateSubscriptions(ctx context.Context, req *livekit.UpdateSubscriptionsRequest) (*livekit.UpdateSubscriptionsResponse, error) {
	_, p, err := f.participant(req.GetRoom(), req.GetIdentity())
	if isNotFound(err) || (err == nil && p.remote != nil) {
		return f.fwd.UpdateSubscriptions(ctx, req)
	}
	return f.roomService.UpdateSubscriptions(ctx, req)
}

// PerformRpc to a participant connected elsewhere goes to its node.
func (f *forwardingRoomService) PerformRpc(ctx context.Context, req *livekit.PerformRpcRequest) (*livekit.PerformRpcResponse, error) {
	if req.GetDestinationIdentity() == "" {
		return nil, twirp.RequiredArgumentError("destination_identity")
	}
	_, p, err := f.participant(req.GetRoom(), req.GetDestinationIdentity())
	if isNotFound(err) || (err == nil && p.remote != nil) {
		return f.fwd.PerformRpc(ctx, req)
	}
	return f.roomService.PerformRpc(ctx, req)
}

func (f *forwardingRoomService) ListRooms(ctx context.Context, req *livekit.ListRoomsRequest) (*livekit.ListRoomsResponse, error) {
	return f.fwd.ListRooms(ctx, req)
}

// CreateRoom returns the room a node of the cluster already hosts rather
// than opening a second copy here with other settings.
func (f *forwardingRoomService) CreateRoom(ctx context.Context, req *livekit.CreateRoomRequest) (*livekit.Room, error) {
	if req.GetName() != "" && f.s.getRoom(req.GetName()) == nil {
		res, err := f.fwd.CreateRoom(ctx, req)
		if !isNotFound(err) {
			return res, err
		}
	}
	return f.roomService.CreateRoom(ctx, req)
}

// DeleteRoom closes the room here and on every other node hosting it;
// not_found when no node does. The other nodes close their copies while
// this one closes its own, so the relay between two copies ends on both
// sides at about the same moment (RelayRoom does not re-open a deleted
// room for a peer that is later).
func (f *forwardingRoomService) DeleteRoom(ctx context.Context, req *livekit.DeleteRoomRequest) (*livekit.DeleteRoomResponse, error) {
	if req.GetRoom() == "" {
		return nil, twirp.RequiredArgumentError("room")
	}
	elsewhere := make(chan error, 1)
	go func() {
		_, err := f.fwd.DeleteRoom(ctx, req)
		elsewhere <- err
	}()
	_, lerr := f.roomService.DeleteRoom(ctx, req)
	ferr := <-elsewhere
	switch {
	case ferr != nil && !isNotFound(ferr):
		return nil, ferr // a node may still host it: the caller may retry
	case lerr != nil && ferr != nil:
		return nil, lerr
	}
	return &livekit.DeleteRoomResponse{}, nil
}

// twirpService is what the Twirp handler serves: the local RoomService,
// cluster-wide when a Forwarder is set.
func (s *Server) twirpService() livekit.RoomService {
	if s.fwd == nil {
		return s.svc
	}
	return &forwardingRoomService{roomService: s.svc, fwd: s.fwd}
}
