package sfu

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// sharedRig is a socket reader's shared batch and subscribers, each with
// a sink socket of its own, to which any number of publishers' layers
// forward on the direct path.
type sharedRig struct {
	s     *Server
	hl    *heldLayers
	keys  *fastKeys
	subs  []*Participant
	sinks []*net.UDPConn
	h     rtp.Header
}

func newSharedRig(t *testing.T, subs int) *sharedRig {
	t.Helper()
	r := &sharedRig{s: &Server{cfg: DefaultConfig()}, hl: &heldLayers{}}
	b := &r.hl.batch
	b.out = rawWriter(t, mustUDP(t))
	b.errors = prometheus.NewCounter(prometheus.CounterOpts{Name: "test_errors"})
	b.msgsOut = prometheus.NewCounter(prometheus.CounterOpts{Name: "test_messages"})
	b.calls = prometheus.NewCounter(prometheus.CounterOpts{Name: "test_calls"})
	b.gso, b.off, b.shared = true, &gsoSwitch{}, 1
	r.keys = &fastKeys{profile: srtp.ProtectionProfileAeadAes128Gcm, key: make([]byte, 16), salt: make([]byte, 12)}
	r.keys.key[0] = 9
	for range subs {
		sink := mustUDP(t)
		require.NoError(t, sink.SetReadBuffer(4<<20))
		p := &Participant{s: r.s}
		p.fastKeys.Store(r.keys)
		p.direct.Store(&directDest{ap: sink.LocalAddr().(*net.UDPAddr).AddrPort(), slots: make([]gsoSlot, 1)})
		r.subs, r.sinks = append(r.subs, p), append(r.sinks, sink)
	}
	return r
}

// layer publishes a VP8 layer to the first n subscribers; its downtracks'
// SSRCs are base+i for subscriber i.
func (r *sharedRig) layer(n int, base uint32) *layerRecv {
	t := newPublishedTrack(&Participant{s: r.s}, &livekit.TrackInfo{Sid: "TR_" + strconv.Itoa(int(base))}, "c", webrtc.RTPCodecTypeVideo)
	t.live = true
	t.codec = webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}
	l := &layerRecv{t: t, idx: 0, hold: true, cache: newPacketCache(256), isKey: isVP8Keyframe}
	l.live.Store(true)
	t.layers[0] = l
	for i, p := range r.subs[:n] {
		dt := newDownTrack(p, t)
		dt.ws, dt.bound, dt.ssrc, dt.pt, dt.clockRate = &nullWriter{buf: make([]byte, 1500)}, true, base+uint32(i), 96, 90000
		dt.target.Store(0)
		t.addDownTrack(dt)
	}
	return l
}

// feed delivers one packet of l as the socket reader would; every packet
// ends a frame (marker) unless open.
func (r *sharedRig) feed(l *layerRecv, seq uint16, key bool, size int, open ...bool) {
	p := vp8Packet(seq, key, size)
	if len(open) > 0 && open[0] {
		p[1] &^= 0x80
	}
	l.deliver(p, &r.h, r.hl)
}

// receive reads want datagrams from subscriber i's sink and returns their
// sequence numbers per SSRC, each datagram decrypted as one SRTP packet.
func (r *sharedRig) receive(t *testing.T, i, want int) map[uint32][]uint16 {
	t.Helper()
	seqs, _ := readSRTP(t, r.sinks[i], r.keys, want)
	return seqs
}

// quiet asserts that subscriber i's sink has nothing more.
func (r *sharedRig) quiet(t *testing.T, i int) {
	t.Helper()
	require.NoError(t, r.sinks[i].SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	n, err := r.sinks[i].Read(make([]byte, 1500))
	require.Error(t, err, "subscriber %d got %d more bytes", i, n)
}

// TestSharedBatchPerDestination: on the direct receive path the copies of
// every stream a reader forwards to few subscribers wait in the reader's
// shared batch until its socket is drained, and a subscriber's copies of
// several publishers share one segmented message where the sizes allow —
// each still arrives as its own intact SRTP datagram, in order per stream,
// and only at its own subscriber.
func TestSharedBatchPerDestination(t *testing.T) {
	if !gsoSupported(mustUDP(t)) {
		t.Fatal("this kernel has no UDP_SEGMENT; the test machine must have it")
	}
	r := newSharedRig(t, 3)
	a, b := r.layer(3, 1000), r.layer(3, 2000)
	calls := func() float64 { return testutil.ToFloat64(r.hl.batch.calls) }
	msgs := func() float64 { return testutil.ToFloat64(r.hl.batch.msgsOut) }

	// Keyframes start both streams; nothing leaves before the drain.
	r.feed(a, 100, true, 1100)
	r.feed(b, 500, true, 300)
	require.True(t, r.hl.batch.held())
	require.Zero(t, calls(), "held until the socket is drained")
	r.hl.flush()
	require.Equal(t, 1.0, calls(), "one sendmmsg for everything read in one go")
	require.Equal(t, 3.0, msgs(), "per subscriber one message: [1100, 300]")
	for i := range 3 {
		seqs := r.receive(t, i, 2)
		require.Equal(t, map[uint32][]uint16{1000 + uint32(i): {100}, 2000 + uint32(i): {500}}, seqs, "subscriber %d gets its own copies only", i)
		r.quiet(t, i)
	}

	// a's frame of two full packets with b's packets between them: a's
	// second packet goes before b's shorter first, b's second starts the
	// next message; per stream the order is kept.
	r.feed(a, 101, false, 1100)
	r.feed(b, 501, false, 300)
	r.feed(a, 102, false, 1100)
	r.feed(b, 502, false, 300)
	r.hl.flush()
	require.Equal(t, 2.0, calls())
	require.Equal(t, 3.0+3*2, msgs(), "per subscriber [1100, 1100, 300] and [300]")
	for i := range 3 {
		seqs := r.receive(t, i, 4)
		require.Equal(t, []uint16{101, 102}, seqs[1000+uint32(i)])
		require.Equal(t, []uint16{501, 502}, seqs[2000+uint32(i)])
		r.quiet(t, i)
	}
	require.False(t, r.hl.batch.held())
	r.hl.flush() // nothing held: nothing sent
	require.Equal(t, 2.0, calls())
}

// TestSharedBatchLayerSwitch: a layer that gains gsoKeepMin subscribers
// leaves the shared batch for its own (held to the frame's end); what it
// left in the shared batch is sent first, so its stream stays in order.
func TestSharedBatchLayerSwitch(t *testing.T) {
	r := newSharedRig(t, gsoKeepMin)
	l := r.layer(gsoKeepMin-1, 1000)
	ownOut := mustUDP(t)
	l.batch.out = rawWriter(t, ownOut)
	l.batch.errors = prometheus.NewCounter(prometheus.CounterOpts{Name: "test_errors"})
	l.batch.gso, l.batch.off = true, &gsoSwitch{}
	r.feed(l, 100, true, 1100)
	r.feed(l, 101, false, 1100)
	require.True(t, r.hl.batch.held())
	require.False(t, l.batch.held())

	// One more subscriber: the layer's own batch from now on.
	dt := newDownTrack(r.subs[gsoKeepMin-1], l.t)
	dt.ws, dt.bound, dt.ssrc, dt.pt, dt.clockRate = &nullWriter{buf: make([]byte, 1500)}, true, 1000+gsoKeepMin-1, 96, 90000
	dt.target.Store(0)
	l.t.addDownTrack(dt)
	r.feed(l, 102, true, 1100, true)
	require.False(t, r.hl.batch.held(), "what the layer left in the shared batch went first")
	require.True(t, l.batch.held(), "the frame is held in the layer's own batch")
	r.feed(l, 103, false, 700) // marker: the frame leaves
	require.False(t, l.batch.held())
	seqs := r.receive(t, 0, 4)
	require.Equal(t, []uint16{100, 101, 102, 103}, seqs[1000])
	seqs = r.receive(t, gsoKeepMin-1, 2)
	require.Equal(t, []uint16{102, 103}, seqs[1000+gsoKeepMin-1], "the new subscriber starts at the keyframe")
}

// TestSendBatchStaleSlot: a slot whose epoch matches after the counter
// wrapped around, but whose message is another destination's (or beyond
// the batch), never puts a copy into that message.
func TestSendBatchStaleSlot(t *testing.T) {
	b := &sendBatch{gso: true}
	one := &directDest{ap: netip.MustParseAddrPort("192.0.2.1:5000")}
	two := &directDest{ap: netip.MustParseAddrPort("192.0.2.2:5000")}
	var s1 gsoSlot
	p := b.next()[:1100]
	b.add(p, one, &s1)
	stale := gsoSlot{b: b, epoch: b.epoch, msg: 0} // looks current, is one's
	p = b.next()[:1100]
	b.add(p, two, &stale)
	require.Equal(t, 2, b.n, "two's copy starts a message of its own")
	require.Equal(t, net.Addr(two), b.msgs[1].Addr)
	require.Len(t, b.msgs[0].Buffers, 1)
	beyond := gsoSlot{b: b, epoch: b.epoch, msg: 7}
	p = b.next()[:1100]
	b.add(p, two, &beyond)
	require.Equal(t, 3, b.n)
	p = b.next()[:1100]
	b.add(p, one, &s1) // the real slot still works
	require.Equal(t, 3, b.n)
	require.Len(t, b.msgs[0].Buffers, 2)
}

// TestSendBatchTwoStreams: in a shared batch a larger copy of another
// stream goes before a message's single shorter one, and a full-size copy
// before its shorter last one, so both share the message; copies of one
// stream are never reordered, and the segment limits hold.
func TestSendBatchTwoStreams(t *testing.T) {
	dest := &directDest{ap: netip.MustParseAddrPort("192.0.2.1:5000"), slots: make([]gsoSlot, 1)}
	b := &sendBatch{gso: true, shared: 1}
	pkt := func(ssrc byte, size int) []byte {
		p := b.next()[:size]
		clear(p[:12])
		p[11] = ssrc
		return p
	}
	add := func(ssrc byte, size int) { b.add(pkt(ssrc, size), dest, b.slotFor(dest, nil)) }
	shape := func() (out [][]int) {
		for _, m := range b.msgs[:b.n] {
			var sizes []int
			for _, p := range m.Buffers {
				sizes = append(sizes, int(p[11])*10000+len(p))
			}
			out = append(out, sizes)
		}
		return out
	}
	add(1, 300)  // audio of stream 1
	add(2, 1100) // video of stream 2: larger, another stream, goes first
	require.Equal(t, [][]int{{21100, 10300}}, shape())
	require.Equal(t, 1100, b.segs[0])
	add(2, 1100) // full size: before the shorter last
	require.Equal(t, [][]int{{21100, 21100, 10300}}, shape())
	add(2, 700) // neither full nor first: a new message
	require.Equal(t, [][]int{{21100, 21100, 10300}, {20700}}, shape())
	add(2, 1100) // same stream as the last: never before it
	require.Equal(t, [][]int{{21100, 21100, 10300}, {20700}, {21100}}, shape())
	b.reset()

	add(3, 300)
	add(3, 1100) // same stream, larger: not reordered
	require.Equal(t, [][]int{{30300}, {31100}}, shape())
	b.reset()

	// The segment count limit holds for the reordering too.
	add(1, 1000)
	for range gsoMaxSegments - 2 {
		add(1, 1000)
	}
	add(2, 100)
	add(1, 1000) // the message has gsoMaxSegments: a new one
	require.Equal(t, 2, b.n)
	require.Len(t, b.msgs[0].Buffers, gsoMaxSegments)
}

// FuzzSendBatchGroups: whatever sizes and streams publishers send (both
// are theirs to choose), a shared batch's messages are what the kernel
// segments correctly — every segment but the last of the segment size,
// the last no larger, within the segment and byte limits — every copy is
// in a message to its own destination, and each stream's copies to a
// destination leave in the order they were added. Each input triple is
// (destination, stream, size).
func FuzzSendBatchGroups(f *testing.F) {
	f.Add([]byte{0, 1, 100, 0, 2, 200, 0, 2, 200, 1, 1, 50, 0, 1, 100})
	f.Add([]byte{0, 1, 30, 0, 2, 255, 0, 2, 255, 0, 2, 90, 0, 1, 255})
	f.Fuzz(func(t *testing.T, in []byte) {
		dests := make([]*directDest, 4)
		for i := range dests {
			dests[i] = &directDest{ap: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 5000), slots: make([]gsoSlot, 1)}
		}
		b := &sendBatch{gso: true, shared: 1}
		type key struct {
			dest *directDest
			ssrc byte
		}
		want := map[key][]uint32{}
		var seq uint32
		for ; len(in) >= 3 && b.nbuf < gsoMaxHeld; in = in[3:] {
			d, ssrc, size := dests[in[0]%4], in[1]%4, 12+int(in[2])*5
			p := b.next()[:size]
			clear(p[:12])
			seq++
			p[0], p[1], p[2], p[3] = byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq)
			p[11] = ssrc
			want[key{d, ssrc}] = append(want[key{d, ssrc}], seq)
			b.add(p, d, b.slotFor(d, nil))
		}
		got := map[key][]uint32{}
		for i, m := range b.msgs[:b.n] {
			seg := b.segs[i]
			if len(m.Buffers) > gsoMaxSegments || len(m.Buffers)*seg > gsoMaxBytes {
				t.Fatalf("message %d: %d segments of %d bytes", i, len(m.Buffers), seg)
			}
			for j, p := range m.Buffers {
				if j < len(m.Buffers)-1 && len(p) != seg || len(p) > seg {
					t.Fatalf("message %d segment %d: %d bytes, segment size %d", i, j, len(p), seg)
				}
				d := m.Addr.(*directDest)
				k := key{d, p[11]}
				got[k] = append(got[k], uint32(p[0])<<24|uint32(p[1])<<16|uint32(p[2])<<8|uint32(p[3]))
			}
		}
		require.Equal(t, want, got, "every copy once, at its destination, in order per stream")
	})
}
