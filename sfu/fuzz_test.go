package sfu

import (
	"bytes"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
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

// FuzzPayloadParsers: the keyframe detectors and the VP8 picture id parser
// read untrusted RTP payloads.
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
		// The offsets parseVP8Pic reports are inside the payload, and
		// writing the values back reproduces it.
		if v, ok := parseVP8Pic(p); ok {
			end := max(v.pidAt, v.tl0At)
			if v.pid15 {
				end = max(end, v.pidAt+1)
			}
			if end >= len(p) {
				t.Fatalf("offsets %+v beyond a %d-byte payload", v, len(p))
			}
			q := append([]byte(nil), p...)
			writeVP8Pic(q, &v)
			if !bytes.Equal(p, q) {
				t.Fatalf("writing %+v back changed the payload: % x -> % x", v, p, q)
			}
		}
	})
}

// FuzzHandleSignal feeds decoded requests to a live participant (real
// peer connections, no client): the property is no panic and a server
// that still shuts down cleanly.
func FuzzHandleSignal(f *testing.F) {
	seeds := []*livekit.SignalRequest{
		{Message: &livekit.SignalRequest_AddTrack{AddTrack: &livekit.AddTrackRequest{Cid: "c1", Type: livekit.TrackType_VIDEO, Layers: []*livekit.VideoLayer{{Quality: livekit.VideoQuality_HIGH}}, SimulcastCodecs: []*livekit.SimulcastCodec{{Codec: "vp8", Cid: "c1"}}}}},
		{Message: &livekit.SignalRequest_AddTrack{AddTrack: &livekit.AddTrackRequest{Cid: "c2", Type: livekit.TrackType_DATA}}},
		{Message: &livekit.SignalRequest_Trickle{Trickle: &livekit.TrickleRequest{CandidateInit: `{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}`, Target: livekit.SignalTarget_SUBSCRIBER}}},
		{Message: &livekit.SignalRequest_Trickle{Trickle: &livekit.TrickleRequest{CandidateInit: `{`}}},
		{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"}}},
		{Message: &livekit.SignalRequest_Answer{Answer: &livekit.SessionDescription{Type: "answer", Sdp: "garbage"}}},
		{Message: &livekit.SignalRequest_Mute{Mute: &livekit.MuteTrackRequest{Sid: "TR_x", Muted: true}}},
		{Message: &livekit.SignalRequest_Subscription{Subscription: &livekit.UpdateSubscription{TrackSids: []string{"TR_x"}, Subscribe: true}}},
		{Message: &livekit.SignalRequest_TrackSetting{TrackSetting: &livekit.UpdateTrackSettings{TrackSids: []string{"TR_x"}, Quality: livekit.VideoQuality_OFF}}},
		{Message: &livekit.SignalRequest_UpdateMetadata{UpdateMetadata: &livekit.UpdateParticipantMetadata{Name: "n", RequestId: 3, Attributes: map[string]string{"a": ""}}}},
		{Message: &livekit.SignalRequest_UpdateVideoTrack{UpdateVideoTrack: &livekit.UpdateLocalVideoTrack{TrackSid: "TR_x", Width: 1}}},
		{Message: &livekit.SignalRequest_SyncState{SyncState: &livekit.SyncState{}}},
		{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: 1}}},
		// The fuzzer's subscription to a relayed simulcast track (below).
		{Message: &livekit.SignalRequest_TrackSetting{TrackSetting: &livekit.UpdateTrackSettings{TrackSids: []string{"TR_fuzz"}, Quality: livekit.VideoQuality_MEDIUM}}},
		{Message: &livekit.SignalRequest_TrackSetting{TrackSetting: &livekit.UpdateTrackSettings{TrackSids: []string{"TR_fuzz"}, Quality: -3}}}, // panicked before 9653b98
		{Message: &livekit.SignalRequest_TrackSetting{TrackSetting: &livekit.UpdateTrackSettings{TrackSids: []string{"TR_fuzz"}, Width: 1 << 30, Height: 7, Fps: 1 << 31}}},
		{Message: &livekit.SignalRequest_TrackSetting{TrackSetting: &livekit.UpdateTrackSettings{TrackSids: []string{"TR_fuzz"}, Disabled: true}}},
		{Message: &livekit.SignalRequest_Subscription{Subscription: &livekit.UpdateSubscription{TrackSids: []string{"TR_fuzz"}, Subscribe: false}}},
		{Message: &livekit.SignalRequest_Subscription{Subscription: &livekit.UpdateSubscription{TrackSids: []string{"TR_fuzz"}, Subscribe: true}}},
		{Message: &livekit.SignalRequest_SubscriptionPermission{SubscriptionPermission: &livekit.SubscriptionPermission{AllParticipants: false}}},
		{Message: &livekit.SignalRequest_SubscriptionPermission{SubscriptionPermission: &livekit.SubscriptionPermission{TrackPermissions: []*livekit.TrackPermission{
			{ParticipantIdentity: "remote", TrackSids: []string{"TR_fuzz"}}, {ParticipantSid: "PA_remote", AllTracks: true}, {}}}}},
		{Message: &livekit.SignalRequest_PublishDataTrackRequest{PublishDataTrackRequest: &livekit.PublishDataTrackRequest{PubHandle: 1, Name: "a"}}},
		{Message: &livekit.SignalRequest_PublishDataTrackRequest{PublishDataTrackRequest: &livekit.PublishDataTrackRequest{PubHandle: 2, Name: "b",
			FrameEncoding: &livekit.DataTrackFrameEncoding{Value: &livekit.DataTrackFrameEncoding_Custom{Custom: "x"}}}}},
		{Message: &livekit.SignalRequest_UnpublishDataTrackRequest{UnpublishDataTrackRequest: &livekit.UnpublishDataTrackRequest{PubHandle: 1}}},
		{Message: &livekit.SignalRequest_UpdateDataSubscription{UpdateDataSubscription: &livekit.UpdateDataSubscription{Updates: []*livekit.UpdateDataSubscription_Update{
			{TrackSid: "DTR_x", Subscribe: true}, {TrackSid: "DTR_x"}}}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Keys = map[string]string{"k": "0123456789abcdef0123456789abcdef"}
	cfg.RTC.UDPPort, cfg.RTC.TCPPort, cfg.RTC.NodeIP = 0, 0, "127.0.0.1"
	cfg.RTC.PortRangeStart, cfg.RTC.PortRangeEnd = 45000, 45999
	s, err := New(cfg, zerolog.Nop(), nil)
	if err != nil {
		f.Fatal(err)
	}
	r, _, err := s.getOrCreateRoom("fuzz", s.defaultRoomOptions(), true)
	if err != nil {
		f.Fatal(err)
	}
	grants := &auth.ClaimGrants{Identity: "fuzzer", Video: &auth.VideoGrant{RoomJoin: true, Room: "fuzz"}}
	sc := newSignalConn(s, nil) // no writer: responses pile up and are dropped below
	p, err := newParticipant(r, &verifiedToken{grants: grants}, joinParams{autoSubscribe: true, protocol: 16}, sc)
	if err != nil {
		f.Fatal(err)
	}
	// A relayed simulcast video track the fuzzer is subscribed to, so that
	// subscription and track settings reach a real downtrack.
	rr, err := s.RelayRoom("fuzz", false)
	if err != nil {
		f.Fatal(err)
	}
	remote, err := rr.AddRemoteParticipant(&livekit.ParticipantInfo{Sid: "PA_remote", Identity: "remote"}, RemoteHooks{})
	if err != nil {
		f.Fatal(err)
	}
	codec := RelayCodec{RTPCodecParameters: webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}}
	rt, err := remote.PublishTrack(&livekit.TrackInfo{Sid: "TR_fuzz", Type: livekit.TrackType_VIDEO, Simulcast: true,
		Layers: []*livekit.VideoLayer{{Quality: livekit.VideoQuality_LOW}, {Quality: livekit.VideoQuality_MEDIUM}, {Quality: livekit.VideoQuality_HIGH}}},
		codec, func(uint8) {}, func(int) {})
	if err != nil {
		f.Fatal(err)
	}
	if !p.subscribe(rt.t, false) {
		f.Fatal("the fuzzer could not subscribe to the relayed track")
	}
	f.Cleanup(func() {
		remote.Close(livekit.DisconnectReason_CLIENT_INITIATED)
		p.closePeerConnections()
		_ = s.shutdown()
		s.wg.Wait()
		_ = s.socks.close()
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeSignalRequest(websocket.MessageBinary, data)
		if err != nil {
			return
		}
		p.handleSignal(req)
		// The periodic work with a fresh REMB: bandwidth allocation over
		// the downtrack's layers, sender reports, metrics.
		p.remb.Store(400_000)
		p.rembAt.Store(time.Now().UnixNano())
		p.periodic()
		sc.mu.Lock()
		sc.queue = nil
		sc.mu.Unlock()
	})
}
