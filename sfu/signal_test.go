package sfu_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gxfs-conf/gxconf/internal/dtclient"
	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/turn/v5"
	"github.com/stretchr/testify/require"
	"github.com/twitchtv/twirp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func httpURL(ts *testServer) string { return "http" + strings.TrimPrefix(ts.url, "ws") }

// rawJoin opens /rtc with a bare WebSocket and returns it with the first
// (JoinResponse) message.
func rawJoin(t *testing.T, ts *testServer, room, identity, query string) (*websocket.Conn, *livekit.SignalResponse) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+ts.token(t, room, identity, nil))
	ws, _, err := websocket.Dial(ctx, ts.url+"/rtc?protocol=16&sdk=go"+query, &websocket.DialOptions{HTTPHeader: h})
	require.NoError(t, err)
	first := readSignal(t, ws)
	return ws, first
}

func readSignal(t *testing.T, ws *websocket.Conn) *livekit.SignalResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, data, err := ws.Read(ctx)
	require.NoError(t, err)
	require.Equal(t, websocket.MessageBinary, typ)
	res := &livekit.SignalResponse{}
	require.NoError(t, proto.Unmarshal(data, res))
	return res
}

// joinedRaw opens /rtc with a bare WebSocket for identity, with the grant
// mut makes (nil: join only), checks the join response and closes the
// socket at the end.
func joinedRaw(t *testing.T, ts *testServer, room, identity string, mut func(*auth.VideoGrant)) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, ts.url+"/rtc?protocol=16&sdk=go&access_token="+ts.token(t, room, identity, mut), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.CloseNow() })
	require.NotNil(t, readSignal(t, ws).GetJoin())
	return ws
}

// writeSignal sends req on a raw signal socket.
func writeSignal(t *testing.T, ws *websocket.Conn, req *livekit.SignalRequest) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := proto.Marshal(req)
	require.NoError(t, err)
	require.NoError(t, ws.Write(ctx, websocket.MessageBinary, b))
}

// TestJoinResponse checks the first message and ping/pong over a raw socket.
func TestJoinResponse(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, func(c *sfuConfig) {
		c.RTC.STUNServers = []string{"127.0.0.1:3478"}
		c.RTC.TURNServers = []sfu.TURNServer{{URLs: []string{"turn:127.0.0.1:3478?transport=udp"}, Username: "u", Credential: "c"}}
	})
	bob := ts.join(t, "jr", "bob", nil)
	ws, first := rawJoin(t, ts, "jr", "alice", "")
	defer ws.CloseNow()
	j := first.GetJoin()
	require.NotNil(t, j, "first message must be join")
	require.Equal(t, "jr", j.GetRoom().GetName())
	require.True(t, strings.HasPrefix(j.GetRoom().GetSid(), "RM_"))
	require.Equal(t, "alice", j.GetParticipant().GetIdentity())
	require.True(t, strings.HasPrefix(j.GetParticipant().GetSid(), "PA_"))
	require.Len(t, j.GetOtherParticipants(), 1)
	require.Equal(t, bob.room.LocalParticipant.SID(), j.GetOtherParticipants()[0].GetSid())
	require.NotEmpty(t, j.GetServerInfo().GetVersion())
	require.Equal(t, j.GetServerInfo().GetVersion(), j.GetServerVersion())
	require.True(t, j.GetSubscriberPrimary())
	require.True(t, j.GetFastPublish())
	require.EqualValues(t, 5, j.GetPingInterval())
	require.EqualValues(t, 15, j.GetPingTimeout())
	require.Equal(t, livekit.ClientConfigSetting_ENABLED, j.GetClientConfiguration().GetResumeConnection())
	require.Len(t, j.GetIceServers(), 2)
	require.Equal(t, []string{"stun:127.0.0.1:3478"}, j.GetIceServers()[0].GetUrls())
	require.Equal(t, "u", j.GetIceServers()[1].GetUsername())
	require.Equal(t, "c", j.GetIceServers()[1].GetCredential())

	// The subscriber offer follows (subscriber primary), with data channels,
	// before any subscriber candidate; room broadcasts may come between.
	var off *livekit.SessionDescription
	for off == nil {
		m := readSignal(t, ws)
		if tr := m.GetTrickle(); tr != nil {
			require.NotEqual(t, livekit.SignalTarget_SUBSCRIBER, tr.GetTarget(), "candidate before the offer")
		}
		off = m.GetOffer()
	}
	require.Contains(t, off.GetSdp(), "m=application")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	send := func(req *livekit.SignalRequest) { writeSignal(t, ws, req) }
	send(&livekit.SignalRequest{Message: &livekit.SignalRequest_Ping{Ping: 42}})
	send(&livekit.SignalRequest{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: 4242}}})
	var pong, pongResp bool
	for !(pong && pongResp) {
		m := readSignal(t, ws)
		switch v := m.Message.(type) {
		case *livekit.SignalResponse_Pong:
			pong = true
		case *livekit.SignalResponse_PongResp:
			require.EqualValues(t, 4242, v.PongResp.GetLastPingTimestamp())
			pongResp = true
		}
	}
	// A JSON (text) request gets JSON answers.
	require.NoError(t, ws.Write(ctx, websocket.MessageText, []byte(`{"ping":"7"}`)))
	for {
		typ, data, err := ws.Read(ctx)
		require.NoError(t, err)
		if typ == websocket.MessageText && bytes.Contains(data, []byte(`"pong"`)) {
			break
		}
	}
	send(&livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{Reason: livekit.DisconnectReason_CLIENT_INITIATED}}})
	require.Eventually(t, func() bool { return bob.room.GetParticipantByIdentity("alice") == nil }, 5*time.Second, 20*time.Millisecond)
}

// TestMalformedFrame: an empty frame or an unknown message is ignored;
// garbage closes that one connection with a clear reason; the room and its
// other participants carry on.
func TestMalformedFrame(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	bob := ts.join(t, "mal", "bob", nil)
	bob.publish(t, loadtest.PublishOptions{Audio: true})
	ws := joinedRaw(t, ts, "mal", "mallory", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// An empty frame and a message type this server does not know (field
	// 999) are ignored, as livekit-server does: the session stays and
	// answers the next ping.
	require.NoError(t, ws.Write(ctx, websocket.MessageBinary, nil))
	require.NoError(t, ws.Write(ctx, websocket.MessageBinary, protowire.AppendVarint(protowire.AppendTag(nil, 999, protowire.VarintType), 1)))
	ping, err := proto.Marshal(&livekit.SignalRequest{Message: &livekit.SignalRequest_Ping{Ping: 9}})
	require.NoError(t, err)
	require.NoError(t, ws.Write(ctx, websocket.MessageBinary, ping))
	for {
		m := readSignal(t, ws)
		if m.GetPong() != 0 {
			break
		}
	}

	require.NoError(t, ws.Write(ctx, websocket.MessageBinary, []byte{0xff, 0xff, 0xff, 0x01, 0x02}))
	for err == nil {
		_, _, err = ws.Read(ctx)
	}
	require.Equal(t, websocket.StatusInvalidFramePayloadData, websocket.CloseStatus(err), "got %v", err)
	var ce websocket.CloseError
	require.True(t, errors.As(err, &ce))
	require.Contains(t, ce.Reason, "malformed signal request")

	require.Eventually(t, func() bool { return bob.room.GetParticipantByIdentity("mallory") == nil }, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, lksdk.ConnectionStateConnected, bob.room.ConnectionState())
	carol := ts.join(t, "mal", "carol", nil)
	carol.waitAudio(t, "bob")
}

func (c *client) waitAudio(t *testing.T, from string) {
	t.Helper()
	require.Eventually(t, func() bool {
		a := c.stream(from + "/audio")
		return a != nil && a.Frames.Load() >= 10
	}, 15*time.Second, 20*time.Millisecond)
}

// TestBadToken: a wrong signature, an unknown key and a missing grant are
// refused before the upgrade; the room keeps running.
func TestBadToken(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	bob := ts.join(t, "bt", "bob", nil)
	forged, err := auth.NewAccessToken(ts.key, "not-the-secret-not-the-secret-xx").SetIdentity("eve").
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: "bt"}).SetValidFor(time.Hour).ToJWT()
	require.NoError(t, err)
	unknown, err := auth.NewAccessToken("nokey", ts.secret).SetIdentity("eve").
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: "bt"}).SetValidFor(time.Hour).ToJWT()
	require.NoError(t, err)
	noJoin := ts.adminToken(t, &auth.VideoGrant{RoomList: true})
	for name, tok := range map[string]string{"forged": forged, "unknown key": unknown, "no join grant": noJoin, "empty": ""} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, res, err := websocket.Dial(ctx, ts.url+"/rtc?access_token="+tok, nil)
			require.Error(t, err)
			require.NotNil(t, res)
			require.Equal(t, http.StatusUnauthorized, res.StatusCode)
			v, err := http.Get(httpURL(ts) + "/rtc/validate?access_token=" + tok)
			require.NoError(t, err)
			body, _ := io.ReadAll(v.Body)
			v.Body.Close()
			require.Equal(t, http.StatusUnauthorized, v.StatusCode)
			require.Equal(t, "*", v.Header.Get("Access-Control-Allow-Origin"))
			if tok != "" {
				require.NotContains(t, string(body), tok)
			}
		})
	}
	v, err := http.Get(httpURL(ts) + "/rtc/validate?access_token=" + ts.token(t, "bt", "zed", nil))
	require.NoError(t, err)
	body, _ := io.ReadAll(v.Body)
	v.Body.Close()
	require.Equal(t, http.StatusOK, v.StatusCode)
	require.Equal(t, "success", string(body))
	require.Equal(t, lksdk.ConnectionStateConnected, bob.room.ConnectionState())
}

// TestReconnectUnknown: a resume attempt is answered with Leave{RECONNECT}.
func TestReconnectUnknown(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	ws, first := rawJoin(t, ts, "rc", "alice", "&reconnect=1&sid=PA_unknown")
	defer ws.CloseNow()
	l := first.GetLeave()
	require.NotNil(t, l, "first message must be leave, got %v", first)
	require.Equal(t, livekit.LeaveRequest_RECONNECT, l.GetAction())
	require.Equal(t, livekit.DisconnectReason_STATE_MISMATCH, l.GetReason())
}

// TestDataPackets: destinations are honoured, the sender identity is set
// by the server, canPublishData is enforced.
func TestDataPackets(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := ts.join(t, "data", "alice", nil)
	bob := ts.join(t, "data", "bob", nil)
	carol := ts.join(t, "data", "carol", nil)
	f := false
	mute := ts.join(t, "data", "mute", func(g *auth.VideoGrant) { g.CanPublishData = &f })

	require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("to-bob")),
		lksdk.WithDataPublishReliable(true), lksdk.WithDataPublishDestination([]string{"bob"}), lksdk.WithDataPublishTopic("t1")))
	require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("to-all")), lksdk.WithDataPublishReliable(true)))
	require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("lossy")), lksdk.WithDataPublishReliable(false)))
	require.NoError(t, mute.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("forbidden")), lksdk.WithDataPublishReliable(true)))

	has := func(c *client, from, payload string) bool {
		for _, d := range c.dataFrom(from) {
			if d.payload == payload {
				return true
			}
		}
		return false
	}
	require.Eventually(t, func() bool {
		return has(bob, "alice", "to-bob") && has(bob, "alice", "to-all") && has(carol, "alice", "to-all") && has(mute, "alice", "to-all")
	}, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return has(bob, "alice", "lossy") }, 10*time.Second, 20*time.Millisecond)
	big := strings.Repeat("0123456789", 2000) // larger than the initial read buffer
	require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte(big)), lksdk.WithDataPublishReliable(true)))
	require.Eventually(t, func() bool { return has(carol, "alice", big) }, 10*time.Second, 20*time.Millisecond)
	for _, d := range bob.dataFrom("alice") {
		if d.payload == "to-bob" {
			require.Equal(t, "t1", d.topic)
		}
	}
	// Server data via Twirp reaches only the destination.
	rs := lksdk.NewRoomServiceClient(httpURL(ts), ts.key, ts.secret)
	_, err := rs.SendData(context.Background(), &livekit.SendDataRequest{Room: "data", Data: []byte("from-server"), Kind: livekit.DataPacket_RELIABLE, DestinationIdentities: []string{"carol"}})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return has(carol, "", "from-server") }, 10*time.Second, 20*time.Millisecond)

	// Ordered channel: everything sent after "forbidden" and before this
	// marker has arrived, so its absence is observable now.
	require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("marker")), lksdk.WithDataPublishReliable(true)))
	require.Eventually(t, func() bool { return has(bob, "alice", "marker") }, 10*time.Second, 20*time.Millisecond)
	require.False(t, has(bob, "mute", "forbidden"))
	require.False(t, has(carol, "alice", "to-bob"))
	require.False(t, has(bob, "", "from-server"))
}

// userToSids is a user packet addressed by participant sid only, as older
// SDKs (the FFI ones' publishData destination) still send it.
type userToSids struct {
	payload string
	sids    []string
}

func (u userToSids) ToProto() *livekit.DataPacket {
	return &livekit.DataPacket{Value: &livekit.DataPacket_User{User: &livekit.UserPacket{
		Payload: []byte(u.payload), DestinationSids: u.sids,
	}}}
}

// TestDataPacketsBySid: a packet addressed by participant sid (the
// deprecated destination_sids livekit-server still honours) reaches only
// those participants, from a client and from RoomService.SendData; one
// addressed to sids of nobody in the room reaches nobody — not everyone.
func TestDataPacketsBySid(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.join(t, "bysid", "alice", nil)
	bob := ts.join(t, "bysid", "bob", nil)
	carol := ts.join(t, "bysid", "carol", nil)
	bobSid := bob.room.LocalParticipant.SID()
	require.NotEmpty(t, bobSid)
	has := func(c *client, from, payload string) bool {
		for _, d := range c.dataFrom(from) {
			if d.payload == payload {
				return true
			}
		}
		return false
	}
	reliable := lksdk.WithDataPublishReliable(true)
	require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(userToSids{"to-bob-by-sid", []string{bobSid}}, reliable))
	require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(userToSids{"to-nobody", []string{"PA_nobody"}}, reliable))
	require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("marker")), reliable))
	rs := lksdk.NewRoomServiceClient(httpURL(ts), ts.key, ts.secret)
	for _, req := range []*livekit.SendDataRequest{
		{Data: []byte("server-to-bob-by-sid"), DestinationSids: []string{bobSid}},
		{Data: []byte("server-to-nobody"), DestinationSids: []string{"PA_nobody"}},
		{Data: []byte("server-marker")},
	} {
		req.Room, req.Kind = "bysid", livekit.DataPacket_RELIABLE
		_, err := rs.SendData(context.Background(), req)
		require.NoError(t, err)
	}
	// Each sender's packets arrive in order on the reliable channel, so
	// once the markers are there, what was not delivered before them is
	// observably absent.
	require.Eventually(t, func() bool {
		return has(bob, "alice", "marker") && has(carol, "alice", "marker") && has(bob, "", "server-marker") && has(carol, "", "server-marker")
	}, 10*time.Second, 20*time.Millisecond)
	require.True(t, has(bob, "alice", "to-bob-by-sid"))
	require.True(t, has(bob, "", "server-to-bob-by-sid"))
	require.False(t, has(carol, "alice", "to-bob-by-sid"), "carol got a packet addressed to bob's sid")
	require.False(t, has(carol, "", "server-to-bob-by-sid"), "carol got a server packet addressed to bob's sid")
	for _, c := range []*client{bob, carol} {
		require.False(t, has(c, "alice", "to-nobody"))
		require.False(t, has(c, "", "server-to-nobody"))
	}
}

// TestDataBacklogBounded: data waiting in the server for a participant's
// client is bounded (1 MiB lossy, 16 MiB reliable in production); beyond
// the bound a packet is dropped and counted, and the sender is not held
// up. The bound is lowered to 16 KiB here, so that alice's burst of 60 kB
// messages exceeds it whenever one has not left yet; a client that never
// acknowledges would hold the backlog for good.
func TestDataBacklogBounded(t *testing.T) {
	verifyNoLeaks(t)
	t.Cleanup(sfu.SetDataBacklogLimits(16<<10, 16<<10))
	ts := startServer(t, nil)
	alice := ts.join(t, "backlog", "alice", nil)
	bob := ts.join(t, "backlog", "bob", nil)
	payload := bytes.Repeat([]byte{'x'}, 60000)
	var peak uint64
	for range 100 {
		require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(lksdk.UserData(payload),
			lksdk.WithDataPublishReliable(true), lksdk.WithDataPublishDestination([]string{"bob"})))
		peak = max(peak, ts.srv.DataBuffered("backlog", "bob"))
	}
	require.Eventually(t, func() bool {
		peak = max(peak, ts.srv.DataBuffered("backlog", "bob"))
		return ts.metricWith(t, "gxconf_sfu_data_dropped_total", "channel", "_reliable") > 0
	}, 20*time.Second, 5*time.Millisecond, "nothing dropped; peak backlog %d", peak)
	require.LessOrEqual(t, peak, uint64(16<<10+len(payload)+1024))
	require.Eventually(t, func() bool { return len(bob.dataFrom("alice")) > 0 }, 10*time.Second, 10*time.Millisecond)
}

// TestMuteAndLeave: mute (client and server side) and leave show up for others.
func TestMuteAndLeave(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := ts.join(t, "ml", "alice", nil)
	bob := ts.join(t, "ml", "bob", nil)
	alice.publish(t, loadtest.PublishOptions{Audio: true, Video: true, FPS: 10})
	bob.waitMedia(t, []string{"alice"}, 3, 10, 15*time.Second)
	sid := alice.pub.AudioPub.SID()
	alice.pub.AudioPub.SetMuted(true)
	muted := func(want bool) func() bool {
		return func() bool {
			bob.mu.Lock()
			defer bob.mu.Unlock()
			return bob.muted["alice/"+sid] == want
		}
	}
	require.Eventually(t, muted(true), 10*time.Second, 20*time.Millisecond)
	alice.pub.AudioPub.SetMuted(false)
	require.Eventually(t, muted(false), 10*time.Second, 20*time.Millisecond)

	// Server-side mute reaches the publisher and the others.
	rs := lksdk.NewRoomServiceClient(httpURL(ts), ts.key, ts.secret)
	res, err := rs.MutePublishedTrack(context.Background(), &livekit.MuteRoomTrackRequest{Room: "ml", Identity: "alice", TrackSid: sid, Muted: true})
	require.NoError(t, err)
	require.True(t, res.GetTrack().GetMuted())
	require.Eventually(t, func() bool { return alice.pub.AudioPub.IsMuted() }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, muted(true), 10*time.Second, 20*time.Millisecond)

	alice.close()
	require.Eventually(t, func() bool {
		bob.mu.Lock()
		defer bob.mu.Unlock()
		return bob.left["alice"]
	}, 10*time.Second, 20*time.Millisecond)
	require.Nil(t, bob.room.GetParticipantByIdentity("alice"))
}

// TestDuplicateIdentity: a second join with the same identity replaces the
// first, which is told DUPLICATE_IDENTITY.
func TestDuplicateIdentity(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	bob := ts.join(t, "dup", "bob", nil)
	a1 := ts.join(t, "dup", "alice", nil)
	sid1 := a1.room.LocalParticipant.SID()
	a2 := ts.join(t, "dup", "alice", nil)
	select {
	case r := <-a1.disconnected:
		require.Equal(t, lksdk.DuplicateIdentity, r)
	case <-time.After(10 * time.Second):
		t.Fatal("first session not disconnected")
	}
	require.Eventually(t, func() bool {
		p := bob.room.GetParticipantByIdentity("alice")
		return p != nil && p.SID() == a2.room.LocalParticipant.SID() && p.SID() != sid1
	}, 10*time.Second, 20*time.Millisecond)
	a2.publish(t, loadtest.PublishOptions{Audio: true})
	bob.waitAudio(t, "alice")
}

// TestRemoveParticipant: RemoveParticipant ends the session at once.
func TestRemoveParticipant(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := ts.join(t, "rm", "alice", nil)
	bob := ts.join(t, "rm", "bob", nil)
	rs := lksdk.NewRoomServiceClient(httpURL(ts), ts.key, ts.secret)
	ctx := context.Background()
	_, err := rs.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "rm", Identity: "alice"})
	require.NoError(t, err)
	list, err := rs.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: "rm"})
	require.NoError(t, err)
	require.Len(t, list.GetParticipants(), 1)
	require.Equal(t, "bob", list.GetParticipants()[0].GetIdentity())
	select {
	case r := <-alice.disconnected:
		require.Equal(t, lksdk.ParticipantRemoved, r)
	case <-time.After(10 * time.Second):
		t.Fatal("alice not disconnected")
	}
	require.Eventually(t, func() bool { return bob.room.GetParticipantByIdentity("alice") == nil }, 10*time.Second, 20*time.Millisecond)
	_, err = rs.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "rm", Identity: "alice"})
	requireTwirpCode(t, err, twirp.NotFound)
}

func requireTwirpCode(t *testing.T, err error, code twirp.ErrorCode) {
	t.Helper()
	require.Error(t, err)
	var te twirp.Error
	require.True(t, errors.As(err, &te), "not a twirp error: %v", err)
	require.Equal(t, code, te.Code(), te.Msg())
}

// TestTwirpRoomService drives the API with server-sdk-go's protobuf client,
// a JSON request and the in-process interface.
func TestTwirpRoomService(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, func(c *sfuConfig) { c.Room.AutoCreate = false })
	ctx := context.Background()
	rs := lksdk.NewRoomServiceClient(httpURL(ts), ts.key, ts.secret)

	r1, err := rs.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "tw", EmptyTimeout: 300, DepartureTimeout: 20, MaxParticipants: 2, Metadata: "m"})
	require.NoError(t, err)
	r2, err := rs.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "tw", EmptyTimeout: 1})
	require.NoError(t, err)
	require.Equal(t, r1.GetSid(), r2.GetSid(), "CreateRoom is idempotent")
	require.EqualValues(t, 300, r2.GetEmptyTimeout())
	require.EqualValues(t, 20, r2.GetDepartureTimeout())
	require.EqualValues(t, 2, r2.GetMaxParticipants())

	// Joins to a missing room are refused when auto_create is off.
	ctxD, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, res, err := websocket.Dial(ctxD, ts.url+"/rtc?access_token="+ts.token(t, "nope", "x", nil), nil)
	require.Error(t, err)
	require.Equal(t, http.StatusNotFound, res.StatusCode)

	a := ts.join(t, "tw", "a", nil)
	ts.join(t, "tw", "b", nil)
	_, res, err = websocket.Dial(ctxD, ts.url+"/rtc?access_token="+ts.token(t, "tw", "c", nil), nil)
	require.Error(t, err, "max_participants is 2")
	require.Equal(t, http.StatusForbidden, res.StatusCode)

	rooms, err := rs.ListRooms(ctx, &livekit.ListRoomsRequest{})
	require.NoError(t, err)
	require.Len(t, rooms.GetRooms(), 1)
	require.EqualValues(t, 2, rooms.GetRooms()[0].GetNumParticipants())

	p, err := rs.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "tw", Identity: "a"})
	require.NoError(t, err)
	require.Equal(t, a.room.LocalParticipant.SID(), p.GetSid())
	_, err = rs.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "tw", Identity: "zz"})
	requireTwirpCode(t, err, twirp.NotFound)
	_, err = rs.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "nope", Identity: "a"})
	requireTwirpCode(t, err, twirp.NotFound)

	up, err := rs.UpdateParticipant(ctx, &livekit.UpdateParticipantRequest{Room: "tw", Identity: "a", Metadata: "hello", Attributes: map[string]string{"k": "v"}})
	require.NoError(t, err)
	require.Equal(t, "hello", up.GetMetadata())
	require.Eventually(t, func() bool { return a.room.LocalParticipant.Metadata() == "hello" }, 10*time.Second, 20*time.Millisecond)

	// JSON over HTTP, with and without the grant.
	post := func(method, tok, body string) (int, map[string]any) {
		req, err := http.NewRequest(http.MethodPost, httpURL(ts)+"/twirp/livekit.RoomService/"+method, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var out map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&out))
		return res.StatusCode, out
	}
	code, out := post("ListParticipants", ts.adminToken(t, &auth.VideoGrant{RoomAdmin: true, Room: "tw"}), `{"room":"tw"}`)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, out["participants"], 2)
	code, out = post("ListParticipants", ts.adminToken(t, &auth.VideoGrant{RoomAdmin: true, Room: "other"}), `{"room":"tw"}`)
	require.Equal(t, http.StatusForbidden, code)
	require.Equal(t, "permission_denied", out["code"])
	code, out = post("ListRooms", "", `{}`)
	require.Equal(t, http.StatusUnauthorized, code)
	require.Equal(t, "unauthenticated", out["code"])
	code, _ = post("ListRooms", ts.adminToken(t, &auth.VideoGrant{RoomList: true}), `{}`)
	require.Equal(t, http.StatusOK, code)
	code, out = post("CreateRoom", ts.adminToken(t, &auth.VideoGrant{RoomList: true}), `{"name":"x"}`)
	require.Equal(t, http.StatusForbidden, code, out)

	// In-process: same behaviour, no grants.
	in := ts.srv.RoomService()
	_, err = in.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "tw", Identity: "zz"})
	requireTwirpCode(t, err, twirp.NotFound)
	lp, err := in.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: "tw"})
	require.NoError(t, err)
	require.Len(t, lp.GetParticipants(), 2)

	_, err = rs.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "tw"})
	require.NoError(t, err)
	select {
	case <-a.disconnected:
		require.Equal(t, livekit.DisconnectReason_ROOM_DELETED, a.room.DisconnectReason())
	case <-time.After(10 * time.Second):
		t.Fatal("a not disconnected by DeleteRoom")
	}
	rooms, err = rs.ListRooms(ctx, &livekit.ListRoomsRequest{})
	require.NoError(t, err)
	require.Empty(t, rooms.GetRooms())
}

// TestEmptyTimeout: a created room nobody joins closes after its timeout.
func TestEmptyTimeout(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, func(c *sfuConfig) { c.Room.DepartureTimeout = time.Second })
	in := ts.srv.RoomService()
	ctx := context.Background()
	_, err := in.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "et", EmptyTimeout: 1, DepartureTimeout: 1})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		rooms, err := in.ListRooms(ctx, &livekit.ListRoomsRequest{})
		return err == nil && len(rooms.GetRooms()) == 0
	}, 10*time.Second, 50*time.Millisecond)
	// Departure timeout after the last participant left.
	c := ts.join(t, "dt", "a", nil)
	rooms, err := in.ListRooms(ctx, &livekit.ListRoomsRequest{Names: []string{"dt"}})
	require.NoError(t, err)
	require.Len(t, rooms.GetRooms(), 1)
	c.close()
	require.Eventually(t, func() bool {
		rooms, err := in.ListRooms(ctx, &livekit.ListRoomsRequest{Names: []string{"dt"}})
		return err == nil && len(rooms.GetRooms()) == 0
	}, 10*time.Second, 100*time.Millisecond)
}

// TestShutdown: cancelling Run tells every client SERVER_SHUTDOWN and
// returns after cleanup.
func TestShutdown(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	a := ts.join(t, "sd", "a", nil)
	b := ts.join(t, "sd", "b", nil)
	a.publish(t, loadtest.PublishOptions{Audio: true, Video: true, FPS: 10})
	b.waitAudio(t, "a")
	ts.stop()
	for _, c := range []*client{a, b} {
		select {
		case <-c.disconnected:
			require.Equal(t, livekit.DisconnectReason_SERVER_SHUTDOWN, c.room.DisconnectReason())
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not told about the shutdown", c.identity)
		}
	}
}

// TestPortRangeAndTCP: without the UDP mux (a port range) media still
// flows, an ICE-TCP port yields passive TCP candidates, and the embedded
// TURN server's relays reach the UDP ports the peer connections hold.
func TestPortRangeAndTCP(t *testing.T) {
	verifyNoLeaks(t)
	tcp, turnPort := freeTCPPort(t), freeUDPPort(t)
	ts := startServer(t, func(c *sfuConfig) {
		c.RTC.UDPPort = 0
		c.RTC.PortRangeStart, c.RTC.PortRangeEnd = 41000, 41999
		c.RTC.TCPPort = tcp
		c.TURN.Enabled = true
		c.TURN.UDPPort, c.TURN.TLSPort = turnPort, 0
	})
	a := ts.join(t, "pr", "a", nil)
	b := ts.join(t, "pr", "b", nil)
	a.publish(t, loadtest.PublishOptions{Audio: true, Video: true, FPS: 10})
	b.waitMedia(t, []string{"a"}, 3, 10, 15*time.Second)
	require.Zero(t, ts.metric(t, "gxconf_sfu_rtp_packets_direct_out_total"), "no direct path without the mux")

	ws, first := rawJoin(t, ts, "pr", "raw", "")
	defer ws.CloseNow()
	require.NotNil(t, first.GetJoin())
	var udpCand *net.UDPAddr
	for sawTCP := false; !sawTCP || udpCand == nil; {
		m := readSignal(t, ws)
		tr := m.GetTrickle()
		if tr == nil {
			continue
		}
		var init struct {
			Candidate string `json:"candidate"`
		}
		require.NoError(t, json.Unmarshal([]byte(tr.GetCandidateInit()), &init))
		switch f := strings.Fields(init.Candidate); {
		case strings.Contains(init.Candidate, " tcp "):
			require.Contains(t, init.Candidate, "tcptype passive")
			require.Contains(t, init.Candidate, fmt.Sprint(tcp))
			sawTCP = true
		case len(f) > 7 && strings.EqualFold(f[2], "udp") && f[4] == "127.0.0.1" && f[7] == "host":
			port, err := strconv.Atoi(f[5])
			require.NoError(t, err)
			require.True(t, port >= 41000 && port <= 41999, init.Candidate)
			udpCand = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
		}
	}

	// A relay of this participant's reaches the port its connection holds
	// (relayed and counted; a port of the range no connection holds is
	// not reachable, TestTURNPortRangeReachesOnlyPeerConnectionPorts).
	var ice *livekit.ICEServer
	for _, s := range first.GetJoin().GetIceServers() {
		if s.GetUsername() != "" {
			ice = s
		}
	}
	require.NotNil(t, ice)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer conn.Close()
	server := "127.0.0.1:" + strconv.Itoa(turnPort)
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: ice.GetUsername(), Password: ice.GetCredential(), Realm: "gxconf", RTO: 200 * time.Millisecond})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Listen())
	relay, err := c.Allocate()
	require.NoError(t, err)
	defer relay.Close()
	msg := []byte("relayed to a peer connection's port")
	_, err = relay.WriteTo(msg, udpCand)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return ts.metricWith(t, "gxconf_sfu_turn_relayed_bytes_total", "direction", "to_peer") >= float64(len(msg))
	}, 10*time.Second, 20*time.Millisecond)
}

// A connected client gets a fresh token (refresh_token) with its identity,
// room and grants, valid as long as its first one, to reconnect with.
func TestTokenRefresh(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, func(c *sfu.Config) { c.TokenRefreshInterval = time.Second })
	ws, first := rawJoin(t, ts, "refresh", "rita", "")
	defer ws.CloseNow()
	require.NotNil(t, first.GetJoin())
	var refreshed string
	for refreshed == "" {
		refreshed = readSignal(t, ws).GetRefreshToken()
	}
	v, err := auth.ParseAPIToken(refreshed)
	require.NoError(t, err)
	require.Equal(t, ts.key, v.APIKey())
	claims, grants, err := v.Verify(ts.secret)
	require.NoError(t, err)
	require.Equal(t, "rita", grants.Identity)
	require.Equal(t, "refresh", grants.Video.Room)
	require.True(t, grants.Video.RoomJoin)
	require.InDelta(t, time.Hour.Seconds(), claims.ExpiresAt.Sub(claims.IssuedAt.Time).Seconds(), 1, "as long as the first token")
}

// A removed participant cannot come back with the token it holds; a token
// issued after the removal admits it again.
func TestRemovedTokenRefused(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	old := mintToken(t, ts, "kick", "mallory", time.Now().Add(-time.Minute))
	h := http.Header{}
	h.Set("Authorization", "Bearer "+old)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, ts.url+"/rtc?protocol=16&sdk=go", &websocket.DialOptions{HTTPHeader: h})
	require.NoError(t, err)
	require.NotNil(t, readSignal(t, ws).GetJoin())
	_, err = ts.srv.RoomService().RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "kick", Identity: "mallory"})
	require.NoError(t, err)
	ws.CloseNow()

	validate := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, httpURL(ts)+"/rtc/validate", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusForbidden, validate(old), "the old token is refused")
	_, _, err = websocket.Dial(ctx, ts.url+"/rtc?protocol=16&sdk=go", &websocket.DialOptions{HTTPHeader: h})
	require.Error(t, err)
	require.Equal(t, http.StatusOK, validate(mintToken(t, ts, "kick", "mallory", time.Now().Add(time.Second))), "a newer token admits")
	require.Equal(t, http.StatusOK, validate(mintToken(t, ts, "kick", "someone-else", time.Now().Add(-time.Minute))), "other identities are unaffected")
}

// mintToken is an access token for room and identity issued at iat (the SDK
// always stamps the current time).
func mintToken(t *testing.T, ts *testServer, room, identity string, iat time.Time) string {
	t.Helper()
	claims := jwt.MapClaims{
		"iss": ts.key, "sub": identity, "identity": identity,
		"iat": iat.Unix(), "nbf": iat.Add(-time.Minute).Unix(), "exp": iat.Add(time.Hour).Unix(),
		"video": map[string]any{"roomJoin": true, "room": room},
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(ts.secret))
	require.NoError(t, err)
	return tok
}

// TestShutdownDuringLeaves: the server is told to stop while participants
// leave and the others' connections renegotiate without their tracks —
// what a deployment sees when browsers close their pages just before it
// stops (CI, 5 Dec 2026: a gxconf outlived SIGTERM there). Three
// publishers, one subscribe-only client on one peer connection (a foreign
// user's session); two publishers leave as the server stops. Run returns
// every time, over GXTEST_RUNS runs (default 4), and the staying
// participants are told SERVER_SHUTDOWN.
func TestShutdownDuringLeaves(t *testing.T) {
	verifyNoLeaks(t)
	runs := gxtestRuns(4)
	opts := lightMedia()
	for i := range runs {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			ts := startServer(t, nil)
			publishers := []string{"a", "b", "c"}
			var cs []*client
			for _, id := range publishers {
				c := ts.join(t, "leaving", id, nil)
				c.publish(t, opts)
				cs = append(cs, c)
			}
			watcher := ts.join(t, "leaving", "watcher", func(g *auth.VideoGrant) { g.SetCanPublish(false) }, lksdk.WithSinglePeerConnection())
			for _, c := range append(cs, watcher) {
				c.waitMedia(t, publishers, 3, 10, 30*time.Second)
			}
			var leaving sync.WaitGroup
			for _, c := range cs[:2] {
				leaving.Go(c.close)
			}
			ts.stop() // fails the test if Run does not return
			leaving.Wait()
			for _, c := range []*client{cs[2], watcher} {
				select {
				case r := <-c.disconnected:
					require.Equal(t, livekit.DisconnectReason_SERVER_SHUTDOWN, c.room.DisconnectReason(), "%s: %v", c.identity, r)
				case <-time.After(10 * time.Second):
					t.Fatalf("%s not told about the shutdown", c.identity)
				}
			}
		})
	}
}

// TestTrickleFlood: candidates trickled before a connection's session
// description are held for it, but only so many, and an oversized one
// not at all: a client cannot grow the server's memory by trickling
// without ever offering. The ping's pong, queued after the trickles were
// handled, orders the check.
func TestTrickleFlood(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	ws := joinedRaw(t, ts, "flood", "mallory", nil)
	trickle := func(port int, pad int) {
		c := fmt.Sprintf(`{"candidate":"candidate:1 1 udp 2130706431 192.0.2.1 %d typ host%s","sdpMid":"0","sdpMLineIndex":0}`,
			port, strings.Repeat(" ", pad))
		writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Trickle{Trickle: &livekit.TrickleRequest{
			CandidateInit: c, Target: livekit.SignalTarget_PUBLISHER,
		}}})
	}
	trickle(9, 4096) // oversized: ignored
	for i := range 200 {
		trickle(10000+i, 0)
	}
	writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: 1}}})
	for readSignal(t, ws).GetPongResp() == nil {
	}
	pub, _ := ts.srv.QueuedCandidates("flood", "mallory")
	require.Equal(t, 64, pub)
}

// TestMetadataLimits: a participant's own name, metadata and attributes
// (sent to everyone in the room on each change) are bounded as
// livekit-server bounds them. An update over a limit is refused whole,
// with LIMIT_EXCEEDED naming the field; attributes count after the merge
// (a replaced value no longer counts); the others never see a refused
// update. RoomService refuses the same with invalid_argument.
func TestMetadataLimits(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	bob := ts.join(t, "md", "bob", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws := joinedRaw(t, ts, "md", "mallory", func(g *auth.VideoGrant) { g.SetCanUpdateOwnMetadata(true) })
	ws.SetReadLimit(1 << 20) // updates of 40 kB attributes come back
	id := uint32(0)
	update := func(m *livekit.UpdateParticipantMetadata) *livekit.RequestResponse {
		id++
		m.RequestId = id
		writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_UpdateMetadata{UpdateMetadata: m}})
		for {
			if r := readSignal(t, ws).GetRequestResponse(); r != nil && r.GetRequestId() == id {
				return r
			}
		}
	}
	refused := func(r *livekit.RequestResponse, field string) {
		t.Helper()
		require.Equal(t, livekit.RequestResponse_LIMIT_EXCEEDED, r.GetReason())
		require.True(t, strings.HasPrefix(r.GetMessage(), field+" "), r.GetMessage())
	}
	big := strings.Repeat("x", 40000)

	refused(update(&livekit.UpdateParticipantMetadata{Metadata: strings.Repeat("m", 64001), Name: "fine"}), "metadata")
	refused(update(&livekit.UpdateParticipantMetadata{Name: strings.Repeat("n", 257)}), "name")
	require.Equal(t, livekit.RequestResponse_OK, update(&livekit.UpdateParticipantMetadata{Metadata: "m1", Attributes: map[string]string{"a": big}}).GetReason())
	refused(update(&livekit.UpdateParticipantMetadata{Metadata: "m2", Attributes: map[string]string{"b": big}}), "attributes")
	require.Equal(t, livekit.RequestResponse_OK, update(&livekit.UpdateParticipantMetadata{Attributes: map[string]string{"a": "small", "b": big}}).GetReason())
	require.Equal(t, livekit.RequestResponse_OK, update(&livekit.UpdateParticipantMetadata{Attributes: map[string]string{"a": "", "b": ""}}).GetReason())

	var seen *lksdk.RemoteParticipant
	require.Eventually(t, func() bool {
		seen = bob.room.GetParticipantByIdentity("mallory")
		return seen != nil && seen.Metadata() == "m1" && len(seen.Attributes()) == 0
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "mallory", seen.Name(), "a refused update changed the name")

	rs := lksdk.NewRoomServiceClient(httpURL(ts), ts.key, ts.secret)
	_, err := rs.UpdateParticipant(ctx, &livekit.UpdateParticipantRequest{Room: "md", Identity: "mallory", Metadata: strings.Repeat("m", 64001)})
	requireTwirpCode(t, err, twirp.InvalidArgument)
	_, err = rs.UpdateRoomMetadata(ctx, &livekit.UpdateRoomMetadataRequest{Room: "md", Metadata: strings.Repeat("m", 64001)})
	requireTwirpCode(t, err, twirp.InvalidArgument)
	_, err = rs.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "md2", Metadata: strings.Repeat("m", 64001)})
	requireTwirpCode(t, err, twirp.InvalidArgument)
}

// TestAddTrackBounds: an add_track whose TrackInfo would be outsized —
// thousands of layers times thousands of simulcast codecs multiplied into
// hundreds of MB on clone, a long name — is refused whole with
// LIMIT_EXCEEDED naming the field; nothing is published; an ordinary
// request after it is accepted.
func TestAddTrackBounds(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	ws := joinedRaw(t, ts, "addtrack", "mallory", nil)
	addTrack := func(req *livekit.AddTrackRequest) *livekit.SignalResponse {
		writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_AddTrack{AddTrack: req}})
		for {
			res := readSignal(t, ws)
			if res.GetRequestResponse() != nil || res.GetTrackPublished() != nil {
				return res
			}
		}
	}
	layers := make([]*livekit.VideoLayer, 2000)
	codecs := make([]*livekit.SimulcastCodec, 2000)
	for i := range layers {
		layers[i], codecs[i] = &livekit.VideoLayer{}, &livekit.SimulcastCodec{}
	}
	for field, req := range map[string]*livekit.AddTrackRequest{
		"layers":           {Cid: "a", Type: livekit.TrackType_VIDEO, Layers: layers, SimulcastCodecs: codecs},
		"simulcast_codecs": {Cid: "b", Type: livekit.TrackType_VIDEO, SimulcastCodecs: codecs},
		"name":             {Cid: "c", Type: livekit.TrackType_AUDIO, Name: strings.Repeat("n", 257)},
	} {
		res := addTrack(req)
		rr := res.GetRequestResponse()
		require.NotNil(t, rr, "%s: %v", field, res)
		require.Equal(t, livekit.RequestResponse_LIMIT_EXCEEDED, rr.GetReason(), field)
		require.True(t, strings.HasPrefix(rr.GetMessage(), field), rr.GetMessage())
	}
	ok := addTrack(&livekit.AddTrackRequest{Cid: "d", Type: livekit.TrackType_VIDEO, Name: "camera", Width: 1280, Height: 720,
		Layers: []*livekit.VideoLayer{{Quality: livekit.VideoQuality_LOW, Width: 320, Height: 180}, {Quality: livekit.VideoQuality_HIGH, Width: 1280, Height: 720}}})
	require.NotNil(t, ok.GetTrackPublished(), "%v", ok)
	require.Len(t, ok.GetTrackPublished().GetTrack().GetLayers(), 2)
}

// countingReader counts what the HTTP client took from it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestTwirpBodyBounded: RoomService reads at most 1 MiB of a request,
// whoever sends it: a caller without a token who streams 64 MiB is
// refused and the server stops reading (twirp read the whole body before a
// method could check the grants).
func TestTwirpBodyBounded(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	body := &countingReader{r: io.LimitReader(zeroReader{}, 64<<20)}
	req, err := http.NewRequest(http.MethodPost, httpURL(ts)+"/twirp/livekit.RoomService/ListRooms", body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/protobuf")
	res, err := http.DefaultClient.Do(req)
	if err == nil {
		defer res.Body.Close()
		require.GreaterOrEqual(t, res.StatusCode, 400)
	} // else: the server closed the connection while the client was still sending
	require.Less(t, body.n.Load(), int64(16<<20), "the server read on past its limit")
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestUnreadSocketClosed: a client that sends requests but never reads
// the answers cannot grow the server's signal queue without bound: once
// 16,384 messages wait beyond what the kernel's buffers took, the server
// closes the socket and, as the session lost
// messages, ends it — the room sees the participant leave.
func TestUnreadSocketClosed(t *testing.T) {
	verifyNoLeaks(t)
	// A resume window longer than the wait below: a socket closed only by
	// the writer's timeout would leave the session waiting for a resume.
	ts := startServer(t, func(c *sfuConfig) { c.ResumeWindow = 2 * time.Minute })
	bob := ts.join(t, "unread", "bob", nil)
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, ts.url+"/rtc?protocol=16&sdk=go&access_token="+ts.token(t, "unread", "mallory", nil),
		&websocket.DialOptions{HTTPClient: hc})
	require.NoError(t, err)
	defer ws.CloseNow()
	require.NotNil(t, readSignal(t, ws).GetJoin())
	require.Eventually(t, func() bool { return bob.room.GetParticipantByIdentity("mallory") != nil }, 10*time.Second, 10*time.Millisecond)

	// Each request names 512 unknown tracks: 512 answers of ~80 bytes.
	sids := make([]string, 512)
	for i := range sids {
		sids[i] = fmt.Sprintf("TR_%060d", i)
	}
	req, err := proto.Marshal(&livekit.SignalRequest{Message: &livekit.SignalRequest_Subscription{Subscription: &livekit.UpdateSubscription{
		TrackSids: sids, Subscribe: true,
	}}})
	require.NoError(t, err)
	for range 400 {
		if ws.Write(ctx, websocket.MessageBinary, req) != nil {
			break // closed already
		}
	}
	require.Eventually(t, func() bool { return bob.room.GetParticipantByIdentity("mallory") == nil }, 30*time.Second, 20*time.Millisecond,
		"the session of a client that does not read lives on")
	require.Equal(t, 1.0, ts.metric(t, "gxconf_sfu_signal_unread_closed_total"))
}

// TestSubscriptionSidsBounded: one subscription request is acted on for
// at most 512 track sids (each is looked up and may be answered); a
// client without subscribe permission gets no answers at all.
func TestSubscriptionSidsBounded(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	sids := make([]string, 600)
	for i := range sids {
		sids[i] = fmt.Sprintf("TR_unknown%d", i)
	}
	answers := func(identity string, mut func(*auth.VideoGrant)) int {
		ws := joinedRaw(t, ts, "subs", identity, mut)
		for _, m := range []*livekit.SignalRequest{
			{Message: &livekit.SignalRequest_Subscription{Subscription: &livekit.UpdateSubscription{TrackSids: sids, Subscribe: true}}},
			{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: 1}}},
		} {
			writeSignal(t, ws, m)
		}
		n := 0
		for {
			res := readSignal(t, ws)
			if res.GetSubscriptionResponse() != nil {
				n++
			}
			if res.GetPongResp() != nil {
				return n
			}
		}
	}
	require.Equal(t, 512, answers("alice", nil))
	require.Zero(t, answers("bob", func(g *auth.VideoGrant) { g.SetCanSubscribe(false) }))
}

// TestRepeatedUpdatesNotBroadcast: an update that changes nothing (the
// same metadata again) is acknowledged but sent to nobody — every
// broadcast costs one message per participant. bob, watching on a raw
// socket, sees mallory's first and last updates and none of the 100
// repeats between them.
func TestRepeatedUpdatesNotBroadcast(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	bob := joinedRaw(t, ts, "repeat", "bob", nil)
	mallory := joinedRaw(t, ts, "repeat", "mallory", func(g *auth.VideoGrant) { g.SetCanUpdateOwnMetadata(true) })
	update := func(md string) {
		writeSignal(t, mallory, &livekit.SignalRequest{Message: &livekit.SignalRequest_UpdateMetadata{UpdateMetadata: &livekit.UpdateParticipantMetadata{Metadata: md}}})
	}
	for range 101 {
		update("same")
	}
	update("last")
	var seen []string
	for {
		u := readSignal(t, bob).GetUpdate()
		for _, p := range u.GetParticipants() {
			if p.GetIdentity() == "mallory" && p.GetMetadata() != "" {
				seen = append(seen, p.GetMetadata())
			}
		}
		if len(seen) > 0 && seen[len(seen)-1] == "last" {
			break
		}
	}
	require.Equal(t, []string{"same", "last"}, seen)
}

// TestOfferMidsReplaced: what the server remembers of a client's offers
// (each section's track id) is the last answered offer's: not every
// offer's, and nothing of an offer the connection refused.
func TestOfferMidsReplaced(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	ws := joinedRaw(t, ts, "mids", "mallory", func(g *auth.VideoGrant) { g.SetCanPublish(true) })
	ws.SetReadLimit(4 << 20) // answers of 100 sections
	base := videoOffer(t)
	named := func(n int, extra string) string { // n sections, each with a track id
		var b strings.Builder
		for line := range strings.Lines(withSections(base, n, extra)) {
			if strings.HasPrefix(line, "a=msid:") {
				continue
			}
			b.WriteString(line)
			if mid, ok := strings.CutPrefix(line, "a=mid:"); ok {
				fmt.Fprintf(&b, "a=msid:s t-%s\r\n", strings.TrimSpace(mid))
			}
		}
		return b.String()
	}
	require.True(t, offerAnswered(t, ws, 1, named(100, "")))
	require.Equal(t, 100, ts.srv.OfferMids("mids", "mallory"))
	require.True(t, offerAnswered(t, ws, 2, named(3, "")))
	require.Equal(t, 3, ts.srv.OfferMids("mids", "mallory"), "the sections of the offer before stayed")
	require.False(t, offerAnswered(t, ws, 3, named(50, "a=x:"+strings.Repeat("x", 5000)+"\r\n")))
	require.Equal(t, 3, ts.srv.OfferMids("mids", "mallory"), "a refused offer's sections were taken")
}

// TestTrickleBoundedPerICEGeneration: every remote candidate makes the ICE
// agent probe the address it names, so a connection takes at most 128 per
// ICE generation after its session description too; an ICE restart (a new
// ufrag) starts the count anew.
func TestTrickleBoundedPerICEGeneration(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	client := newCandidateClient(t, ts, "probe", "mallory")
	// only trickled candidates count below
	negotiate := func(restart bool) { t.Helper(); client.negotiate(restart, "", 0, 0) }
	port := 10000
	flood := func(n int) int {
		t.Helper()
		for range n {
			port++
			client.trickle("192.0.2.1", port)
		}
		writeSignal(t, client.ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: 1}}})
		for readSignal(t, client.ws).GetPongResp() == nil {
		}
		return ts.srv.RemoteCandidates("probe", "mallory", "192.0.2.1") // not the client's own (prflx) one
	}
	// pion's ICE agent adds a remote candidate in a goroutine of its own:
	// the count reaches what was let through a little after the last one.
	candidates := func(want int, msg string) {
		t.Helper()
		require.Eventually(t, func() bool { return ts.srv.RemoteCandidates("probe", "mallory", "192.0.2.1") == want }, 5*time.Second, 5*time.Millisecond,
			"%s: %d candidates, want %d", msg, ts.srv.RemoteCandidates("probe", "mallory", "192.0.2.1"), want)
	}
	negotiate(false)
	flood(300)
	candidates(128, "bounded")
	negotiate(false) // a renegotiation without restart does not reset the count
	require.Equal(t, 128, flood(10))
	negotiate(true)
	flood(20)
	candidates(20, "an ICE restart drops the old candidates and takes new ones")
	flood(300)
	candidates(128, "bounded again")
}

// TestChangingUpdatesCoalesced: a participant's own metadata changes reach
// the others at most once per 100 ms, the last state winning, so a client
// changing its metadata in a loop cannot make the server send every other
// participant a message per change. bob sees mallory's first and last of
// 300 changes and at most one update per started 100 ms between them.
func TestChangingUpdatesCoalesced(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	bob := joinedRaw(t, ts, "loop", "bob", nil)
	mallory := joinedRaw(t, ts, "loop", "mallory", func(g *auth.VideoGrant) { g.SetCanUpdateOwnMetadata(true) })
	start := time.Now()
	for i := range 300 {
		writeSignal(t, mallory, &livekit.SignalRequest{Message: &livekit.SignalRequest_UpdateMetadata{UpdateMetadata: &livekit.UpdateParticipantMetadata{
			Metadata: fmt.Sprintf("md-%d", i)}}})
	}
	var seen []string
	for len(seen) == 0 || seen[len(seen)-1] != "md-299" {
		for _, p := range readSignal(t, bob).GetUpdate().GetParticipants() {
			if p.GetIdentity() == "mallory" && p.GetMetadata() != "" {
				seen = append(seen, p.GetMetadata())
			}
		}
	}
	elapsed := time.Since(start)
	t.Logf("300 changes in %v reached bob as %d updates: %v", elapsed, len(seen), seen)
	require.Equal(t, "md-0", seen[0], "the first change goes out at once")
	require.LessOrEqual(t, len(seen), 2+int(elapsed/(100*time.Millisecond)))
}

// transcription is a data packet a client may send (lksdk.DataPacket).
type transcription struct{ of, text string }

func (tr transcription) ToProto() *livekit.DataPacket {
	return &livekit.DataPacket{Value: &livekit.DataPacket_Transcription{Transcription: &livekit.Transcription{
		TranscribedParticipantIdentity: tr.of,
		Segments:                       []*livekit.TranscriptionSegment{{Id: tr.text, Text: tr.text, Final: true}},
	}}}
}

// TestDataSenderAsserted: clients show a transcription as the speech of the
// participant it names, so only an agent's are forwarded (as
// livekit-server): mallory cannot caption alice with words of her choosing.
// A hidden participant's data names no sender.
func TestDataSenderAsserted(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	const room = "captions"
	ts.join(t, room, "alice", nil) // whose speech is transcribed
	bob := ts.join(t, room, "bob", nil)
	mallory := ts.join(t, room, "mallory", nil)
	ghost := ts.join(t, room, "ghost", func(g *auth.VideoGrant) { g.Hidden = true })
	tok, err := auth.NewAccessToken(ts.key, ts.secret).SetIdentity("scribe").SetKind(livekit.ParticipantInfo_AGENT).
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: room}).SetValidFor(time.Hour).ToJWT()
	require.NoError(t, err)
	scribe, err := lksdk.ConnectToRoomWithToken(ts.url, tok, lksdk.NewRoomCallback(), lksdk.WithAutoSubscribe(false))
	require.NoError(t, err)
	defer scribe.Disconnect()
	require.Eventually(t, func() bool { return bob.room.GetParticipantByIdentity("scribe") != nil }, 10*time.Second, 20*time.Millisecond)

	reliable := lksdk.WithDataPublishReliable(true)
	require.NoError(t, mallory.room.LocalParticipant.PublishDataPacket(transcription{of: "alice", text: "forged"}, reliable))
	require.NoError(t, mallory.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("mallory-marker")), reliable))
	require.NoError(t, scribe.LocalParticipant.PublishDataPacket(transcription{of: "alice", text: "said"}, reliable))
	require.NoError(t, ghost.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("from-ghost")), reliable))

	has := func(from, payload string) bool {
		for _, d := range bob.dataFrom(from) {
			if d.payload == payload {
				return true
			}
		}
		return false
	}
	transcripts := func() []string {
		bob.mu.Lock()
		defer bob.mu.Unlock()
		return append([]string(nil), bob.transcripts...)
	}
	// Each sender's reliable channel is ordered: mallory's marker arrives
	// after her transcription would have.
	require.Eventually(t, func() bool {
		return has("mallory", "mallory-marker") && has("", "from-ghost") && len(transcripts()) > 0
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, []string{"alice: said"}, transcripts(), "only the agent's transcription reaches bob")
	require.False(t, has("ghost", "from-ghost"), "a hidden participant's data named it")
}

// TestClientInfoToOthers: what a client says it handles beyond the
// signalling protocol (client_protocol, capabilities) reaches the others in
// its ParticipantInfo, from v0's query and from a v1 join request, without
// unknown values or repeats; so do the kind details of its token. livekit-client refuses an RPC payload over 15
// KiB to a participant whose client_protocol it does not see.
func TestClientInfoToOthers(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice, _ := rawJoin(t, ts, "ci", "alice", "&client_protocol=2&capabilities=CAP_PACKET_TRAILER,CAP_BOGUS,CAP_PACKET_TRAILER,CAP_UNUSED,+CAP_COMPRESSION_DEFLATE_RAW")
	defer alice.CloseNow()

	jr := &livekit.JoinRequest{ClientInfo: &livekit.ClientInfo{
		Sdk: livekit.ClientInfo_JS, Protocol: 17, ClientProtocol: 1,
		Capabilities: []livekit.ClientInfo_Capability{livekit.ClientInfo_CAP_COMPRESSION_DEFLATE_RAW, 77, livekit.ClientInfo_CAP_COMPRESSION_DEFLATE_RAW},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bobToken, err := auth.NewAccessToken(ts.key, ts.secret).SetIdentity("bob").SetKind(livekit.ParticipantInfo_AGENT).
		SetKindDetail(livekit.ParticipantInfo_CLOUD_AGENT).SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: "ci"}).SetValidFor(time.Hour).ToJWT()
	require.NoError(t, err)
	bob, _, err := websocket.Dial(ctx, ts.url+"/rtc/v1?join_request="+dtclient.EncodeJoinRequest(t, jr)+"&access_token="+bobToken, nil)
	require.NoError(t, err)
	defer bob.CloseNow()
	join := readSignal(t, bob).GetJoin()
	require.NotNil(t, join)
	require.Len(t, join.GetOtherParticipants(), 1)
	a := join.GetOtherParticipants()[0]
	require.EqualValues(t, 2, a.GetClientProtocol())
	require.Equal(t, []livekit.ClientInfo_Capability{livekit.ClientInfo_CAP_PACKET_TRAILER, livekit.ClientInfo_CAP_COMPRESSION_DEFLATE_RAW}, a.GetCapabilities())

	for {
		for _, p := range readSignal(t, alice).GetUpdate().GetParticipants() {
			if p.GetIdentity() == "bob" {
				require.EqualValues(t, 1, p.GetClientProtocol())
				require.Equal(t, []livekit.ClientInfo_Capability{livekit.ClientInfo_CAP_COMPRESSION_DEFLATE_RAW}, p.GetCapabilities())
				require.Equal(t, livekit.ParticipantInfo_AGENT, p.GetKind())
				require.Equal(t, []livekit.ParticipantInfo_KindDetail{livekit.ParticipantInfo_CLOUD_AGENT}, p.GetKindDetails(), "as the token says")
				return
			}
		}
	}
}

func TestKnownCapabilities(t *testing.T) {
	many := make([]livekit.ClientInfo_Capability, 0, 1000)
	for i := range 1000 {
		many = append(many, livekit.ClientInfo_Capability(i%3))
	}
	require.Equal(t, []livekit.ClientInfo_Capability{livekit.ClientInfo_CAP_PACKET_TRAILER, livekit.ClientInfo_CAP_COMPRESSION_DEFLATE_RAW}, sfu.KnownCapabilities(many))
	require.Empty(t, sfu.KnownCapabilities([]livekit.ClientInfo_Capability{0, -1, 1 << 20}))
}

// TestTwirpRefusalsQuoteAtMostAPrefix: twirp's answer to an unknown
// method or Content-Type quoted the request's path (twice) or header
// whole: a 6 KB path came back as a 12 KB answer (the server's header
// limit allows 32 KB). Such requests are refused without the text; known
// methods and content types are answered as before.
func TestTwirpRefusalsQuoteAtMostAPrefix(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	long := strings.Repeat("p", 6<<10)
	for _, tc := range []struct{ name, path, ctype string }{
		{"method", "/twirp/livekit.RoomService/" + long, "application/json"},
		{"service", "/twirp/" + long + "/ListRooms", "application/json"},
		{"content type", "/twirp/livekit.RoomService/ListRooms", "text/" + long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, httpURL(ts)+tc.path, strings.NewReader("{}"))
			require.NoError(t, err)
			req.Header.Set("Content-Type", tc.ctype)
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			raw, err := io.ReadAll(res.Body)
			res.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusNotFound, res.StatusCode, "%.200s", raw)
			require.Equal(t, "application/json", res.Header.Get("Content-Type"))
			require.Contains(t, string(raw), `"code":"bad_route"`)
			require.Less(t, len(raw), 512, "answer of %d bytes: %.200s", len(raw), raw)
		})
	}
	// A known method still answers (401 without a token).
	req, err := http.NewRequest(http.MethodPost, httpURL(ts)+"/twirp/livekit.RoomService/ListRooms", strings.NewReader("{}"))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
}
