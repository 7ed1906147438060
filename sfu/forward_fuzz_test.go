package sfu

import (
	"bytes"
	"testing"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// FuzzForwardRTP feeds what a hostile publisher can get past SRTP — any
// RTP it likes, authenticated with its own keys — through the forwarding
// core: a VP8 layer with a packet cache and an audio layer with an audio
// level extension, each fanned out to two subscribers, with a NACK
// retransmission after every packet. The input is a sequence of packets,
// each prefixed by its length in one byte.
//
// Properties: no panic; the received packet is not modified (the fan-out
// shares it); every copy carries the subscriber's SSRC and payload type;
// its payload is the received packet's payload without padding, except
// the VP8 picture id and tl0picidx, which the downtrack renumbers.
func FuzzForwardRTP(f *testing.F) {
	seed := func(pkts ...[]byte) []byte {
		var b []byte
		for _, p := range pkts {
			b = append(b, byte(len(p)))
			b = append(b, p...)
		}
		return b
	}
	f.Add(seed(vp8Packet(1, true, 40), vp8Packet(2, false, 40), vp8Packet(3, false, 40)))
	f.Add(seed(vp8Packet(65535, true, 20), vp8Packet(0, false, 20)))
	audio := rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: 9, SSRC: 5}
	_ = audio.SetExtension(1, []byte{0x85})
	ap, _ := rtp.Packet{Header: audio, Payload: []byte{1, 2, 3}}.Marshal()
	f.Add(seed(ap, ap))
	padded, _ := rtp.Packet{Header: rtp.Header{Version: 2, Padding: true, SequenceNumber: 4}, Payload: []byte{0x90, 0x80, 0x81, 0x02, 0x00}, PaddingSize: 3}.Marshal()
	f.Add(seed(vp8Packet(3, true, 30), padded))
	f.Add([]byte{12, 0xb0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1})

	f.Fuzz(func(t *testing.T, in []byte) {
		video := fuzzLayer(webrtc.RTPCodecTypeVideo)
		sound := fuzzLayer(webrtc.RTPCodecTypeAudio)
		var h rtp.Header
		for len(in) > 0 {
			n := int(in[0])
			in = in[1:]
			if n > len(in) {
				n = len(in)
			}
			pkt := append([]byte(nil), in[:n]...)
			in = in[n:]
			for _, ft := range []*fuzzTrack{video, sound} {
				before := make([]int, len(ft.ws))
				for i, w := range ft.ws {
					before[i] = len(w.payloads)
				}
				orig := append([]byte(nil), pkt...)
				ft.l.mu.Lock()
				ft.l.handle(pkt, &h)
				ft.l.mu.Unlock()
				if !bytes.Equal(orig, pkt) {
					t.Fatal("the received packet was modified")
				}
				var want []byte
				var p rtp.Packet
				if p.Unmarshal(orig) == nil {
					want = p.Payload
				}
				for i, w := range ft.ws {
					for k := before[i]; k < len(w.payloads); k++ {
						if w.hdrs[k].SSRC != ft.dts[i].ssrc || w.hdrs[k].PayloadType != ft.dts[i].pt {
							t.Fatalf("copy %d to subscriber %d: SSRC %d PT %d", k, i, w.hdrs[k].SSRC, w.hdrs[k].PayloadType)
						}
						if !samePayload(want, w.payloads[k]) {
							t.Fatalf("copy %d to subscriber %d: payload % x, received % x", k, i, w.payloads[k], want)
						}
					}
					if k := len(w.hdrs); k > 0 {
						ft.dts[i].rtxTokens = rtxBurst
						ft.dts[i].retransmit(w.hdrs[k-1].SequenceNumber)
					}
				}
			}
		}
	})
}

// samePayload compares a forwarded payload with the received one, the
// VP8 picture id and tl0picidx bytes excepted when the first is VP8.
func samePayload(want, got []byte) bool {
	if len(want) != len(got) {
		return false
	}
	v, ok := parseVP8Pic(want)
	for i := range want {
		if ok && (i == v.pidAt || (v.pid15 && i == v.pidAt+1) || i == v.tl0At) {
			continue
		}
		if want[i] != got[i] {
			return false
		}
	}
	return true
}

type fuzzTrack struct {
	l   *layerRecv
	dts []*downTrack
	ws  []*captureWriter
}

// fuzzLayer is a live layer of a VP8 video or an Opus audio track with
// two bound subscribers that forward on pion's path (captured).
func fuzzLayer(kind webrtc.RTPCodecType) *fuzzTrack {
	t := newPublishedTrack(&Participant{s: &Server{cfg: DefaultConfig()}}, &livekit.TrackInfo{Sid: "TR_fuzz"}, "c", kind)
	t.live = true
	l := &layerRecv{t: t, idx: 0}
	if kind == webrtc.RTPCodecTypeVideo {
		t.codec = webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}
		l.cache, l.isKey = newPacketCache(64), isVP8Keyframe
	} else {
		t.codec = webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000}, PayloadType: 111}
		l.audioLevelID = 1
	}
	l.live.Store(true)
	t.layers[0] = l
	ft := &fuzzTrack{l: l}
	for i := 0; i < 2; i++ {
		dt := newDownTrack(&Participant{s: t.owner.s}, t)
		w := &captureWriter{}
		dt.ws, dt.bound, dt.ssrc, dt.pt, dt.clockRate = w, true, uint32(7000+i), uint8(100+i), t.codec.ClockRate
		if kind == webrtc.RTPCodecTypeAudio {
			dt.levelIn, dt.levelOut = 1, uint8(3+i)
		}
		dt.target.Store(0)
		t.addDownTrack(dt)
		ft.dts, ft.ws = append(ft.dts, dt), append(ft.ws, w)
	}
	return ft
}
