package sfu

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/utils"
	"github.com/livekit/protocol/utils/guid"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
)

// Participant is one signal session with its two peer connections: pub
// (the client offers, the SFU receives) and sub (the SFU offers and sends);
// or, in single peer connection mode (/rtc/v1), pub alone, where the
// client offers and the SFU both receives and sends (singlepc.go).
//
// p.mu guards info, grants, the track maps and queued candidates; it is
// never held while calling pion or another participant. negMu serialises
// subscriber offers.
type Participant struct {
	room          *Room
	s             *Server
	sid           string
	identity      string
	hidden        bool
	autoSubscribe bool
	protocol      int
	// readsTrailers: the client reads packet trailers (CAP_PACKET_TRAILER;
	// trailer.go), so they are not cut from what it receives
	readsTrailers bool
	single        bool
	// trackSubscribedEvent: the client understands track_subscribed
	// (the Rust SDK before protocol 10 cannot decode it, livekit-server).
	trackSubscribedEvent bool
	log                  zerolog.Logger
	sc                   *signalConn

	pub         *webrtc.PeerConnection
	sub         *webrtc.PeerConnection
	subReliable *webrtc.DataChannel
	subLossy    *webrtc.DataChannel
	// subDataTrack: the channel data track packets go out on (guarded by dcMu)
	subDataTrack *webrtc.DataChannel

	// Data tracks (datatrack.go): its published ones by publisher handle,
	// replaced whole under room.permMu; the ones it wants, by track sid, and
	// its last subscriber handle, guarded by room.permMu.
	dataTracks        atomic.Pointer[map[uint16]*dataTrack]
	dataWant          map[string]*dataWant
	nextDataHandle    uint16
	autoSubscribeData bool
	// dtChanOpen: the channel its data track packets go out on is open;
	// until then its handles wait (dtHandlesHeld). Guarded by room.permMu.
	dtChanOpen, dtHandlesHeld bool

	mu              sync.Mutex
	annMu           sync.Mutex               // held from a snapshot of info to its broadcast (publishUpdate)
	info            *livekit.ParticipantInfo // without Tracks; snapshot adds them
	video           *auth.VideoGrant
	pending         map[string]*pendingTrack        // by cid
	published       map[string]*publishedTrack      // by track sid
	subscriptions   map[string]*downTrack           // by track sid
	denied          map[string]bool                 // track sids wanted and not permitted by their publisher, told so (permission.go)
	subPerm         *subPolicy                      // who may subscribe to its tracks (nil: everyone); guarded by room.permMu
	midCid          map[string]string               // publisher offer: mid -> msid track id
	retired         map[*webrtc.RTPTransceiver]bool // single mode: sections a track left, until the next answer
	candQueue       [2][]webrtc.ICECandidateInit    // by SignalTarget, until a remote description exists
	selfUpdAt       time.Time                       // last broadcast of the participant's own metadata change
	selfUpdTimer    *time.Timer                     // a coalesced broadcast of such changes is due
	candSeen        [2]map[string]struct{}          // by SignalTarget, remote candidates (candKey) taken in this ICE generation
	remoteUfrag     [2]string                       // by SignalTarget, the remote description's ice-ufrag
	candCarry       [2]int                          // by SignalTarget, candidates of earlier ICE generations counted in this one (icerestarts.go)
	candShared      [2]bool                         // by SignalTarget, this ICE generation shares the budget of earlier ones
	iceRestarts     [2]restartBudget                // by SignalTarget, fresh candidate budgets left for ICE restarts
	closed          bool
	left            chan struct{} // closed once the leave is announced (leftAnnounced)
	lastReliableSeq uint32

	ansMu         sync.Mutex // held while answering a publisher offer
	negMu         sync.Mutex
	offerInFlight bool
	negAgain      bool
	iceRestart    bool // the next subscriber offer restarts ICE (resume)
	negDeferred   bool // a negotiation waits for the connection (negotiateDeferred)
	offerID       uint32

	// pcMu is held around every pion call that starts or stops senders
	// (setting a description, RemoveTrack) and around closing the
	// connections; taken last, never while calling back into the SFU.
	// pion's RTPSender.Stop, when it runs before a concurrent Send has
	// finished, returns without closing the sender's RTCP stream, and Send
	// still binds the track: that downtrack's rtcpLoop then reads forever,
	// leaking and holding up the server's shutdown (CI, 5 Dec 2026: fed-b's
	// gxconf outlived SIGTERM; the goroutine dump showed the loop blocked in
	// pion's SRTCP read stream of a closed connection).
	pcMu sync.Mutex

	// single peer connection: a media_sections_requirement is outstanding
	// (cleared by the client's next offer), with the sections it asked for
	offerAsked     bool
	askedA, askedV int
	// single peer connection: the join request's offer, not answered
	// before the client's first candidate (holdOffer); negMu guards both
	heldOffer *livekit.SessionDescription
	heldTimer *time.Timer
	// offerMu orders the answers to the client's offers in single mode: a
	// held offer released by its timer is answered before a newer offer.
	offerMu sync.Mutex

	dcMu      sync.Mutex // also guards subReliable/subLossy in single mode
	dcOpen    bool
	dcPending [][]byte

	fastKeys atomic.Pointer[fastKeys]   // subscriber SRTP keys for the direct path
	direct   atomic.Pointer[directDest] // subscriber address on the mux socket
	recv     *pubRecv                   // direct receive path (fastrecv.go); nil without it
	guards   []*rtcpGuard               // RTCP guards of its connections (rtcpguard.go); none without the direct receive path
	// rtcpStreams counts the streams the SFU gave the participant to
	// receive (subscriptions) or took from it (published layers): the
	// RTCP guards' budget.
	rtcpStreams atomic.Int64
	// sendSSRCs maps the SSRCs of the participant's bound downtracks to
	// them, for its RTCP (onRTCP).
	sendMu    sync.Mutex
	sendSSRCs map[uint32]*downTrack

	pingSeen atomic.Bool
	active   atomic.Bool
	// negBudget: the time its session descriptions may take (negbudget.go)
	negBudget *negotiationBudget
	// pubConnected, subConnected: the publisher connection (the single
	// one in single mode), the subscriber connection have been connected;
	// until then earlyOffers counts the client's offers set on the
	// publisher connection and earlySubOffers (negMu) the subscriber
	// offers (maxEarlyOffers).
	pubConnected, subConnected atomic.Bool
	earlyOffers                atomic.Int32
	earlySubOffers             int
	remb                       atomic.Uint64 // latest REMB estimate from the subscriber, bit/s
	rembAt                     atomic.Int64  // unix nanos of that estimate
	quality                    atomic.Int32  // livekit.ConnectionQuality
	score                      atomic.Uint32 // float32 bits

	// token refresh, owned by periodic (the room worker); refreshing is set
	// while a GrantChecker is asked
	token       *verifiedToken
	nextRefresh time.Time
	refreshing  atomic.Bool

	remote *remotePeer // non-nil: lives on another node (relay.go)

	rpc rpcState // server calls in flight (rpc.go)
}

func newParticipant(r *Room, token *verifiedToken, params joinParams, sc *signalConn) (*Participant, error) {
	grants := token.grants
	now := time.Now()
	sid := guid.New("PA_")
	video := grants.Video.Clone()
	p := &Participant{
		room:                 r,
		s:                    r.s,
		sid:                  sid,
		identity:             grants.Identity,
		hidden:               video.Hidden,
		autoSubscribe:        params.autoSubscribe,
		autoSubscribeData:    params.autoSubscribeData,
		protocol:             params.protocol,
		readsTrailers:        slices.Contains(params.capabilities, livekit.ClientInfo_CAP_PACKET_TRAILER),
		single:               params.single,
		trackSubscribedEvent: !strings.EqualFold(params.sdk, "rust") || params.protocol >= 10,
		log:                  r.log.With().Str("lk_identity", grants.Identity).Str("participant_sid", sid).Logger(),
		sc:                   sc,
		video:                video,
		info: &livekit.ParticipantInfo{
			Sid:        sid,
			Identity:   grants.Identity,
			Name:       grants.Name,
			Metadata:   grants.Metadata,
			Attributes: grants.Attributes,
			State:      livekit.ParticipantInfo_JOINED,
			JoinedAt:   now.Unix(),
			JoinedAtMs: now.UnixMilli(),
			Version:    1,
			Permission: video.ToPermission(),
			Region:     r.s.cfg.Region,
			Kind:       grants.GetParticipantKind(),
			// as the token says (livekit-server): e.g. an agent's CLOUD_AGENT
			KindDetails: grants.GetKindDetails(),
			// what the client handles, for the others' livekit-client (RPC
			// payloads over 15 KiB need client_protocol ≥ 1 on both sides)
			ClientProtocol: params.clientProtocol,
			Capabilities:   params.capabilities,
		},
		pending:       map[string]*pendingTrack{},
		published:     map[string]*publishedTrack{},
		subscriptions: map[string]*downTrack{},
		denied:        map[string]bool{},
		dataWant:      map[string]*dataWant{},
		midCid:        map[string]string{},
		retired:       map[*webrtc.RTPTransceiver]bool{},
		token:         token,
		nextRefresh:   now.Add(r.s.cfg.TokenRefreshInterval),
		negBudget:     newNegotiationBudget(now, negotiationWait(r.s.cfg.PingInterval, r.s.cfg.PingTimeout)),
	}
	p.quality.Store(int32(livekit.ConnectionQuality_EXCELLENT))
	p.score.Store(math.Float32bits(5))
	var err error
	direct := r.s.batchConn != nil
	var pr *pubRecv
	if direct && r.s.directRecv {
		pr = newPubRecv(r.s)
		p.recv = pr
	}
	if p.single {
		var k *keyCapture
		if p.pub, k, err = r.s.single.newPeerConnection(direct, pr); err != nil {
			return nil, err
		}
		if direct {
			p.wireDirect(p.pub, k, true, pr)
		}
	} else {
		send, recv, err := p.newDualPeerConnections(direct, pr)
		if err != nil {
			return nil, err
		}
		if direct {
			p.wireDirect(p.sub, send, true, nil)
			if pr != nil {
				p.wireDirect(p.pub, recv, false, pr)
			}
		}
	}
	p.wirePeerConnections()
	return p, nil
}

// newDualPeerConnections creates the publisher and subscriber connections
// of v0, the subscriber with the SFU's _reliable, _lossy and _data_track channels (and,
// with capture, its DTLS keys reported for the direct send path).
func (p *Participant) newDualPeerConnections(capture bool, pr *pubRecv) (send, recv *keyCapture, err error) {
	if p.pub, recv, err = p.s.pubAPI.newPeerConnection(capture && pr != nil, pr); err != nil {
		return nil, nil, err
	}
	if p.sub, send, err = p.s.subAPI.newPeerConnection(capture, nil); err != nil {
		_ = p.pub.Close()
		return nil, nil, err
	}
	ordered := false
	var zero uint16
	if p.subReliable, err = p.sub.CreateDataChannel(dataReliable, &webrtc.DataChannelInit{}); err == nil {
		p.subLossy, err = p.sub.CreateDataChannel(dataLossy, &webrtc.DataChannelInit{Ordered: &ordered, MaxRetransmits: &zero})
	}
	if err == nil {
		p.subDataTrack, err = p.sub.CreateDataChannel(dataTrackLabel, &webrtc.DataChannelInit{Ordered: &ordered, MaxRetransmits: &zero})
	}
	if err != nil {
		p.closePeerConnections()
		return nil, nil, err
	}
	p.subReliable.OnOpen(func() {
		// Detached (see newSettingEngine); the SFU only writes here.
		_, _ = p.subReliable.Detach()
		p.onReliableOpen()
	})
	p.subLossy.OnOpen(func() { _, _ = p.subLossy.Detach() })
	p.subDataTrack.OnOpen(func() {
		_, _ = p.subDataTrack.Detach()
		p.dataTrackChannelOpen()
	})
	return send, recv, nil
}

// sendPC is the connection the SFU sends media on.
func (p *Participant) sendPC() *webrtc.PeerConnection {
	if p.single {
		return p.pub
	}
	return p.sub
}

func (p *Participant) wirePeerConnections() {
	trickle := func(target livekit.SignalTarget) func(*webrtc.ICECandidate) {
		return func(c *webrtc.ICECandidate) {
			if c == nil {
				return
			}
			b, err := json.Marshal(c.ToJSON())
			if err != nil {
				return
			}
			// Candidates follow the description they belong to: wait
			// until a negotiation in progress has queued it.
			if target == livekit.SignalTarget_SUBSCRIBER {
				p.negMu.Lock()
				//lint:ignore SA2001 the empty critical section orders this send after the description's
				p.negMu.Unlock()
			} else {
				p.ansMu.Lock()
				//lint:ignore SA2001 as above
				p.ansMu.Unlock()
			}
			p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Trickle{Trickle: &livekit.TrickleRequest{
				CandidateInit: string(b), Target: target,
			}}})
		}
	}
	p.pub.OnICECandidate(trickle(livekit.SignalTarget_PUBLISHER))
	if p.sub != nil {
		p.sub.OnICECandidate(trickle(livekit.SignalTarget_SUBSCRIBER))
	}
	state := func(pc string) func(webrtc.PeerConnectionState) {
		return func(st webrtc.PeerConnectionState) {
			p.log.Debug().Str("pc", pc).Str("state", st.String()).Msg("peer connection state")
			switch st {
			case webrtc.PeerConnectionStateConnected:
				connected := &p.subConnected
				if pc == "publisher" {
					connected = &p.pubConnected
				}
				if !connected.Swap(true) && (pc == "subscriber" || p.single) {
					p.s.goAdd(p.negotiateDeferred)
				}
				p.setActive()
			case webrtc.PeerConnectionStateFailed:
				p.s.goAdd(func() { p.close(livekit.DisconnectReason_CONNECTION_TIMEOUT, true) })
			}
		}
	}
	p.pub.OnConnectionStateChange(state("publisher"))
	if p.sub != nil {
		p.sub.OnConnectionStateChange(state("subscriber"))
	}
	p.pub.OnTrack(p.onTrack)
	p.pub.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnOpen(func() {
			raw, err := dc.Detach()
			if err != nil {
				p.log.Debug().Err(err).Msg("failed to detach data channel")
				return
			}
			label := dc.Label()
			if p.single {
				// One connection: the SFU sends on the client's channels.
				p.adoptDataChannel(label, dc)
			}
			p.s.goAdd(func() { p.readData(label, raw) })
		})
	})
}

// subscriberPrimary follows livekit-server: protocol > 2, may subscribe,
// and two peer connections.
func (p *Participant) subscriberPrimary() bool {
	return p.protocol > 2 && p.canSubscribe() && !p.single
}

func (p *Participant) canSubscribe() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.video.GetCanSubscribe()
}

func (p *Participant) isPublisher() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.published {
		if t.isLive() {
			return true
		}
	}
	return false
}

// snapshot returns a copy of the participant's info with its live tracks.
func (p *Participant) snapshot() *livekit.ParticipantInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.snapshotLocked()
}

func (p *Participant) snapshotLocked() *livekit.ParticipantInfo {
	info := proto.Clone(p.info).(*livekit.ParticipantInfo)
	for _, t := range p.published {
		if ti := t.trackInfo(); ti != nil {
			info.Tracks = append(info.Tracks, ti)
			info.IsPublisher = true
		}
	}
	if info.DataTracks = p.dataTrackInfos(); len(info.DataTracks) > 0 {
		info.IsPublisher = true
	}
	return info
}

// changed bumps the version; callers hold p.mu.
func (p *Participant) changedLocked() { p.info.Version++ }

// publishUpdate tells the others (and with self, the participant itself)
// about a change. The snapshot and its broadcast happen under annMu, as
// does close's announcement of the leave: a participant's infos go out in
// the order of their versions, and none after its DISCONNECTED (a snapshot
// taken before a leave and sent after it would bring the participant back
// to every client; the cluster directory's hook drops stale versions itself).
func (p *Participant) publishUpdate(self bool) {
	p.annMu.Lock()
	defer p.annMu.Unlock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return // close announces the leave
	}
	info := p.snapshotLocked()
	p.mu.Unlock()
	if h := testHookAnnounce.Load(); h != nil {
		(*h)(p.identity)
	}
	if !p.hidden {
		p.room.broadcastUpdate(p, info)
	}
	if self {
		p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Update{Update: &livekit.ParticipantUpdate{
			Participants: []*livekit.ParticipantInfo{info},
		}}})
	}
}

// selfUpdateInterval spaces the broadcasts of a participant's own metadata,
// name and attribute changes: each goes to every other participant, so a
// client changing its metadata in a loop would have the server send a
// message to everyone per change. Changes within the interval go out
// together after it, the last state winning.
const selfUpdateInterval = 100 * time.Millisecond

// publishSelfUpdate publishes a change the participant made to its own info
// (publishUpdate with self), at most once per selfUpdateInterval.
func (p *Participant) publishSelfUpdate() {
	p.mu.Lock()
	if p.closed || p.selfUpdTimer != nil { // the due broadcast will carry this change
		p.mu.Unlock()
		return
	}
	if wait := selfUpdateInterval - time.Since(p.selfUpdAt); wait > 0 {
		p.selfUpdTimer = time.AfterFunc(wait, func() {
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				return
			}
			p.selfUpdTimer, p.selfUpdAt = nil, time.Now()
			p.mu.Unlock()
			p.publishUpdate(true)
		})
		p.mu.Unlock()
		return
	}
	p.selfUpdAt = time.Now()
	p.mu.Unlock()
	p.publishUpdate(true)
}

func (p *Participant) setActive() {
	if p.active.Swap(true) {
		return
	}
	p.mu.Lock()
	if p.closed || p.info.State != livekit.ParticipantInfo_JOINED {
		p.mu.Unlock()
		return
	}
	p.info.State = livekit.ParticipantInfo_ACTIVE
	p.changedLocked()
	p.mu.Unlock()
	p.publishUpdate(false)
}

func (p *Participant) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// subscribe adds a downtrack for t if t's publisher permits it (else p is
// told it may not, once, and remembered as wanting it); it reports whether
// a new subscription was made. With negotiate the subscriber offer follows.
func (p *Participant) subscribe(t *publishedTrack, negotiate bool) bool {
	return p.subscribeTo(t, negotiate, false)
}

// subscribeIf is subscribe for a permission just granted: only if p still
// wants t (was denied it and has not unsubscribed since).
func (p *Participant) subscribeIf(t *publishedTrack, negotiate bool) bool {
	return p.subscribeTo(t, negotiate, true)
}

func (p *Participant) subscribeTo(t *publishedTrack, negotiate, onlyDenied bool) bool {
	if t.owner == p || p.remote != nil || !p.canSubscribe() {
		return false
	}
	r := p.room
	r.permMu.Lock()
	if !t.owner.permits(p, t.sid) {
		p.mu.Lock()
		newly := !p.closed && !p.denied[t.sid]
		if newly {
			p.denied[t.sid] = true
		}
		p.mu.Unlock()
		r.permMu.Unlock()
		if newly {
			p.sendPermission(t, false)
		}
		return false
	}
	p.mu.Lock()
	wasDenied := p.denied[t.sid]
	if p.closed || p.subscriptions[t.sid] != nil || (onlyDenied && !wasDenied) {
		p.mu.Unlock()
		r.permMu.Unlock()
		return false
	}
	delete(p.denied, t.sid)
	dt := newDownTrack(p, t)
	p.subscriptions[t.sid] = dt
	p.rtcpStreams.Add(1)
	p.mu.Unlock()
	r.permMu.Unlock()
	if wasDenied {
		p.sendPermission(t, true)
	}
	if p.single {
		// Attached to a free receive section of the client's next offer.
		if negotiate {
			p.negotiate()
		}
		return true
	}
	if err := dt.attach(); err != nil {
		p.mu.Lock()
		delete(p.subscriptions, t.sid)
		p.mu.Unlock()
		p.log.Warn().Err(err).Str("track_sid", t.sid).Msg("failed to subscribe")
		p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_SubscriptionResponse{SubscriptionResponse: &livekit.SubscriptionResponse{
			TrackSid: t.sid, Err: livekit.SubscriptionError_SE_CODEC_UNSUPPORTED,
		}}})
		return false
	}
	if !p.stillSubscribed(dt) {
		// A revoked permission ended it while it was attached: the
		// sender attach added goes too.
		dt.detach(!p.isClosed())
		return false
	}
	if t.isClosed() {
		p.unsubscribe(t.sid, false)
		return false
	}
	if negotiate {
		p.negotiate()
	}
	return true
}

// stillSubscribed tells whether dt is still p's subscription to its track:
// a revocation (another goroutine) may end it while it is being attached.
func (p *Participant) stillSubscribed(dt *downTrack) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.subscriptions[dt.id] == dt
}

// unsubscribe removes the downtrack for a track sid and forgets that p
// wanted it; it reports whether a downtrack existed.
func (p *Participant) unsubscribe(sid string, negotiate bool) bool {
	return p.endSubscription(sid, negotiate, true)
}

// dropSubscription removes the downtrack for a track sid; a denial
// recorded for it stays (a revoked permission).
func (p *Participant) dropSubscription(sid string, negotiate bool) bool {
	return p.endSubscription(sid, negotiate, false)
}

func (p *Participant) endSubscription(sid string, negotiate, forget bool) bool {
	p.mu.Lock()
	dt := p.subscriptions[sid]
	delete(p.subscriptions, sid)
	if forget {
		delete(p.denied, sid)
	}
	closed := p.closed
	p.mu.Unlock()
	if dt == nil {
		return false
	}
	dt.detach(!closed)
	if negotiate && !closed {
		p.negotiate()
	}
	return true
}

// close ends the session: optional Leave, close of the signal connection,
// DISCONNECTED to the others, unpublish and teardown. Idempotent.
func (p *Participant) close(reason livekit.DisconnectReason, sendLeave bool) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.selfUpdTimer != nil {
		p.selfUpdTimer.Stop()
		p.selfUpdTimer = nil
	}
	p.info.State = livekit.ParticipantInfo_DISCONNECTED
	p.info.DisconnectReason = reason
	p.changedLocked()
	published := make([]*publishedTrack, 0, len(p.published))
	for _, t := range p.published {
		published = append(published, t)
	}
	subs := make([]*downTrack, 0, len(p.subscriptions))
	for _, dt := range p.subscriptions {
		subs = append(subs, dt)
	}
	p.subscriptions = map[string]*downTrack{}
	p.mu.Unlock()
	p.negMu.Lock()
	if p.heldTimer != nil {
		p.heldTimer.Stop()
		p.heldTimer, p.heldOffer = nil, nil
	}
	p.negMu.Unlock()

	if sendLeave {
		p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Leave{Leave: &livekit.LeaveRequest{
			Reason: reason, Action: livekit.LeaveRequest_DISCONNECT,
		}}})
	}
	p.sc.close(closeCodeFor(reason), reason.String())
	p.rpc.failAll(rpcError(utils.DataChannelRpcRecipientDisconnected))
	if h := testHookClosing; h != nil {
		h(p.identity)
	}
	// Announced before the session leaves the room's map: a new session of
	// the same identity that no longer finds this one there can rely on
	// its DISCONNECTED being queued before its own JOINED (see
	// closeAnnounced).
	if h := testHookAnnouncingLeave.Load(); h != nil {
		(*h)(p.identity)
	}
	p.annMu.Lock()
	if !p.hidden {
		info := p.snapshot()
		info.Tracks, info.DataTracks = nil, nil
		p.room.broadcastUpdate(p, info)
	}
	p.annMu.Unlock()
	p.room.removeParticipant(p)
	p.leaveDataTracks()
	close(p.leftAnnounced())
	for _, t := range published {
		if t.close() {
			p.s.metrics.tracks.Dec()
		}
		p.room.trackGone(t)
	}
	for _, dt := range subs {
		dt.detach(false)
	}
	p.closePeerConnections()
	if p.remote == nil && p.s.turn != nil {
		p.s.turn.identityLeft(p.identity)
	}
	p.s.metrics.participants.Dec()
	p.flushMetricsOf(subs, published)
	p.log.Info().Str("reason", reason.String()).Msg("participant left")
	if p.remote != nil {
		p.remote.closed(reason)
	}
}

// leftAnnounced returns a channel closed once close has announced p's
// leave (or found it hidden).
func (p *Participant) leftAnnounced() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.left == nil {
		p.left = make(chan struct{})
	}
	return p.left
}

// closeAnnounced closes p, or, when another goroutine is already closing
// it (the client's own leave racing its rejoin), waits until that one has
// announced the leave: the caller's announcements then follow it.
func (p *Participant) closeAnnounced(reason livekit.DisconnectReason) {
	p.close(reason, true)
	if h := testHookAwaitingLeave; h != nil {
		h(p.identity)
	}
	<-p.leftAnnounced()
}

// Test hooks (export_test.go): testHookClosing runs in close once the
// participant is marked closed, before its leave is announced;
// testHookAwaitingLeave in closeAnnounced before it waits for that.
var testHookClosing, testHookAwaitingLeave func(identity string)

// Test hooks (export_test.go): testHookAnnounce runs in publishUpdate
// between the snapshot and its broadcast; testHookAnnouncingLeave in close
// before it waits for announcements under way. Atomic: joins in progress
// read them while a test sets them.
var testHookAnnounce, testHookAnnouncingLeave atomic.Pointer[func(identity string)]

func (p *Participant) closePeerConnections() {
	if p.recv != nil {
		p.recv.close()
	}
	for _, g := range p.guards {
		g.close()
	}
	p.pcMu.Lock()
	defer p.pcMu.Unlock()
	if p.pub != nil {
		if err := p.pub.Close(); err != nil {
			p.log.Debug().Err(err).Msg("failed to close publisher peer connection")
		}
	}
	if p.sub != nil {
		if err := p.sub.Close(); err != nil {
			p.log.Debug().Err(err).Msg("failed to close subscriber peer connection")
		}
	}
}

// setRemote sets pc's remote description under pcMu: with an answer pion
// starts the negotiated senders (Send binds our downtracks). A description
// over the bounds of shapeSDP is refused, and so is an offer pion would
// take but could not answer (checkOfferTracks).
// A new ice-ufrag is an ICE restart: the remote candidates start anew, and
// so does their count (handleTrickle), unless the connection restarted too
// often (icerestarts.go). The description's own candidates count like
// trickled ones: those beyond the bound are left out of it.
func (p *Participant) setRemote(pc *webrtc.PeerConnection, sd webrtc.SessionDescription) error {
	shaped, e := shapeSDP(sd.SDP)
	if e != nil {
		// Refused whole, before pion parses it (sdplimits.go).
		p.s.metrics.sdpRefused.WithLabelValues(e.reason).Inc()
		return e
	}
	sd.SDP = shaped
	if sd.Type == webrtc.SDPTypeOffer {
		if e := checkOfferTracks(sd.SDP); e != nil {
			p.s.metrics.sdpRefused.WithLabelValues(e.reason).Inc()
			return e
		}
	}
	target := livekit.SignalTarget_PUBLISHER
	if pc == p.sub && !p.single {
		target = livekit.SignalTarget_SUBSCRIBER
	}
	ufrag := iceUfrag(sd.SDP)
	p.mu.Lock()
	seen, room, shared := p.candidateRoomLocked(target, ufrag, time.Now())
	p.mu.Unlock()
	var taken []string
	var dropped int
	sd.SDP, taken, dropped = budgetSDPCandidates(sd.SDP, seen, room)
	if dropped > 0 {
		p.log.Info().Int("ignored", dropped).Str("target", target.String()).Bool("shared", shared).Msg("ignoring ice candidates of a session description: too many in this ICE generation")
		p.s.metrics.candIgnored.WithLabelValues(candidateLimitReason(shared)).Add(float64(dropped))
	}
	p.pcMu.Lock()
	err := pc.SetRemoteDescription(sd)
	p.pcMu.Unlock()
	if err != nil {
		return err
	}
	p.mu.Lock()
	if ufrag != p.remoteUfrag[target] {
		p.newICEGenerationLocked(target, ufrag, time.Now())
	}
	for _, k := range taken {
		p.takeCandidateLocked(target, k)
	}
	p.mu.Unlock()
	return nil
}

// iceUfrag is the first a=ice-ufrag of an SDP (bundled: the one in force).
func iceUfrag(sdp string) string {
	const attr = "a=ice-ufrag:"
	i := strings.Index(sdp, attr)
	if i < 0 {
		return ""
	}
	v := sdp[i+len(attr):]
	if j := strings.IndexAny(v, "\r\n"); j >= 0 {
		v = v[:j]
	}
	return v
}

// setLocal sets pc's local description under pcMu: with an answer pion
// starts the negotiated senders.
func (p *Participant) setLocal(pc *webrtc.PeerConnection, sd webrtc.SessionDescription) error {
	p.pcMu.Lock()
	defer p.pcMu.Unlock()
	return pc.SetLocalDescription(sd)
}

// removeSender removes sender from pc under pcMu (RemoveTrack stops it).
func (p *Participant) removeSender(pc *webrtc.PeerConnection, sender *webrtc.RTPSender) error {
	p.pcMu.Lock()
	defer p.pcMu.Unlock()
	return pc.RemoveTrack(sender)
}

// refreshTokenIfDue sends the client a fresh access token (refresh_token)
// every sfu.token_refresh_interval, with its current grants, as LiveKit does:
// clients keep it for reconnecting, so a call outlasts its first token. With
// a GrantChecker the refresh is checked off the room worker and stops once
// the grant is revoked; it never outlives the grant.
func (p *Participant) refreshTokenIfDue(now time.Time) {
	every := p.s.cfg.TokenRefreshInterval
	if every <= 0 || p.token.lifetime <= 0 || now.Before(p.nextRefresh) {
		return
	}
	p.nextRefresh = now.Add(every)
	p.mu.Lock()
	video := p.video.Clone()
	p.mu.Unlock()
	if p.s.grants == nil {
		p.sendRefreshedToken(video, now.Add(p.token.lifetime))
		return
	}
	if !p.refreshing.CompareAndSwap(false, true) {
		return // the previous check is still running
	}
	if !p.s.goAdd(func() {
		defer p.refreshing.Store(false)
		p.refreshChecked(video, now.Add(p.token.lifetime))
	}) {
		p.refreshing.Store(false)
	}
}

// refreshChecked asks the GrantChecker before refreshing. A token with an ID
// has its grant renewed (and capped) first. A token without one is minted
// first and checked after, against the issue time of the token the
// participant joined with, so a revocation that lands between the two still
// covers the new token (its iat is no later than the revocation).
func (p *Participant) refreshChecked(video *auth.VideoGrant, until time.Time) {
	// Shutdown waits for this goroutine: the checker is local (gxconf's
	// database) and bounded.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok := p.token
	if tok.id != "" {
		exp, err := p.s.grants.RenewGrant(ctx, tok.id, tok.grants.Video.Room, tok.grants.Identity, until)
		if err != nil {
			p.log.Info().Err(err).Msg("access token not refreshed: the grant check refused it")
			return
		}
		p.sendRefreshedToken(video, exp)
		return
	}
	jwt, err := p.s.refreshToken(tok, video, until)
	if err != nil {
		p.log.Warn().Err(err).Msg("failed to refresh the access token")
		return
	}
	if _, err := p.s.grants.CheckGrant(ctx, "", tok.grants.Video.Room, tok.grants.Identity, tok.issuedAt); err != nil {
		p.log.Info().Err(err).Msg("access token not refreshed: the grant check refused it")
		return
	}
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_RefreshToken{RefreshToken: jwt}})
}

func (p *Participant) sendRefreshedToken(video *auth.VideoGrant, expires time.Time) {
	if !expires.After(time.Now()) {
		return
	}
	jwt, err := p.s.refreshToken(p.token, video, expires)
	if err != nil {
		p.log.Warn().Err(err).Msg("failed to refresh the access token")
		return
	}
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_RefreshToken{RefreshToken: jwt}})
}

// periodic runs every ~1.2 s from the room worker: sender reports,
// bandwidth allocation and metrics.
func (p *Participant) periodic() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	subs := make([]*downTrack, 0, len(p.subscriptions))
	for _, dt := range p.subscriptions {
		subs = append(subs, dt)
	}
	pubs := make([]*publishedTrack, 0, len(p.published))
	for _, t := range p.published {
		pubs = append(pubs, t)
	}
	p.mu.Unlock()

	now := time.Now()
	var loss float64
	var n int
	for _, t := range pubs {
		if l, ok := t.periodic(now); ok {
			loss += l
			n++
		}
	}
	reports := make([]rtcp.Packet, 0, len(subs))
	for _, dt := range subs {
		if sr := dt.senderReport(now); sr != nil {
			reports = append(reports, sr)
		}
		if l, ok := dt.lossFraction(); ok {
			loss += l
			n++
		}
	}
	if len(reports) > 0 {
		if err := p.sendPC().WriteRTCP(reports); err != nil {
			p.log.Trace().Err(err).Msg("failed to send sender reports")
		}
	}
	p.allocateBandwidth(subs, now)
	p.flushMetricsOf(subs, pubs)
	p.refreshTokenIfDue(now)

	q, score := livekit.ConnectionQuality_EXCELLENT, float32(5)
	if n > 0 {
		avg := loss / float64(n)
		switch {
		case avg > 0.10:
			q, score = livekit.ConnectionQuality_POOR, 2
		case avg > 0.03:
			q, score = livekit.ConnectionQuality_GOOD, 3.5
		default:
			score = float32(5 - avg*40)
		}
	}
	p.quality.Store(int32(q))
	p.score.Store(math.Float32bits(score))
}

func (p *Participant) connectionQuality() *livekit.ConnectionQualityInfo {
	return &livekit.ConnectionQualityInfo{
		ParticipantSid: p.sid,
		Quality:        livekit.ConnectionQuality(p.quality.Load()),
		Score:          math.Float32frombits(p.score.Load()),
	}
}

// allocateBandwidth caps the simulcast layer of each video downtrack so
// their sum fits the subscriber's REMB estimate.
//
// A browser's receive-side estimate stays near 1.5 times what it receives,
// so a subscriber held on a low layer could never earn a higher one from the
// estimate alone (we send no padding probes). When a downtrack wants more
// than the estimate allows and the link is clean, it is therefore moved one
// layer up on trial: the browser's estimate then grows with the traffic if
// the link can carry it, and the trial is kept; a falling estimate or loss
// ends it, and the next trial waits longer (probeBackoff). Runs on the
// participant's tick only, which owns the probe fields of its downtracks.
func (p *Participant) allocateBandwidth(subs []*downTrack, now time.Time) {
	at := p.rembAt.Load()
	if at == 0 || now.Sub(time.Unix(0, at)) > 5*time.Second {
		for _, dt := range subs {
			dt.probe = probeState{layer: -1}
			dt.setBandwidthCap(maxLayers - 1)
		}
		return
	}
	remb := float64(p.remb.Load())
	budget := remb
	for _, dt := range subs {
		if dt.track.kind == webrtc.RTPCodecTypeAudio {
			budget -= float64(dt.track.bitrate(0))
		}
	}
	probing := false
	for _, dt := range subs {
		probing = probing || dt.probe.layer >= 0
	}
	for _, dt := range subs {
		if dt.track.kind != webrtc.RTPCodecTypeVideo {
			continue
		}
		want := dt.preferredLayer()
		cur := dt.bweCap.Load()
		layer := int32(-1)
		for l := want; l >= 0; l-- {
			br := dt.track.bitrate(int(l))
			if br == 0 && !dt.track.layerLive(int(l)) {
				continue
			}
			// Hysteresis: going up needs 10 % headroom, staying tolerates
			// an estimate 20 % short, so an estimate near a layer's rate
			// does not flap between layers (each switch costs a keyframe).
			need := float64(br) * 1.1
			if l <= cur {
				need = float64(br) * 0.8
			}
			if need <= budget || l == dt.track.lowestLiveLayer() {
				layer = l
				break
			}
		}
		if layer < 0 {
			layer = 0
		}
		layer, probing = dt.probeUp(layer, want, remb, now, probing)
		budget -= float64(dt.track.bitrate(int(layer)))
		dt.setBandwidthCap(layer)
	}
}

// probeState is a downtrack's trial of a layer above the bandwidth estimate.
type probeState struct {
	layer   int32 // layer on trial, -1 none
	start   time.Time
	remb    float64 // estimate when the trial started
	next    time.Time
	backoff time.Duration
}

const (
	probeHold       = 15 * time.Second // a trial lasts at most this long
	probeMinBackoff = 5 * time.Second
	probeMaxBackoff = 2 * time.Minute
	probeMaxLoss    = 0.02
)

// probeUp returns the layer to forward given the layer the estimate allows:
// the trial layer while a trial runs, a new trial one layer up when the link
// is clean and no other trial runs, else fits.
func (dt *downTrack) probeUp(fits, want int32, remb float64, now time.Time, probing bool) (int32, bool) {
	ps := &dt.probe
	loss, _ := dt.lossFraction()
	if ps.layer >= 0 {
		switch {
		case fits >= ps.layer:
			// The estimate caught up: the trial succeeded.
			ps.layer, ps.backoff = -1, 0
			return fits, probing
		case now.Sub(ps.start) < probeHold && remb >= 0.85*ps.remb && loss <= probeMaxLoss && ps.layer <= want:
			return ps.layer, true
		default:
			ps.layer = -1
			ps.backoff = min(max(2*ps.backoff, probeMinBackoff), probeMaxBackoff)
			ps.next = now.Add(ps.backoff)
			return fits, probing
		}
	}
	if probing || fits >= want || now.Before(ps.next) || loss > probeMaxLoss || dt.current.Load() != fits {
		return fits, probing
	}
	for l := fits + 1; l <= want; l++ {
		if dt.track.layerLive(int(l)) {
			ps.layer, ps.start, ps.remb = l, now, remb
			return l, true
		}
	}
	return fits, probing
}

func (p *Participant) flushMetricsOf(subs []*downTrack, pubs []*publishedTrack) {
	m := p.s.metrics
	for _, dt := range subs {
		pk, by, nk, rt, direct, stripped := dt.takeCounters()
		m.directOut.Add(float64(direct))
		m.trailersStripped.Add(float64(stripped))
		m.packetsOut.Add(float64(pk))
		m.bytesOut.Add(float64(by))
		m.nacks.Add(float64(nk))
		m.retransmits.Add(float64(rt))
	}
	for _, t := range pubs {
		pk, by, lost, plis, direct := t.takeCounters()
		m.directIn.Add(float64(direct))
		for i, n := range pk {
			if n > 0 {
				m.packetsIn.WithLabelValues(t.layerLabel(i)).Add(float64(n))
			}
		}
		m.bytesIn.Add(float64(by))
		m.packetsLost.Add(float64(lost))
		m.plis.Add(float64(plis))
	}
}

// setSendTrack records that the subscriber gets dt with ssrc.
func (p *Participant) setSendTrack(ssrc uint32, dt *downTrack) {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	if p.sendSSRCs == nil {
		p.sendSSRCs = map[uint32]*downTrack{}
	}
	p.sendSSRCs[ssrc] = dt
}

// removeSendTrack forgets ssrc if it is still dt's.
func (p *Participant) removeSendTrack(ssrc uint32, dt *downTrack) {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	if p.sendSSRCs[ssrc] == dt {
		delete(p.sendSSRCs, ssrc)
	}
}

// sendTrack returns the bound downtrack with ssrc, or nil.
func (p *Participant) sendTrack(ssrc uint32) *downTrack {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	return p.sendSSRCs[ssrc]
}
