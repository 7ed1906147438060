package sfu

import (
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// seenCounter is a receive interceptor between the direct path's taps: it
// counts the packets the chain carries, as pion's NACK, report and TWCC
// interceptors see them.
type seenCounter struct {
	interceptor.NoOp
	seqs []uint16
}

func (c *seenCounter) BindRemoteStream(_ *interceptor.StreamInfo, r interceptor.RTPReader) interceptor.RTPReader {
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, a, err := r.Read(b, a)
		if err == nil {
			h, herr := a.GetRTPHeader(b[:n])
			if herr == nil {
				c.seqs = append(c.seqs, h.SequenceNumber)
			}
		}
		return n, a, err
	})
}

// TestDirectReceive: the socket reader's hook takes a known publisher's
// SRTP from its selected address, decrypts it, runs it through the
// connection's interceptor chain (never reading pion's stream) and
// forwards it; everything else is left to pion, and replayed or forged
// packets are consumed and dropped, never forwarded.
func TestDirectReceive(t *testing.T) {
	// The connection's chain: inner tap, a counting interceptor, outer tap;
	// pion's own stream must never be read for taken-over packets.
	var pionReads atomic.Int32
	seen := &seenCounter{}
	d := newDirectRecvRig(t, 2, func() { pionReads.Add(1) }, seen)
	r, m, s, pr, chain, pub, enc := d.r, d.m, d.s, d.pr, d.chain, d.pub, d.enc
	from := netip.MustParseAddrPort("192.0.2.7:5004")
	packet := func(seq uint16, ssrc uint32, tag byte) []byte {
		p := vp8Packet(seq, seq == 100, 300)
		p[8], p[9], p[10], p[11] = byte(ssrc>>24), byte(ssrc>>16), byte(ssrc>>8), byte(ssrc)
		p[len(p)-1] = tag
		out, err := enc.EncryptRTP(nil, p, nil)
		require.NoError(t, err)
		return out
	}
	read, idle := s.readHooks()
	hook := func(p []byte, from netip.AddrPort) bool {
		took := read(append([]byte(nil), p...), from)
		idle() // the socket is drained after each datagram
		return took
	}
	drops := func() float64 { return testutil.ToFloat64(m.recvDrops) }
	// expect reads the subscribers' two copies and checks their payload tag.
	expect := func(tag byte) {
		t.Helper()
		require.NoError(t, r.sink.SetReadDeadline(time.Now().Add(5*time.Second)))
		for range 2 {
			buf := make([]byte, 1500)
			n, err := r.sink.Read(buf)
			require.NoError(t, err)
			var h rtp.Header
			_, err = h.Unmarshal(buf[:n])
			require.NoError(t, err)
			dec, err := srtp.CreateContext(r.keys.key, r.keys.salt, r.keys.profile)
			require.NoError(t, err)
			plain, err := dec.DecryptRTP(nil, buf[:n], nil)
			require.NoError(t, err)
			require.Equal(t, tag, plain[len(plain)-1], "copy of the packet tagged %d", tag)
		}
	}

	first := packet(100, 1234, 1)
	require.False(t, hook(first, from), "no keys, no address: pion's")
	pr.addLayer(r.l)
	require.NoError(t, pr.setKeys(pub))
	require.False(t, hook(first, from), "keys but no selected address yet: pion's")
	pr.setAddr(netip.MustParseAddrPort("[::ffff:192.0.2.7]:5004"), true) // mapped form, as an AF_INET6 socket reports it
	require.False(t, hook(first, netip.MustParseAddrPort("192.0.2.8:5004")), "another source: pion's")
	require.False(t, hook(packet(101, 999, 9), from), "an SSRC not taken over: pion's")
	rtcpLike := append([]byte(nil), first...)
	rtcpLike[1] = 200 // SR
	require.False(t, hook(rtcpLike, from), "RTCP: pion's")
	require.False(t, hook([]byte{0, 1, 0, 0}, from), "STUN: pion's")

	require.True(t, hook(first, from))
	expect(1)
	require.Equal(t, []uint16{100}, seen.seqs, "the interceptors saw the packet")
	require.True(t, hook(first, from), "a replay is consumed")
	require.EqualValues(t, 1, drops(), "and dropped")
	forged := packet(102, 1234, 3)
	forged[len(forged)-20] ^= 0x40
	require.True(t, hook(forged, from))
	require.EqualValues(t, 2, drops(), "a forged packet is dropped")
	require.True(t, hook(packet(103, 1234, 4), from))
	expect(4) // the next copies are 4's: neither the replay nor the forgery went out
	require.Equal(t, []uint16{100, 103}, seen.seqs)
	require.EqualValues(t, 2, r.l.direct.Load())
	require.Zero(t, pionReads.Load())

	// Unbinding the stream (pion removed it) gives it back until a layer
	// takes it again; closing the connection gives everything back.
	chain.UnbindRemoteStream(&interceptor.StreamInfo{SSRC: 1234})
	require.False(t, hook(packet(104, 1234, 5), from))
	chain.BindRemoteStream(&interceptor.StreamInfo{SSRC: 1234}, interceptor.RTPReaderFunc(func([]byte, interceptor.Attributes) (int, interceptor.Attributes, error) {
		return 0, nil, errors.New("unused")
	}))
	require.False(t, hook(packet(105, 1234, 6), from), "bound but no layer")
	pr.addLayer(r.l)
	require.True(t, hook(packet(106, 1234, 6), from))
	expect(6)
	pr.close()
	require.False(t, hook(packet(107, 1234, 7), from), "closed: pion's")
	require.Zero(t, s.recvAddrs.len())
}

// TestRawSocketReadHook: datagrams the hook consumes are not returned;
// the read goes on to the next one.
func TestRawSocketReadHook(t *testing.T) {
	raw, conn := listenRaw(t, "udp4", net.IPv4(127, 0, 0, 1))
	raw.SetReadHook(func(p []byte, from netip.AddrPort) bool { return string(p) == "take" })
	peer, err := net.DialUDP("udp4", nil, conn.LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	defer peer.Close()
	for _, m := range []string{"a", "take", "take", "b"} {
		_, err := peer.Write([]byte(m))
		require.NoError(t, err)
	}
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 100)
	for _, want := range []string{"a", "b"} {
		n, from, err := raw.ReadFromAddrPort(buf)
		require.NoError(t, err)
		require.Equal(t, want, string(buf[:n]))
		require.Equal(t, peer.LocalAddr().(*net.UDPAddr).AddrPort(), from)
	}
}

// FuzzDirectReceive: any datagram from a publisher's registered address —
// what an attacker who spoofs that address can send — goes through the
// read hook. Properties: no panic; the hook takes exactly the datagrams
// that look like RTP of a taken-over SSRC (everything else is pion's);
// it forwards exactly those that an independent pion SRTP context with
// the same keys and replay window accepts, so forgeries and replays never
// reach a subscriber.
func FuzzDirectReceive(f *testing.F) {
	d := newDirectRecvRig(f, 1, func() {})
	r, s, pr, pub, enc := d.r, d.s, d.pr, d.pub, d.enc
	check, err := srtp.CreateContext(pub.key, pub.salt, pub.profile, srtp.SRTPReplayProtection(srtpReplayWindow), srtp.Cryptex(srtp.CryptexModeEnabled))
	require.NoError(f, err)
	from := netip.MustParseAddrPort("192.0.2.7:5004")
	pr.addLayer(r.l)
	require.NoError(f, pr.setKeys(pub))
	pr.setAddr(from, true)

	for seq := uint16(1); seq <= 4; seq++ {
		p := vp8Packet(seq, seq == 1, 40+int(seq))
		p[8], p[9], p[10], p[11] = 0, 0, 0x04, 0xd2 // SSRC 1234
		out, err := enc.EncryptRTP(nil, p, nil)
		require.NoError(f, err)
		f.Add(out)
	}
	f.Add([]byte{0x80, 0xc8, 0, 6, 0, 0, 4, 0xd2, 1, 2, 3, 4})          // RTCP SR
	f.Add([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42})       // STUN
	f.Add([]byte{0x80, 0x60, 0, 9, 0, 0, 0, 1, 0, 0, 0x04, 0xd2, 0xff}) // forged
	f.Add([]byte{0x80})

	hl := &heldLayers{}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		pre := len(pkt) >= 12 && pkt[0]&0xc0 == 0x80 && (pkt[1]&0x7f < 64 || pkt[1]&0x7f > 95) &&
			pkt[8] == 0 && pkt[9] == 0 && pkt[10] == 0x04 && pkt[11] == 0xd2
		want := false
		if pre {
			_, err := check.DecryptRTP(nil, append([]byte(nil), pkt...), nil)
			want = err == nil
		}
		before := r.l.direct.Load()
		took := s.readHook(append([]byte(nil), pkt...), from, hl)
		hl.flush()
		if took != pre {
			t.Fatalf("hook took=%v for a datagram that is RTP of the taken-over SSRC: %v", took, pre)
		}
		if got := r.l.direct.Load() - before; got != map[bool]uint64{true: 1, false: 0}[want] {
			t.Fatalf("forwarded %d, pion's context accepts the packet: %v", got, want)
		}
	})
}

// directRecvRig is a publisher connection on the direct receive path
// before it is keyed: a forwarding rig (gso_test.go) whose layer is SSRC
// 1234, a server with metrics, the connection's interceptor chain for
// that SSRC (inner tap, mid, outer tap; a read of pion's own stream calls
// pionRead and fails) and the publisher's fresh SRTP keys with a context
// that encrypts as the publisher does.
type directRecvRig struct {
	r     *gsoRig
	m     *metrics
	s     *Server
	pr    *pubRecv
	chain *interceptor.Chain
	pub   *fastKeys
	enc   *srtp.Context
}

func newDirectRecvRig(tb testing.TB, subs int, pionRead func(), mid ...interceptor.Interceptor) *directRecvRig {
	tb.Helper()
	d := &directRecvRig{r: newGSORigB(tb, subs, false)}
	d.r.l.ssrc = 1234
	var err error
	d.m, err = newMetrics(prometheus.NewRegistry())
	require.NoError(tb, err)
	d.s = &Server{metrics: d.m}
	d.pr = newPubRecv(d.s)
	inner, outer := d.pr.interceptors()
	ii, _ := inner.NewInterceptor("")
	oi, _ := outer.NewInterceptor("")
	d.chain = interceptor.NewChain(append(append([]interceptor.Interceptor{ii}, mid...), oi))
	d.chain.BindRemoteStream(&interceptor.StreamInfo{SSRC: 1234}, interceptor.RTPReaderFunc(func([]byte, interceptor.Attributes) (int, interceptor.Attributes, error) {
		pionRead()
		return 0, nil, errors.New("pion's stream read")
	}))
	key, salt := make([]byte, 16), make([]byte, 12)
	_, _ = rand.Read(key)
	_, _ = rand.Read(salt)
	d.pub = &fastKeys{profile: srtp.ProtectionProfileAeadAes128Gcm, key: key, salt: salt}
	d.enc, err = srtp.CreateContext(key, salt, d.pub.profile)
	require.NoError(tb, err)
	return d
}
