package bridge

import (
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/stretchr/testify/require"
)

// TestNackBudget: a peer NACKs the same 17 packets 360 times in one
// datagram (four NACKs of 90 pairs), then repeats that datagram 50
// times. The node resends each packet once for the first datagram, and
// in all no more than a quarter of the video it relayed to the peer.
func TestNackBudget(t *testing.T) {
	a, b, _, _ := ritaWatchesAlice(t)
	ba := b.br.assocFor(t, peerRoomX, peerKey("fed-a", ""))
	aa := a.br.assocFor(t, "X", peerKey("fed-b", "b1"))
	// A video stream fed-a relays to fed-b and its newest 17 packets in
	// the origin's cache (the relay keeps the origin's sequence numbers).
	ssrcs := make(chan []uint32, 1)
	ba.post(func() {
		var v []uint32
		for _, rs := range ba.receivers {
			if rs.video {
				v = append(v, rs.ssrc)
			}
		}
		ssrcs <- v
	})
	var s *relaySender
	for _, ssrc := range <-ssrcs {
		if s = (*aa.senders.Load())[ssrc]; s != nil {
			break
		}
	}
	require.NotNil(t, s)
	buf := make([]byte, 1500)
	cached := func(seq uint16) bool { return s.ot.sub.Packet(s.layer, seq, buf) != nil }
	var first uint16
	found := false
	for q := 0; q < 1<<16 && !found; q++ {
		found = !cached(uint16(q + 17))
		for i := 0; i < 17 && found; i++ {
			found = cached(uint16(q + i))
		}
		first = uint16(q)
	}
	require.True(t, found)
	p := struct {
		ssrc uint32
		seq  uint16
	}{s.ssrc, first + 20}
	var pairs []rtcp.NackPair
	for i := 0; i < 90; i++ {
		// PacketID and the 16 after it.
		pairs = append(pairs, rtcp.NackPair{PacketID: p.seq - 20, LostPackets: 0xffff})
	}
	n := &rtcp.TransportLayerNack{MediaSSRC: p.ssrc, Nacks: pairs}

	before := aa.stats.rtx.Load()
	require.NoError(t, ba.sendRTCP(n, n, n, n))
	require.Eventually(t, func() bool { return aa.stats.rtx.Load() > before }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	require.LessOrEqual(t, aa.stats.rtx.Load()-before, uint64(17), "one datagram naming 17 packets")

	for i := 0; i < 50; i++ {
		require.NoError(t, ba.sendRTCP(n, n, n, n))
	}
	time.Sleep(500 * time.Millisecond)
	rtx := aa.stats.rtx.Load()
	var sent uint64
	for i := range aa.stats.sentPk {
		sent += aa.stats.sentPk[i].Load()
	}
	t.Logf("%d retransmissions for %d video packets relayed", rtx, sent)
	require.LessOrEqual(t, rtx, sent/rtxEarn)
	require.LessOrEqual(t, rtx-before, uint64(17+rtxBurst))
}
