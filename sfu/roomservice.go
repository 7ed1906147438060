package sfu

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/twitchtv/twirp"
	"google.golang.org/protobuf/proto"
)

// roomService is the trusted, in-process livekit.RoomService. Its errors
// are *twirp.Error values (not_found and friends) so in-process callers
// and HTTP clients see the same codes.
type roomService struct {
	s *Server

	mu      sync.Mutex
	removed map[removedKey]time.Time // when RemoveParticipant removed an identity
	deleted map[string]time.Time     // when DeleteRoom closed a room
}

type removedKey struct{ room, identity string }

// removedTokenGrace bounds how long a removal is remembered: longer than any
// token the focus hands out lives. Removals outlive the room (a room that
// empties closes after its departure timeout), not a restart: gxconf's focus
// revokes its own tokens durably (GrantChecker).
const removedTokenGrace = 24 * time.Hour

// markRemoved remembers that identity was removed from room at t.
func (rs *roomService) markRemoved(room, identity string, t time.Time) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.removed == nil {
		rs.removed = map[removedKey]time.Time{}
	}
	for k, at := range rs.removed {
		if t.Sub(at) > removedTokenGrace {
			delete(rs.removed, k)
		}
	}
	rs.removed[removedKey{room, identity}] = t
}

// revoked reports whether token, for identity in room, was issued before the
// identity's removal from the room. With grantIssued (the millisecond the
// token's grant was issued, from the GrantChecker) that is exact. Otherwise
// only the token's iat is known, in whole seconds: a token issued in the
// second of the removal may predate it and is refused too (the client asks
// again a second later).
func (rs *roomService) revoked(room, identity string, token *verifiedToken) bool {
	rs.mu.Lock()
	at, ok := rs.removed[removedKey{room, identity}]
	rs.mu.Unlock()
	if !ok {
		return false
	}
	if !token.grantIssued.IsZero() {
		return !token.grantIssued.After(at)
	}
	return token.issuedAt.Unix() <= at.Unix()
}

// deletedRoomGuard is how long a room closed by DeleteRoom is not re-created
// for the relay: longer than the other nodes take to learn that this node
// no longer hosts it (a Redis write and its notification). A node of a
// cluster-wide DeleteRoom that has not closed its copy yet would otherwise
// link it here again, re-opening an empty room nobody deletes.
const deletedRoomGuard = 10 * time.Second

// markDeleted remembers that DeleteRoom closed room at t.
func (rs *roomService) markDeleted(room string, t time.Time) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.deleted == nil {
		rs.deleted = map[string]time.Time{}
	}
	for k, at := range rs.deleted {
		if t.Sub(at) > deletedRoomGuard {
			delete(rs.deleted, k)
		}
	}
	rs.deleted[room] = t
}

// deletedRecently tells whether DeleteRoom closed room within deletedRoomGuard.
func (rs *roomService) deletedRecently(room string) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	at, ok := rs.deleted[room]
	return ok && time.Since(at) <= deletedRoomGuard
}

var _ livekit.RoomService = (*roomService)(nil)

func notFound(what string) error { return twirp.NewError(twirp.NotFound, what) }

func (rs *roomService) room(name string) (*Room, error) {
	if name == "" {
		return nil, twirp.RequiredArgumentError("room")
	}
	r := rs.s.getRoom(name)
	if r == nil {
		return nil, notFound(ErrRoomNotFound.Error())
	}
	return r, nil
}

func (rs *roomService) participant(room, identity string) (*Room, *Participant, error) {
	r, err := rs.room(room)
	if err != nil {
		return nil, nil, err
	}
	if identity == "" {
		return nil, nil, twirp.RequiredArgumentError("identity")
	}
	p := r.participant(identity)
	if p == nil {
		return nil, nil, notFound(ErrParticipantNotFound.Error())
	}
	return r, p, nil
}

// CreateRoom is idempotent: an existing room is returned unchanged.
func (rs *roomService) CreateRoom(_ context.Context, req *livekit.CreateRoomRequest) (*livekit.Room, error) {
	if req.GetName() == "" {
		return nil, twirp.RequiredArgumentError("name")
	}
	if len(req.GetMetadata()) > maxMetadataSize {
		return nil, twirp.InvalidArgumentError("metadata", fmt.Sprintf("exceeds %d bytes", maxMetadataSize))
	}
	opts := rs.s.defaultRoomOptions()
	if req.GetEmptyTimeout() > 0 {
		opts.emptyTimeout = time.Duration(req.GetEmptyTimeout()) * time.Second
	}
	if req.GetDepartureTimeout() > 0 {
		opts.departureTimeout = time.Duration(req.GetDepartureTimeout()) * time.Second
	}
	if req.GetMaxParticipants() > 0 {
		opts.maxParticipants = int(req.GetMaxParticipants())
	}
	opts.metadata = req.GetMetadata()
	r, _, err := rs.s.getOrCreateRoom(req.GetName(), opts, true)
	if err != nil {
		return nil, twirp.NewError(twirp.Unavailable, err.Error())
	}
	return r.roomInfo(), nil
}

func (rs *roomService) ListRooms(_ context.Context, req *livekit.ListRoomsRequest) (*livekit.ListRoomsResponse, error) {
	var names map[string]bool
	if len(req.GetNames()) > 0 {
		names = map[string]bool{}
		for _, n := range req.GetNames() {
			names[n] = true
		}
	}
	res := &livekit.ListRoomsResponse{}
	for _, r := range rs.s.listRooms() {
		if names == nil || names[r.name] {
			res.Rooms = append(res.Rooms, r.roomInfo())
		}
	}
	return res, nil
}

func (rs *roomService) DeleteRoom(_ context.Context, req *livekit.DeleteRoomRequest) (*livekit.DeleteRoomResponse, error) {
	r, err := rs.room(req.GetRoom())
	if err != nil {
		return nil, err
	}
	rs.markDeleted(r.name, time.Now())
	r.close(livekit.DisconnectReason_ROOM_DELETED)
	return &livekit.DeleteRoomResponse{}, nil
}

func (rs *roomService) ListParticipants(_ context.Context, req *livekit.ListParticipantsRequest) (*livekit.ListParticipantsResponse, error) {
	r, err := rs.room(req.GetRoom())
	if err != nil {
		return nil, err
	}
	res := &livekit.ListParticipantsResponse{}
	for _, p := range r.participantList() {
		res.Participants = append(res.Participants, p.snapshot())
	}
	return res, nil
}

func (rs *roomService) GetParticipant(_ context.Context, req *livekit.RoomParticipantIdentity) (*livekit.ParticipantInfo, error) {
	_, p, err := rs.participant(req.GetRoom(), req.GetIdentity())
	if err != nil {
		return nil, err
	}
	return p.snapshot(), nil
}

// RemoveParticipant sends Leave{PARTICIPANT_REMOVED} and ends the session
// before it returns.
// Tokens issued before the removal no longer admit the identity, even when
// it is not connected (the answer is then not_found, as LiveKit's).
func (rs *roomService) RemoveParticipant(_ context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error) {
	if req.GetRoom() != "" && req.GetIdentity() != "" {
		rs.markRemoved(req.GetRoom(), req.GetIdentity(), time.Now())
	}
	_, p, err := rs.participant(req.GetRoom(), req.GetIdentity())
	if err != nil {
		return nil, err
	}
	p.close(livekit.DisconnectReason_PARTICIPANT_REMOVED, true)
	return &livekit.RemoveParticipantResponse{}, nil
}

// MutePublishedTrack mutes a track and tells its publisher. Remote unmute
// is refused, as livekit-server does unless enabled per room.
func (rs *roomService) MutePublishedTrack(_ context.Context, req *livekit.MuteRoomTrackRequest) (*livekit.MuteRoomTrackResponse, error) {
	_, p, err := rs.participant(req.GetRoom(), req.GetIdentity())
	if err != nil {
		return nil, err
	}
	if !req.GetMuted() {
		return nil, twirp.NewError(twirp.InvalidArgument, ErrRemoteUnmute.Error())
	}
	info, ok := p.setTrackMuted(req.GetTrackSid(), true, true)
	if !ok {
		return nil, notFound(ErrTrackNotFound.Error())
	}
	return &livekit.MuteRoomTrackResponse{Track: info}, nil
}

func (rs *roomService) UpdateParticipant(_ context.Context, req *livekit.UpdateParticipantRequest) (*livekit.ParticipantInfo, error) {
	_, p, err := rs.participant(req.GetRoom(), req.GetIdentity())
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if field, limit := p.metadataTooLargeLocked(req.GetName(), req.GetMetadata(), req.GetAttributes()); field != "" {
		p.mu.Unlock()
		return nil, twirp.InvalidArgumentError(field, fmt.Sprintf("exceeds %d bytes", limit))
	}
	p.applyMetadataLocked(req.GetName(), req.GetMetadata(), req.GetAttributes())
	p.mu.Unlock()
	if perm := req.GetPermission(); perm != nil {
		p.setPermission(perm)
	}
	p.publishUpdate(true)
	return p.snapshot(), nil
}

func (rs *roomService) UpdateSubscriptions(_ context.Context, req *livekit.UpdateSubscriptionsRequest) (*livekit.UpdateSubscriptionsResponse, error) {
	_, p, err := rs.participant(req.GetRoom(), req.GetIdentity())
	if err != nil {
		return nil, err
	}
	p.handleSubscription(&livekit.UpdateSubscription{
		TrackSids: req.GetTrackSids(), Subscribe: req.GetSubscribe(), ParticipantTracks: req.GetParticipantTracks(),
	})
	return &livekit.UpdateSubscriptionsResponse{}, nil
}

// SendData sends a server DataPacket (no sender identity) to the
// participants named by identity or sid, or to everyone.
func (rs *roomService) SendData(_ context.Context, req *livekit.SendDataRequest) (*livekit.SendDataResponse, error) {
	r, err := rs.room(req.GetRoom())
	if err != nil {
		return nil, err
	}
	dests, ok := r.dataDestinations(req.GetDestinationIdentities(), req.GetDestinationSids())
	if !ok {
		return &livekit.SendDataResponse{}, nil // addressed to participants no longer in the room
	}
	dp := &livekit.DataPacket{
		Kind:                  req.GetKind(),
		DestinationIdentities: dests,
		Value: &livekit.DataPacket_User{User: &livekit.UserPacket{
			Payload:               req.GetData(),
			DestinationSids:       req.GetDestinationSids(),
			DestinationIdentities: dests,
			Topic:                 req.Topic,
			Nonce:                 req.GetNonce(),
		}},
	}
	b, err := proto.Marshal(dp)
	if err != nil {
		return nil, twirp.InternalErrorWith(err)
	}
	label := dataReliable
	if req.GetKind() == livekit.DataPacket_LOSSY {
		label = dataLossy
	}
	r.routeData(nil, label, b, dests)
	return &livekit.SendDataResponse{}, nil
}

func (rs *roomService) UpdateRoomMetadata(_ context.Context, req *livekit.UpdateRoomMetadataRequest) (*livekit.Room, error) {
	if len(req.GetMetadata()) > maxMetadataSize {
		return nil, twirp.InvalidArgumentError("metadata", fmt.Sprintf("exceeds %d bytes", maxMetadataSize))
	}
	r, err := rs.room(req.GetRoom())
	if err != nil {
		return nil, err
	}
	return r.setMetadata(req.GetMetadata()), nil
}

func (rs *roomService) ForwardParticipant(context.Context, *livekit.ForwardParticipantRequest) (*livekit.ForwardParticipantResponse, error) {
	return nil, twirp.NewError(twirp.Unimplemented, "ForwardParticipant is not supported")
}

func (rs *roomService) MoveParticipant(context.Context, *livekit.MoveParticipantRequest) (*livekit.MoveParticipantResponse, error) {
	return nil, twirp.NewError(twirp.Unimplemented, "MoveParticipant is not supported")
}

// PerformRpc calls a method of a participant's client and returns its
// answer (rpc.go).
func (rs *roomService) PerformRpc(ctx context.Context, req *livekit.PerformRpcRequest) (*livekit.PerformRpcResponse, error) {
	if req.GetDestinationIdentity() == "" {
		return nil, twirp.RequiredArgumentError("destination_identity")
	}
	_, p, err := rs.participant(req.GetRoom(), req.GetDestinationIdentity())
	if err != nil {
		return nil, err
	}
	if p.remote != nil {
		return nil, notFound("the participant is connected to another node")
	}
	payload, err := p.performRPC(ctx, req.GetMethod(), req.GetPayload(), time.Duration(req.GetResponseTimeoutMs())*time.Millisecond)
	if err != nil {
		return nil, err
	}
	return &livekit.PerformRpcResponse{Payload: payload}, nil
}

// guardedRoomService is the Twirp-facing RoomService: it checks the
// caller's grants as livekit-server does, then calls the trusted one.
type guardedRoomService struct {
	inner livekit.RoomService
}

type grantsKey struct{}

func grantsFrom(ctx context.Context) *auth.ClaimGrants {
	g, _ := ctx.Value(grantsKey{}).(*auth.ClaimGrants)
	return g
}

func requireGrant(ctx context.Context, ok func(*auth.VideoGrant) bool) error {
	g := grantsFrom(ctx)
	if g == nil {
		return twirp.NewError(twirp.Unauthenticated, "missing or invalid token")
	}
	if g.Video == nil || !ok(g.Video) {
		return twirp.NewError(twirp.PermissionDenied, ErrPermissionDenied.Error())
	}
	return nil
}

func roomCreate(v *auth.VideoGrant) bool { return v.RoomCreate }
func roomList(v *auth.VideoGrant) bool   { return v.RoomList }
func roomAdmin(room string) func(*auth.VideoGrant) bool {
	return func(v *auth.VideoGrant) bool { return v.RoomAdmin && v.Room == room }
}

func (g *guardedRoomService) CreateRoom(ctx context.Context, req *livekit.CreateRoomRequest) (*livekit.Room, error) {
	if err := requireGrant(ctx, roomCreate); err != nil {
		return nil, err
	}
	if IsPeerRoom(req.GetName()) {
		// Peer rooms exist only while a peer's subscribers use them.
		return nil, twirp.InvalidArgumentError("name", "is in the reserved peer namespace")
	}
	return g.inner.CreateRoom(ctx, req)
}

func (g *guardedRoomService) ListRooms(ctx context.Context, req *livekit.ListRoomsRequest) (*livekit.ListRoomsResponse, error) {
	if err := requireGrant(ctx, roomList); err != nil {
		return nil, err
	}
	return g.inner.ListRooms(ctx, req)
}

func (g *guardedRoomService) DeleteRoom(ctx context.Context, req *livekit.DeleteRoomRequest) (*livekit.DeleteRoomResponse, error) {
	if err := requireGrant(ctx, roomCreate); err != nil {
		return nil, err
	}
	return g.inner.DeleteRoom(ctx, req)
}

func (g *guardedRoomService) ListParticipants(ctx context.Context, req *livekit.ListParticipantsRequest) (*livekit.ListParticipantsResponse, error) {
	if err := requireGrant(ctx, roomAdmin(req.GetRoom())); err != nil {
		return nil, err
	}
	return g.inner.ListParticipants(ctx, req)
}

func (g *guardedRoomService) GetParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.ParticipantInfo, error) {
	if err := requireGrant(ctx, roomAdmin(req.GetRoom())); err != nil {
		return nil, err
	}
	return g.inner.GetParticipant(ctx, req)
}

func (g *guardedRoomService) RemoveParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error) {
	if err := requireGrant(ctx, roomAdmin(req.GetRoom())); err != nil {
		return nil, err
	}
	return g.inner.RemoveParticipant(ctx, req)
}

func (g *guardedRoomService) MutePublishedTrack(ctx context.Context, req *livekit.MuteRoomTrackRequest) (*livekit.MuteRoomTrackResponse, error) {
	if err := requireGrant(ctx, roomAdmin(req.GetRoom())); err != nil {
		return nil, err
	}
	return g.inner.MutePublishedTrack(ctx, req)
}

func (g *guardedRoomService) UpdateParticipant(ctx context.Context, req *livekit.UpdateParticipantRequest) (*livekit.ParticipantInfo, error) {
	if err := requireGrant(ctx, roomAdmin(req.GetRoom())); err != nil {
		return nil, err
	}
	return g.inner.UpdateParticipant(ctx, req)
}

func (g *guardedRoomService) UpdateSubscriptions(ctx context.Context, req *livekit.UpdateSubscriptionsRequest) (*livekit.UpdateSubscriptionsResponse, error) {
	if err := requireGrant(ctx, roomAdmin(req.GetRoom())); err != nil {
		return nil, err
	}
	return g.inner.UpdateSubscriptions(ctx, req)
}

func (g *guardedRoomService) SendData(ctx context.Context, req *livekit.SendDataRequest) (*livekit.SendDataResponse, error) {
	if err := requireGrant(ctx, roomAdmin(req.GetRoom())); err != nil {
		return nil, err
	}
	return g.inner.SendData(ctx, req)
}

func (g *guardedRoomService) UpdateRoomMetadata(ctx context.Context, req *livekit.UpdateRoomMetadataRequest) (*livekit.Room, error) {
	if err := requireGrant(ctx, roomAdmin(req.GetRoom())); err != nil {
		return nil, err
	}
	return g.inner.UpdateRoomMetadata(ctx, req)
}

func (g *guardedRoomService) ForwardParticipant(ctx context.Context, req *livekit.ForwardParticipantRequest) (*livekit.ForwardParticipantResponse, error) {
	return g.inner.ForwardParticipant(ctx, req)
}

func (g *guardedRoomService) MoveParticipant(ctx context.Context, req *livekit.MoveParticipantRequest) (*livekit.MoveParticipantResponse, error) {
	return g.inner.MoveParticipant(ctx, req)
}

func (g *guardedRoomService) PerformRpc(ctx context.Context, req *livekit.PerformRpcRequest) (*livekit.PerformRpcResponse, error) {
	if err := requireGrant(ctx, roomAdmin(req.GetRoom())); err != nil {
		return nil, err
	}
	return g.inner.PerformRpc(ctx, req)
}

// maxTwirpBody bounds a RoomService request, as the signal socket's
// read limit bounds a signal request.
const maxTwirpBody = 1 << 20

// maxTwirpPath bounds a RoomService request's path after the path prefix
// ("/twirp/livekit.RoomService/" and a method name) and
// maxTwirpContentType its Content-Type, so that twirp's refusals, which
// quote them, stay short.
const (
	maxTwirpPath        = 128
	maxTwirpContentType = 128
)

// twirpHandler serves /twirp/livekit.RoomService/* (protobuf and JSON).
// The bearer token is verified here; the grant checks happen per method.
func (s *Server) twirpHandler() http.Handler {
	ts := livekit.NewRoomServiceServer(&guardedRoomService{inner: s.twirpService()}, twirp.WithServerPathPrefix(s.cfg.PathPrefix+"/twirp"))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setCORS(w)
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		// twirp quotes an unknown method's path (twice) and an unexpected
		// Content-Type whole in its answer: a request whose path or
		// Content-Type is longer than any RoomService call's is refused
		// here, without quoting them.
		if len(r.URL.Path) > len(s.cfg.PathPrefix)+maxTwirpPath || len(r.Header.Get("Content-Type")) > maxTwirpContentType {
			_ = twirp.WriteError(w, twirp.NewError(twirp.BadRoute, "no such RoomService method"))
			return
		}
		// twirp reads the whole body before a method checks the grants:
		// bound it for callers without any (SendData's payload included).
		r.Body = http.MaxBytesReader(w, r.Body, maxTwirpBody)
		ctx := r.Context()
		if h := r.Header.Get("Authorization"); h != "" {
			if grants, err := s.verifyToken(tokenFromRequest(r)); err == nil {
				ctx = context.WithValue(ctx, grantsKey{}, grants)
			}
		}
		ts.ServeHTTP(w, r.WithContext(ctx))
	})
}
