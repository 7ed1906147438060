package focus

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/livekit/protocol/auth"

	"github.com/gxfs-conf/gxconf/credentials"
)

// Peering routes the subscribers of peered deployments (issue 10): a user
// whose homeserver a peer serves gets that peer's URL and a subscribe-only
// token for our room in the peer's namespace, signed with the peer key, and
// the peer's relay carries our room to them over the IX. The grant is ours
// like any other (recorded with the peer), so removals and revocations
// work as for our own SFU; the peer's relay asks us about every such token
// (CheckPeerGrant, RenewPeerGrant) and links only rooms we granted to its
// users (PeerRoomGranted, PeerParticipantGranted).
type Peering struct {
	// Self is this deployment's peer name (the peers know us by it).
	Self  string
	Peers []PeerRoute
}

// PeerRoute is one peer as the focus uses it.
type PeerRoute struct {
	// Name is the peer deployment's name.
	Name string
	// URL is the peer's signalling URL handed to its users.
	URL string
	// Homeservers are the homeservers whose users the peer serves.
	Homeservers []string
	// Levels are the confidentiality levels of our rooms the peer may
	// relay (vs-nfd only for approved sites).
	Levels []credentials.Level
	// APIKey, TokenSecret sign the tokens (sfu.PeerAPIKey(Self) and the
	// secret derived from the peer secret).
	APIKey, TokenSecret string
	// RoomPrefix makes our LiveKit room a room of our namespace on the
	// peer (sfu.PeerRoomPrefix(Self)).
	RoomPrefix string
}

// peerRoute returns the peer that relays our room to a subscribe-only user
// of serverName at level, or nil: the user is served by our own SFU (no
// peer serves their homeserver, or the room's level may not leave our
// approved sites for that peer).
func (s *Service) peerRoute(serverName string, level credentials.Level, canPublish bool) *PeerRoute {
	if s.peering == nil || canPublish {
		return nil
	}
	if level == "" {
		level = credentials.LevelPublic
	}
	for i := range s.peering.Peers {
		p := &s.peering.Peers[i]
		if slices.Contains(p.Homeservers, serverName) {
			if slices.Contains(p.Levels, level) {
				return p
			}
			return nil
		}
	}
	return nil
}

// CheckPeerGrant is CheckGrant for a token handed out for peer's relay,
// asked by that peer: the grant must be active and recorded for that peer.
func (s *Service) CheckPeerGrant(ctx context.Context, peer, tokenID, lkRoom, identity string) (time.Time, error) {
	g, err := s.activePeerGrant(ctx, peer, tokenID, lkRoom, identity)
	if err != nil {
		return time.Time{}, err
	}
	return g.IssuedAt, nil
}

// RenewPeerGrant is RenewGrant for a token handed out for peer's relay.
func (s *Service) RenewPeerGrant(ctx context.Context, peer, tokenID, lkRoom, identity string, until time.Time) (time.Time, error) {
	if _, err := s.activePeerGrant(ctx, peer, tokenID, lkRoom, identity); err != nil {
		return time.Time{}, err
	}
	return s.RenewGrant(ctx, tokenID, lkRoom, identity, until)
}

func (s *Service) activePeerGrant(ctx context.Context, peer, tokenID, lkRoom, identity string) (*Grant, error) {
	if tokenID == "" || peer == "" {
		return nil, fmt.Errorf("%w: peer tokens carry a grant ID", ErrGrantUnknown)
	}
	g, err := s.activeGrant(ctx, tokenID, lkRoom, identity)
	if err != nil {
		return nil, err
	}
	if g.Peer != peer {
		return nil, fmt.Errorf("%w: not issued for this peer", ErrGrantUnknown)
	}
	return g, nil
}

// PeerRoomGranted tells whether a user served by peer holds an active
// grant for lkRoom: only then may the peer relay the room.
func (s *Service) PeerRoomGranted(ctx context.Context, peer, lkRoom string) (bool, error) {
	return s.grants.peerGranted(ctx, peer, lkRoom, "", s.now())
}

// PeerParticipantGranted tells whether identity, announced by peer's relay
// in lkRoom, holds an active grant for that peer.
func (s *Service) PeerParticipantGranted(ctx context.Context, peer, lkRoom, identity string) (bool, error) {
	if identity == "" {
		return false, nil
	}
	return s.grants.peerGranted(ctx, peer, lkRoom, identity, s.now())
}

// mintPeer signs the subscribe-only token for our room lkRoom on peer's
// relay: the room in our namespace there, publishing of media and data
// explicitly denied (the peer's SFU refuses anything more).
func mintPeer(peer *PeerRoute, tokenID, lkRoom, identity string, ttl time.Duration, notAfter time.Time) (string, error) {
	yes, no := true, false
	grant := &auth.VideoGrant{
		RoomJoin:       true,
		Room:           peer.RoomPrefix + lkRoom,
		CanPublish:     &no,
		CanPublishData: &no,
		CanSubscribe:   &yes,
	}
	return signAccessToken(peer.APIKey, peer.TokenSecret, tokenID, identity, grant, ttl, notAfter)
}
