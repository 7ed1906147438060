package bridge

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/livekit/protocol/livekit"
)

// peerGrantInterval is how often the authority's side of a peer room asks
// whether a user served by the peer still holds a grant for the room, and
// whether each of the peer's participants here still holds its own. A
// variable only so that a test can lower it.
var peerGrantInterval = 5 * time.Second

// peerGrantTimeout bounds one question to the grant store (local: the
// focus's database).
const peerGrantTimeout = 3 * time.Second

// watchPeerGrant holds the grants to account for the link's whole life,
// not only when it is set up or a participant arrives: it ends the
// association once no user served by the peer holds a grant for the room
// any more ("no grant, no relay"; the peer's re-link is refused until a
// grant exists again), and otherwise removes every participant of the
// peer's here whose own grant expired or was revoked (recheckPeerGrants).
// It asks every peerGrantInterval and whenever one of the peer's
// participants leaves or is removed (pokeGrant; the focus removes the
// users whose grants it revokes). It runs off the worker: a round's
// questions never hold up the association's control messages.
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
		ctx, cancel := context.WithTimeout(context.Background(), peerGrantTimeout)
		ok, err := a.b.peering.Authority.PeerRoomGranted(ctx, a.pr.deployment, a.room)
		cancel()
		switch {
		case err != nil:
			// The grant store is briefly unavailable: the next tick asks again.
			a.log.Warn().Err(err).Str("peer", a.pr.deployment).Msg("failed to check a peer's grants")
			continue
		case !ok:
			a.b.countRefused(a.pr.deployment, refusedParticipant)
			a.log.Warn().Str("peer", a.pr.deployment).Msg("Ending a peer's relay: none of its users holds a grant for the room any more")
			a.b.fail(a)
			return
		}
		a.recheckPeerGrants()
	}
}

// admittedPeer is one of the peer's participants here as the worker
// admitted it; part tells it from a later admission of the identity (and
// is only compared, on the worker).
type admittedPeer struct {
	identity string
	part     *remotePart
}

// recheckPeerGrants asks whether each of the peer's participants here
// still holds a grant for the room (admitPeerParticipant asked only when
// it arrived) and has the worker remove those that do not
// (dropUngranted). A participant whose grant expires (the peer stopped
// renewing it) or is revoked without its removal reaching it would
// otherwise stay in the room, and its media, data and permissions keep
// crossing, as long as another of the peer's users holds a grant.
//
// A round asks at most maxRemoteParticipants questions (the peer's
// participants on one association), each within peerGrantTimeout, on
// watchPeerGrant's goroutine; rounds do not pile up (the ticker drops
// ticks, pokes coalesce). An error ends the round and removes nobody for
// it: the store is unavailable, the next round asks again (those it
// answered without a grant before go). The order is shuffled so that
// rounds that end early still reach everyone. Not on the worker.
func (a *association) recheckPeerGrants() {
	peers := a.admittedPeers()
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	var lost []admittedPeer
	for _, p := range peers {
		if a.closed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), peerGrantTimeout)
		ok, err := a.b.peering.Authority.PeerParticipantGranted(ctx, a.pr.deployment, a.room, p.identity)
		cancel()
		if err != nil {
			a.log.Warn().Err(err).Str("peer", a.pr.deployment).Str("lk_identity", p.identity).Msg("failed to check a peer participant's grant")
			break
		}
		if !ok {
			lost = append(lost, p)
		}
	}
	if len(lost) > 0 {
		a.post(func() { a.dropUngranted(lost) })
	}
}

// admittedPeers lists the peer's participants here (asked of the worker,
// which owns them; nil once the association ends).
func (a *association) admittedPeers() []admittedPeer {
	ch := make(chan []admittedPeer, 1)
	a.post(func() {
		ps := make([]admittedPeer, 0, len(a.remotes))
		for id, r := range a.remotes {
			ps = append(ps, admittedPeer{identity: id, part: r})
		}
		ch <- ps
	})
	select {
	case ps := <-ch:
		return ps
	case <-a.done:
		return nil
	}
}

// dropUngranted removes the peer's participants found without a grant
// as admitPeerParticipant refuses a new one: the peer is told to remove
// it, and it leaves our room here, so nothing more crosses for it (held
// wants and data tracks are re-checked without it: recheckPeerWants; data
// addressed to it stays: peerData). Only the admission that was asked
// about goes: one that left meanwhile is gone, and one that arrived
// meanwhile, a re-announcement of the same identity included, was asked
// about on arrival (admitPeerParticipant: a participant not here is new)
// and is asked about again in the next round. Once removed, the identity
// is new here again: the peer announcing it again is refused without a
// grant. Worker only.
func (a *association) dropUngranted(lost []admittedPeer) {
	dropped := false
	for _, p := range lost {
		r := a.remotes[p.identity]
		if r != p.part {
			continue
		}
		delete(a.remotes, p.identity)
		for sid := range r.tracks {
			a.dropInTrack(sid)
		}
		r.rp.Close(livekit.DisconnectReason_PARTICIPANT_REMOVED)
		a.b.countRefused(a.pr.deployment, refusedParticipant)
		a.log.Warn().Str("peer", a.pr.deployment).Str("lk_identity", p.identity).Msg("A peer's participant no longer holds a grant; removing it here and there")
		a.send(&message{Type: msgRemove, Identity: p.identity, Reason: int32(livekit.DisconnectReason_PARTICIPANT_REMOVED)})
		dropped = true
	}
	if dropped {
		a.recheckPeerWants()
	}
}

// pokeGrant makes watchPeerGrant ask at once; it never blocks.
func (a *association) pokeGrant() {
	select {
	case a.grantPoke <- struct{}{}:
	default:
	}
}
