package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// nodePair is what two gxconf nodes in two sites share, as in
// TestClusterPlacement: one Redis, one PostgreSQL, one bridge secret, and
// the placement rules: localhost's users belong to site "b", which falls
// back to site "a". Node A is the harness stack's gxconf (configured by
// stackOptions), node B a second process (startNodeB).
type nodePair struct {
	dir   string
	redis *harness.Redis
	pg    *harness.Postgres
	// portA and portB are the nodes' SFU ports; urlA and urlB their
	// signalling URLs, which are also the sites' entry URLs.
	portA, portB   int
	urlA, urlB     string
	relayA, relayB string
	secret         string
}

func newNodePair(t *testing.T) *nodePair {
	t.Helper()
	ctx := context.Background()
	p := &nodePair{dir: t.TempDir(), secret: "relay-secret-of-this-test-run-0123456789abcdef"}
	var err error
	p.redis, err = harness.StartRedis(ctx, p.dir)
	require.NoError(t, err)
	t.Cleanup(p.redis.Stop)
	p.pg, err = harness.StartPostgres(ctx)
	require.NoError(t, err)
	t.Cleanup(p.pg.Stop)
	p.portA, err = harness.FreePort()
	require.NoError(t, err)
	p.portB, err = harness.FreePort()
	require.NoError(t, err)
	p.urlA, p.urlB = fmt.Sprintf("ws://127.0.0.1:%d", p.portA), fmt.Sprintf("ws://127.0.0.1:%d", p.portB)
	p.relayA, p.relayB = freeAddr(t), freeAddr(t)
	return p
}

// config is the database, cluster and bridge sections of one node.
func (p *nodePair) config(node cluster.NodeID, site cluster.SiteID, relay string, maxParticipants int) map[string]any {
	return map[string]any{
		"database": map[string]any{"type": "postgres", "uri": p.pg.URI},
		"cluster": map[string]any{
			"node_id": node, "site": site, "relay_address": relay,
			// A liveness TTL with room for a loaded machine: the browser
			// tests run two Chromium tabs next to both nodes, and a node that
			// misses its TTL drops out of placement and the bridge.
			"heartbeat_interval": "250ms", "liveness_ttl": "3s",
			"redis": map[string]any{"address": p.redis.Addr},
			"sites": map[string]any{
				"a": map[string]any{"url": p.urlA},
				"b": map[string]any{"url": p.urlB, "fallback": []string{"a"}},
			},
			"homeservers": map[string]any{"localhost": "b"},
			// The CI machine's load is not the nodes' own: no CPU limit.
			"limits": map[string]any{"max_cpu": 0, "max_participants": maxParticipants},
		},
		"bridge": map[string]any{"secret": p.secret},
	}
}

// stackOptions configure the harness stack's gxconf as node A (site a).
func (p *nodePair) stackOptions(maxParticipants int) harness.StackOptions {
	return harness.StackOptions{SFUPort: p.portA, Config: p.config("node-a", "a", p.relayA, maxParticipants)}
}

// pairNode is node B: a second gxconf process with the stack's
// registration, database and SFU keys, and its own listeners.
type pairNode struct {
	proc                 *harness.Process
	focusURL, metricsURL string
}

// startNodeB starts node B (site b) next to s, which runs node A; it is
// stopped, and its log printed if t failed, when t ends.
func (p *nodePair) startNodeB(t *testing.T, s *harness.Stack, maxParticipants int) *pairNode {
	t.Helper()
	ports := make([]int, 3)
	for i := range ports {
		var err error
		ports[i], err = harness.FreePort()
		require.NoError(t, err)
	}
	udp, err := harness.FreeUDPPort()
	require.NoError(t, err)
	n := &pairNode{focusURL: fmt.Sprintf("http://127.0.0.1:%d", ports[1]), metricsURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2])}
	cfg := map[string]any{
		"homeserver": map[string]any{"domain": "localhost", "address": s.Dendrite.URL},
		"appservice": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", ports[0])},
		"focus": map[string]any{
			"listen": fmt.Sprintf("127.0.0.1:%d", ports[1]),
			"openid": map[string]any{"server_overrides": map[string]any{"localhost": s.Dendrite.URL}},
			"rate_limit": map[string]any{"per_ip": map[string]any{"rate": 1000, "burst": 1000},
				"per_user": map[string]any{"rate": 1000, "burst": 1000}},
		},
		"sfu": map[string]any{
			"listen": fmt.Sprintf("127.0.0.1:%d", p.portB),
			"keys":   map[string]any{s.SFUKey: s.SFUSecret},
			"rtc":    map[string]any{"udp_port": udp, "tcp_port": 0, "node_ip": "127.0.0.1"},
		},
		"metrics": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", ports[2])},
		"logging": map[string]any{"level": "debug"},
	}
	mergeInto(cfg, p.config("node-b", "b", p.relayB, maxParticipants))
	raw, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	cfgPath := filepath.Join(p.dir, "node-b.yaml")
	require.NoError(t, os.WriteFile(cfgPath, raw, 0o600))
	n.proc, err = harness.StartGxconf(context.Background(), gxconfBin, cfgPath, s.RegistrationPath, filepath.Join(p.dir, "node-b.log"), n.focusURL+"/healthz")
	require.NoError(t, err)
	t.Cleanup(func() {
		err := n.proc.Stop()
		if t.Failed() || os.Getenv("TEST_SHOW_LOGS") != "" {
			t.Logf("node-b log:\n%s", tail(n.proc.Log(), 20000))
		}
		require.NoError(t, err, "node-b must exit cleanly on SIGTERM")
	})
	return n
}

// serves says whether the node at metricsURL counts node as live and serving.
func serves(t *testing.T, metricsURL string, node cluster.NodeID) bool {
	t.Helper()
	for _, s := range clusterStatus(t, metricsURL).Sites {
		for _, n := range s.Nodes {
			if n.ID == node && n.State == cluster.NodeServing {
				return true
			}
		}
	}
	return false
}

// roomPlacement is where the node at metricsURL sees lkRoom: its
// participants and tracks per node.
func roomPlacement(t *testing.T, metricsURL, lkRoom string) map[cluster.NodeID]cluster.RoomNodeStatus {
	t.Helper()
	out := map[cluster.NodeID]cluster.RoomNodeStatus{}
	for _, r := range clusterStatus(t, metricsURL).Rooms {
		if string(r.Room) == lkRoom {
			for _, n := range r.Nodes {
				out[n.Node] = n
			}
		}
	}
	return out
}
