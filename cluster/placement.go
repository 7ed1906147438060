package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// PlacementRequest is one token request to place.
type PlacementRequest struct {
	Room RoomName
	// ServerName is the requester's homeserver (from the verified OpenID token).
	ServerName string
	// ClientIP is the requester's address if known (zero otherwise).
	ClientIP netip.Addr
	// Sites, when set, are the only sites the room may be placed on (a
	// service booking's sites); the requester's site and its fallbacks are
	// tried first, then the remaining allowed sites in the given order.
	Sites []SiteID
}

// SiteRule says how the requester's site was found.
type SiteRule string

// Site rules, in the order they are tried.
const (
	RuleClientPrefix SiteRule = "client_prefix"
	RuleHomeserver   SiteRule = "homeserver"
	RuleFederation   SiteRule = "federation"
	RuleDefault      SiteRule = "default"
)

// Placement is where a requester goes.
type Placement struct {
	// Site is the site of Node; URL its entry URL (or, without one, the
	// node's own signal URL), which goes into the token response.
	Site SiteID
	URL  string
	Node Node
	// HomeSite is the requester's site; Fallback says Site differs from it.
	HomeSite SiteID
	Fallback bool
	// Rule is how HomeSite was chosen.
	Rule SiteRule
	// Hosting says Node already hosted the room.
	Hosting bool
}

// Topology is the placement part of Config, prepared for lookups.
type Topology struct {
	defaultSite SiteID
	sites       map[SiteID]SiteConfig
	prefixes    []prefixRule
	homeservers map[string]SiteID
	federations map[string]SiteID
}

type prefixRule struct {
	prefix netip.Prefix
	site   SiteID
}

// NewTopology prepares cfg's sites and rules; cfg must have passed Validate.
func NewTopology(cfg Config) (*Topology, error) {
	t := &Topology{
		defaultSite: cmp.Or(cfg.DefaultSite, cfg.Site),
		sites:       map[SiteID]SiteConfig{},
		homeservers: map[string]SiteID{},
		federations: map[string]SiteID{},
	}
	for id, s := range cfg.Sites {
		t.sites[id] = s
	}
	for p, site := range cfg.ClientPrefixes {
		pf, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("cluster.client_prefixes.%s: %w", p, err)
		}
		t.prefixes = append(t.prefixes, prefixRule{prefix: pf.Masked(), site: site})
	}
	// Longest prefix first; ties in a stable order.
	slices.SortFunc(t.prefixes, func(a, b prefixRule) int {
		if c := cmp.Compare(b.prefix.Bits(), a.prefix.Bits()); c != 0 {
			return c
		}
		return strings.Compare(a.prefix.String(), b.prefix.String())
	})
	for hs, site := range cfg.Homeservers {
		t.homeservers[strings.ToLower(hs)] = site
	}
	for _, f := range cfg.Federations {
		for _, hs := range f.Homeservers {
			t.federations[strings.ToLower(hs)] = f.Site
		}
	}
	return t, nil
}

// SiteFor picks the requester's site: the longest matching client address
// prefix (where the client is beats who it is), then the homeserver map,
// then the homeserver's federation, then the default site. A server name
// with a port also matches rules for its host.
func (t *Topology) SiteFor(serverName string, ip netip.Addr) (SiteID, SiteRule) {
	if ip.IsValid() {
		ip = ip.Unmap()
		for _, p := range t.prefixes {
			if p.prefix.Contains(ip) {
				return p.site, RuleClientPrefix
			}
		}
	}
	names := []string{strings.ToLower(serverName)}
	if host, _, err := net.SplitHostPort(names[0]); err == nil {
		names = append(names, strings.Trim(host, "[]"))
	}
	for _, n := range names {
		if s, ok := t.homeservers[n]; ok {
			return s, RuleHomeserver
		}
	}
	for _, n := range names {
		if s, ok := t.federations[n]; ok {
			return s, RuleFederation
		}
	}
	return t.defaultSite, RuleDefault
}

// order is the site followed by its fallbacks.
func (t *Topology) order(site SiteID) []SiteID {
	return append([]SiteID{site}, t.sites[site].Fallback...)
}

// allowedOrder is order(site) restricted to allowed (when set), followed by
// the allowed sites not in it.
func (t *Topology) allowedOrder(site SiteID, allowed []SiteID) []SiteID {
	all := t.order(site)
	if len(allowed) == 0 {
		return all
	}
	out := make([]SiteID, 0, len(allowed))
	for _, s := range all {
		if slices.Contains(allowed, s) {
			out = append(out, s)
		}
	}
	for _, s := range allowed {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// url is the site's entry URL, or the node's own.
func (t *Topology) url(site SiteID, n Node) string {
	if u := t.sites[site].URL; u != "" {
		return u
	}
	return n.SignalURL
}

// Place decides a placement from a snapshot: nodes are the live nodes,
// hosting the room's entries, pending extra participants per node placed
// but not yet reflected in its load. In the requester's site and then each
// fallback site in order, it takes a serving node under its limits,
// preferring nodes that host the room, least loaded first. It fails with
// ErrNoCapacity if serving nodes exist but all are at a limit, else with
// ErrNoNodes.
func Place(t *Topology, nodes []Node, hosting []RoomEntry, req PlacementRequest, pending map[NodeID]uint32) (Placement, error) {
	home, rule := t.SiteFor(req.ServerName, req.ClientIP)
	hosts := make(map[NodeID]bool, len(hosting))
	for _, e := range hosting {
		hosts[e.Node] = true
	}
	full := false
	for _, site := range t.allowedOrder(home, req.Sites) {
		var best *Node
		var bestScore float64
		bestHosting := false
		for j := range nodes {
			n := &nodes[j]
			if n.Site != site || !n.Serving() {
				continue
			}
			score, ok := loadScore(*n, pending[n.ID])
			if !ok {
				full = true
				continue
			}
			h := hosts[n.ID]
			if best == nil || better(h, score, *n, pending[n.ID], bestHosting, bestScore, *best, pending[best.ID]) {
				best, bestScore, bestHosting = n, score, h
			}
		}
		if best != nil {
			return Placement{
				Site: site, URL: t.url(site, *best), Node: *best,
				HomeSite: home, Fallback: site != home, Rule: rule, Hosting: bestHosting,
			}, nil
		}
	}
	if full {
		return Placement{}, fmt.Errorf("site %s and its fallbacks: %w", home, ErrNoCapacity)
	}
	return Placement{}, fmt.Errorf("site %s and its fallbacks: %w", home, ErrNoNodes)
}

// better orders candidates: hosting the room first, then lower load score,
// fewer participants, fewer tracks, node ID.
func better(h bool, s float64, n Node, np uint32, bh bool, bs float64, b Node, bp uint32) bool {
	if h != bh {
		return h
	}
	if s != bs {
		return s < bs
	}
	if a, b := uint64(n.Load.Participants)+uint64(np), uint64(b.Load.Participants)+uint64(bp); a != b {
		return a < b
	}
	if n.Load.Tracks != b.Load.Tracks {
		return n.Load.Tracks < b.Load.Tracks
	}
	return n.ID < b.ID
}

// loadScore is the node's highest utilisation over its limited dimensions
// and CPU (0..1, lower is better); ok is false when any limit is reached.
func loadScore(n Node, pending uint32) (float64, bool) {
	l, lim := n.Load, n.Limits
	score := l.CPU
	check := func(used, limit float64) bool {
		if limit <= 0 {
			return true
		}
		score = max(score, used/limit)
		return used < limit
	}
	ok := check(float64(l.Participants)+float64(pending), float64(lim.MaxParticipants))
	ok = check(float64(l.Tracks), float64(lim.MaxTracks)) && ok
	ok = check(float64(l.BitrateIn)+float64(l.BitrateOut), float64(lim.MaxBitrate)) && ok
	ok = check(l.CPU, lim.MaxCPU) && ok
	return score, ok
}

// Placer places token requests on the registry's live nodes. It remembers
// its recent placements for PendingWindow so that a burst of requests
// between two load reports spreads over the nodes.
type Placer struct {
	topo *Topology
	src  PlacementSource
	log  zerolog.Logger
	now  func() time.Time
	// PendingWindow is how long a placement counts as an extra participant
	// of its node (about the time a client needs to connect).
	pendingWindow time.Duration

	mu      sync.Mutex
	pending map[NodeID][]time.Time
}

// NewPlacer returns a placer for cfg's topology over src (a Registry).
func NewPlacer(cfg Config, src PlacementSource, log zerolog.Logger) (*Placer, error) {
	t, err := NewTopology(cfg)
	if err != nil {
		return nil, err
	}
	return &Placer{
		topo: t, src: src, log: log, now: time.Now,
		pendingWindow: 5 * time.Second,
		pending:       map[NodeID][]time.Time{},
	}, nil
}

// Place chooses the site and node for req. A directory outage does not fail
// placement: it goes on with what the registry still knows (this node's own
// rooms), which may spread the room over more nodes than needed.
func (p *Placer) Place(ctx context.Context, req PlacementRequest) (Placement, error) {
	nodes := p.src.Nodes()
	hosting, err := p.src.RoomNodes(ctx, req.Room)
	if err != nil && !errors.Is(err, ErrUnavailable) {
		return Placement{}, fmt.Errorf("failed to look up the room's nodes: %w", err)
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	counts := make(map[NodeID]uint32, len(p.pending))
	for id, ts := range p.pending {
		i := 0
		for i < len(ts) && now.Sub(ts[i]) >= p.pendingWindow {
			i++
		}
		if i == len(ts) {
			delete(p.pending, id)
			continue
		}
		p.pending[id] = ts[i:]
		counts[id] = uint32(len(ts) - i)
	}
	pl, err := Place(p.topo, nodes, hosting, req, counts)
	if err != nil {
		return Placement{}, err
	}
	p.pending[pl.Node.ID] = append(p.pending[pl.Node.ID], now)
	return pl, nil
}
