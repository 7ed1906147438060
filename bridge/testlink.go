package bridge

import (
	"net"
	"sync"
	"time"
)

// delayed is a datagram held back.
type delayed struct {
	due  time.Time
	b    []byte
	addr net.Addr
}

// delayConn sends each datagram written to it a fixed delay later, in
// order (as a link does; a timer per packet would reorder them and cause
// false NACKs): an IX link's latency for tests (Config.TestLinkDelay; this
// kernel has no netem). It wraps a relay socket, so ICE, DTLS, SCTP and
// media are all delayed. One goroutine per socket, owned by the
// delayConn: Close ends and waits for it (it does not close the socket).
type delayConn struct {
	conn      net.PacketConn
	delay     time.Duration
	queue     chan delayed
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func newDelayConn(conn net.PacketConn, delay time.Duration) *delayConn {
	d := &delayConn{conn: conn, delay: delay, queue: make(chan delayed, 4096), done: make(chan struct{})}
	d.wg.Add(1)
	go d.run()
	return d
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
			_, _ = c.conn.WriteTo(d.b, d.addr)
		}
	}
}

// WriteTo queues b for addr. A full queue drops the datagram, as a
// congested link would.
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

// Close stops sending; datagrams still held are dropped.
func (c *delayConn) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	c.wg.Wait()
	return nil
}
