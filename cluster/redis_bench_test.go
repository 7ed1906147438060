package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// Benchmarks against a real redis-server on loopback (same 2-core box as
// the test): go test -run '^$' -bench . -benchmem ./cluster/

// benchNode is a Redis registry driven by hand (no Run): each call of
// round is one heartbeat.
func benchNode(b *testing.B, addr string, id NodeID) *Redis {
	b.Helper()
	cfg := testRedisConfig(b, addr, id, "S")
	cfg.LivenessTTL = time.Minute
	cfg.HeartbeatInterval = 10 * time.Second
	cfg.Redis.OpTimeout = 5 * time.Second
	r, err := NewRedis(cfg, zerolog.Nop())
	require.NoError(b, err)
	b.Cleanup(func() { _ = r.closeClients() })
	require.NoError(b, r.round(context.Background()))
	return r
}

func BenchmarkRedisHeartbeat(b *testing.B) {
	for _, peers := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("peers=%d", peers), func(b *testing.B) {
			srv := startRedis(b)
			ctx := context.Background()
			for i := range peers {
				benchNode(b, srv.addr, NodeID(fmt.Sprintf("peer%02d", i)))
			}
			r := benchNode(b, srv.addr, "self")
			require.NoError(b, r.round(ctx))
			require.Len(b, r.Nodes(), peers+1)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := r.round(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// lookupPair: node a owns a room of n participants with one track each;
// node b looks them up.
func lookupPair(b *testing.B, n int) (a, r *Redis) {
	srv := startRedis(b)
	ctx := context.Background()
	a = benchNode(b, srv.addr, "a")
	r = benchNode(b, srv.addr, "b")
	for i := range n {
		id := ParticipantIdentity(fmt.Sprintf("@user%04d:bund.test|DEVICE", i))
		a.AddParticipant(ParticipantEntry{Room: "room", Identity: id, SID: fmt.Sprintf("PA_%04d", i)})
		a.AddTrack(TrackEntry{Room: "room", SID: TrackID(fmt.Sprintf("TR_%04d", i)), Participant: id, Kind: "audio", MimeType: "audio/opus", Layers: 1})
	}
	require.NoError(b, a.flush(ctx))
	require.NoError(b, a.round(ctx))
	require.NoError(b, r.round(ctx))
	return a, r
}

func BenchmarkRedisLookup(b *testing.B) {
	ctx := context.Background()
	_, r := lookupPair(b, 100)
	b.Run("Participant", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Participant(ctx, "room", "@user0042:bund.test|DEVICE"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("RoomNodes", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if hosts, err := r.RoomNodes(ctx, "room"); err != nil || len(hosts) != 1 {
				b.Fatal(err, hosts)
			}
		}
	})
	b.Run("Participants/100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if parts, err := r.Participants(ctx, "room"); err != nil || len(parts) != 100 {
				b.Fatal(err, len(parts))
			}
		}
	})
	b.Run("Tracks/100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if tracks, err := r.Tracks(ctx, "room"); err != nil || len(tracks) != 100 {
				b.Fatal(err, len(tracks))
			}
		}
	})
	b.Run("Placer", func(b *testing.B) {
		p, err := NewPlacer(r.cfg, r, zerolog.Nop())
		require.NoError(b, err)
		p.pendingWindow = 0 // thousands of placements would fill both nodes
		b.ReportAllocs()
		for b.Loop() {
			if pl, err := p.Place(ctx, PlacementRequest{Room: "room", ServerName: "bund.test"}); err != nil || pl.Node.ID != "a" {
				b.Fatal(err, pl.Node.ID)
			}
		}
	})
}

// BenchmarkRedisAnnounce: one participant joins and leaves, each change
// flushed on its own (the worst case; the loop coalesces bursts).
func BenchmarkRedisAnnounce(b *testing.B) {
	srv := startRedis(b)
	ctx := context.Background()
	r := benchNode(b, srv.addr, "a")
	b.ReportAllocs()
	for b.Loop() {
		r.AddParticipant(ParticipantEntry{Room: "room", Identity: "@alice:bund.test|D"})
		if err := r.flush(ctx); err != nil {
			b.Fatal(err)
		}
		r.RemoveParticipant("room", "@alice:bund.test|D")
		if err := r.flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPlace(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Site = "A"
	cfg.Sites = map[SiteID]SiteConfig{"A": {URL: "wss://a.example", Fallback: []SiteID{"B"}}, "B": {URL: "wss://b.example"}}
	cfg.ClientPrefixes = map[string]SiteID{"10.1.0.0/16": "A", "10.2.0.0/16": "B"}
	topo, err := NewTopology(cfg)
	require.NoError(b, err)
	var nodes []Node
	for i := range 50 {
		site := SiteID("A")
		if i%2 == 1 {
			site = "B"
		}
		nodes = append(nodes, Node{
			ID: NodeID(fmt.Sprintf("n%02d", i)), Site: site, State: NodeServing,
			Limits: DefaultConfig().Limits, Load: Load{Participants: uint32(i * 7 % 50), CPU: float64(i%10) / 20},
		})
	}
	hosting := []RoomEntry{{Room: "r", Node: "n07"}, {Room: "r", Node: "n12"}}
	req := PlacementRequest{Room: "r", ServerName: "bund.test", ClientIP: netipAddr("10.2.3.4")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Place(topo, nodes, hosting, req, nil); err != nil {
			b.Fatal(err)
		}
	}
}
