package sfu

import (
	"encoding/binary"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// gsoRig is a publisher layer fanned out to n direct-path subscribers
// whose copies go to one loopback sink.
type gsoRig struct {
	l    *layerRecv
	sink *net.UDPConn
	keys *fastKeys
	tpl  map[[2]int][]byte
	buf  []byte
	h    rtp.Header
	hl   *heldLayers // set: packets come by the direct receive path
}

func newGSORig(t *testing.T, n int, gso bool) *gsoRig { return newGSORigB(t, n, gso) }

func newGSORigB(t testing.TB, n int, gso bool) *gsoRig {
	t.Helper()
	l, _ := benchTrack(n)
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = src.Close() })
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sink.Close() })
	require.NoError(t, sink.SetReadBuffer(4<<20))
	l.hold = true
	l.batch.out = rawWriter(t, src)
	l.batch.errors = prometheus.NewCounter(prometheus.CounterOpts{Name: "test_errors"})
	l.batch.msgsOut = prometheus.NewCounter(prometheus.CounterOpts{Name: "test_messages"})
	l.batch.calls = prometheus.NewCounter(prometheus.CounterOpts{Name: "test_calls"})
	l.batch.gso = gso
	l.batch.off = &gsoSwitch{}
	keys := &fastKeys{profile: srtp.ProtectionProfileAeadAes128Gcm, key: make([]byte, 16), salt: make([]byte, 12)}
	keys.key[0] = 7
	dest := &directDest{ap: sink.LocalAddr().(*net.UDPAddr).AddrPort()}
	for _, dt := range *l.t.dts.Load() {
		dt.sub.fastKeys.Store(keys)
		dt.sub.direct.Store(dest)
	}
	return &gsoRig{l: l, sink: sink, keys: keys, tpl: map[[2]int][]byte{}, buf: make([]byte, 1500)}
}

// frame feeds one video frame of sizes (payload bytes), the marker on the
// last packet unless noMarker. Packets are built from per-size templates
// (sequence number, timestamp and marker patched in), so feeding allocates
// nothing.
func (r *gsoRig) frame(seq *uint16, ts uint32, key, noMarker bool, sizes ...int) {
	for i, size := range sizes {
		start := key && i == 0
		k := [2]int{size, map[bool]int{true: 1, false: 0}[start]}
		tpl := r.tpl[k]
		if tpl == nil {
			tpl = vp8Packet(0, start, size)
			if i > 0 {
				tpl[12] &^= 0x10 // continuation: no start-of-partition bit
			}
			r.tpl[k] = tpl
		}
		p := append(r.buf[:0], tpl...)
		binary.BigEndian.PutUint16(p[2:], *seq)
		binary.BigEndian.PutUint32(p[4:], ts)
		p[1] &^= 0x80
		if i == len(sizes)-1 && !noMarker {
			p[1] |= 0x80
		}
		if r.hl != nil {
			r.l.deliver(p, &r.h, r.hl)
		} else {
			r.l.handle(p, &r.h)
		}
		*seq++
	}
}

// receive reads want datagrams from the sink and decrypts them; it returns
// the sequence numbers per SSRC and the datagram sizes.
func (r *gsoRig) receive(t *testing.T, want int) (map[uint32][]uint16, []int) {
	t.Helper()
	return readSRTP(t, r.sink, r.keys, want)
}

// readSRTP reads want datagrams from sink, decrypts each as one SRTP
// packet with keys (a context per SSRC) and returns the sequence numbers
// per SSRC and the datagram sizes.
func readSRTP(t *testing.T, sink *net.UDPConn, keys *fastKeys, want int) (map[uint32][]uint16, []int) {
	t.Helper()
	ctxs := map[uint32]*srtp.Context{}
	seqs := map[uint32][]uint16{}
	var sizes []int
	buf := make([]byte, 1500)
	require.NoError(t, sink.SetReadDeadline(time.Now().Add(10*time.Second)))
	for range want {
		n, err := sink.Read(buf)
		require.NoError(t, err)
		sizes = append(sizes, n)
		var h rtp.Header
		_, err = h.Unmarshal(buf[:n])
		require.NoError(t, err)
		c := ctxs[h.SSRC]
		if c == nil {
			c, err = srtp.CreateContext(keys.key, keys.salt, keys.profile)
			require.NoError(t, err)
			ctxs[h.SSRC] = c
		}
		var dh rtp.Header
		_, err = c.DecryptRTP(nil, buf[:n], &dh)
		require.NoError(t, err, "every datagram is one intact SRTP packet")
		seqs[h.SSRC] = append(seqs[h.SSRC], dh.SequenceNumber)
	}
	return seqs, sizes
}

// TestGSOSendsFramesSegmented: with segmentation offload each subscriber's
// copies of a video frame leave as one segmented message, and the
// subscriber receives them as separate, intact SRTP datagrams in order; a
// frame whose last packet was lost is sent when the next frame starts; a
// packet of another size starts a new message. Without offload (or where
// the kernel lacks it) every copy is its own message and arrives the same.
func TestGSOSendsFramesSegmented(t *testing.T) {
	for _, gso := range []bool{true, false} {
		t.Run(map[bool]string{true: "gso", false: "sendmmsg"}[gso], func(t *testing.T) {
			if gso && !gsoSupported(mustUDP(t)) {
				t.Fatal("this kernel has no UDP_SEGMENT; the test machine must have it")
			}
			r := newGSORig(t, 3, gso)
			seq := uint16(100)
			r.frame(&seq, 3000, true, false, 1100)                         // keyframe starts forwarding
			r.frame(&seq, 6000, false, false, 1100, 1100, 1100, 1100, 700) // 5 packets
			seqs, sizes := r.receive(t, 3*6)
			for ssrc, s := range seqs {
				require.Equal(t, []uint16{s[0], s[0] + 1, s[0] + 2, s[0] + 3, s[0] + 4, s[0] + 5}, s, "ssrc %d in order", ssrc)
			}
			require.Len(t, seqs, 3)
			require.Contains(t, sizes, 700+12+16, "the short last packet arrives at its own size (RTP header, GCM tag)")
			if gso {
				require.EqualValues(t, 3, r.l.batch.segmented, "one segmented message per subscriber for the 5-packet frame")
			} else {
				require.Zero(t, r.l.batch.segmented)
			}
			// The metrics count what the kernel was handed: one call per
			// frame (segmented) or per packet, and per subscriber one
			// message for the keyframe and one (segmented) or five for the
			// second frame.
			require.Equal(t, map[bool]float64{true: 2, false: 6}[gso], testutil.ToFloat64(r.l.batch.calls))
			require.Equal(t, map[bool]float64{true: 3 + 3, false: 3 + 15}[gso], testutil.ToFloat64(r.l.batch.msgsOut))

			// The marker of this frame is lost: its copies wait for the next
			// frame's first packet, then go out before it.
			r.frame(&seq, 9000, false, true, 1100, 1100)
			require.True(t, r.l.batch.held() == gso, "held until the frame ends")
			r.frame(&seq, 12000, false, false, 1100)
			seqs, _ = r.receive(t, 3*3)
			for _, s := range seqs {
				require.Equal(t, []uint16{s[0], s[0] + 1, s[0] + 2}, s)
			}
			// Sizes that differ mid-frame still arrive intact.
			r.frame(&seq, 15000, false, false, 1100, 900, 1100, 1100)
			seqs, _ = r.receive(t, 3*4)
			for _, s := range seqs {
				require.Len(t, s, 4)
			}
			require.False(t, r.l.batch.held())
		})
	}
}

// TestHeldFramesFlushedWhenDrained: on the direct receive path a frame's
// copies held for its next packet are sent when the socket reader has read
// everything queued (heldLayers.flush), not at a timer; a frame that ends
// in the packets read leaves nothing held. From gsoKeepMin subscribers the
// frame is kept held until it ends.
func TestHeldFramesFlushedWhenDrained(t *testing.T) {
	r := newGSORig(t, 3, true)
	r.hl = &heldLayers{}
	seq := uint16(100)
	r.frame(&seq, 3000, true, false, 1100)
	r.receive(t, 3)
	require.Empty(t, r.hl.ls, "a whole frame is sent at its marker")

	r.frame(&seq, 6000, false, true, 1100, 1100) // the rest is not read yet
	require.True(t, r.l.batch.held())
	require.Equal(t, []*layerRecv{r.l}, r.hl.ls)
	r.frame(&seq, 6000, false, true, 1100) // more of it, still held, noted once
	require.Len(t, r.hl.ls, 1)
	r.hl.flush()
	require.False(t, r.l.batch.held())
	require.Empty(t, r.hl.ls)
	require.Nil(t, r.l.heldBy)
	seqs, _ := r.receive(t, 3*3)
	for _, s := range seqs {
		require.Equal(t, []uint16{s[0], s[0] + 1, s[0] + 2}, s)
	}
	require.EqualValues(t, 3, r.l.batch.segmented, "the held packets went as one message per subscriber")
	r.hl.flush() // nothing noted: nothing sent
	require.False(t, r.l.batch.held())

	// With many subscribers the frame stays held over a drained socket
	// (the read deadline bounds it) and leaves at its marker.
	big := newGSORig(t, gsoKeepMin, true)
	big.hl = &heldLayers{}
	seq = 100
	big.frame(&seq, 3000, true, false, 1100)
	big.receive(t, gsoKeepMin)
	big.frame(&seq, 6000, false, true, 1100, 1100)
	require.Empty(t, big.hl.ls)
	big.hl.flush()
	require.True(t, big.l.batch.held(), "not flushed at the drain")
	big.frame(&seq, 6000, false, false, 1100)
	require.False(t, big.l.batch.held())
	seqs, _ = big.receive(t, gsoKeepMin*3)
	require.Len(t, seqs, gsoKeepMin)
	require.EqualValues(t, gsoKeepMin, big.l.batch.segmented, "one message per subscriber for the whole frame")
}

func mustUDP(t *testing.T) *net.UDPConn {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// BenchmarkForwardFrames forwards 5-packet video frames (marker on the
// last) to n direct-path subscribers, one message per copy (sendmmsg) or
// one segmented message per subscriber and frame (gso); ns/fwd is the
// whole cost per forwarded copy, SRTP and kernel included.
func BenchmarkForwardFrames(b *testing.B) {
	for _, mode := range []string{"sendmmsg", "gso"} {
		for _, n := range []int{10, 150} {
			b.Run(mode+"/subs="+strconv.Itoa(n), func(b *testing.B) {
				r := newGSORigB(b, n, mode == "gso")
				seq := uint16(0)
				r.frame(&seq, 0, true, false, 1100)
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for i := 0; i < b.N; i++ {
					r.frame(&seq, uint32(i+1)*3000, false, false, 1100, 1100, 1100, 1100, 700)
				}
				el := time.Since(start)
				b.ReportMetric(float64(el.Nanoseconds())/float64(b.N*5*n), "ns/fwd")
				if mode == "gso" && r.l.batch.segmented < uint64(b.N*n) {
					b.Fatalf("segmented %d, want %d", r.l.batch.segmented, b.N*n)
				}
			})
		}
	}
}
