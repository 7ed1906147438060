package sfu

import (
	"context"
	"errors"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/proto"
)

// Relay API: what package bridge needs to spread one room over several
// nodes. It has two sides.
//
// Origin side: a RelayObserver sees the room's local participants change
// (join, update, mute, track published or gone, leave) and their data
// packets; LocalTrack.Subscribe attaches a RelaySink that receives the RTP
// of the wanted simulcast layers inline from the publisher's read loop, as a
// downtrack does, without a peer connection. The layers a sink wants are
// folded into the track's dynacast.
//
// Receiving side: AddRemoteParticipant injects a participant that lives on
// another node, with its origin identity and sid; its tracks
// (RemoteParticipant.PublishTrack, origin track sid) are fed with
// RemoteTrack.WriteRTP, which runs the same receive path as a local
// publisher's packets (packet cache for NACKs, keyframe detection, audio
// levels, fan-out to downtracks). Local subscribers, dynacast, speakers,
// mute state and data therefore work as for a local publisher; payloads and
// header extensions are not touched (E2EE passes).
//
// Remote participants are never reported to observers, so nothing loops
// back to the node it came from.

// ErrIdentityTaken is returned when a remote participant would replace a
// local session with the same identity (a relayed one it replaces).
var ErrIdentityTaken = errors.New("identity is already in the room")

// ErrSidTaken is returned when a remote participant's sid is another
// participant's in the room: permissions, speakers and data addressed by
// sid would go to either.
var ErrSidTaken = errors.New("participant sid is already in the room")

// Errors of the relay API.
var (
	ErrParticipantClosed = errors.New("participant has left")
	ErrTrackExists       = errors.New("track is already published")
)

// RelayObserver receives a room's local events. Calls come from SFU
// goroutines (signal handlers, read loops of data channels), possibly
// concurrently, and must not block; ordering across participants is not
// guaranteed, ParticipantInfo.Version orders the updates of one.
type RelayObserver interface {
	// ParticipantChanged reports a local participant's current info (with
	// its live tracks); State DISCONNECTED means it left.
	ParticipantChanged(info *livekit.ParticipantInfo)
	// DataPacket reports an encoded livekit.DataPacket sent by a local
	// participant or the RoomService (sender already stamped), with the
	// data channel label ("_reliable" or "_lossy") and its destinations.
	DataPacket(label string, data []byte, dests []string)
	// RoomMetadata reports RoomService.UpdateRoomMetadata on this node.
	RoomMetadata(metadata string)
	// DataTrackPacket reports a packet a local participant sent on one of
	// its data tracks (its info lists them), as it came in: the handle in
	// it is the publisher's.
	DataTrackPacket(identity string, packet []byte)
}

// RelaySink receives the RTP of a subscribed local track. WriteRTP is
// called inline from the publisher's read loop of that layer (one
// goroutine per layer) and must neither block nor keep h or payload.
type RelaySink interface {
	WriteRTP(layer int, h *rtp.Header, payload []byte)
}

// RelayCodec describes a relayed track's codec.
type RelayCodec struct {
	webrtc.RTPCodecParameters
	// AudioLevelExtID is the ssrc-audio-level header extension id the
	// publisher uses (0: none); extensions cross the relay unchanged.
	AudioLevelExtID uint8
}

// RelayRoom is the relay's handle on one room of this node.
type RelayRoom struct {
	r *Room
}

// roomRelay is a room's relay state: its observers (copy on write).
type roomRelay struct {
	mu  sync.Mutex
	obs atomic.Pointer[[]RelayObserver]
}

func (rr *roomRelay) participantChanged(from *Participant, info *livekit.ParticipantInfo) {
	if from.remote != nil {
		return
	}
	if os := rr.obs.Load(); os != nil {
		for _, o := range *os {
			o.ParticipantChanged(proto.Clone(info).(*livekit.ParticipantInfo))
		}
	}
}

func (rr *roomRelay) dataPacket(from *Participant, label string, data []byte, dests []string) {
	if from != nil && from.remote != nil {
		return
	}
	if os := rr.obs.Load(); os != nil {
		for _, o := range *os {
			o.DataPacket(label, data, dests)
		}
	}
}

func (rr *roomRelay) dataTrackPacket(from *Participant, packet []byte) {
	if os := rr.obs.Load(); os != nil {
		for _, o := range *os {
			o.DataTrackPacket(from.identity, packet)
		}
	}
}

func (rr *roomRelay) roomMetadata(md string) {
	if os := rr.obs.Load(); os != nil {
		for _, o := range *os {
			o.RoomMetadata(md)
		}
	}
}

// SetMetadata applies room metadata set on another node; observers do not
// see it.
func (rr *RelayRoom) SetMetadata(md string) {
	r := rr.r
	r.mu.Lock()
	if r.info.Metadata == md {
		r.mu.Unlock()
		return
	}
	r.info.Metadata = md
	info := r.roomInfoLocked()
	r.mu.Unlock()
	r.broadcast(&livekit.SignalResponse{Message: &livekit.SignalResponse_RoomUpdate{RoomUpdate: &livekit.RoomUpdate{Room: info}}})
}

// RelayRoom returns the relay handle of a room, creating the room with
// the default options when create is set, except shortly after DeleteRoom
// closed it (ErrRoomNotFound then): a peer that has not closed its copy
// yet must not link it here again.
func (s *Server) RelayRoom(name string, create bool) (*RelayRoom, error) {
	create = create && !s.svc.deletedRecently(name)
	r, _, err := s.getOrCreateRoom(name, s.defaultRoomOptions(), create)
	if err != nil {
		return nil, err
	}
	return &RelayRoom{r: r}, nil
}

// Name is the room name.
func (rr *RelayRoom) Name() string { return rr.r.name }

// Done is closed when the room closes.
func (rr *RelayRoom) Done() <-chan struct{} { return rr.r.done }

// Observe registers o for the room's local events until cancel is called.
func (rr *RelayRoom) Observe(o RelayObserver) (cancel func()) {
	rl := &rr.r.relay
	rl.mu.Lock()
	defer rl.mu.Unlock()
	var next []RelayObserver
	if old := rl.obs.Load(); old != nil {
		next = append(next, *old...)
	}
	next = append(next, o)
	rl.obs.Store(&next)
	return func() {
		rl.mu.Lock()
		defer rl.mu.Unlock()
		var next []RelayObserver
		for _, x := range *rl.obs.Load() {
			if x != o {
				next = append(next, x)
			}
		}
		rl.obs.Store(&next)
	}
}

// LocalParticipants returns the infos of the room's local, visible
// participants (for the initial sync of a new relay).
func (rr *RelayRoom) LocalParticipants() []*livekit.ParticipantInfo {
	var out []*livekit.ParticipantInfo
	for _, p := range rr.r.participantList() {
		if p.remote == nil && !p.hidden && !p.isClosed() {
			out = append(out, p.snapshot())
		}
	}
	return out
}

// SubscriptionPermission is a local participant's subscription permission
// resolved to identities (nil: everyone may subscribe, or no such local
// participant), for the relay to carry to the other nodes with its info.
func (rr *RelayRoom) SubscriptionPermission(identity string) *livekit.SubscriptionPermission {
	p := rr.r.participant(identity)
	if p == nil || p.remote != nil {
		return nil
	}
	rr.r.permMu.Lock()
	defer rr.r.permMu.Unlock()
	return p.subPerm.toProto()
}

// LocalTrack returns a live track published by a local participant, or nil.
func (rr *RelayRoom) LocalTrack(sid string) *LocalTrack {
	t := rr.r.findTrack(sid)
	if t == nil || t.owner.remote != nil {
		return nil
	}
	return &LocalTrack{t: t}
}

// DeliverData delivers an encoded DataPacket relayed from another node to
// the local participants (dests empty: all). Observers do not see it.
func (rr *RelayRoom) DeliverData(label string, data []byte, dests []string) {
	rr.r.routeDataLocal(nil, label, data, dests)
}

// DeliverDataTrack forwards a packet of a data track of identity, a
// participant relayed here, to this node's subscribers of that track (the
// handle in the packet is the publisher's, as its info lists it). Packets
// naming no such participant or track are dropped.
func (rr *RelayRoom) DeliverDataTrack(identity string, packet []byte) {
	if p := rr.r.participant(identity); p != nil && p.remote != nil {
		p.onDataTrackPacket(packet)
	}
}

// RemoveParticipant ends a local participant's session for a removal
// asked on another node: PARTICIPANT_REMOVED goes through
// RoomService.RemoveParticipant (so tokens issued before are refused here
// too), other reasons (DUPLICATE_IDENTITY: the identity joined elsewhere)
// just end the session. It reports whether the identity was here.
func (rr *RelayRoom) RemoveParticipant(identity string, reason livekit.DisconnectReason) bool {
	p := rr.r.participant(identity)
	if p == nil || p.remote != nil {
		return false
	}
	if reason == livekit.DisconnectReason_PARTICIPANT_REMOVED {
		_, err := rr.r.s.RoomService().RemoveParticipant(context.Background(), &livekit.RoomParticipantIdentity{Room: rr.r.name, Identity: identity})
		return err == nil
	}
	p.close(reason, true)
	return true
}

// MuteTrack mutes a local participant's track as
// RoomService.MutePublishedTrack does (for mutes asked on another node); it
// reports whether the track was here.
func (rr *RelayRoom) MuteTrack(identity, trackSID string) bool {
	p := rr.r.participant(identity)
	if p == nil || p.remote != nil {
		return false
	}
	_, ok := p.setTrackMuted(trackSID, true, true)
	return ok
}

// UpdateParticipant applies RoomService.UpdateParticipant to a local
// participant (for updates asked on another node); it reports whether the
// identity was here.
func (rr *RelayRoom) UpdateParticipant(identity, name, metadata string, attrs map[string]string, perm *livekit.ParticipantPermission) bool {
	p := rr.r.participant(identity)
	if p == nil || p.remote != nil {
		return false
	}
	_, err := rr.r.s.RoomService().UpdateParticipant(context.Background(), &livekit.UpdateParticipantRequest{
		Room: rr.r.name, Identity: identity, Name: name, Metadata: metadata, Attributes: attrs, Permission: perm,
	})
	return err == nil
}

// LocalTrack is a track published on this node, seen by the relay.
type LocalTrack struct {
	t *publishedTrack
}

// Info returns a copy of the track info.
func (lt *LocalTrack) Info() *livekit.TrackInfo { return lt.t.trackInfoAny() }

// Codec returns the track's codec and audio level extension id.
func (lt *LocalTrack) Codec() RelayCodec {
	c := RelayCodec{RTPCodecParameters: lt.t.codecParams()}
	if l := lt.t.layer(0); l != nil {
		c.AudioLevelExtID = l.audioLevelID
	}
	return c
}

// Kind is audio or video.
func (lt *LocalTrack) Kind() webrtc.RTPCodecType { return lt.t.kind }

// Subscribe attaches sink; it receives nothing until SetWanted. It returns
// nil when the track is gone.
func (lt *LocalTrack) Subscribe(sink RelaySink) *RelaySubscription {
	t := lt.t
	s := &RelaySubscription{t: t, sink: sink}
	t.relay.mu.Lock()
	defer t.relay.mu.Unlock()
	if t.isClosed() {
		return nil
	}
	var next []*RelaySubscription
	if old := t.relay.sinks.Load(); old != nil {
		next = append(next, *old...)
	}
	next = append(next, s)
	t.relay.sinks.Store(&next)
	return s
}

// RelaySubscription is one sink's subscription to a local track.
type RelaySubscription struct {
	t      *publishedTrack
	sink   RelaySink
	wanted atomic.Uint32 // layers the remote node's subscribers want
	active atomic.Uint32 // layers forwarded (wanted mapped onto live layers)
}

// SetWanted sets the layers wanted on the other side (bit i = layer i;
// audio uses bit 0; 0 = nothing). Each wanted layer is served by the
// nearest live layer (the highest at or below it, else the lowest above),
// as a downtrack chooses; the highest wanted layer joins the track's
// dynacast.
func (s *RelaySubscription) SetWanted(mask uint8) {
	s.wanted.Store(uint32(mask & (1<<maxLayers - 1)))
	if mask != 0 {
		s.t.markSubscribed()
	}
	s.reselect()
	s.t.dynacast(time.Now())
}

// Bitrate is layer's incoming bitrate over the last interval (bit/s; 0
// while paused).
func (s *RelaySubscription) Bitrate(layer int) uint64 {
	if layer < 0 || layer >= maxLayers {
		return 0
	}
	return s.t.bitrate(layer)
}

// Active returns the layers currently forwarded to the sink.
func (s *RelaySubscription) Active() uint8 { return uint8(s.active.Load()) }

// RequestKeyframe asks the publisher for a keyframe of layer, throttled
// together with the local subscribers' requests.
func (s *RelaySubscription) RequestKeyframe(layer int) { s.t.requestKeyframe(layer) }

// Close detaches the sink.
func (s *RelaySubscription) Close() {
	t := s.t
	s.wanted.Store(0)
	s.active.Store(0)
	t.relay.mu.Lock()
	if old := t.relay.sinks.Load(); old != nil {
		var next []*RelaySubscription
		for _, x := range *old {
			if x != s {
				next = append(next, x)
			}
		}
		t.relay.sinks.Store(&next)
	}
	t.relay.mu.Unlock()
	t.dynacast(time.Now())
}

func (s *RelaySubscription) reselect() {
	t := s.t
	w := s.wanted.Load()
	var eff uint32
	if t.kind == webrtc.RTPCodecTypeAudio {
		eff = w & 1
	} else {
		for d := 0; d < maxLayers; d++ {
			if w&(1<<d) == 0 {
				continue
			}
			best := -1
			for l := d; l >= 0; l-- {
				if t.layerLive(l) {
					best = l
					break
				}
			}
			for l := d + 1; best < 0 && l < maxLayers; l++ {
				if t.layerLive(l) {
					best = l
				}
			}
			if best < 0 {
				best = d // nothing live yet: take it when it comes
			}
			eff |= 1 << best
		}
	}
	old := s.active.Swap(eff)
	for l := 0; l < maxLayers; l++ {
		if eff&^old&(1<<l) != 0 {
			t.requestKeyframe(l)
		}
	}
}

// trackRelay is a track's relay state: sinks on the origin side, hooks on
// the receiving side.
type trackRelay struct {
	mu    sync.Mutex
	sinks atomic.Pointer[[]*RelaySubscription]

	// receiving side (remote tracks) only
	onWant   func(mask uint8)
	lastWant atomic.Int32
}

// relayNeed is the highest layer any sink wants, -1 none.
func (t *publishedTrack) relayNeed() int32 {
	need := int32(-1)
	if sp := t.relay.sinks.Load(); sp != nil {
		for _, s := range *sp {
			if w := s.wanted.Load(); w != 0 {
				need = max(need, int32(bits.Len32(w)-1))
			}
		}
	}
	return need
}

// relayReselect re-maps the sinks' layers after a layer came or went.
func (t *publishedTrack) relayReselect() {
	if sp := t.relay.sinks.Load(); sp != nil {
		for _, s := range *sp {
			s.reselect()
		}
	}
}

// relayForward hands a packet to the sinks that take its layer.
func (t *publishedTrack) relayForward(layer int, h *rtp.Header, payload []byte) {
	if sp := t.relay.sinks.Load(); sp != nil {
		for _, s := range *sp {
			if s.active.Load()&(1<<layer) != 0 {
				s.sink.WriteRTP(layer, h, payload)
			}
		}
	}
}

// relayWant recomputes, for a remote track, the layers its local
// subscribers want or still receive, and reports a change.
func (t *publishedTrack) relayWant() {
	if t.relay.onWant == nil {
		return
	}
	var mask uint8
	for _, dt := range *t.dts.Load() {
		if dt.disabled.Load() {
			continue
		}
		if t.kind == webrtc.RTPCodecTypeAudio {
			mask |= 1
			continue
		}
		if d := dt.desiredLayer(); d >= 0 && d < maxLayers {
			mask |= 1 << d
		}
		if c := dt.current.Load(); c >= 0 && c < maxLayers {
			mask |= 1 << c
		}
	}
	if t.isClosed() {
		mask = 0
	}
	if t.relay.lastWant.Swap(int32(mask)) != int32(mask) {
		t.relay.onWant(mask)
	}
}

// RemoteHooks tell the relay what this node did to a remote participant,
// so the origin can do it. They are called on SFU goroutines and must not
// block.
type RemoteHooks struct {
	// OnRemoved: this node removed it (RoomService.RemoveParticipant,
	// reason PARTICIPANT_REMOVED) or a local join took its identity
	// (DUPLICATE_IDENTITY). Closes for other reasons (room closed, server
	// shutdown, RemoteParticipant.Close) are not reported: they end the
	// participant here, not everywhere.
	OnRemoved func(reason livekit.DisconnectReason)
	// OnMute: RoomService.MutePublishedTrack muted one of its tracks here.
	OnMute func(trackSID string, muted bool)
	// OnUpdate: RoomService.UpdateParticipant changed it here (empty
	// strings, nil attributes or permission: unchanged). attrs is a copy.
	OnUpdate func(name, metadata string, attrs map[string]string, perm *livekit.ParticipantPermission)
	// OnDataWant: this node's first subscriber to one of its data tracks
	// came (wanted) or its last went; the origin need relay the track's
	// packets only while it is wanted. Called under the room's permMu: it
	// must not call back into the SFU.
	OnDataWant func(sid string, wanted bool)
}

// remotePeer marks a participant that lives on another node.
type remotePeer struct {
	hooks RemoteHooks
	quiet atomic.Bool // closed by the relay itself: do not report
}

// closed is called at the end of Participant.close.
func (rp *remotePeer) closed(reason livekit.DisconnectReason) {
	if rp.quiet.Load() || rp.hooks.OnRemoved == nil {
		return
	}
	if reason == livekit.DisconnectReason_PARTICIPANT_REMOVED || reason == livekit.DisconnectReason_DUPLICATE_IDENTITY {
		rp.hooks.OnRemoved(reason)
	}
}

// updatedByServer is called when this node's RoomService updates it.
func (rp *remotePeer) updatedByServer(name, metadata string, attrs map[string]string, perm *livekit.ParticipantPermission) {
	if rp.hooks.OnUpdate == nil {
		return
	}
	var a map[string]string
	if len(attrs) > 0 {
		a = make(map[string]string, len(attrs))
		for k, v := range attrs {
			a[k] = v
		}
	}
	if perm != nil {
		perm = proto.Clone(perm).(*livekit.ParticipantPermission)
	}
	rp.hooks.OnUpdate(name, metadata, a, perm)
}

// mutedByServer is called when this node's RoomService mutes a track.
func (rp *remotePeer) mutedByServer(sid string, muted bool) {
	if rp.hooks.OnMute != nil {
		rp.hooks.OnMute(sid, muted)
	}
}

// RemoteParticipant is a participant of another node injected into a room.
type RemoteParticipant struct {
	p *Participant
}

// AddRemoteParticipant injects a participant living on another node, with
// its origin sid and identity, name, metadata, attributes, kind, state and
// permission (its tracks come with PublishTrack); hooks report what this
// node does to it.
func (rr *RelayRoom) AddRemoteParticipant(info *livekit.ParticipantInfo, hooks RemoteHooks) (*RemoteParticipant, error) {
	r := rr.r
	s := r.s
	video := &auth.VideoGrant{RoomJoin: true, Room: r.name}
	video.SetCanSubscribe(false)
	video.SetCanPublish(true)
	video.SetCanPublishData(true)
	pi := proto.Clone(info).(*livekit.ParticipantInfo)
	pi.Tracks, pi.DataTracks = nil, nil // tracks come with PublishTrack, data tracks below
	pi.IsPublisher = false
	pi.Capabilities = knownCapabilities(pi.Capabilities) // a peer deployment's too
	if pi.Version == 0 {
		pi.Version = 1
	}
	p := &Participant{
		room:          r,
		s:             s,
		sid:           info.GetSid(),
		identity:      info.GetIdentity(),
		log:           r.log.With().Str("lk_identity", info.GetIdentity()).Str("participant_sid", info.GetSid()).Bool("remote", true).Logger(),
		sc:            &signalConn{s: s, closing: true, notify: make(chan struct{}, 1), closed: make(chan struct{})},
		video:         video,
		info:          pi,
		pending:       map[string]*pendingTrack{},
		published:     map[string]*publishedTrack{},
		subscriptions: map[string]*downTrack{},
		denied:        map[string]bool{},
		midCid:        map[string]string{},
		token:         &verifiedToken{},
		remote:        &remotePeer{hooks: hooks},
	}
	p.quality.Store(int32(livekit.ConnectionQuality_EXCELLENT))
	p.score.Store(0x40a00000) // 5.0
	// The identity moved: another node relays a session that replaced the
	// one relayed from elsewhere (its node died or drained, and the
	// client rejoined on a third node; the old relay notices only after
	// ICE consent fails). The newest session wins, as a local rejoin does;
	// the old relay is not told (quiet), its origin ends that session itself.
	if old := r.participant(p.identity); old != nil && old.remote != nil {
		old.log.Info().Msg("relayed participant replaced by a session relayed from another node")
		old.remote.quiet.Store(true)
		old.close(livekit.DisconnectReason_DUPLICATE_IDENTITY, true)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrRoomClosed
	}
	if _, ok := r.participants[p.identity]; ok {
		r.mu.Unlock()
		return nil, ErrIdentityTaken
	}
	for _, q := range r.participants {
		if q.sid == p.sid {
			r.mu.Unlock()
			return nil, ErrSidTaken
		}
	}
	r.participants[p.identity] = p
	r.everJoined = true
	r.dirty = true
	r.mu.Unlock()
	s.metrics.participants.Inc()
	p.log.Debug().Msg("remote participant joined")
	p.syncRemoteDataTracks(info.GetDataTracks())
	p.publishUpdate(false)
	return &RemoteParticipant{p: p}, nil
}

// Identity is the participant's identity.
func (rp *RemoteParticipant) Identity() string { return rp.p.identity }

// Update applies the origin's new info: name, metadata, attributes,
// state, permission, kind and data tracks (tracks are handled by PublishTrack,
// UnpublishTrack and SetTrackMuted). The version sent to clients keeps
// increasing.
func (rp *RemoteParticipant) Update(info *livekit.ParticipantInfo) {
	p := rp.p
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	i := p.info
	i.Name, i.Metadata, i.Attributes = info.GetName(), info.GetMetadata(), info.GetAttributes()
	i.State, i.Permission, i.Kind, i.Region = info.GetState(), info.GetPermission(), info.GetKind(), info.GetRegion()
	i.Version = max(i.Version+1, info.GetVersion())
	p.mu.Unlock()
	p.syncRemoteDataTracks(info.GetDataTracks())
	p.publishUpdate(false)
}

// SetSubscriptionPermission applies the origin's subscription permission
// (nil: everyone) to this node's subscribers, as a local publisher's: set
// it before the tracks it covers are published here.
func (rp *RemoteParticipant) SetSubscriptionPermission(perm *livekit.SubscriptionPermission) {
	rp.p.setSubscriptionPermission(perm)
}

// PublishTrack adds a live track fed by the relay, with the origin's
// TrackInfo (sid, simulcast layers, mute state) and codec. onWant is called
// with the layers the local subscribers want (bit i = layer i; audio bit 0;
// 0 = none) whenever that changes; onKeyframe when they need a keyframe of
// a layer (already throttled here). Neither may block.
func (rp *RemoteParticipant) PublishTrack(info *livekit.TrackInfo, codec RelayCodec, onWant func(mask uint8), onKeyframe func(layer int)) (*RemoteTrack, error) {
	p := rp.p
	kind := webrtc.RTPCodecTypeVideo
	if info.GetType() == livekit.TrackType_AUDIO {
		kind = webrtc.RTPCodecTypeAudio
	}
	ti := proto.Clone(info).(*livekit.TrackInfo)
	t := newPublishedTrack(p, ti, "", kind)
	t.live = true
	t.codec = codec.RTPCodecParameters
	t.relay.onWant = onWant
	t.relay.lastWant.Store(-1)
	rt := &RemoteTrack{t: t}
	n := 1
	if kind == webrtc.RTPCodecTypeVideo {
		n = maxLayers
	}
	rids := [maxLayers]string{"q", "h", "f"}
	for i := 0; i < n; i++ {
		l := &layerRecv{t: t, idx: i, isKey: keyframeDetector(codec.MimeType), audioLevelID: codec.AudioLevelExtID, onKeyframe: onKeyframe}
		if kind == webrtc.RTPCodecTypeVideo {
			size := p.s.cfg.RTC.PacketCacheSize // as addLayer: q 1/4, h 1/2
			if t.simulcastLocked() {
				l.rid = rids[i]
				size >>= maxLayers - 1 - i
			}
			l.cache = newPacketCache(max(size, 16))
		}
		p.s.initBatch(&l.batch)
		t.layers[i] = l
		rt.layers[i] = l
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrParticipantClosed
	}
	if old := p.published[ti.Sid]; old != nil {
		p.mu.Unlock()
		return nil, ErrTrackExists
	}
	p.published[ti.Sid] = t
	p.changedLocked()
	p.mu.Unlock()
	p.s.metrics.tracks.Inc()
	p.room.trackLive(p, t)
	return rt, nil
}

// UnpublishTrack removes a relayed track.
func (rp *RemoteParticipant) UnpublishTrack(sid string) {
	p := rp.p
	p.mu.Lock()
	t := p.published[sid]
	p.mu.Unlock()
	if t != nil {
		p.unpublish(t)
	}
}

// SetTrackMuted records the origin's mute state of a track.
func (rp *RemoteParticipant) SetTrackMuted(sid string, muted bool) {
	rp.p.setTrackMuted(sid, muted, false)
}

// Close removes the participant from this node (it left its origin or the
// relay ended); onRemoved is not called.
func (rp *RemoteParticipant) Close(reason livekit.DisconnectReason) {
	rp.p.remote.quiet.Store(true)
	rp.p.close(reason, false)
}

// RemoteTrack is a track of a remote participant, fed by the relay.
type RemoteTrack struct {
	t      *publishedTrack
	layers [maxLayers]*layerRecv
	hdr    [maxLayers]rtp.Header
}

// SID is the origin's track sid.
func (rt *RemoteTrack) SID() string { return rt.t.sid }

// WriteRTP feeds one RTP packet of layer (0 low … 2 high; audio 0) through
// the local receive path. Each layer must be written by one goroutine at a
// time; pkt is not kept.
func (rt *RemoteTrack) WriteRTP(layer int, pkt []byte) {
	if layer < 0 || layer >= maxLayers {
		return
	}
	if l := rt.layers[layer]; l != nil {
		l.handle(pkt, &rt.hdr[layer])
	}
}

// Packet copies the cached packet seq of layer (as the publisher sent it)
// into dst, for answering a relay's NACK; nil when it is gone or the layer
// keeps no cache (audio).
func (s *RelaySubscription) Packet(layer int, seq uint16, dst []byte) []byte {
	if layer < 0 || layer >= maxLayers {
		return nil
	}
	l := s.t.layer(layer)
	if l == nil || l.cache == nil {
		return nil
	}
	return l.cache.get(seq, dst)
}

// SID is the participant's (origin) sid.
func (rp *RemoteParticipant) SID() string { return rp.p.sid }

// KeyframeRequests returns, per layer, how many keyframe requests were
// sent to the publisher (after throttling).
func (lt *LocalTrack) KeyframeRequests() [maxLayers]uint64 {
	var out [maxLayers]uint64
	for i := 0; i < maxLayers; i++ {
		if l := lt.t.layer(i); l != nil {
			out[i] = l.plis.Load()
		}
	}
	return out
}
