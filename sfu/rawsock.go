package sfu

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Quiet system calls on the shared UDP media socket.
//
// Every system call a goroutine makes through the syscall package tells
// the Go runtime it entered a system call; if the runtime's monitor thread
// (sysmon) was asleep because the process had gone idle, that call wakes
// it, and it then polls every 20 µs for as long as the process stays busy.
// An SFU goes idle between packets hundreds of times a second and is woken
// by a packet whose handling starts with a read and ends with a send, so
// the monitor polled through every fan-out: 18 % of the SFU's CPU for
// 1 → 150 on one core, each poll a context switch on that core.
//
// RawUDP therefore drives the socket the ICE UDP mux and the direct
// send path share with the same system calls (recvmmsg, sendto, sendmmsg)
// issued through syscall.RawSyscall6, which the runtime does not track,
// inside the socket's syscall.RawConn, which keeps the runtime poller's
// readiness waits, deadlines and close handling. The socket is
// non-blocking, so each call returns at once; a send of a whole batch
// holds its thread for as long as the kernel takes to queue it (a few
// hundred µs for 150 copies), which is what the tracked call did too. pion
// gets it as a net.PacketConn with its AddrPortReaderWriter extension
// (allocation-free reads and writes). unsafe is used only to hand our own
// buffers and headers to the kernel.
type RawUDP struct {
	conn  *net.UDPConn
	rc    syscall.RawConn
	inet6 bool // AF_INET6 socket: IPv4 peers as IPv4-mapped addresses

	rmu  sync.Mutex // one reader at a time (pion has one)
	rd   rawReader
	rdFn func(uintptr) bool
	hook atomic.Pointer[readHooks]

	wmu  sync.Mutex // writers take turns on the write scratch
	wr   rawIO
	wrFn func(uintptr) bool

	group *rawGroup // more sockets on the same port (rawgroup.go); nil: this one
}

// rawIO is the scratch of one write: input, the peer's address and the
// outcome, kept in the socket so that the callback handed to the RawConn
// is built once and nothing escapes per packet.
type rawIO struct {
	buf   []byte
	sa    unix.RawSockaddrInet6 // large enough for either family
	salen uint32
	n     int
	errno syscall.Errno
}

// readBatch is how many datagrams one recvmmsg reads at most.
const readBatch = 8

// rawReader is the reader's state: one recvmmsg reads up to readBatch
// datagrams into the reader's own buffers; the read hook runs on each
// inside the read callback, and a datagram it leaves is copied into the
// caller's buffer. A batch shorter than readBatch emptied the socket, so
// the reader waits for more without another system call to find that out.
type rawReader struct {
	bufs  [readBatch][]byte
	hdrs  [readBatch]mmsghdr
	iovs  [readBatch]unix.Iovec
	names [readBatch]unix.RawSockaddrInet6
	count int // datagrams in the last batch
	next  int // the next of them to look at
	// drained is set when the last batch was short and no datagram has
	// been handed to the caller since (whose next read resets the
	// poller's readiness, so it must not wait without reading first).
	drained bool
	// pending is set when the read hook consumed a datagram and the idle
	// hook has not run since.
	pending bool
	// The outcome for the caller: a datagram (out[:n] from from), an
	// unsupported address family (badAddr) or an error (errno).
	out     []byte
	n       int
	from    netip.AddrPort
	badAddr bool
	errno   syscall.Errno
	// again is set when the callback returns after readBursts full
	// batches without an outcome, so that the caller sees a close or a
	// deadline while media keeps coming; it calls again.
	again bool
}

// setBufs gives the reader buffers of size bytes and points the message
// headers at them and at the address slots, once.
func (r *rawReader) setBufs(size int) {
	for i := range r.bufs {
		r.bufs[i] = make([]byte, size)
		r.iovs[i] = unix.Iovec{Base: unsafe.SliceData(r.bufs[i])}
		r.iovs[i].SetLen(size)
		r.hdrs[i] = mmsghdr{}
		r.hdrs[i].hdr.Iov = &r.iovs[i]
		r.hdrs[i].hdr.SetIovlen(1)
		r.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
}

// readBursts bounds the full batches one read callback consumes.
const readBursts = 4

// readHooks are what a socket's reader runs besides reading for pion.
type readHooks struct {
	read func(pkt []byte, from netip.AddrPort) bool
	idle func()
}

func NewRawUDP(c *net.UDPConn) (*RawUDP, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &RawUDP{conn: c, rc: rc}
	var domain int
	var serr error
	if err := rc.Control(func(fd uintptr) { domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN) }); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	s.inet6 = domain == unix.AF_INET6
	s.rdFn, s.wrFn = s.recvmmsg, s.sendto
	return s, nil
}

// recvmmsg is the read callback: it runs the read hook on each datagram
// it reads and returns true with a datagram the hook left (or an error)
// for the caller; false asks the poller to wait.
func (s *RawUDP) recvmmsg(fd uintptr) bool {
	r := &s.rd
	h := s.hook.Load()
	for batches := 0; ; batches++ {
		for r.next < r.count {
			i := r.next
			r.next++
			ap, ok := sockaddrAddrPort(&r.names[i], r.hdrs[i].hdr.Namelen)
			if !ok {
				r.badAddr, r.drained = true, false
				return true
			}
			pkt := r.bufs[i][:r.hdrs[i].len]
			if h != nil && h.read != nil && h.read(pkt, ap) {
				r.pending = h.idle != nil
				continue
			}
			r.n, r.from, r.drained = copy(r.out, pkt), ap, false
			return true
		}
		if r.drained {
			r.drained = false
			s.idle(h)
			return false
		}
		if batches == readBursts {
			r.again = true
			return true
		}
		for i := range r.hdrs {
			r.hdrs[i].hdr.Namelen = uint32(unsafe.Sizeof(r.names[i])) // the kernel's output of the last call
		}
		n, _, e := syscall.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), readBatch, 0, 0, 0)
		switch e {
		case 0:
			r.count, r.next = int(n), 0
			// Short: the socket was empty when the call returned (an
			// unconnected UDP socket has no pending errors to stop at).
			r.drained = int(n) < readBatch
		case syscall.EINTR:
		case syscall.EAGAIN:
			s.idle(h)
			return false
		default:
			r.n, r.errno = 0, e
			return true
		}
	}
}

// idle runs the idle hook when the read hook consumed a datagram since it
// last ran. The reader is about to wait; a datagram arriving while the
// hook runs still ends the wait: the runtime's poller is edge-triggered,
// and readiness it saw before the wait began is kept for it.
func (s *RawUDP) idle(h *readHooks) {
	if s.rd.pending {
		s.rd.pending = false
		if h != nil && h.idle != nil {
			h.idle()
		}
	}
}

// sendto is the write callback.
func (s *RawUDP) sendto(fd uintptr) bool {
	w := &s.wr
	for {
		n, _, e := syscall.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(w.buf))), uintptr(len(w.buf)), 0,
			uintptr(unsafe.Pointer(&w.sa)), uintptr(w.salen))
		switch e {
		case 0:
			w.n, w.errno = int(n), 0
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			w.n, w.errno = 0, e
			return true
		}
	}
}

// SetReadHook installs f as the read hook of every socket, with no idle
// hook (SetReadHooks).
func (s *RawUDP) SetReadHook(f func(pkt []byte, from netip.AddrPort) bool) {
	s.SetReadHooks(func() (func([]byte, netip.AddrPort) bool, func()) { return f, nil })
}

// SetReadHooks installs on each socket the hooks mk makes for it. read is
// called in the socket's reader goroutine with each datagram read; a
// datagram it returns true for is consumed and the read goes on to the
// next one; it may change the datagram. idle, if not nil, is called in the
// same goroutine when a read finds the socket drained after read consumed
// a datagram, before the reader waits for more. In a group the sockets'
// hooks run concurrently, each socket's in its own reader.
func (s *RawUDP) SetReadHooks(mk func() (read func(pkt []byte, from netip.AddrPort) bool, idle func())) {
	s.setHooks(mk)
	if s.group != nil {
		for _, m := range s.group.members[1:] {
			m.setHooks(mk)
		}
	}
}

func (s *RawUDP) setHooks(mk func() (func([]byte, netip.AddrPort) bool, func())) {
	read, idle := mk()
	s.hook.Store(&readHooks{read: read, idle: idle})
}

// ReadFromAddrPort reads one datagram (pion's AddrPortReaderWriter).
func (s *RawUDP) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	if s.group != nil {
		return s.group.next(s, p)
	}
	return s.readOne(p)
}

// readOne reads the socket until a datagram the read hook does not consume
// (the hook runs in the read callback, recvmmsg).
func (s *RawUDP) readOne(p []byte) (int, netip.AddrPort, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	r := &s.rd
	if (r.bufs[0] == nil || len(r.bufs[0]) < len(p)) && r.next >= r.count {
		// Datagrams as large as the caller's buffer, as a direct read into
		// it would take (pion's is the same for every read).
		r.setBufs(len(p))
	}
	r.out = p
	err := s.rc.Read(s.rdFn)
	for err == nil && r.again {
		r.again = false
		err = s.rc.Read(s.rdFn)
	}
	r.out = nil
	if err == nil && r.errno != 0 {
		err = os.NewSyscallError("recvmmsg", r.errno)
		r.errno = 0
	}
	if err != nil {
		return 0, netip.AddrPort{}, s.opError("read", nil, err)
	}
	if r.badAddr {
		r.badAddr = false
		return 0, netip.AddrPort{}, s.opError("read", nil, errors.New("unsupported address family"))
	}
	return r.n, r.from, nil
}

// WriteToAddrPort sends one datagram (pion's AddrPortReaderWriter).
func (s *RawUDP) WriteToAddrPort(p []byte, to netip.AddrPort) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var ok bool
	if s.wr.salen, ok = putSockaddr(&s.wr.sa, to, s.inet6); !ok {
		return 0, s.opError("write", net.UDPAddrFromAddrPort(to), errors.New("address family not supported by the socket"))
	}
	s.wr.buf = p
	err := s.rc.Write(s.wrFn)
	s.wr.buf = nil
	if err == nil && s.wr.errno != 0 {
		err = os.NewSyscallError("sendto", s.wr.errno)
	}
	if err != nil {
		return 0, s.opError("write", net.UDPAddrFromAddrPort(to), err)
	}
	return s.wr.n, nil
}

// ReadFrom implements net.PacketConn.
func (s *RawUDP) ReadFrom(p []byte) (int, net.Addr, error) {
	n, ap, err := s.ReadFromAddrPort(p)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(ap), nil
}

// WriteTo implements net.PacketConn.
func (s *RawUDP) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, s.opError("write", addr, syscall.EINVAL)
	}
	return s.WriteToAddrPort(p, ua.AddrPort())
}

// Close closes the socket (in a group, all of them).
func (s *RawUDP) Close() error {
	if s.group != nil {
		return s.group.close()
	}
	return s.conn.Close()
}

func (s *RawUDP) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// SetDeadline sets both deadlines; a group has no read deadline.
func (s *RawUDP) SetDeadline(t time.Time) error {
	if err := s.SetReadDeadline(t); err != nil {
		return err
	}
	return s.conn.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline; a group, whose reads come from
// a queue, has none (pion's UDP mux sets none).
func (s *RawUDP) SetReadDeadline(t time.Time) error {
	if s.group != nil {
		return s.opError("set read deadline", nil, errors.ErrUnsupported)
	}
	return s.conn.SetReadDeadline(t)
}

func (s *RawUDP) SetWriteDeadline(t time.Time) error { return s.conn.SetWriteDeadline(t) }

func (s *RawUDP) opError(op string, addr net.Addr, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: s.conn.LocalAddr(), Addr: addr, Err: err}
}

// sockaddrAddrPort decodes an AF_INET or AF_INET6 address from the kernel.
func sockaddrAddrPort(sa *unix.RawSockaddrInet6, salen uint32) (netip.AddrPort, bool) {
	switch sa.Family {
	case unix.AF_INET:
		if salen < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}, false
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), getPort(&sa4.Port)), true
	case unix.AF_INET6:
		if salen < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), getPort(&sa.Port)), true
	}
	return netip.AddrPort{}, false
}

// putSockaddr encodes to for a socket of the given family (an IPv4 peer
// of an AF_INET6 socket as an IPv4-mapped address, as package net does)
// and returns the address length.
func putSockaddr(sa *unix.RawSockaddrInet6, to netip.AddrPort, inet6 bool) (uint32, bool) {
	ip := to.Addr()
	if !inet6 {
		ip = ip.Unmap()
		if !ip.Is4() {
			return 0, false
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ip.As4()}
		putPort(&sa4.Port, to.Port())
		return unix.SizeofSockaddrInet4, true
	}
	if !ip.IsValid() {
		return 0, false
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ip.As16()}
	putPort(&sa.Port, to.Port())
	return unix.SizeofSockaddrInet6, true
}

// getPort and putPort read and write a sockaddr's port, which is in
// network byte order whatever the host's.
func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

// mmsghdr is the kernel's struct mmsghdr.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [unsafe.Sizeof(uintptr(0)) - 4]byte
}

// mmsgWriter sends batches of messages with one sendmmsg on a RawUDP.
// It belongs to one goroutine (a read loop's sendBatch); its arrays grow
// to the largest batch and are reused.
type mmsgWriter struct {
	s     *RawUDP
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	count int // messages in hdrs for the call in progress
	sent  int
	errno syscall.Errno
	fn    func(uintptr) bool
}

func newMmsgWriter(s *RawUDP) *mmsgWriter {
	w := &mmsgWriter{s: s}
	w.fn = w.sendmmsg
	return w
}

// WriteBatch sends msgs (Buffers, Addr a *net.UDPAddr or a *directDest, OOB) and returns
// how many the kernel took; like sendmmsg, it stops at the first message
// that fails and reports that failure only if it is the first.
func (w *mmsgWriter) WriteBatch(msgs []ipv4.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	niov := 0
	for i := range msgs {
		niov += len(msgs[i].Buffers)
	}
	if cap(w.hdrs) < len(msgs) {
		w.hdrs = make([]mmsghdr, len(msgs))
		w.names = make([]unix.RawSockaddrInet6, len(msgs))
	}
	if cap(w.iovs) < niov {
		w.iovs = make([]unix.Iovec, niov)
	}
	w.hdrs, w.names, w.iovs = w.hdrs[:len(msgs)], w.names[:len(msgs)], w.iovs[:niov]
	iov := 0
	for i := range msgs {
		m, h := &msgs[i], &w.hdrs[i]
		*h = mmsghdr{}
		var ap netip.AddrPort
		switch a := m.Addr.(type) {
		case *directDest:
			ap = a.ap
		case *net.UDPAddr:
			ap = a.AddrPort()
		default:
			return 0, w.s.opError("write", m.Addr, syscall.EINVAL)
		}
		salen, ok := putSockaddr(&w.names[i], ap, w.s.inet6)
		if !ok {
			return 0, w.s.opError("write", m.Addr, errors.New("address family not supported by the socket"))
		}
		h.hdr.Name = (*byte)(unsafe.Pointer(&w.names[i]))
		h.hdr.Namelen = salen
		first := iov
		for _, b := range m.Buffers {
			w.iovs[iov] = unix.Iovec{Base: unsafe.SliceData(b)}
			w.iovs[iov].SetLen(len(b))
			iov++
		}
		if iov > first {
			h.hdr.Iov = &w.iovs[first]
			h.hdr.SetIovlen(iov - first)
		}
		if len(m.OOB) > 0 {
			h.hdr.Control = unsafe.SliceData(m.OOB)
			h.hdr.SetControllen(len(m.OOB))
		}
	}
	w.count = len(msgs)
	err := w.s.rc.Write(w.fn)
	if err == nil && w.errno != 0 {
		err = os.NewSyscallError("sendmmsg", w.errno)
	}
	if err != nil {
		return 0, w.s.opError("write", nil, err)
	}
	for i := 0; i < w.sent; i++ {
		msgs[i].N = int(w.hdrs[i].len)
	}
	return w.sent, nil
}

// sendmmsg is the write callback.
func (w *mmsgWriter) sendmmsg(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(unsafe.SliceData(w.hdrs))), uintptr(w.count), 0, 0, 0)
		switch e {
		case 0:
			w.sent, w.errno = int(n), 0
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			w.sent, w.errno = 0, e
			return true
		}
	}
}
