package cluster

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/internal/logbuf"
)

const (
	testHeartbeat = 100 * time.Millisecond
	testTTL       = 500 * time.Millisecond
	waitFor       = 10 * time.Second
	tick          = 20 * time.Millisecond
)

func testRedisConfig(t testing.TB, addr string, id NodeID, site SiteID) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeID = id
	cfg.Site = site
	cfg.SignalURL = "ws://" + string(id) + ".test:7880"
	cfg.RelayAddress = "10.99.0.1:7890"
	cfg.HeartbeatInterval = testHeartbeat
	cfg.LivenessTTL = testTTL
	cfg.Redis.Address = addr
	cfg.Redis.OpTimeout = 300 * time.Millisecond
	cfg.Redis.DialTimeout = 300 * time.Millisecond
	cfg.Redis.KeyPrefix = "gxtest:"
	require.NoError(t, cfg.Validate())
	return cfg
}

// testNode is a Redis registry running in the background.
type testNode struct {
	*Redis
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startNode(t testing.TB, cfg Config, opts ...Option) *testNode {
	t.Helper()
	r, err := NewRedis(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel), opts...)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{Redis: r, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- r.Run(ctx) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop ends Run (deregistering) and waits for it.
func (n *testNode) stop(t testing.TB) {
	n.once.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			require.NoError(t, err)
		case <-time.After(waitFor):
			require.FailNow(t, "Run did not return")
		}
	})
}

// crash ends Run without deregistering, as kill -9 would.
func (n *testNode) crash(t testing.TB) {
	n.crashed.Store(true)
	n.stop(t)
}

// recorder collects a subscription's events.
type recorder struct {
	mu     sync.Mutex
	events []Event
	done   chan struct{}
}

func record(t testing.TB, n Notifier) *recorder {
	sub := n.Subscribe(1024)
	rec := &recorder{done: make(chan struct{})}
	go func() {
		defer close(rec.done)
		for ev := range sub.C() {
			rec.mu.Lock()
			rec.events = append(rec.events, ev)
			rec.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		sub.Close()
		<-rec.done
	})
	return rec
}

func (r *recorder) has(match func(Event) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.events {
		if match(ev) {
			return true
		}
	}
	return false
}

func (r *recorder) wait(t testing.TB, what string, match func(Event) bool) {
	t.Helper()
	require.Eventually(t, func() bool { return r.has(match) }, waitFor, tick, "no event: %s", what)
}

func ofType(typ EventType, node NodeID) func(Event) bool {
	return func(ev Event) bool { return ev.Type == typ && ev.Node == node }
}

// waitBus waits until node to receives from the bus (its Pub/Sub
// subscription is set up), so that events published from now on reach it.
func waitBus(t testing.TB, from *testNode, to NodeID) {
	t.Helper()
	require.Eventually(t, func() bool {
		return from.Send(context.Background(), to, "probe", nil) == nil
	}, waitFor, tick, "node %s not on the bus", to)
}

func nodeIDs(nodes []Node) []NodeID {
	var out []NodeID
	for _, n := range nodes {
		out = append(out, n.ID)
	}
	return out
}

func TestRedisRegistryAcrossNodes(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	// b first, watched from the start: a node already there when b starts
	// need not be an event for b (b's first view of the registry holds it).
	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S"))
	evB := record(t, b)
	a := startNode(t, testRedisConfig(t, srv.addr, "a", "S"))

	require.Eventually(t, func() bool {
		return len(a.Nodes()) == 2 && len(b.Nodes()) == 2
	}, waitFor, tick)
	evB.wait(t, "a up", ofType(EventNodeUp, "a"))
	require.Equal(t, []NodeID{"a", "b"}, nodeIDs(b.Nodes()))
	peer := b.Nodes()[0]
	require.Equal(t, SiteID("S"), peer.Site)
	require.Equal(t, "ws://a.test:7880", peer.SignalURL)
	require.Equal(t, "10.99.0.1:7890", peer.RelayAddr)
	require.Equal(t, a.Self().Epoch, peer.Epoch)
	waitBus(t, a, "b")

	// A's participant and track are found from B.
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice", SID: "PA_a"})
	a.AddTrack(TrackEntry{Room: "r", SID: "TR_a", Participant: "alice", Kind: "video", MimeType: "video/VP8", Layers: 3})
	evB.wait(t, "alice added", func(ev Event) bool {
		return ev.Type == EventParticipantAdded && ev.Identity == "alice" && ev.Node == "a" && ev.Participant != nil && ev.Participant.SID == "PA_a"
	})
	evB.wait(t, "track added", func(ev Event) bool {
		return ev.Type == EventTrackAdded && ev.Track == "TR_a" && ev.TrackInfo != nil && ev.TrackInfo.Layers == 3
	})
	evB.wait(t, "room hosted", ofType(EventRoomHosted, "a"))
	p, err := b.Participant(ctx, "r", "alice")
	require.NoError(t, err)
	require.Equal(t, NodeID("a"), p.Node)
	require.Equal(t, "PA_a", p.SID)
	hosts, err := b.RoomNodes(ctx, "r")
	require.NoError(t, err)
	require.Len(t, hosts, 1)
	require.Equal(t, NodeID("a"), hosts[0].Node)
	tracks, err := b.Tracks(ctx, "r")
	require.NoError(t, err)
	require.Len(t, tracks, 1)
	require.Equal(t, "video/VP8", tracks[0].MimeType)
	rooms, err := b.Rooms(ctx)
	require.NoError(t, err)
	require.Equal(t, []RoomName{"r"}, rooms)

	// B's placer sends the room to A, which hosts it.
	placer, err := NewPlacer(testRedisConfig(t, srv.addr, "b", "S"), b, zerolog.Nop())
	require.NoError(t, err)
	pl, err := placer.Place(ctx, PlacementRequest{Room: "r", ServerName: "x.example"})
	require.NoError(t, err)
	require.Equal(t, NodeID("a"), pl.Node.ID)
	require.True(t, pl.Hosting)

	// Both nodes host the room once B has a participant.
	b.AddParticipant(ParticipantEntry{Room: "r", Identity: "bob"})
	require.Eventually(t, func() bool {
		parts, err := a.Participants(ctx, "r")
		hosts, err2 := a.RoomNodes(ctx, "r")
		return err == nil && err2 == nil && len(parts) == 2 && len(hosts) == 2
	}, waitFor, tick)
	require.Eventually(t, func() bool { return a.Nodes()[1].Load.Participants == 1 }, waitFor, tick, "B's load reaches A")

	// Removing alice removes her track, on B too.
	a.RemoveParticipant("r", "alice")
	evB.wait(t, "track removed", func(ev Event) bool {
		return ev.Type == EventTrackRemoved && ev.Track == "TR_a" && ev.Identity == "alice"
	})
	evB.wait(t, "alice removed", func(ev Event) bool { return ev.Type == EventParticipantRemoved && ev.Identity == "alice" })
	_, err = b.Participant(ctx, "r", "alice")
	require.ErrorIs(t, err, ErrNotFound)

	// Draining is seen by the other node, and placement avoids it.
	a.SetState(NodeDraining)
	evB.wait(t, "a updated", ofType(EventNodeUpdated, "a"))
	require.Equal(t, NodeDraining, b.Nodes()[0].State)
	pl, err = placer.Place(ctx, PlacementRequest{Room: "r"})
	require.NoError(t, err)
	require.Equal(t, NodeID("b"), pl.Node.ID)

	// A graceful stop removes A at once, with its entries.
	a.AddParticipant(ParticipantEntry{Room: "r2", Identity: "carol"})
	evB.wait(t, "carol added", func(ev Event) bool { return ev.Type == EventParticipantAdded && ev.Identity == "carol" })
	a.stop(t)
	evB.wait(t, "a down", ofType(EventNodeDown, "a"))
	evB.wait(t, "carol removed", func(ev Event) bool { return ev.Type == EventParticipantRemoved && ev.Identity == "carol" })
	require.Equal(t, []NodeID{"b"}, nodeIDs(b.Nodes()))
	raw := srv.client(t, "")
	for _, key := range []string{"gxtest:node:a", "gxtest:node:a:rooms", "gxtest:room:r2:parts", "gxtest:room:r2:nodes"} {
		n, err := raw.Exists(ctx, key).Result()
		require.NoError(t, err)
		require.Zero(t, n, key)
	}
	owners, err := raw.HKeys(ctx, "gxtest:room:r:nodes").Result()
	require.NoError(t, err)
	require.Equal(t, []string{"b"}, owners)
}

func TestRedisCrashedNodeIsReaped(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	a := startNode(t, testRedisConfig(t, srv.addr, "a", "S"))
	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S"))
	evB := record(t, b)
	waitBus(t, a, "b")
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})
	a.AddTrack(TrackEntry{Room: "r", SID: "TR", Participant: "alice", Kind: "audio"})
	evB.wait(t, "track added", ofType(EventTrackAdded, "a"))

	crashedAt := time.Now()
	a.crash(t)
	evB.wait(t, "a down", ofType(EventNodeDown, "a"))
	t.Logf("node down seen %s after the crash (ttl %s, heartbeat %s)", time.Since(crashedAt).Round(time.Millisecond), testTTL, testHeartbeat)
	evB.wait(t, "alice reaped", func(ev Event) bool {
		return ev.Type == EventParticipantRemoved && ev.Node == "a" && ev.Identity == "alice"
	})
	evB.wait(t, "track reaped", func(ev Event) bool { return ev.Type == EventTrackRemoved && ev.Track == "TR" && ev.Identity == "alice" })
	evB.wait(t, "room released", ofType(EventRoomReleased, "a"))
	require.Equal(t, []NodeID{"b"}, nodeIDs(b.Nodes()))
	_, err := b.Participant(ctx, "r", "alice")
	require.ErrorIs(t, err, ErrNotFound)
	raw := srv.client(t, "")
	require.Eventually(t, func() bool {
		n, err := raw.Exists(ctx, "gxtest:room:r:parts", "gxtest:room:r:tracks", "gxtest:room:r:nodes", "gxtest:node:a:rooms").Result()
		members, err2 := raw.SMembers(ctx, "gxtest:nodes").Result()
		return err == nil && err2 == nil && n == 0 && len(members) == 1 && members[0] == "b"
	}, waitFor, tick)
}

// Redis is an index, not a dependency of running calls: while it is down the
// nodes keep their view and their entries, declare no peer down, and once it
// is back (empty, as after a restart) everything is re-published.
func TestRedisRestartKeepsServingAndReconciles(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	a := startNode(t, testRedisConfig(t, srv.addr, "a", "S"))
	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S"))
	evA, evB := record(t, a), record(t, b)
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "old"})
	b.AddParticipant(ParticipantEntry{Room: "r", Identity: "bob"})
	require.Eventually(t, func() bool {
		pa, err := a.Participants(ctx, "r")
		pb, err2 := b.Participants(ctx, "r")
		return err == nil && err2 == nil && len(pa) == 3 && len(pb) == 3
	}, waitFor, tick)

	srv.kill(syscall.SIGKILL)
	require.Eventually(t, func() bool { return !a.Connected() && !b.Connected() }, waitFor, tick)

	// Changes while Redis is away return at once and show locally.
	start := time.Now()
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "late"})
	a.RemoveParticipant("r", "old")
	require.Less(t, time.Since(start), 50*time.Millisecond, "announcing never waits for Redis")
	parts, err := a.Participants(ctx, "r")
	require.ErrorIs(t, err, ErrUnavailable)
	require.ElementsMatch(t, []ParticipantIdentity{"alice", "late"}, identities(parts))
	p, err := a.Participant(ctx, "r", "late")
	require.NoError(t, err, "own participants are found without Redis")
	require.Equal(t, NodeID("a"), p.Node)

	// Longer than the TTL: the peers stay in each other's view.
	require.Never(t, func() bool {
		return len(a.Nodes()) != 2 || len(b.Nodes()) != 2
	}, 3*testTTL, tick)

	srv.start()
	require.Eventually(t, func() bool { return a.Connected() && b.Connected() }, waitFor, tick)
	require.Eventually(t, func() bool {
		pa, err := a.Participants(ctx, "r")
		pb, err2 := b.Participants(ctx, "r")
		return err == nil && err2 == nil &&
			sameIDs(identities(pa), "alice", "bob", "late") && sameIDs(identities(pb), "alice", "bob", "late")
	}, waitFor, tick, "both nodes re-published what they own")
	evA.wait(t, "resync on a", func(ev Event) bool { return ev.Type == EventResync })
	evB.wait(t, "resync on b", func(ev Event) bool { return ev.Type == EventResync })

	// The bus works again.
	waitBus(t, a, "b")
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "after"})
	evB.wait(t, "after added", func(ev Event) bool { return ev.Type == EventParticipantAdded && ev.Identity == "after" })

	// Wait past the settle time: still nobody declared down, ever.
	require.Never(t, func() bool {
		return evA.has(ofType(EventNodeDown, "b")) || evB.has(ofType(EventNodeDown, "a"))
	}, 2*testTTL, tick)
	require.Len(t, a.Nodes(), 2)
}

// A node that comes back under the same ID (new epoch) removes what its
// previous run left behind.
func TestRedisRestartedNodeClearsStaleEntries(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	cfgA := testRedisConfig(t, srv.addr, "a", "S")
	a := startNode(t, cfgA, withEpoch(1))
	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S"))
	evB := record(t, b)
	waitBus(t, a, "b")
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})
	a.AddParticipant(ParticipantEntry{Room: "gone", Identity: "zed"})
	evB.wait(t, "zed added", func(ev Event) bool { return ev.Type == EventParticipantAdded && ev.Identity == "zed" })
	a.crash(t)

	a2 := startNode(t, cfgA, withEpoch(2))
	a2.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})
	evB.wait(t, "zed removed", func(ev Event) bool {
		return ev.Type == EventParticipantRemoved && ev.Identity == "zed" && ev.Epoch == 1
	})
	require.Eventually(t, func() bool {
		p, err := b.Participant(ctx, "r", "alice")
		return err == nil && p.Epoch == 2
	}, waitFor, tick)
	raw := srv.client(t, "")
	require.Eventually(t, func() bool {
		rooms, err := raw.SMembers(ctx, "gxtest:node:a:rooms").Result()
		n, err2 := raw.Exists(ctx, "gxtest:room:gone:parts", "gxtest:room:gone:nodes").Result()
		return err == nil && err2 == nil && len(rooms) == 1 && rooms[0] == "r" && n == 0
	}, waitFor, tick)
}

// A participant that reconnected to another node is neither deleted nor
// overwritten by its old node's stale session.
func TestRedisMovedParticipantKeepsNewOwner(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	a := startNode(t, testRedisConfig(t, srv.addr, "a", "S"))
	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S"))
	evA := record(t, a)
	waitBus(t, b, "a")
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice", JoinedAt: time.Now().Add(-time.Minute)})
	require.Eventually(t, func() bool {
		p, err := b.Participant(ctx, "r", "alice")
		return err == nil && p.Node == "a"
	}, waitFor, tick)
	b.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})
	evA.wait(t, "alice on b", func(ev Event) bool { return ev.Type == EventParticipantAdded && ev.Node == "b" })
	raw := srv.client(t, "")
	owner := func() NodeID {
		v, err := raw.HGet(ctx, "gxtest:room:r:parts", "alice").Result()
		if err != nil {
			return ""
		}
		p, err := ParseParticipantEntry([]byte(v))
		if err != nil {
			return ""
		}
		return p.Node
	}

	// A re-publishes its (older) session, as after a Redis restart: b keeps it.
	a.mu.Lock()
	a.dirty[entryKey{kind: kindParticipant, room: "r", id: "alice"}] = struct{}{}
	a.mu.Unlock()
	a.poke()
	require.Never(t, func() bool { return owner() != "b" }, 5*testHeartbeat, tick)

	// A drops its stale session: b's entry stays.
	a.RemoveParticipant("r", "alice")
	require.Never(t, func() bool { return owner() != "b" }, 5*testHeartbeat, tick)
	p, err := a.Participant(ctx, "r", "alice")
	require.NoError(t, err)
	require.Equal(t, NodeID("b"), p.Node)

	// A session that outlives the newer one takes the entry back.
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice", JoinedAt: time.Now().Add(-time.Minute)})
	require.Never(t, func() bool { return owner() != "b" }, 3*testHeartbeat, tick)
	b.RemoveParticipant("r", "alice")
	require.Eventually(t, func() bool { return owner() == "a" }, waitFor, tick)
}

func TestRedisPasswordFile(t *testing.T) {
	srv := startRedis(t, "--requirepass", "s3cret-pass")
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	require.NoError(t, os.WriteFile(good, []byte("s3cret-pass\n"), 0o600))
	require.NoError(t, os.WriteFile(bad, []byte("wrong\n"), 0o600))

	cfg := testRedisConfig(t, srv.addr, "a", "S")
	cfg.Redis.PasswordFile = good
	a := startNode(t, cfg)
	require.Eventually(t, a.Connected, waitFor, tick)

	cfg = testRedisConfig(t, srv.addr, "b", "S")
	cfg.Redis.PasswordFile = bad
	b := startNode(t, cfg)
	require.Never(t, b.Connected, 5*testHeartbeat, tick)
	require.Equal(t, []NodeID{"a"}, nodeIDs(a.Nodes()))

	cfg.Redis.PasswordFile = filepath.Join(dir, "missing")
	_, err := NewRedis(cfg, zerolog.Nop())
	require.ErrorContains(t, err, "password_file")
}

func identities(parts []ParticipantEntry) []ParticipantIdentity {
	var out []ParticipantIdentity
	for _, p := range parts {
		out = append(out, p.Identity)
	}
	return out
}

func sameIDs(got []ParticipantIdentity, want ...ParticipantIdentity) bool {
	if len(got) != len(want) {
		return false
	}
	seen := map[ParticipantIdentity]bool{}
	for _, g := range got {
		seen[g] = true
	}
	for _, w := range want {
		if !seen[w] {
			return false
		}
	}
	return true
}

// A node whose Redis is down when it starts serves alone and joins the
// cluster once Redis is there.
func TestRedisDownAtStart(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S"))
	require.Eventually(t, b.Connected, waitFor, tick)
	srv.kill(syscall.SIGKILL)

	a := startNode(t, testRedisConfig(t, srv.addr, "a", "S"))
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})
	require.Equal(t, []NodeID{"a"}, nodeIDs(a.Nodes()))
	p, err := a.Participant(ctx, "r", "alice")
	require.NoError(t, err)
	require.Equal(t, NodeID("a"), p.Node)
	placer, err := NewPlacer(testRedisConfig(t, srv.addr, "a", "S"), a, zerolog.Nop())
	require.NoError(t, err)
	pl, err := placer.Place(ctx, PlacementRequest{Room: "r"})
	require.NoError(t, err, "placement works without Redis")
	require.Equal(t, NodeID("a"), pl.Node.ID)
	require.False(t, a.Connected())

	srv.start()
	require.Eventually(t, func() bool { return len(a.Nodes()) == 2 && len(b.Nodes()) == 2 }, waitFor, tick)
	// (b may re-subscribe after a's announcement; then it gets a resync,
	// not the event, so look it up.)
	require.Eventually(t, func() bool {
		p, err := b.Participant(ctx, "r", "alice")
		return err == nil && p.Node == "a"
	}, waitFor, tick)
}

// The heartbeat does not queue behind directory lookups: with every
// connection lookups may use taken (here by blocking commands, standing in
// for placements, status and bridge reads queued on a slow link to Redis)
// for longer than liveness_ttl, the node stays alive for the others.
func TestRedisLookupsDoNotStarveTheHeartbeat(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	a := startNode(t, testRedisConfig(t, srv.addr, "a", "S"))
	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S"))
	require.Eventually(t, func() bool { return len(a.Nodes()) == 2 && len(b.Nodes()) == 2 }, waitFor, tick)

	var wg sync.WaitGroup
	for range 2 * a.client.Options().PoolSize {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = a.client.BLPop(ctx, 4*testTTL, "gxtest:nothing").Err()
		}()
	}
	require.Never(t, func() bool { return len(b.Nodes()) != 2 }, 3*testTTL, tick, "b lost a while a's lookups were queued")
	wg.Wait()
}

// A malformed node record in the registry is logged once, not at every
// heartbeat (two lines a second per record by default), and again when it
// changes.
func TestRedisMalformedRecordLoggedOnce(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	raw := srv.client(t, "")
	var logged logbuf.Buffer
	r, err := NewRedis(testRedisConfig(t, srv.addr, "a", "S"), zerolog.New(&logged).Level(zerolog.InfoLevel))
	require.NoError(t, err)
	n := &testNode{Redis: r, done: make(chan error, 1)}
	runCtx, cancel := context.WithCancel(ctx)
	n.cancel = cancel
	go func() { n.done <- r.Run(runCtx) }()
	t.Cleanup(func() { n.stop(t) })
	require.Eventually(t, func() bool { return n.Connected() }, waitFor, tick)

	lines := func() int { return strings.Count(logged.String(), "ignoring malformed node record") }
	rounds := func(k int) { // k more heartbeats of a
		t.Helper()
		start := r.view.Load().at
		require.Eventually(t, func() bool { return r.view.Load().at.Sub(start) >= time.Duration(k)*testHeartbeat }, waitFor, tick)
	}
	require.NoError(t, raw.SAdd(ctx, "gxtest:nodes", "bad").Err())
	require.NoError(t, raw.Set(ctx, "gxtest:node:bad", `{"id":"bad","epoch":`, 0).Err())
	require.Eventually(t, func() bool { return lines() == 1 }, waitFor, tick)
	rounds(5)
	require.Equal(t, 1, lines(), "the same record logged at every heartbeat")
	// (A record unchanged for liveness_ttl is removed with its id.)
	require.NoError(t, raw.Set(ctx, "gxtest:node:bad", `{"id":"other"}`, 0).Err())
	require.NoError(t, raw.SAdd(ctx, "gxtest:nodes", "bad").Err())
	require.Eventually(t, func() bool { return lines() == 2 }, waitFor, tick)
	rounds(3)
	require.Equal(t, 2, lines())
}

// Members of the nodes set that are not node IDs, and node records that
// stay malformed (written without a TTL), are removed instead of being
// looked at for ever; one that names another node's key ("a:rooms") must
// not break the heartbeat meanwhile.
func TestRedisReapsInvalidNodeIDsAndStuckRecords(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	raw := srv.client(t, "")
	a := startNode(t, testRedisConfig(t, srv.addr, "a", "S"))
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})
	require.Eventually(t, func() bool {
		ok, err := raw.SIsMember(ctx, "gxtest:node:a:rooms", "r").Result()
		return err == nil && ok
	}, waitFor, tick)

	ghost, err := MarshalParticipantEntry(ParticipantEntry{Room: "r", Identity: "eve", Node: "ghost", Epoch: 1})
	require.NoError(t, err)
	_, err = raw.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, "gxtest:nodes", "a:rooms", "bad id", "ghost")
		p.Set(ctx, "gxtest:node:ghost", `{"id":"ghost"`, 0)
		p.SAdd(ctx, "gxtest:node:ghost:rooms", "r")
		p.HSet(ctx, "gxtest:room:r:parts", "eve", ghost)
		return nil
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, err := raw.SMembers(ctx, "gxtest:nodes").Result()
		return err == nil && len(m) == 1 && m[0] == "a"
	}, waitFor, tick, "invalid ids or the stuck record's id still listed")
	n, err := raw.Exists(ctx, "gxtest:node:ghost", "gxtest:node:ghost:rooms").Result()
	require.NoError(t, err)
	require.Zero(t, n, "the stuck record or its room set is left")
	parts, err := raw.HKeys(ctx, "gxtest:room:r:parts").Result()
	require.NoError(t, err)
	require.Equal(t, []string{"alice"}, parts, "the stuck node's entries were not reaped")
	ok, err := raw.SIsMember(ctx, "gxtest:node:a:rooms", "r").Result()
	require.NoError(t, err)
	require.True(t, ok, "a's room set was touched")
	require.True(t, a.Connected())
}

// aclCommands is what a node needs of Redis (README, "Redis access"): with
// an ACL user limited to them, the key prefix and its channels, a cluster
// registers, reads the directory, exchanges messages and reaps a dead node.
const aclCommands = "+hello +auth +select +ping +get +set +del +exists +sadd +srem +smembers +sunion " +
	"+hget +hset +hdel +hgetall +publish +subscribe +unsubscribe +eval +evalsha"

func TestRedisACLUser(t *testing.T) {
	user := strings.Fields("gxconf on >acl-pass ~gxtest:* resetchannels &gxtest:* -@all " + aclCommands)
	srv := startRedis(t, append([]string{"--user", "default", "off", "--user"}, user...)...)
	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("acl-pass\n"), 0o600))
	cfg := func(id NodeID) Config {
		c := testRedisConfig(t, srv.addr, id, "S")
		c.Redis.Username, c.Redis.PasswordFile = "gxconf", pw
		return c
	}
	ctx := context.Background()
	a := startNode(t, cfg("a"))
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})
	b := startNode(t, cfg("b"))
	require.Eventually(t, func() bool {
		parts, err := b.Participants(ctx, "r")
		rooms, rerr := b.Rooms(ctx)
		_, perr := b.Participant(ctx, "r", "alice")
		return err == nil && rerr == nil && perr == nil && sameIDs(identities(parts), "alice") && slices.Equal(rooms, []RoomName{"r"})
	}, waitFor, tick)
	in := a.Listen("t", 1)
	require.NoError(t, b.Send(ctx, "a", "t", []byte("x")))
	select {
	case m := <-in.C():
		require.Equal(t, "x", string(m.Payload))
	case <-time.After(waitFor):
		require.FailNow(t, "no message")
	}
	a.crash(t)
	require.Eventually(t, func() bool {
		parts, err := b.Participants(ctx, "r")
		return err == nil && len(parts) == 0 && b.Connected()
	}, waitFor, tick)
}

// A node_down announcement of a node that is still listed (not sent by it:
// a departing node deletes its record first) hides the node for at most
// liveness_ttl, not until it restarts.
func TestRedisStrayNodeDownHidesANodeOnlyBriefly(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	raw := srv.client(t, "")
	a := startNode(t, testRedisConfig(t, srv.addr, "a", "S"))
	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S"))
	listsB := func() bool { return slices.Contains(nodeIDs(a.Nodes()), "b") }
	require.Eventually(t, listsB, waitFor, tick)
	waitBus(t, b, "a")
	ev := record(t, a)

	down, err := MarshalEvent(Event{Type: EventNodeDown, Node: "b", Epoch: b.Self().Epoch})
	require.NoError(t, err)
	require.NoError(t, raw.Publish(ctx, "gxtest:events", down).Err())
	ev.wait(t, "node_down b", ofType(EventNodeDown, "b"))
	require.Eventually(t, listsB, waitFor, tick, "b stays hidden")
	ev.wait(t, "node_up b", ofType(EventNodeUp, "b"))
}

// A live node whose record the others refuse (here: a signal_url with user
// info, as a node of an older gxconf could publish) rewrites it at every
// heartbeat; it is logged once, is not used, and its record is not removed.
func TestRedisRefusedLiveRecordLoggedOnce(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	raw := srv.client(t, "")
	var logged logbuf.Buffer
	r, err := NewRedis(testRedisConfig(t, srv.addr, "a", "S"), zerolog.New(&logged).Level(zerolog.InfoLevel))
	require.NoError(t, err)
	n := &testNode{Redis: r, done: make(chan error, 1)}
	runCtx, cancel := context.WithCancel(ctx)
	n.cancel = cancel
	go func() { n.done <- r.Run(runCtx) }()
	t.Cleanup(func() { n.stop(t) })
	require.Eventually(t, n.Connected, waitFor, tick)

	peer := sampleNode()
	peer.ID, peer.State = "c", NodeServing
	peer.SignalURL = "wss://admin:hunter2@c.example/rtc"
	require.NoError(t, raw.SAdd(ctx, "gxtest:nodes", "c").Err())
	for i := range 2 * int(testTTL/testHeartbeat) {
		peer.UpdatedAt = peer.UpdatedAt.Add(testHeartbeat)
		rec, err := MarshalNode(peer)
		require.NoError(t, err)
		require.NoError(t, raw.Set(ctx, "gxtest:node:c", rec, testTTL).Err())
		start := r.view.Load().at
		require.Eventually(t, func() bool { return r.view.Load().at.After(start) }, waitFor, tick, "round %d", i)
	}
	out := logged.String()
	require.Equal(t, 1, strings.Count(out, "ignoring malformed node record"), out)
	require.NotContains(t, out, "hunter2")
	require.Equal(t, []NodeID{"a"}, nodeIDs(n.Nodes()))
	require.EqualValues(t, 1, raw.Exists(ctx, "gxtest:node:c").Val(), "a live node's record was removed")
}
