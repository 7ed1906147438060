package bridge

import (
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

// assocFor returns room's association with peer.
func (b *Bridge) assocFor(t testing.TB, room, peer string) *association {
	t.Helper()
	a := b.assocOrNil(room, peer)
	require.NotNil(t, a)
	return a
}

// assocOrNil returns room's association with peer, nil while there is
// none (for conditions awaited: they must not fail the test).
func (b *Bridge) assocOrNil(room, peer string) *association {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.assocs[assocKey{room, peer}]
}

// onWorker runs f on the worker of room's association with peer and
// tells whether it ran: false while there is no such association or once
// it ended (for conditions awaited: it never fails the test).
func (b *Bridge) onWorker(room, peer string, f func(a *association)) bool {
	a := b.assocOrNil(room, peer)
	if a == nil {
		return false
	}
	done := make(chan struct{})
	a.post(func() {
		f(a)
		close(done)
	})
	select {
	case <-done:
		return true
	case <-a.done:
		return false
	}
}

// peerIdentities lists the participants room's association with peer
// injected here, sorted; ok is false while there is no such association
// (for conditions awaited: it never fails the test).
func (b *Bridge) peerIdentities(room, peer string) (ids []string, ok bool) {
	ok = b.onWorker(room, peer, func(a *association) {
		for id := range a.remotes {
			ids = append(ids, id)
		}
	})
	sort.Strings(ids)
	return ids, ok
}

// inTrackFor returns the relayed track sid of room's association with
// peer, read on the association's worker.
func (b *Bridge) inTrackFor(t *testing.T, room, peer, sid string) *inTrack {
	t.Helper()
	b.mu.Lock()
	a := b.assocs[assocKey{room, peer}]
	b.mu.Unlock()
	require.NotNil(t, a)
	ch := make(chan *inTrack, 1)
	a.post(func() { ch <- a.inTracks[sid] })
	it := <-ch
	require.NotNil(t, it)
	return it
}

// vanish stops the association's ICE transport without a bye, as a
// killed node would.
func (a *association) vanish() { _ = a.ice.Stop() }

// remoteIdentities lists the participants room's association with peer
// injected here.
func (b *Bridge) remoteIdentities(t *testing.T, room, peer string) []string {
	t.Helper()
	a := b.assocFor(t, room, peer)
	ch := make(chan []string, 1)
	a.post(func() {
		var ids []string
		for id := range a.remotes {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		ch <- ids
	})
	return <-ch
}

// relayed lists the track sids room's association with peer sends (out)
// and receives (receivers).
func (b *Bridge) relayed(t *testing.T, room, peer string) (out, in []string) {
	t.Helper()
	out, in, ok := b.relayedNow(room, peer)
	require.True(t, ok, "no association of %s with %s", room, peer)
	return out, in
}

// relayedNow is relayed for conditions awaited: ok is false while there
// is no such association, and it never fails the test.
func (b *Bridge) relayedNow(room, peer string) (out, in []string, ok bool) {
	ok = b.onWorker(room, peer, func(a *association) {
		for sid := range a.out {
			out = append(out, sid)
		}
		for _, rs := range a.receivers {
			in = append(in, rs.sid)
		}
	})
	return out, in, ok
}

// sendOn makes room's association with peer send m, as a misbehaving peer
// would.
func (b *Bridge) sendOn(t *testing.T, room, peer string, m *message) {
	t.Helper()
	a := b.assocFor(t, room, peer)
	done := make(chan struct{})
	a.post(func() {
		a.send(m)
		close(done)
	})
	<-done
}

// sendAll sends ms on a's worker, in order, and tells whether they went:
// the control channel was open and took each (false too when a ended).
func (a *association) sendAll(ms []*message) bool {
	done := make(chan bool, 1)
	a.post(func() {
		a.dcMu.Lock()
		ok := a.dc != nil
		a.dcMu.Unlock()
		for _, m := range ms {
			ok = ok && a.send(m) == nil
		}
		done <- ok
	})
	select {
	case ok := <-done:
		return ok
	case <-a.done:
		return false
	}
}

// inTrackCount is the number of tracks room's association with peer
// receives from it, read on the association's worker.
func (b *Bridge) inTrackCount(t *testing.T, room, peer string) int {
	t.Helper()
	n, ok := b.inTrackCountNow(room, peer)
	require.True(t, ok, "no association of %s with %s", room, peer)
	return n
}

// inTrackCountNow is inTrackCount for conditions awaited: ok is false
// while there is no such association, and it never fails the test.
func (b *Bridge) inTrackCountNow(room, peer string) (n int, ok bool) {
	ok = b.onWorker(room, peer, func(a *association) { n = len(a.inTracks) })
	return n, ok
}

// dataWanted reports whether room's association with peer relays the data
// track sid (the peer said it wants it).
func (b *Bridge) dataWanted(t testing.TB, room, peer, sid string) bool {
	t.Helper()
	wanted, ok := b.dataWantedNow(room, peer, sid)
	require.True(t, ok, "no association of %s with %s", room, peer)
	return wanted
}

// dataWantedNow is dataWanted for conditions awaited: ok is false while
// there is no such association (a relink), and it never fails the test.
func (b *Bridge) dataWantedNow(room, peer, sid string) (wanted, ok bool) {
	a := b.assocOrNil(room, peer)
	if a == nil {
		return false, false
	}
	a.dtMu.Lock()
	defer a.dtMu.Unlock()
	return a.dtWanted[sid], true
}

// handleOn runs m on room's association with peer as if the peer had sent
// it, and returns once it is handled (nothing else runs on the worker in
// between).
func (b *Bridge) handleOn(t *testing.T, room, peer string, m *message) {
	t.Helper()
	a := b.assocFor(t, room, peer)
	done := make(chan struct{})
	a.post(func() {
		a.handle(m)
		close(done)
	})
	<-done
}
