package sfu

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func TestTURNCredential(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef"
	// pion's TURN REST generator is an independent implementation of the
	// same draft; equal expiry, equal result.
	pu, pp, err := turn.GenerateLongTermTURNRESTCredentials(secret, "@alice:example.org:DEV", time.Hour)
	require.NoError(t, err)
	exp, id, ok := parseTURNUsername(pu)
	require.True(t, ok)
	require.Equal(t, "@alice:example.org:DEV", id, "identity keeps its colons")
	u, p := turnCredential([]byte(secret), id, exp)
	require.Equal(t, pu, u)
	require.Equal(t, pp, p)
	require.WithinDuration(t, time.Now().Add(time.Hour), exp, 2*time.Second)

	_, other := turnCredential([]byte(secret), "@bob:example.org:DEV", exp)
	require.NotEqual(t, p, other, "another identity, another password")
	_, otherSecret := turnCredential([]byte(strings.Repeat("x", 32)), id, exp)
	require.NotEqual(t, p, otherSecret)

	for _, bad := range []string{"", "alice", "123", "123:", ":alice", "-5:alice", "x1:alice", "0:alice"} {
		_, _, ok := parseTURNUsername(bad)
		require.False(t, ok, bad)
	}
}

// turnFixture is a turnServer on loopback UDP with a settable set of
// present identities.
type turnFixture struct {
	srv  *turnServer
	reg  *prometheus.Registry
	addr string
	peer net.PacketConn // the "SFU media port"

	mu      sync.Mutex
	present map[string]bool
	// presentFn, when set, answers instead of present.
	presentFn func(string) bool
	// ports stand in for the peer connections' ports in rtc.port_range
	// mode (nil with rtc.udp_port).
	ports *boundPorts
}

func startTURN(t *testing.T, mut func(*Config)) *turnFixture {
	t.Helper()
	f := &turnFixture{reg: prometheus.NewRegistry(), present: map[string]bool{}}
	// The SFU's media socket stands in as the peer relays may reach.
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = peer.Close() })
	f.peer = peer
	cfg := validConfig()
	cfg.RTC.NodeIP = "127.0.0.1"
	cfg.RTC.UDPPort = peer.LocalAddr().(*net.UDPAddr).Port
	cfg.TURN.Enabled = true
	cfg.TURN.UDPPort = 0
	cfg.TURN.TLSPort = 0
	cfg.TURN.Secret = strings.Repeat("k", 32)
	// Relay ports above Linux's ephemeral range (32768-60999), where the
	// test's own UDP ports come from: validation refuses an overlap.
	cfg.TURN.RelayPortRangeStart, cfg.TURN.RelayPortRangeEnd = 61000, 64999
	if mut != nil {
		mut(&cfg)
	}
	if cfg.RTC.UDPPort == 0 {
		f.ports = newBoundPorts()
	}
	// A free UDP port for the listener, which binds all addresses: probed
	// on all addresses, and probed again if another process took it
	// between the probe and the bind.
	var srv *turnServer
	for attempt := 0; ; attempt++ {
		c, err := net.ListenPacket("udp4", ":0")
		require.NoError(t, err)
		cfg.TURN.UDPPort = c.LocalAddr().(*net.UDPAddr).Port
		require.NoError(t, c.Close())
		if cfg.TURN.UDPPort == cfg.RTC.UDPPort {
			continue
		}
		require.NoError(t, cfg.Validate())
		srv, err = newTURNServer(&cfg, "", zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), f.reg, func(id string) bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.presentFn != nil {
				return f.presentFn(id)
			}
			return f.present[id]
		}, f.ports)
		require.NoError(t, err)
		err = srv.start(nil)
		if err != nil && errors.Is(err, syscall.EADDRINUSE) && attempt < 5 {
			_ = srv.close()
			continue
		}
		require.NoError(t, err)
		break
	}
	t.Cleanup(func() { _ = srv.close() })
	f.srv = srv
	f.addr = net.JoinHostPort("127.0.0.1", itoa(cfg.TURN.UDPPort))
	return f
}

func itoa(i int) string { return strconv.Itoa(i) }

// expectAtPeer reads the next datagram at the fixture's SFU stand-in,
// requires it to be want and returns its sender.
func (f *turnFixture) expectAtPeer(t *testing.T, want string, msgAndArgs ...any) net.Addr {
	t.Helper()
	buf := make([]byte, 100)
	_ = f.peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := f.peer.ReadFrom(buf)
	require.NoError(t, err, msgAndArgs...)
	require.Equal(t, want, string(buf[:n]))
	return from
}

func (f *turnFixture) setPresent(id string, v bool) {
	f.mu.Lock()
	f.present[id] = v
	f.mu.Unlock()
}

// allocate runs a pion TURN client with the given credential; the client
// is closed at cleanup.
func (f *turnFixture) allocate(t *testing.T, user, pass string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: f.addr,
		TURNServerAddr: f.addr,
		Username:       user,
		Password:       pass,
		Realm:          f.srv.cfg.Realm,
		Conn:           conn,
		RTO:            100 * time.Millisecond,
		LoggerFactory:  pionLoggerFactory{log: zerolog.Nop()},
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(); _ = conn.Close() })
	require.NoError(t, c.Listen())
	relay, err := c.Allocate()
	if err == nil {
		t.Cleanup(func() { _ = relay.Close() })
	}
	return c, relay, err
}

func TestTURNAuth(t *testing.T) {
	f := startTURN(t, nil)
	alice, bob := "@alice:example.org:DEV", "@bob:example.org:DEV"
	f.setPresent(alice, true)
	f.setPresent(bob, true)
	exp := time.Now().Add(time.Hour)
	au, ap := turnCredential(f.srv.secret, alice, exp)
	bu, bp := turnCredential(f.srv.secret, bob, exp)

	t.Run("valid", func(t *testing.T) {
		_, relay, err := f.allocate(t, au, ap)
		require.NoError(t, err)
		ra := relay.LocalAddr().(*net.UDPAddr)
		require.Equal(t, "127.0.0.1", ra.IP.String(), "relayed address is the node's media ip")
		require.GreaterOrEqual(t, ra.Port, f.srv.cfg.RelayPortRangeStart)
		require.LessOrEqual(t, ra.Port, f.srv.cfg.RelayPortRangeEnd)

		// Relay to the SFU's media port: counted.
		peer := f.peer
		_, err = relay.WriteTo([]byte("hello through turn"), peer.LocalAddr())
		require.NoError(t, err)
		from := f.expectAtPeer(t, "hello through turn")
		buf := make([]byte, 100)
		_, err = peer.WriteTo([]byte("back"), from)
		require.NoError(t, err)
		_ = relay.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := relay.ReadFrom(buf)
		require.NoError(t, err)
		require.Equal(t, "back", string(buf[:n]))
		// The relay counts after its write returns: maybe after the peer read.
		require.Eventually(t, func() bool {
			to, fromPeer := f.srv.relayedBytes()
			return to == uint64(len("hello through turn")) && fromPeer == uint64(len("back"))
		}, 5*time.Second, 10*time.Millisecond)
		require.Equal(t, 1.0, testutil.ToFloat64(f.srv.allocationsTotal.WithLabelValues("udp")))

		// Another UDP port of this host is not reachable through the relay.
		other, err := net.ListenPacket("udp4", "127.0.0.1:0")
		require.NoError(t, err)
		defer other.Close()
		_, err = relay.WriteTo([]byte("to a local service"), other.LocalAddr())
		require.NoError(t, err, "sent to the server, dropped there")
		_ = other.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, _, err = other.ReadFrom(buf)
		require.Error(t, err, "nothing relayed to a port that is not the sfu's")

		// A relay to an address outside this node is not permitted.
		_, err = relay.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9})
		require.Error(t, err)
	})

	before := testutil.ToFloat64(f.srv.authFailures)
	for _, tc := range []struct {
		name, user, pass string
	}{
		{"wrong password", au, "AAAAAAAAAAAAAAAAAAAAAAAAAAA="},
		{"another identity's password", au, bp},
		{"own password under another identity", bu, ap},
		{"forged later expiry", strings.Replace(au, itoa(int(exp.Unix())), itoa(int(exp.Unix()+3600)), 1), ap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := f.allocate(t, tc.user, tc.pass)
			require.Error(t, err)
		})
	}
	t.Run("expired", func(t *testing.T) {
		u, p := turnCredential(f.srv.secret, alice, time.Now().Add(-time.Second))
		_, _, err := f.allocate(t, u, p)
		require.Error(t, err)
	})
	t.Run("participant gone", func(t *testing.T) {
		carol := "@carol:example.org:DEV"
		u, p := turnCredential(f.srv.secret, carol, exp)
		_, _, err := f.allocate(t, u, p)
		require.Error(t, err, "not (or no longer) a participant on this node")
	})
	require.GreaterOrEqual(t, testutil.ToFloat64(f.srv.authFailures)-before, 6.0)
}

func TestTURNQuota(t *testing.T) {
	f := startTURN(t, func(c *Config) { c.TURN.UserQuota = 2 })
	alice := "@alice:example.org:DEV"
	f.setPresent(alice, true)
	u, p := turnCredential(f.srv.secret, alice, time.Now().Add(time.Hour))
	_, r1, err := f.allocate(t, u, p)
	require.NoError(t, err)
	_, _, err = f.allocate(t, u, p)
	require.NoError(t, err)
	_, _, err = f.allocate(t, u, p)
	require.Error(t, err, "third allocation over a quota of 2")
	require.Equal(t, 1.0, testutil.ToFloat64(f.srv.quotaRejected))
	require.Equal(t, 2.0, testutil.ToFloat64(f.srv.allocations))

	// Another identity has its own quota.
	bob := "@bob:example.org:DEV"
	f.setPresent(bob, true)
	bu, bp := turnCredential(f.srv.secret, bob, time.Now().Add(time.Hour))
	_, _, err = f.allocate(t, bu, bp)
	require.NoError(t, err)

	// Releasing one (Refresh with lifetime 0) frees a slot.
	require.NoError(t, r1.Close())
	require.Eventually(t, func() bool { return testutil.ToFloat64(f.srv.allocations) == 2 }, 5*time.Second, 20*time.Millisecond)
	_, _, err = f.allocate(t, u, p)
	require.NoError(t, err)
}

// FuzzParseTURNUsername: the TURN username is untrusted input. No panic;
// an accepted username re-marshals to one that parses the same.
func FuzzParseTURNUsername(f *testing.F) {
	for _, s := range []string{"1700000000:@alice:example.org:DEV", "1:a", ":", "x:y", "-1:a", "99999999999999999999:a", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		exp, id, ok := parseTURNUsername(s)
		if !ok {
			return
		}
		u, _ := turnCredential([]byte("k"), id, exp)
		exp2, id2, ok := parseTURNUsername(u)
		require.True(t, ok)
		require.Equal(t, id, id2)
		require.True(t, exp.Equal(exp2))
	})
}

// TestTURNHairpin: with an advertised address that is not on the host (a
// floating IP), relay and SFU meet on the local address; the client sees
// only the advertised one.
func TestTURNHairpin(t *testing.T) {
	f := startTURN(t, func(c *Config) { c.RTC.NodeIP = "203.0.113.7" })
	alice := "@alice:example.org:DEV"
	f.setPresent(alice, true)
	u, p := turnCredential(f.srv.secret, alice, time.Now().Add(time.Hour))
	_, relay, err := f.allocate(t, u, p)
	require.NoError(t, err)
	require.Equal(t, "203.0.113.7", relay.LocalAddr().(*net.UDPAddr).IP.String())

	sfuPort := f.peer.LocalAddr().(*net.UDPAddr).Port
	_, err = relay.WriteTo([]byte("to the floating ip"), &net.UDPAddr{IP: net.ParseIP("203.0.113.7"), Port: sfuPort})
	require.NoError(t, err)
	from := f.expectAtPeer(t, "to the floating ip", "arrived at the local media socket")
	buf := make([]byte, 100)
	_, err = f.peer.WriteTo([]byte("answer"), from)
	require.NoError(t, err)
	_ = relay.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, src, err := relay.ReadFrom(buf)
	require.NoError(t, err)
	require.Equal(t, "answer", string(buf[:n]))
	require.Equal(t, "203.0.113.7:"+strconv.Itoa(sfuPort), src.String(), "the client sees the advertised address")
}

// TestTURNRelayReachesOnlyNodeAddresses: a relay may reach the SFU's own
// media addresses only, not the host's other interface addresses. With a
// floating node ip, loopback is where the relay meets the SFU (hairpin),
// yet a client may not address loopback itself: before, every local
// interface address was a permitted peer, so a relay reached any UDP
// socket on loopback or a docker bridge at a media port.
func TestTURNRelayReachesOnlyNodeAddresses(t *testing.T) {
	f := startTURN(t, func(c *Config) { c.RTC.NodeIP = "203.0.113.7" })
	alice := "@alice:example.org:DEV"
	f.setPresent(alice, true)
	u, p := turnCredential(f.srv.secret, alice, time.Now().Add(time.Hour))
	_, relay, err := f.allocate(t, u, p)
	require.NoError(t, err)
	sfuPort := f.peer.LocalAddr().(*net.UDPAddr).Port
	_, err = relay.WriteTo([]byte("to loopback"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sfuPort})
	require.Error(t, err, "no permission for loopback: not the node's address")
	buf := make([]byte, 100)
	_ = f.peer.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, _, err = f.peer.ReadFrom(buf)
	require.Error(t, err, "nothing relayed to loopback")

	// The node's address still works (through the hairpin).
	_, err = relay.WriteTo([]byte("to the node"), &net.UDPAddr{IP: net.ParseIP("203.0.113.7"), Port: sfuPort})
	require.NoError(t, err)
	f.expectAtPeer(t, "to the node")

	// No other interface address of this host is a permitted peer.
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			require.False(t, f.srv.permit(nil, n.IP), "local address %s permitted", n.IP)
		}
	}
	require.True(t, f.srv.permit(nil, net.ParseIP("203.0.113.7")))
}

func TestTURNHairpinChoice(t *testing.T) {
	local := map[netip.Addr]bool{netip.MustParseAddr("127.0.0.1"): true, netip.MustParseAddr("10.0.0.5"): true}
	for _, tc := range []struct {
		name     string
		mut      func(*Config)
		ext, loc string
	}{
		{"local node ip", func(c *Config) { c.RTC.NodeIP = "10.0.0.5" }, "", ""},
		{"floating node ip", func(c *Config) { c.RTC.NodeIP = "203.0.113.7" }, "203.0.113.7", "127.0.0.1"},
		{"nat with local part", func(c *Config) { c.RTC.NAT1To1IPs = []string{"203.0.113.7/10.0.0.5"} }, "203.0.113.7", "10.0.0.5"},
		{"two public", func(c *Config) { c.RTC.NAT1To1IPs = []string{"203.0.113.7", "203.0.113.8"} }, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mut(&c)
			ext, loc := hairpin(&c, "", local)
			if tc.ext == "" {
				require.False(t, ext.IsValid())
				return
			}
			require.Equal(t, tc.ext, ext.String())
			require.Equal(t, tc.loc, loc.String())
		})
	}
}

// TestTURNLeaveThenDeallocate: after its participant left, a client can
// still delete its allocation (Refresh with lifetime 0), but not allocate.
func TestTURNLeaveThenDeallocate(t *testing.T) {
	f := startTURN(t, nil)
	alice := "@alice:example.org:DEV"
	f.setPresent(alice, true)
	u, p := turnCredential(f.srv.secret, alice, time.Now().Add(time.Hour))
	_, relay, err := f.allocate(t, u, p)
	require.NoError(t, err)
	require.Equal(t, 1.0, testutil.ToFloat64(f.srv.allocations))
	f.setPresent(alice, false)
	_, _, err = f.allocate(t, u, p)
	require.Error(t, err)
	require.NoError(t, relay.Close())
	require.Eventually(t, func() bool { return testutil.ToFloat64(f.srv.allocations) == 0 }, 5*time.Second, 20*time.Millisecond)
}

// TestTURNIdleConnectionClosed: a TURN-over-TCP connection on which the
// client sent one byte and then nothing is closed once it has been idle
// for turnIdleTimeout (shortened here); it held a socket and goroutines
// for good before.
func TestTURNIdleConnectionClosed(t *testing.T) {
	old := turnIdleTimeout
	turnIdleTimeout = 200 * time.Millisecond
	t.Cleanup(func() { turnIdleTimeout = old })
	l, err := net.Listen("tcp", "127.0.0.1:0") // a free port
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	startTURN(t, func(c *Config) { c.TURN.TCPPort = port })
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte{0})
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = c.Read(make([]byte, 16))
	require.Error(t, err)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server kept the idle connection: %v", err)
}

// TestTURNAllocationsEndWithTheParticipant: a Refresh needs no presence
// (so a client that left can release its allocation), so the allocations
// of an identity that left its last room are ended by the server; a client
// that kept refreshing held its relay port and quota slot until the
// credential expired (8 h) before. Another identity's allocation, and the
// allocations of an identity that is present again (a rejoin replacing its
// session), stay.
func TestTURNAllocationsEndWithTheParticipant(t *testing.T) {
	f := startTURN(t, nil)
	alice, bob := "@alice:example.org:DEV", "@bob:example.org:DEV"
	f.setPresent(alice, true)
	f.setPresent(bob, true)
	exp := time.Now().Add(time.Hour)
	au, ap := turnCredential(f.srv.secret, alice, exp)
	bu, bp := turnCredential(f.srv.secret, bob, exp)
	_, _, err := f.allocate(t, au, ap)
	require.NoError(t, err)
	_, _, err = f.allocate(t, au, ap)
	require.NoError(t, err)
	bc, brelay, err := f.allocate(t, bu, bp)
	require.NoError(t, err)
	require.Equal(t, 3.0, testutil.ToFloat64(f.srv.allocations))

	// A session of alice's closes while another is present: nothing ends.
	f.srv.identityLeft(alice)
	require.Equal(t, 3.0, testutil.ToFloat64(f.srv.allocations))

	// Alice has left: both her allocations end, bob's stays and relays.
	f.setPresent(alice, false)
	f.srv.identityLeft(alice)
	require.Eventually(t, func() bool { return testutil.ToFloat64(f.srv.allocations) == 1 }, 5*time.Second, 10*time.Millisecond)
	f.srv.mu.Lock()
	require.Zero(t, f.srv.perUser[alice], "alice's quota slots are free")
	require.Equal(t, 1, f.srv.perUser[bob])
	f.srv.mu.Unlock()
	require.NoError(t, bc.CreatePermission(f.peer.LocalAddr()))
	_, err = brelay.WriteTo([]byte("still relaying"), f.peer.LocalAddr())
	require.NoError(t, err)
	f.expectAtPeer(t, "still relaying")
}

// TestTURNAllocationOfAParticipantLeaving: an Allocate authenticated while
// its identity was present, whose relay is created after the identity left
// (and after identityLeft looked for its relays), is refused, not kept.
func TestTURNAllocationOfAParticipantLeaving(t *testing.T) {
	f := startTURN(t, nil)
	dave := "@dave:example.org:DEV"
	var calls atomic.Int32
	f.mu.Lock()
	f.presentFn = func(id string) bool {
		// The request's authentication sees dave present, the relay's
		// creation no longer.
		return id == dave && calls.Add(1) == 1
	}
	f.mu.Unlock()
	u, p := turnCredential(f.srv.secret, dave, time.Now().Add(time.Hour))
	_, _, err := f.allocate(t, u, p)
	require.Error(t, err)
	require.GreaterOrEqual(t, calls.Load(), int32(2), "the relay's creation asked again")
	require.Zero(t, testutil.ToFloat64(f.srv.allocations))
	f.srv.mu.Lock()
	require.Empty(t, f.srv.relays)
	require.Empty(t, f.srv.perUser)
	f.srv.mu.Unlock()
}

// TestTURNPortRangeReachesOnlyPeerConnectionPorts: in rtc.port_range mode
// (one UDP port per peer connection) a relay reaches the ports the peer
// connections hold, not any other port of the range at the node's address
// (a service an operator bound there), and not a port once its connection
// closed.
func TestTURNPortRangeReachesOnlyPeerConnectionPorts(t *testing.T) {
	other, err := net.ListenPacket("udp4", "127.0.0.1:0") // a local service in the range
	require.NoError(t, err)
	defer other.Close()
	otherPort := other.LocalAddr().(*net.UDPAddr).Port
	f := startTURN(t, func(c *Config) {
		peerPort := c.RTC.UDPPort // the fixture's stand-in for the SFU
		c.RTC.UDPPort = 0
		c.RTC.PortRangeStart, c.RTC.PortRangeEnd = min(peerPort, otherPort), max(peerPort, otherPort)
	})
	require.NotNil(t, f.ports)
	peerPort := f.peer.LocalAddr().(*net.UDPAddr).Port
	f.ports.add(peerPort) // a peer connection holds it
	alice := "@alice:example.org:DEV"
	f.setPresent(alice, true)
	u, p := turnCredential(f.srv.secret, alice, time.Now().Add(time.Hour))
	_, relay, err := f.allocate(t, u, p)
	require.NoError(t, err)

	// Sent in this order over one allocation, handled in this order: once
	// the second is relayed, the first was refused or delivered.
	send := func(to net.Addr, msg string) {
		_, err := relay.WriteTo([]byte(msg), to)
		require.NoError(t, err)
	}
	buf := make([]byte, 100)
	send(other.LocalAddr(), "to a local service in the range")
	send(f.peer.LocalAddr(), "to the sfu")
	f.expectAtPeer(t, "to the sfu")
	_ = other.SetReadDeadline(time.Now())
	_, _, err = other.ReadFrom(buf)
	require.Error(t, err, "nothing relayed to a port of the range no peer connection holds")

	// The connection closed: its port is no longer reachable.
	f.ports.remove(peerPort)
	f.srv.mu.Lock()
	var rcs []*relayConn
	for rc := range f.srv.relays {
		rcs = append(rcs, rc)
	}
	f.srv.mu.Unlock()
	require.Len(t, rcs, 1)
	_, err = rcs[0].WriteTo([]byte("after the close"), f.peer.LocalAddr())
	require.ErrorIs(t, err, errTURNPeerPort)
}
