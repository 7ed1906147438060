package sfu

import (
	"bufio"
	"net"
	"sync"
	"time"
)

// demuxListener splits the connections of the TLS signalling listener
// between HTTP and TURN (turn.tls_on_signal_port), so that one port, e.g.
// 443, carries signalling and relayed media. After the TLS handshake the
// first byte decides: a STUN message starts with the bits 00 (RFC 8489
// §5; the first message on a TURN connection is always a STUN request),
// an HTTP request with a letter of its method (0x41 or above).
//
// run owns the accept loop and one goroutine per connection until it is
// classified; wg counts them all.
type demuxListener struct {
	inner     net.Listener
	http      *chanListener
	turn      *chanListener
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// handshakeTimeout bounds the TLS handshake and the first byte.
const handshakeTimeout = 10 * time.Second

func newDemuxListener(inner net.Listener) *demuxListener {
	d := &demuxListener{inner: inner}
	d.http = &chanListener{addr: inner.Addr(), ch: make(chan net.Conn), done: make(chan struct{}), onClose: d.close}
	d.turn = &chanListener{addr: inner.Addr(), ch: make(chan net.Conn), done: make(chan struct{})}
	d.wg.Add(1)
	go d.run()
	return d
}

func (d *demuxListener) close() {
	d.closeOnce.Do(func() { _ = d.inner.Close() })
}

func (d *demuxListener) run() {
	defer d.wg.Done()
	for {
		c, err := d.inner.Accept()
		if err != nil {
			d.http.shut()
			d.turn.shut()
			return
		}
		d.wg.Add(1)
		go d.classify(c)
	}
}

func (d *demuxListener) classify(c net.Conn) {
	defer d.wg.Done()
	_ = c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReaderSize(c, 16)
	b, err := br.Peek(1)
	if err != nil {
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	target := d.http
	if b[0]&0xc0 == 0 {
		target = d.turn
	}
	select {
	case target.ch <- &peekedConn{Conn: c, r: br}:
	case <-target.done:
		_ = c.Close()
	}
}

// wait returns once the accept loop and the classifiers have ended.
func (d *demuxListener) wait() { d.wg.Wait() }

// chanListener is a net.Listener fed by a demuxListener.
type chanListener struct {
	addr    net.Addr
	ch      chan net.Conn
	done    chan struct{}
	once    sync.Once
	onClose func()
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) shut() { l.once.Do(func() { close(l.done) }) }

// Close stops this side; closing the HTTP side closes the shared listener.
func (l *chanListener) Close() error {
	l.shut()
	if l.onClose != nil {
		l.onClose()
	}
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// peekedConn reads through the reader that peeked the first byte.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
