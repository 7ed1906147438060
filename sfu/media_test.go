package sfu_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func avOpts() loadtest.PublishOptions {
	return loadtest.PublishOptions{Audio: true, Video: true}
}

// TestTwoParticipants: both publish audio + simulcast VP8, each receives
// the other's tracks intact, at the top layer by default.
func TestTwoParticipants(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := ts.join(t, "two", "alice", nil)
	bob := ts.join(t, "two", "bob", nil)
	alice.publish(t, avOpts())
	bob.publish(t, avOpts())
	ids := []string{"alice", "bob"}
	alice.waitMedia(t, ids, 30, 50, 15*time.Second)
	bob.waitMedia(t, ids, 30, 50, 15*time.Second)
	t.Logf("bob got %d video frames, %d audio from alice", bob.stream("alice/video").Frames.Load(), bob.stream("alice/audio").Frames.Load())
	// The default target is the top layer. The subscriber's bandwidth
	// estimate may hold it lower for a moment on a loaded machine (the
	// allocator then probes up), so await f rather than demand it at once.
	for _, c := range []struct {
		sub  *client
		from string
	}{{bob, "alice"}, {alice, "bob"}} {
		st, want := c.sub.stream(c.from+"/video"), loadtest.VideoMarker(c.from, livekit.VideoQuality_HIGH)
		require.Eventually(t, func() bool { return st.LastMarker() == want }, 20*time.Second, 20*time.Millisecond,
			"%s never got %s's top layer (last %q)", c.sub.identity, c.from, st.LastMarker())
	}

	// Metrics: media went out on the direct path (SFU-side SRTP + sendmmsg).
	require.Eventually(t, func() bool {
		return ts.metric(t, "gxconf_sfu_rtp_packets_direct_out_total") > 100 && ts.metric(t, "gxconf_sfu_rtp_packets_in_total") > 100
	}, 10*time.Second, 50*time.Millisecond)
	// Both sending connections got their DTLS keys through pion's public
	// hooks (server-sdk-go answers the subscriber offer as DTLS client).
	require.EqualValues(t, 2, ts.metricWith(t, "gxconf_sfu_direct_path_connections_total", "outcome", "keyed"))
	// Both publishing connections were taken over by the direct receive path.
	require.EqualValues(t, 2, ts.metricWith(t, "gxconf_sfu_direct_path_connections_total", "outcome", "receive"))
	require.EqualValues(t, 1, ts.metric(t, "gxconf_sfu_rooms"))
	require.EqualValues(t, 2, ts.metric(t, "gxconf_sfu_participants"))
	require.EqualValues(t, 4, ts.metric(t, "gxconf_sfu_published_tracks"))
}

// TestDirectReceiveFeedback: once the direct receive path has taken a
// publisher's streams, every packet comes that way, and the publisher still
// gets its receive feedback — receiver reports that follow its sequence
// numbers, transport-wide congestion feedback, and a NACK for a packet it
// sent that never arrived.
func TestDirectReceiveFeedback(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	// server-sdk-go numbers its packets transport-wide only with pion's
	// header extension interceptor, as browsers do.
	twccExt, err := twcc.NewHeaderExtensionInterceptor()
	require.NoError(t, err)
	drop := &dropOne{nth: 100}
	alice := ts.join(t, "dr", "alice", nil, lksdk.WithInterceptors([]interceptor.Factory{twccExt, drop}), lksdk.WithIncludeDefaultInterceptors(true))
	bob := ts.join(t, "dr", "bob", nil)
	var mu sync.Mutex
	highest := map[uint32][]uint32{} // per SSRC, the extended highest sequence numbers reported
	twcc := 0
	nacked := map[[2]uint32]bool{} // SSRC, sequence number
	opts := avOpts()
	opts.OnRTCP = func(_ int, pk rtcp.Packet) {
		mu.Lock()
		defer mu.Unlock()
		switch p := pk.(type) {
		case *rtcp.ReceiverReport:
			for _, r := range p.Reports {
				highest[r.SSRC] = append(highest[r.SSRC], r.LastSequenceNumber)
			}
		case *rtcp.TransportLayerCC:
			twcc++
		case *rtcp.TransportLayerNack:
			for _, pair := range p.Nacks {
				for _, seq := range pair.PacketList() {
					nacked[[2]uint32{p.MediaSSRC, uint32(seq)}] = true
				}
			}
		}
	}
	alice.publish(t, opts)
	bob.waitMedia(t, []string{"alice"}, 30, 50, 15*time.Second)

	in := func() (float64, float64) {
		return ts.metric(t, "gxconf_sfu_rtp_packets_in_total"), ts.metric(t, "gxconf_sfu_rtp_packets_direct_in_total")
	}
	// The counters are flushed periodically: take the baseline at a flush
	// after the streams were taken over.
	require.Eventually(t, func() bool { _, d := in(); return d > 0 }, 15*time.Second, 50*time.Millisecond)
	in0, direct0 := in()
	require.Eventually(t, func() bool { i, _ := in(); return i > in0+500 }, 15*time.Second, 50*time.Millisecond)
	in1, direct1 := in()
	t.Logf("packets in %v, by the direct receive path %v (since warm-up %v of %v)", in1, direct1, direct1-direct0, in1-in0)
	require.GreaterOrEqual(t, direct1-direct0, 0.99*(in1-in0), "all packets came by the direct receive path")

	var last string
	ok := assert.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		advancing := 0
		for _, seqs := range highest {
			if n := len(seqs); n >= 2 && seqs[n-1] > seqs[0] {
				advancing++
			}
		}
		dropped := drop.dropped()
		last = fmt.Sprintf("receiver reports %v, twcc feedback %d, dropped %v, NACKed %v", highest, twcc, dropped, nacked)
		asked := 0
		for _, d := range dropped {
			if nacked[d] {
				asked++
			}
		}
		// the three video layers; feedback every 100 ms; each layer's lost packet asked for
		return advancing >= 3 && twcc >= 10 && len(dropped) == 3 && asked == 3
	}, 15*time.Second, 50*time.Millisecond)
	require.True(t, ok, last)
	require.Zero(t, ts.metric(t, "gxconf_sfu_direct_receive_drops_total"))
}

// TestLowQualityLayer: a subscriber asking for LOW gets the q layer, and
// back to HIGH gets f again (keyframe-gated switches).
func TestLowQualityLayer(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := ts.join(t, "low", "alice", nil)
	bob := ts.join(t, "low", "bob", nil)
	alice.publish(t, loadtest.PublishOptions{Video: true, Audio: true})
	bob.waitMedia(t, []string{"alice"}, 10, 10, 15*time.Second)

	pub := bob.publication("alice/video")
	require.NotNil(t, pub)
	st := bob.stream("alice/video")
	for _, q := range []livekit.VideoQuality{livekit.VideoQuality_LOW, livekit.VideoQuality_MEDIUM, livekit.VideoQuality_HIGH} {
		require.NoError(t, pub.SetVideoQuality(q))
		want := loadtest.VideoMarker("alice", q)
		before := st.MarkerCount(want)
		require.Eventually(t, func() bool { return st.MarkerCount(want) >= before+10 && st.LastMarker() == want },
			10*time.Second, 20*time.Millisecond, "no %s frames", want)
	}
	// Dimensions choose the smallest layer that covers them.
	pub.SetVideoDimensions(320, 180)
	want := loadtest.VideoMarker("alice", livekit.VideoQuality_LOW)
	require.Eventually(t, func() bool { return st.LastMarker() == want }, 10*time.Second, 20*time.Millisecond)
	require.Zero(t, st.Corrupt.Load())
	exp, got := st.Loss()
	require.Greater(t, got, uint64(0))
	require.GreaterOrEqual(t, got, exp, "sequence numbers must stay contiguous across layer switches")
}

// TestOutOfRangeQuality: a quality outside LOW..HIGH (enums take any
// int32 on the wire) is clamped to a layer there is: -3 gets the lowest,
// 99 the highest; the session and media carry on (an index of -2 into the
// layers panicked before).
func TestOutOfRangeQuality(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := ts.join(t, "oor", "alice", nil)
	bob := ts.join(t, "oor", "bob", nil)
	alice.publish(t, loadtest.PublishOptions{Video: true, Audio: true})
	bob.waitMedia(t, []string{"alice"}, 10, 10, 15*time.Second)
	pub := bob.publication("alice/video")
	require.NotNil(t, pub)
	st := bob.stream("alice/video")
	for q, layer := range map[livekit.VideoQuality]livekit.VideoQuality{-3: livekit.VideoQuality_LOW, 99: livekit.VideoQuality_HIGH} {
		require.NoError(t, pub.SetVideoQuality(q))
		want := loadtest.VideoMarker("alice", layer)
		before := st.MarkerCount(want)
		require.Eventually(t, func() bool { return st.MarkerCount(want) >= before+10 && st.LastMarker() == want },
			10*time.Second, 20*time.Millisecond, "quality %d: no %s frames", q, want)
	}
	require.NotNil(t, ts.srv.DescribeSubscriptions("oor", "bob"))
}

// TestTenParticipants: ten publishers, each receives everyone else.
func TestTenParticipants(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	var ids []string
	var cs []*client
	for i := 0; i < 10; i++ {
		id := string(rune('a'+i)) + "-peer"
		ids = append(ids, id)
		cs = append(cs, ts.join(t, "ten", id, nil))
	}
	opts := lightMedia()
	for _, c := range cs {
		c.publish(t, opts)
	}
	for _, c := range cs {
		c.waitMedia(t, ids, 5, 20, 60*time.Second)
	}
}

// TestLoadtestRun drives the load tool against the in-process SFU.
func TestLoadtestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	var out strings.Builder
	rep, err := loadtest.Run(context.Background(), loadtest.Options{
		URL: ts.url, APIKey: ts.key, APISecret: ts.secret,
		Publishers: 2, Subscribers: 2, Duration: 2 * time.Second, Warmup: time.Second, JoinRate: 20,
		FPS: 10, SFUPid: os.Getpid(),
	}, &out, zerolog.Nop())
	require.NoError(t, err)
	t.Log("\n" + out.String())
	require.Equal(t, 4, rep.Participants)
	require.Zero(t, rep.JoinFailures)
	require.Equal(t, 12, rep.TracksExpected)
	require.Equal(t, 12, rep.TracksSubscribed)
	require.Greater(t, rep.PacketsReceived, uint64(100))
	require.Zero(t, rep.CorruptFrames)
	require.True(t, rep.SFUMeasured)
	require.Contains(t, out.String(), "sfu cpu / packet")
}

// layerPackets returns the packets the SFU received on a layer label.
func (ts *testServer) layerPackets(t *testing.T, layer string) float64 {
	t.Helper()
	mfs, err := ts.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "gxconf_sfu_rtp_packets_in_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "layer" && l.GetValue() == layer {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestDynacast: when nobody wants the top layer the publisher is told to
// pause it; asking for it again resumes it.
func TestDynacast(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := ts.join(t, "dyn", "alice", nil)
	bob := ts.join(t, "dyn", "bob", nil)
	alice.publish(t, loadtest.PublishOptions{Video: true, Audio: true, FPS: 15})
	bob.waitMedia(t, []string{"alice"}, 5, 10, 15*time.Second)

	pub := bob.publication("alice/video")
	require.NoError(t, pub.SetVideoQuality(livekit.VideoQuality_LOW))
	// The SFU's per-layer receive counters are flushed every ~1.2 s: the
	// top layer is paused once two flushes in a row show no new packets.
	var last []float64
	require.Eventually(t, func() bool {
		last = append(last, ts.layerPackets(t, "f"))
		n := len(last)
		return n >= 3 && last[n-1] > 0 && last[n-1] == last[n-3]
	}, 20*time.Second, 700*time.Millisecond, "top layer not paused")
	require.Greater(t, ts.layerPackets(t, "q"), 0.0)

	require.NoError(t, pub.SetVideoQuality(livekit.VideoQuality_HIGH))
	st := bob.stream("alice/video")
	want := loadtest.VideoMarker("alice", livekit.VideoQuality_HIGH)
	before := st.MarkerCount(want)
	require.Eventually(t, func() bool { return st.MarkerCount(want) > before+5 }, 15*time.Second, 50*time.Millisecond, "top layer not resumed")
}

// TestSpeakersQualityRoomUpdate: speakers_changed from the audio level
// extension, connection_quality and room_update reach the clients.
func TestSpeakersQualityRoomUpdate(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	speakers := make(chan []lksdk.Participant, 16)
	quality := make(chan *livekit.ConnectionQualityInfo, 64)
	meta := make(chan string, 4)
	bobCB := func(c *lksdk.RoomCallback) {
		c.OnActiveSpeakersChanged = func(p []lksdk.Participant) {
			select {
			case speakers <- p:
			default:
			}
		}
		c.OnConnectionQualityChanged = func(u *livekit.ConnectionQualityInfo, p lksdk.Participant) {
			select {
			case quality <- u:
			default:
			}
		}
		c.OnRoomMetadataChanged = func(m string) { meta <- m }
	}
	alice := ts.join(t, "spk", "alice", nil)
	bob := ts.joinWith(t, "spk", "bob", bobCB)
	alice.publish(t, loadtest.PublishOptions{Audio: true, AudioLevel: 20})
	bob.waitAudio(t, "alice")
	deadline := time.After(15 * time.Second)
	for got := false; !got; {
		select {
		case ps := <-speakers:
			for _, p := range ps {
				got = got || p.Identity() == "alice"
			}
		case <-deadline:
			t.Fatal("alice never became an active speaker")
		}
	}
	select {
	case u := <-quality:
		require.NotEqual(t, livekit.ConnectionQuality_LOST, u.GetQuality())
	case <-time.After(15 * time.Second):
		t.Fatal("no connection quality update")
	}
	_, err := ts.srv.RoomService().UpdateRoomMetadata(context.Background(), &livekit.UpdateRoomMetadataRequest{Room: "spk", Metadata: "topic"})
	require.NoError(t, err)
	select {
	case m := <-meta:
		require.Equal(t, "topic", m)
	case <-time.After(10 * time.Second):
		t.Fatal("no room update")
	}
}

// TestUnpublish: a track the client unpublishes disappears for the others.
func TestUnpublish(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := ts.join(t, "unp", "alice", nil)
	unpublished := make(chan string, 4)
	bob := ts.joinWith(t, "unp", "bob", func(c *lksdk.RoomCallback) {
		c.OnTrackUnpublished = func(pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) { unpublished <- pub.SID() }
	})
	alice.publish(t, loadtest.PublishOptions{Audio: true, Video: true, FPS: 10})
	bob.waitMedia(t, []string{"alice"}, 3, 10, 15*time.Second)
	sid := alice.pub.VideoPub.SID()
	require.NoError(t, alice.room.LocalParticipant.UnpublishTrack(sid))
	select {
	case got := <-unpublished:
		require.Equal(t, sid, got)
	case <-time.After(15 * time.Second):
		t.Fatal("bob did not see the track unpublished")
	}
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_published_tracks") == 1 }, 10*time.Second, 50*time.Millisecond)
}

// dropOne is a publisher-side interceptor that does not send the nth RTP
// packet of each video stream (each simulcast layer), as if the network
// lost it.
type dropOne struct {
	nth int

	mu    sync.Mutex
	count map[uint32]int
	seqs  map[uint32]uint16 // per SSRC, the sequence number not sent
}

func (d *dropOne) NewInterceptor(string) (interceptor.Interceptor, error) { return d, nil }

// dropped returns the (SSRC, sequence number) pairs not sent.
func (d *dropOne) dropped() [][2]uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out [][2]uint32
	for ssrc, seq := range d.seqs {
		out = append(out, [2]uint32{ssrc, uint32(seq)})
	}
	return out
}

func (d *dropOne) BindRTCPReader(r interceptor.RTCPReader) interceptor.RTCPReader { return r }
func (d *dropOne) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter { return w }
func (d *dropOne) BindRemoteStream(_ *interceptor.StreamInfo, r interceptor.RTPReader) interceptor.RTPReader {
	return r
}
func (d *dropOne) UnbindRemoteStream(*interceptor.StreamInfo) {}
func (d *dropOne) UnbindLocalStream(*interceptor.StreamInfo)  {}
func (d *dropOne) Close() error                               { return nil }

func (d *dropOne) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	if !strings.HasPrefix(info.MimeType, "video/") {
		return w
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		d.mu.Lock()
		if d.count == nil {
			d.count, d.seqs = map[uint32]int{}, map[uint32]uint16{}
		}
		d.count[h.SSRC]++
		if d.count[h.SSRC] == d.nth {
			d.seqs[h.SSRC] = h.SequenceNumber
			d.mu.Unlock()
			return len(payload), nil
		}
		d.mu.Unlock()
		return w.Write(h, payload, a)
	})
}
