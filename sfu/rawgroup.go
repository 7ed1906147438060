package sfu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Several sockets on the media port.
//
// With the direct receive path (fastrecv.go) a socket's reader goroutine
// also forwards what it reads, so one socket forwards on one core. A
// group binds n sockets to the same address with SO_REUSEPORT; the kernel
// hands each peer (each source address and port) to one of them by a hash
// of the addresses, so one publisher's packets always arrive on the same
// socket, and each socket has a reader of its own. What the readers do not
// consume (STUN, DTLS, RTCP, RTP not yet taken over) goes to pion's UDP mux
// through one queue, read by ReadFromAddrPort; everything is sent from the
// first socket, which has the same source address and port as the rest.
// Only the same user can join a reuse-port group on Linux.

// listenGroup opens n UDP sockets on addr (n > 1: with SO_REUSEPORT; port
// 0 picks one port for all) with the given buffer sizes.
func listenGroup(addr *net.UDPAddr, n, bufSize int) ([]*net.UDPConn, error) {
	lc := net.ListenConfig{}
	if n > 1 {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	var conns []*net.UDPConn
	fail := func(err error) ([]*net.UDPConn, error) {
		for _, c := range conns {
			_ = c.Close()
		}
		return nil, err
	}
	for i := 0; i < n; i++ {
		bind := addr
		if i > 0 {
			bind = conns[0].LocalAddr().(*net.UDPAddr)
		}
		pc, err := lc.ListenPacket(context.Background(), "udp", bind.String())
		if err != nil {
			if i > 0 {
				err = fmt.Errorf("socket %d of %d with SO_REUSEPORT: %w", i+1, n, err)
			}
			return fail(err)
		}
		c := pc.(*net.UDPConn)
		conns = append(conns, c)
		if bufSize > 0 {
			_ = c.SetReadBuffer(bufSize)
			_ = c.SetWriteBuffer(bufSize)
		}
	}
	return conns, nil
}

// rawGroup is the fan-in of a RawUDP's extra sockets (see NewRawUDPGroup).
type rawGroup struct {
	members []*RawUDP // all sockets, the first included
	queue   chan groupDatagram
	closed  chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	bufs    sync.Pool
}

type groupDatagram struct {
	buf  *[groupMTU]byte
	n    int
	from netip.AddrPort
	err  error
}

// groupMTU bounds a datagram handed to pion (pion's mux reads 8192).
const groupMTU = 8192

// NewRawUDPGroup wraps sockets bound to one address (listenGroup): reads
// come from all of them, each read by a goroutine of its own that runs the
// read hook; writes and the address are the first socket's. One socket is
// a plain RawUDP.
func NewRawUDPGroup(conns []*net.UDPConn) (*RawUDP, error) {
	if len(conns) == 0 {
		return nil, errors.New("no sockets")
	}
	var members []*RawUDP
	for _, c := range conns {
		r, err := NewRawUDP(c)
		if err != nil {
			return nil, err
		}
		members = append(members, r)
	}
	first := members[0]
	if len(members) == 1 {
		return first, nil
	}
	g := &rawGroup{members: members, queue: make(chan groupDatagram, 256), closed: make(chan struct{})}
	g.bufs.New = func() any { return new([groupMTU]byte) }
	first.group = g
	for _, m := range members {
		g.wg.Add(1)
		go g.read(m)
	}
	return first, nil
}

// read is one socket's reader: the hook runs inside ReadFromAddrPort;
// the rest is queued for pion.
func (g *rawGroup) read(m *RawUDP) {
	defer g.wg.Done()
	for {
		b := g.bufs.Get().(*[groupMTU]byte)
		n, from, err := m.readOne(b[:])
		select {
		case g.queue <- groupDatagram{buf: b, n: n, from: from, err: err}:
		case <-g.closed:
			return
		}
		if err != nil {
			return
		}
	}
}

// next returns the next datagram for pion into p.
func (g *rawGroup) next(first *RawUDP, p []byte) (int, netip.AddrPort, error) {
	select {
	case d := <-g.queue:
		n := copy(p, d.buf[:d.n])
		g.bufs.Put(d.buf)
		if d.err != nil {
			return 0, netip.AddrPort{}, d.err
		}
		return n, d.from, nil
	case <-g.closed:
		return 0, netip.AddrPort{}, first.opError("read", nil, net.ErrClosed)
	}
}

// close closes every socket and waits for the readers.
func (g *rawGroup) close() error {
	var errs []error
	g.once.Do(func() {
		close(g.closed)
		for _, m := range g.members {
			if err := m.conn.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		g.wg.Wait()
	})
	return errors.Join(errs...)
}
