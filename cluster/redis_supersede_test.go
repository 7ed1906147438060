package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// A node started again while its previous process still runs (a restart
// that does not wait for the old process' drain, or two nodes configured
// with the same node_id): the newer run owns the node ID. The older run
// must neither keep overwriting the newer's record (every other node would
// see the node go down and up at each heartbeat, and the directory entries
// of one run or the other hidden in turn) nor, when it stops, delete the
// newer's record and directory entries.
func TestRedisSupersededRunYields(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	raw := srv.client(t, "")
	cfg := testRedisConfig(t, srv.addr, "dup", "S")
	old := startNode(t, cfg, withEpoch(1))
	require.Eventually(t, func() bool { return old.Connected() }, waitFor, tick)
	old.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})

	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S"))
	// b is busier than the older run: placement would prefer the latter.
	b.AddParticipant(ParticipantEntry{Room: "rb", Identity: "carol"})
	b.AddParticipant(ParticipantEntry{Room: "rb", Identity: "dave"})
	evB := record(t, b)
	waitBus(t, b, "dup")

	newer := startNode(t, cfg, withEpoch(2))
	newer.AddParticipant(ParticipantEntry{Room: "r", Identity: "bob"})
	require.Eventually(t, func() bool {
		p, err := b.Participant(ctx, "r", "bob")
		return err == nil && p.Epoch == 2
	}, waitFor, tick)
	epochOf := func() uint64 {
		v, err := raw.Get(ctx, "gxtest:node:dup").Bytes()
		if err != nil {
			return 0
		}
		n, err := ParseNode(v)
		if err != nil {
			return 0
		}
		return n.Epoch
	}
	// From the newer run's registration on the record stays the newer's:
	// the older run notices at its next heartbeat and stops writing.
	require.Never(t, func() bool { return epochOf() != 2 }, 10*testHeartbeat, tick/2,
		"the older run overwrote the newer run's record")
	require.True(t, old.superseded.Load())
	// Nor does the older run place anyone on itself: they would be missing
	// from the directory.
	placer, err := NewPlacer(cfg, old, nopLog())
	require.NoError(t, err)
	pl, err := placer.Place(ctx, PlacementRequest{Room: "r2", ServerName: "x.example"})
	require.NoError(t, err)
	require.Equal(t, NodeID("b"), pl.Node.ID)
	// Nor does it list the newer run as another node, or its entries: the
	// node ID is the address, and a message to it would stay in this process.
	var dups []NodeState
	for _, n := range old.Nodes() {
		if n.ID == "dup" {
			dups = append(dups, n.State)
		}
	}
	require.Equal(t, []NodeState{NodeDraining}, dups)
	_, err = old.Participant(ctx, "r", "bob")
	require.ErrorIs(t, err, ErrNotFound)
	// b saw the newer run replace the older one, and never the older back.
	evB.wait(t, "newer run up", func(ev Event) bool { return ev.Type == EventNodeUp && ev.Node == "dup" && ev.Epoch == 2 })
	backs := func() int {
		evB.mu.Lock()
		defer evB.mu.Unlock()
		n, after := 0, false
		for _, ev := range evB.events {
			if ev.Type == EventNodeUp && ev.Node == "dup" {
				after = after || ev.Epoch == 2
				if after && ev.Epoch == 1 {
					n++
				}
			}
		}
		return n
	}
	require.Zero(t, backs(), "b saw the older run come back")

	// The older run stops (deregistering as usual): the newer run's record
	// and entries stay.
	old.stop(t)
	require.EqualValues(t, 2, epochOf())
	v, err := raw.HGet(ctx, "gxtest:room:r:parts", "bob").Bytes()
	require.NoError(t, err)
	p, err := ParseParticipantEntry(v)
	require.NoError(t, err)
	require.EqualValues(t, 2, p.Epoch)
	require.Never(t, func() bool {
		return evB.has(func(ev Event) bool { return ev.Type == EventNodeDown && ev.Node == "dup" && ev.Epoch == 2 })
	}, 5*testHeartbeat, tick, "b saw the newer run go down")
	_, err = b.Participant(ctx, "r", "bob")
	require.NoError(t, err)
}

// A superseded run whose newer run stops (its record gone) registers again
// and re-publishes what it still serves.
func TestRedisSupersededRunReturnsAfterNewerLeaves(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	cfg := testRedisConfig(t, srv.addr, "dup", "S")
	old := startNode(t, cfg, withEpoch(1))
	old.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})
	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S"))
	require.Eventually(t, func() bool {
		_, err := b.Participant(ctx, "r", "alice")
		return err == nil
	}, waitFor, tick)

	newer := startNode(t, cfg, withEpoch(2))
	require.Eventually(t, old.superseded.Load, waitFor, tick)
	// The newer run pruned the older run's entries.
	require.Eventually(t, func() bool {
		_, err := b.Participant(ctx, "r", "alice")
		return errors.Is(err, ErrNotFound)
	}, waitFor, tick)

	newer.stop(t)
	require.Eventually(t, func() bool {
		p, err := b.Participant(ctx, "r", "alice")
		return err == nil && p.Epoch == 1 && !old.superseded.Load()
	}, waitFor, tick)
}

// Redis restarts empty while an older run of a node ID still runs, and the
// older run heartbeats first: it registers again (the record was absent)
// and re-publishes its entries. The newer run, finding the older's record
// where its own should be, re-publishes its own entries too (and takes the
// node ID back), instead of going on as if its entries were still there.
func TestRedisNewerRunReconcilesAfterAnOlderRunsRecord(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	raw := srv.client(t, "")
	cfg := testRedisConfig(t, srv.addr, "dup", "S")
	old := startNode(t, cfg, withEpoch(1))
	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S"))
	newer := startNode(t, cfg, withEpoch(2))
	newer.AddParticipant(ParticipantEntry{Room: "r", Identity: "bob"})
	require.Eventually(t, func() bool {
		p, err := b.Participant(ctx, "r", "bob")
		return err == nil && p.Epoch == 2 && old.superseded.Load()
	}, waitFor, tick)

	// The restart and the older run's first heartbeat, at once.
	rec, err := MarshalNode(old.Self())
	require.NoError(t, err)
	_, err = raw.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.FlushAll(ctx)
		p.Set(ctx, "gxtest:node:dup", rec, testTTL)
		p.SAdd(ctx, "gxtest:nodes", "dup")
		return nil
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p, err := b.Participant(ctx, "r", "bob")
		return err == nil && p.Epoch == 2
	}, waitFor, tick, "the newer run's entries were not re-published")
}

// An older run that overwrites the record at every heartbeat (an older
// gxconf, without the newer-epoch check) makes the newer run re-publish its
// entries at most once per liveness_ttl, not at every heartbeat.
func TestRedisForeignRecordReconcilesAtMostOncePerTTL(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	raw := srv.client(t, "")
	cfg := testRedisConfig(t, srv.addr, "dup", "S")
	newer := startNode(t, cfg, withEpoch(2))
	require.Eventually(t, newer.Connected, waitFor, tick)
	ev := record(t, newer)
	older := newer.Self()
	older.Epoch = 1
	rec, err := MarshalNode(older)
	require.NoError(t, err)

	start := time.Now()
	for time.Since(start) < 3*testTTL {
		require.NoError(t, raw.Set(ctx, "gxtest:node:dup", rec, testTTL).Err())
		time.Sleep(tick) // the older run's heartbeat, far more often than a real one
	}
	elapsed := time.Since(start)
	resyncs := func() int {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		n := 0
		for _, e := range ev.events {
			if e.Type == EventResync {
				n++
			}
		}
		return n
	}
	require.Positive(t, resyncs(), "the newer run never re-published")
	require.LessOrEqual(t, resyncs(), int(elapsed/testTTL)+1)
}

// Messages to a node ID go to its newest run only: Pub/Sub would hand them
// to every subscriber of the inbox, and the older run would act on what
// the newer one answers. The older run takes them again once the newer
// run has left.
func TestRedisSupersededRunLeavesTheInbox(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	raw := srv.client(t, "")
	cfg := testRedisConfig(t, srv.addr, "dup", "S")
	old := startNode(t, cfg, withEpoch(1))
	oldIn := old.Listen("t", 8)
	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S"))
	waitBus(t, b, "dup")
	subscribers := func() int64 {
		m, err := raw.PubSubNumSub(ctx, "gxtest:node:dup:msg").Result()
		require.NoError(t, err)
		return m["gxtest:node:dup:msg"]
	}
	receive := func(in *Inbox, want string) {
		t.Helper()
		select {
		case m := <-in.C():
			require.Equal(t, want, string(m.Payload))
		case <-time.After(waitFor):
			require.FailNow(t, "no message", want)
		}
	}

	newer := startNode(t, cfg, withEpoch(2))
	newIn := newer.Listen("t", 8)
	require.Eventually(t, func() bool { return old.superseded.Load() && subscribers() == 1 }, waitFor, tick,
		"the older run still subscribes to the inbox")
	require.NoError(t, b.Send(ctx, "dup", "t", []byte("1")))
	receive(newIn, "1")
	require.Empty(t, oldIn.C(), "the older run got the newer run's message")

	newer.stop(t)
	require.Eventually(t, func() bool { return !old.superseded.Load() && subscribers() == 1 }, waitFor, tick)
	require.NoError(t, b.Send(ctx, "dup", "t", []byte("2")))
	receive(oldIn, "2")
}

// An older run that found its own record at its heartbeat (after a Redis
// restart) may reconcile only after the newer run has written its record
// and entries again: its reconcile must not delete the newer run's entries
// as stale ones of its own.
func TestRedisReconcileSparesANewerRunsEntries(t *testing.T) {
	ctx := context.Background()
	// The older run, between its heartbeat and its reconcile.
	raw, _, old := olderAndNewerRun(t, false)
	old.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})
	require.ErrorIs(t, old.reconcile(ctx), errNotOwnRecord)
	v, err := raw.HGet(ctx, "gxtest:room:r:parts", "bob").Bytes()
	require.NoError(t, err, "the older run deleted the newer run's entry")
	p, err := ParseParticipantEntry(v)
	require.NoError(t, err)
	require.EqualValues(t, 2, p.Epoch)
	require.False(t, raw.HExists(ctx, "gxtest:room:r:parts", "alice").Val(), "the older run wrote while superseded")
}

// An older run that flushes a removal before its heartbeat finds it
// superseded must not delete the newer run's entries for the same room,
// identity or track, nor take the room out of the node's room set (which
// reaping walks).
func TestRedisOlderRunsRemovalSparesANewerRunsEntries(t *testing.T) {
	ctx := context.Background()
	// The older run, between the newer run's registration and its own
	// next heartbeat: bob and his track leave it, and so does the room.
	raw, newer, old := olderAndNewerRun(t, true)
	old.AddTrack(TrackEntry{Room: "r", SID: "TR_1", Participant: "bob"})
	old.AddParticipant(ParticipantEntry{Room: "r", Identity: "bob"})
	old.ReleaseRoom("r")
	require.NoError(t, old.flush(ctx))

	for _, k := range []struct{ hash, field string }{
		{"gxtest:room:r:nodes", "dup"}, {"gxtest:room:r:parts", "bob"}, {"gxtest:room:r:tracks", "TR_1"},
	} {
		require.True(t, raw.HExists(ctx, k.hash, k.field).Val(), "the older run deleted %s", k.hash)
	}
	require.True(t, raw.SIsMember(ctx, "gxtest:node:dup:rooms", "r").Val(), "the older run dropped the room from the room set")
	// Its own removals still work while the record is its own.
	newer.ReleaseRoom("r")
	require.Eventually(t, func() bool {
		return raw.Exists(ctx, "gxtest:room:r:nodes", "gxtest:room:r:parts", "gxtest:room:r:tracks").Val() == 0 &&
			!raw.SIsMember(ctx, "gxtest:node:dup:rooms", "r").Val()
	}, waitFor, tick)
}

// Nor may such an older run replace the newer run's entries for the same
// room, identity or track with its own: the others would take them for
// entries of a run that is not live, and the newer run would not write
// them again.
func TestRedisOlderRunsWritesSpareANewerRunsEntries(t *testing.T) {
	ctx := context.Background()
	raw, _, old := olderAndNewerRun(t, true)
	old.AddParticipant(ParticipantEntry{Room: "r", Identity: "bob", JoinedAt: time.Now().Add(time.Hour)})
	old.AddTrack(TrackEntry{Room: "r", SID: "TR_1", Participant: "bob"})
	require.NoError(t, old.flush(ctx))

	epochs := map[string]string{}
	for _, k := range []struct{ hash, field string }{
		{"gxtest:room:r:nodes", "dup"}, {"gxtest:room:r:parts", "bob"}, {"gxtest:room:r:tracks", "TR_1"},
	} {
		v, err := raw.HGet(ctx, k.hash, k.field).Result()
		require.NoError(t, err)
		var e struct {
			Epoch string `json:"epoch"`
		}
		require.NoError(t, json.Unmarshal([]byte(v), &e))
		epochs[k.hash] = e.Epoch
	}
	require.Equal(t, map[string]string{
		"gxtest:room:r:nodes": "2", "gxtest:room:r:parts": "2", "gxtest:room:r:tracks": "2",
	}, epochs, "the older run replaced the newer run's entries")
}

// olderAndNewerRun starts a node's newer run (epoch 2) with bob in room r,
// and his track TR_1 with track, waits until Redis holds them, and returns
// Redis, that run and an older run of the same node (epoch 1) that was
// made but not started: it acts as a run that has not yet seen, at its
// heartbeat, that it is superseded.
func olderAndNewerRun(t *testing.T, track bool) (raw *redis.Client, newer *testNode, old *Redis) {
	t.Helper()
	srv := startRedis(t)
	ctx := context.Background()
	raw = srv.client(t, "")
	cfg := testRedisConfig(t, srv.addr, "dup", "S")
	newer = startNode(t, cfg, withEpoch(2))
	newer.AddParticipant(ParticipantEntry{Room: "r", Identity: "bob"})
	hash, field := "gxtest:room:r:parts", "bob"
	if track {
		newer.AddTrack(TrackEntry{Room: "r", SID: "TR_1", Participant: "bob"})
		hash, field = "gxtest:room:r:tracks", "TR_1"
	}
	require.Eventually(t, func() bool { return raw.HExists(ctx, hash, field).Val() }, waitFor, tick)
	old, err := NewRedis(cfg, nopLog(), withEpoch(1))
	require.NoError(t, err)
	t.Cleanup(func() { _ = old.closeClients() })
	return raw, newer, old
}
