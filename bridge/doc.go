// Package bridge relays media between gxconf's SFU nodes so one LiveKit
// room spans several nodes transparently: each participant connects to one
// node and sees everyone else, with their original identities, sids and
// track sids, through normal LiveKit signalling.
//
// It imports sfu (and later cluster); sfu imports no other gxconf package.
// The cluster directory tells a node "room R also lives on node N at relay
// address X" by calling Bridge.Link; Bridge.Unlink ends it.
//
// # Association
//
// One association per (room, node pair), as Jitsi's relays and mediasoup's
// pipe transports: SSRCs stay unique per association without rewriting and
// a room's relay goes away with the room. Transport: pion's ORTC API for
// ICE (host candidates on the relay address only, udp4, no mDNS) + DTLS
// 1.2 (ECDSA P-256, fresh certificate per association) + SCTP with one
// reliable, ordered data channel for control; SRTP for media is the
// bridge's own (srtp.go). Why ORTC and not a PeerConnection: no SDP, and
// a stream per (track, layer) is added with a control message instead of
// a renegotiation (pion/ion-sfu's relay does the same). Why DTLS-SRTP and
// not plain RTP: the IX link is not trusted, and it is the same encryption
// clients get.
//
// # Socket and SRTP
//
// The bridge owns the relay's UDP sockets (socket.go) and runs pion's ICE
// mux on them: the node's socket on the relay address's port (the same
// number as the signalling listener: one port for the NetworkPolicy) for
// the associations it accepts, and one ephemeral socket per association it
// dials (all associations between two nodes would otherwise share one
// 5-tuple). RTP/RTCP from a live association's selected pair is handled by
// the bridge on the socket's read loop and never reaches pion; what comes
// from elsewhere is dropped and counted. Keys are derived from the DTLS
// handshake through pion's public hooks (sfu.DTLSKeys, as the SFU's direct
// path): the DTLS server tells the client its Server Hello (public data)
// as the first control message. One SRTP context per direction, used by
// nobody else: pion never starts SRTP on the association. Received packets
// are authenticated, replay-checked, decrypted in place and dispatched by
// SSRC; an SSRC nobody announced (a late packet of a stopped stream) is
// simply dropped. Sent packets are encrypted by the sending goroutine (the
// publisher's read loop) and written straight to the socket.
//
// Signalling is one HTTP request on the relay address (POST
// /gxconf/relay/v1/associate) carrying ICE parameters and candidates, the
// DTLS fingerprint and SCTP capabilities, answered with the peer's. Both
// are authenticated with HMAC-SHA256 under the shared cluster secret over
// the whole body (node ids, room, time, nonce); the answer's MAC also
// covers the offer's MAC, so it cannot be replayed to another offer. Offers
// older than 30 s or with a nonce seen before are refused. Since the
// fingerprints travel in authenticated messages and DTLS checks the
// peer's certificate against them, the DTLS association is mutually
// authenticated; the secret never crosses the wire. The node whose id
// sorts lower dials (Link on the other node only waits for it).
//
// # Control protocol
//
// JSON messages on the data channel (control.go): participant (the
// origin's ParticipantInfo with codec details of its live tracks and its
// subscription permission by identity, which the receiving node applies to
// its own subscribers before it publishes the tracks there; state
// DISCONNECTED = left), want (layers the receiving node needs of a track),
// stream / stream_ready (an SSRC carrying one layer of a track, announced
// before its first packet), data (an encoded DataPacket with label and
// destinations, or on _data_track a data track packet with its publisher's
// identity; the info lists the data tracks), data_want (the receiving node
// has, or no longer has, a subscriber of a data track: only wanted data
// tracks cross), remove / mute / update (RoomService.RemoveParticipant,
// MutePublishedTrack, UpdateParticipant asked on the other node for one of
// ours: the origin applies them and its update flows back) and bye (the
// sender closes; the peer drops the relay at once instead of waiting for
// ICE to fail, ~3 s). Versions in ParticipantInfo order updates. SendData
// and ListParticipants work from any linked node as they are: data is
// relayed like a participant's, and relayed participants are listed.
//
// Not yet: a participant's connection quality is computed on each node
// from what it receives, not taken from the origin; one association per
// room rather than per node pair (many rooms on one node pair would need
// SSRC rewriting on a shared association). A (track, layer) stream stays
// while its track lives, even when nobody wants it; streams of gone tracks
// are stopped.
//
// # Peered deployments
//
// The same associations link a room with a gxconf deployment of another
// federation over the IX (peer.go, peer_grants.go, peer_watch.go): the
// peer relays our room for its own users under sfu.PeerRoomName(us,
// room), signalling and grant checks are authenticated with a key derived
// from the per-peer secret and carry deployment names, and the deployment
// that owns the room is the authority (its peer's users only subscribe,
// and stay only while each holds a grant; what the peer sends beyond that
// is ignored and counted; its removals reach the peer). PeeringStatus
// lists the links per room (direction, tracks, bitrates, RTT, loss) and
// the peers' participants for `gxconf cluster status`; one association
// per (room, relaying node) means one copy of each track per node of the
// peer that relays the room (gxconf_bridge_peer_track_copies).
//
// # Media
//
// A track crosses an association only while a subscriber on the receiving
// node wants it, and only the layers wanted there: the receiving node
// sends the set of layers its subscribers want or still receive; the origin
// maps them onto live layers and folds the highest into its dynacast, so
// the publisher encodes what either node needs (Jitsi's AddReceiver). The
// origin's sfu.RelaySubscription hands the packets of those layers to the
// association inline from the publisher's read loop; each (track, layer)
// gets its own SSRC. Sequence numbers, timestamps, payloads and
// header extensions cross unchanged (only SSRC and payload type are the
// association's), so E2EE frames pass.
//
// RTCP ends at each hop: the receiving node's subscribers are answered
// from its own packet cache; losses on the relay are NACKed by the
// receiving node and answered from the origin's packet cache (same
// sequence numbers); PLI/FIR from the receiving node (throttled there)
// are merged and throttled at the origin with the local ones per layer
// (500 ms low, 1 s others), so relays cannot cause a keyframe storm
// (jitsi-videobridge#2442). No bandwidth estimation crosses a hop.
package bridge
