// Package sfu is gxconf's embedded, LiveKit-compatible selective forwarding unit.
//
// It owns LiveKit signalling (/rtc, /rtc/v1 and their /validate), pion/webrtc peer connections,
// RTP/RTCP forwarding, simulcast layer selection, data channels and the Twirp
// livekit.RoomService API. All state is in memory.
//
// It must not import any other gxconf package.
//
// # Signalling
//
// /rtc (v0) runs two peer connections (publisher: the client offers;
// subscriber: the SFU offers, with _reliable and _lossy data channels,
// right after the JoinResponse). /rtc/v1 (livekit-client 2.x's default) and
// /rtc with a join_request (server-sdk-go's WithSinglePeerConnection) run
// one peer connection on which the client always offers: the JoinRequest
// (base64url, gzip) carries its first offer, answered after the
// JoinResponse; subscribed tracks go out on free recvonly sections of the
// client's latest offer, answers carry mid_to_track_id, and
// media_sections_requirement asks for an offer with more sections or to
// renegotiate a removed track (singlepc.go). Both modes share the
// forwarding core; only the connection a downtrack is attached to differs.
// /rtc/validate and /rtc/v1/validate answer alike and never 404 except for
// a missing room. joins_total{outcome,path} labels the path.
//
// Resume (resume.go): a lost signal socket leaves the session in the room
// with its media for sfu.resume_window (default 15 s; 0 turns resume off
// and JoinResponse says so). reconnect=1 with the participant sid, and a
// token admitted as for a join (signature, expiry, grant check, not
// removed), for that identity in that room and the same connection mode,
// attaches the new socket: ReconnectResponse first, then the messages
// queued meanwhile (subscriber offers excepted: one still unanswered is
// re-sent), a full ParticipantUpdate and RoomUpdate. The client restarts
// ICE on what it offers; the SFU restarts the subscriber connection's ICE
// only when it is not connected (pion drops the selected pair on a
// restart). A resume of a live session replaces its socket. Anything else
// gets Leave{RECONNECT} and the client rejoins (DUPLICATE_IDENTITY
// replaces a session still waiting).
//
// # Forwarding
//
// Each incoming RTP stream (one per simulcast layer) has one read loop
// that forwards every packet inline to the downtracks of a copy-on-write
// snapshot: no channel hop, no allocation, no shared lock per packet.
// Subscriber connections over the UDP mux socket use the direct send path
// (fastpath.go): SRTP is applied by the SFU and the copies of one packet
// go out with one sendmmsg. Everything else (RTCP, ICE, DTLS, SCTP, other
// transports) is pion's, but a peer's RTCP on the mux socket first passes
// a guard that bounds the SSRCs it may make pion keep streams for
// (rtcpguard.go).
//
// # Relay
//
// relay.go is the API package bridge uses to spread a room over nodes:
// room observers and relay sinks on the origin, remote participants fed
// through the normal receive path on the receiving node. RoomHooks report
// rooms and local participants to a cluster directory; a Forwarder makes the
// Twirp RoomService answer for participants and rooms of other nodes
// (forward.go).
//
// # TURN
//
// turn.go embeds a TURN server (pion/turn) for clients that reach neither
// the UDP mux nor ICE-TCP: UDP, TLS (own port, or demultiplexed on the
// signalling listener, turn_demux.go) and TCP listeners; TURN REST API
// credentials per participant (turn_credentials.go) in the JoinResponse,
// accepted only while that identity is connected here; relays on the
// node's media address that may reach only this node.
//
// # Concurrency
//
// Server.mu guards the room map; Room.mu the participants; Participant.mu
// its tracks and subscriptions; downTrack.mu its munging state;
// signalConn.mu the signal queue and current socket. Locks are
// taken in that order and never held while calling into pion. Every
// goroutine is counted in Server.wg, which Run waits for.
package sfu
