package cluster

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func TestDefaultConfigIsValid(t *testing.T) {
	cfg := DefaultConfig()
	require.NoError(t, cfg.Validate())
	require.False(t, cfg.Multi())
}

func TestValidateNamesEveryProblem(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeID = "bad id"
	cfg.Federation = "fed/1"
	cfg.SignalURL = ""
	cfg.MediaAddresses = []string{"10.0.0.1", "nope"}
	cfg.RelayAddress = "10.99.0.1"
	cfg.Limits.MaxCPU = 2
	cfg.HeartbeatInterval = time.Second
	cfg.LivenessTTL = time.Second
	cfg.Redis.Address = "redis"
	cfg.Redis.KeyPrefix = "gx *"
	cfg.Redis.OpTimeout = 5 * time.Second
	cfg.Redis.TLS.CAFile = "/ca.pem"
	cfg.Redis.TLS.CertFile = "/c.pem"
	cfg.Site = "a"
	cfg.DefaultSite = "z"
	cfg.Sites = map[SiteID]SiteConfig{
		"a": {URL: "http://a.example", Fallback: []SiteID{"a", "b", "b", "x"}},
		"b": {},
	}
	cfg.ClientPrefixes = map[string]SiteID{"10.1.0.1/16": "a", "10.2.0.0/16": "q"}
	cfg.Homeservers = map[string]SiteID{"bad name": "a", "ok.example": "q"}
	cfg.Federations = map[FederationID]FederationConfig{
		"f1": {Site: "a", Homeservers: []string{"one.example"}},
		"f2": {Site: "q", Homeservers: []string{"one.example"}},
		"f3": {Site: "b"},
	}
	err := cfg.Validate()
	require.Error(t, err)
	msg := err.Error()
	for _, key := range []string{
		"node_id:", "federation:", "signal_url:", "media_addresses[1]:", "relay_address:",
		"limits.max_cpu:", "liveness_ttl:", "redis.address:", "redis.key_prefix:", "redis.op_timeout:",
		"redis.tls.enabled:", "redis.tls.cert_file:", "default_site:",
		"sites.a.url:", "sites.a.fallback[0]:", "sites.a.fallback[2]:", "sites.a.fallback[3]:", "sites.b.url:",
		"client_prefixes.10.1.0.1/16:", "client_prefixes.10.2.0.0/16:",
		"homeservers.bad name:", "homeservers.ok.example:",
		"federations.f2.site:", "federations.f3.homeservers:",
	} {
		require.Contains(t, msg, key)
	}
	require.Contains(t, msg, "is also in federation")
	for _, line := range strings.Split(msg, "\n") {
		require.Regexp(t, `^[a-z_]+[a-z0-9_.\[\]/ -]*: `, line, "every problem starts with its dotted key")
	}
}

func TestValidateSingleSiteReferences(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ClientPrefixes = map[string]SiteID{"10.0.0.0/8": "default"}
	cfg.Homeservers = map[string]SiteID{"a.example": "elsewhere"}
	err := cfg.Validate()
	require.ErrorContains(t, err, `homeservers.a.example: must be this node's site "default"`)
	require.NotContains(t, err.Error(), "client_prefixes")
}

func TestResolveNodeID(t *testing.T) {
	cfg := DefaultConfig()
	id, err := cfg.ResolveNodeID()
	require.NoError(t, err)
	require.True(t, ValidNodeID(id))
	cfg.NodeID = "n1"
	id, err = cfg.ResolveNodeID()
	require.NoError(t, err)
	require.Equal(t, NodeID("n1"), id)
}

// The cluster block of config.example.yaml decodes strictly and is the
// defaults.
func TestExampleBlockIsTheDefaults(t *testing.T) {
	full, err := os.ReadFile("../config.example.yaml")
	require.NoError(t, err)
	// The block runs from "cluster:" to the next top-level line.
	loc := regexp.MustCompile(`(?ms)^cluster:\n.*?\n(?:[^ #\n]|# [A-Z])`).FindIndex(full)
	require.NotNil(t, loc, "config.example.yaml has a cluster: block")
	raw := full[loc[0] : loc[1]-1]
	var doc struct {
		Cluster Config `yaml:"cluster"`
	}
	doc.Cluster = DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&doc))
	require.Equal(t, DefaultConfig(), doc.Cluster)

	// The commented example of two sites is valid too.
	var ex struct {
		Cluster Config `yaml:"cluster"`
	}
	ex.Cluster = DefaultConfig()
	uncommented := regexp.MustCompile(`(?m)^  #   `).ReplaceAll(raw, []byte("    "))
	uncommented = regexp.MustCompile(`(?m)^  (sites|client_prefixes|homeservers|federations): \{\}$`).ReplaceAll(uncommented, []byte("  $1:"))
	dec = yaml.NewDecoder(bytes.NewReader(uncommented))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&ex), "%s", uncommented)
	ex.Cluster.Site = "berlin"
	ex.Cluster.SignalURL = "wss://node1.sfu-berlin.example.org"
	ex.Cluster.Redis.Address = "redis.example.org:6379"
	require.NoError(t, ex.Cluster.Validate())
	require.Len(t, ex.Cluster.Sites, 2)
	require.Equal(t, []string{"matrix.land1.example.org", "matrix.land2.example.org"}, ex.Cluster.Federations["laender"].Homeservers)
}

// A configuration that passes Validate gives a node record the other nodes
// accept: a record they refuse leaves the node heartbeating yet invisible
// to placement and the directory.
func TestValidConfigGivesARecordPeersAccept(t *testing.T) {
	base := func() Config {
		cfg := DefaultConfig()
		cfg.NodeID = "n1"
		cfg.SignalURL = "wss://n1.example:7880"
		cfg.Redis.Address = "redis.example:6379"
		return cfg
	}
	addrs := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("10.0.%d.%d", i/200, i%200+1)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		key  string // "" when valid
	}{
		{"32 media addresses", func(c *Config) { c.MediaAddresses = addrs(32) }, ""},
		{"33 media addresses", func(c *Config) { c.MediaAddresses = addrs(33) }, "media_addresses:"},
		{"long signal url", func(c *Config) { c.SignalURL = "wss://n1.example/" + strings.Repeat("p", 600) }, "signal_url:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.edit(&cfg)
			err := cfg.Validate()
			if tc.key != "" {
				require.ErrorContains(t, err, tc.key)
				return
			}
			require.NoError(t, err)
			c, err := newCore(cfg, nopLog(), nil)
			require.NoError(t, err)
			b, err := MarshalNode(c.Self())
			require.NoError(t, err)
			_, err = ParseNode(b)
			require.NoError(t, err)
		})
	}
}
