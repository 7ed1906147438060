package sfu

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Keys = map[string]string{"APIkey": strings.Repeat("s", 40)}
	return c
}

func TestConfigValidate(t *testing.T) {
	c := validConfig()
	require.NoError(t, c.Validate())

	tests := []struct {
		name string
		mut  func(*Config)
		want []string
	}{
		{"no keys", func(c *Config) { c.Keys = nil }, []string{"keys: must contain at least one api key"}},
		{"short secret", func(c *Config) { c.Keys = map[string]string{"k": "short"} }, []string{"keys.k: secret must be at least 32 characters"}},
		{"udp port zero", func(c *Config) { c.RTC.UDPPort = 0 }, []string{"rtc.udp_port: must be 1-65535, got 0"}},
		{"range with mux", func(c *Config) { c.RTC.PortRangeStart, c.RTC.PortRangeEnd = 50000, 60000 }, []string{"rtc.port_range_start: is only used when rtc.udp_port is 0"}},
		{"range ok", func(c *Config) { c.RTC.UDPPort = 0; c.RTC.PortRangeStart, c.RTC.PortRangeEnd = 50000, 60000 }, nil},
		{"range reversed", func(c *Config) { c.RTC.UDPPort = 0; c.RTC.PortRangeStart, c.RTC.PortRangeEnd = 60000, 50000 }, []string{"rtc.port_range_end:"}},
		{"bad node ip", func(c *Config) { c.RTC.NodeIP = "host" }, []string{"rtc.node_ip: must be an IP address"}},
		{"bad nat", func(c *Config) { c.RTC.NAT1To1IPs = []string{"1.2.3.4/x"} }, []string{"rtc.nat_1to1_ips[0]:"}},
		{"external ip needs stun", func(c *Config) { c.RTC.UseExternalIP = true }, []string{"rtc.use_external_ip: needs at least one"}},
		{"turn", func(c *Config) { c.RTC.TURNServers = []TURNServer{{URLs: []string{"http://x"}}} }, []string{"rtc.turn_servers[0].urls[0]:", "rtc.turn_servers[0]: username and credential"}},
		{"turn off ignores ports", func(c *Config) { c.TURN.UDPPort = 0; c.TURN.TLSPort = 0 }, nil},
		{"turn on", func(c *Config) { c.TURN.Enabled = true; c.RTC.NodeIP = "203.0.113.7" }, nil},
		{"turn needs relay ip", func(c *Config) { c.TURN.Enabled = true }, []string{"turn.relay_ip: must be set"}},
		{"turn bad keys", func(c *Config) {
			c.TURN = TURNConfig{Enabled: true, RelayIP: "x", UDPPort: 70000, Secret: "short", RelayPortRangeStart: 40000, RelayPortRangeEnd: 30000, CredentialTTL: time.Second, Domain: "turn.example.org:443"}
		}, []string{"turn.udp_port: must be 0-65535", "turn.relay_ip: must be an IP address", "turn.secret: must be at least 32", "turn.relay_port_range_end:", "turn.realm: must be set", "turn.credential_ttl:", "turn.user_quota:", "turn.domain:"}},
		{"external tls needs tls port", func(c *Config) {
			c.TURN.Enabled, c.RTC.NodeIP, c.TURN.ExternalTLS, c.TURN.TLSPort = true, "203.0.113.7", true, 0
		}, []string{"turn.external_tls: needs turn.tls_port"}},
		{"turn no listener", func(c *Config) {
			c.TURN.Enabled, c.TURN.RelayIP, c.TURN.UDPPort, c.TURN.TLSPort = true, "203.0.113.7", 0, 0
		}, []string{"turn.enabled: needs at least one"}},
		{"turn relay range overlaps media range", func(c *Config) {
			c.TURN.Enabled, c.RTC.NodeIP = true, "203.0.113.7"
			c.RTC.UDPPort, c.RTC.PortRangeStart, c.RTC.PortRangeEnd = 0, 39000, 45000
		}, []string{"turn.relay_port_range_start: range 30000-40000 must not overlap rtc.port_range_start..end (39000-45000)"}},
		{"turn relay range next to media range", func(c *Config) {
			c.TURN.Enabled, c.RTC.NodeIP = true, "203.0.113.7"
			c.RTC.UDPPort, c.RTC.PortRangeStart, c.RTC.PortRangeEnd = 0, 40001, 45000
		}, nil},
		{"turn relay range holds udp ports", func(c *Config) {
			c.TURN.Enabled, c.RTC.NodeIP, c.RTC.UDPPort, c.TURN.UDPPort = true, "203.0.113.7", 30000, 40000
		}, []string{"turn.relay_port_range_start: range 30000-40000 must not contain rtc.udp_port (30000)", "turn.relay_port_range_start: range 30000-40000 must not contain turn.udp_port (40000)"}},
		{"prefix", func(c *Config) { c.PathPrefix = "sfu/" }, []string{"path_prefix:"}},
		{"ping", func(c *Config) { c.PingTimeout = time.Second }, []string{"ping_timeout:"}},
		{"listen", func(c *Config) { c.Listen = "nope" }, []string{"listen: must be host:port"}},
		{"many at once", func(c *Config) { c.Listen = ""; c.RTC.TCPPort = 70000; c.Room.MaxParticipants = -1 },
			[]string{"listen: must be set", "rtc.tcp_port: must be 1-65535, got 70000", "room.max_participants:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mut(&c)
			err := c.Validate()
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			require.Len(t, strings.Split(err.Error(), "\n"), len(tc.want))
		})
	}
}

// TestConfigYAML: the documented keys decode strictly on top of the
// defaults (the caller's job, checked here so tags and docs agree).
func TestConfigYAML(t *testing.T) {
	doc := `
listen: "127.0.0.1:7880"
path_prefix: /livekit/sfu
public_url: wss://sfu.example.org/livekit/sfu
keys:
  APIkey: "0123456789abcdef0123456789abcdef"
node_id: node-a
region: de
ping_interval: 5s
ping_timeout: 15s
rtc:
  udp_port: 7882
  port_range_start: 0
  port_range_end: 0
  tcp_port: 7881
  node_ip: ""
  use_external_ip: false
  nat_1to1_ips: ["203.0.113.7"]
  stun_servers: ["stun.example.org:3478"]
  turn_servers:
    - urls: ["turn:turn.example.org:3478?transport=udp"]
      username: u
      credential: c
  socket_buffer_size: 4194304
  packet_cache_size: 256
  direct_send: true
turn:
  enabled: true
  domain: turn.example.org
  udp_port: 3478
  tls_port: 5349
  tls_on_signal_port: false
  external_tls_port: 443
  external_tls: false
  tcp_port: 0
  relay_ip: 203.0.113.7
  relay_port_range_start: 30000
  relay_port_range_end: 40000
  realm: gxconf
  secret: "0123456789abcdef0123456789abcdef"
  credential_ttl: 8h
  user_quota: 10
room:
  auto_create: true
  empty_timeout: 5m
  departure_timeout: 20s
  max_participants: 50
`
	c := DefaultConfig()
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&c))
	require.NoError(t, c.Validate())
	require.Equal(t, 5*time.Minute, c.Room.EmptyTimeout)
	require.Equal(t, "turn:turn.example.org:3478?transport=udp", c.RTC.TURNServers[0].URLs[0])
	require.Equal(t, 50, c.Room.MaxParticipants)
	require.Equal(t, 443, c.TURN.ExternalTLSPort)
	require.Equal(t, 8*time.Hour, c.TURN.CredentialTTL)

	bad := DefaultConfig()
	dec = yaml.NewDecoder(strings.NewReader("rtc:\n  udp_prot: 1\n"))
	dec.KnownFields(true)
	require.Error(t, dec.Decode(&bad))
}
