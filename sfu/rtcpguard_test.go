package sfu_test

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

// bobReceivesAlice starts a server where bob receives alice's audio and
// video, and returns bob's subscriber connection and the SSRCs it gets.
func bobReceivesAlice(t *testing.T, room string) (ts *testServer, bob *client, pc *webrtc.PeerConnection, audio, video uint32) {
	t.Helper()
	ts = startServer(t, nil)
	alice := ts.join(t, room, "alice", nil)
	alice.publish(t, loadtest.PublishOptions{Audio: true, Video: true})
	bob = ts.join(t, room, "bob", nil)
	bob.waitMedia(t, []string{"alice"}, 5, 10, 20*time.Second)
	pc = bob.room.LocalParticipant.GetSubscriberPeerConnection()
	require.NotNil(t, pc)
	for _, r := range pc.GetReceivers() {
		if tr := r.Track(); tr != nil {
			if tr.Kind() == webrtc.RTPCodecTypeVideo {
				video = uint32(tr.SSRC())
			} else {
				audio = uint32(tr.SSRC())
			}
		}
	}
	require.NotZero(t, video)
	require.NotZero(t, audio)
	return ts, bob, pc, audio, video
}

// A subscriber whose RTCP names thousands of SSRCs it was never given
// (each would make pion keep a read stream for the rest of the connection)
// has everything past its budget dropped where the socket is read, while
// its RTCP about what it does receive still works: a PLI for the video it
// gets reaches the publisher, and media keeps flowing.
func TestRTCPSSRCBudget(t *testing.T) {
	ts, bob, pc, _, video := bobReceivesAlice(t, "guard")

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	const flood = 3000
	for i := range flood {
		require.NoError(t, pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: rand.Uint32()}}))
		if i%200 == 199 {
			time.Sleep(10 * time.Millisecond) // within the socket's buffer
		}
	}
	// Two subscriptions: a budget of 16 + 2 × 2 SSRCs, some of which the
	// PLIs' sender and earlier RTCP took.
	require.Eventually(t, func() bool {
		return ts.metric(t, "gxconf_sfu_rtcp_drops_total") >= flood-20
	}, 10*time.Second, 20*time.Millisecond, "dropped %v of %d", ts.metric(t, "gxconf_sfu_rtcp_drops_total"), flood)
	require.LessOrEqual(t, ts.metric(t, "gxconf_sfu_rtcp_drops_total"), float64(flood))
	t.Logf("heap %d -> %d KB after %d PLIs for unknown SSRCs", before>>10, heap()>>10, flood)

	plis := ts.metric(t, "gxconf_sfu_plis_total")
	require.Eventually(t, func() bool {
		_ = pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: video}})
		return ts.metric(t, "gxconf_sfu_plis_total") > plis
	}, 10*time.Second, 100*time.Millisecond, "a PLI for the video bob receives reaches alice")
	frames := bob.stream("alice/video").Frames.Load()
	bob.waitMedia(t, []string{"alice"}, frames+10, 0, 10*time.Second)
}

// A subscriber's RTCP, which the guard handles without pion on the mux
// socket, still works end to end: a NACK in a compound with a receiver
// report and a REMB gets the named packet retransmitted.
func TestSubscriberNACKRetransmits(t *testing.T) {
	ts, bob, pc, audio, video := bobReceivesAlice(t, "nack")
	stream := bob.stream("alice/video")
	before := ts.metric(t, "gxconf_sfu_retransmits_total")
	require.Eventually(t, func() bool {
		last, ok := stream.LastSeq()
		if !ok {
			return false
		}
		_ = pc.WriteRTCP([]rtcp.Packet{
			&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: audio}, {SSRC: video, FractionLost: 10}}},
			&rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: video, Nacks: []rtcp.NackPair{{PacketID: last - 3}}},
			&rtcp.ReceiverEstimatedMaximumBitrate{SenderSSRC: 1, Bitrate: 5_000_000, SSRCs: []uint32{video, audio}},
		})
		return ts.metric(t, "gxconf_sfu_retransmits_total") > before
	}, 10*time.Second, 100*time.Millisecond, "a NACK from bob is answered")
	require.Zero(t, ts.metric(t, "gxconf_sfu_rtcp_drops_total"))
}
