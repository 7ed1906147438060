package bridge

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
)

// association is the relay of one room between this node and one peer.
//
// worker() owns the maps (remotes, inTracks, out) and runs every control
// message and every local event in order; the media paths (sinks, read
// loops, RTCP loops) only touch atomics. Every goroutine is counted in wg
// (worker in workerWG) and close waits for them.
type association struct {
	b      *Bridge
	room   string
	peer   string
	dialer bool
	log    zerolog.Logger
	rr     *sfu.RelayRoom
	// pr is set for the association of a peered deployment (peer.go).
	pr *peerRole

	api *webrtc.API
	// keys captures the DTLS keying material for the relay's SRTP
	// (srtp.go); isServer: this side was the DTLS server.
	keys     sfu.DTLSKeys
	isServer atomic.Bool
	// backedUp is set once the peer left maxControlBacklog unread: the
	// association is failing, and nothing more is queued on it.
	backedUp atomic.Bool
	srtpOnce sync.Once
	// sock carries the association's ICE, DTLS, SCTP and media: the
	// node's relay socket, or its own when it dialled (ownSock).
	sock    *relaySocket
	ownSock bool
	// dst is the selected pair's remote address (nil: none yet).
	dst atomic.Pointer[netip.AddrPort]
	// crypto is set once the SRTP keys are derived.
	crypto atomic.Pointer[relayCrypto]
	// streams (receivers) and senders by SSRC, for the socket's read
	// loop; copies published by the worker.
	streams atomic.Pointer[map[uint32]*recvStream]
	senders atomic.Pointer[map[uint32]*relaySender]
	// rtx are the read loop's buffers for retransmissions.
	rtx      rtxBuffers
	gatherer *webrtc.ICEGatherer
	ice      *webrtc.ICETransport
	dtls     *webrtc.DTLSTransport
	sctp     *webrtc.SCTPTransport
	dcMu     sync.Mutex
	dc       *webrtc.DataChannel

	open      chan struct{} // closed when the control channel is open
	openOnce  sync.Once
	done      chan struct{}
	closeOnce sync.Once
	startErr  atomic.Pointer[error]
	wg        sync.WaitGroup
	workerWG  sync.WaitGroup

	qmu     sync.Mutex
	queue   []func()
	qnotify chan struct{}
	// grantPoke wakes watchPeerGrant (peer_watch.go).
	grantPoke chan struct{}

	// Data tracks of our participants the peer wants (by sid), and each
	// participant's handles' sids from the infos sent: a packet crosses
	// only when its track is wanted. Read per packet on the publisher's
	// goroutine, so under dtMu, not the worker's.
	dtMu     sync.Mutex
	dtWanted map[string]bool
	dtSids   map[string]map[uint16]string // by identity
	dtKnown  map[string]bool              // the sids in dtSids: only these can be wanted

	// owned by worker
	remotes   map[string]*remotePart // by identity
	inTracks  map[string]*inTrack    // by track sid
	receivers []*recvStream
	out       map[string]*outTrack // by track sid
	// peerHeld: on the authority's side of a peer room, the layers the
	// peer wants of tracks none of its participants may receive (the
	// publisher's subscription permission), by sid; sent once a
	// permission or a participant lets one of them in (holdPeerWant, peer.go)
	peerHeld map[string]uint8
	// dtHeld: the same for data tracks the peer wants.
	dtHeld    map[string]bool
	bySSRC    map[uint32]*relaySender // our streams' SSRCs
	unobserve func()

	stats linkCounters
	// outSIDs are the track sids in out (copied by the worker on every
	// change), for counting copies per track across associations.
	outSIDs atomic.Pointer[[]string]
	// started is when the association was set up; rateOut and rateIn
	// turn its byte counters into the bitrates of the peering status.
	started         time.Time
	rateOut, rateIn rateMeter

	// lossEvery > 0 drops every lossEvery-th video packet sent (not
	// retransmissions): a lossy IX link for tests (this kernel has no netem).
	lossEvery atomic.Uint32
	lossN     atomic.Uint32
	// recvHook, when set, sees every relayed packet received (benchmarks).
	recvHook atomic.Pointer[func(layer int, pkt []byte)]
}

// remotePart is a participant of the peer injected here.
type remotePart struct {
	rp      *sfu.RemoteParticipant
	version uint32
	tracks  map[string]bool // live track sids
}

func (b *Bridge) settingEngine(a *association) webrtc.SettingEngine {
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEUDPMux(a.sock.mux)
	a.keys.Hook(&se)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	if ip := b.ip; ip != nil {
		se.SetIPFilter(func(x net.IP) bool { return x.Equal(ip) })
	}
	// A dead peer is noticed within about 3 s (issue 9: the others drop
	// its participants within ~3 s).
	se.SetICETimeouts(time.Second, 2*time.Second, 250*time.Millisecond)
	se.SetSCTPMaxMessageSize(maxControlMessage)
	return se
}

// newAssociation prepares the transports and gathers candidates; nonce
// is the offer's when answering.
func (b *Bridge) newAssociation(room, peer string, dialer bool, nonce string, pr *peerRole) (*association, *signal, error) {
	rr, err := b.sfu.RelayRoom(room, true)
	if err != nil {
		return nil, nil, err
	}
	a := &association{
		b: b, room: room, peer: peer, dialer: dialer, rr: rr, pr: pr, started: time.Now(), sock: b.sock,
		log:       b.log.With().Str("lk_room", room).Str("peer_node_id", peer).Logger(),
		open:      make(chan struct{}),
		done:      make(chan struct{}),
		qnotify:   make(chan struct{}, 1),
		grantPoke: make(chan struct{}, 1),
		remotes:   map[string]*remotePart{},
		dtWanted:  map[string]bool{},
		dtSids:    map[string]map[uint16]string{},
		dtKnown:   map[string]bool{},
		inTracks:  map[string]*inTrack{},
		out:       map[string]*outTrack{},
		peerHeld:  map[string]uint8{},
		dtHeld:    map[string]bool{},
		bySSRC:    map[uint32]*relaySender{},
	}
	a.publishStreams()
	a.publishSenders()
	if dialer {
		// All associations between two nodes would share one 5-tuple on
		// the node's socket (socket.go).
		if a.sock, err = newRelaySocket(b.ip, 0, b.cfg.TestLinkDelay, &b.drops); err != nil {
			return nil, nil, err
		}
		a.ownSock = true
	}
	a.api = webrtc.NewAPI(webrtc.WithSettingEngine(b.settingEngine(a)))
	api := a.api
	if loss := b.cfg.TestLinkLoss; loss > 0 {
		a.lossEvery.Store(uint32(math.Round(1 / loss)))
	}
	if a.gatherer, err = api.NewICEGatherer(webrtc.ICEGatherOptions{}); err != nil {
		a.closeSocket()
		return nil, nil, err
	}
	a.ice = api.NewICETransport(a.gatherer)
	if a.dtls, err = api.NewDTLSTransport(a.ice, nil); err != nil {
		_ = a.gatherer.Close()
		a.closeSocket()
		return nil, nil, err
	}
	a.ice.OnSelectedCandidatePairChange(a.onSelectedPair)
	a.sctp = api.NewSCTPTransport(a.dtls)
	a.ice.OnConnectionStateChange(func(s webrtc.ICETransportState) {
		if s == webrtc.ICETransportStateFailed {
			a.log.Warn().Msg("relay association lost")
			b.fail(a)
		}
	})
	a.dtls.OnStateChange(func(s webrtc.DTLSTransportState) {
		if s == webrtc.DTLSTransportStateClosed || s == webrtc.DTLSTransportStateFailed {
			b.fail(a) // the peer closed the association
		}
	})
	if !dialer {
		a.sctp.OnDataChannel(a.setDataChannel)
	}
	a.workerWG.Add(1)
	go a.worker()
	if b.cfg.MaxBitrate > 0 {
		// Layer bitrates change: re-fit the budget every second.
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-a.done:
					return
				case <-tick.C:
					a.post(a.allocate)
				}
			}
		}()
	}
	if pr != nil && pr.authority {
		a.wg.Add(1)
		go a.watchPeerGrant()
	}
	// The room closing here (DeleteRoom, timeouts) ends its relay.
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		select {
		case <-rr.Done():
			b.fail(a)
		case <-a.done:
		}
	}()

	gathered := make(chan struct{})
	var once sync.Once
	a.gatherer.OnLocalCandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			once.Do(func() { close(gathered) })
		}
	})
	fail := func(err error) (*association, *signal, error) {
		a.close()
		return nil, nil, err
	}
	if err := a.gatherer.Gather(); err != nil {
		return fail(err)
	}
	select {
	case <-gathered:
	case <-time.After(b.cfg.ConnectTimeout):
		return fail(ErrTimeout)
	}
	sig := &signal{Version: signalVersion, From: b.cfg.NodeID, To: peer, Room: room, TimeMs: time.Now().UnixMilli(), Nonce: nonce}
	if sig.Nonce == "" {
		sig.Nonce = newNonce()
	}
	if sig.Candidates, err = a.gatherer.GetLocalCandidates(); err != nil {
		return fail(err)
	}
	if sig.ICE, err = a.gatherer.GetLocalParameters(); err != nil {
		return fail(err)
	}
	if sig.DTLS, err = a.dtls.GetLocalParameters(); err != nil {
		return fail(err)
	}
	// What we accept, said explicitly: before the association exists
	// pion reports 0, which the peer reads as 64 KiB, and control
	// messages between that and maxControlMessage would not cross.
	sig.SCTP = webrtc.SCTPCapabilities{MaxMessageSize: maxControlMessage}
	return a, sig, nil
}

// startAsync connects to the peer described by remote in the background.
func (a *association) startAsync(remote *signal) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.start(remote); err != nil {
			select {
			case <-a.done:
			default:
				a.log.Warn().Err(err).Msg("failed to start relay association")
				a.startErr.Store(&err)
				a.b.fail(a)
			}
		}
	}()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		select {
		case <-a.open:
		case <-a.done:
		case <-time.After(a.b.cfg.ConnectTimeout):
			a.log.Warn().Msg("relay association did not connect in time")
			a.b.fail(a)
		}
	}()
}

func (a *association) start(remote *signal) error {
	role := webrtc.ICERoleControlled
	if a.dialer {
		role = webrtc.ICERoleControlling
	}
	if err := a.ice.SetRemoteCandidates(remote.Candidates); err != nil {
		return err
	}
	if err := a.ice.Start(nil, remote.ICE, &role); err != nil {
		return err
	}
	if err := a.dtls.Start(remote.DTLS); err != nil {
		return err
	}
	if _, _, _, ok := a.keys.ServerHello(); ok {
		// The DTLS server knows all now; the client once told (msgSRTP,
		// sent first on the control channel: send).
		a.isServer.Store(true)
		if err := a.deriveKeys(false); err != nil {
			return err
		}
	}
	if err := a.sctp.Start(remote.SCTP); err != nil {
		return err
	}
	if a.dialer {
		dc, err := a.api.NewDataChannel(a.sctp, &webrtc.DataChannelParameters{Label: "gxconf-relay", Ordered: true})
		if err != nil {
			return err
		}
		a.setDataChannel(dc)
	}
	return nil
}

func (a *association) setDataChannel(dc *webrtc.DataChannel) {
	a.dcMu.Lock()
	if a.dc != nil {
		a.dcMu.Unlock()
		_ = dc.Close()
		return
	}
	a.dc = dc
	a.dcMu.Unlock()
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		m, err := parseMessage(msg.Data)
		if err != nil {
			a.log.Debug().Err(err).Msg("dropping control message")
			return
		}
		a.post(func() { a.handle(m) })
	})
	dc.OnOpen(func() {
		a.openOnce.Do(func() {
			a.post(a.onOpen)
			close(a.open)
		})
	})
}

// wait blocks until the association is open, failed or ctx ends.
func (a *association) wait(ctx context.Context) error {
	select {
	case <-a.open:
		return nil
	case <-a.done:
		if e := a.startErr.Load(); e != nil {
			return *e
		}
		return ErrClosed
	case <-ctx.Done():
		return ErrTimeout
	}
}

// closed tells whether the association is closing or closed.
func (a *association) closed() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// isOpen tells whether the association is connected (its control channel
// opened).
func (a *association) isOpen() bool {
	select {
	case <-a.open:
		return true
	default:
		return false
	}
}

// post queues f for the worker.
func (a *association) post(f func()) {
	a.qmu.Lock()
	a.queue = append(a.queue, f)
	a.qmu.Unlock()
	select {
	case a.qnotify <- struct{}{}:
	default:
	}
}

func (a *association) worker() {
	defer a.workerWG.Done()
	defer a.cleanup()
	for {
		select {
		case <-a.done:
			return
		case <-a.qnotify:
		}
		a.qmu.Lock()
		q := a.queue
		a.queue = nil
		a.qmu.Unlock()
		for _, f := range q {
			select {
			case <-a.done:
				return
			default:
			}
			f()
		}
	}
}

// close tears the association down; never call it from its goroutines
// (use Bridge.fail).
func (a *association) close() {
	a.closeOnce.Do(func() {
		// Tell the peer at once rather than letting it wait for ICE to
		// fail; give SCTP a moment to deliver it.
		a.send(&message{Type: msgBye})
		a.dcMu.Lock()
		dc := a.dc
		a.dcMu.Unlock()
		if dc != nil {
			deadline := time.Now().Add(200 * time.Millisecond)
			for dc.BufferedAmount() > 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
		close(a.done)
		a.workerWG.Wait()
		if dc != nil {
			_ = dc.Close()
		}
		_ = a.sctp.Stop()
		_ = a.dtls.Stop()
		_ = a.ice.Stop()
		_ = a.gatherer.Close()
		a.closeSocket()
		a.wg.Wait()
		st := a.stats.snapshot()
		a.log.Info().Uint64("video_sent", st.SentPackets[0]+st.SentPackets[1]+st.SentPackets[2]).
			Uint64("video_received", st.RecvPackets[0]+st.RecvPackets[1]+st.RecvPackets[2]).
			Uint64("nacks_out", st.NACKsOut).Uint64("retransmits", st.Retransmits).
			Uint64("plis_in", st.PLIsIn).Uint64("plis_out", st.PLIsOut).Msg("relay association closed")
	})
}

// closeSocket stops routing media to the association and closes its own
// socket, if it has one.
func (a *association) closeSocket() {
	a.sock.route(a, netip.AddrPort{})
	if a.ownSock {
		a.sock.close()
	}
}

// cleanup runs on the worker when the association ends: the peer's
// participants leave this node, our sinks detach, senders and receivers
// stop (their loops end).
func (a *association) cleanup() {
	if a.unobserve != nil {
		a.unobserve()
	}
	for _, ot := range a.out {
		ot.stop()
	}
	a.receivers = nil
	a.publishStreams()
	for id, r := range a.remotes {
		r.rp.Close(livekit.DisconnectReason_CONNECTION_TIMEOUT)
		delete(a.remotes, id)
	}
}

// sendLimit is the largest control message the peer accepts: what it
// advertised, at most maxControlMessage.
func (a *association) sendLimit() int {
	if n := a.sctp.GetCapabilities().MaxMessageSize; n > 0 {
		return min(int(n), maxControlMessage)
	}
	return maxControlMessage
}

// mustSend sends a message the peer's state depends on (a participant
// and its permission): if it cannot go, the association fails, and the
// relink sends the whole state again, instead of the peer keeping an
// older one (a wider permission) unnoticed.
func (a *association) mustSend(m *message) {
	if err := a.send(m); err != nil {
		a.log.Warn().Err(err).Str("type", m.Type).Msg("Failed to send a relay control message the peer needs; relinking")
		a.b.fail(a)
	}
}

// send writes a control message to the peer.
func (a *association) send(m *message) error {
	b, err := m.marshal()
	if err != nil {
		return err
	}
	a.dcMu.Lock()
	dc := a.dc
	a.dcMu.Unlock()
	if dc == nil {
		return nil // not open yet: onOpen sends the state
	}
	if a.backedUp.Load() {
		return errBackedUp
	}
	if n := dc.BufferedAmount(); n+uint64(len(b)) > maxControlBacklog {
		// The peer node does not read (or far slower than we send): rather
		// than hold its messages without bound, the association fails and
		// the relink sends the whole state again.
		if a.backedUp.CompareAndSwap(false, true) {
			a.b.backlogFailed.Add(1)
			a.log.Warn().Uint64("buffered_bytes", n).Msg("Peer node does not take its relay control messages; closing the link")
			a.b.fail(a)
		}
		return errBackedUp
	}
	if a.isServer.Load() {
		// The client needs the server's Hello before anything else.
		a.srtpOnce.Do(func() {
			random, suite, profile, _ := a.keys.ServerHello()
			sm, err := (&message{Type: msgSRTP, Data: random, Suite: suite, Profile: profile}).marshal()
			if err == nil {
				err = dc.Send(sm)
			}
			if err != nil {
				a.log.Debug().Err(err).Msg("failed to send control message")
			}
		})
	}
	if err := dc.Send(b); err != nil {
		a.log.Debug().Err(err).Msg("failed to send control message")
		return err
	}
	return nil
}

// onOpen starts observing the room and sends its local participants.
func (a *association) onOpen() {
	a.log.Info().Msg("relay association open")
	a.unobserve = a.rr.Observe(a)
	for _, info := range a.rr.LocalParticipants() {
		a.sendParticipant(info)
	}
}

// ParticipantChanged implements sfu.RelayObserver.
func (a *association) ParticipantChanged(info *livekit.ParticipantInfo) {
	a.post(func() { a.sendParticipant(info) })
}

// RoomMetadata implements sfu.RelayObserver.
func (a *association) RoomMetadata(md string) {
	a.post(func() { a.send(&message{Type: msgRoomMeta, Data: []byte(md)}) })
}

// maxLossyBacklog bounds what the control channel may hold unsent when
// lossy data is to be relayed: beyond it (the peer node reads slower than
// a publisher sends), _lossy DataPackets and data track packets are dropped
// and counted, as a subscriber's own lossy channel drops them, instead of
// queuing without bound. Reliable data and control always go. A variable
// only so that a test can lower it.
var maxLossyBacklog uint64 = 1 << 20

// maxControlBacklog bounds what a link's control channel may hold unsent
// (control, reliable data, lossy data within maxLossyBacklog): a message
// that would take it beyond fails the association, as the SFU bounds a
// client's reliable backlog. A variable only so that a test can lower it.
var maxControlBacklog uint64 = 16 << 20

// errBackedUp: the peer node did not take what was sent before.
var errBackedUp = errors.New("relay control channel backed up")

// lossyBackedUp reports whether lossy data must be dropped now (and counts it).
func (a *association) lossyBackedUp() bool {
	a.dcMu.Lock()
	dc := a.dc
	a.dcMu.Unlock()
	if dc == nil || dc.BufferedAmount() <= maxLossyBacklog {
		return false
	}
	a.b.lossyDropped.Add(1)
	return true
}

// DataPacket implements sfu.RelayObserver.
func (a *association) DataPacket(label string, data []byte, dests []string) {
	if label == "_lossy" && a.lossyBackedUp() {
		return
	}
	d := bytes.Clone(data)
	ds := append([]string(nil), dests...)
	a.post(func() {
		if a.pr != nil && len(ds) > 0 {
			// Another deployment gets only what is addressed to its
			// participants here (the worker owns remotes).
			if d, ds = a.peerData(d, ds); d == nil {
				return
			}
		}
		a.send(&message{Type: msgData, Label: label, Data: d, Dests: ds})
	})
}

// peerData narrows an addressed data packet for a peer deployment: to the
// destinations that are participants the peer announced here, written
// into the packet too (the others' identities and sids are ours). It
// returns nil when none is: private messages, RPC calls and keys sent to
// our own participants never leave the deployment. Worker only.
func (a *association) peerData(data []byte, dests []string) ([]byte, []string) {
	theirs := make([]string, 0, len(dests))
	for _, id := range dests {
		if a.remotes[id] != nil {
			theirs = append(theirs, id)
		}
	}
	if len(theirs) == 0 {
		return nil, nil
	}
	dp := &livekit.DataPacket{}
	if err := proto.Unmarshal(data, dp); err != nil {
		return nil, nil
	}
	dp.DestinationIdentities = theirs
	if u := dp.GetUser(); u != nil {
		u.DestinationIdentities, u.DestinationSids = theirs, nil
	}
	out, err := proto.Marshal(dp)
	if err != nil {
		return nil, nil
	}
	return out, theirs
}

// DataTrackPacket implements sfu.RelayObserver.
func (a *association) DataTrackPacket(identity string, packet []byte) {
	if len(packet) < 4 {
		return
	}
	a.dtMu.Lock()
	wanted := a.dtWanted[a.dtSids[identity][binary.BigEndian.Uint16(packet[2:4])]]
	a.dtMu.Unlock()
	if !wanted || a.lossyBackedUp() {
		return // nobody there subscribes
	}
	d := bytes.Clone(packet)
	a.post(func() { a.send(&message{Type: msgData, Label: labelDataTrack, Identity: identity, Data: d}) })
}

func (a *association) sendParticipant(info *livekit.ParticipantInfo) {
	m := &message{Type: msgParticipant, info: info}
	if info.GetState() != livekit.ParticipantInfo_DISCONNECTED {
		// Read now, not when the change was seen: messages leave in order,
		// so the peer never applies an older permission after a newer.
		m.Perm = permToWire(a.rr.SubscriptionPermission(info.GetIdentity()))
	}
	for _, t := range info.GetTracks() {
		lt := a.rr.LocalTrack(t.GetSid())
		if lt == nil {
			continue
		}
		c := lt.Codec()
		m.Codecs = append(m.Codecs, trackCodec{
			SID: t.GetSid(), MimeType: c.MimeType, ClockRate: c.ClockRate, Channels: c.Channels,
			Fmtp: c.SDPFmtpLine, AudioLevel: c.AudioLevelExtID,
		})
	}
	live := map[string]bool{}
	if info.GetState() != livekit.ParticipantInfo_DISCONNECTED {
		for _, t := range info.GetTracks() {
			live[t.GetSid()] = true
		}
	}
	a.noteDataTracks(info)
	for sid, ot := range a.out {
		if ot.identity == info.GetIdentity() && !live[sid] {
			// The track is gone here: stop relaying it (later packets
			// of its SSRCs are dropped as unknown there).
			ot.stop()
			delete(a.out, sid)
		}
	}
	a.countTracks()
	if fitPerm(m, a.sendLimit()) {
		a.log.Warn().Str("lk_identity", info.GetIdentity()).
			Msg("A participant's subscription permission is too large for the relay: the other node lets nobody subscribe to its tracks")
	}
	a.mustSend(m)
	a.recheckPeerWants() // the permission may have changed
}

// noteDataTracks records the data tracks of one of our participants as
// sent to the peer: their handles' sids (a packet names its handle), and
// which sids the peer may want; a track that ended is wanted no more.
func (a *association) noteDataTracks(info *livekit.ParticipantInfo) {
	a.dtMu.Lock()
	id := info.GetIdentity()
	handles, live := map[uint16]string{}, map[string]bool{}
	if info.GetState() != livekit.ParticipantInfo_DISCONNECTED {
		for _, dt := range info.GetDataTracks() {
			handles[uint16(dt.GetPubHandle())] = dt.GetSid()
			live[dt.GetSid()] = true
		}
	}
	for _, sid := range a.dtSids[id] {
		if !live[sid] { // the track ended: wanted no more
			delete(a.dtKnown, sid)
			delete(a.dtWanted, sid)
		}
	}
	for sid := range live {
		a.dtKnown[sid] = true
	}
	if len(handles) > 0 {
		a.dtSids[id] = handles
	} else {
		delete(a.dtSids, id)
	}
	a.dtMu.Unlock()
}

// handle runs one control message from the peer.
func (a *association) handle(m *message) {
	if a.pr != nil && a.pr.authority && !a.peerMayAsk(m) {
		return
	}
	switch m.Type {
	case msgParticipant:
		a.onParticipant(m)
	case msgWant:
		a.onWant(m.SID, m.Mask)
	case msgDataWant:
		a.onDataWant(m.SID, m.Mask == 1)
	case msgStream:
		a.onStream(m)
	case msgStreamReady:
		if ot := a.out[m.SID]; ot != nil {
			ot.ready(m.Layer)
		}
	case msgData:
		a.stats.dataIn.Add(1)
		if m.Label != labelDataTrack {
			a.rr.DeliverData(m.Label, m.Data, m.Dests)
		} else if a.remotes[m.Identity] != nil {
			// Only for a participant this association relays: a node
			// cannot speak for participants another relays here.
			a.rr.DeliverDataTrack(m.Identity, m.Data)
		}
	case msgRemove:
		a.rr.RemoveParticipant(m.Identity, livekit.DisconnectReason(m.Reason))
	case msgMute:
		a.rr.MuteTrack(m.Identity, m.SID)
	case msgBye:
		a.b.fail(a)
	case msgSRTP:
		a.onSRTP(m)
	case msgRoomMeta:
		a.rr.SetMetadata(string(m.Data))
	case msgUpdate:
		i := m.info
		a.rr.UpdateParticipant(i.GetIdentity(), i.GetName(), i.GetMetadata(), i.GetAttributes(), i.GetPermission())
	}
}

func (a *association) onParticipant(m *message) {
	info := m.info
	id := info.GetIdentity()
	r := a.remotes[id]
	if a.pr != nil && a.pr.authority {
		// A new sid is a new session: it needs a grant as a new identity does.
		if !a.admitPeerParticipant(m, r == nil || r.rp.SID() != info.GetSid()) {
			return
		}
		defer a.recheckPeerWants() // who is there decides what may cross
	}
	if info.GetState() == livekit.ParticipantInfo_DISCONNECTED {
		if a.pr != nil && a.pr.authority {
			a.pokeGrant() // was it the last user with a grant?
		}
		if r != nil && info.GetSid() == r.rp.SID() {
			delete(a.remotes, id)
			for sid := range r.tracks {
				a.dropInTrack(sid)
			}
			r.rp.Close(info.GetDisconnectReason())
		}
		return
	}
	if r != nil && r.rp.SID() != info.GetSid() {
		// A new session of the identity replaced the old one there.
		delete(a.remotes, id)
		for sid := range r.tracks {
			a.dropInTrack(sid)
		}
		r.rp.Close(livekit.DisconnectReason_DUPLICATE_IDENTITY)
		r = nil
	}
	if r == nil {
		if len(a.remotes) >= maxRemoteParticipants {
			a.b.countRefused(a.label(), refusedParticipant)
			a.log.Warn().Str("peer", a.label()).Str("lk_identity", id).Int("limit", maxRemoteParticipants).
				Msg("Ignored a participant the peer announced: the association has as many remote participants as allowed")
			return
		}
		rp, err := a.rr.AddRemoteParticipant(info, sfu.RemoteHooks{
			OnRemoved: func(reason livekit.DisconnectReason) {
				a.post(func() {
					if cur := a.remotes[id]; cur != nil && cur.rp.SID() == info.GetSid() {
						delete(a.remotes, id)
						for sid := range cur.tracks {
							a.dropInTrack(sid)
						}
					}
					a.send(&message{Type: msgRemove, Identity: id, Reason: int32(reason)})
					a.recheckPeerWants()
					if a.pr != nil && a.pr.authority {
						a.pokeGrant() // a revocation removes the user
					}
				})
			},
			OnUpdate: func(name, metadata string, attrs map[string]string, perm *livekit.ParticipantPermission) {
				upd := &livekit.ParticipantInfo{Identity: id, Name: name, Metadata: metadata, Attributes: attrs, Permission: perm}
				a.post(func() { a.send(&message{Type: msgUpdate, info: upd}) })
			},
			OnMute: func(sid string, muted bool) {
				if muted {
					a.post(func() { a.send(&message{Type: msgMute, Identity: id, SID: sid}) })
				}
			},
			OnDataWant: func(sid string, wanted bool) {
				m := &message{Type: msgDataWant, SID: sid}
				if wanted {
					m.Mask = 1
				}
				a.post(func() { a.send(m) })
			},
		})
		if err != nil {
			if a.pr != nil && (errors.Is(err, sfu.ErrSidTaken) || errors.Is(err, sfu.ErrIdentityTaken)) {
				// Another deployment names one of ours: it must not
				// receive what is meant for them.
				a.b.countRefused(a.pr.deployment, refusedParticipant)
				a.log.Warn().Err(err).Str("peer", a.label()).Str("lk_identity", id).Str("participant_sid", info.GetSid()).
					Msg("Ignored a participant the peer announced: its identity or sid is another participant's here")
				return
			}
			a.log.Info().Err(err).Str("lk_identity", id).Msg("cannot relay participant")
			return
		}
		r = &remotePart{rp: rp, version: info.GetVersion(), tracks: map[string]bool{}}
		a.remotes[id] = r
	} else {
		if info.GetVersion() <= r.version {
			return // stale
		}
		r.version = info.GetVersion()
		r.rp.Update(info)
	}
	// The permission before the tracks: a track published here is
	// subscribed by this node's auto-subscribers at once. (An unchanged
	// one changes nothing there.)
	r.rp.SetSubscriptionPermission(permFromWire(m.Perm))
	codecs := map[string]trackCodec{}
	for _, c := range m.Codecs {
		codecs[c.SID] = c
	}
	live := map[string]bool{}
	refused := 0
	for _, ti := range info.GetTracks() {
		sid := ti.GetSid()
		live[sid] = true
		if r.tracks[sid] {
			r.rp.SetTrackMuted(sid, ti.GetMuted())
			continue
		}
		c, ok := codecs[sid]
		if !ok {
			live[sid] = false
			continue
		}
		if len(a.inTracks) >= maxInTracks {
			live[sid] = false
			refused++
			continue
		}
		if a.addInTrack(r, ti, c) {
			r.tracks[sid] = true
		}
	}
	if refused > 0 {
		a.b.countRefused(a.label(), refusedTrack)
		a.log.Warn().Str("peer", a.label()).Str("lk_identity", id).Int("tracks", refused).Int("limit", maxInTracks).
			Msg("Ignored tracks the peer announced: the association receives as many tracks as allowed")
	}
	for sid := range r.tracks {
		if !live[sid] {
			delete(r.tracks, sid)
			a.dropInTrack(sid)
			r.rp.UnpublishTrack(sid)
		}
	}
}

// LinkStats are an association's counters.
type LinkStats struct {
	SentPackets, SentBytes [3]uint64 // video sent to the peer, per simulcast layer
	RecvPackets, RecvBytes [3]uint64 // video received from the peer, per layer
	SentAudio, RecvAudio   uint64    // audio packets sent / received
	// SentAudioBytes, RecvAudioBytes are the audio RTP bytes.
	SentAudioBytes, RecvAudioBytes uint64
	// TracksOut, TracksIn count the tracks relayed to / from the peer now:
	// those of which the receiving node wants a layer.
	TracksOut, TracksIn int
	// RTT is the round trip time of the ICE consent checks on the link
	// (0 until measured).
	RTT                   time.Duration
	PLIsIn, PLIsOut       uint64 // keyframe requests received / sent
	NACKsOut, Retransmits uint64 // sequence numbers NACKed / packets resent
	DataIn                uint64 // data packets received
}

type linkCounters struct {
	sentPk, sentBy, recvPk, recvBy [3]atomic.Uint64
	sentAudio, recvAudio           atomic.Uint64
	sentAudioBy, recvAudioBy       atomic.Uint64
	outTracks, inTracks            atomic.Int64
	plisIn, plisOut, nacksOut, rtx atomic.Uint64
	dataIn                         atomic.Uint64
}

func (c *linkCounters) snapshot() LinkStats {
	var s LinkStats
	for i := 0; i < 3; i++ {
		s.SentPackets[i], s.SentBytes[i] = c.sentPk[i].Load(), c.sentBy[i].Load()
		s.RecvPackets[i], s.RecvBytes[i] = c.recvPk[i].Load(), c.recvBy[i].Load()
	}
	s.PLIsIn, s.PLIsOut, s.NACKsOut, s.Retransmits = c.plisIn.Load(), c.plisOut.Load(), c.nacksOut.Load(), c.rtx.Load()
	s.DataIn = c.dataIn.Load()
	s.SentAudio, s.RecvAudio = c.sentAudio.Load(), c.recvAudio.Load()
	s.SentAudioBytes, s.RecvAudioBytes = c.sentAudioBy.Load(), c.recvAudioBy.Load()
	s.TracksOut, s.TracksIn = int(c.outTracks.Load()), int(c.inTracks.Load())
	return s
}
