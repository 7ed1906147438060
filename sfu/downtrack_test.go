package sfu

import (
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

// captureWriter records what a downtrack sends on pion's path.
type captureWriter struct {
	hdrs     []rtp.Header
	payloads [][]byte
}

func (w *captureWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.hdrs = append(w.hdrs, h.Clone())
	w.payloads = append(w.payloads, append([]byte(nil), payload...))
	return len(payload), nil
}

func (w *captureWriter) Write(b []byte) (int, error) { return len(b), nil }

func vp8Payload(pid uint16, tl0 uint8, key bool) []byte {
	p := []byte{0x90, 0xc0, 0x80 | byte(pid>>8), byte(pid), tl0, 0x00, 0x00, 0x00}
	if !key {
		p[5] = 0x01
	}
	return p
}

// TestLayerSwitchRewrites: a switch happens only at a keyframe of the
// target layer; SSRC, sequence numbers, timestamps and the VP8 picture id
// continue without a jump; the shared payload is not modified.
func TestLayerSwitchRewrites(t *testing.T) {
	tr := newPublishedTrack(&Participant{s: &Server{cfg: DefaultConfig()}}, &livekit.TrackInfo{Sid: "TR_x"}, "c", webrtc.RTPCodecTypeVideo)
	tr.codec = webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}}
	dt := newDownTrack(&Participant{s: tr.owner.s}, tr)
	w := &captureWriter{}
	dt.ws, dt.bound, dt.ssrc, dt.pt, dt.clockRate = w, true, 4242, 97, 90000
	dt.target.Store(0)

	now := int64(0)
	send := func(layer int, seq uint16, ts uint32, pid uint16, tl0 uint8, key bool) []byte {
		now += 33_000_000
		p := vp8Payload(pid, tl0, key)
		orig := append([]byte(nil), p...)
		h := &rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, SSRC: uint32(100 + layer), PayloadType: 96}
		dt.writeRTP(layer, h, p, 0, isVP8Keyframe(p), now, nil)
		require.Equal(t, orig, p, "shared payload modified")
		return p
	}
	send(0, 1000, 5000, 300, 10, false) // not a keyframe: waits
	require.Empty(t, w.hdrs)
	send(0, 1001, 8000, 301, 11, true)
	send(0, 1002, 11000, 302, 12, false)
	require.Len(t, w.hdrs, 2)

	dt.target.Store(2)
	send(2, 50, 900000, 7000, 200, false) // target layer, not key: dropped
	send(0, 1003, 14000, 303, 13, false)  // still layer 0
	send(2, 51, 903000, 7001, 201, true)  // switch
	send(0, 1004, 17000, 304, 14, false)  // old layer ignored now
	send(2, 52, 906000, 7002, 202, false)
	require.Len(t, w.hdrs, 5)

	for i, h := range w.hdrs {
		require.EqualValues(t, 4242, h.SSRC)
		require.EqualValues(t, 97, h.PayloadType)
		if i > 0 {
			require.Equal(t, w.hdrs[i-1].SequenceNumber+1, h.SequenceNumber, "seq %d", i)
			require.Greater(t, h.Timestamp, w.hdrs[i-1].Timestamp, "ts %d", i)
			v0, _ := parseVP8Pic(w.payloads[i-1])
			v1, _ := parseVP8Pic(w.payloads[i])
			require.Equal(t, v0.pid+1, v1.pid, "picture id %d", i)
			require.Equal(t, v0.tl0+1, v1.tl0, "tl0picidx %d", i)
		}
	}
	require.EqualValues(t, 2, dt.current.Load())
}

// TestNACKRetransmit: a NACKed packet is replayed from the publisher's
// cache with the subscriber's numbering, once per rtxInterval.
func TestNACKRetransmit(t *testing.T) {
	l, _ := benchTrack(0)
	tr := l.t
	dt := newDownTrack(&Participant{s: tr.owner.s}, tr)
	w := &captureWriter{}
	dt.ws, dt.bound, dt.ssrc, dt.pt, dt.clockRate = w, true, 7, 97, 90000
	dt.target.Store(0)
	tr.addDownTrack(dt)

	var h rtp.Header
	for i := 0; i < 20; i++ {
		l.handle(vp8Packet(uint16(500+i), i == 0, 300), &h)
	}
	require.Len(t, w.hdrs, 20)
	lost := w.hdrs[7]
	dt.retransmit(lost.SequenceNumber)
	require.Len(t, w.hdrs, 21)
	got := w.hdrs[20]
	require.Equal(t, lost.SequenceNumber, got.SequenceNumber)
	require.Equal(t, lost.Timestamp, got.Timestamp)
	require.EqualValues(t, 7, got.SSRC)
	require.Equal(t, w.payloads[7], w.payloads[20])
	dt.retransmit(lost.SequenceNumber)        // throttled
	dt.retransmit(lost.SequenceNumber + 1000) // unknown
	require.Len(t, w.hdrs, 21)
}

// TestBandwidthCapsLayer: a low REMB estimate moves a subscriber to the
// layer that fits; a stale one lifts the cap.
// simulcastDownTrack is a subscriber's downtrack of a three-layer simulcast
// track (150 kbit/s, 500 kbit/s, 1.7 Mbit/s, all live) that wants the top layer.
func simulcastDownTrack() (*Participant, *downTrack) {
	tr := newPublishedTrack(&Participant{s: &Server{cfg: DefaultConfig()}}, &livekit.TrackInfo{Sid: "TR_v", Simulcast: true}, "c", webrtc.RTPCodecTypeVideo)
	for i, br := range []uint64{150_000, 500_000, 1_700_000} {
		l := &layerRecv{t: tr, idx: i}
		l.live.Store(true)
		l.bitrate.Store(br)
		tr.layers[i] = l
	}
	sub := &Participant{s: tr.owner.s}
	dt := newDownTrack(sub, tr)
	dt.pref.Store(2)
	return sub, dt
}

func TestBandwidthCapsLayer(t *testing.T) {
	sub, dt := simulcastDownTrack()
	now := time.Now()
	sub.remb.Store(800_000)
	sub.rembAt.Store(now.UnixNano())
	sub.allocateBandwidth([]*downTrack{dt}, now)
	require.EqualValues(t, 1, dt.bweCap.Load())
	require.EqualValues(t, 1, dt.target.Load())
	sub.remb.Store(100_000)
	sub.allocateBandwidth([]*downTrack{dt}, now)
	require.EqualValues(t, 0, dt.target.Load(), "lowest layer even below the estimate")
	sub.allocateBandwidth([]*downTrack{dt}, now.Add(10*time.Second))
	require.EqualValues(t, 2, dt.target.Load())
}

// A subscriber held on a low layer by its estimate is moved up on trial when
// it wants more; the trial stays if the estimate follows, ends when it does
// not (or falls), and the next trial backs off.
func TestBandwidthProbe(t *testing.T) {
	sub, dt := simulcastDownTrack()
	t0 := time.Now()
	allocate := func(remb uint64, at time.Duration) int32 {
		sub.remb.Store(remb)
		sub.rembAt.Store(t0.Add(at).UnixNano())
		sub.allocateBandwidth([]*downTrack{dt}, t0.Add(at))
		return dt.bweCap.Load()
	}
	// A browser receiving 150 kbit/s estimates about 1.5 times that.
	require.EqualValues(t, 0, allocate(225_000, 0), "no trial before the low layer is being forwarded")
	dt.current.Store(0)
	require.EqualValues(t, 1, allocate(225_000, time.Second), "trial one layer up")
	require.EqualValues(t, 1, allocate(300_000, 3*time.Second), "trial continues while the estimate grows")
	require.EqualValues(t, 1, allocate(600_000, 5*time.Second), "estimate caught up: layer 1 kept")
	require.EqualValues(t, -1, dt.probe.layer)
	dt.current.Store(1)
	require.EqualValues(t, 2, allocate(600_000, 6*time.Second), "next trial: top layer")
	require.EqualValues(t, 2, allocate(650_000, 20*time.Second))
	require.EqualValues(t, 1, allocate(650_000, 22*time.Second), "estimate did not follow within the hold: back to layer 1")
	require.EqualValues(t, 1, allocate(650_000, 25*time.Second), "backing off")
	require.EqualValues(t, 2, allocate(650_000, 28*time.Second), "after the backoff, a new trial")
	require.EqualValues(t, 1, allocate(450_000, 29*time.Second), "a falling estimate ends the trial at once")
	require.EqualValues(t, 1, allocate(450_000, 35*time.Second), "the backoff doubled")
	require.EqualValues(t, 2, allocate(450_000, 40*time.Second))
}

// TestThrottledKeyframeRequestIsDeferred: a keyframe request inside the
// throttle window is not dropped but sent once when the window ends, unless
// a keyframe arrived meanwhile; several requests in one window make one.
func TestThrottledKeyframeRequestIsDeferred(t *testing.T) {
	sent := make(chan time.Time, 8)
	l := &layerRecv{idx: 0, onKeyframe: func(int) { sent <- time.Now() }}
	first := time.Now()
	l.requestKeyframe()
	require.Len(t, sent, 1, "the first request goes out at once")
	<-sent
	l.requestKeyframe()
	l.requestKeyframe()
	l.requestKeyframe()
	select {
	case at := <-sent:
		require.GreaterOrEqual(t, at.Sub(first), 500*time.Millisecond, "the deferred request respects the window")
	case <-time.After(10 * time.Second):
		t.Fatal("the throttled request was dropped")
	}
	require.Eventually(t, func() bool { return !l.deferred.Load() }, 10*time.Second, time.Millisecond)
	require.Empty(t, sent, "three requests in one window make one deferred request")

	// A keyframe inside the window answers the deferred request.
	done := make(chan struct{})
	l2 := &layerRecv{idx: 0, onKeyframe: func(int) { sent <- time.Now() }}
	l2.requestKeyframe()
	<-sent
	l2.requestKeyframe() // deferred
	l2.lastKey.Store(monoNow() + 1)
	go func() {
		for l2.deferred.Load() {
			time.Sleep(time.Millisecond)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deferred request never settled")
	}
	require.Empty(t, sent, "a keyframe arrived: no second request")
}

// TestLongStreamKeepsForwarding: a downtrack forwards every packet of a
// stream that runs through the whole sequence number space several times
// (an hour of audio, minutes of top-layer video). Late packets are
// forwarded while they are within segWindow of the newest; a packet from
// before the switch to the layer, or one further behind, is not.
func TestLongStreamKeepsForwarding(t *testing.T) {
	tr := newPublishedTrack(&Participant{s: &Server{cfg: DefaultConfig()}}, &livekit.TrackInfo{Sid: "TR_a"}, "c", webrtc.RTPCodecTypeAudio)
	tr.codec = webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000}}
	dt := newDownTrack(&Participant{s: tr.owner.s}, tr)
	w := &nullWriter{buf: make([]byte, 1500)}
	dt.ws, dt.bound, dt.ssrc, dt.pt, dt.clockRate = w, true, 77, 111, 48000
	dt.target.Store(0)

	payload := make([]byte, 40)
	h := &rtp.Header{Version: 2, PayloadType: 111, SSRC: 5}
	send := func(seq uint16) int {
		before := w.packets
		h.SequenceNumber, h.Timestamp = seq, uint32(seq)*960
		dt.writeRTP(0, h, payload, 0, true, 0, nil)
		return w.packets - before
	}
	const first = 60000
	require.Equal(t, 1, send(first), "the first packet starts forwarding")
	require.Zero(t, send(first-1), "a packet from before the switch")
	const total = 3*65536 + 1000
	for i := 1; i < total; i++ {
		if send(uint16(first+i)) != 1 {
			t.Fatalf("packet %d (sequence number %d) was not forwarded", i, uint16(first+i))
		}
	}
	newest := uint16((first + total - 1) % 65536)
	require.Equal(t, 1, send(newest-100), "a late packet within the window")
	require.Zero(t, send(newest-segWindow-1), "a packet further behind than the window")
}

// A NACK is acted on for at most as many sequence numbers as a downtrack
// remembers, and not further once it cannot retransmit: one datagram of
// NACK pairs names up to ~1,500 packets, each a lock and a lookup.
func TestNACKBounded(t *testing.T) {
	l, _ := benchTrack(0)
	dt := newDownTrack(&Participant{s: l.t.owner.s}, l.t)
	w := &captureWriter{}
	dt.ws, dt.bound, dt.ssrc, dt.pt, dt.clockRate = w, true, 7, 97, 90000
	dt.target.Store(0)
	l.t.addDownTrack(dt)
	var h rtp.Header
	for i := 0; i < 20; i++ {
		l.handle(vp8Packet(uint16(500+i), i == 0, 300), &h)
	}
	sub := dt.sub
	sub.setSendTrack(7, dt)
	pairs := make([]rtcp.NackPair, 100) // 1,700 sequence numbers, none sent
	for i := range pairs {
		pairs[i] = rtcp.NackPair{PacketID: uint16(30000 + 17*i), LostPackets: 0xffff}
	}
	sub.onRTCP(&rtcp.TransportLayerNack{MediaSSRC: 7, Nacks: pairs}, nil)
	require.EqualValues(t, seqMapSize, dt.nacks)

	// Out of retransmission budget: the first sequence number ends it.
	dt.mu.Lock()
	dt.rtxTokens, dt.nacks = 0, 0
	dt.mu.Unlock()
	sub.onRTCP(&rtcp.TransportLayerNack{MediaSSRC: 7, Nacks: []rtcp.NackPair{{PacketID: w.hdrs[3].SequenceNumber, LostPackets: 0xffff}}}, nil)
	require.EqualValues(t, 1, dt.nacks)
	require.Len(t, w.hdrs, 20, "nothing retransmitted without budget")
}
