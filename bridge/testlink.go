package bridge

import (
	"fmt"
	"net"
	"sync"
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
	d := &delayConn{UDPConn: c, delay: n.delay, queue: make(chan delayed, 4096), done: make(chan struct{})}
	d.wg.Add(1)
	go d.run()
	return d, nil
}

type delayed struct {
	due  time.Time
	b    []byte
	addr net.Addr
}

// delayConn sends each datagram delay after WriteTo, in order (as a link
// does; a timer per packet would reorder them and cause false NACKs). One
// goroutine per socket, owned by the conn: Close ends and waits for it.
type delayConn struct {
	transport.UDPConn
	delay     time.Duration
	queue     chan delayed
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func (c *delayConn) run() {
	defer c.wg.Done()
	for {
		select {
		case <-c.done:
			return
		case d := <-c.queue:
			if w := time.Until(d.due); w > 0 {
				select {
				case <-c.done:
					return
				case <-time.After(w):
				}
			}
			_, _ = c.UDPConn.WriteTo(d.b, d.addr)
		}
	}
}

// WriteTo implements net.PacketConn; the only write ICE uses. A full
// queue drops the datagram, as a congested link would.
func (c *delayConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	// Closed first: a select with both ready picks at random.
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	select {
	case <-c.done:
		return 0, net.ErrClosed
	case c.queue <- delayed{due: time.Now().Add(c.delay), b: append([]byte(nil), b...), addr: addr}:
	default:
	}
	return len(b), nil
}

// Close implements net.PacketConn.
func (c *delayConn) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	c.wg.Wait()
	return c.UDPConn.Close()
}
