package bridge

import (
	"context"
	"sync"
	"time"

	"github.com/gxfs-conf/gxconf/cluster"
)

// Directory is what Follow reads of the cluster registry.
type Directory interface {
	Self() cluster.Node
	Nodes() []cluster.Node
	Rooms(ctx context.Context) ([]cluster.RoomName, error)
	RoomNodes(ctx context.Context, room cluster.RoomName) ([]cluster.RoomEntry, error)
	Subscribe(buffer int) *cluster.Subscription
}

// followInterval bounds how long a missed event can leave a pair unlinked.
const followInterval = 2 * time.Second

// unlinkGrace is how long an association must look unwanted before it is
// closed: the directory lags a node's own announcements by a heartbeat, so
// a peer may dial before this node sees it hosting the room.
const unlinkGrace = 3 * time.Second

// Follow keeps the associations in line with the cluster directory until ctx
// ends: every room this node hosts is linked with every other live node
// that hosts it and has a relay address, and unlinked when the peer stops
// hosting it or dies. It reconciles on every directory event and every
// followInterval (events are best effort).
func (b *Bridge) Follow(ctx context.Context, dir Directory) error {
	sub := dir.Subscribe(256)
	defer sub.Close()
	tick := time.NewTicker(followInterval)
	defer tick.Stop()
	f := &follower{b: b, dir: dir, linking: map[assocKey]bool{}, unwanted: map[assocKey]time.Time{}}
	defer f.wg.Wait()
	for {
		f.reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-sub.C():
			if !ok {
				return nil
			}
		case <-tick.C:
		}
	}
}

// follower is Follow's state; only Follow's goroutine touches it, except
// linking, which the Link goroutines clear under mu.
type follower struct {
	b   *Bridge
	dir Directory
	wg  sync.WaitGroup

	mu      sync.Mutex
	linking map[assocKey]bool

	// unwanted is when an association was first seen unwanted.
	unwanted map[assocKey]time.Time
}

// reconcile computes the wanted pairs from the directory and links or
// unlinks the difference. A directory that cannot be read changes nothing.
func (f *follower) reconcile(ctx context.Context) {
	self := f.dir.Self().ID
	addrs := map[cluster.NodeID]string{}
	for _, n := range f.dir.Nodes() {
		if n.ID != self && n.RelayAddr != "" {
			addrs[n.ID] = n.RelayAddr
		}
	}
	rooms, err := f.dir.Rooms(ctx)
	if err != nil {
		return
	}
	want := map[assocKey]string{}
	for _, room := range rooms {
		hosts, err := f.dir.RoomNodes(ctx, room)
		if err != nil {
			return
		}
		here := false
		for _, h := range hosts {
			here = here || h.Node == self
		}
		if !here {
			continue
		}
		for _, h := range hosts {
			if addr, ok := addrs[h.Node]; ok {
				want[assocKey{string(room), string(h.Node)}] = addr
			}
		}
	}
	for k, addr := range want {
		f.link(ctx, k, addr)
	}
	f.b.mu.Lock()
	var stale []assocKey
	for k, a := range f.b.assocs {
		if a.pr != nil {
			continue // peer associations follow the peer rooms (FollowPeers)
		}
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	f.b.mu.Unlock()
	now := time.Now()
	keep := map[assocKey]time.Time{}
	for _, k := range stale {
		since, ok := f.unwanted[k]
		if !ok {
			since = now
		}
		if now.Sub(since) < unlinkGrace {
			keep[k] = since
			continue
		}
		f.b.log.Info().Str("lk_room", k.room).Str("peer_node_id", k.peer).Msg("Unlinking: the peer no longer hosts the room")
		f.b.Unlink(k.room, k.peer)
	}
	f.unwanted = keep
}

// link starts Link for a pair unless one is under way or up.
func (f *follower) link(ctx context.Context, k assocKey, addr string) {
	if f.b.Linked(k.room, k.peer) {
		return
	}
	f.mu.Lock()
	if f.linking[k] {
		f.mu.Unlock()
		return
	}
	f.linking[k] = true
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		err := f.b.Link(ctx, k.room, k.peer, addr)
		if err != nil && ctx.Err() == nil {
			f.b.log.Warn().Err(err).Str("lk_room", k.room).Str("peer_node_id", k.peer).Msg("Failed to link a room with a peer node; retrying")
		}
		f.mu.Lock()
		delete(f.linking, k)
		f.mu.Unlock()
	}()
}
