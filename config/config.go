package config

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/gxfs-conf/gxconf/appservice"
	"github.com/gxfs-conf/gxconf/atrest"
	"github.com/gxfs-conf/gxconf/bridge"
	"github.com/gxfs-conf/gxconf/catalog"
	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/meetings"
	"github.com/gxfs-conf/gxconf/servertls"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/gxfs-conf/gxconf/store"
)

// EnvPrefix starts every environment variable that overrides a config key.
const EnvPrefix = "GXCONF_"

// TestingEnv set to 1 allows test-only keys (bridge.test_link_*); it names
// no config key.
const TestingEnv = EnvPrefix + "TESTING"

// Config is the whole gxconf configuration file. Each package owns its section.
type Config struct {
	Homeserver Homeserver        `yaml:"homeserver"`
	Database   store.Config      `yaml:"database"`
	Appservice appservice.Config `yaml:"appservice"`
	Focus      focus.Config      `yaml:"focus"`
	// SFU is the embedded LiveKit-compatible SFU.
	SFU SFU `yaml:"sfu"`
	// Credentials is the SSI verifier (trust registries, OID4VP, levels).
	Credentials credentials.Config `yaml:"credentials"`
	// Cluster is this node's place in the SFU cluster (alone by default).
	Cluster cluster.Config `yaml:"cluster"`
	// Bridge relays media between the nodes of a room (with cluster.relay_address).
	Bridge bridge.Config `yaml:"bridge"`
	// Peering relays rooms with gxconf deployments of other federations
	// over the IX.
	Peering Peering `yaml:"peering"`
	// Catalog is the service catalogue (Gaia-X offerings), bookings and
	// their enforcement, and the admin API.
	Catalog catalog.Config `yaml:"catalog"`
	Metrics Metrics        `yaml:"metrics"`
	Logging Logging        `yaml:"logging"`
	// TLS is native TLS on the focus, appservice and SFU signalling listeners.
	TLS servertls.Config `yaml:"tls"`
	// Meetings schedules calls: bot commands, HTTP API, calendar files,
	// feeds and reminders.
	Meetings meetings.Config `yaml:"meetings"`
	// AtRest holds the keys that encrypt columns at rest (key ids, rotation).
	AtRest atrest.Config `yaml:"at_rest"`
	// Audit ships the audit log (access decisions, removals, admin actions).
	Audit credentials.AuditConfig `yaml:"audit"`

	// derivedKeys tells that the SFU key was made up for this process.
	derivedKeys bool
	// atRestKeyDerived tells that credentials.at_rest_key was set from
	// at_rest's primary key (it then opens no values of its own).
	atRestKeyDerived bool
}

// LegacyAtRestKey is credentials.at_rest_key as the key of values sealed
// without key id, or nil when there is none of its own.
func (c *Config) LegacyAtRestKey() []byte {
	if c.atRestKeyDerived || c.Credentials.AtRestKey == "" {
		return nil
	}
	k, err := base64.StdEncoding.DecodeString(c.Credentials.AtRestKey)
	if err != nil || len(k) != 32 {
		return nil
	}
	return k
}

// Homeserver says which Matrix homeserver gxconf is registered with.
type Homeserver struct {
	// Domain is the server_name: the part after the colon in user IDs.
	Domain string `yaml:"domain"`
	// Address is the base URL of the homeserver's client-server API.
	Address string `yaml:"address"`
}

// SFU is the `sfu:` section: the embedded SFU's own keys plus whether to run it.
type SFU struct {
	// Enabled runs the embedded SFU. The focus uses it unless focus.sfu.url
	// names another LiveKit server.
	Enabled    bool `yaml:"enabled"`
	sfu.Config `yaml:",inline"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Enabled serves /metrics.
	Enabled bool `yaml:"enabled"`
	// Listen is the address /metrics is served on, apart from the public
	// focus listener. Empty serves it on the focus listener, where anyone who
	// reaches the focus can read it.
	Listen string `yaml:"listen"`
	// Pprof also serves Go's /debug/pprof/ profiles on the metrics
	// listener (for load measurements; it needs metrics.listen, never the
	// public focus listener).
	Pprof bool `yaml:"pprof"`
	// TLS serves the metrics listener (metrics, pprof, cluster status and
	// drain) with native TLS: the tls section's certificate, versions and
	// TR-02102-2 suites, reloaded like the other listeners'. It needs
	// tls.cert_file and metrics.listen.
	TLS bool `yaml:"tls"`
}

// DefaultMetricsListen keeps /metrics off the public focus listener: loopback
// only, on the port OpenTelemetry's Prometheus exporter uses by convention.
const DefaultMetricsListen = "127.0.0.1:9464"

// Logging configures the zerolog output.
type Logging struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Default returns the configuration used where the file says nothing.
func Default() Config {
	return Config{
		Homeserver:  Homeserver{},
		Database:    store.DefaultConfig(),
		Appservice:  appservice.DefaultConfig(),
		Focus:       focus.DefaultConfig(),
		SFU:         SFU{Enabled: true, Config: sfu.DefaultConfig()},
		Credentials: credentials.DefaultConfig(),
		Cluster:     cluster.DefaultConfig(),
		Bridge:      bridge.DefaultConfig(),
		Catalog:     catalog.DefaultConfig(),
		Metrics:     Metrics{Enabled: true, Listen: DefaultMetricsListen},
		Logging:     Logging{Level: "info", Format: "json"},
		TLS:         servertls.DefaultConfig(),
		Meetings:    meetings.DefaultConfig(),
		AtRest:      atrest.DefaultConfig(),
	}
}

// placeholderDomains are the example values of config.example.yaml; serve refuses them.
var placeholderDomains = []string{"example.org", "example.com", "example.net", "matrix.example.org"}

// IsPlaceholderDomain reports whether d is one of the documentation domains.
func IsPlaceholderDomain(d string) bool {
	for _, p := range placeholderDomains {
		if strings.EqualFold(d, p) || strings.HasSuffix(strings.ToLower(d), "."+p) {
			return true
		}
	}
	return false
}

// Validate checks the sections it owns and asks every package to check its own.
func (c *Config) Validate() error {
	var errs []error
	add := func(section string, err error) {
		for _, e := range flatten(err) {
			errs = append(errs, fmt.Errorf("%s.%w", section, e))
		}
	}
	var hs []error
	if c.Homeserver.Domain == "" {
		hs = append(hs, errors.New("domain: must be set to the homeserver's server_name"))
	} else if IsPlaceholderDomain(c.Homeserver.Domain) {
		hs = append(hs, fmt.Errorf("domain: %q is the example placeholder; set your homeserver's server_name", c.Homeserver.Domain))
	}
	if c.Homeserver.Address == "" {
		hs = append(hs, errors.New("address: must be set to the homeserver's client-server API URL"))
	} else if err := checkHTTPURL(c.Homeserver.Address); err != nil {
		hs = append(hs, fmt.Errorf("address: %w", err))
	}
	add("homeserver", errors.Join(hs...))
	add("database", c.Database.Validate())
	add("appservice", c.Appservice.Validate())
	add("focus", c.Focus.Validate())
	if c.SFU.Enabled {
		add("sfu", c.SFU.Config.Validate())
	} else if c.Focus.SFU.URL == "" {
		errs = append(errs, errors.New("focus.sfu.url: must name a LiveKit server when sfu.enabled is false"))
	}
	add("credentials", c.Credentials.Validate())
	add("cluster", c.Cluster.Validate())
	if c.Cluster.Multi() && !c.SFU.Enabled {
		errs = append(errs, errors.New("cluster.redis.address: a cluster needs the embedded SFU (sfu.enabled: true)"))
	}
	if c.Cluster.Multi() && c.Database.Type != "postgres" {
		errs = append(errs, errors.New("database.type: a cluster needs one database for every node (postgres): grants, revocations and delayed leaves are checked by whichever node a client reaches"))
	}
	add("peering", c.Peering.Validate())
	add("catalog", c.Catalog.Validate())
	if c.Peering.Enabled() {
		if !c.SFU.Enabled || c.Focus.SFU.URL != "" {
			errs = append(errs, errors.New("peering: needs the embedded SFU (sfu.enabled: true, focus.sfu.url empty): it checks the peers' tokens"))
		}
		if c.Bridge.Listen == "" {
			errs = append(errs, errors.New("peering: needs the bridge: set cluster.relay_address (or bridge.listen) to this deployment's relay address on the IX"))
		}
		for _, n := range slices.Sorted(maps.Keys(c.Peering.Peers)) {
			if slices.Contains(c.Peering.Peers[n].Homeservers, c.Homeserver.Domain) {
				errs = append(errs, fmt.Errorf("peering.peers.%s.homeservers: names our own homeserver %s", n, c.Homeserver.Domain))
			}
		}
	}
	if c.BridgeEnabled() {
		b := c.Bridge
		b.NodeID = "derived" // the cluster's node id, set at start
		add("bridge", b.Validate())
	}
	if c.Cluster.Multi() && c.derivedKeys {
		errs = append(errs, errors.New("sfu.keys: must be set, the same on every node of a cluster (a node's tokens are checked by the others)"))
	}
	var lg []error
	if _, err := parseLevel(c.Logging.Level); err != nil {
		lg = append(lg, fmt.Errorf("level: %w", err))
	}
	if c.Logging.Format != "json" && c.Logging.Format != "pretty" {
		lg = append(lg, fmt.Errorf("format: must be json or pretty, got %q", c.Logging.Format))
	}
	add("logging", errors.Join(lg...))
	if c.Metrics.Enabled && c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			errs = append(errs, fmt.Errorf("metrics.listen: must be host:port: %w", err))
		} else if c.Metrics.Listen == c.Focus.Listen {
			errs = append(errs, errors.New("metrics.listen: must differ from focus.listen (leave it empty to serve /metrics on the focus listener)"))
		}
	}
	if c.Metrics.Pprof && (!c.Metrics.Enabled || c.Metrics.Listen == "") {
		errs = append(errs, errors.New("metrics.pprof: needs metrics.enabled and metrics.listen (profiles are never served on the public focus listener)"))
	}
	add("tls", c.TLS.Validate())
	if c.Meetings.Enabled {
		add("meetings", c.Meetings.Validate())
	}
	add("at_rest", c.AtRest.Validate())
	add("audit", c.Audit.Validate())
	if c.Metrics.TLS {
		if !c.TLS.Enabled() {
			errs = append(errs, errors.New("metrics.tls: needs tls.cert_file (the metrics listener serves the tls section's certificate)"))
		}
		if !c.Metrics.Enabled || c.Metrics.Listen == "" {
			errs = append(errs, errors.New("metrics.tls: needs metrics.enabled and metrics.listen (on the focus listener, metrics follow the focus's TLS)"))
		}
	}
	if t := c.SFU.TURN; c.SFU.Enabled && t.Enabled && !c.TLS.Enabled() {
		// The embedded TURN server's TLS uses the tls section's certificate.
		if t.TLSOnSignalPort {
			errs = append(errs, errors.New("sfu.turn.tls_on_signal_port: needs tls.cert_file (TLS on the signalling listener)"))
		}
		if t.TLSPort != 0 && !t.ExternalTLS {
			errs = append(errs, fmt.Errorf("sfu.turn.tls_port: %d needs tls.cert_file, or sfu.turn.external_tls behind a TLS-terminating load balancer, or 0", t.TLSPort))
		}
	}
	return errors.Join(errs...)
}

// BridgeEnabled tells whether this node relays media to the other nodes of
// its rooms (in a cluster, when it has a relay address) or with peered
// deployments (when it has a relay listener).
func (c *Config) BridgeEnabled() bool {
	return (c.Cluster.Multi() && c.Cluster.RelayAddress != "") || (c.Peering.Enabled() && c.Bridge.Listen != "")
}

// derive fills keys whose default is another key's value, and gives the
// embedded SFU a key pair for this process when none is configured (only the
// focus in the same process mints tokens for it).
func (c *Config) derive() {
	if c.AtRest.Enabled() && c.Credentials.AtRestKey == "" {
		// The credentials section needs a key; at_rest's primary is it
		// (unreadable keys are reported by Validate).
		if keys, err := atrest.ReadKeys(c.AtRest.KeysDir); err == nil {
			if k, ok := keys[c.AtRest.PrimaryID(keys)]; ok {
				c.Credentials.AtRestKey = base64.StdEncoding.EncodeToString(k)
				c.atRestKeyDerived = true
			}
		}
	}
	if c.SFU.Enabled && len(c.SFU.Keys) == 0 {
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		c.SFU.Keys = map[string]string{"gxconf-embedded": base64.RawURLEncoding.EncodeToString(secret)}
		c.derivedKeys = true
	}
	if c.Bridge.Listen == "" {
		c.Bridge.Listen = c.Cluster.RelayAddress
	}
	if c.Peering.Enabled() && !c.Cluster.Multi() && c.Bridge.Secret == "" {
		// A lone node's bridge only serves peers, each with its own secret;
		// the cluster secret guards nothing, so nobody needs to know it.
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		c.Bridge.Secret = base64.RawURLEncoding.EncodeToString(secret)
	}
	if c.Cluster.SignalURL == "" && c.SFU.Enabled {
		// This node's own signalling URL: the SFU's public URL, or its
		// listen address when that names a host.
		if c.SFU.PublicURL != "" {
			c.Cluster.SignalURL = c.SFU.PublicURL
		} else if host, _, err := net.SplitHostPort(c.SFU.Listen); err == nil && host != "" && !net.ParseIP(host).IsUnspecified() {
			c.Cluster.SignalURL = "ws://" + c.SFU.Listen + c.SFU.PathPrefix
		}
	}
	if c.Credentials.OID4VP.PublicBaseURL == "" && len(c.Credentials.Federations) > 0 {
		c.Credentials.OID4VP.PublicBaseURL = c.Focus.ServiceURL()
	}
}

// flatten unwraps errors.Join trees into their leaves.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// Problems is every problem found in a configuration, one per line.
type Problems []string

func (p Problems) Error() string {
	return fmt.Sprintf("%d configuration problem(s):\n  %s", len(p), strings.Join(p, "\n  "))
}

// Load reads the YAML file at path on top of the defaults, applies environment
// overrides (GXCONF_SECTION__KEY, GXCONF_SECTION__KEY_FILE) from environ and
// validates the result. All problems are reported at once, each by dotted key.
func Load(path string, environ []string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read config: %w", err)
	}
	return Parse(raw, environ)
}

// Parse is Load for an in-memory file.
func Parse(raw []byte, environ []string) (*Config, error) {
	cfg := Default()
	var problems Problems
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, Problems{"file: " + syntaxError(err)}
	}
	if len(root.Content) > 0 {
		var found []string
		checkNode(&root, reflect.TypeFor[Config](), "", &found)
		problems = append(problems, found...)
		if len(problems) == 0 {
			dec := root.Content[0]
			if err := dec.Decode(&cfg); err != nil {
				problems = append(problems, "file: "+leafError(err))
			}
		}
	}
	problems = append(problems, applyEnv(&cfg, environ)...)
	problems = append(problems, cfg.Peering.loadSecrets()...)
	if len(problems) > 0 {
		return nil, problems
	}
	cfg.Bridge.Testing = slices.Contains(environ, TestingEnv+"=1")
	cfg.derive()
	for _, e := range flatten(cfg.Validate()) {
		problems = append(problems, e.Error())
	}
	if len(problems) > 0 {
		return nil, problems
	}
	return &cfg, nil
}

// applyEnv applies GXCONF_ overrides. A variable ending in _FILE whose name is
// not itself a key reads the value from the named file (for secrets).
func applyEnv(cfg *Config, environ []string) Problems {
	var problems Problems
	sorted := append([]string(nil), environ...)
	sort.Strings(sorted)
	root := reflect.ValueOf(cfg).Elem()
	for _, kv := range sorted {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) || name == TestingEnv {
			continue
		}
		path := strings.Split(strings.ToLower(strings.TrimPrefix(name, EnvPrefix)), "__")
		dotted := strings.Join(path, ".")
		// A map's keys are free, so SECTION__MAP__NAME_FILE would otherwise
		// set the entry "name_file" to the file's path instead of "name" to
		// its content (e.g. GXCONF_SFU__KEYS__GXCONF_FILE).
		var found bool
		var err error
		fileOnly := strings.HasSuffix(name, "_FILE") && mapEntry(root.Type(), path)
		if !fileOnly {
			found, err = setByPath(root, path, value)
		}
		if !found && strings.HasSuffix(name, "_FILE") {
			last := len(path) - 1
			path[last] = strings.TrimSuffix(path[last], "_file")
			dotted = strings.Join(path, ".")
			content, rerr := os.ReadFile(value)
			if rerr != nil {
				problems = append(problems, fmt.Sprintf("%s: env %s: cannot read file: %v", dotted, name, rerr))
				continue
			}
			found, err = setByPath(root, path, strings.TrimRight(string(content), "\r\n"))
		}
		if !found {
			problems = append(problems, fmt.Sprintf("%s: env %s names no config key", dotted, name))
		} else if err != nil {
			problems = append(problems, fmt.Sprintf("%s: env %s: %v", dotted, name, err))
		}
	}
	return problems
}
