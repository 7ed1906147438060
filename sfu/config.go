package sfu

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"time"
)

// Config is the `sfu:` section of gxconf's configuration. Strict decoding is
// the caller's job; DefaultConfig gives the values every unset key takes.
type Config struct {
	// Listen is the HTTP listen address for signalling and the Twirp API.
	Listen string `yaml:"listen"`
	// PathPrefix is prepended to /rtc, /rtc/validate, /rtc/v1 and /twirp.
	// Empty or starting with "/", no trailing slash.
	PathPrefix string `yaml:"path_prefix"`
	// PublicURL is the ws(s):// URL clients should use; optional, URL()
	// derives one from Listen when empty.
	PublicURL string `yaml:"public_url"`
	// Keys maps API key to API secret (HS256 signing secret for tokens).
	Keys map[string]string `yaml:"keys"`
	// NodeID names this node in server_info and logs; random when empty.
	NodeID string `yaml:"node_id"`
	// Region is reported in server_info.
	Region string `yaml:"region"`

	RTC  RTCConfig  `yaml:"rtc"`
	Room RoomConfig `yaml:"room"`
	// TURN is the embedded TURN server (turn.go).
	TURN TURNConfig `yaml:"turn"`

	// PingInterval and PingTimeout are sent to clients in JoinResponse; the
	// server closes a signal connection that was silent for PingTimeout
	// (clients that send no pings, like server-sdk-go, are exempt).
	PingInterval time.Duration `yaml:"ping_interval"`
	PingTimeout  time.Duration `yaml:"ping_timeout"`

	// TokenRefreshInterval is how often connected clients get a fresh access
	// token (refresh_token) to reconnect with; 0 turns it off.
	TokenRefreshInterval time.Duration `yaml:"token_refresh_interval"`

	// ResumeWindow is how long a session whose signal connection was lost
	// stays in the room, media flowing, waiting for the client to resume
	// it (reconnect=1 with its participant sid). 0 turns resume off:
	// clients then rejoin, and a lost connection ends the session at once.
	ResumeWindow time.Duration `yaml:"resume_window"`
}

// RTCConfig configures the media transport.
type RTCConfig struct {
	// UDPPort is the single UDP port all peers share (ICE UDP mux). 0 turns
	// the mux off; then PortRangeStart..PortRangeEnd is used.
	UDPPort int `yaml:"udp_port"`
	// PortRangeStart and PortRangeEnd give one UDP port per peer connection
	// instead of the mux; only used when UDPPort is 0.
	PortRangeStart int `yaml:"port_range_start"`
	PortRangeEnd   int `yaml:"port_range_end"`
	// TCPPort is the ICE-TCP fallback port; 0 disables ICE-TCP.
	TCPPort int `yaml:"tcp_port"`
	// NodeIP, when set, is the only address advertised in host candidates
	// (e.g. 127.0.0.1 for loopback tests, or the public address of the host).
	NodeIP string `yaml:"node_ip"`
	// UseExternalIP asks the first STUN server for the public address at
	// start and advertises it (like livekit-server's rtc.use_external_ip).
	UseExternalIP bool `yaml:"use_external_ip"`
	// NAT1To1IPs are advertised instead of the local addresses; entries are
	// "external" or "external/local" (pion's NAT 1:1 mapping).
	NAT1To1IPs []string `yaml:"nat_1to1_ips"`
	// STUNServers ("host:port") are handed to clients as ICE servers.
	STUNServers []string `yaml:"stun_servers"`
	// TURNServers are handed to clients as ICE servers.
	TURNServers []TURNServer `yaml:"turn_servers"`
	// SocketBufferSize sets SO_RCVBUF/SO_SNDBUF of the media sockets (bytes;
	// the kernel caps it at net.core.[rw]mem_max).
	SocketBufferSize int `yaml:"socket_buffer_size"`
	// DirectSend encrypts forwarded RTP in the SFU and sends the copies of
	// each packet with one sendmmsg on the UDP mux socket, bypassing pion's
	// per-packet write path (see fastpath.go). Only with udp_port set.
	DirectSend bool `yaml:"direct_send"`
	// DirectReceive, with DirectSend, decrypts and forwards publishers' RTP
	// where the mux socket is read, skipping pion's receive goroutines
	// (fastrecv.go). Each media socket's reader goroutine then forwards
	// what it reads (see ReceiveSockets).
	DirectReceive bool `yaml:"direct_receive"`
	// ReceiveSockets is the number of sockets bound to udp_port with
	// SO_REUSEPORT, each read (and, with DirectReceive, forwarded) by a
	// goroutine of its own; the kernel spreads peers over them by address.
	// 0: one per CPU the process may use (GOMAXPROCS) with DirectReceive,
	// else 1.
	ReceiveSockets int `yaml:"receive_sockets"`
	// GSO sends each subscriber's copies of a video frame as one segmented
	// message (UDP_SEGMENT) on the direct path, where the kernel supports
	// it (checked at start; gxconf_sfu_segmentation_offload says which).
	// With DirectReceive, a socket reader's streams of fewer than
	// gsoKeepMin subscribers share one batch, sent when the socket is
	// drained, with a subscriber's copies of several streams in one message
	// where their sizes allow.
	GSO bool `yaml:"gso"`
	// PacketCacheSize is the number of video packets kept per simulcast
	// layer to answer NACKs; the low layers keep a quarter.
	PacketCacheSize int `yaml:"packet_cache_size"`
}

// TURNServer is one TURN entry handed to clients.
type TURNServer struct {
	URLs       []string `yaml:"urls"`
	Username   string   `yaml:"username"`
	Credential string   `yaml:"credential"`
}

// TURNConfig configures the embedded TURN server (RFC 8656), which relays
// media for clients that cannot reach rtc.udp_port or rtc.tcp_port, e.g.
// networks that allow only TCP 443 through a proxy.
type TURNConfig struct {
	// Enabled starts the TURN server and hands its URLs, with credentials
	// derived per participant, to every client in JoinResponse.ice_servers.
	Enabled bool `yaml:"enabled"`
	// Domain is the host name in the URLs handed out; for TLS it must match
	// the certificate. Empty: the host of public_url, else the relay IP.
	Domain string `yaml:"domain"`
	// UDPPort serves TURN over UDP; 0 turns it off.
	UDPPort int `yaml:"udp_port"`
	// TLSPort serves TURN over TLS (TURNS) on its own TCP port with the
	// signalling listener's certificate; 0 turns it off.
	TLSPort int `yaml:"tls_port"`
	// TLSOnSignalPort also serves TURNS on the signalling listener itself
	// (which must have TLS): after the handshake the first byte tells a
	// STUN/TURN message from an HTTP request. One port (e.g. 443) then
	// carries signalling and media.
	TLSOnSignalPort bool `yaml:"tls_on_signal_port"`
	// ExternalTLSPort is the port announced for TURNS when a load balancer
	// maps another one to tls_port; 0: tls_port.
	ExternalTLSPort int `yaml:"external_tls_port"`
	// ExternalTLS: a load balancer in front terminates TLS and forwards
	// plain TCP to tls_port, which then serves TURN without TLS; the URLs
	// still say turns:.
	ExternalTLS bool `yaml:"external_tls"`
	// TCPPort serves plain TURN over TCP; 0 turns it off.
	TCPPort int `yaml:"tcp_port"`
	// RelayIP is the address of relayed transport addresses; relay sockets
	// are bound to it when it is local. Empty: rtc.node_ip, else the first
	// rtc.nat_1to1_ips entry, else the address rtc.use_external_ip found.
	RelayIP string `yaml:"relay_ip"`
	// RelayPortRangeStart..RelayPortRangeEnd are the UDP ports of relayed
	// transport addresses.
	RelayPortRangeStart int `yaml:"relay_port_range_start"`
	RelayPortRangeEnd   int `yaml:"relay_port_range_end"`
	// Realm is the long-term credential realm (RFC 8489 §9.2).
	Realm string `yaml:"realm"`
	// Secret derives the per-participant credentials (TURN REST API:
	// HMAC-SHA1). Empty: random per process. At least 32 characters.
	Secret string `yaml:"secret"`
	// CredentialTTL is how long a credential handed out at join is valid.
	CredentialTTL time.Duration `yaml:"credential_ttl"`
	// UserQuota is the number of allocations one identity may hold at once.
	UserQuota int `yaml:"user_quota"`
}

// RoomConfig holds defaults for rooms created by a join (auto_create) and
// limits applied to all rooms.
type RoomConfig struct {
	// AutoCreate lets a join create its room; otherwise rooms come from
	// CreateRoom only and a join to a missing room gets 404.
	AutoCreate bool `yaml:"auto_create"`
	// EmptyTimeout closes a room nobody ever joined after this long.
	EmptyTimeout time.Duration `yaml:"empty_timeout"`
	// DepartureTimeout closes a room this long after its last participant left.
	DepartureTimeout time.Duration `yaml:"departure_timeout"`
	// MaxParticipants limits rooms that do not set their own; 0 = unlimited.
	MaxParticipants int `yaml:"max_participants"`
}

// DefaultConfig returns the configuration every unset key falls back to.
func DefaultConfig() Config {
	return Config{
		Listen:     ":7880",
		PathPrefix: "",
		Keys:       map[string]string{},
		RTC: RTCConfig{
			UDPPort:          7882,
			TCPPort:          7881,
			SocketBufferSize: 4 << 20,
			DirectSend:       true,
			DirectReceive:    true,
			GSO:              true,
			PacketCacheSize:  256,
		},
		TURN: TURNConfig{
			UDPPort:             3478,
			TLSPort:             5349,
			RelayPortRangeStart: 30000,
			RelayPortRangeEnd:   40000,
			Realm:               "gxconf",
			CredentialTTL:       8 * time.Hour,
			UserQuota:           10,
		},
		Room: RoomConfig{
			AutoCreate:       true,
			EmptyTimeout:     5 * time.Minute,
			DepartureTimeout: 20 * time.Second,
		},
		PingInterval:         5 * time.Second,
		PingTimeout:          15 * time.Second,
		TokenRefreshInterval: 5 * time.Minute,
		ResumeWindow:         15 * time.Second,
	}
}

// Validate reports every problem of the section at once. Each error names
// its key relative to the section ("rtc.udp_port: ..."); the caller adds
// the "sfu." prefix.
func (c *Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}

	if c.Listen == "" {
		add("listen", "must be set")
	} else if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		add("listen", "must be host:port, got %q", c.Listen)
	}
	if c.PathPrefix != "" && (!strings.HasPrefix(c.PathPrefix, "/") || strings.HasSuffix(c.PathPrefix, "/")) {
		add("path_prefix", "must start with / and not end with /, got %q", c.PathPrefix)
	}
	if c.PublicURL != "" && !strings.HasPrefix(c.PublicURL, "ws://") && !strings.HasPrefix(c.PublicURL, "wss://") {
		add("public_url", "must start with ws:// or wss://, got %q", c.PublicURL)
	}
	if len(c.Keys) == 0 {
		add("keys", "must contain at least one api key")
	}
	for k, v := range c.Keys {
		switch {
		case k == "":
			add("keys", "api key must not be empty")
		case v == "":
			add("keys."+k, "secret must not be empty")
		case len(v) < 32:
			add("keys."+k, "secret must be at least 32 characters, got %d", len(v))
		}
	}

	r := &c.RTC
	checkPort := func(key string, p int, zeroOK bool) {
		if (p == 0 && !zeroOK) || p < 0 || p > 65535 {
			add(key, "must be 1-65535, got %d", p)
		}
	}
	checkPort("rtc.udp_port", r.UDPPort, true)
	checkPort("rtc.tcp_port", r.TCPPort, true)
	checkPort("rtc.port_range_start", r.PortRangeStart, true)
	checkPort("rtc.port_range_end", r.PortRangeEnd, true)
	rangeSet := r.PortRangeStart != 0 || r.PortRangeEnd != 0
	switch {
	case r.UDPPort == 0 && !rangeSet:
		add("rtc.udp_port", "must be 1-65535, got 0 (or set rtc.port_range_start/end)")
	case r.UDPPort != 0 && rangeSet:
		add("rtc.port_range_start", "is only used when rtc.udp_port is 0")
	case rangeSet && (r.PortRangeStart == 0 || r.PortRangeEnd == 0 || r.PortRangeEnd < r.PortRangeStart):
		add("rtc.port_range_end", "must be >= rtc.port_range_start, both set, got %d-%d", r.PortRangeStart, r.PortRangeEnd)
	}
	if r.UDPPort != 0 && r.UDPPort == r.TCPPort {
		// UDP and TCP may share a number, but a mistake is likelier.
		add("rtc.tcp_port", "must differ from rtc.udp_port (%d)", r.UDPPort)
	}
	if r.NodeIP != "" {
		if _, err := netip.ParseAddr(r.NodeIP); err != nil {
			add("rtc.node_ip", "must be an IP address, got %q", r.NodeIP)
		}
	}
	if r.NodeIP != "" && (len(r.NAT1To1IPs) > 0 || r.UseExternalIP) {
		add("rtc.node_ip", "cannot be combined with rtc.nat_1to1_ips or rtc.use_external_ip")
	}
	if r.UseExternalIP && len(r.NAT1To1IPs) > 0 {
		add("rtc.use_external_ip", "cannot be combined with rtc.nat_1to1_ips")
	}
	if r.UseExternalIP && len(r.STUNServers) == 0 {
		add("rtc.use_external_ip", "needs at least one rtc.stun_servers entry")
	}
	for i, m := range r.NAT1To1IPs {
		for _, part := range strings.Split(m, "/") {
			if _, err := netip.ParseAddr(part); err != nil {
				add(fmt.Sprintf("rtc.nat_1to1_ips[%d]", i), "must be ip or ip/local-ip, got %q", m)
				break
			}
		}
	}
	for i, s := range r.STUNServers {
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(s, "stun:")); err != nil {
			add(fmt.Sprintf("rtc.stun_servers[%d]", i), "must be host:port, got %q", s)
		}
	}
	for i, t := range r.TURNServers {
		key := fmt.Sprintf("rtc.turn_servers[%d]", i)
		if len(t.URLs) == 0 {
			add(key+".urls", "must not be empty")
		}
		for j, u := range t.URLs {
			if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
				add(fmt.Sprintf("%s.urls[%d]", key, j), "must start with turn: or turns:, got %q", u)
			}
		}
		if t.Username == "" || t.Credential == "" {
			add(key, "username and credential must be set")
		}
	}
	if r.SocketBufferSize < 0 {
		add("rtc.socket_buffer_size", "must not be negative, got %d", r.SocketBufferSize)
	}
	if r.ReceiveSockets < 0 || r.ReceiveSockets > 256 {
		add("rtc.receive_sockets", "must be 0 (one per CPU) to 256, got %d", r.ReceiveSockets)
	}
	if r.PacketCacheSize < 16 || r.PacketCacheSize > 4096 {
		add("rtc.packet_cache_size", "must be 16-4096, got %d", r.PacketCacheSize)
	}

	c.TURN.validate(c, add)

	if c.Room.EmptyTimeout < time.Second {
		add("room.empty_timeout", "must be at least 1s, got %s", c.Room.EmptyTimeout)
	}
	if c.Room.DepartureTimeout < 0 {
		add("room.departure_timeout", "must not be negative, got %s", c.Room.DepartureTimeout)
	}
	if c.Room.MaxParticipants < 0 {
		add("room.max_participants", "must not be negative, got %d", c.Room.MaxParticipants)
	}
	if c.PingInterval < time.Second {
		add("ping_interval", "must be at least 1s, got %s", c.PingInterval)
	}
	if c.ResumeWindow < 0 {
		add("resume_window", "must not be negative, got %s", c.ResumeWindow)
	}
	if c.TokenRefreshInterval < 0 {
		add("token_refresh_interval", "must not be negative, got %s", c.TokenRefreshInterval)
	}
	if c.PingTimeout <= c.PingInterval {
		add("ping_timeout", "must be longer than ping_interval (%s), got %s", c.PingInterval, c.PingTimeout)
	}
	return errors.Join(errs...)
}

func (t *TURNConfig) validate(c *Config, add func(key, format string, args ...any)) {
	for _, p := range []struct {
		key  string
		port int
	}{{"turn.udp_port", t.UDPPort}, {"turn.tls_port", t.TLSPort}, {"turn.tcp_port", t.TCPPort}, {"turn.external_tls_port", t.ExternalTLSPort}} {
		if p.port < 0 || p.port > 65535 {
			add(p.key, "must be 0-65535, got %d", p.port)
		}
	}
	if t.RelayIP != "" {
		if _, err := netip.ParseAddr(t.RelayIP); err != nil {
			add("turn.relay_ip", "must be an IP address, got %q", t.RelayIP)
		}
	}
	if t.Secret != "" && len(t.Secret) < 32 {
		add("turn.secret", "must be at least 32 characters, got %d", len(t.Secret))
	}
	if !t.Enabled {
		return
	}
	if t.UDPPort == 0 && t.TLSPort == 0 && t.TCPPort == 0 && !t.TLSOnSignalPort {
		add("turn.enabled", "needs at least one of turn.udp_port, turn.tls_port, turn.tcp_port, turn.tls_on_signal_port")
	}
	if t.ExternalTLS && t.TLSPort == 0 {
		add("turn.external_tls", "needs turn.tls_port")
	}
	if t.TCPPort != 0 && t.TCPPort == t.TLSPort {
		add("turn.tcp_port", "must differ from turn.tls_port (%d)", t.TLSPort)
	}
	if t.RelayIP == "" && c.RTC.NodeIP == "" && len(c.RTC.NAT1To1IPs) == 0 && !c.RTC.UseExternalIP {
		add("turn.relay_ip", "must be set when turn.enabled and rtc.node_ip, rtc.nat_1to1_ips and rtc.use_external_ip are not")
	}
	if t.RelayPortRangeStart < 1024 || t.RelayPortRangeStart > 65535 || t.RelayPortRangeEnd > 65535 || t.RelayPortRangeEnd < t.RelayPortRangeStart {
		add("turn.relay_port_range_end", "must be >= turn.relay_port_range_start, both 1024-65535, got %d-%d", t.RelayPortRangeStart, t.RelayPortRangeEnd)
	}
	// The relays' UDP ports stay clear of the SFU's UDP ports: an overlap
	// lets a relay (which may send to the SFU's media ports) reach another
	// user's relay, or makes the SFU and the relays compete for ports.
	inRelay := func(p int) bool { return p != 0 && p >= t.RelayPortRangeStart && p <= t.RelayPortRangeEnd }
	if c.RTC.UDPPort == 0 && c.RTC.PortRangeStart != 0 && c.RTC.PortRangeEnd != 0 &&
		c.RTC.PortRangeStart <= t.RelayPortRangeEnd && t.RelayPortRangeStart <= c.RTC.PortRangeEnd {
		add("turn.relay_port_range_start", "range %d-%d must not overlap rtc.port_range_start..end (%d-%d)",
			t.RelayPortRangeStart, t.RelayPortRangeEnd, c.RTC.PortRangeStart, c.RTC.PortRangeEnd)
	}
	if inRelay(c.RTC.UDPPort) {
		add("turn.relay_port_range_start", "range %d-%d must not contain rtc.udp_port (%d)",
			t.RelayPortRangeStart, t.RelayPortRangeEnd, c.RTC.UDPPort)
	}
	if inRelay(t.UDPPort) {
		add("turn.relay_port_range_start", "range %d-%d must not contain turn.udp_port (%d)",
			t.RelayPortRangeStart, t.RelayPortRangeEnd, t.UDPPort)
	}
	if t.Realm == "" {
		add("turn.realm", "must be set")
	}
	if t.CredentialTTL < time.Minute || t.CredentialTTL > 7*24*time.Hour {
		add("turn.credential_ttl", "must be 1m-168h, got %s", t.CredentialTTL)
	}
	if t.UserQuota < 1 {
		add("turn.user_quota", "must be at least 1, got %d", t.UserQuota)
	}
	if t.Domain != "" && strings.ContainsAny(t.Domain, ":/ ") {
		add("turn.domain", "must be a host name or IPv4 address, got %q", t.Domain)
	}
}

// receiveSockets is the number of media sockets to bind (ReceiveSockets).
func (r *RTCConfig) receiveSockets() int {
	switch {
	case r.ReceiveSockets > 0:
		return r.ReceiveSockets
	case r.DirectSend && r.DirectReceive:
		return runtime.GOMAXPROCS(0)
	}
	return 1
}
