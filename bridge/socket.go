package bridge

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"

	"github.com/gxfs-conf/gxconf/sfu"
)

// relaySocket is a UDP socket of the relay and the ICE mux pion runs on
// it. The bridge owns it: RTP and RTCP (first byte 128..191, RFC 7983)
// from the remote address of a live association's selected pair is
// decrypted and dispatched by that association inline on the mux's read
// loop and never reaches pion; everything else (STUN, DTLS) goes up to
// pion's mux. RTP/RTCP from any other address is dropped and counted.
//
// The node's relay socket listens on the relay address's port (UDP, the
// same number as the signalling listener) and carries every association
// this node accepted. An association this node dials gets a socket of its
// own on an ephemeral port: all associations between two nodes (one per
// room) would otherwise share one 5-tuple, and DTLS records cannot be told
// apart by anything else; its packets go to the peer's relay port, and
// come back as replies, which a stateful NetworkPolicy allows.
type relaySocket struct {
	conn  *net.UDPConn
	raw   *sfu.RawUDP // conn, read and written without waking the runtime monitor (sfu.RawUDP)
	delay *delayConn  // Config.TestLinkDelay: what is sent is held back; nil otherwise
	mux   *ice.UDPMuxDefault
	drops *dropCounters

	routeMu sync.Mutex // serializes writers of routes
	// routes maps a selected pair's remote address to its association
	// (copy on write: the read loop only loads it).
	routes atomic.Pointer[map[netip.AddrPort]*association]
}

// dropCounters count the relay packets dropped before reaching a stream.
type dropCounters struct {
	address atomic.Uint64 // RTP/RTCP from an address that is no association's selected pair
	auth    atomic.Uint64 // failed SRTP/SRTCP authentication, replays, no keys yet, malformed
	ssrc    atomic.Uint64 // authentic, but of an SSRC not (or no longer) announced
}

// newRelaySocket binds ip:port (port 0: ephemeral) and starts an ICE mux
// on it.
func newRelaySocket(ip net.IP, port int, delay time.Duration, drops *dropCounters) (*relaySocket, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, fmt.Errorf("failed to listen on the relay's UDP port: %w", err)
	}
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	raw, err := sfu.NewRawUDP(conn)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("relay socket: %w", err)
	}
	s := &relaySocket{conn: conn, raw: raw, drops: drops}
	if delay > 0 {
		s.delay = newDelayConn(conn, delay)
	}
	empty := map[netip.AddrPort]*association{}
	s.routes.Store(&empty)
	s.mux = ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: (*demuxConn)(s)})
	return s, nil
}

// port is the socket's local port.
func (s *relaySocket) port() int { return s.conn.LocalAddr().(*net.UDPAddr).Port }

// close stops the mux and closes the socket.
func (s *relaySocket) close() {
	_ = s.mux.Close()
	if s.delay != nil {
		_ = s.delay.Close()
	}
	_ = s.conn.Close()
}

// route makes addr's RTP/RTCP a's (zero addr: none); it drops a's previous
// route. A closed association gets none (the selected pair may change while
// it closes: close routes it last).
func (s *relaySocket) route(a *association, addr netip.AddrPort) {
	s.routeMu.Lock()
	defer s.routeMu.Unlock()
	old := *s.routes.Load()
	m := make(map[netip.AddrPort]*association, len(old)+1)
	for k, v := range old {
		if v != a {
			m[k] = v
		}
	}
	if addr.IsValid() && !a.closed() {
		m[addr] = a
	}
	s.routes.Store(&m)
}

// send writes one datagram to addr.
func (s *relaySocket) send(b []byte, addr netip.AddrPort) error {
	if s.delay != nil {
		_, err := s.delay.WriteTo(b, net.UDPAddrFromAddrPort(addr))
		return err
	}
	_, err := s.raw.WriteToAddrPort(b, addr)
	return err
}

// isRTPOrRTCP: RFC 7983 §7, first byte 128..191.
func isRTPOrRTCP(b []byte) bool { return len(b) > 0 && b[0] >= 128 && b[0] <= 191 }

// demux handles pkt if it is RTP/RTCP and reports whether it did (then
// pion must not see it).
func (s *relaySocket) demux(pkt []byte, from netip.AddrPort) bool {
	if !isRTPOrRTCP(pkt) {
		return false
	}
	if a := (*s.routes.Load())[from]; a != nil {
		a.receive(pkt)
	} else {
		s.drops.address.Add(1)
	}
	return true
}

// demuxConn is the socket as pion's ICE mux sees it: without the relay's
// media.
type demuxConn relaySocket

// ReadFromAddrPort implements ice.AddrPortReaderWriter (the mux's read
// loop): media is handled here, the rest returned.
func (c *demuxConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	s := (*relaySocket)(c)
	for {
		n, from, err := s.raw.ReadFromAddrPort(b)
		if err != nil {
			return n, from, err
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if !s.demux(b[:n], from) {
			return n, from, nil
		}
	}
}

// WriteToAddrPort implements ice.AddrPortReaderWriter.
func (c *demuxConn) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if err := (*relaySocket)(c).send(b, addr); err != nil {
		return 0, err
	}
	return len(b), nil
}

// ReadFrom implements net.PacketConn.
func (c *demuxConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// WriteTo implements net.PacketConn.
func (c *demuxConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("addr: not a UDP address: %T", addr)
	}
	return c.WriteToAddrPort(b, ua.AddrPort())
}

// Close implements net.PacketConn.
func (c *demuxConn) Close() error { return c.conn.Close() }

// LocalAddr implements net.PacketConn.
func (c *demuxConn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// SetDeadline implements net.PacketConn.
func (c *demuxConn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (c *demuxConn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline implements net.PacketConn.
func (c *demuxConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
