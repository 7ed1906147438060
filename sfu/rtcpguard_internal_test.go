package sfu

import (
	"crypto/rand"
	"testing"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// guardPeer is a keyed guard and the peer side's SRTCP context.
func guardPeer(t testing.TB) (*rtcpGuard, *srtp.Context) {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	p := &Participant{s: &Server{metrics: m}}
	k := &fastKeys{profile: srtp.ProtectionProfileAeadAes128Gcm, key: make([]byte, 16), salt: make([]byte, 12)}
	_, _ = rand.Read(k.key)
	_, _ = rand.Read(k.salt)
	g := newRTCPGuard(p)
	require.NoError(t, g.setKeys(k))
	peer, err := srtp.CreateContext(k.key, k.salt, k.profile)
	require.NoError(t, err)
	return g, peer
}

func sealRTCP(t testing.TB, peer *srtp.Context, pkts ...rtcp.Packet) []byte {
	t.Helper()
	b, err := rtcp.Marshal(pkts)
	require.NoError(t, err)
	out, err := peer.EncryptRTCP(nil, b, nil)
	require.NoError(t, err)
	return out
}

// The guard takes a connection's RTCP while its distinct SSRCs
// stay within budget, drops a datagram that would exceed it (forgetting
// what that datagram named, so known SSRCs still pass), drops a new sender
// SSRC over budget before decrypting it, and drops forgeries and replays.
func TestRTCPGuard(t *testing.T) {
	g, peer := guardPeer(t)
	drops := func(reason string) float64 {
		return testutil.ToFloat64(g.p.s.metrics.rtcpDrops.WithLabelValues(reason))
	}
	require.Equal(t, rtcpSSRCBase, g.budget())

	// Within budget: sender 1 and 14 media SSRCs = 15 of 16.
	for i := uint32(0); i < 14; i++ {
		require.Equal(t, rtcpHandled, g.check(sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 100 + i})))
	}
	require.Len(t, g.seen, 15)
	// One datagram naming two new SSRCs would make 17: dropped, both forgotten.
	require.Equal(t, rtcpDropped, g.check(sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 500},
		&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 501})))
	require.Len(t, g.seen, 15)
	require.EqualValues(t, 1, drops("ssrc_budget"))
	// One more fits; known ones keep passing.
	require.Equal(t, rtcpHandled, g.check(sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 500})))
	require.Equal(t, rtcpHandled, g.check(sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 100})))
	// A new sender over budget: dropped without decrypting.
	require.Equal(t, rtcpDropped, g.check(sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 2, MediaSSRC: 100})))
	require.EqualValues(t, 2, drops("ssrc_budget"))
	// Streams raise the budget.
	g.p.rtcpStreams.Add(1)
	require.Equal(t, rtcpHandled, g.check(sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 2, MediaSSRC: 100})))

	// A forgery (another key) and a replay are dropped as authentication failures.
	_, other := guardPeer(t)
	require.Equal(t, rtcpDropped, g.check(sealRTCP(t, other, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 100})))
	pkt := sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 100})
	orig := append([]byte(nil), pkt...)
	require.Equal(t, rtcpHandled, g.check(pkt))
	require.Equal(t, orig, pkt, "the datagram is not changed")
	require.Equal(t, rtcpDropped, g.check(pkt), "replay")
	require.EqualValues(t, 2, drops("authentication"))

	// Without keys (DTLS not connected yet) pion decides.
	g2, _ := guardPeer(t)
	g2.ctx = nil
	require.Equal(t, rtcpPass, g2.check(pkt))
}

// subscriberTracks binds two video downtracks of the guard's participant
// (SSRCs 7 and 8, of two publishers' tracks) and forwards 20 packets on
// each, so both can retransmit and have a layer to ask keyframes for.
func subscriberTracks(t testing.TB, g *rtcpGuard) (dts [2]*downTrack, ws [2]*captureWriter, ls [2]*layerRecv) {
	t.Helper()
	for i := range dts {
		l, _ := benchTrack(0)
		l.onKeyframe = func(int) {}
		dt := newDownTrack(g.p, l.t)
		w := &captureWriter{}
		dt.ws, dt.bound, dt.ssrc, dt.pt, dt.clockRate = w, true, uint32(7+i), 96, 90000
		dt.target.Store(0)
		l.t.addDownTrack(dt)
		g.p.setSendTrack(dt.ssrc, dt)
		var h rtp.Header
		for seq := 0; seq < 20; seq++ {
			l.handle(vp8Packet(uint16(500+seq), seq == 0, 300), &h)
		}
		require.Len(t, w.hdrs, 20)
		dts[i], ws[i], ls[i] = dt, w, l
	}
	return dts, ws, ls
}

// The guard acts on the RTCP it lets through, for the downtracks each
// packet names, and keeps the datagram from pion: one
// compound of a receiver report about both tracks, a NACK for the first,
// a PLI for the second and a REMB retransmits only the first's packet,
// asks only the second's publisher for a keyframe, records each track's
// own loss and the estimate. The per-downtrack reader (pion's path) acts
// only on what names its own SSRC.
func TestRTCPGuardHandlesSubscriberRTCP(t *testing.T) {
	g, peer := guardPeer(t)
	dts, ws, ls := subscriberTracks(t, g)
	lost := ws[0].hdrs[7].SequenceNumber
	plis := [2]uint64{ls[0].plis.Load(), ls[1].plis.Load()}
	pkt := sealRTCP(t, peer,
		&rtcp.ReceiverReport{SSRC: 99, Reports: []rtcp.ReceptionReport{{SSRC: 7, FractionLost: 64}, {SSRC: 8, FractionLost: 128}}},
		&rtcp.TransportLayerNack{SenderSSRC: 99, MediaSSRC: 7, Nacks: []rtcp.NackPair{{PacketID: lost}}},
		&rtcp.PictureLossIndication{SenderSSRC: 99, MediaSSRC: 8},
		&rtcp.ReceiverEstimatedMaximumBitrate{SenderSSRC: 99, Bitrate: 300_000, SSRCs: []uint32{7, 8}},
	)
	require.Equal(t, rtcpHandled, g.check(pkt))

	require.Len(t, ws[0].hdrs, 21)
	require.Equal(t, lost, ws[0].hdrs[20].SequenceNumber)
	require.Len(t, ws[1].hdrs, 20, "the NACK named the other track")
	require.Equal(t, plis[0], ls[0].plis.Load(), "the PLI named the other track")
	require.Equal(t, plis[1]+1, ls[1].plis.Load())
	for i, want := range []float64{0.25, 0.5} {
		frac, ok := dts[i].lossFraction()
		require.True(t, ok)
		require.InDelta(t, want, frac, 1e-9)
	}
	require.EqualValues(t, 300_000, g.p.remb.Load())
	require.NotZero(t, g.p.rembAt.Load())

	// pion's path: the second track's reader ignores the first's NACK.
	g.p.onRTCP(&rtcp.TransportLayerNack{MediaSSRC: 7, Nacks: []rtcp.NackPair{{PacketID: ws[0].hdrs[9].SequenceNumber}}}, dts[1])
	require.Len(t, ws[0].hdrs, 21)
	require.Len(t, ws[1].hdrs, 20)
	g.p.onRTCP(&rtcp.TransportLayerNack{MediaSSRC: 8, Nacks: []rtcp.NackPair{{PacketID: ws[1].hdrs[9].SequenceNumber}}}, dts[1])
	require.Len(t, ws[1].hdrs, 21)

	// An unbound downtrack is no longer found; a rebind of its SSRC by
	// another downtrack is not undone by the old one's removal.
	g.p.removeSendTrack(7, dts[0])
	require.Equal(t, rtcpHandled, g.check(sealRTCP(t, peer, &rtcp.TransportLayerNack{SenderSSRC: 99, MediaSSRC: 7, Nacks: []rtcp.NackPair{{PacketID: ws[0].hdrs[11].SequenceNumber}}})))
	require.Len(t, ws[0].hdrs, 21)
	g.p.setSendTrack(7, dts[1])
	g.p.removeSendTrack(7, dts[0])
	require.Same(t, dts[1], g.p.sendTrack(7))

	// A sender report (a client sending and receiving on one connection)
	// carries reception reports like a receiver report, and its sender
	// info goes to the connection's receiver reports.
	fb := &feedbackInterceptor{streams: map[uint32]*recvStream{55: {}}}
	g.p.recv = &pubRecv{}
	g.p.recv.fb.Store(fb)
	require.Equal(t, rtcpHandled, g.check(sealRTCP(t, peer, &rtcp.SenderReport{SSRC: 55, NTPTime: 0x1122334455667788, Reports: []rtcp.ReceptionReport{{SSRC: 8, FractionLost: 32}}})))
	frac, _ := dts[1].lossFraction()
	require.InDelta(t, 0.125, frac, 1e-9)
	require.True(t, fb.streams[55].stats.haveSR)
	require.EqualValues(t, 0x33445566, fb.streams[55].stats.lastSR)
}

// FuzzRTCPGuard: whatever authentic RTCP a peer sends, the guard does not
// panic, never lets the connection's SSRCs exceed its budget, and leaves
// the datagram unchanged; with downtracks and a publisher's receive
// statistics, it acts on it (retransmissions, keyframe requests,
// estimates, sender reports) without panicking.
func FuzzRTCPGuard(f *testing.F) {
	f.Add([]byte{0x81, 0xc9, 0x00, 0x07, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false)
	f.Add([]byte{0x81, 0xce, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 9}, true)
	f.Add([]byte{0x81, 0xcd, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0, 7, 0x01, 0xf4, 0xff, 0xff}, true)
	f.Fuzz(func(t *testing.T, plain []byte, handle bool) {
		g, peer := guardPeer(t)
		if len(plain) < 8 {
			return
		}
		if handle {
			subscriberTracks(t, g)
			g.p.recv = &pubRecv{}
			g.p.recv.fb.Store(&feedbackInterceptor{streams: map[uint32]*recvStream{1: {}, 7: {}}})
		}
		for i := 0; i < 3; i++ {
			pkt, err := peer.EncryptRTCP(nil, plain, nil)
			if err != nil {
				return
			}
			orig := append([]byte(nil), pkt...)
			g.check(pkt)
			require.Equal(t, orig, pkt)
			require.LessOrEqual(t, len(g.seen), g.budget())
			plain[len(plain)-1]++
		}
	})
}
