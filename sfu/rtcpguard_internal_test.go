package sfu

import (
	"crypto/rand"
	"testing"

	"github.com/pion/rtcp"
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

// The guard lets a connection's RTCP through while its distinct SSRCs
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
		require.False(t, g.check(sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 100 + i})))
	}
	require.Len(t, g.seen, 15)
	// One datagram naming two new SSRCs would make 17: dropped, both forgotten.
	require.True(t, g.check(sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 500},
		&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 501})))
	require.Len(t, g.seen, 15)
	require.EqualValues(t, 1, drops("ssrc_budget"))
	// One more fits; known ones keep passing.
	require.False(t, g.check(sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 500})))
	require.False(t, g.check(sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 100})))
	// A new sender over budget: dropped without decrypting.
	require.True(t, g.check(sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 2, MediaSSRC: 100})))
	require.EqualValues(t, 2, drops("ssrc_budget"))
	// Streams raise the budget.
	g.p.rtcpStreams.Add(1)
	require.False(t, g.check(sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 2, MediaSSRC: 100})))

	// A forgery (another key) and a replay are dropped as authentication failures.
	_, other := guardPeer(t)
	require.True(t, g.check(sealRTCP(t, other, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 100})))
	pkt := sealRTCP(t, peer, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 100})
	orig := append([]byte(nil), pkt...)
	require.False(t, g.check(pkt))
	require.Equal(t, orig, pkt, "pion gets the datagram unchanged")
	require.True(t, g.check(pkt), "replay")
	require.EqualValues(t, 2, drops("authentication"))

	// Without keys (DTLS not connected yet) pion decides.
	g2, _ := guardPeer(t)
	g2.ctx = nil
	require.False(t, g2.check(pkt))
}

// FuzzRTCPGuard: whatever authentic RTCP a peer sends, the guard does not
// panic, never lets the connection's SSRCs exceed its budget, and hands
// pion the datagram unchanged.
func FuzzRTCPGuard(f *testing.F) {
	f.Add([]byte{0x81, 0xc9, 0x00, 0x07, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x81, 0xce, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 9})
	f.Fuzz(func(t *testing.T, plain []byte) {
		g, peer := guardPeer(t)
		if len(plain) < 8 {
			return
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
