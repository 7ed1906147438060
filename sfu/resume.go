package sfu

// Session resume: a client whose signal WebSocket broke reconnects with
// reconnect=1 and its participant sid (v0 query, or JoinRequest.reconnect
// and participant_sid on /rtc/v1) and keeps its session: the same sid,
// published tracks, subscriptions and peer connections. Messages queued
// while the socket was down are replayed behind the ReconnectResponse, and
// the connections restart ICE where needed (the client re-offers its
// publisher or single connection with an ICE restart; the SFU re-offers
// the subscriber connection, restarting ICE unless it is still connected). Only a session that is really gone (left,
// removed, replaced, resume window over, another node) gets
// Leave{RECONNECT}, which makes the client join afresh.

import (
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
)

// signalLost is called when ws failed. It reports whether the session
// ends now: not when ws was already replaced by a resume, nor when the
// session may still be resumed (sfu.resume_window), in which case it
// stays in the room with its media until resumeExpired says otherwise.
func (p *Participant) signalLost(ws *websocket.Conn) bool {
	if !p.sc.detach(ws) {
		return false // a resume attached a new socket; this one is history
	}
	if p.s.cfg.ResumeWindow <= 0 || p.isClosed() {
		return true
	}
	p.log.Info().Msg("signal connection lost, waiting for a resume")
	return false
}

// checkResumeWindow ends the session once its signal connection has been
// gone for longer than the resume window. Called by the room worker.
func (p *Participant) checkResumeWindow(now time.Time) {
	if p.remote != nil || !p.sc.resumeExpired(now, p.s.cfg.ResumeWindow) {
		return
	}
	p.log.Info().Msg("signal connection not resumed in time")
	p.close(livekit.DisconnectReason_SIGNAL_CLOSE, false)
}

// resume attaches ws to the session the request names, after admit
// checked the token like for a join (signature, expiry, grant check,
// removal). The session must be in the token's room, under the token's
// identity, with the requested sid, in the same connection mode and not
// closed. It returns nil when there is no such session.
func (s *Server) resume(adm *admission, params joinParams, ws *websocket.Conn) *Participant {
	if adm.room == nil || params.sid == "" || s.cfg.ResumeWindow <= 0 {
		// With resume off a reconnect is always refused, also one that
		// arrives before the old socket's loss was noticed.
		return nil
	}
	p := adm.room.participant(adm.token.grants.Identity)
	if p == nil || p.remote != nil || p.sid != params.sid || p.single != params.single || p.isClosed() {
		return nil
	}
	res := &livekit.SignalResponse{Message: &livekit.SignalResponse_Reconnect{Reconnect: &livekit.ReconnectResponse{
		IceServers:          s.iceServers(p.identity),
		ClientConfiguration: s.clientConfiguration(),
		ServerInfo:          s.serverInfo(),
	}}}
	// Queued subscriber offers are superseded by the ICE restart offer
	// below; everything else (updates, track events, trickle, data
	// requests' answers) is replayed in order.
	keep := func(m *livekit.SignalResponse) bool { return m.GetOffer() == nil }
	if !p.sc.attach(ws, res, keep) {
		return nil
	}
	p.log.Info().Str("path", params.path).Msg("participant resumed")
	// What may have been missed beyond the queue: every participant's
	// current state, the room's.
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Update{Update: &livekit.ParticipantUpdate{
		Participants: p.room.visibleInfos(),
	}}})
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_RoomUpdate{RoomUpdate: &livekit.RoomUpdate{Room: p.room.roomInfo()}}})
	if !p.single {
		p.resumeSubscriber()
	}
	return p
}

// resumeSubscriber re-sends a subscriber offer still waiting for its
// answer (the queued copy is dropped from the replay: the answer may have
// been lost with the socket), and restarts ICE on the subscriber
// connection unless it is still connected: pion drops the selected pair on
// a restart until new checks succeed (a media gap of about one check
// interval), which a healthy path need not pay for a lost signal socket.
// The client restarts the connections it offers itself.
func (p *Participant) resumeSubscriber() {
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if p.isClosed() {
		return
	}
	switch p.sub.ICEConnectionState() {
	case webrtc.ICEConnectionStateConnected, webrtc.ICEConnectionStateCompleted:
	default:
		p.iceRestart = true
	}
	if p.offerInFlight {
		if pending := p.sub.PendingLocalDescription(); pending != nil {
			p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Offer{Offer: &livekit.SessionDescription{
				Type: "offer", Sdp: pending.SDP, Id: p.offerID,
			}}})
		}
		// pion cannot roll a local offer back: the restart follows the answer.
		p.negAgain = p.negAgain || p.iceRestart
		return
	}
	if p.iceRestart {
		p.offerLocked()
	}
}
