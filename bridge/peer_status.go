package bridge

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/gxfs-conf/gxconf/cluster"
)

// PeeringStatus returns the rooms this node relays with peered deployments
// now, in room order, and the peers' participants in them (for `gxconf
// cluster status`). A link's bitrates cover the time since the previous
// call (the first: since the link was set up).
func (b *Bridge) PeeringStatus(ctx context.Context) ([]cluster.PeerLinkStatus, []cluster.PeerParticipant) {
	entries := b.linkEntries(true)
	links := make([]cluster.PeerLinkStatus, 0, len(entries))
	var parts []cluster.PeerParticipant
	now := time.Now()
	for _, e := range entries {
		a := e.a
		l := cluster.PeerLinkStatus{LinkStatus: a.status(now, e.node), Peer: a.pr.deployment, Direction: cluster.PeerIn}
		if a.pr.authority {
			l.Direction = cluster.PeerOut
		}
		links = append(links, l)
		for _, id := range a.remoteIdentities(ctx) {
			parts = append(parts, cluster.PeerParticipant{Room: a.room, Identity: id, Deployment: a.pr.deployment, Node: e.node})
		}
	}
	return links, parts
}

// LinkStatus returns this node's relay links with the other nodes of its
// cluster (not those with peered deployments), in room and node order, for
// `gxconf cluster status`. A link's bitrates cover the time since the
// previous call (the first: since the link was set up).
func (b *Bridge) LinkStatus() []cluster.LinkStatus {
	entries := b.linkEntries(false)
	links := make([]cluster.LinkStatus, 0, len(entries))
	now := time.Now()
	for _, e := range entries {
		links = append(links, e.a.status(now, e.node))
	}
	return links
}

// linkEntry is an association with the node at its other end.
type linkEntry struct {
	a    *association
	node string
}

// linkEntries returns the associations with peered deployments (peered)
// or with the cluster's other nodes, in room and peer order, each with the
// node at the other end (read under b.mu).
func (b *Bridge) linkEntries(peered bool) []linkEntry {
	b.mu.Lock()
	var entries []linkEntry
	for _, a := range b.assocs {
		switch {
		case peered && a.pr != nil:
			entries = append(entries, linkEntry{a, a.pr.node})
		case !peered && a.pr == nil:
			entries = append(entries, linkEntry{a, a.peer})
		}
	}
	b.mu.Unlock()
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].a.room != entries[j].a.room {
			return entries[i].a.room < entries[j].a.room
		}
		return entries[i].a.peer < entries[j].a.peer
	})
	return entries
}

// status is the association's counters as a status line; peerNode names
// the node at the other end.
func (a *association) status(now time.Time, peerNode string) cluster.LinkStatus {
	s := a.linkStats()
	l := cluster.LinkStatus{
		Room: a.room, PeerNode: peerNode, Connected: a.isOpen(),
		TracksOut: s.TracksOut, TracksIn: s.TracksIn, RTT: s.RTT,
		PacketsOut: s.SentAudio, PacketsIn: s.RecvAudio, LostPackets: s.NACKsOut, Retransmits: s.Retransmits,
	}
	sent, recv := s.SentAudioBytes, s.RecvAudioBytes
	for i := range 3 {
		l.PacketsOut += s.SentPackets[i]
		l.PacketsIn += s.RecvPackets[i]
		sent += s.SentBytes[i]
		recv += s.RecvBytes[i]
	}
	l.BitrateOut = a.rateOut.sample(now, sent, a.started)
	l.BitrateIn = a.rateIn.sample(now, recv, a.started)
	return l
}

// remoteIdentities lists the peer's participants injected here, sorted
// (asked of the worker, which owns them; nil if it does not answer).
func (a *association) remoteIdentities(ctx context.Context) []string {
	ch := make(chan []string, 1)
	a.post(func() {
		ids := make([]string, 0, len(a.remotes))
		for id := range a.remotes {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		ch <- ids
	})
	select {
	case ids := <-ch:
		return ids
	case <-a.done:
	case <-ctx.Done():
	}
	return nil
}
