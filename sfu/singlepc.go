package sfu

// Single peer connection mode (/rtc/v1, and /rtc with a join_request):
// the client is always the offerer. Its first offer (in the JoinRequest,
// or on Firefox a regular offer after the JoinResponse) already holds
// recvonly audio and video sections and the data channels; the SFU sends
// subscribed tracks on free recvonly sections of the client's latest
// offer, tells the client which mid carries which track
// (SessionDescription.mid_to_track_id), and asks for another offer with
// media_sections_requirement when a subscription needs a section the
// offer does not have, or when a removed one must be renegotiated
// (livekit-server pkg/rtc/transport.go, livekit-client RTCEngine.ts).

import (
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
)

// joinOfferHold bounds how long the answer to a server-sdk-go client's
// join request offer waits for the client's first candidate (holdOffer).
var joinOfferHold = 250 * time.Millisecond

// startSingle finishes a single mode join after the JoinResponse: the
// add_track requests and the publisher offer carried by the JoinRequest.
func (p *Participant) startSingle(params joinParams) {
	for _, req := range params.addTracks {
		p.handleAddTrack(req)
	}
	if params.publisherOffer == nil {
		return // Firefox: the offer follows on the socket
	}
	if params.sdk == "go" {
		p.holdOffer(params.publisherOffer)
		return
	}
	if err := p.handleSingleOffer(params.publisherOffer); err != nil {
		p.log.Warn().Err(err).Msg("failed to answer the offer of the join request")
	}
}

// holdOffer keeps the answer to the join request's offer until the client
// has applied that offer itself. server-sdk-go (v2.19, v2.20) sends the
// offer before setting it as its local description, starts reading the
// socket on the JoinResponse and only then sets it: an answer already
// waiting in the socket can reach pion first, which refuses it in state
// stable, and the publisher connection never comes up (CI, 6 Dec 2026:
// "invalid proposed signaling state transition: stable->SetRemote(answer)"
// in TestJoinTime). The client's first candidate proves the offer is set
// (pion gathers only once it is); without one the answer goes out after
// joinOfferHold. livekit-client sets its first offer only when the answer
// arrives, so it is answered at once.
func (p *Participant) holdOffer(sd *livekit.SessionDescription) {
	p.negMu.Lock()
	defer p.negMu.Unlock()
	p.heldOffer = sd
	hold := joinOfferHold
	p.heldTimer = time.AfterFunc(hold, func() {
		if p.releaseOffer() {
			p.log.Debug().Dur("after", hold).Msg("answered the join request's offer without a candidate from the client")
		}
	})
}

// releaseOffer answers a held join request offer, once; it reports
// whether there was one.
func (p *Participant) releaseOffer() bool {
	p.offerMu.Lock()
	defer p.offerMu.Unlock()
	return p.releaseOfferLocked()
}

// releaseOfferLocked is releaseOffer with offerMu held.
func (p *Participant) releaseOfferLocked() bool {
	p.negMu.Lock()
	sd := p.heldOffer
	p.heldOffer = nil
	if p.heldTimer != nil {
		p.heldTimer.Stop()
		p.heldTimer = nil
	}
	p.negMu.Unlock()
	if sd == nil || p.isClosed() {
		return false
	}
	if err := p.handleSingleOffer(sd); err != nil {
		p.log.Warn().Err(err).Msg("failed to answer the offer of the join request")
	}
	return true
}

// handleSingleOffer answers the client's offer: subscriptions waiting for
// a section are attached to free ones first, so the answer sends them.
func (p *Participant) handleSingleOffer(sd *livekit.SessionDescription) error {
	defer p.chargeNegotiation(time.Now())
	p.negMu.Lock()
	p.offerAsked, p.askedA, p.askedV = false, 0, 0
	p.negMu.Unlock()

	p.ansMu.Lock()
	if err := p.checkOfferSize(sd.GetSdp()); err != nil {
		p.ansMu.Unlock()
		return err
	}
	if err := p.checkEarlyOffer(); err != nil {
		p.ansMu.Unlock()
		return err
	}
	if err := p.setOffer(sd.GetSdp()); err != nil {
		stuck := p.offerStuck()
		p.ansMu.Unlock()
		if stuck {
			p.answerFailed(err)
			return nil
		}
		return err
	}
	p.flushCandidates(livekit.SignalTarget_PUBLISHER)
	waiting := p.attachWaiting()
	answer, err := p.pub.CreateAnswer(nil)
	if err == nil {
		err = p.setLocal(p.pub, answer)
	}
	if err != nil {
		p.ansMu.Unlock()
		p.answerFailed(err)
		return nil
	}
	// Sections left by a track are reusable once this answer set them
	// inactive (pion reuses only sections not currently sending).
	p.mu.Lock()
	clear(p.retired)
	p.mu.Unlock()
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Answer{Answer: &livekit.SessionDescription{
		Type: "answer", Sdp: answer.SDP, Id: sd.GetId(), MidToTrackId: p.midToTrackID(),
	}}})
	p.ansMu.Unlock()
	if e := p.log.Trace(); e.Enabled() {
		e.Bool("waiting", waiting).Any("mids", p.midToTrackID()).Msg("answered offer")
	}
	if waiting {
		p.requestOffer()
	}
	return nil
}

// attachWaiting gives subscriptions without a sender a free receive
// section of the current remote offer; it reports whether some are left
// waiting for one. ansMu is held (between the offer and its answer).
func (p *Participant) attachWaiting() bool {
	p.mu.Lock()
	var waiting []*downTrack
	for _, dt := range p.subscriptions {
		if !dt.attached {
			waiting = append(waiting, dt)
		}
	}
	p.mu.Unlock()
	free := p.freeSections()
	left := false
	for _, dt := range waiting {
		if free[dt.kind] == 0 {
			left = true
			continue
		}
		if err := dt.attach(); err != nil {
			p.log.Warn().Err(err).Str("track_sid", dt.id).Msg("failed to subscribe")
			p.unsubscribe(dt.id, false)
			continue
		}
		p.mu.Lock()
		sender := dt.sender
		p.mu.Unlock()
		if tr := p.transceiverOf(sender); tr == nil || tr.Mid() == "" {
			// pion found no section after all and made a new one, which
			// only an offer of ours could negotiate: wait for the client's.
			p.mu.Lock()
			dt.sender, dt.attached = nil, false
			p.mu.Unlock()
			_ = p.removeSender(p.pub, sender)
			left = true
			continue
		}
		free[dt.kind]--
		if !p.stillSubscribed(dt) {
			dt.detach(true) // revoked while it was attached
			continue
		}
		if dt.track.isClosed() {
			p.unsubscribe(dt.id, false)
		}
	}
	return left
}

// freeSections counts, by kind, the sections of the remote offer the SFU
// may send on: the client receives there and no track is attached.
func (p *Participant) freeSections() map[webrtc.RTPCodecType]int {
	free := map[webrtc.RTPCodecType]int{}
	p.mu.Lock()
	retired := make(map[*webrtc.RTPTransceiver]bool, len(p.retired))
	for tr := range p.retired {
		retired[tr] = true
	}
	p.mu.Unlock()
	for _, tr := range p.pub.GetTransceivers() {
		if tr.Mid() == "" || tr.Sender() != nil || retired[tr] {
			continue
		}
		// The local direction of a section the client receives on is
		// sendonly, inactive once a track left it; a section the client
		// sends on is recvonly here.
		if d := tr.Direction(); d == webrtc.RTPTransceiverDirectionSendonly || d == webrtc.RTPTransceiverDirectionInactive {
			free[tr.Kind()]++
		}
	}
	return free
}

// retire marks the section of sender as not reusable until the next
// answer (a track is being removed from it).
func (p *Participant) retire(sender *webrtc.RTPSender) {
	tr := p.transceiverOf(sender)
	if tr == nil {
		return
	}
	p.mu.Lock()
	p.retired[tr] = true
	p.mu.Unlock()
}

func (p *Participant) transceiverOf(s *webrtc.RTPSender) *webrtc.RTPTransceiver {
	for _, tr := range p.pub.GetTransceivers() {
		if tr.Sender() == s {
			return tr
		}
	}
	return nil
}

// midToTrackID maps each section the SFU sends on to its track sid: the
// receivers in the browser get local track ids, so clients look the track
// up by mid.
func (p *Participant) midToTrackID() map[string]string {
	out := map[string]string{}
	for _, tr := range p.pub.GetTransceivers() {
		s := tr.Sender()
		if s == nil || s.Track() == nil || tr.Mid() == "" {
			continue
		}
		out[tr.Mid()] = s.Track().ID()
	}
	return out
}

// requestOffer asks the client for a new offer with the sections the
// waiting subscriptions lack (media_sections_requirement; 0/0 just asks
// for an offer, e.g. to negotiate a removed track). One request is
// outstanding at a time, unless more sections are needed.
func (p *Participant) requestOffer() {
	if p.isClosed() {
		return
	}
	p.mu.Lock()
	want := map[webrtc.RTPCodecType]int{}
	for _, dt := range p.subscriptions {
		if !dt.attached {
			want[dt.kind]++
		}
	}
	p.mu.Unlock()
	free := p.freeSections()
	p.negMu.Lock()
	needA := max(0, want[webrtc.RTPCodecTypeAudio]-free[webrtc.RTPCodecTypeAudio]-p.askedA)
	needV := max(0, want[webrtc.RTPCodecTypeVideo]-free[webrtc.RTPCodecTypeVideo]-p.askedV)
	if p.offerAsked && needA == 0 && needV == 0 {
		p.negMu.Unlock()
		p.log.Trace().Any("want", want).Any("free", free).Msg("offer already asked for")
		return
	}
	if p.earlyOffers.Load() >= maxEarlyOffers && !p.pubConnected.Load() {
		if !p.negDeferred {
			p.log.Info().Msg("offer request deferred until the connection connects")
		}
		p.negDeferred = true // negotiateDeferred, once connected
		p.negMu.Unlock()
		return
	}
	p.offerAsked = true
	p.askedA += needA
	p.askedV += needV
	p.negMu.Unlock()
	p.log.Trace().Any("want", want).Any("free", free).Int("audio", needA).Int("video", needV).Msg("asking for an offer")
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_MediaSectionsRequirement{MediaSectionsRequirement: &livekit.MediaSectionsRequirement{
		NumAudios: uint32(needA), NumVideos: uint32(needV),
	}}})
}
