package sfu

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// nullWriter stands in for pion's SRTP write stream: it marshals the
// packet like pion does, so header handling is included in the cost.
type nullWriter struct {
	buf     []byte
	packets int
}

func (w *nullWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	n, err := rtp.MarshalPacketTo(w.buf, h, payload) //nolint:staticcheck
	w.packets++
	return n, err
}

func (w *nullWriter) Write(b []byte) (int, error) { return len(b), nil }

// benchTrack builds a video track with one live layer and n bound
// downtracks writing to null writers.
func benchTrack(n int) (*layerRecv, []*nullWriter) {
	t := newPublishedTrack(&Participant{s: &Server{cfg: DefaultConfig()}}, &livekit.TrackInfo{Sid: "TR_bench"}, "c", webrtc.RTPCodecTypeVideo)
	t.live = true
	t.codec = webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}
	l := &layerRecv{t: t, idx: 0, cache: newPacketCache(256), isKey: isVP8Keyframe}
	l.live.Store(true)
	t.layers[0] = l
	var ws []*nullWriter
	for i := 0; i < n; i++ {
		dt := newDownTrack(&Participant{s: t.owner.s}, t)
		w := &nullWriter{buf: make([]byte, 1500)}
		dt.ws, dt.bound, dt.ssrc, dt.pt, dt.clockRate = w, true, uint32(1000+i), 96, 90000
		dt.target.Store(0)
		t.addDownTrack(dt)
		ws = append(ws, w)
	}
	return l, ws
}

func vp8Packet(seq uint16, key bool, size int) []byte {
	h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, SSRC: 1234, Marker: true}
	p := make([]byte, size)
	p[0], p[1], p[2], p[3] = 0x90, 0x80, 0x80|byte(seq>>8), byte(seq) // X, S; I with 15-bit picture id
	if !key {
		p[4] = 0x01
	}
	out, _ := rtp.Packet{Header: h, Payload: p}.Marshal()
	return out
}

// BenchmarkForward measures the SFU's own per-packet work for one
// incoming video packet fanned out to n subscribers (SRTP and the socket
// write excluded); ns/op divided by n is the cost per forwarded packet.
func BenchmarkForward(b *testing.B) {
	for _, n := range []int{1, 10, 150} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			l, ws := benchTrack(n)
			pkts := make([][]byte, 1024)
			for i := range pkts {
				pkts[i] = vp8Packet(uint16(i), i == 0, 1100)
			}
			buf := make([]byte, 1500)
			var h rtp.Header
			l.handle(append(buf[:0], pkts[0]...), &h) // keyframe starts forwarding
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				p := pkts[1+i%1023]
				l.handle(append(buf[:0], p...), &h)
			}
			el := time.Since(start)
			b.ReportMetric(float64(el.Nanoseconds())/float64(b.N*n), "ns/fwd")
			if ws[0].packets < b.N {
				b.Fatalf("forwarded %d of %d", ws[0].packets, b.N)
			}
		})
	}
}

// BenchmarkForwardDirect is BenchmarkForward on the direct send path:
// SRTP (AES-128-GCM, as browsers negotiate) by the SFU and one sendmmsg
// per incoming packet to a loopback UDP sink, so ns/fwd is the whole
// per-packet cost of a forwarded copy on this machine, kernel included.
func BenchmarkForwardDirect(b *testing.B) {
	for _, n := range []int{1, 10, 150} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			l, ws, pkts := directTrack(b, n)
			buf := make([]byte, 1500)
			var h rtp.Header
			l.handle(append(buf[:0], pkts[0]...), &h)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				p := pkts[1+i%1023]
				l.handle(append(buf[:0], p...), &h)
			}
			el := time.Since(start)
			b.ReportMetric(float64(el.Nanoseconds())/float64(b.N*n), "ns/fwd")
			if direct := directCopies(l); direct < uint64(b.N*n) || ws[0].packets != 0 {
				b.Fatalf("direct %d of %d, pion path %d", direct, b.N*n, ws[0].packets)
			}
		})
	}
}

// directTrack is benchTrack on the direct send path: n downtracks whose
// subscribers have AES-128-GCM keys and a loopback UDP sink as their
// address, sent through a raw socket; with 1024 VP8 packets, the first a
// keyframe.
func directTrack(tb testing.TB, n int) (*layerRecv, []*nullWriter, [][]byte) {
	tb.Helper()
	l, ws := benchTrack(n)
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = src.Close() })
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sink.Close() })
	l.batch.out = rawWriter(tb, src)
	l.batch.errors = prometheus.NewCounter(prometheus.CounterOpts{Name: "bench_errors"})
	key, salt := make([]byte, 16), make([]byte, 12)
	keys := &fastKeys{profile: srtp.ProtectionProfileAeadAes128Gcm, key: key, salt: salt}
	dest := &directDest{ap: sink.LocalAddr().(*net.UDPAddr).AddrPort()}
	for _, dt := range *l.t.dts.Load() {
		dt.sub.fastKeys.Store(keys)
		dt.sub.direct.Store(dest)
	}
	pkts := make([][]byte, 1024)
	for i := range pkts {
		pkts[i] = vp8Packet(uint16(i), i == 0, 1100)
	}
	return l, ws, pkts
}

// directCopies is how many copies l's downtracks sent on the direct path.
func directCopies(l *layerRecv) uint64 {
	var direct uint64
	for _, dt := range *l.t.dts.Load() {
		direct += dt.direct
	}
	return direct
}

// TestForwardDirectAllocationFree: forwarding a packet on the direct send
// path — header rewrite, VP8 munging, SFU-side SRTP, sendmmsg — allocates
// nothing, whatever the number of subscribers. (The sealer's nonce once
// escaped to the heap through the AEAD interface: one allocation per copy.)
func TestForwardDirectAllocationFree(t *testing.T) {
	for _, n := range []int{1, 10} {
		l, ws, pkts := directTrack(t, n)
		buf := make([]byte, 1500)
		var h rtp.Header
		l.handle(append(buf[:0], pkts[0]...), &h)
		i := 0
		allocs := testing.AllocsPerRun(200, func() {
			i++
			l.handle(append(buf[:0], pkts[1+i%1023]...), &h)
		})
		if allocs != 0 {
			t.Errorf("subs=%d: %.2f allocations per incoming packet, want 0", n, allocs)
		}
		if direct := directCopies(l); direct < uint64(200*n) || ws[0].packets != 0 {
			t.Fatalf("subs=%d: direct %d of %d, pion path %d", n, direct, 200*n, ws[0].packets)
		}
	}
}
