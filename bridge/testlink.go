package bridge

import (
	"fmt"
	"net"
	"time"

	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
)

// delayNet is the relay's network with every datagram sent held back by a
// fixed delay: an IX link's latency for tests (Config.TestLinkDelay; this
// kernel has no netem). Only the relay's ICE sockets go through it.
type delayNet struct {
	*stdnet.Net
	delay time.Duration
}

func newDelayNet(delay time.Duration) (*delayNet, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, fmt.Errorf("failed to list interfaces: %w", err)
	}
	return &delayNet{Net: n, delay: delay}, nil
}

// ListenUDP implements transport.Net.
func (n *delayNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	return &delayConn{UDPConn: c, delay: n.delay}, nil
}

// delayConn sends each datagram delay after WriteTo returns. A constant
// delay keeps the order (timers of equal duration fire in order, give or
// take the scheduler, as a real link's jitter would).
type delayConn struct {
	transport.UDPConn
	delay time.Duration
}

// WriteTo implements net.PacketConn; the only write ICE uses.
func (c *delayConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	cp := append([]byte(nil), b...)
	time.AfterFunc(c.delay, func() { _, _ = c.UDPConn.WriteTo(cp, addr) })
	return len(b), nil
}
