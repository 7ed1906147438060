package main

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/gxfs-conf/gxconf/bridge"
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

// startPeering wires peered deployments once the focus exists: the SFU
// accepts the peers' tokens and asks them about their grants (our own
// tokens still go to the focus), and the bridge relays the peers' rooms
// and answers them about ours from the focus. br is the cluster's bridge,
// or nil on a lone node, which then gets a bridge of its own. It returns
// the runners to add.
func startPeering(cfg *config.Config, sfuSrv *sfu.Server, br *bridge.Bridge, focusSvc *focus.Service,
	metrics prometheus.Registerer, log zerolog.Logger) ([]func(context.Context) error, error) {
	p := cfg.Peering
	if !p.Enabled() {
		return nil, nil
	}
	var runners []func(context.Context) error
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
		runners = append(runners, br.Run)
	}
	keys := map[string]string{}
	links := map[string]bridge.PeerLink{}
	for name, pc := range p.Peers {
		// Tokens for the peer's rooms are signed by the peer.
		keys[name] = pc.TokenSecret(name)
		links[name] = bridge.PeerLink{RelayAddress: pc.RelayAddress, SignalKey: pc.SignalKey()}
	}
	sfuSrv.SetPeering(sfu.Peering{Keys: keys, Joined: br.PeerJoined})
	sfuSrv.SetGrantChecker(br.PeerGrants(focusSvc))
	br.SetPeering(bridge.Peering{Self: p.Name, Peers: links, Authority: focusSvc})
	log.Info().Str("peer", p.Name).Strs("peers", slices.Sorted(maps.Keys(p.Peers))).Str("address", br.Addr()).Msg("Peering with other deployments")
	return append(runners, br.FollowPeers), nil
}
