package sfu

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"

	"github.com/livekit/protocol/auth"
)

// Peered deployments (issue 10): a peer deployment P's focus hands its
// users' subscribers tokens for this SFU, signed with P's peer key
// (API key PeerAPIKey(P)), for rooms of P's namespace (PeerRoomName(P, X)),
// which this node relays from P over the IX. P keeps every decision about
// who may see its room, so such a token may only subscribe and only in P's
// namespace, its grant is checked with P (the GrantChecker routes peer
// rooms there; without one peer tokens are refused), and this node's own
// keys cannot join peer rooms.

// peerRoomPrefix starts every peer room name; nothing else may use it.
const peerRoomPrefix = "gxpeer."

// peerKeyPrefix starts the API key of every peer's tokens.
const peerKeyPrefix = "gxpeer:"

// PeerRoomName is the name under which this node relays peer's room: the
// reserved prefix, the peer's deployment name and its room name.
func PeerRoomName(peer, room string) string { return peerRoomPrefix + peer + "." + room }

// PeerRoomPrefix is the start of every room name in peer's namespace.
func PeerRoomPrefix(peer string) string { return peerRoomPrefix + peer + "." }

// ParsePeerRoom splits a peer room name into the peer's deployment name and
// its room name; ok is false for rooms outside every peer namespace.
// Deployment names contain no '.', so the split is unambiguous.
func ParsePeerRoom(name string) (peer, room string, ok bool) {
	rest, ok := strings.CutPrefix(name, peerRoomPrefix)
	if !ok {
		return "", "", false
	}
	peer, room, ok = strings.Cut(rest, ".")
	if !ok || peer == "" || room == "" {
		return "", "", false
	}
	return peer, room, true
}

// IsPeerRoom tells whether name lies in the reserved peer namespace (even
// malformed), which only peer tokens may join.
func IsPeerRoom(name string) bool { return strings.HasPrefix(name, peerRoomPrefix) }

// PeerAPIKey is the API key of the tokens peer's focus signs for peered
// rooms.
func PeerAPIKey(peer string) string { return peerKeyPrefix + peer }

// Peering is what the SFU needs to admit peers' subscribers.
type Peering struct {
	// Keys are the token secrets by peer deployment name (derived from
	// the peer secret; see config.PeerConfig.TokenSecret).
	Keys map[string]string
	// Joined, when set, is called (without blocking) after a participant
	// joined a peer room here, so the bridge links it with its peer at once.
	Joined func(room string)
}

// SetPeering makes the server accept the peer tokens of p; call it before
// Run.
func (s *Server) SetPeering(p Peering) { s.peering = p }

// errPeerGrant refuses a peer token that asks for more than subscribing.
var errPeerGrant = errors.New("a peer token may only join a room of its peer's namespace and subscribe")

// peerSecret finds the secret of a peer API key in constant time over the
// configured peers; peer is the deployment name.
func (s *Server) peerSecret(apiKey string) (secret, peer string, ok bool) {
	name, isPeer := strings.CutPrefix(apiKey, peerKeyPrefix)
	if !isPeer {
		return "", "", false
	}
	for p, v := range s.peering.Keys {
		if subtle.ConstantTimeCompare([]byte(p), []byte(name)) == 1 {
			secret, peer, ok = v, p, true
		}
	}
	return secret, peer, ok
}

// checkPeerGrants enforces what a peer token may do: join one room of the
// peer's namespace, subscribe, nothing else. Every other grant, and even
// an unset publish permission (LiveKit reads nil as allowed), refuses it.
func checkPeerGrants(peer string, g *auth.ClaimGrants) error {
	v := g.Video
	if v == nil || !v.RoomJoin {
		return fmt.Errorf("%w: no roomJoin grant", errPeerGrant)
	}
	if p, room, ok := ParsePeerRoom(v.Room); !ok || p != peer || room == "" {
		return fmt.Errorf("%w: room outside the namespace of %s", errPeerGrant, peer)
	}
	if v.CanPublish == nil || *v.CanPublish || v.CanPublishData == nil || *v.CanPublishData || len(v.CanPublishSources) > 0 {
		return fmt.Errorf("%w: publish grants", errPeerGrant)
	}
	if v.RoomCreate || v.RoomList || v.RoomRecord || v.RoomAdmin || v.IngressAdmin || v.Hidden || v.Recorder || v.Agent ||
		v.DestinationRoom != "" || (v.CanUpdateOwnMetadata != nil && *v.CanUpdateOwnMetadata) ||
		(v.CanManageAgentSession != nil && *v.CanManageAgentSession) {
		return fmt.Errorf("%w: admin, create, record or other grants", errPeerGrant)
	}
	if g.SIP != nil || g.Agent != nil || g.Inference != nil || g.Observability != nil || g.AgentEndpoint != nil ||
		g.AgentThread != nil || g.RoomConfig != nil || g.RoomPreset != "" {
		return fmt.Errorf("%w: grants beyond video", errPeerGrant)
	}
	return nil
}

// PeerRooms returns the peer rooms on this node with the number of local
// participants in each (the bridge links a peer room while it has any).
func (s *Server) PeerRooms() map[string]int {
	out := map[string]int{}
	for _, r := range s.listRooms() {
		if !IsPeerRoom(r.name) {
			continue
		}
		n := 0
		for _, p := range r.participantList() {
			if p.remote == nil && !p.isClosed() {
				n++
			}
		}
		out[r.name] = n
	}
	return out
}
