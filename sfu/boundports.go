package sfu

import (
	"net"
	"sync"

	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
)

// boundPorts counts the UDP ports the SFU's peer connections hold in
// rtc.port_range mode, where pion binds one socket per connection (and
// candidate address) somewhere in the range. The embedded TURN server lets
// a relay reach only these: any other port of the range at the node's
// address — a local service an operator bound there — is not the SFU's.
type boundPorts struct {
	mu sync.Mutex
	n  map[int]int
}

func newBoundPorts() *boundPorts { return &boundPorts{n: map[int]int{}} }

func (b *boundPorts) add(port int) {
	b.mu.Lock()
	b.n[port]++
	b.mu.Unlock()
}

func (b *boundPorts) remove(port int) {
	b.mu.Lock()
	if b.n[port]--; b.n[port] <= 0 {
		delete(b.n, port)
	}
	b.mu.Unlock()
}

func (b *boundPorts) has(port int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n[port] > 0
}

// portRecordingNet is pion's standard network (what a SettingEngine uses
// without one) that records the UDP ports its ICE agents bind.
type portRecordingNet struct {
	*stdnet.Net
	ports *boundPorts
}

func newPortRecordingNet(ports *boundPorts) (*portRecordingNet, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	return &portRecordingNet{Net: n, ports: ports}, nil
}

// ListenUDP binds as pion would and records the port until the socket
// closes.
func (n *portRecordingNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	a, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok {
		return c, nil
	}
	n.ports.add(a.Port)
	return &recordedUDPConn{UDPConn: c, release: sync.OnceFunc(func() { n.ports.remove(a.Port) })}, nil
}

// recordedUDPConn releases its port from boundPorts when closed.
type recordedUDPConn struct {
	transport.UDPConn
	release func()
}

func (c *recordedUDPConn) Close() error {
	c.release()
	return c.UDPConn.Close()
}
