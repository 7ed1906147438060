package sfu

import (
	"encoding/binary"
	"net/netip"
	"sync"

	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
)

// Bounding what a peer's RTCP makes pion keep.
//
// pion's SRTCP session keeps a read stream, with a buffer of up to 100 KB,
// for every SSRC an authentic RTCP packet names, and a stream nobody opened
// is kept, unread, for as long as the connection lives. A joined client
// that sends RTCP naming new SSRCs (a PLI each, ~30 bytes) thus grows the
// SFU by ~3 KB per packet without bound: 50,000 such PLIs from one
// subscriber added 138 MB of heap. The guard sees each connection's RTCP
// on the mux socket before pion does (Server.readHook), decrypts a copy
// with its own SRTCP context (the connection's remote keys, its own replay
// window; pion's is untouched), and drops a datagram that would make the
// connection's distinct SSRCs (destinations and senders) outnumber its
// budget: a few for the peer's own SSRCs (SDES, BYE) plus two for every
// stream the SFU gave it to receive or took from it (its SSRC and the
// peer's own SSRC for it). Connections off the mux socket (TURN, ICE-TCP)
// and servers without the direct receive path are not guarded.
//
// The guard also handles what passes, and pion never gets the datagram
// (onRTCP): a subscriber's feedback goes to the downtracks each packet
// names, a publisher's sender reports to the connection's receiver
// reports (rr.go). pion would decrypt it again and wake a goroutine for
// every SSRC it names, handing each the packets naming it: a receiver
// report about 38 tracks was parsed 38 times more. And nothing reads a
// publisher connection's RTCP from pion, so pion kept each of its streams'
// sender reports until the stream's 100 KB buffer was full.

// rtcpSSRCBase is the budget of a connection with no streams; each
// subscription and each published layer adds rtcpSSRCPerStream.
const (
	rtcpSSRCBase      = 16
	rtcpSSRCPerStream = 2
)

// rtcpGuard is one connection's RTCP check. The socket reader that gets
// its address runs check; mu covers the moment the address moves and two
// readers may hold it.
type rtcpGuard struct {
	p *Participant

	mu      sync.Mutex
	ctx     *srtp.Context // remote keys; nil until DTLS connected
	addr    netip.AddrPort
	hasAddr bool
	closed  bool
	seen    map[uint32]struct{} // SSRCs (destinations and senders) let through
	buf     []byte
	raws    []rtcp.RawPacket
	dsts    []uint32
	added   []uint32
	hdr     rtcp.Header
}

func newRTCPGuard(p *Participant) *rtcpGuard {
	return &rtcpGuard{p: p, seen: map[uint32]struct{}{}}
}

// budget is how many distinct SSRCs (destinations and senders) the
// connection's RTCP may name.
func (g *rtcpGuard) budget() int {
	return rtcpSSRCBase + rtcpSSRCPerStream*int(g.p.rtcpStreams.Load())
}

// setKeys makes the guard's SRTCP context from the connection's remote
// keys and registers it if its address is known.
func (g *rtcpGuard) setKeys(k *fastKeys) error {
	ctx, err := srtp.CreateContext(k.key, k.salt, k.profile, srtp.SRTCPReplayProtection(srtpReplayWindow))
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ctx = ctx
	g.registerLocked()
	return nil
}

// setAddr records the connection's address on the mux socket (ok false:
// the selected pair is elsewhere) and registers the guard there.
func (g *rtcpGuard) setAddr(addr netip.AddrPort, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.p.s.rtcpAddrs.remove(g)
	g.addr, g.hasAddr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()), ok
	g.registerLocked()
}

func (g *rtcpGuard) registerLocked() {
	if g.hasAddr && g.ctx != nil && !g.closed {
		g.p.s.rtcpAddrs.put(g.addr, g)
	}
}

// close takes the guard off the socket.
func (g *rtcpGuard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	g.p.s.rtcpAddrs.remove(g)
}

// rtcpVerdict is what the guard did with a datagram.
type rtcpVerdict int

const (
	rtcpPass    rtcpVerdict = iota // pion gets it unchanged
	rtcpDropped                    // a forgery, a replay, or over budget
	rtcpHandled                    // acted on here (onRTCP)
)

// check decides on pkt, an SRTCP datagram from the guard's address: it is
// dropped if it fails authentication (a forgery or a replay, which pion
// would drop as well) or names SSRCs beyond the connection's budget, and
// handled here otherwise. Before the connection's keys are known, and when
// it does not parse, pion gets it.
func (g *rtcpGuard) check(pkt []byte) rtcpVerdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ctx == nil || len(pkt) < 8 {
		return rtcpPass
	}
	// The sender's SSRC is in the clear: SRTCP state is kept per sender
	// (in pion's context and this one), so a new one over budget is
	// dropped before it is decrypted.
	sender := binary.BigEndian.Uint32(pkt[4:8])
	if _, ok := g.seen[sender]; !ok && len(g.seen) >= g.budget() {
		g.p.s.metrics.rtcpDrops.WithLabelValues("ssrc_budget").Inc()
		return rtcpDropped
	}
	if cap(g.buf) < len(pkt) {
		g.buf = make([]byte, len(pkt))
	}
	plain, err := g.ctx.DecryptRTCP(g.buf[:0], pkt, &g.hdr)
	if err != nil {
		g.p.s.metrics.rtcpDrops.WithLabelValues("authentication").Inc()
		return rtcpDropped
	}
	if g.raws, err = rtcp.AppendRawPackets(g.raws[:0], plain); err != nil {
		return rtcpPass // pion decides what to do with what it cannot parse
	}
	g.dsts = append(g.dsts[:0], sender)
	for _, r := range g.raws {
		if g.dsts, err = r.ParseDestinationSSRC(g.dsts); err != nil {
			return rtcpPass
		}
	}
	g.added = g.added[:0]
	for _, ssrc := range g.dsts {
		if _, ok := g.seen[ssrc]; !ok {
			g.seen[ssrc] = struct{}{}
			g.added = append(g.added, ssrc)
		}
	}
	if len(g.added) > 0 && len(g.seen) > g.budget() {
		for _, ssrc := range g.added {
			delete(g.seen, ssrc) // pion never sees them
		}
		g.p.s.metrics.rtcpDrops.WithLabelValues("ssrc_budget").Inc()
		return rtcpDropped
	}
	for _, r := range g.raws {
		pkts, err := rtcp.Unmarshal(r)
		if err != nil {
			continue // as pion's reader would
		}
		for _, pk := range pkts {
			g.p.onRTCP(pk, nil)
		}
	}
	return rtcpHandled
}
