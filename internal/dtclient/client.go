package dtclient

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// timeout bounds every wait of the client.
const timeout = 15 * time.Second

// Client is one participant's signal socket and peer connection.
type Client struct {
	Identity string
	Sid      string
	// DC is the _data_track channel the client publishes on (nil for a
	// client joined with JoinV0, which only receives).
	DC *webrtc.DataChannel
	// Pkts receives the data track packets that arrive for the client.
	Pkts chan []byte

	t    testing.TB
	v0   bool
	ws   *websocket.Conn
	pc   *webrtc.PeerConnection
	msgs chan *livekit.SignalResponse
}

func newClient(t testing.TB, identity string, v0 bool) *Client {
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	return &Client{Identity: identity, t: t, v0: v0, pc: pc,
		msgs: make(chan *livekit.SignalResponse, 1024), Pkts: make(chan []byte, 1024)}
}

// Join joins with one peer connection as livekit-client 2.23 does (a
// join_request carrying the offer, on /rtc), the _data_track channel
// opened by the client; it returns once the channel is open. wsURL is the
// server's ws:// base URL.
func Join(t testing.TB, wsURL, identity, token string, autoData bool) *Client {
	t.Helper()
	c := newClient(t, identity, false)
	ordered, zero := false, uint16(0)
	var err error
	c.DC, err = c.pc.CreateDataChannel("_data_track", &webrtc.DataChannelInit{Ordered: &ordered, MaxRetransmits: &zero})
	require.NoError(t, err)
	opened := make(chan struct{})
	c.DC.OnOpen(func() { close(opened) })
	c.DC.OnMessage(func(m webrtc.DataChannelMessage) { c.Pkts <- m.Data })
	offer, err := c.pc.CreateOffer(nil)
	require.NoError(t, err)
	gathered := webrtc.GatheringCompletePromise(c.pc)
	require.NoError(t, c.pc.SetLocalDescription(offer))
	<-gathered
	q := url.Values{"access_token": {token}, "join_request": {EncodeJoinRequest(t, &livekit.JoinRequest{
		ClientInfo:         &livekit.ClientInfo{Sdk: livekit.ClientInfo_JS, Protocol: 16, Version: "2.23.0"},
		ConnectionSettings: &livekit.ConnectionSettings{AutoSubscribe: true, AutoSubscribeDataTrack: proto.Bool(autoData)},
		PublisherOffer:     &livekit.SessionDescription{Type: "offer", Sdp: c.pc.LocalDescription().SDP, Id: 1},
	})}}
	c.dial(wsURL + "/rtc?" + q.Encode())
	c.waitOpen(opened, "_data_track channel")
	return c
}

// JoinV0 joins over /rtc with two peer connections as an older client
// does, with auto_subscribe_data_track=1, and receives on the _data_track
// channel the server opens on the subscriber connection (it publishes
// nothing); it returns once that channel is open.
func JoinV0(t testing.TB, wsURL, identity, token string) *Client {
	t.Helper()
	c := newClient(t, identity, true)
	opened := make(chan struct{})
	c.pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		if dc.Label() != "_data_track" {
			return
		}
		dc.OnOpen(func() { close(opened) })
		dc.OnMessage(func(m webrtc.DataChannelMessage) { c.Pkts <- m.Data })
	})
	c.dial(wsURL + "/rtc?protocol=15&sdk=js&auto_subscribe_data_track=1&access_token=" + url.QueryEscape(token))
	c.waitOpen(opened, "subscriber connection's _data_track channel")
	return c
}

func (c *Client) dial(u string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, u, nil)
	require.NoError(c.t, err)
	c.ws = ws
	c.t.Cleanup(func() { _ = ws.CloseNow() })
	_, data, err := ws.Read(ctx)
	require.NoError(c.t, err)
	first := &livekit.SignalResponse{}
	require.NoError(c.t, proto.Unmarshal(data, first))
	require.NotNil(c.t, first.GetJoin(), "first message is not the join response")
	c.Sid = first.GetJoin().GetParticipant().GetSid()
	go c.read()
}

func (c *Client) waitOpen(opened chan struct{}, what string) {
	c.t.Helper()
	select {
	case <-opened:
	case <-time.After(timeout):
		c.t.Fatalf("%s: %s not open", c.Identity, what)
	}
}

// read applies the answer (v0: answers the offer) and the server's
// candidates, and queues the rest.
func (c *Client) read() {
	defer close(c.msgs)
	for {
		_, data, err := c.ws.Read(context.Background())
		if err != nil {
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

// answer answers the server's subscriber offer (v0), candidates included.
func (c *Client) answer(o *livekit.SessionDescription) {
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

// Send writes a signal request.
func (c *Client) Send(req *livekit.SignalRequest) {
	c.t.Helper()
	b, err := proto.Marshal(req)
	require.NoError(c.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	require.NoError(c.t, c.ws.Write(ctx, websocket.MessageBinary, b))
}

// Await returns the next signal message for which match holds.
func (c *Client) Await(what string, match func(*livekit.SignalResponse) bool) *livekit.SignalResponse {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case res, ok := <-c.msgs:
			require.True(c.t, ok, "%s: signal closed waiting for %s", c.Identity, what)
			if match(res) {
				return res
			}
		case <-deadline:
			c.t.Fatalf("%s: no %s", c.Identity, what)
		}
	}
}

// AwaitHandles waits for a handle map with (present) or without sid and
// returns the handle of sid in it (0: none).
func (c *Client) AwaitHandles(sid string, present bool) uint16 {
	c.t.Helper()
	var h uint16
	c.Await("data track handles", func(res *livekit.SignalResponse) bool {
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

// AwaitRefusal waits for a request_response with reason.
func (c *Client) AwaitRefusal(reason livekit.RequestResponse_Reason) *livekit.RequestResponse {
	c.t.Helper()
	return c.Await("request_response "+reason.String(), func(res *livekit.SignalResponse) bool {
		return res.GetRequestResponse().GetReason() == reason
	}).GetRequestResponse()
}

// Publish asks to publish a data track.
func (c *Client) Publish(handle uint32, name string) {
	c.t.Helper()
	c.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_PublishDataTrackRequest{PublishDataTrackRequest: &livekit.PublishDataTrackRequest{PubHandle: handle, Name: name}}})
}

// Published publishes a data track and returns its info.
func (c *Client) Published(handle uint32, name string) *livekit.DataTrackInfo {
	c.t.Helper()
	c.Publish(handle, name)
	return c.Await("publish_data_track_response", func(res *livekit.SignalResponse) bool {
		return res.GetPublishDataTrackResponse().GetInfo().GetPubHandle() == handle
	}).GetPublishDataTrackResponse().GetInfo()
}

// Subscribe subscribes to (on) or unsubscribes from a data track.
func (c *Client) Subscribe(sid string, on bool) {
	c.t.Helper()
	c.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_UpdateDataSubscription{UpdateDataSubscription: &livekit.UpdateDataSubscription{
		Updates: []*livekit.UpdateDataSubscription_Update{{TrackSid: sid, Subscribe: on}}}}})
}

// AwaitPacket returns the next data track packet.
func (c *Client) AwaitPacket() []byte {
	c.t.Helper()
	select {
	case b := <-c.Pkts:
		return b
	case <-time.After(timeout):
		c.t.Fatalf("%s: no data track packet", c.Identity)
		return nil
	}
}

// Packet is a data track packet as livekit-client's packetizer writes it:
// a single-packet frame without extensions.
func Packet(handle, seq uint16, payload string) []byte {
	b := make([]byte, 12, 12+len(payload))
	b[0] = 1<<4 | 1<<3
	binary.BigEndian.PutUint16(b[2:], handle)
	binary.BigEndian.PutUint16(b[4:], seq)
	binary.BigEndian.PutUint16(b[6:], seq)
	binary.BigEndian.PutUint32(b[8:], uint32(seq)*1000)
	return append(b, payload...)
}

// EncodeJoinRequest is the join_request parameter as livekit-client
// writes it: a gzipped JoinRequest in a WrappedJoinRequest, base64url.
func EncodeJoinRequest(t testing.TB, jr *livekit.JoinRequest) string {
	t.Helper()
	b, err := proto.Marshal(jr)
	require.NoError(t, err)
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	_, err = w.Write(b)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	wb, err := proto.Marshal(&livekit.WrappedJoinRequest{Compression: livekit.WrappedJoinRequest_GZIP, JoinRequest: z.Bytes()})
	require.NoError(t, err)
	return base64.URLEncoding.EncodeToString(wb)
}
