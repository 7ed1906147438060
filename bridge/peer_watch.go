package bridge

import (
	"context"
	"time"
)

// peerGrantInterval is how often the authority's side of a peer room asks
// whether a user served by the peer still holds a grant for the room. A
// variable only so that a test can lower it.
var peerGrantInterval = 5 * time.Second

// watchPeerGrant ends the association once no user served by the peer
// holds a grant for the room any more: "no grant, no relay" holds for the
// link's whole life, not only when it is set up. It asks every
// peerGrantInterval and whenever one of the peer's participants leaves or
// is removed (pokeGrant; the focus removes the users whose grants it
// revokes). The peer's re-link is refused until a grant exists again.
func (a *association) watchPeerGrant() {
	defer a.wg.Done()
	tick := time.NewTicker(peerGrantInterval)
	defer tick.Stop()
	for {
		select {
		case <-a.done:
			return
		case <-tick.C:
		case <-a.grantPoke:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		ok, err := a.b.peering.Authority.PeerRoomGranted(ctx, a.pr.deployment, a.room)
		cancel()
		switch {
		case err != nil:
			// The grant store is briefly unavailable: the next tick asks again.
			a.log.Warn().Err(err).Str("peer", a.pr.deployment).Msg("failed to check a peer's grants")
		case !ok:
			a.b.countRefused(a.pr.deployment, refusedParticipant)
			a.log.Warn().Str("peer", a.pr.deployment).Msg("Ending a peer's relay: none of its users holds a grant for the room any more")
			a.b.fail(a)
			return
		}
	}
}

// pokeGrant makes watchPeerGrant ask at once; it never blocks.
func (a *association) pokeGrant() {
	select {
	case a.grantPoke <- struct{}{}:
	default:
	}
}
