package sfu

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// errTURNTCPRelay refuses RFC 6062 TCP relays: media reaches the SFU over
// UDP, and a TCP relay to arbitrary peers is what an attacker would want.
var errTURNTCPRelay = errors.New("tcp relay allocations are not offered")

// turnServer is the embedded TURN server (RFC 8656) on top of pion/turn:
// per-participant credentials (turn_credentials.go), relays bound to the
// node's media address that may only reach this node, a per-identity
// allocation quota and metrics.
//
// Lifecycle: newTURNServer (from New) opens the sockets; start (from Run,
// once the TLS configuration is known) starts pion's server; close (from
// Run) stops it. mu guards closed, conns, perUser, relays and the
// closed-relay totals.
type turnServer struct {
	cfg     TURNConfig
	secret  []byte
	relayIP net.IP
	domain  string
	log     zerolog.Logger
	lf      pionLoggerFactory
	// present tells whether identity is a participant on this node.
	present func(identity string) bool
	now     func() time.Time
	allowed map[netip.Addr]struct{}
	// mediaPorts are the SFU's UDP media ports, the only ports a relay may
	// send to: rtc.udp_port, or rtc.port_range_start..end.
	mediaPortMin, mediaPortMax int
	// ports, in rtc.port_range mode, are the ports of the range the peer
	// connections hold: only those are reachable (nil: rtc.udp_port).
	ports *boundPorts
	// hairpinExt/hairpinLocal: when the SFU advertises one address that is
	// not on this host (a NAT's public address, e.g. an OpenStack floating
	// IP), relays send to hairpinLocal instead and report packets from it
	// as coming from hairpinExt, so relay and SFU never depend on the NAT
	// looping packets back. Invalid when not needed.
	hairpinExt, hairpinLocal netip.Addr
	// The same with the UDP mux port, prebuilt: no allocation per packet.
	hairpinExtAddr, hairpinLocalAddr *net.UDPAddr

	udp   net.PacketConn
	tcpLn net.Listener
	tlsLn net.Listener // raw TCP; TLS is added by start
	// signalLn receives TURNS connections demultiplexed off the signalling
	// listener (turn.tls_on_signal_port); set by Run before start.
	signalLn net.Listener
	server   *turn.Server
	// transports maps "udp:port"/"tcp:port" of a listener to its label.
	transports map[string]string

	mu                   sync.Mutex
	closed               bool
	conns                map[net.Conn]struct{} // accepted TCP/TLS connections
	perUser              map[string]int
	relays               map[*relayConn]struct{}
	closedTo, closedFrom uint64

	allocations      prometheus.Gauge
	allocationsTotal *prometheus.CounterVec
	authFailures     prometheus.Counter
	quotaRejected    prometheus.Counter
	relayedDesc      *prometheus.Desc
}

// newTURNServer checks the addresses, opens the listening sockets and
// registers the metrics. externalIP is the address rtc.use_external_ip
// found ("" otherwise).
func newTURNServer(cfg *Config, externalIP string, log zerolog.Logger, reg prometheus.Registerer, present func(string) bool, ports *boundPorts) (*turnServer, error) {
	tc := cfg.TURN
	t := &turnServer{
		cfg:        tc,
		log:        log,
		lf:         newPionLoggerFactory(log, true),
		present:    present,
		ports:      ports,
		now:        time.Now,
		allowed:    map[netip.Addr]struct{}{},
		transports: map[string]string{},
		perUser:    map[string]int{},
		relays:     map[*relayConn]struct{}{},
	}
	t.mediaPortMin, t.mediaPortMax = cfg.RTC.UDPPort, cfg.RTC.UDPPort
	if cfg.RTC.UDPPort == 0 {
		t.mediaPortMin, t.mediaPortMax = cfg.RTC.PortRangeStart, cfg.RTC.PortRangeEnd
	}
	if tc.Secret != "" {
		t.secret = []byte(tc.Secret)
	} else {
		t.secret = make([]byte, 32)
		if _, err := rand.Read(t.secret); err != nil {
			return nil, fmt.Errorf("failed to generate turn secret: %w", err)
		}
	}

	// The node's own media addresses: the relay address and the only
	// peers a relay may reach (no open relay into the operator's network).
	// The host's other interface addresses (loopback, docker bridges) are
	// not among them unless configured here: services listening there are
	// not the SFU's.
	var own []string
	own = append(own, tc.RelayIP, cfg.RTC.NodeIP, externalIP)
	for _, m := range cfg.RTC.NAT1To1IPs {
		ext, local, _ := strings.Cut(m, "/")
		own = append(own, ext, local)
	}
	for _, a := range own {
		if ip, err := netip.ParseAddr(a); err == nil {
			t.allowed[ip.Unmap()] = struct{}{}
			if t.relayIP == nil {
				t.relayIP = net.IP(ip.AsSlice())
			}
		}
	}
	if t.relayIP == nil {
		return nil, errors.New("turn.relay_ip: no relay address (set turn.relay_ip or rtc.node_ip)")
	}
	locals, _ := net.InterfaceAddrs()
	relayLocal := false
	local := map[netip.Addr]bool{}
	for _, a := range locals {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				local[ip.Unmap()] = true
				relayLocal = relayLocal || n.IP.Equal(t.relayIP)
			}
		}
	}
	t.hairpinExt, t.hairpinLocal = hairpin(cfg, externalIP, local)
	if t.hairpinExt.IsValid() {
		t.hairpinExtAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(t.hairpinExt, uint16(t.mediaPortMin)))
		t.hairpinLocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(t.hairpinLocal, uint16(t.mediaPortMin)))
	}
	t.domain = tc.Domain
	if t.domain == "" && cfg.PublicURL != "" {
		if u, err := url.Parse(cfg.PublicURL); err == nil {
			t.domain = u.Hostname()
		}
	}
	if t.domain == "" {
		t.domain = t.relayIP.String()
	}

	// Listeners bind to every interface, except on a loopback node (tests),
	// like the media sockets.
	bindHost := ""
	if t.relayIP.IsLoopback() && relayLocal {
		bindHost = t.relayIP.String()
	}
	var err error
	if tc.UDPPort != 0 {
		if t.udp, err = net.ListenPacket("udp", net.JoinHostPort(bindHost, strconv.Itoa(tc.UDPPort))); err != nil {
			return nil, fmt.Errorf("failed to listen on turn.udp_port %d: %w", tc.UDPPort, err)
		}
		t.transports["udp:"+strconv.Itoa(tc.UDPPort)] = "udp"
	}
	if tc.TCPPort != 0 {
		if t.tcpLn, err = net.Listen("tcp", net.JoinHostPort(bindHost, strconv.Itoa(tc.TCPPort))); err != nil {
			t.closeSockets()
			return nil, fmt.Errorf("failed to listen on turn.tcp_port %d: %w", tc.TCPPort, err)
		}
		t.transports["tcp:"+strconv.Itoa(tc.TCPPort)] = "tcp"
	}
	if tc.TLSPort != 0 {
		if t.tlsLn, err = net.Listen("tcp", net.JoinHostPort(bindHost, strconv.Itoa(tc.TLSPort))); err != nil {
			t.closeSockets()
			return nil, fmt.Errorf("failed to listen on turn.tls_port %d: %w", tc.TLSPort, err)
		}
		t.transports["tcp:"+strconv.Itoa(tc.TLSPort)] = "tls"
	}

	const ns, sub = "gxconf", "sfu"
	t.allocations = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "turn_allocations", Help: "TURN allocations open on this node."})
	t.allocationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "turn_allocations_total", Help: "TURN allocations created, by client transport (udp, tcp, tls)."}, []string{"transport"})
	t.authFailures = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "turn_auth_failures_total", Help: "TURN requests refused for a wrong, expired or unknown credential."})
	t.quotaRejected = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "turn_quota_rejections_total", Help: "TURN allocations refused by turn.user_quota (486)."})
	t.relayedDesc = prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "turn_relayed_bytes_total"), "Bytes relayed by TURN allocations: to_peer (client to SFU) and from_peer (SFU to client).", []string{"direction"}, nil)
	for _, c := range []prometheus.Collector{t.allocations, t.allocationsTotal, t.authFailures, t.quotaRejected, turnRelayCollector{t}} {
		if err := reg.Register(c); err != nil {
			t.closeSockets()
			return nil, fmt.Errorf("failed to register turn metrics: %w", err)
		}
	}
	return t, nil
}

// start runs pion's server on the opened sockets. tlsCfg is the
// signalling listener's TLS configuration (nil without TLS).
func (t *turnServer) start(tlsCfg *tls.Config) error {
	if t.signalLn != nil && tlsCfg == nil {
		return errors.New("turn.tls_on_signal_port needs TLS on the signalling listener (tls.cert_file)")
	}
	if t.tlsLn != nil && tlsCfg == nil && !t.cfg.ExternalTLS {
		return errors.New("turn.tls_port needs TLS on the signalling listener (tls.cert_file), or turn.external_tls behind a TLS-terminating load balancer")
	}
	gen := func() turn.RelayAddressGenerator {
		bind := "0.0.0.0"
		if t.relayIP.To4() == nil {
			bind = "::"
		}
		if isLocalIP(t.relayIP) {
			bind = t.relayIP.String()
		}
		return &relayGenerator{t: t, RelayAddressGeneratorPortRange: turn.RelayAddressGeneratorPortRange{
			RelayAddress: t.relayIP,
			Address:      bind,
			MinPort:      uint16(t.cfg.RelayPortRangeStart),
			MaxPort:      uint16(t.cfg.RelayPortRangeEnd),
			MaxRetries:   50,
		}}
	}
	sc := turn.ServerConfig{
		Realm:         t.cfg.Realm,
		LoggerFactory: t.lf,
		AuthHandler:   t.auth,
		QuotaHandler:  t.quota,
		EventHandler: turn.EventHandler{
			OnAuth:              t.onAuth,
			OnAllocationCreated: t.onAllocationCreated,
			OnAllocationDeleted: t.onAllocationDeleted,
		},
	}
	if t.udp != nil {
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{PacketConn: t.udp, RelayAddressGenerator: gen(), PermissionHandler: t.permit})
	}
	addLn := func(l net.Listener) {
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{Listener: l, RelayAddressGenerator: gen(), PermissionHandler: t.permit})
	}
	// Accepted connections are tracked below TLS, so pion still sees a
	// *tls.Conn.
	if t.tcpLn != nil {
		addLn(t.track(t.tcpLn))
	}
	if t.tlsLn != nil && t.cfg.ExternalTLS {
		addLn(t.track(t.tlsLn))
	} else if t.tlsLn != nil {
		c := tlsCfg.Clone()
		// The signalling listener offers http/1.1 only; a TURN client
		// offering another protocol must not fail the handshake.
		c.NextProtos = nil
		addLn(tls.NewListener(t.track(t.tlsLn), c))
	}
	if t.signalLn != nil {
		addLn(t.track(t.signalLn))
	}
	srv, err := turn.NewServer(sc)
	if err != nil {
		t.closeSockets()
		return fmt.Errorf("failed to start turn server: %w", err)
	}
	t.server = srv
	t.log.Info().Int("udp_port", t.cfg.UDPPort).Int("tls_port", t.cfg.TLSPort).Int("tcp_port", t.cfg.TCPPort).
		Bool("tls_on_signal_port", t.signalLn != nil).Str("relay_ip", t.relayIP.String()).Msg("turn listening")
	return nil
}

func isLocalIP(ip net.IP) bool {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// close stops the server: its listeners, its TCP/TLS connections (pion
// leaves accepted connections open) and with them the allocations.
func (t *turnServer) close() error {
	var err error
	if t.server != nil {
		err = t.server.Close()
	} else {
		t.closeSockets()
	}
	t.mu.Lock()
	conns := t.conns
	t.conns, t.closed = nil, true
	t.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
	return err
}

// track records the connections l accepts so that close can end them.
func (t *turnServer) track(l net.Listener) net.Listener { return &trackListener{Listener: l, t: t} }

type trackListener struct {
	net.Listener
	t *turnServer
}

func (l *trackListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.t.mu.Lock()
	defer l.t.mu.Unlock()
	if l.t.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	if l.t.conns == nil {
		l.t.conns = map[net.Conn]struct{}{}
	}
	l.t.conns[c] = struct{}{}
	return &trackedConn{Conn: c, t: l.t}, nil
}

type trackedConn struct {
	net.Conn
	t    *turnServer
	once sync.Once
	// deadline is the read deadline last set (reads are sequential: pion's
	// read loop of the connection)
	deadline time.Time
}

// turnIdleTimeout closes a TURN stream connection on which the client has
// sent nothing for this long (at least half of it: see Read). A client in a call sends media or ICE
// consent checks every few seconds and refreshes its allocation well
// within it; otherwise a connection that sent one byte (or completed a
// TLS handshake) and then nothing held a socket and goroutines for good.
// A variable only so that a test can shorten it.
var turnIdleTimeout = 2 * time.Minute

// Read keeps the idle deadline at least half of turnIdleTimeout ahead,
// moving it only when it has come that close: media over TURN-TCP reads
// once per packet, and setting a deadline re-arms a runtime timer.
func (c *trackedConn) Read(p []byte) (int, error) {
	if now := time.Now(); c.deadline.Sub(now) < turnIdleTimeout/2 {
		c.deadline = now.Add(turnIdleTimeout)
		_ = c.Conn.SetReadDeadline(c.deadline)
	}
	return c.Conn.Read(p)
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c.Conn)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

func (t *turnServer) closeSockets() {
	for _, c := range []interface{ Close() error }{t.udp, t.tcpLn, t.tlsLn, t.signalLn} {
		if c != nil {
			_ = c.Close()
		}
	}
}

// iceServers are the TURN entries for identity, with a credential valid
// for turn.credential_ttl. signalPort is the announced signalling port
// (for turn.tls_on_signal_port).
func (t *turnServer) iceServers(identity string, signalPort int) []*livekit.ICEServer {
	user, pass := turnCredential(t.secret, identity, t.now().Add(t.cfg.CredentialTTL))
	var urls []string
	hostPort := func(p int) string { return net.JoinHostPort(t.domain, strconv.Itoa(p)) }
	if t.cfg.UDPPort != 0 {
		urls = append(urls, "turn:"+hostPort(t.cfg.UDPPort)+"?transport=udp")
	}
	if t.cfg.TCPPort != 0 {
		urls = append(urls, "turn:"+hostPort(t.cfg.TCPPort)+"?transport=tcp")
	}
	if t.cfg.TLSPort != 0 {
		p := t.cfg.TLSPort
		if t.cfg.ExternalTLSPort != 0 {
			p = t.cfg.ExternalTLSPort
		}
		urls = append(urls, "turns:"+hostPort(p)+"?transport=tcp")
	}
	if t.cfg.TLSOnSignalPort && signalPort != 0 {
		urls = append(urls, "turns:"+hostPort(signalPort)+"?transport=tcp")
	}
	if len(urls) == 0 {
		return nil
	}
	return []*livekit.ICEServer{{Urls: urls, Username: user, Credential: pass}}
}

// auth is pion's AuthHandler: the key of a valid, unexpired credential of
// an identity connected to this node. A wrong password (or one derived for
// another identity or expiry) then fails pion's MESSAGE-INTEGRITY check.
// Every authenticated request (Allocate, Refresh, CreatePermission,
// ChannelBind) passes here, so a participant who left cannot allocate or
// renew permissions (5 min) and channel bindings (10 min), and an expired
// credential can do nothing at all.
func (t *turnServer) auth(ra *turn.RequestAttributes) (string, []byte, bool) {
	expiry, identity, ok := parseTURNUsername(ra.Username)
	// A Refresh needs no present participant: it lets a client that left
	// delete its allocation (lifetime 0); an allocation it would keep is
	// ended when it leaves anyway (identityLeft).
	if !ok || !t.now().Before(expiry) || ra.Realm != t.cfg.Realm || (ra.Method != stun.MethodRefresh && !t.present(identity)) {
		t.authFailures.Inc()
		return "", nil, false
	}
	return identity, turn.GenerateAuthKey(ra.Username, ra.Realm, turnPassword(t.secret, ra.Username)), true
}

// identityLeft ends identity's allocations once it is no participant on
// this node any more: a Refresh needs no presence (above), so without this
// a client that left could keep its relay port and quota slot until its
// credential expires. Closing the relay socket ends pion's allocation (its
// read loop deletes it). The relays are taken before presence is asked, so
// a new session's allocation made after a rejoin is never among them.
func (t *turnServer) identityLeft(identity string) {
	t.mu.Lock()
	var gone []*relayConn
	for r := range t.relays {
		if r.identity == identity {
			gone = append(gone, r)
		}
	}
	t.mu.Unlock()
	if len(gone) == 0 || t.present(identity) {
		return
	}
	for _, r := range gone {
		_ = r.Close()
	}
	t.log.Debug().Int("allocations", len(gone)).Msg("ended the allocations of an identity that left")
}

func (t *turnServer) onAuth(_, _ net.Addr, _, _, _, _ string, verdict bool) {
	if !verdict {
		t.authFailures.Inc()
	}
}

// quota admits an allocation while identity holds fewer than turn.user_quota.
func (t *turnServer) quota(identity, _ string, _ net.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.perUser[identity] >= t.cfg.UserQuota {
		t.quotaRejected.Inc()
		return false
	}
	return true
}

func (t *turnServer) onAllocationCreated(_, dst net.Addr, _, identity, _ string, _ net.Addr, _ int) {
	t.mu.Lock()
	t.perUser[identity]++
	t.mu.Unlock()
	t.allocations.Inc()
	t.allocationsTotal.WithLabelValues(t.transportOf(dst)).Inc()
}

func (t *turnServer) onAllocationDeleted(_, _ net.Addr, _, identity, _ string) {
	t.mu.Lock()
	if t.perUser[identity]--; t.perUser[identity] <= 0 {
		delete(t.perUser, identity)
	}
	t.mu.Unlock()
	t.allocations.Dec()
}

func (t *turnServer) transportOf(local net.Addr) string {
	var key string
	switch a := local.(type) {
	case *net.UDPAddr:
		key = "udp:" + strconv.Itoa(a.Port)
	case *net.TCPAddr:
		key = "tcp:" + strconv.Itoa(a.Port)
	}
	if l, ok := t.transports[key]; ok {
		return l
	}
	return "tls" // the signalling port
}

// permit is pion's PermissionHandler: relays may reach this node only
// (and relayConn.WriteTo only its media ports).
func (t *turnServer) permit(_ net.Addr, peer net.IP) bool {
	ip, ok := netip.AddrFromSlice(peer)
	if !ok {
		return false
	}
	_, ok = t.allowed[ip.Unmap()]
	return ok
}

// relayGenerator is pion's port-range generator with counted UDP relays
// and no TCP relays.
type relayGenerator struct {
	turn.RelayAddressGeneratorPortRange
	t *turnServer
}

func (g *relayGenerator) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	pc, addr, err := g.RelayAddressGeneratorPortRange.AllocatePacketConn(c)
	if err != nil {
		return nil, nil, err
	}
	rc := &relayConn{PacketConn: pc, t: g.t, identity: c.UserID}
	g.t.mu.Lock()
	g.t.relays[rc] = struct{}{}
	g.t.mu.Unlock()
	// The identity may have left since the request was authenticated:
	// asked after the relay is listed, so identityLeft either finds the
	// relay or the participant is already gone here.
	if !g.t.present(c.UserID) {
		_ = rc.Close()
		return nil, nil, errTURNGone
	}
	return rc, addr, nil
}

func (g *relayGenerator) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errTURNTCPRelay
}

func (g *relayGenerator) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, errTURNTCPRelay
}

// relayConn counts a relay's bytes in its own fields (one writer each: the
// allocation's read loop and the server's read loop), so relaying touches
// no shared cache line; the collector sums them at scrape time.
type relayConn struct {
	net.PacketConn
	t *turnServer
	// identity is the allocation's user (the TURN username's identity).
	identity         string
	toPeer, fromPeer atomic.Uint64
	once             sync.Once
}

// errTURNGone: the allocating identity left while its request was handled.
var errTURNGone = errors.New("turn relay: participant left")

// errTURNPeerPort: a relay sends only to the SFU's media ports (in
// rtc.port_range mode those its peer connections hold), so it cannot reach
// other UDP services of this host (DNS, metrics agents).
var errTURNPeerPort = errors.New("turn relay: peer port is not an sfu media port")

func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	a, ok := addr.(*net.UDPAddr)
	if !ok || a.Port < c.t.mediaPortMin || a.Port > c.t.mediaPortMax || (c.t.ports != nil && !c.t.ports.has(a.Port)) {
		return 0, errTURNPeerPort
	}
	if c.t.hairpinExt.IsValid() {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == c.t.hairpinExt {
			addr = c.t.hairpinAddr(c.t.hairpinLocal, a.Port)
		}
	}
	n, err := c.PacketConn.WriteTo(p, addr)
	c.toPeer.Add(uint64(n))
	return n, err
}

func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	if n > 0 {
		c.fromPeer.Add(uint64(n))
	}
	if a, ok := addr.(*net.UDPAddr); ok && c.t.hairpinExt.IsValid() {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == c.t.hairpinLocal && a.Port >= c.t.mediaPortMin && a.Port <= c.t.mediaPortMax {
			addr = c.t.hairpinAddr(c.t.hairpinExt, a.Port)
		}
	}
	return n, addr, err
}

// hairpinAddr is ip:port, without allocating for the UDP mux port.
func (t *turnServer) hairpinAddr(ip netip.Addr, port int) *net.UDPAddr {
	if port == t.mediaPortMin && port == t.mediaPortMax {
		if ip == t.hairpinExt {
			return t.hairpinExtAddr
		}
		return t.hairpinLocalAddr
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port)))
}

// hairpin returns the one advertised address that is not on this host
// and the local address relays reach the SFU at instead: the local part of
// an "ext/local" nat_1to1_ips entry, else loopback (the media sockets
// listen on every interface unless rtc.node_ip is loopback, which is
// local anyway). Nothing when every advertised address is local, or
// several are not (then the NAT's hairpin path is used).
func hairpin(cfg *Config, externalIP string, local map[netip.Addr]bool) (ext, loc netip.Addr) {
	type pair struct{ ext, loc string }
	var cands []pair
	if cfg.RTC.NodeIP != "" {
		cands = append(cands, pair{cfg.RTC.NodeIP, ""})
	}
	for _, m := range cfg.RTC.NAT1To1IPs {
		e, l, _ := strings.Cut(m, "/")
		cands = append(cands, pair{e, l})
	}
	if externalIP != "" {
		cands = append(cands, pair{externalIP, ""})
	}
	found := 0
	for _, c := range cands {
		e, err := netip.ParseAddr(c.ext)
		if err != nil || local[e.Unmap()] {
			continue
		}
		found++
		ext = e.Unmap()
		loc = netip.MustParseAddr("127.0.0.1")
		if ext.Is6() {
			loc = netip.IPv6Loopback()
		}
		if l, err := netip.ParseAddr(c.loc); err == nil {
			loc = l.Unmap()
		}
	}
	if found != 1 {
		return netip.Addr{}, netip.Addr{}
	}
	return ext, loc
}

func (c *relayConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.relays, c)
		c.t.closedTo += c.toPeer.Load()
		c.t.closedFrom += c.fromPeer.Load()
		c.t.mu.Unlock()
	})
	return c.PacketConn.Close()
}

// turnRelayCollector exports gxconf_sfu_turn_relayed_bytes_total.
type turnRelayCollector struct{ t *turnServer }

func (c turnRelayCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.t.relayedDesc }

func (c turnRelayCollector) Collect(ch chan<- prometheus.Metric) {
	to, from := c.t.relayedBytes()
	ch <- prometheus.MustNewConstMetric(c.t.relayedDesc, prometheus.CounterValue, float64(to), "to_peer")
	ch <- prometheus.MustNewConstMetric(c.t.relayedDesc, prometheus.CounterValue, float64(from), "from_peer")
}

func (t *turnServer) relayedBytes() (to, from uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	to, from = t.closedTo, t.closedFrom
	for r := range t.relays {
		to += r.toPeer.Load()
		from += r.fromPeer.Load()
	}
	return to, from
}
