package sfu

import (
	"sort"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/utils/guid"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
)

type roomOptions struct {
	emptyTimeout     time.Duration
	departureTimeout time.Duration
	maxParticipants  int
	metadata         string
}

func (s *Server) defaultRoomOptions() roomOptions {
	return roomOptions{
		emptyTimeout:     s.cfg.Room.EmptyTimeout,
		departureTimeout: s.cfg.Room.DepartureTimeout,
		maxParticipants:  s.cfg.Room.MaxParticipants,
	}
}

// Room is one LiveKit room. r.mu guards participants, info and the
// timers; it is never held while calling into pion or a participant's
// lock-taking methods. worker() owns the periodic jobs (speakers,
// connection quality, room updates, sender reports, timeouts).
type Room struct {
	s    *Server
	name string
	sid  string
	log  zerolog.Logger

	mu           sync.Mutex
	info         *livekit.Room
	opts         roomOptions
	participants map[string]*Participant // by identity
	closed       bool
	everJoined   bool
	lastLeft     time.Time
	created      time.Time
	sentCount    uint32 // num_participants last sent in room_update
	dirty        bool   // room_update due
	relay        roomRelay

	// permChange serialises subscription permission changes (each decides
	// and carries out its revocations and grants); permMu is held from a
	// permission check to the subscription or denial it decides, and over
	// a permission change's decisions. Order: permChange, permMu, a
	// participant's mu.
	permChange sync.Mutex
	permMu     sync.Mutex
	// dataTracks indexes the room's data tracks (local and relayed) by
	// sid, guarded by permMu (datatrack.go): a subscription request of 256
	// unknown sids in a room of 1,000 publishers of 64 data tracks each
	// would otherwise walk 16 million entries under that lock.
	dataTracks map[string]*dataTrack

	// updMu guards the participant updates waiting to be coalesced (see
	// broadcastUpdate); it is taken without r.mu.
	updMu      sync.Mutex
	pending    []*livekit.ParticipantInfo // in arrival order, at most one per session
	flushTimer *time.Timer                // armed while pending is not empty

	done chan struct{}
}

func newRoom(s *Server, name string, opts roomOptions) *Room {
	now := time.Now()
	sid := guid.New("RM_")
	r := &Room{
		s:    s,
		name: name,
		sid:  sid,
		log:  s.log.With().Str("lk_room", name).Str("room_id", sid).Logger(),
		info: &livekit.Room{
			Sid:              sid,
			Name:             name,
			EmptyTimeout:     uint32(opts.emptyTimeout / time.Second),
			DepartureTimeout: uint32(opts.departureTimeout / time.Second),
			MaxParticipants:  uint32(opts.maxParticipants),
			CreationTime:     now.Unix(),
			CreationTimeMs:   now.UnixMilli(),
			Metadata:         opts.metadata,
		},
		opts:         opts,
		participants: map[string]*Participant{},
		dataTracks:   map[string]*dataTrack{},
		created:      now,
		done:         make(chan struct{}),
	}
	r.log.Info().Msg("room created")
	return r
}

// roomInfo returns a copy of the room's info with current counts.
func (r *Room) roomInfo() *livekit.Room {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.roomInfoLocked()
}

func (r *Room) roomInfoLocked() *livekit.Room {
	info := proto.Clone(r.info).(*livekit.Room)
	var n, pubs uint32
	for _, p := range r.participants {
		if p.hidden {
			continue
		}
		n++
		if p.isPublisher() {
			pubs++
		}
	}
	info.NumParticipants = n
	info.NumPublishers = pubs
	return info
}

// isFull tells whether a join by identity would exceed max_participants
// (a rejoin of a present identity replaces it and is always allowed).
func (r *Room) isFull(identity string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.opts.maxParticipants <= 0 {
		return false
	}
	if _, ok := r.participants[identity]; ok {
		return false
	}
	return len(r.participants) >= r.opts.maxParticipants
}

// join admits a participant: a present participant with the same identity
// is replaced (Leave{DUPLICATE_IDENTITY}), the JoinResponse is queued as
// the first message and the subscriber offer right behind it.
func (r *Room) join(token *verifiedToken, params joinParams, sc *signalConn) (*Participant, error) {
	grants := token.grants
	// A present session with the same identity leaves first, so the others
	// see its DISCONNECTED before the new session's JOINED (clients key
	// remote participants by identity).
	if old := r.participant(grants.Identity); old != nil {
		old.log.Info().Msg("participant replaced by a new session")
		old.closeAnnounced(livekit.DisconnectReason_DUPLICATE_IDENTITY)
	}
	p, err := newParticipant(r, token, params, sc)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		p.closePeerConnections()
		return nil, ErrRoomClosed
	}
	old := r.participants[p.identity]
	if old == nil && r.opts.maxParticipants > 0 && len(r.participants) >= r.opts.maxParticipants {
		r.mu.Unlock()
		p.closePeerConnections()
		return nil, ErrRoomFull
	}
	if old != nil {
		delete(r.participants, old.identity)
	}
	r.participants[p.identity] = p
	r.everJoined = true
	r.dirty = true
	others := make([]*livekit.ParticipantInfo, 0, len(r.participants))
	for _, o := range r.participants {
		if o != p && !o.hidden {
			others = append(others, o.snapshot())
		}
	}
	sort.Slice(others, func(i, j int) bool { return others[i].JoinedAtMs < others[j].JoinedAtMs })
	self := p.snapshot()
	// Queued under r.mu: every broadcast that can reach p (it is in the
	// map now) is queued after its JoinResponse, which must come first.
	sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Join{Join: &livekit.JoinResponse{
		Room:                r.roomInfoLocked(),
		Participant:         self,
		OtherParticipants:   others,
		ServerVersion:       serverVersion,
		ServerRegion:        r.s.cfg.Region,
		IceServers:          r.s.iceServers(p.identity),
		SubscriberPrimary:   p.subscriberPrimary(),
		ClientConfiguration: r.s.clientConfiguration(),
		PingTimeout:         int32(r.s.cfg.PingTimeout / time.Second),
		PingInterval:        int32(r.s.cfg.PingInterval / time.Second),
		ServerInfo:          r.s.serverInfo(),
		// The client sets up its publisher connection at once only if it
		// may publish (as livekit-server): a subscribe-only client of a
		// big room costs one peer connection, not two.
		FastPublish: p.mayPublish(),
	}}})
	r.mu.Unlock()
	r.s.metrics.participants.Inc()

	if old != nil {
		// Raced with another join of the same identity.
		old.closeAnnounced(livekit.DisconnectReason_DUPLICATE_IDENTITY)
	}
	p.log.Info().Str("path", params.path).Bool("single_pc", p.single).Str("sdk", params.sdk).Int("protocol", params.protocol).Msg("participant joined")
	p.publishUpdate(false) // a fresh snapshot: RoomService may have changed it since self
	// Subscribe to what is already published; the subscriber offer (in
	// single mode the answer to the client's first offer) carries these
	// tracks and the data channels.
	if p.autoSubscribe {
		for _, t := range r.liveTracks() {
			p.subscribe(t, false)
		}
	}
	if p.autoSubscribeData {
		r.permMu.Lock()
		p.autoSubscribeDataLocked()
		r.permMu.Unlock()
	}
	if p.single {
		p.startSingle(params)
	} else {
		p.negotiate()
	}
	return p, nil
}

// mayPublish tells whether the grant lets p publish media or data.
func (p *Participant) mayPublish() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.video.GetCanPublish() || p.video.GetCanPublishData()
}

// visibleInfos returns the info of every participant others may see.
func (r *Room) visibleInfos() []*livekit.ParticipantInfo {
	var out []*livekit.ParticipantInfo
	for _, p := range r.participantList() {
		if !p.hidden {
			out = append(out, p.snapshot())
		}
	}
	return out
}

// liveTracks returns every published track that receives media.
func (r *Room) liveTracks() []*publishedTrack {
	r.mu.Lock()
	ps := make([]*Participant, 0, len(r.participants))
	for _, p := range r.participants {
		ps = append(ps, p)
	}
	r.mu.Unlock()
	var out []*publishedTrack
	for _, p := range ps {
		out = append(out, p.liveTracks()...)
	}
	return out
}

// participantList returns the current participants.
func (r *Room) participantList() []*Participant {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Participant, 0, len(r.participants))
	for _, p := range r.participants {
		out = append(out, p)
	}
	return out
}

func (r *Room) participant(identity string) *Participant {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.participants[identity]
}

// removeParticipant drops p if it is still the session for its identity.
func (r *Room) removeParticipant(p *Participant) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.participants[p.identity] != p {
		return false
	}
	delete(r.participants, p.identity)
	r.dirty = true
	if len(r.participants) == 0 {
		r.lastLeft = time.Now()
	}
	return true
}

// Participant updates in a large room are coalesced: every join, state
// change and leave otherwise costs one ParticipantUpdate per participant,
// N² messages for N joins, which swamps the signalling of a big room (and
// its clients) while it fills. Like livekit-server, updates of participants
// that publish nothing wait and go out together in one ParticipantUpdate
// per recipient; a publisher's update goes out at once (subscriptions to
// its tracks follow it) and takes the waiting ones with it, in order.
const (
	// batchFrom is the room size from which updates are coalesced.
	batchFrom = 50
	// batchPerParticipant scales the wait with the room size, between
	// batchMin and batchMax: 1,000 participants wait 500 ms.
	batchPerParticipant = 500 * time.Microsecond
	batchMin            = 100 * time.Millisecond
	batchMax            = 500 * time.Millisecond
)

// updateDelay is how long a non-publisher's update may wait in a room of n
// participants (0: sent at once).
func updateDelay(n int) time.Duration {
	if n < batchFrom {
		return 0
	}
	return min(max(time.Duration(n)*batchPerParticipant, batchMin), batchMax)
}

// broadcastUpdate sends a participant's info to everyone but itself
// (hidden participants are never announced), at once or coalesced with
// others (see updateDelay).
func (r *Room) broadcastUpdate(from *Participant, info *livekit.ParticipantInfo) {
	r.relay.participantChanged(from, info)
	if h := r.s.hooks.Participant; h != nil && from.remote == nil && !from.hidden {
		h(r.name, proto.Clone(info).(*livekit.ParticipantInfo))
	}
	r.mu.Lock()
	delay := updateDelay(len(r.participants))
	r.mu.Unlock()

	r.updMu.Lock()
	r.queueUpdateLocked(info)
	if delay > 0 && !info.IsPublisher {
		if r.flushTimer == nil {
			r.flushTimer = time.AfterFunc(delay, r.flushUpdates)
		}
		r.updMu.Unlock()
		return
	}
	r.sendUpdatesLocked(r.takeUpdatesLocked())
	r.updMu.Unlock()
}

// queueUpdateLocked adds info to the pending updates: it replaces the
// pending update of the same session unless that one is newer (snapshots
// taken concurrently can arrive out of order), so each session's last
// state wins and keeps its place. Another session of the same identity
// (a leave and a rejoin) is queued after it: clients see both, in order.
// Callers hold r.updMu.
func (r *Room) queueUpdateLocked(info *livekit.ParticipantInfo) {
	for i, q := range r.pending {
		if q.Sid == info.Sid {
			if info.Version >= q.Version {
				r.pending[i] = info
			}
			return
		}
	}
	r.pending = append(r.pending, info)
}

// takeUpdatesLocked empties the pending updates; callers hold r.updMu.
func (r *Room) takeUpdatesLocked() []*livekit.ParticipantInfo {
	batch := r.pending
	r.pending = nil
	if r.flushTimer != nil {
		r.flushTimer.Stop()
		r.flushTimer = nil
	}
	return batch
}

// flushUpdates sends the pending updates (the batch timer's end).
func (r *Room) flushUpdates() {
	r.updMu.Lock()
	defer r.updMu.Unlock()
	r.sendUpdatesLocked(r.takeUpdatesLocked())
}

// sendUpdatesLocked sends a batch of updates as one ParticipantUpdate to
// every participant, leaving out a recipient's own identity (a session
// learns of itself through publishUpdate; a rejoined one must not see its
// predecessor leave). Callers hold r.updMu, so batches are queued to each
// recipient in the order they were taken (r.updMu, then r.mu, then a
// signalConn's lock).
func (r *Room) sendUpdatesLocked(batch []*livekit.ParticipantInfo) {
	if len(batch) == 0 {
		return
	}
	inBatch := make(map[string]bool, len(batch))
	for _, info := range batch {
		inBatch[info.Identity] = true
	}
	all := &livekit.SignalResponse{Message: &livekit.SignalResponse_Update{Update: &livekit.ParticipantUpdate{Participants: batch}}}
	for _, p := range r.participantList() {
		if !inBatch[p.identity] {
			p.sc.send(all)
			continue
		}
		others := make([]*livekit.ParticipantInfo, 0, len(batch)-1)
		for _, info := range batch {
			if info.Identity != p.identity {
				others = append(others, info)
			}
		}
		if len(others) > 0 {
			p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Update{Update: &livekit.ParticipantUpdate{Participants: others}}})
		}
	}
}

// broadcast sends msg to every participant.
func (r *Room) broadcast(msg *livekit.SignalResponse) {
	for _, p := range r.participantList() {
		p.sc.send(msg)
	}
}

// trackLive is called once a published track receives media: others are
// told and auto-subscribers subscribed.
func (r *Room) trackLive(owner *Participant, t *publishedTrack) {
	owner.publishUpdate(false)
	for _, p := range r.participantList() {
		if p != owner && p.autoSubscribe {
			p.subscribe(t, true)
		}
	}
}

// trackGone removes every subscription to t.
func (r *Room) trackGone(t *publishedTrack) {
	for _, p := range r.participantList() {
		p.unsubscribe(t.sid, true)
	}
}

// close disconnects everyone with reason and removes the room.
func (r *Room) close(reason livekit.DisconnectReason) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	ps := make([]*Participant, 0, len(r.participants))
	for _, p := range r.participants {
		ps = append(ps, p)
	}
	r.mu.Unlock()
	for _, p := range ps {
		p.close(reason, true)
	}
	r.s.removeRoom(r)
	close(r.done)
	r.log.Info().Str("reason", reason.String()).Msg("room closed")
}

// worker runs the room's periodic jobs until the room closes.
func (r *Room) worker() {
	tick := time.NewTicker(400 * time.Millisecond)
	defer tick.Stop()
	var n int
	sp := newSpeakerTracker()
	for {
		select {
		case <-r.done:
			return
		case <-tick.C:
		}
		n++
		ps := r.participantList()
		now := time.Now()
		for _, p := range ps {
			p.checkResumeWindow(now)
		}
		sp.update(r, ps)
		if n%3 == 0 { // ~1.2 s
			for _, p := range ps {
				p.periodic()
			}
		}
		if n%12 == 0 { // ~5 s
			r.sendConnectionQuality(ps)
		}
		if n%5 == 0 {
			r.sendRoomUpdateIfDirty()
		}
		if r.expired() {
			r.close(livekit.DisconnectReason_ROOM_CLOSED)
			return
		}
	}
}

// expired tells whether the empty or departure timeout has run out.
func (r *Room) expired() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.participants) > 0 {
		return false
	}
	now := time.Now()
	if !r.everJoined {
		return now.Sub(r.created) >= r.opts.emptyTimeout
	}
	return now.Sub(r.lastLeft) >= r.opts.departureTimeout
}

func (r *Room) sendRoomUpdateIfDirty() {
	r.mu.Lock()
	if !r.dirty {
		r.mu.Unlock()
		return
	}
	r.dirty = false
	info := r.roomInfoLocked()
	if info.NumParticipants == r.sentCount {
		r.mu.Unlock()
		return
	}
	r.sentCount = info.NumParticipants
	r.mu.Unlock()
	r.broadcast(&livekit.SignalResponse{Message: &livekit.SignalResponse_RoomUpdate{RoomUpdate: &livekit.RoomUpdate{Room: info}}})
}

// setMetadata updates the room metadata and tells everyone at once.
func (r *Room) setMetadata(md string) *livekit.Room {
	r.mu.Lock()
	r.info.Metadata = md
	info := r.roomInfoLocked()
	r.mu.Unlock()
	r.broadcast(&livekit.SignalResponse{Message: &livekit.SignalResponse_RoomUpdate{RoomUpdate: &livekit.RoomUpdate{Room: info}}})
	r.relay.roomMetadata(md)
	return info
}

// sendConnectionQuality sends every participant its own quality and that
// of the room's publishers (whose media it may receive), as livekit-server
// does: everyone's quality to everyone is N² entries every 5 s, which a big
// room's clients spend their time decoding. It is derived from loss of the
// participant's published streams and its subscribers' receiver reports;
// LOST is never reported (livekit-client reconnects after 10 s of LOST).
func (r *Room) sendConnectionQuality(ps []*Participant) {
	var pubs []*livekit.ConnectionQualityInfo
	publishing := make([]bool, len(ps))
	for i, p := range ps {
		if !p.hidden && p.isPublisher() {
			publishing[i] = true
			pubs = append(pubs, p.connectionQuality())
		}
	}
	for i, p := range ps {
		updates := pubs
		if !p.hidden && !publishing[i] {
			updates = append([]*livekit.ConnectionQualityInfo{p.connectionQuality()}, pubs...)
		}
		if len(updates) == 0 {
			continue
		}
		p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_ConnectionQuality{ConnectionQuality: &livekit.ConnectionQualityUpdate{Updates: updates}}})
	}
}

// closeCodeFor maps a disconnect reason to the WebSocket close code.
func closeCodeFor(reason livekit.DisconnectReason) websocket.StatusCode {
	if reason == livekit.DisconnectReason_SERVER_SHUTDOWN {
		return websocket.StatusGoingAway
	}
	return websocket.StatusNormalClosure
}
