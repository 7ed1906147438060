package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/gxfs-conf/gxconf/bridge"
	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/sfu"
)

// focusPeering is the focus's view of the peering section: where to send
// each peer's users and how to sign their tokens; nil without peering.
func focusPeering(p config.Peering) *focus.Peering {
	if !p.Enabled() {
		return nil
	}
	out := &focus.Peering{Self: p.Name}
	for _, name := range slices.Sorted(maps.Keys(p.Peers)) {
		pc := p.Peers[name]
		out.Peers = append(out.Peers, focus.PeerRoute{
			Name: name, URL: pc.URL, Homeservers: pc.Homeservers, Levels: pc.Levels,
			APIKey: sfu.PeerAPIKey(p.Name), TokenSecret: pc.TokenSecret(p.Name), RoomPrefix: sfu.PeerRoomPrefix(p.Name),
		})
	}
	return out
}

// peering is a node's part in peered deployments (startPeering).
type peering struct {
	cfg config.Peering
	br  *bridge.Bridge
	// lone is the registry a lone node keeps of itself for `gxconf cluster
	// status` (nil in a cluster, which has its own).
	lone    cluster.Registry
	runners []component
}

// startPeering wires peered deployments once the focus exists: the SFU
// accepts the peers' tokens and asks them about their grants (our own
// tokens still go to the focus), and the bridge relays the peers' rooms
// and answers them about ours from the focus. br is the cluster's bridge,
// or nil on a lone node, which then gets a bridge of its own and an
// embedded registry of itself, so its peer links can be inspected like a
// cluster's (`gxconf cluster status`). nil without peering.
func startPeering(cfg *config.Config, sfuSrv *sfu.Server, br *bridge.Bridge, focusSvc *focus.Service,
	metrics prometheus.Registerer, log zerolog.Logger) (*peering, error) {
	p := cfg.Peering
	if !p.Enabled() {
		return nil, nil
	}
	out := &peering{cfg: p}
	if br == nil {
		bcfg := cfg.Bridge
		id, err := cfg.Cluster.ResolveNodeID()
		if err != nil {
			return nil, fmt.Errorf("peering: %w", err)
		}
		bcfg.NodeID = string(id)
		if br, err = bridge.New(bcfg, sfuSrv, log); err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
		if err := metrics.Register(br.Collector()); err != nil {
			return nil, fmt.Errorf("bridge metrics: %w", err)
		}
		out.runners = append(out.runners, component{"bridge", br.Run})
		if out.lone, err = loneRegistry(cfg, sfuSrv, br, log); err != nil {
			return nil, err
		}
		out.runners = append(out.runners, component{"node registry", out.lone.Run})
	}
	out.br = br
	keys := map[string]string{}
	links := map[string]bridge.PeerLink{}
	for name, pc := range p.Peers {
		// Tokens for the peer's rooms are signed by the peer.
		keys[name] = pc.TokenSecret(name)
		links[name] = bridge.PeerLink{RelayAddress: pc.RelayAddress, SignalKey: pc.SignalKey()}
	}
	sfuSrv.SetPeering(sfu.Peering{Keys: keys, Joined: br.PeerJoined})
	sfuSrv.SetGrantChecker(br.PeerGrants(focusSvc))
	// Peers may name this node by its advertised relay address when the
	// bridge listens on another (bridge.listen), or by an address of the
	// IX a NAT maps to it (peering.relay_addresses).
	addrs := slices.Clone(p.RelayAddresses)
	if cfg.Cluster.RelayAddress != "" {
		addrs = append(addrs, cfg.Cluster.RelayAddress)
	}
	br.SetPeering(bridge.Peering{Self: p.Name, Peers: links, Authority: focusSvc, Addresses: addrs})
	log.Info().Str("peer", p.Name).Strs("peers", slices.Sorted(maps.Keys(p.Peers))).Str("address", br.Addr()).Msg("Peering with other deployments")
	out.runners = append(out.runners, component{"peer follower", br.FollowPeers})
	return out, nil
}

// loneRegistry is a lone node's embedded registry of itself, kept by the
// SFU's directory hooks as a cluster node's is.
func loneRegistry(cfg *config.Config, sfuSrv *sfu.Server, br *bridge.Bridge, log zerolog.Logger) (cluster.Registry, error) {
	ccfg := cfg.Cluster
	if ccfg.SignalURL == "" {
		ccfg.SignalURL = sfuSrv.URL()
	}
	if ccfg.RelayAddress == "" {
		ccfg.RelayAddress = br.Addr()
	}
	cpu := cluster.NewCPUSampler()
	load := &loadSampler{read: func() cluster.Load {
		l := sfuSrv.Load()
		return cluster.Load{CPU: cpu.Busy(), Participants: uint32(l.Participants), Tracks: uint32(l.Tracks),
			BitrateIn: l.BitrateIn, BitrateOut: l.BitrateOut, RelayBitrate: br.Bitrate()}
	}}
	reg, err := cluster.NewEmbedded(ccfg, log, cluster.WithLoadSource(load))
	if err != nil {
		return nil, fmt.Errorf("peering: %w", err)
	}
	sfuSrv.SetRoomHooks(newDirectoryHooks(reg).roomHooks())
	return &loneNode{Registry: reg, load: load}, nil
}

// loneNode is a lone node's registry with the sampler of its load.
type loneNode struct {
	cluster.Registry
	load *loadSampler
}

// Run samples the load while the registry runs, until ctx ends.
func (n *loneNode) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.load.run(ctx)
	}()
	err := n.Registry.Run(ctx)
	<-done
	return err
}

// loadSampler reads the load every second, as a cluster node's heartbeat
// does: the bitrates are rates between readings, so reading them only when
// someone asks for the status would measure the time between two requests
// (and give zero on the first).
type loadSampler struct {
	read func() cluster.Load
	mu   sync.Mutex
	last cluster.Load
}

func (s *loadSampler) run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		l := s.read()
		s.mu.Lock()
		s.last = l
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Load is the last reading.
func (s *loadSampler) Load() cluster.Load {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// status is the peering part of /cluster/status.
func (p *peering) status(ctx context.Context) *cluster.PeeringStatus {
	st := &cluster.PeeringStatus{Self: p.cfg.Name}
	for _, name := range slices.Sorted(maps.Keys(p.cfg.Peers)) {
		pc := p.cfg.Peers[name]
		ps := cluster.PeerStatus{Name: name, RelayAddress: pc.RelayAddress, URL: pc.URL, Homeservers: pc.Homeservers}
		for _, l := range pc.Levels {
			ps.Levels = append(ps.Levels, string(l))
		}
		st.Peers = append(st.Peers, ps)
	}
	st.Links, st.Participants = p.br.PeeringStatus(ctx)
	return st
}
