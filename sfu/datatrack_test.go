package sfu_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// dtClient is a bare single peer connection client (livekit-client's
// /rtc/v1 join request) with a _data_track channel, as livekit-client
// opens it: it publishes and receives data track packets and reads every
// signal message the test does not handle itself.
type dtClient struct {
	t        *testing.T
	identity string
	sid      string
	v0       bool // two peer connections (/rtc): receives on the subscriber connection
	ws       *websocket.Conn
	pc       *webrtc.PeerConnection
	dc       *webrtc.DataChannel
	msgs     chan *livekit.SignalResponse
	pkts     chan []byte
}

func joinDT(t *testing.T, ts *testServer, room, identity string, mut func(*auth.VideoGrant), autoData bool) *dtClient {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	c := &dtClient{t: t, identity: identity, pc: pc, msgs: make(chan *livekit.SignalResponse, 1024), pkts: make(chan []byte, 1024)}
	ordered, zero := false, uint16(0)
	c.dc, err = pc.CreateDataChannel("_data_track", &webrtc.DataChannelInit{Ordered: &ordered, MaxRetransmits: &zero})
	require.NoError(t, err)
	opened := make(chan struct{})
	c.dc.OnOpen(func() { close(opened) })
	c.dc.OnMessage(func(m webrtc.DataChannelMessage) { c.pkts <- m.Data })
	offer, err := pc.CreateOffer(nil)
	require.NoError(t, err)
	gathered := webrtc.GatheringCompletePromise(pc)
	require.NoError(t, pc.SetLocalDescription(offer))
	<-gathered
	q := url.Values{"access_token": {ts.token(t, room, identity, mut)}, "join_request": {encodeJoinRequest(t, &livekit.JoinRequest{
		ClientInfo:         &livekit.ClientInfo{Sdk: livekit.ClientInfo_JS, Protocol: 16, Version: "2.23.0"},
		ConnectionSettings: &livekit.ConnectionSettings{AutoSubscribe: true, AutoSubscribeDataTrack: proto.Bool(autoData)},
		PublisherOffer:     &livekit.SessionDescription{Type: "offer", Sdp: pc.LocalDescription().SDP, Id: 1},
	})}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.ws, _, err = websocket.Dial(ctx, ts.url+"/rtc?"+q.Encode(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.ws.CloseNow() })
	join := readSignal(t, c.ws).GetJoin()
	require.NotNil(t, join)
	c.sid = join.GetParticipant().GetSid()
	go c.read()
	select {
	case <-opened:
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: _data_track channel not open", identity)
	}
	return c
}

// joinDTv0 joins over /rtc with two peer connections as an older client
// does, with auto_subscribe_data_track=1, and receives on the _data_track
// channel the SFU opens on the subscriber connection (it publishes nothing).
func joinDTv0(t *testing.T, ts *testServer, room, identity string) *dtClient {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	c := &dtClient{t: t, identity: identity, pc: pc, v0: true, msgs: make(chan *livekit.SignalResponse, 1024), pkts: make(chan []byte, 1024)}
	opened := make(chan struct{})
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		if dc.Label() != "_data_track" {
			return
		}
		dc.OnOpen(func() { close(opened) })
		dc.OnMessage(func(m webrtc.DataChannelMessage) { c.pkts <- m.Data })
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.ws, _, err = websocket.Dial(ctx, ts.url+"/rtc?protocol=15&sdk=js&auto_subscribe_data_track=1&access_token="+ts.token(t, room, identity, nil), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.ws.CloseNow() })
	join := readSignal(t, c.ws).GetJoin()
	require.NotNil(t, join)
	c.sid = join.GetParticipant().GetSid()
	go c.read()
	select {
	case <-opened:
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: the subscriber connection's _data_track channel not open", identity)
	}
	return c
}

// answer answers the SFU's subscriber offer (v0), candidates included.
func (c *dtClient) answer(o *livekit.SessionDescription) {
	if c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: o.GetSdp()}) != nil {
		return
	}
	a, err := c.pc.CreateAnswer(nil)
	if err != nil {
		return
	}
	gathered := webrtc.GatheringCompletePromise(c.pc)
	if c.pc.SetLocalDescription(a) != nil {
		return
	}
	<-gathered
	b, _ := proto.Marshal(&livekit.SignalRequest{Message: &livekit.SignalRequest_Answer{Answer: &livekit.SessionDescription{
		Type: "answer", Sdp: c.pc.LocalDescription().SDP, Id: o.GetId()}}})
	_ = c.ws.Write(context.Background(), websocket.MessageBinary, b)
}

// read applies the answer (v0: answers the offer) and the server's
// candidates, and queues the rest.
func (c *dtClient) read() {
	for {
		_, data, err := c.ws.Read(context.Background())
		if err != nil {
			close(c.msgs)
			return
		}
		res := &livekit.SignalResponse{}
		if proto.Unmarshal(data, res) != nil {
			continue
		}
		switch {
		case c.v0 && res.GetOffer() != nil:
			c.answer(res.GetOffer())
		case res.GetAnswer() != nil:
			_ = c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: res.GetAnswer().GetSdp()})
		case res.GetTrickle() != nil:
			var ci webrtc.ICECandidateInit
			if json.Unmarshal([]byte(res.GetTrickle().GetCandidateInit()), &ci) == nil {
				_ = c.pc.AddICECandidate(ci)
			}
		default:
			c.msgs <- res
		}
	}
}

func (c *dtClient) send(req *livekit.SignalRequest) {
	c.t.Helper()
	writeSignal(c.t, c.ws, req)
}

// await returns the next signal message for which match holds.
func (c *dtClient) await(what string, match func(*livekit.SignalResponse) bool) *livekit.SignalResponse {
	c.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case res, ok := <-c.msgs:
			require.True(c.t, ok, "%s: signal closed waiting for %s", c.identity, what)
			if match(res) {
				return res
			}
		case <-deadline:
			c.t.Fatalf("%s: no %s", c.identity, what)
		}
	}
}

// awaitHandles returns the next handle map and the handle of sid in it (0: none).
func (c *dtClient) awaitHandles(sid string, present bool) uint16 {
	c.t.Helper()
	var h uint16
	c.await("data track handles", func(res *livekit.SignalResponse) bool {
		m := res.GetDataTrackSubscriberHandles()
		if m == nil {
			return false
		}
		h = 0
		for handle, pt := range m.GetSubHandles() {
			if pt.GetTrackSid() == sid {
				h = uint16(handle)
			}
		}
		return (h != 0) == present
	})
	return h
}

func (c *dtClient) awaitRefusal(reason livekit.RequestResponse_Reason) *livekit.RequestResponse {
	c.t.Helper()
	return c.await("request_response "+reason.String(), func(res *livekit.SignalResponse) bool {
		return res.GetRequestResponse().GetReason() == reason
	}).GetRequestResponse()
}

func (c *dtClient) publishData(handle uint32, name string) {
	c.send(&livekit.SignalRequest{Message: &livekit.SignalRequest_PublishDataTrackRequest{PublishDataTrackRequest: &livekit.PublishDataTrackRequest{PubHandle: handle, Name: name}}})
}

func (c *dtClient) subscribeData(sid string, on bool) {
	c.send(&livekit.SignalRequest{Message: &livekit.SignalRequest_UpdateDataSubscription{UpdateDataSubscription: &livekit.UpdateDataSubscription{
		Updates: []*livekit.UpdateDataSubscription_Update{{TrackSid: sid, Subscribe: on}}}}})
}

// awaitPacket returns the next data track packet.
func (c *dtClient) awaitPacket() []byte {
	c.t.Helper()
	select {
	case b := <-c.pkts:
		return b
	case <-time.After(10 * time.Second):
		c.t.Fatalf("%s: no data track packet", c.identity)
		return nil
	}
}

// dataTrackPacket is a data track packet as livekit-client's packetizer
// writes it: a single-packet frame without extensions.
func dataTrackPacket(handle, seq uint16, payload string) []byte {
	b := make([]byte, 12, 12+len(payload))
	b[0] = 1<<4 | 1<<3
	binary.BigEndian.PutUint16(b[2:], handle)
	binary.BigEndian.PutUint16(b[4:], seq)
	binary.BigEndian.PutUint16(b[6:], seq)
	binary.BigEndian.PutUint32(b[8:], uint32(seq)*1000)
	return append(b, payload...)
}

func metricWith(t *testing.T, ts *testServer, name, label, value string) float64 {
	t.Helper()
	mfs, err := ts.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestDataTracks: a data track is published with livekit-server's checks,
// shows in its publisher's info, and its packets reach exactly the
// participants subscribed to it (on request, or all with
// auto_subscribe_data_track), each copy carrying the subscriber's handle
// and otherwise unchanged; the publisher's subscription permission, an
// unsubscription, an unpublication and the publisher's leave end
// subscriptions.
func TestDataTracks(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := joinDT(t, ts, "dt", "alice", nil, false)
	bob := joinDT(t, ts, "dt", "bob", nil, false)
	carol := joinDT(t, ts, "dt", "carol", nil, true)
	dave := joinDT(t, ts, "dt", "dave", nil, false) // never subscribes
	erin := joinDTv0(t, ts, "dt", "erin")           // two peer connections, auto_subscribe_data_track=1 on /rtc
	viewer := joinDT(t, ts, "dt", "viewer", func(g *auth.VideoGrant) { g.SetCanPublishData(false) }, false)

	// Refused, as livekit-server refuses them.
	viewer.publishData(1, "x")
	require.EqualValues(t, 1, viewer.awaitRefusal(livekit.RequestResponse_NOT_ALLOWED).GetPublishDataTrack().GetPubHandle())
	alice.publishData(0, "x")
	alice.awaitRefusal(livekit.RequestResponse_INVALID_HANDLE)
	alice.publishData(70000, "x")
	alice.awaitRefusal(livekit.RequestResponse_INVALID_HANDLE)
	alice.publishData(1, "")
	alice.awaitRefusal(livekit.RequestResponse_INVALID_NAME)
	alice.publishData(1, strings.Repeat("n", 257))
	alice.awaitRefusal(livekit.RequestResponse_INVALID_NAME)
	alice.send(&livekit.SignalRequest{Message: &livekit.SignalRequest_PublishDataTrackRequest{PublishDataTrackRequest: &livekit.PublishDataTrackRequest{
		PubHandle: 1, Name: "x", FrameEncoding: &livekit.DataTrackFrameEncoding{Value: &livekit.DataTrackFrameEncoding_Custom{Custom: strings.Repeat("e", 33)}}}}})
	alice.awaitRefusal(livekit.RequestResponse_INVALID_REQUEST)

	alice.publishData(7, "geo")
	info := alice.await("publish_data_track_response", func(res *livekit.SignalResponse) bool { return res.GetPublishDataTrackResponse() != nil }).GetPublishDataTrackResponse().GetInfo()
	sid := info.GetSid()
	require.True(t, strings.HasPrefix(sid, "DTR_"), sid)
	require.EqualValues(t, 7, info.GetPubHandle())
	require.Equal(t, "geo", info.GetName())
	alice.publishData(7, "other")
	alice.awaitRefusal(livekit.RequestResponse_DUPLICATE_HANDLE)
	alice.publishData(8, "geo")
	alice.awaitRefusal(livekit.RequestResponse_DUPLICATE_NAME)
	require.EqualValues(t, 1, ts.metric(t, "gxconf_sfu_published_data_tracks"))

	aliceInfo := func(c *dtClient, withTrack bool) {
		c.t.Helper()
		c.await("alice's info", func(res *livekit.SignalResponse) bool {
			for _, p := range res.GetUpdate().GetParticipants() {
				if p.GetIdentity() == "alice" && (len(p.GetDataTracks()) == 1 && p.GetDataTracks()[0].GetSid() == sid) == withTrack {
					return true
				}
			}
			return false
		})
	}
	aliceInfo(bob, true)
	carolHandle := carol.awaitHandles(sid, true) // auto_subscribe_data_track
	erinHandle := erin.awaitHandles(sid, true)
	bob.subscribeData(sid, true)
	bobHandle := bob.awaitHandles(sid, true)
	dave.subscribeData("DTR_nothing", true) // an unknown track: nothing

	const n = 5
	for i := range n {
		require.NoError(t, alice.dc.Send(dataTrackPacket(7, uint16(i), "frame-"+string(rune('a'+i)))))
	}
	for _, c := range []struct {
		c      *dtClient
		handle uint16
	}{{bob, bobHandle}, {carol, carolHandle}, {erin, erinHandle}} {
		for i := range n {
			got := c.c.awaitPacket()
			want := dataTrackPacket(c.handle, uint16(i), "frame-"+string(rune('a'+i)))
			require.Equal(t, want, got, "%s's copy of packet %d: its handle, the rest unchanged", c.c.identity, i)
		}
	}
	require.NoError(t, alice.dc.Send(dataTrackPacket(9, 1, "no such handle")))
	require.NoError(t, alice.dc.Send([]byte{1, 2, 3}))
	require.Eventually(t, func() bool {
		return metricWith(t, ts, "gxconf_sfu_data_track_packets_total", "outcome", "unknown_handle") == 1 &&
			metricWith(t, ts, "gxconf_sfu_data_track_packets_total", "outcome", "malformed") == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 3*n, metricWith(t, ts, "gxconf_sfu_data_track_packets_total", "outcome", "sent"), "dave, who did not subscribe, got copies")
	require.Empty(t, dave.pkts)

	// alice lets only carol subscribe: bob and erin are told and lose the track.
	alice.send(&livekit.SignalRequest{Message: &livekit.SignalRequest_SubscriptionPermission{SubscriptionPermission: &livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{{ParticipantIdentity: "carol", AllTracks: true}}}}})
	bob.await("permission denied", func(res *livekit.SignalResponse) bool {
		u := res.GetSubscriptionPermissionUpdate()
		return u.GetTrackSid() == sid && u.GetParticipantSid() == alice.sid && !u.GetAllowed()
	})
	bob.awaitHandles(sid, false)
	erin.awaitHandles(sid, false)
	require.NoError(t, alice.dc.Send(dataTrackPacket(7, 10, "for carol")))
	require.Equal(t, dataTrackPacket(carolHandle, 10, "for carol"), carol.awaitPacket())
	require.EqualValues(t, 3*n+1, metricWith(t, ts, "gxconf_sfu_data_track_packets_total", "outcome", "sent"), "bob or erin got a copy after the revocation")
	// A grant gives it back (his wish was kept).
	alice.send(&livekit.SignalRequest{Message: &livekit.SignalRequest_SubscriptionPermission{SubscriptionPermission: &livekit.SubscriptionPermission{AllParticipants: true}}})
	bob.await("permission granted", func(res *livekit.SignalResponse) bool {
		u := res.GetSubscriptionPermissionUpdate()
		return u.GetTrackSid() == sid && u.GetAllowed()
	})
	bobHandle = bob.awaitHandles(sid, true)
	erinHandle = erin.awaitHandles(sid, true)
	require.NoError(t, alice.dc.Send(dataTrackPacket(7, 11, "for all")))
	require.Equal(t, dataTrackPacket(bobHandle, 11, "for all"), bob.awaitPacket())
	require.Equal(t, dataTrackPacket(carolHandle, 11, "for all"), carol.awaitPacket())
	require.Equal(t, dataTrackPacket(erinHandle, 11, "for all"), erin.awaitPacket())

	// bob unsubscribes; alice unpublishes, and carol's subscription ends.
	bob.subscribeData(sid, false)
	bob.awaitHandles(sid, false)
	alice.send(&livekit.SignalRequest{Message: &livekit.SignalRequest_UnpublishDataTrackRequest{UnpublishDataTrackRequest: &livekit.UnpublishDataTrackRequest{PubHandle: 7}}})
	require.Equal(t, sid, alice.await("unpublish_data_track_response", func(res *livekit.SignalResponse) bool {
		return res.GetUnpublishDataTrackResponse() != nil
	}).GetUnpublishDataTrackResponse().GetInfo().GetSid())
	carol.awaitHandles(sid, false)
	aliceInfo(bob, false)
	alice.send(&livekit.SignalRequest{Message: &livekit.SignalRequest_UnpublishDataTrackRequest{UnpublishDataTrackRequest: &livekit.UnpublishDataTrackRequest{PubHandle: 7}}})
	alice.awaitRefusal(livekit.RequestResponse_NOT_FOUND)

	// A publisher that leaves takes its data tracks with it.
	alice.publishData(3, "geo2")
	sid2 := alice.await("publish_data_track_response", func(res *livekit.SignalResponse) bool { return res.GetPublishDataTrackResponse() != nil }).GetPublishDataTrackResponse().GetInfo().GetSid()
	carol.awaitHandles(sid2, true)
	alice.send(&livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})
	carol.awaitHandles(sid2, false)
	require.Zero(t, ts.metric(t, "gxconf_sfu_published_data_tracks"))
}
