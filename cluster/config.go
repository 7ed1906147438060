package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"
)

// Config is the `cluster:` section. With redis.address empty the node runs
// alone (Embedded) and only the local keys matter.
type Config struct {
	// NodeID names this node; empty takes the host name.
	NodeID NodeID `yaml:"node_id"`
	// Site is the site this node runs in.
	Site SiteID `yaml:"site"`
	// Federation is the federation this deployment belongs to (informational
	// for placement; used by the bridge to tell peered deployments apart).
	Federation FederationID `yaml:"federation"`
	// SignalURL is the ws(s):// URL of this node's own signalling (not the
	// site's entry URL). Required with redis.address.
	SignalURL string `yaml:"signal_url"`
	// MediaAddresses are the addresses clients send media to (ip or ip:port),
	// published for operators and the bridge.
	MediaAddresses []string `yaml:"media_addresses"`
	// RelayAddress is host:port of this node's relay endpoint on the IX
	// interface; empty: this node relays nothing.
	RelayAddress string `yaml:"relay_address"`
	// Limits are this node's capacity, published with its record.
	Limits Limits `yaml:"limits"`
	// HeartbeatInterval is how often the node refreshes its record.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// LivenessTTL is how long a record lives without a heartbeat; a node
	// that stops heartbeating disappears after at most this long.
	LivenessTTL time.Duration `yaml:"liveness_ttl"`
	// Drain is how a stopping node (SIGTERM) moves its participants away.
	Drain DrainConfig `yaml:"drain"`
	// Redis is the shared registry; an empty address means a single node.
	Redis RedisConfig `yaml:"redis"`
	// MessageKeyFile holds a key shared by every node (at least 32 bytes,
	// a trailing newline ignored): each message and event a node
	// publishes is then signed with it, and unsigned or badly signed ones
	// are refused (see sign.go). Empty: nothing is signed.
	MessageKeyFile string `yaml:"message_key_file"`
	// MessageKeyAcceptUnsigned accepts unsigned messages and events while
	// signing is being turned on node by node (badly signed ones are still
	// refused); set it back to false once every node has the key.
	MessageKeyAcceptUnsigned bool `yaml:"message_key_accept_unsigned"`

	// DefaultSite receives requesters no rule matches; empty means Site.
	DefaultSite SiteID `yaml:"default_site"`
	// Sites are the sites of this deployment with their entry URLs and
	// fallback order. Empty: one site, Site, whose URL is each node's own.
	Sites map[SiteID]SiteConfig `yaml:"sites"`
	// ClientPrefixes maps client address prefixes (CIDR) to sites; the
	// longest matching prefix wins and beats the homeserver rules.
	ClientPrefixes map[string]SiteID `yaml:"client_prefixes"`
	// Homeservers maps a requester's homeserver (server name) to a site.
	Homeservers map[string]SiteID `yaml:"homeservers"`
	// Federations group homeservers; a requester of a federation's
	// homeserver goes to the federation's site.
	Federations map[FederationID]FederationConfig `yaml:"federations"`
}

// SiteConfig is one site.
type SiteConfig struct {
	// URL is the ws(s):// entry URL every live node of the site answers (a
	// load balancer or Kubernetes Service); it goes into token responses,
	// so livekit-client's reconnects reach a live node. Empty: the chosen
	// node's own signal URL.
	URL string `yaml:"url"`
	// Fallback lists the sites tried, in order, when this one has no node
	// with capacity. Empty: no fallback.
	Fallback []SiteID `yaml:"fallback"`
}

// FederationConfig is one federation's placement rule.
type FederationConfig struct {
	// Site serves requesters of the federation's homeservers.
	Site SiteID `yaml:"site"`
	// Homeservers are the federation's server names.
	Homeservers []string `yaml:"homeservers"`
}

// RedisConfig configures the Redis registry (standalone Redis ≥ 6.2).
type RedisConfig struct {
	// Address is host:port; empty runs the embedded single-node registry.
	Address  string `yaml:"address"`
	Username string `yaml:"username"`
	// PasswordFile holds the password (trailing newline ignored).
	PasswordFile string `yaml:"password_file"`
	DB           int    `yaml:"db"`
	// KeyPrefix starts every key and channel, so that deployments can share
	// a Redis.
	KeyPrefix string         `yaml:"key_prefix"`
	TLS       RedisTLSConfig `yaml:"tls"`
	// DialTimeout bounds connecting; OpTimeout bounds one command.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	OpTimeout   time.Duration `yaml:"op_timeout"`
}

// RedisTLSConfig configures TLS to Redis.
type RedisTLSConfig struct {
	Enabled bool `yaml:"enabled"`
	// CAFile verifies the server (PEM); empty uses the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile authenticate this node (PEM), both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the server certificate.
	ServerName string `yaml:"server_name"`
}

// DefaultConfig returns the defaults of the cluster section.
func DefaultConfig() Config {
	return Config{
		Site:           "default",
		MediaAddresses: []string{},
		Limits: Limits{
			MaxParticipants: 1000,
			MaxTracks:       4000,
			MaxCPU:          0.85,
		},
		HeartbeatInterval: 500 * time.Millisecond,
		LivenessTTL:       2500 * time.Millisecond,
		Drain:             DrainConfig{Grace: time.Second, Batch: 20, Interval: time.Second, Timeout: 2 * time.Minute},
		Redis: RedisConfig{
			KeyPrefix:   "gx:",
			DialTimeout: 2 * time.Second,
			OpTimeout:   time.Second,
		},
		Sites:          map[SiteID]SiteConfig{},
		ClientPrefixes: map[string]SiteID{},
		Homeservers:    map[string]SiteID{},
		Federations:    map[FederationID]FederationConfig{},
	}
}

// DrainConfig paces a drain: the node fails its health check for Grace
// (so balancers stop sending reconnects to it), then Batch participants get
// Leave{RECONNECT} every Interval, for at most Timeout, before the node
// stops.
type DrainConfig struct {
	Grace    time.Duration `yaml:"grace"`
	Batch    int           `yaml:"batch"`
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
}

// Multi reports whether the node joins a shared (Redis) registry.
func (c *Config) Multi() bool { return c.Redis.Address != "" }

// Validate reports every problem, each named by its key within the section.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.NodeID != "" && !ValidNodeID(c.NodeID) {
		bad("node_id", "must be 1-64 letters, digits, '.', '_' or '-', got %q", c.NodeID)
	}
	if !validToken(string(c.Site), maxIDLen) {
		bad("site", "must be 1-64 letters, digits, '.', '_' or '-', got %q", c.Site)
	}
	if c.Federation != "" && !validToken(string(c.Federation), maxIDLen) {
		bad("federation", "must be 1-64 letters, digits, '.', '_' or '-', got %q", c.Federation)
	}
	// Other nodes refuse a node record they could not have written (codec.go):
	// the node would heartbeat and yet be invisible to them.
	if c.SignalURL != "" {
		if !validSignalURL(c.SignalURL) {
			// The value is not shown: it may hold user info.
			bad("signal_url", "must be a ws(s):// URL with a host, without user info, query or fragment, of at most %d bytes", maxNameLen)
		}
	} else if c.Multi() {
		bad("signal_url", "must be set when redis.address is set (this node's own ws(s):// URL)")
	}
	if len(c.MediaAddresses) > maxMediaAddrs {
		bad("media_addresses", "must list at most %d addresses, got %d", maxMediaAddrs, len(c.MediaAddresses))
	}
	for i, a := range c.MediaAddresses {
		if !isAddr(a, false) {
			bad(fmt.Sprintf("media_addresses[%d]", i), "must be an IP or IP:port, got %q", a)
		}
	}
	if c.RelayAddress != "" && !isAddr(c.RelayAddress, true) {
		bad("relay_address", "must be host:port, got %q", c.RelayAddress)
	}
	if c.Limits.MaxCPU < 0 || c.Limits.MaxCPU > 1 {
		bad("limits.max_cpu", "must be between 0 and 1 (0: no limit), got %v", c.Limits.MaxCPU)
	}
	if c.HeartbeatInterval < 100*time.Millisecond || c.HeartbeatInterval > 30*time.Second {
		bad("heartbeat_interval", "must be between 100ms and 30s, got %s", c.HeartbeatInterval)
	}
	if c.LivenessTTL < 2*c.HeartbeatInterval || c.LivenessTTL > 5*time.Minute {
		bad("liveness_ttl", "must be at least twice heartbeat_interval (%s) and at most 5m, got %s", c.HeartbeatInterval, c.LivenessTTL)
	}
	if c.Drain.Batch < 1 {
		bad("drain.batch", "must be at least 1, got %d", c.Drain.Batch)
	}
	if c.Drain.Interval <= 0 {
		bad("drain.interval", "must be positive, got %s", c.Drain.Interval)
	}
	if c.Drain.Timeout <= 0 {
		bad("drain.timeout", "must be positive, got %s", c.Drain.Timeout)
	}
	if c.Drain.Grace < 0 {
		bad("drain.grace", "must not be negative, got %s", c.Drain.Grace)
	}
	c.validateRedis(bad)
	c.validateMessageKey(bad)
	c.validateTopology(bad)
	return errors.Join(errs...)
}

func (c *Config) validateRedis(bad func(key, format string, args ...any)) {
	r := &c.Redis
	if r.Address != "" {
		if _, port, err := net.SplitHostPort(r.Address); err != nil || port == "" {
			bad("redis.address", "must be host:port, got %q", r.Address)
		}
	}
	if r.DB < 0 || r.DB > 1024 {
		bad("redis.db", "must be between 0 and 1024, got %d", r.DB)
	}
	if r.KeyPrefix == "" || !validName(r.KeyPrefix, maxIDLen) || strings.ContainsAny(r.KeyPrefix, " *?[]") {
		bad("redis.key_prefix", "must be 1-64 printable characters without spaces or glob characters, got %q", r.KeyPrefix)
	}
	if r.DialTimeout <= 0 {
		bad("redis.dial_timeout", "must be positive")
	}
	if r.OpTimeout <= 0 {
		bad("redis.op_timeout", "must be positive")
	} else if r.OpTimeout >= c.LivenessTTL && c.LivenessTTL > 0 {
		bad("redis.op_timeout", "must be shorter than liveness_ttl (%s), got %s", c.LivenessTTL, r.OpTimeout)
	}
	t := &r.TLS
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "") {
		bad("redis.tls.enabled", "must be true when other redis.tls keys are set")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad("redis.tls.cert_file", "must be set together with redis.tls.key_file")
	}
}

func (c *Config) validateMessageKey(bad func(key, format string, args ...any)) {
	if c.MessageKeyFile == "" {
		if c.MessageKeyAcceptUnsigned {
			bad("message_key_accept_unsigned", "must be false without message_key_file")
		}
		return
	}
	if !c.Multi() {
		bad("message_key_file", "must be empty without redis.address (a single node sends no messages)")
		return
	}
	// The key itself is never shown.
	if _, err := loadMessageKey(c.MessageKeyFile); err != nil {
		bad("message_key_file", "%v", err)
	}
}

func (c *Config) validateTopology(bad func(key, format string, args ...any)) {
	known := func(s SiteID) bool {
		if len(c.Sites) == 0 {
			return s == c.Site
		}
		_, ok := c.Sites[s]
		return ok
	}
	unknown := func(s SiteID) string {
		if len(c.Sites) == 0 {
			return fmt.Sprintf("must be this node's site %q while sites is empty, got %q", c.Site, s)
		}
		return fmt.Sprintf("names no entry of sites: %q", s)
	}
	if len(c.Sites) > 0 && validToken(string(c.Site), maxIDLen) && !known(c.Site) {
		bad("site", "%s", unknown(c.Site))
	}
	if c.DefaultSite != "" && !known(c.DefaultSite) {
		bad("default_site", "%s", unknown(c.DefaultSite))
	}
	for id, s := range c.Sites {
		key := "sites." + string(id)
		if !validToken(string(id), maxIDLen) {
			bad(key, "site names must be 1-64 letters, digits, '.', '_' or '-'")
		}
		if s.URL != "" && !isURL(s.URL, "ws", "wss") {
			bad(key+".url", "must be a ws(s):// URL, got %q", s.URL)
		}
		if s.URL == "" && c.Multi() {
			bad(key+".url", "must be set with redis.address: the URL any live node of the site answers")
		}
		seen := map[SiteID]bool{}
		for i, f := range s.Fallback {
			fk := fmt.Sprintf("%s.fallback[%d]", key, i)
			switch {
			case f == id:
				bad(fk, "must not name the site itself")
			case seen[f]:
				bad(fk, "names %q twice", f)
			case !known(f):
				bad(fk, "%s", unknown(f))
			}
			seen[f] = true
		}
	}
	for p, s := range c.ClientPrefixes {
		key := "client_prefixes." + p
		if pf, err := netip.ParsePrefix(p); err != nil || pf.Masked() != pf {
			bad(key, "must be a CIDR prefix such as 10.1.0.0/16 (host bits zero), got %q", p)
		}
		if !known(s) {
			bad(key, "%s", unknown(s))
		}
	}
	for hs, s := range c.Homeservers {
		key := "homeservers." + hs
		if !isServerName(hs) {
			bad(key, "%q is not a server name", hs)
		}
		if !known(s) {
			bad(key, "%s", unknown(s))
		}
	}
	owner := map[string]FederationID{}
	for id, f := range c.Federations {
		key := "federations." + string(id)
		if !validToken(string(id), maxIDLen) {
			bad(key, "federation names must be 1-64 letters, digits, '.', '_' or '-'")
		}
		if !known(f.Site) {
			bad(key+".site", "%s", unknown(f.Site))
		}
		if len(f.Homeservers) == 0 {
			bad(key+".homeservers", "must list at least one server name")
		}
		for i, hs := range f.Homeservers {
			hk := fmt.Sprintf("%s.homeservers[%d]", key, i)
			if !isServerName(hs) {
				bad(hk, "%q is not a server name", hs)
			} else if other, dup := owner[hs]; dup && other != id {
				bad(hk, "%q is also in federation %q", hs, other)
			}
			owner[hs] = id
		}
	}
}

// ResolveNodeID is NodeID, or the host name made into a valid node ID.
func (c *Config) ResolveNodeID() (NodeID, error) {
	if c.NodeID != "" {
		return c.NodeID, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("failed to read the host name for node_id: %w", err)
	}
	b := []byte(h)
	for i, ch := range b {
		if !validToken(string(ch), 1) {
			b[i] = '-'
		}
	}
	if len(b) > maxIDLen {
		b = b[:maxIDLen]
	}
	if !ValidNodeID(NodeID(b)) {
		return "", fmt.Errorf("host name %q gives no valid node_id; set cluster.node_id", h)
	}
	return NodeID(b), nil
}

func isURL(s string, schemes ...string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return false
	}
	for _, sc := range schemes {
		if u.Scheme == sc {
			return true
		}
	}
	return false
}

// isAddr accepts an IP, IP:port or (hostOK) host:port.
func isAddr(s string, needPort bool) bool {
	if !needPort {
		if _, err := netip.ParseAddr(s); err == nil {
			return true
		}
		_, err := netip.ParseAddrPort(s)
		return err == nil
	}
	host, port, err := net.SplitHostPort(s)
	return err == nil && host != "" && port != "" && validName(host, 253)
}

// isServerName accepts a Matrix server name: host with optional port.
func isServerName(s string) bool {
	return s != "" && len(s) <= 255 && validName(s, 255) && !strings.ContainsAny(s, " /@")
}
