package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// testTopology: sites A (fallback B, C), B (fallback A), C (no entry URL).
func testTopology(t *testing.T) *Topology {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Site = "A"
	cfg.Sites = map[SiteID]SiteConfig{
		"A": {URL: "wss://a.example", Fallback: []SiteID{"B", "C"}},
		"B": {URL: "wss://b.example", Fallback: []SiteID{"A"}},
		"C": {},
	}
	cfg.ClientPrefixes = map[string]SiteID{
		"10.0.0.0/8":  "A",
		"10.2.0.0/16": "B",
		"fd00::/8":    "C",
	}
	cfg.Homeservers = map[string]SiteID{"b.example": "B", "c.example:8448": "C"}
	cfg.Federations = map[FederationID]FederationConfig{
		"east": {Site: "C", Homeservers: []string{"east1.example", "East2.example"}},
	}
	require.NoError(t, cfg.Validate())
	topo, err := NewTopology(cfg)
	require.NoError(t, err)
	return topo
}

type nodeOpt func(*Node)

func node(id string, site SiteID, participants uint32, opts ...nodeOpt) Node {
	n := Node{
		ID: NodeID(id), Site: site, Epoch: 1, State: NodeServing,
		SignalURL: "wss://" + id + ".example",
		Limits:    Limits{MaxParticipants: 10, MaxTracks: 40, MaxBitrate: 1000, MaxCPU: 0.9},
		Load:      Load{Participants: participants},
	}
	for _, o := range opts {
		o(&n)
	}
	return n
}

func draining(n *Node)        { n.State = NodeDraining }
func cpu(c float64) nodeOpt   { return func(n *Node) { n.Load.CPU = c } }
func tracks(c uint32) nodeOpt { return func(n *Node) { n.Load.Tracks = c } }
func bitrate(in, out uint64) nodeOpt {
	return func(n *Node) { n.Load.BitrateIn, n.Load.BitrateOut = in, out }
}
func unlimited(n *Node) { n.Limits = Limits{} }
func hosts(ids ...string) []RoomEntry {
	var out []RoomEntry
	for _, id := range ids {
		out = append(out, RoomEntry{Room: "r", Node: NodeID(id), Epoch: 1})
	}
	return out
}

func TestPlace(t *testing.T) {
	topo := testTopology(t)
	local := PlacementRequest{Room: "r", ServerName: "a.example"}
	tests := []struct {
		name    string
		nodes   []Node
		entries []RoomEntry
		req     PlacementRequest
		pending map[NodeID]uint32
		// want: node, site, URL, rule, hosting, fallback; or err.
		node     NodeID
		site     SiteID
		url      string
		rule     SiteRule
		hosting  bool
		fallback bool
		err      error
	}{
		{
			name:  "least loaded in the default site",
			nodes: []Node{node("a1", "A", 5), node("a2", "A", 2), node("b1", "B", 0)},
			req:   local, node: "a2", site: "A", url: "wss://a.example", rule: RuleDefault,
		},
		{
			name:    "a node already hosting the room wins over a less loaded one",
			nodes:   []Node{node("a1", "A", 5), node("a2", "A", 2)},
			entries: hosts("a1"), req: local, node: "a1", site: "A", url: "wss://a.example", rule: RuleDefault, hosting: true,
		},
		{
			name:    "of several hosting nodes the least loaded",
			nodes:   []Node{node("a1", "A", 5), node("a2", "A", 2), node("a3", "A", 4)},
			entries: hosts("a1", "a3"), req: local, node: "a3", site: "A", url: "wss://a.example", rule: RuleDefault, hosting: true,
		},
		{
			name:    "a full hosting node is skipped",
			nodes:   []Node{node("a1", "A", 10), node("a2", "A", 2)},
			entries: hosts("a1"), req: local, node: "a2", site: "A", url: "wss://a.example", rule: RuleDefault,
		},
		{
			name:    "a draining hosting node is skipped",
			nodes:   []Node{node("a1", "A", 1, draining), node("a2", "A", 2)},
			entries: hosts("a1"), req: local, node: "a2", site: "A", url: "wss://a.example", rule: RuleDefault,
		},
		{
			name:    "a hosting node in another site does not pull the requester there",
			nodes:   []Node{node("a1", "A", 3), node("b1", "B", 0)},
			entries: hosts("b1"), req: local, node: "a1", site: "A", url: "wss://a.example", rule: RuleDefault,
		},
		{
			name:  "track limit",
			nodes: []Node{node("a1", "A", 1, tracks(40)), node("a2", "A", 5)},
			req:   local, node: "a2", site: "A", url: "wss://a.example", rule: RuleDefault,
		},
		{
			name:  "bitrate limit counts in and out",
			nodes: []Node{node("a1", "A", 1, bitrate(600, 400)), node("a2", "A", 5)},
			req:   local, node: "a2", site: "A", url: "wss://a.example", rule: RuleDefault,
		},
		{
			name:  "cpu limit",
			nodes: []Node{node("a1", "A", 1, cpu(0.95)), node("a2", "A", 5)},
			req:   local, node: "a2", site: "A", url: "wss://a.example", rule: RuleDefault,
		},
		{
			name:  "cpu is part of the load score",
			nodes: []Node{node("a1", "A", 1, cpu(0.8)), node("a2", "A", 5, cpu(0.1))},
			req:   local, node: "a2", site: "A", url: "wss://a.example", rule: RuleDefault,
		},
		{
			name:    "pending placements count as participants",
			nodes:   []Node{node("a1", "A", 2), node("a2", "A", 3)},
			pending: map[NodeID]uint32{"a1": 2},
			req:     local, node: "a2", site: "A", url: "wss://a.example", rule: RuleDefault,
		},
		{
			name:    "pending placements can fill a node",
			nodes:   []Node{node("a1", "A", 8)},
			pending: map[NodeID]uint32{"a1": 2},
			req:     local, err: ErrNoCapacity,
		},
		{
			name:  "unlimited nodes: fewest participants, then node ID",
			nodes: []Node{node("a2", "A", 4, unlimited), node("a1", "A", 4, unlimited), node("a3", "A", 9, unlimited)},
			req:   local, node: "a1", site: "A", url: "wss://a.example", rule: RuleDefault,
		},
		{
			name:  "all nodes of the site full: first fallback site",
			nodes: []Node{node("a1", "A", 10), node("b1", "B", 3), node("c1", "C", 0)},
			req:   local, node: "b1", site: "B", url: "wss://b.example", rule: RuleDefault, fallback: true,
		},
		{
			name:  "all nodes of the site draining: fallback",
			nodes: []Node{node("a1", "A", 0, draining), node("b1", "B", 3)},
			req:   local, node: "b1", site: "B", url: "wss://b.example", rule: RuleDefault, fallback: true,
		},
		{
			name:  "fallback order: C after B, C has no entry URL so the node's own",
			nodes: []Node{node("a1", "A", 10), node("b1", "B", 10), node("c1", "C", 9)},
			req:   local, node: "c1", site: "C", url: "wss://c1.example", rule: RuleDefault, fallback: true,
		},
		{
			name:    "in a fallback site the hosting node is preferred",
			nodes:   []Node{node("a1", "A", 10), node("b1", "B", 1), node("b2", "B", 5)},
			entries: hosts("a1", "b2"), req: local, node: "b2", site: "B", url: "wss://b.example", rule: RuleDefault, hosting: true, fallback: true,
		},
		{
			name:  "no site without fallbacks has room: every node full",
			nodes: []Node{node("c1", "C", 10), node("a1", "A", 0)},
			req:   PlacementRequest{Room: "r", ServerName: "east1.example"}, err: ErrNoCapacity,
		},
		{
			name:  "no live node anywhere",
			nodes: nil, req: local, err: ErrNoNodes,
		},
		{
			name:  "only draining nodes: no nodes, not no capacity",
			nodes: []Node{node("a1", "A", 0, draining), node("b1", "B", 0, draining)},
			req:   local, err: ErrNoNodes,
		},
		{
			name:  "homeserver map",
			nodes: []Node{node("a1", "A", 0), node("b1", "B", 5)},
			req:   PlacementRequest{Room: "r", ServerName: "b.example"}, node: "b1", site: "B", url: "wss://b.example", rule: RuleHomeserver,
		},
		{
			name:  "homeserver map matches with a port, case-insensitively",
			nodes: []Node{node("a1", "A", 0), node("c1", "C", 5)},
			req:   PlacementRequest{Room: "r", ServerName: "C.example:8448"}, node: "c1", site: "C", url: "wss://c1.example", rule: RuleHomeserver,
		},
		{
			name:  "a server name with a port matches the rule for its host",
			nodes: []Node{node("a1", "A", 0), node("b1", "B", 5)},
			req:   PlacementRequest{Room: "r", ServerName: "b.example:8448"}, node: "b1", site: "B", url: "wss://b.example", rule: RuleHomeserver,
		},
		{
			name:  "federation of the homeserver",
			nodes: []Node{node("a1", "A", 0), node("c1", "C", 5)},
			req:   PlacementRequest{Room: "r", ServerName: "east2.example"}, node: "c1", site: "C", url: "wss://c1.example", rule: RuleFederation,
		},
		{
			name:  "client prefix beats the homeserver",
			nodes: []Node{node("a1", "A", 0), node("b1", "B", 5)},
			req:   PlacementRequest{Room: "r", ServerName: "b.example", ClientIP: netip.MustParseAddr("10.9.1.1")}, node: "a1", site: "A", url: "wss://a.example", rule: RuleClientPrefix,
		},
		{
			name:  "longest client prefix wins",
			nodes: []Node{node("a1", "A", 0), node("b1", "B", 5)},
			req:   PlacementRequest{Room: "r", ClientIP: netip.MustParseAddr("10.2.3.4")}, node: "b1", site: "B", url: "wss://b.example", rule: RuleClientPrefix,
		},
		{
			name:  "IPv4-mapped IPv6 client address",
			nodes: []Node{node("a1", "A", 0), node("b1", "B", 5)},
			req:   PlacementRequest{Room: "r", ClientIP: netip.MustParseAddr("::ffff:10.2.3.4")}, node: "b1", site: "B", url: "wss://b.example", rule: RuleClientPrefix,
		},
		{
			name:  "IPv6 prefix",
			nodes: []Node{node("a1", "A", 0), node("c1", "C", 5)},
			req:   PlacementRequest{Room: "r", ClientIP: netip.MustParseAddr("fd12::1")}, node: "c1", site: "C", url: "wss://c1.example", rule: RuleClientPrefix,
		},
		{
			name:  "an address outside every prefix falls through to the homeserver",
			nodes: []Node{node("a1", "A", 0), node("b1", "B", 5)},
			req:   PlacementRequest{Room: "r", ServerName: "b.example", ClientIP: netip.MustParseAddr("192.0.2.1")}, node: "b1", site: "B", url: "wss://b.example", rule: RuleHomeserver,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pl, err := Place(topo, tc.nodes, tc.entries, tc.req, tc.pending)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.node, pl.Node.ID)
			require.Equal(t, tc.site, pl.Site)
			require.Equal(t, tc.url, pl.URL)
			require.Equal(t, tc.rule, pl.Rule)
			require.Equal(t, tc.hosting, pl.Hosting)
			require.Equal(t, tc.fallback, pl.Fallback)
		})
	}
}

func TestPlaceDefaultSite(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Site = "A"
	cfg.DefaultSite = "B"
	cfg.Sites = map[SiteID]SiteConfig{"A": {URL: "wss://a.example"}, "B": {URL: "wss://b.example"}}
	require.NoError(t, cfg.Validate())
	topo, err := NewTopology(cfg)
	require.NoError(t, err)
	pl, err := Place(topo, []Node{node("a1", "A", 0), node("b1", "B", 5)}, nil, PlacementRequest{Room: "r", ServerName: "x.example"}, nil)
	require.NoError(t, err)
	require.Equal(t, NodeID("b1"), pl.Node.ID)
	require.Equal(t, RuleDefault, pl.Rule)
	// B has no fallback: full means refused, not A.
	_, err = Place(topo, []Node{node("a1", "A", 0), node("b1", "B", 10)}, nil, PlacementRequest{Room: "r"}, nil)
	require.ErrorIs(t, err, ErrNoCapacity)
}

// fakeSource is a PlacementSource with fixed answers.
type fakeSource struct {
	nodes   []Node
	hosting []RoomEntry
	err     error
}

func (f *fakeSource) Nodes() []Node { return f.nodes }
func (f *fakeSource) RoomNodes(context.Context, RoomName) ([]RoomEntry, error) {
	return f.hosting, f.err
}

func TestPlacerSpreadsABurst(t *testing.T) {
	cfg := DefaultConfig()
	src := &fakeSource{nodes: []Node{node("n1", "default", 0, unlimited), node("n2", "default", 0, unlimited), node("n3", "default", 0, unlimited)}}
	p, err := NewPlacer(cfg, src, zerolog.Nop())
	require.NoError(t, err)
	count := map[NodeID]int{}
	for i := range 30 {
		pl, err := p.Place(context.Background(), PlacementRequest{Room: RoomName(fmt.Sprint("r", i))})
		require.NoError(t, err)
		count[pl.Node.ID]++
	}
	require.Equal(t, map[NodeID]int{"n1": 10, "n2": 10, "n3": 10}, count)
}

func TestPlacerToleratesDirectoryOutage(t *testing.T) {
	cfg := DefaultConfig()
	src := &fakeSource{
		nodes:   []Node{node("n1", "default", 5), node("n2", "default", 0)},
		hosting: hosts("n1"),
		err:     fmt.Errorf("read: %w", ErrUnavailable),
	}
	p, err := NewPlacer(cfg, src, zerolog.Nop())
	require.NoError(t, err)
	pl, err := p.Place(context.Background(), PlacementRequest{Room: "r"})
	require.NoError(t, err)
	require.Equal(t, NodeID("n1"), pl.Node.ID, "what the registry still knows is used")
	require.Equal(t, "wss://n1.example", pl.URL)

	src.err = fmt.Errorf("boom")
	_, err = p.Place(context.Background(), PlacementRequest{Room: "r"})
	require.Error(t, err)
}

func TestPlacerOverEmbedded(t *testing.T) {
	e := newTestEmbedded(t)
	p, err := NewPlacer(DefaultConfig(), e, zerolog.Nop())
	require.NoError(t, err)
	pl, err := p.Place(context.Background(), PlacementRequest{Room: "r", ServerName: "any.example"})
	require.NoError(t, err)
	require.Equal(t, NodeID("solo"), pl.Node.ID)
	require.Equal(t, "ws://127.0.0.1:7880", pl.URL)
	e.SetState(NodeDraining)
	_, err = p.Place(context.Background(), PlacementRequest{Room: "r"})
	require.ErrorIs(t, err, ErrNoNodes)
}

func netipAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestPlaceBookedSites: a booking's sites restrict placement, keeping the
// requester's own fallback order among them, and never fall back to a site
// outside them.
func TestPlaceBookedSites(t *testing.T) {
	topo := testTopology(t)
	nodes := []Node{node("a1", "A", 0), node("b1", "B", 0), node("c1", "C", 0)}
	req := PlacementRequest{Room: "r", ServerName: "a.example"}

	req.Sites = []SiteID{"C", "B"}
	p, err := Place(topo, nodes, nil, req, nil)
	require.NoError(t, err)
	require.Equal(t, SiteID("B"), p.Site, "B comes before C in A's fallback order")
	require.True(t, p.Fallback)

	req.Sites = []SiteID{"A"}
	p, err = Place(topo, nodes, nil, req, nil)
	require.NoError(t, err)
	require.Equal(t, SiteID("A"), p.Site)
	require.False(t, p.Fallback)

	// The only booked site is full: no fallback to an unbooked one.
	full := []Node{node("a1", "A", 0), node("b1", "B", 10)}
	req.Sites = []SiteID{"B"}
	_, err = Place(topo, full, nil, req, nil)
	require.ErrorIs(t, err, ErrNoCapacity)

	// A booked site without nodes: no placement at all.
	req.Sites = []SiteID{"Z"}
	_, err = Place(topo, nodes, nil, req, nil)
	require.ErrorIs(t, err, ErrNoNodes)
}
