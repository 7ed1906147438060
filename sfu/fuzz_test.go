package sfu

import (
	"testing"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// FuzzDecodeSignalRequest: no panic; an accepted frame re-marshals to an
// equal message (binary frames as protobuf, text frames as protojson).
func FuzzDecodeSignalRequest(f *testing.F) {
	seeds := []*livekit.SignalRequest{
		{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: "v=0\r\n", Id: 3}}},
		{Message: &livekit.SignalRequest_Trickle{Trickle: &livekit.TrickleRequest{CandidateInit: `{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}`, Target: livekit.SignalTarget_SUBSCRIBER}}},
		{Message: &livekit.SignalRequest_AddTrack{AddTrack: &livekit.AddTrackRequest{Cid: "c", Type: livekit.TrackType_VIDEO, Layers: []*livekit.VideoLayer{{Quality: livekit.VideoQuality_LOW, Width: 320}}}}},
		{Message: &livekit.SignalRequest_TrackSetting{TrackSetting: &livekit.UpdateTrackSettings{TrackSids: []string{"TR_x"}, Width: 100}}},
		{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: 1}}},
		{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{Reason: livekit.DisconnectReason_CLIENT_INITIATED}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(false, b)
		j, err := protojson.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(true, j)
	}
	f.Add(false, []byte{0xff, 0xff, 0x01})
	f.Add(true, []byte(`{"ping":"5","unknown":1}`))
	f.Fuzz(func(t *testing.T, text bool, data []byte) {
		typ := websocket.MessageBinary
		if text {
			typ = websocket.MessageText
		}
		req, err := decodeSignalRequest(typ, data)
		if err != nil {
			return
		}
		var again *livekit.SignalRequest
		if text {
			b, err := protojson.Marshal(req)
			if err != nil {
				t.Fatalf("accepted request does not re-marshal: %v", err)
			}
			again, err = decodeSignalRequest(typ, b)
			if err != nil {
				t.Fatalf("re-marshalled request rejected: %v", err)
			}
		} else {
			b, err := proto.Marshal(req)
			if err != nil {
				t.Fatalf("accepted request does not re-marshal: %v", err)
			}
			again, err = decodeSignalRequest(typ, b)
			if err != nil {
				t.Fatalf("re-marshalled request rejected: %v", err)
			}
		}
		if !proto.Equal(req, again) {
			t.Fatalf("round trip changed the request:\n%v\n%v", req, again)
		}
	})
}

// FuzzPayloadParsers: the keyframe detectors read untrusted RTP payloads.
func FuzzPayloadParsers(f *testing.F) {
	f.Add([]byte{0x90, 0xe0, 0x80, 0x01, 0x00, 0x9d, 0x01, 0x2a})
	f.Add([]byte{0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x65, 0x88})
	f.Add([]byte{0x7c, 0x85, 0x00})
	f.Add([]byte{0x08})
	f.Fuzz(func(t *testing.T, p []byte) {
		_ = isVP8Keyframe(p)
		_ = isH264Keyframe(p)
		_ = isVP9Keyframe(p)
		_ = isAV1Keyframe(p)
		_, _ = vp8DescriptorLen(p)
	})
}
