package sfu

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
)

// Receive feedback on one clock (receiver reports: rr.go).
//
// A publisher expects two kinds of periodic feedback on what the SFU
// received: NACKs for missing packets (RFC 4585) and transport-wide
// congestion control feedback (TWCC), which its bandwidth estimate needs
// to ramp up to the top simulcast layer. pion's interceptors for them
// (nack.GeneratorInterceptor, twcc.SenderInterceptor) each run a goroutine
// with a 100 ms ticker per connection, and the TWCC one also hands every
// received packet to its goroutine through a channel: two goroutines, two
// tickers and a goroutine hand-off per packet for each publisher, growing
// with connections, not with traffic. feedbackInterceptor does both jobs:
// it records each received packet inline, in the reader that delivers it,
// and one feedbackClock per server builds and sends the feedback of all
// connections on one ticker. The NACKs ask for what pion's would (every
// packet missing after the last one received in order, within the last
// 512), but each packet at most nackMaxTries times, once a tick; the TWCC
// feedback is pion's twcc.Recorder. (In a meeting of 20 on one
// core the change is not measurable in CPU per forwarded packet: the
// tickers mostly fire while the SFU is awake anyway, sfu/README.md.)

// feedbackInterval is how often feedback is sent: pion's interceptors'
// default for both.
const feedbackInterval = 100 * time.Millisecond

// nackLogSize is how many sequence numbers back a missing packet is asked
// for (pion's default).
const nackLogSize = 512

// nackMaxTries is how often one missing packet is asked for, once a tick:
// libwebrtc's receiver gives up after 10 tries as well. pion's generator
// asks until the packet leaves the window, ~100 times for an audio packet
// (512 packets at 50/s), long after a retransmission could still help.
const nackMaxTries = 10

// feedbackClock sends the receive feedback of a server's connections. Its
// goroutine runs while at least one connection is registered.
type feedbackClock struct {
	interval time.Duration

	mu    sync.Mutex
	conns map[*feedbackInterceptor]struct{}
	stop  chan struct{} // closed to stop the running goroutine; nil when none runs
}

func newFeedbackClock(interval time.Duration) *feedbackClock {
	return &feedbackClock{interval: interval, conns: map[*feedbackInterceptor]struct{}{}}
}

func (c *feedbackClock) add(f *feedbackInterceptor) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conns[f] = struct{}{}
	if c.stop == nil {
		c.stop = make(chan struct{})
		go c.run(c.stop)
	}
}

// remove unregisters f; the last one stops the goroutine (it may be the
// goroutine's own tick that closes a connection, so it does not wait).
func (c *feedbackClock) remove(f *feedbackInterceptor) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.conns, f)
	if len(c.conns) == 0 && c.stop != nil {
		close(c.stop)
		c.stop = nil
	}
}

// running tells whether the clock's goroutine was started and not stopped.
func (c *feedbackClock) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stop != nil
}

func (c *feedbackClock) run(stop chan struct{}) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	var conns []*feedbackInterceptor
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		conns = conns[:0]
		for f := range c.conns {
			conns = append(conns, f)
		}
		c.mu.Unlock()
		for _, f := range conns {
			f.tick()
		}
		clear(conns)
	}
}

// feedbackFactory makes a feedbackInterceptor per connection; with
// onNew, it tells it each one it made.
type feedbackFactory struct {
	clock *feedbackClock
	onNew func(*feedbackInterceptor)
}

func (ff feedbackFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	f := &feedbackInterceptor{
		clock:      ff.clock,
		start:      time.Now(),
		senderSSRC: rand.Uint32(),
		streams:    map[uint32]*recvStream{},
		rrPhase:    rand.IntN(rrTicks), // spreads the connections' reports over the second
	}
	if ff.onNew != nil {
		ff.onNew(f)
	}
	return f, nil
}

// feedbackInterceptor records what one connection receives and, on its
// clock's tick, sends the NACKs, TWCC feedback and receiver reports for it.
type feedbackInterceptor struct {
	interceptor.NoOp
	clock      *feedbackClock
	start      time.Time
	senderSSRC uint32

	mu      sync.Mutex // guards the fields below
	writer  interceptor.RTCPWriter
	streams map[uint32]*recvStream
	twcc    *twcc.Recorder // nil until a stream carries the extension
	closed  bool
	missing []uint16
	rrPhase int // ticks until the next receiver report
	blocks  []rtcp.ReceptionReport
}

// recvStream is what the connection records of one received stream.
type recvStream struct {
	nack  *nackLog // nil if the stream did not negotiate NACKs
	stats recvStats
}

// BindRTCPWriter registers the connection with the clock.
func (f *feedbackInterceptor) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return w
	}
	f.writer = w
	f.mu.Unlock()
	f.clock.add(f)
	return w
}

// BindRemoteStream records the stream's packets: reception statistics,
// sequence numbers for NACKs if the stream negotiated them, transport-wide
// sequence numbers if it carries the extension.
func (f *feedbackInterceptor) BindRemoteStream(info *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	st := &recvStream{stats: recvStats{clockRate: info.ClockRate}}
	for _, fb := range info.RTCPFeedback {
		if fb.Type == "nack" && fb.Parameter == "" {
			st.nack = &nackLog{}
		}
	}
	var twccID uint8
	for _, e := range info.RTPHeaderExtensions {
		if e.URI == sdp.TransportCCURI && e.ID > 0 && e.ID < 256 {
			twccID = uint8(e.ID)
		}
	}
	ssrc := info.SSRC
	f.mu.Lock()
	f.streams[ssrc] = st
	if twccID != 0 && f.twcc == nil {
		f.twcc = twcc.NewRecorder(f.senderSSRC)
	}
	rec := f.twcc
	f.mu.Unlock()
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, attr, err := reader.Read(b, a)
		if err != nil {
			return 0, nil, err
		}
		// The direct receive path passes the header it parsed; pion's
		// path has it parsed here.
		var h *rtp.Header
		if fp, ok := attr[fastPacket{}].(*fastIn); ok {
			h = fp.h
		} else {
			if attr == nil {
				attr = interceptor.Attributes{}
			}
			if h, err = attr.GetRTPHeader(b[:n]); err != nil {
				return 0, nil, err
			}
		}
		var tseq uint16
		var haveT bool
		if twccID != 0 {
			if ext := h.GetExtension(twccID); ext != nil {
				var tcc rtp.TransportCCExtension
				if tcc.Unmarshal(ext) == nil {
					tseq, haveT = tcc.TransportSequence, true
				}
			}
		}
		at := time.Since(f.start).Microseconds()
		f.mu.Lock()
		st.stats.add(h.SequenceNumber, h.Timestamp, at)
		if st.nack != nil {
			st.nack.add(h.SequenceNumber)
		}
		if haveT {
			rec.Record(ssrc, tseq, at)
		}
		f.mu.Unlock()
		return n, attr, nil
	})
}

// UnbindRemoteStream forgets the stream.
func (f *feedbackInterceptor) UnbindRemoteStream(info *interceptor.StreamInfo) {
	f.mu.Lock()
	delete(f.streams, info.SSRC)
	f.mu.Unlock()
}

// senderReport records a sender report of the publisher's for the next
// receiver report's round-trip fields.
func (f *feedbackInterceptor) senderReport(ssrc uint32, ntp uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st := f.streams[ssrc]; st != nil {
		st.stats.senderReport(ntp, monoNow())
	}
}

// Close unregisters the connection from the clock.
func (f *feedbackInterceptor) Close() error {
	f.mu.Lock()
	registered := f.writer != nil && !f.closed
	f.closed = true
	f.mu.Unlock()
	if registered {
		f.clock.remove(f)
	}
	return nil
}

// tick sends the connection's NACKs, one packet per stream as pion's
// generator does, its TWCC feedback and, every rrTicks ticks, a receiver
// report about its streams. Write errors are the closing connection's and
// are dropped.
func (f *feedbackInterceptor) tick() {
	f.mu.Lock()
	if f.closed || f.writer == nil {
		f.mu.Unlock()
		return
	}
	var out []rtcp.Packet
	for ssrc, st := range f.streams {
		if st.nack == nil {
			continue
		}
		f.missing = st.nack.nackSeqs(f.missing[:0])
		if len(f.missing) > 0 {
			out = append(out, &rtcp.TransportLayerNack{SenderSSRC: f.senderSSRC, MediaSSRC: ssrc, Nacks: rtcp.NackPairsFromSequenceNumbers(f.missing)})
		}
	}
	var tw []rtcp.Packet
	if f.twcc != nil {
		tw = f.twcc.BuildFeedbackPacket()
	}
	var rrs []rtcp.Packet
	if f.rrPhase--; f.rrPhase < 0 {
		f.rrPhase = rrTicks - 1
		rrs = f.receiverReports(monoNow())
	}
	w := f.writer
	f.mu.Unlock()
	for _, p := range out {
		_, _ = w.Write([]rtcp.Packet{p}, interceptor.Attributes{})
	}
	if len(tw) > 0 {
		_, _ = w.Write(tw, nil)
	}
	if len(rrs) > 0 {
		_, _ = w.Write(rrs, nil)
	}
}

// receiverReports returns the connection's receiver reports at nowNs
// (monotonic), rrMaxBlocks streams per report; f.mu is held.
func (f *feedbackInterceptor) receiverReports(nowNs int64) []rtcp.Packet {
	f.blocks = f.blocks[:0]
	for ssrc, st := range f.streams {
		if b, ok := st.stats.report(ssrc, nowNs); ok {
			f.blocks = append(f.blocks, b)
		}
	}
	var rrs []rtcp.Packet
	for blocks := f.blocks; len(blocks) > 0; {
		n := min(len(blocks), rrMaxBlocks)
		rrs = append(rrs, &rtcp.ReceiverReport{SSRC: f.senderSSRC, Reports: append([]rtcp.ReceptionReport(nil), blocks[:n]...)})
		blocks = blocks[n:]
	}
	return rrs
}

// nackLog remembers which of a stream's last nackLogSize sequence numbers
// arrived. Missing are those after the last one received in order (every
// one before it arrived or fell out of the window) up to the newest.
type nackLog struct {
	bits            [nackLogSize / 64]uint64
	tries           [nackLogSize]uint8 // NACKs sent for the slot's missing packet
	newest          uint16
	lastConsecutive uint16
	started         bool
}

func (l *nackLog) set(seq uint16) { l.bits[seq%nackLogSize/64] |= 1 << (seq % 64) }
func (l *nackLog) unset(seq uint16) {
	l.bits[seq%nackLogSize/64] &^= 1 << (seq % 64)
}
func (l *nackLog) has(seq uint16) bool { return l.bits[seq%nackLogSize/64]&(1<<(seq%64)) != 0 }

func (l *nackLog) add(seq uint16) {
	if !l.started {
		l.started, l.newest, l.lastConsecutive = true, seq, seq
		l.set(seq)
		return
	}
	switch d := seq - l.newest; {
	case d == 0:
		return
	case d < 0x8000: // newer
		if d >= nackLogSize {
			clear(l.bits[:]) // everything in the window is older than the new window
			clear(l.tries[:])
		} else {
			for s := l.newest + 1; s != seq; s++ {
				l.unset(s) // a slot last used a window ago
				l.tries[s%nackLogSize] = 0
			}
		}
		l.newest = seq
		if l.lastConsecutive+1 == seq {
			l.lastConsecutive = seq
		} else if seq-l.lastConsecutive > nackLogSize {
			l.lastConsecutive = seq - nackLogSize
			l.set(seq)
			l.advance()
			return
		}
	default: // older
		if l.newest-seq >= nackLogSize {
			return // out of the window: its slot belongs to a newer packet
		}
		if l.lastConsecutive+1 == seq {
			l.lastConsecutive = seq
			l.set(seq)
			l.advance()
			return
		}
	}
	l.set(seq)
}

// advance moves lastConsecutive over the packets received after it.
func (l *nackLog) advance() {
	s := l.lastConsecutive + 1
	for s != l.newest+1 && l.has(s) {
		s++
	}
	l.lastConsecutive = s - 1
}

// missingSeqs appends the missing sequence numbers to dst.
func (l *nackLog) missingSeqs(dst []uint16) []uint16 {
	if !l.started {
		return dst
	}
	for s := l.lastConsecutive + 1; s != l.newest+1; s++ {
		if !l.has(s) {
			dst = append(dst, s)
		}
	}
	return dst
}

// nackSeqs appends the missing sequence numbers not yet asked for
// nackMaxTries times to dst, and counts this request.
func (l *nackLog) nackSeqs(dst []uint16) []uint16 {
	if !l.started {
		return dst
	}
	for s := l.lastConsecutive + 1; s != l.newest+1; s++ {
		if !l.has(s) && l.tries[s%nackLogSize] < nackMaxTries {
			l.tries[s%nackLogSize]++
			dst = append(dst, s)
		}
	}
	return dst
}
