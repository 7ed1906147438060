package sfu

// Signal request handling of a participant: the read loop, SDP
// negotiation of both connections, trickle, metadata and subscription
// requests.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
)

// readLoop reads signal requests from ws until it ends. end tells whether
// the session ends with reason: a leave, a malformed request, or a lost
// socket when it cannot be resumed (signalLost). While the participant's
// session descriptions have used up their budget, it reads the next
// request only once the debt is repaid (negbudget.go).
func (p *Participant) readLoop(ctx context.Context, ws *websocket.Conn) (reason livekit.DisconnectReason, end bool) {
	for {
		p.throttleReads(ctx)
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if p.pingSeen.Load() {
			// Clients that ping must keep doing so.
			rctx, cancel = context.WithTimeout(ctx, p.s.cfg.PingTimeout)
		}
		typ, data, err := ws.Read(rctx)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				p.log.Info().Msg("signal ping timeout")
			}
			return livekit.DisconnectReason_SIGNAL_CLOSE, p.signalLost(ws)
		}
		if typ == websocket.MessageText {
			p.sc.json.Store(true)
		}
		req, err := decodeSignalRequest(typ, data)
		if err != nil {
			p.log.Warn().Err(err).Int("len", len(data)).Msg("closing signal connection")
			p.sc.close(websocket.StatusInvalidFramePayloadData, errMalformed.Error())
			return livekit.DisconnectReason_STATE_MISMATCH, true
		}
		if leave := p.handleSignal(req); leave {
			return livekit.DisconnectReason_CLIENT_INITIATED, true
		}
	}
}

// handleSignal processes one request; it returns true on leave.
func (p *Participant) handleSignal(req *livekit.SignalRequest) bool {
	if e := p.log.Trace(); e.Enabled() {
		e.Str("type", fmt.Sprintf("%T", req.Message)).Msg("signal request")
	}
	switch m := req.Message.(type) {
	case *livekit.SignalRequest_Offer:
		if err := p.handleOffer(m.Offer); err != nil {
			p.log.Warn().Err(err).Msg("failed to answer publisher offer")
		}
	case *livekit.SignalRequest_Answer:
		if err := p.handleAnswer(m.Answer); err != nil {
			p.log.Warn().Err(err).Msg("failed to apply subscriber answer")
		}
	case *livekit.SignalRequest_Trickle:
		p.handleTrickle(m.Trickle)
	case *livekit.SignalRequest_AddTrack:
		p.handleAddTrack(m.AddTrack)
	case *livekit.SignalRequest_Mute:
		p.setTrackMuted(m.Mute.Sid, m.Mute.Muted, false)
	case *livekit.SignalRequest_Subscription:
		p.handleSubscription(m.Subscription)
	case *livekit.SignalRequest_SubscriptionPermission:
		p.setSubscriptionPermission(m.SubscriptionPermission)
	case *livekit.SignalRequest_TrackSetting:
		p.handleTrackSetting(m.TrackSetting)
	case *livekit.SignalRequest_Leave:
		return true
	case *livekit.SignalRequest_Ping:
		p.pingSeen.Store(true)
		p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Pong{Pong: time.Now().UnixMilli()}})
	case *livekit.SignalRequest_PingReq:
		p.pingSeen.Store(true)
		p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_PongResp{PongResp: &livekit.Pong{
			LastPingTimestamp: m.PingReq.GetTimestamp(), Timestamp: time.Now().UnixMilli(),
		}}})
	case *livekit.SignalRequest_UpdateMetadata:
		p.handleUpdateMetadata(m.UpdateMetadata)
	case *livekit.SignalRequest_UpdateAudioTrack:
		if len(m.UpdateAudioTrack.GetFeatures()) > maxAudioFeatures {
			p.log.Debug().Int("features", len(m.UpdateAudioTrack.GetFeatures())).Msg("update_audio_track with too many features ignored")
			break
		}
		p.updateTrackInfo(m.UpdateAudioTrack.GetTrackSid(), func(ti *livekit.TrackInfo) {
			ti.AudioFeatures = m.UpdateAudioTrack.GetFeatures()
		})
	case *livekit.SignalRequest_UpdateVideoTrack:
		p.updateTrackInfo(m.UpdateVideoTrack.GetTrackSid(), func(ti *livekit.TrackInfo) {
			ti.Width, ti.Height = m.UpdateVideoTrack.GetWidth(), m.UpdateVideoTrack.GetHeight()
		})
	case *livekit.SignalRequest_PublishDataTrackRequest:
		p.handlePublishDataTrack(m.PublishDataTrackRequest)
	case *livekit.SignalRequest_UnpublishDataTrackRequest:
		p.handleUnpublishDataTrack(m.UnpublishDataTrackRequest)
	case *livekit.SignalRequest_UpdateDataSubscription:
		p.handleDataSubscription(m.UpdateDataSubscription)
	case nil:
		p.log.Debug().Msg("signal request without a known message ignored")
	default:
		// update_layers, sync_state and simulate are accepted and ignored.
	}
	return false
}

// maxMediaSections bounds the media sections of a client's connection: per
// offer and over the connection's life (pion keeps a transceiver for every
// mid it was ever offered, and matching a mid scans them all, so offers
// with fresh mids would cost ever more memory and time). A subscriber in
// single peer connection mode needs a section per track it receives at
// once; 512 is far beyond any call a client can show.
const maxMediaSections = 512

// checkOfferSize refuses an offer that has more media sections than
// maxMediaSections or would take the connection beyond it with mids it has
// not seen. Caller holds ansMu.
func (p *Participant) checkOfferSize(sdp string) error {
	known := map[string]bool{}
	for _, tr := range p.pub.GetTransceivers() {
		known[tr.Mid()] = true
	}
	sections, fresh := 0, 0
	for line := range strings.Lines(sdp) {
		switch {
		case strings.HasPrefix(line, "m="):
			sections++
		case strings.HasPrefix(line, "a=mid:"):
			if !known[strings.TrimSpace(strings.TrimPrefix(line, "a=mid:"))] {
				fresh++
			}
		}
		if sections > maxMediaSections || len(known)+fresh > maxMediaSections {
			p.s.metrics.sdpRefused.WithLabelValues("media_sections").Inc()
			return fmt.Errorf("offer refused: more than %d media sections on the connection", maxMediaSections)
		}
	}
	return nil
}

// maxEarlyOffers bounds the negotiations of a connection before it first
// connects. Until then pion's operation queue waits in the connection's
// start for ICE and DTLS, and every description set meanwhile queues an
// operation holding it, parsed, for when they are done: a client that did
// not connect kept every description it sent in the 30 s it is given to
// connect (40 offers of 900 kB, sent in 5 s, kept 122 MB; answers to the
// subscriber offers its subscription changes brought, 267 MB in 8 s). A
// client negotiates a few times before connecting. Beyond, the client's
// own offer on its publisher connection is not answered, and the server's
// negotiation (a subscriber offer, in single mode the request for the
// client's offer) waits until the connection connects.
const maxEarlyOffers = 8

// checkEarlyOffer refuses an offer on the publisher connection when
// maxEarlyOffers were set on it before it first connected. Caller holds
// ansMu.
func (p *Participant) checkEarlyOffer() error {
	if p.earlyOffers.Load() < maxEarlyOffers || p.pubConnected.Load() {
		return nil
	}
	p.s.metrics.sdpRefused.WithLabelValues("unconnected").Inc()
	return fmt.Errorf("offer refused: %d offers already before the connection connected", maxEarlyOffers)
}

// setOffer sets the client's offer on the publisher connection, counting
// it while the connection has not connected (checkEarlyOffer), and records
// its sections' track ids (recordOfferMids) once the connection took it.
// Caller holds ansMu.
func (p *Participant) setOffer(sdp string) error {
	if err := p.setRemote(p.pub, webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
		return err
	}
	// Only an offer the connection took names its tracks; the client sends
	// on a section once it has the answer, sent after this.
	p.recordOfferMids(sdp)
	if !p.pubConnected.Load() {
		p.earlyOffers.Add(1)
	}
	return nil
}

func (p *Participant) handleOffer(sd *livekit.SessionDescription) error {
	if p.single {
		p.offerMu.Lock()
		defer p.offerMu.Unlock()
		p.releaseOfferLocked() // answers in order
		return p.handleSingleOffer(sd)
	}
	defer p.chargeNegotiation(time.Now())
	unanswered, err := p.answerOffer(sd)
	if unanswered != nil {
		p.answerFailed(unanswered)
	}
	return err
}

// answerOffer sets the client's offer on the publisher connection and
// sends the answer, under ansMu. err: the offer was refused, the
// connection is as it was; unanswered: it was set and could not be
// answered (answerFailed, which runs without ansMu).
func (p *Participant) answerOffer(sd *livekit.SessionDescription) (unanswered, err error) {
	p.ansMu.Lock()
	defer p.ansMu.Unlock()
	if err := p.checkOfferSize(sd.GetSdp()); err != nil {
		return nil, err
	}
	if err := p.checkEarlyOffer(); err != nil {
		return nil, err
	}
	if err := p.setOffer(sd.GetSdp()); err != nil {
		if p.offerStuck() {
			return err, nil
		}
		return nil, err
	}
	p.flushCandidates(livekit.SignalTarget_PUBLISHER)
	answer, err := p.pub.CreateAnswer(nil)
	if err == nil {
		err = p.setLocal(p.pub, answer)
	}
	if err != nil {
		return err, nil
	}
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Answer{Answer: &livekit.SessionDescription{
		Type: "answer", Sdp: answer.SDP, Id: sd.GetId(),
	}}})
	return nil, nil
}

// offerStuck reports whether the publisher connection is left holding an
// offer it could not take: pion commits a remote offer before it reads
// its codecs, mids, ICE credentials and candidates, and returns their
// errors (a payload type without its rtpmap, a section without a mid, no
// ice-ufrag) with the offer set and no way back. The offer is then as
// unanswerable as one CreateAnswer fails on. Caller holds ansMu.
func (p *Participant) offerStuck() bool {
	return p.pub.SignalingState() == webrtc.SignalingStateHaveRemoteOffer
}

// answerFailed ends the session when pion took the client's offer and
// then could not answer it (an offer checkOfferTracks does not recognise
// as Plan B, one pion failed on after taking it (offerStuck), or any
// other cause). pion v4 cannot roll a remote offer back:
// the connection would stay in have-remote-offer and refuse every later
// offer, and the client would not know. It is told to join again (a leave
// with the reconnect action, as livekit-server does on a failed
// negotiation). Called without ansMu.
func (p *Participant) answerFailed(err error) {
	if p.isClosed() || errors.Is(err, webrtc.ErrConnectionClosed) {
		return // closed meanwhile
	}
	p.s.metrics.sdpRefused.WithLabelValues("unanswerable").Inc()
	p.log.Warn().Err(err).Msg("ending the session: its offer was set and could not be answered")
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Leave{Leave: &livekit.LeaveRequest{
		Reason: livekit.DisconnectReason_STATE_MISMATCH, Action: livekit.LeaveRequest_RECONNECT,
	}}})
	p.close(livekit.DisconnectReason_STATE_MISMATCH, false)
}

func (p *Participant) handleAnswer(sd *livekit.SessionDescription) error {
	if p.single {
		return errors.New("unexpected answer: in single peer connection mode the client offers")
	}
	defer p.chargeNegotiation(time.Now())
	p.negMu.Lock()
	stale := sd.GetId() != 0 && sd.GetId() != p.offerID
	p.negMu.Unlock()
	if stale {
		// An answer to an offer a resume superseded (the client echoes
		// offer ids; server-sdk-go sends 0).
		return nil
	}
	err := p.setRemote(p.sub, webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sd.GetSdp()})
	if err == nil {
		p.flushCandidates(livekit.SignalTarget_SUBSCRIBER)
	}
	p.negMu.Lock()
	p.offerInFlight = false
	again := p.negAgain
	p.negAgain = false
	p.negMu.Unlock()
	if again {
		p.negotiate()
	}
	return err
}

// negotiate sends a subscriber offer, or marks one due after the answer
// to the offer in flight. In single mode it asks the client for an offer.
func (p *Participant) negotiate() {
	if p.single {
		p.requestOffer()
		return
	}
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if p.isClosed() {
		return
	}
	if p.offerInFlight {
		p.negAgain = true
		return
	}
	if p.earlySubOffers >= maxEarlyOffers && !p.subConnected.Load() {
		if !p.negDeferred {
			p.log.Info().Int("offers", p.earlySubOffers).Msg("subscriber offer deferred until the subscriber connection connects")
		}
		p.negDeferred = true // negotiateDeferred, once connected
		return
	}
	p.offerLocked()
}

// negotiateDeferred negotiates if a negotiation was put off until the
// connection that needs it connected: the subscriber offer in dual mode,
// the request for the client's offer in single mode (maxEarlyOffers).
func (p *Participant) negotiateDeferred() {
	p.negMu.Lock()
	deferred := p.negDeferred
	p.negDeferred = false
	p.negMu.Unlock()
	if deferred {
		p.negotiate()
	}
}

// offerLocked creates and sends a subscriber offer; negMu is held.
func (p *Participant) offerLocked() {
	var opts *webrtc.OfferOptions
	if p.iceRestart {
		opts = &webrtc.OfferOptions{ICERestart: true}
	}
	offer, err := p.sub.CreateOffer(opts)
	if err == nil {
		err = p.setLocal(p.sub, offer)
	}
	if err != nil {
		if !p.isClosed() && !errors.Is(err, webrtc.ErrConnectionClosed) {
			p.log.Warn().Err(err).Msg("failed to create subscriber offer")
		}
		return
	}
	p.iceRestart = false
	p.offerID++
	p.offerInFlight = true
	if !p.subConnected.Load() {
		p.earlySubOffers++
	}
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Offer{Offer: &livekit.SessionDescription{
		Type: "offer", Sdp: offer.SDP, Id: p.offerID,
	}}})
}

func (p *Participant) pc(target livekit.SignalTarget) *webrtc.PeerConnection {
	if target == livekit.SignalTarget_SUBSCRIBER && !p.single {
		return p.sub
	}
	return p.pub
}

// Bounds on a client's trickled candidates: a browser sends a few per
// network interface and server, each one line of well under 300 bytes. Each
// remote candidate makes the ICE agent send connectivity checks to the
// address it names, so without a bound one signal connection could make the
// SFU probe any number of addresses. maxCandidates also bounds the
// candidates an offer or answer brings (setRemote): pion adds all of a
// description's a=candidate lines, each renegotiation's to the last's.
const (
	maxCandidateInit   = 2048 // bytes of one candidate's JSON
	maxQueuedCandidate = 64   // per connection, before its remote description
	maxCandidates      = 128  // per connection and ICE generation (ufrag); shared by restarts beyond a few (icerestarts.go)
)

// candKey is what tells a remote candidate from another for the bound, as
// pion's ICE agent does: its transport, address, port and type (a
// candidate repeated with another foundation or priority is the same
// one). Something unparsable is its own key.
func candKey(c string) string {
	c = strings.TrimPrefix(strings.TrimSpace(c), "a=")
	f := strings.Fields(strings.TrimPrefix(c, "candidate:"))
	if len(f) < 8 {
		return c
	}
	return strings.ToLower(f[2]) + " " + f[4] + " " + f[5] + " " + f[7]
}

// takeCandidateLocked counts key among target's remote candidates of this
// ICE generation. Caller holds p.mu.
func (p *Participant) takeCandidateLocked(target livekit.SignalTarget, key string) {
	if p.candSeen[target] == nil {
		p.candSeen[target] = map[string]struct{}{}
	}
	p.candSeen[target][key] = struct{}{}
}

// budgetSDPCandidates leaves out of sdp the a=candidate lines beyond the
// room the ICE generation has for more remote candidates (those it took,
// seen, read only, count once more for nothing); it returns the
// description, the keys of the candidates it brings and how many it left
// out.
func budgetSDPCandidates(sdp string, seen map[string]struct{}, room int) (string, []string, int) {
	if !strings.Contains(sdp, "a=candidate:") {
		return sdp, nil, 0
	}
	var b strings.Builder
	b.Grow(len(sdp))
	var taken []string
	fresh := map[string]struct{}{}
	dropped := 0
	for line := range strings.Lines(sdp) {
		if strings.HasPrefix(line, "a=candidate:") {
			key := candKey(line)
			_, old := seen[key]
			_, dup := fresh[key]
			switch {
			case old || dup:
			case len(fresh) >= room:
				dropped++
				continue
			default:
				fresh[key] = struct{}{}
				taken = append(taken, key)
			}
		}
		b.WriteString(line)
	}
	return b.String(), taken, dropped
}

func (p *Participant) handleTrickle(t *livekit.TrickleRequest) {
	if t.GetCandidateInit() == "" {
		return
	}
	if len(t.GetCandidateInit()) > maxCandidateInit {
		p.log.Debug().Int("len", len(t.GetCandidateInit())).Msg("ignoring oversized ice candidate")
		p.s.metrics.candIgnored.WithLabelValues("oversized").Inc()
		return
	}
	var c webrtc.ICECandidateInit
	if err := json.Unmarshal([]byte(t.GetCandidateInit()), &c); err != nil {
		p.log.Debug().Err(err).Msg("ignoring malformed ice candidate")
		p.s.metrics.candIgnored.WithLabelValues("malformed").Inc()
		return
	}
	target := t.GetTarget()
	if target != livekit.SignalTarget_SUBSCRIBER || p.single {
		target = livekit.SignalTarget_PUBLISHER
	}
	if p.single {
		p.releaseOffer() // the client has set its offer (holdOffer)
	}
	pc := p.pc(target)
	p.mu.Lock()
	if pc.RemoteDescription() == nil {
		if len(p.candQueue[target]) >= maxQueuedCandidate {
			p.mu.Unlock()
			p.log.Debug().Str("target", target.String()).Msg("ignoring ice candidate: too many before the session description")
			p.s.metrics.candIgnored.WithLabelValues("limit").Inc()
			return
		}
		p.candQueue[target] = append(p.candQueue[target], c)
		p.mu.Unlock()
		return
	}
	key := candKey(c.Candidate)
	if _, seen := p.candSeen[target][key]; !seen && p.candidateRoomOfGenerationLocked(target) == 0 {
		shared := p.candShared[target]
		p.mu.Unlock()
		p.log.Debug().Str("target", target.String()).Bool("shared", shared).Msg("ignoring ice candidate: too many in this ICE generation")
		p.s.metrics.candIgnored.WithLabelValues(candidateLimitReason(shared)).Inc()
		return
	}
	p.takeCandidateLocked(target, key)
	p.mu.Unlock()
	if err := pc.AddICECandidate(c); err != nil {
		p.log.Debug().Err(err).Msg("failed to add ice candidate")
	}
}

// flushCandidates adds the candidates trickled before target's remote
// description, once it is set, within the room its ICE generation has
// left: they come on top of the description's own.
func (p *Participant) flushCandidates(target livekit.SignalTarget) {
	p.mu.Lock()
	q := p.candQueue[target]
	p.candQueue[target] = nil
	take := q[:0]
	for _, c := range q { // at most maxQueuedCandidate
		key := candKey(c.Candidate)
		if _, seen := p.candSeen[target][key]; !seen && p.candidateRoomOfGenerationLocked(target) == 0 {
			continue
		}
		p.takeCandidateLocked(target, key)
		take = append(take, c)
	}
	shared := p.candShared[target]
	p.mu.Unlock()
	if dropped := len(q) - len(take); dropped > 0 {
		p.log.Info().Int("ignored", dropped).Str("target", target.String()).Bool("shared", shared).Msg("ignoring ice candidates trickled before the session description: too many in this ICE generation")
		p.s.metrics.candIgnored.WithLabelValues(candidateLimitReason(shared)).Add(float64(dropped))
	}
	pc := p.pc(target)
	for _, c := range take {
		if err := pc.AddICECandidate(c); err != nil {
			p.log.Debug().Err(err).Msg("failed to add ice candidate")
		}
	}
}

func (p *Participant) handleUpdateMetadata(m *livekit.UpdateParticipantMetadata) {
	p.mu.Lock()
	if !p.video.GetCanUpdateOwnMetadata() {
		p.mu.Unlock()
		if m.GetRequestId() != 0 {
			p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_RequestResponse{RequestResponse: &livekit.RequestResponse{
				RequestId: m.GetRequestId(), Reason: livekit.RequestResponse_NOT_ALLOWED, Message: "does not have permission to update own metadata",
			}}})
		}
		return
	}
	if field, limit := p.metadataTooLargeLocked(m.GetName(), m.GetMetadata(), m.GetAttributes()); field != "" {
		p.mu.Unlock()
		p.log.Debug().Str("field", field).Msg("metadata update refused: too large")
		if m.GetRequestId() != 0 {
			p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_RequestResponse{RequestResponse: &livekit.RequestResponse{
				RequestId: m.GetRequestId(), Reason: livekit.RequestResponse_LIMIT_EXCEEDED,
				Message: fmt.Sprintf("%s exceeds %d bytes", field, limit),
			}}})
		}
		return
	}
	changed := p.metadataChangesLocked(m.GetName(), m.GetMetadata(), m.GetAttributes())
	if changed {
		p.applyMetadataLocked(m.GetName(), m.GetMetadata(), m.GetAttributes())
	}
	p.mu.Unlock()
	if changed {
		p.publishSelfUpdate() // a repeated update is sent to nobody
	}
	if m.GetRequestId() != 0 {
		p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_RequestResponse{RequestResponse: &livekit.RequestResponse{
			RequestId: m.GetRequestId(), Reason: livekit.RequestResponse_OK,
		}}})
	}
}

// Limits on what a participant's info carries, as livekit-server's
// defaults: every other participant is sent it on each change.
const (
	maxNameLength     = 256
	maxMetadataSize   = 64000
	maxAttributesSize = 64000 // keys and values, after the merge
)

// metadataTooLargeLocked names the field an update would take over its
// limit (and the limit), or returns "": the update is applied whole or
// not at all.
func (p *Participant) metadataTooLargeLocked(name, metadata string, attrs map[string]string) (string, int) {
	if len(name) > maxNameLength {
		return "name", maxNameLength
	}
	if len(metadata) > maxMetadataSize {
		return "metadata", maxMetadataSize
	}
	if len(attrs) == 0 {
		return "", 0
	}
	size := 0
	for k, v := range p.info.Attributes {
		if _, replaced := attrs[k]; !replaced {
			size += len(k) + len(v)
		}
	}
	for k, v := range attrs {
		if v == "" {
			continue // a deletion never refuses an update
		}
		if size += len(k) + len(v); size > maxAttributesSize {
			return "attributes", maxAttributesSize
		}
	}
	return "", 0
}

// metadataChangesLocked tells whether applying the update would change
// the participant's info.
func (p *Participant) metadataChangesLocked(name, metadata string, attrs map[string]string) bool {
	if (name != "" && name != p.info.Name) || (metadata != "" && metadata != p.info.Metadata) {
		return true
	}
	for k, v := range attrs {
		if old, ok := p.info.Attributes[k]; (v == "" && ok) || (v != "" && old != v) {
			return true
		}
	}
	return false
}

// applyMetadataLocked sets non-empty name/metadata and merges attributes
// (an empty value deletes a key), as livekit-server does.
func (p *Participant) applyMetadataLocked(name, metadata string, attrs map[string]string) {
	if name != "" {
		p.info.Name = name
	}
	if metadata != "" {
		p.info.Metadata = metadata
	}
	if len(attrs) > 0 {
		if p.info.Attributes == nil {
			p.info.Attributes = map[string]string{}
		}
		for k, v := range attrs {
			if v == "" {
				delete(p.info.Attributes, k)
			} else {
				p.info.Attributes[k] = v
			}
		}
	}
	p.changedLocked()
	if p.remote != nil {
		p.remote.updatedByServer(name, metadata, attrs, nil)
	}
}

// setPermission replaces the participant's permission (UpdateParticipant)
// and enforces it at once, as livekit-server: tracks it may no longer
// publish (canPublish, canPublishSources) are unpublished, its
// subscriptions end when it may no longer subscribe, and when it may again
// an auto-subscriber gets the room's tracks back. canPublishData is checked
// per packet. A participant of another node is changed at its origin,
// whose update comes back through the relay.
func (p *Participant) setPermission(perm *livekit.ParticipantPermission) {
	p.mu.Lock()
	couldSubscribe := p.video.GetCanSubscribe()
	p.video.UpdateFromPermission(perm)
	p.info.Permission = p.video.ToPermission()
	p.changedLocked()
	canSubscribe := p.video.GetCanSubscribe()
	var revoked []*publishedTrack
	var subs []string
	if p.remote == nil {
		for _, t := range p.published {
			t.mu.Lock()
			source := t.info.GetSource()
			t.mu.Unlock()
			if !p.video.GetCanPublish() || !p.video.GetCanPublishSource(source) || p.sourceMisfitLocked(source, t.kind) {
				revoked = append(revoked, t)
			}
		}
		if !canSubscribe {
			for sid := range p.subscriptions {
				subs = append(subs, sid)
			}
		}
	}
	p.mu.Unlock()
	if p.remote != nil {
		p.remote.updatedByServer("", "", nil, perm)
		return
	}
	for _, t := range revoked {
		p.log.Info().Str("track_sid", t.sid).Msg("track unpublished: the participant may no longer publish it")
		p.unpublish(t)
	}
	changed := false
	for _, sid := range subs {
		if p.unsubscribe(sid, false) {
			changed = true
		}
	}
	if canSubscribe && !couldSubscribe && p.autoSubscribe {
		for _, t := range p.room.liveTracks() {
			if p.subscribe(t, false) {
				changed = true
			}
		}
	}
	if changed {
		p.negotiate()
	}
	if canSubscribe != couldSubscribe {
		p.reconcileDataAll()
	}
}

// maxSubscriptionSids bounds the track sids of one subscription request:
// each is looked up in the room and may be answered on its own.
const maxSubscriptionSids = 512

func (p *Participant) handleSubscription(u *livekit.UpdateSubscription) {
	if u.GetSubscribe() && !p.canSubscribe() {
		p.log.Debug().Msg("subscription request ignored: no subscribe permission")
		return
	}
	sids := append([]string(nil), u.GetTrackSids()...)
	for _, pt := range u.GetParticipantTracks() {
		sids = append(sids, pt.GetTrackSids()...)
	}
	if len(sids) > maxSubscriptionSids {
		p.log.Debug().Int("sids", len(sids)).Msg("subscription request cut to its first track sids")
		sids = sids[:maxSubscriptionSids]
	}
	changed := false
	for _, sid := range sids {
		if u.GetSubscribe() {
			t := p.room.findTrack(sid)
			if t == nil {
				p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_SubscriptionResponse{SubscriptionResponse: &livekit.SubscriptionResponse{
					TrackSid: sid, Err: livekit.SubscriptionError_SE_TRACK_NOTFOUND,
				}}})
				continue
			}
			if p.subscribe(t, false) {
				changed = true
			}
		} else if p.unsubscribe(sid, false) {
			changed = true
		}
	}
	if changed {
		p.negotiate()
	}
}

func (p *Participant) handleTrackSetting(s *livekit.UpdateTrackSettings) {
	for _, sid := range s.GetTrackSids() {
		p.mu.Lock()
		dt := p.subscriptions[sid]
		p.mu.Unlock()
		if dt != nil {
			dt.applySettings(s)
		}
	}
}
