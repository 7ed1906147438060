// Package sfu is gxconf's embedded, LiveKit-compatible selective forwarding unit.
//
// It owns LiveKit signalling (/rtc, /rtc/validate), pion/webrtc peer connections,
// RTP/RTCP forwarding, simulcast layer selection, data channels and the Twirp
// livekit.RoomService API. All state is in memory.
//
// It must not import any other gxconf package.
//
// # Signalling
//
// Clients use the v0 protocol on /rtc with two peer connections (publisher:
// the client offers; subscriber: the SFU offers, with _reliable and _lossy
// data channels, right after the JoinResponse). /rtc/v1 (single peer
// connection) is NOT implemented: /rtc/v1 and /rtc/v1/validate answer 404
// with "Access-Control-Allow-Origin: *", which makes livekit-client 2.x
// fall back to /rtc in dual peer connection mode; /rtc/validate never
// answers 404 except for a missing room. A "join_request" on /rtc (the Go
// SDK's single peer connection mode) is refused with 400. Resume is not
// implemented either: JoinResponse disables it and a reconnect=1 request
// gets Leave{RECONNECT}, so clients do a full rejoin (a join with an
// identity already present replaces that session, DUPLICATE_IDENTITY).
//
// # Forwarding
//
// Each incoming RTP stream (one per simulcast layer) has one read loop
// that forwards every packet inline to the downtracks of a copy-on-write
// snapshot: no channel hop, no allocation, no shared lock per packet.
// Subscriber connections over the UDP mux socket use the direct send path
// (fastpath.go): SRTP is applied by the SFU and the copies of one packet
// go out with one sendmmsg. Everything else (RTCP, ICE, DTLS, SCTP, other
// transports) is pion's.
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
// its tracks and subscriptions; downTrack.mu its munging state. Locks are
// taken in that order and never held while calling into pion. Every
// goroutine is counted in Server.wg, which Run waits for.
package sfu
