package sfu

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// Direct receive path.
//
// pion hands a received RTP packet through five goroutines before the SFU
// sees it: the UDP mux's reader, the ICE candidate's read loop, the DTLS
// transport's demultiplexer, the SRTP session and the track's read
// stream, each a buffer and a wake-up. In a meeting, where each packet is
// forwarded to few subscribers, that costs more than the forwarding. For a
// publisher connection whose selected pair runs over the shared UDP mux
// socket, the SFU therefore takes the RTP of its known streams where the
// socket is read (RawUDP's read hook): it decrypts the packet with its own
// SRTP context, keyed like the send path (fastpath.go), runs it through
// the connection's own receive interceptors (NACK generation, receiver
// reports, TWCC feedback — the chain pion built, captured through two
// interceptors of ours at its ends) and forwards it, all in the reader's
// goroutine. STUN, DTLS, RTCP, streams not yet known (a new simulcast
// layer until pion has matched its rid) and connections off the mux
// socket stay on pion's path; each SSRC is decrypted by exactly one
// context once it is taken over.
//
// A socket's reader goroutine forwards everything it takes over, so one
// socket forwards on one core. The media port is therefore served by one
// socket per CPU (rtc.receive_sockets, rawgroup.go), SO_REUSEPORT
// spreading peers over them; rtc.direct_receive: false keeps pion's path
// with a goroutine per stream.

// fastPacket marks a packet the direct receive path pushes through a
// connection's interceptor chain; its value is the packet's *fastIn.
type fastPacket struct{}

// fastIn is a packet the direct receive path pushes through a chain: its
// length and the header the path parsed.
type fastIn struct {
	n int
	h *rtp.Header
}

// pubRecv is the direct receive state of one publishing connection.
type pubRecv struct {
	s *Server

	mu      sync.Mutex // guards chains, layers, addr, keyed, closed and the writes of streams
	chains  map[uint32]interceptor.RTPReader
	layers  map[uint32]*layerRecv
	addr    netip.AddrPort // registered source address (valid with keyed)
	hasAddr bool
	ctx     *srtp.Context // remote keys; nil until DTLS connected
	closed  bool

	streams atomic.Pointer[map[uint32]*fastStream] // read by the socket reader

	// The socket reader's scratch. A connection's packets come to one
	// socket of a group (the kernel picks it by address); rmu covers the
	// moment its address changes and two readers may hold it.
	rmu   sync.Mutex
	h     rtp.Header
	in    fastIn
	attrs interceptor.Attributes

	// fb is the connection's feedback interceptor, which takes the
	// publisher's sender reports (rtcpguard.go).
	fb atomic.Pointer[feedbackInterceptor]
}

// fastStream is one taken-over SSRC.
type fastStream struct {
	chain interceptor.RTPReader
	l     *layerRecv
}

func newPubRecv(s *Server) *pubRecv {
	pr := &pubRecv{s: s, chains: map[uint32]interceptor.RTPReader{}, layers: map[uint32]*layerRecv{}, attrs: interceptor.Attributes{}}
	empty := map[uint32]*fastStream{}
	pr.streams.Store(&empty)
	return pr
}

// interceptors returns the two taps that wrap a connection's receive
// interceptors: the inner one is registered first, the outer one last.
func (pr *pubRecv) interceptors() (inner, outer interceptor.Factory) {
	return tapFactory{pr: pr}, tapFactory{pr: pr, outer: true}
}

type tapFactory struct {
	pr    *pubRecv
	outer bool
}

func (f tapFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &recvTap{pr: f.pr, outer: f.outer}, nil
}

// recvTap is an end of a connection's receive interceptor chain. The outer
// end records the whole chain per SSRC; the inner end returns a packet the
// direct receive path pushes through it instead of reading pion's stream.
type recvTap struct {
	interceptor.NoOp
	pr    *pubRecv
	outer bool
}

func (t *recvTap) BindRemoteStream(info *interceptor.StreamInfo, r interceptor.RTPReader) interceptor.RTPReader {
	if t.outer {
		t.pr.bindChain(info.SSRC, r)
		return r
	}
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		if fp, ok := a[fastPacket{}].(*fastIn); ok {
			return fp.n, a, nil
		}
		return r.Read(b, a)
	})
}

func (t *recvTap) UnbindRemoteStream(info *interceptor.StreamInfo) {
	if t.outer {
		t.pr.unbind(info.SSRC)
	}
}

func (pr *pubRecv) bindChain(ssrc uint32, r interceptor.RTPReader) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.chains[ssrc] = r
	pr.publishLocked()
}

func (pr *pubRecv) unbind(ssrc uint32) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	delete(pr.chains, ssrc)
	delete(pr.layers, ssrc)
	pr.publishLocked()
}

// addLayer takes over a stream once its layer exists.
func (pr *pubRecv) addLayer(l *layerRecv) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.closed {
		return
	}
	pr.layers[l.ssrc] = l
	pr.publishLocked()
}

// removeLayer gives a stream back (its read loop ended).
func (pr *pubRecv) removeLayer(l *layerRecv) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.layers[l.ssrc] == l {
		delete(pr.layers, l.ssrc)
		pr.publishLocked()
	}
}

// publishLocked rebuilds the reader's stream table: SSRCs with both a
// chain and a layer, once the keys are known.
func (pr *pubRecv) publishLocked() {
	next := map[uint32]*fastStream{}
	if pr.ctx != nil && !pr.closed {
		for ssrc, l := range pr.layers {
			if c := pr.chains[ssrc]; c != nil {
				next[ssrc] = &fastStream{chain: c, l: l}
			}
		}
	}
	pr.streams.Store(&next)
}

// setKeys installs the publisher's SRTP keys (DTLS connected).
func (pr *pubRecv) setKeys(k *fastKeys) error {
	ctx, err := srtp.CreateContext(k.key, k.salt, k.profile, srtp.SRTPReplayProtection(srtpReplayWindow),
		srtp.Cryptex(srtp.CryptexModeEnabled)) // pion negotiates RFC 9335 (a=cryptex) with peers that offer it
	if err != nil {
		return err
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.ctx != nil || pr.closed {
		return nil // keys are set once per connection
	}
	pr.ctx = ctx
	pr.publishLocked()
	pr.registerLocked()
	return nil
}

// srtpReplayWindow is pion's default SRTP replay window.
const srtpReplayWindow = 64

// setAddr records the selected pair's remote address on the mux socket
// (ok false: the pair is elsewhere, the path is off).
func (pr *pubRecv) setAddr(addr netip.AddrPort, ok bool) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.s.recvAddrs.remove(pr)
	pr.addr, pr.hasAddr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()), ok
	pr.registerLocked()
}

func (pr *pubRecv) registerLocked() {
	if pr.hasAddr && pr.ctx != nil && !pr.closed {
		pr.s.recvAddrs.put(pr.addr, pr)
		pr.s.metrics.directConns.WithLabelValues("receive").Inc()
	}
}

// close takes the connection off the direct receive path.
func (pr *pubRecv) close() {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.closed = true
	pr.s.recvAddrs.remove(pr)
	pr.publishLocked()
}

// readHook is RawUDP's read hook on the mux socket: it consumes the RTP of
// taken-over streams and the RTCP the guards drop or handle, and tells
// pion's mux to go on reading.
func (s *Server) readHook(pkt []byte, from netip.AddrPort, hl *heldLayers) bool {
	if len(pkt) < 12 || pkt[0]&0xc0 != 0x80 {
		return false // not RTP (STUN, DTLS, TURN channel data)
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if pt := pkt[1] & 0x7f; pt >= 64 && pt <= 95 { // RTCP (RFC 5761 §4)
		if g := s.rtcpAddrs.get(from); g != nil {
			return g.check(pkt) != rtcpPass
		}
		return false
	}
	pr := s.recvAddrs.get(from)
	if pr == nil {
		return false
	}
	fs := (*pr.streams.Load())[binary.BigEndian.Uint32(pkt[8:12])]
	if fs == nil {
		return false
	}
	// ctx is set before the connection is registered and never replaced.
	pr.rmu.Lock()
	defer pr.rmu.Unlock()
	out, err := pr.ctx.DecryptRTP(pkt, pkt, &pr.h)
	if err != nil {
		s.metrics.recvDrops.Inc()
		return true // a replay or a forgery: pion would drop it too
	}
	clear(pr.attrs)
	pr.in = fastIn{n: len(out), h: &pr.h}
	pr.attrs[fastPacket{}] = &pr.in
	n, _, err := fs.chain.Read(out, pr.attrs)
	if err != nil || n != len(out) {
		return true
	}
	fs.l.deliver(out, &pr.h, hl)
	return true
}

// readHooks makes the hooks of one socket of the media port: its reader's
// direct receive (readHook) and, when the socket is drained, the flush of
// the frames that reader left held (heldLayers).
func (s *Server) readHooks() (func([]byte, netip.AddrPort) bool, func()) {
	hl := &heldLayers{}
	if s.batchConn != nil {
		s.initBatch(&hl.batch)
		s.readers++ // called for each socket before the server serves anyone
		hl.batch.shared = s.readers
	}
	return func(pkt []byte, from netip.AddrPort) bool { return s.readHook(pkt, from, hl) }, hl.flush
}

// heldLayers are the layers whose copies of a frame one socket reader left
// held for segmentation offload (sendBatch), waiting for the frame's next
// packet. The reader flushes them when it has read everything queued on
// its socket: a frame's packets that arrived together go out together, and
// nothing waits for a packet that has not arrived yet. That bound needs no
// timer — a read deadline per held frame, as pion's path has, woke the SFU
// ~400 times a second in a meeting of 20 for deadlines long cancelled
// (Go's runtime sleeps until a stopped timer's time before it drops it).
// Owned by the reader's goroutine.
//
// The reader's shared batch takes the copies of the streams it forwards to
// fewer than gsoKeepMin subscribers (deliver): per subscriber one message
// for what the reader read in one go, and one sendmmsg at the drain.
type heldLayers struct {
	ls    []*layerRecv
	batch sendBatch // shared (sendBatch.shared); out is nil in tests that use layers' own batches
}

// add notes that l, whose mu is held, holds copies.
func (hl *heldLayers) add(l *layerRecv) {
	if l.heldBy != hl {
		l.heldBy = hl
		hl.ls = append(hl.ls, l)
	}
}

// flush sends what the layers noted since the last flush still hold.
func (hl *heldLayers) flush() {
	for i, l := range hl.ls {
		l.mu.Lock()
		if l.heldBy == hl {
			l.heldBy = nil
			if l.batch.held() {
				l.batch.flush()
			}
		}
		l.mu.Unlock()
		hl.ls[i] = nil
	}
	hl.ls = hl.ls[:0]
	if hl.batch.held() {
		hl.batch.flush()
	}
}
