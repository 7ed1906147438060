package sfu_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gxfs-conf/gxconf/internal/dtclient"
	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

// rawV1 opens /rtc/v1 as livekit-client does (token and join_request in the
// query) and returns the socket.
func rawV1(t *testing.T, ts *testServer, token string, jr *livekit.JoinRequest) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := url.Values{"access_token": {token}, "join_request": {dtclient.EncodeJoinRequest(t, jr)}}
	ws, _, err := websocket.Dial(ctx, ts.url+"/rtc/v1?"+q.Encode(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.CloseNow() })
	return ws
}

// TestV1Join: /rtc/v1 accepts livekit-client's join_request; the join
// response announces a single peer connection (no subscriber primary) and
// resume; a malformed join_request is refused before the upgrade;
// /rtc/v1/validate answers like /rtc/validate.
func TestV1Join(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, func(c *sfuConfig) { c.PathPrefix = "/livekit/sfu" })
	ws := rawV1(t, ts, ts.token(t, "v1", "a", nil), &livekit.JoinRequest{
		ClientInfo:         &livekit.ClientInfo{Sdk: livekit.ClientInfo_JS, Protocol: 17, Version: "2.23.0"},
		ConnectionSettings: &livekit.ConnectionSettings{AutoSubscribe: true},
	})
	j := readSignal(t, ws).GetJoin()
	require.NotNil(t, j)
	require.False(t, j.GetSubscriberPrimary())
	require.Equal(t, livekit.ClientConfigSetting_ENABLED, j.GetClientConfiguration().GetResumeConnection())
	// The join is counted once room.join returns, which is after the join
	// response went out: await it.
	require.Eventually(t, func() bool { return ts.metricWith(t, "gxconf_sfu_joins_total", "path", "rtc_v1") == 1 },
		10*time.Second, 5*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, res, err := websocket.Dial(ctx, ts.url+"/rtc/v1?join_request=%21%21&access_token="+ts.token(t, "v1", "b", nil), nil)
	require.Error(t, err)
	require.Equal(t, http.StatusBadRequest, res.StatusCode)

	for _, p := range []string{"/rtc/v1/validate", "/rtc/validate"} {
		res, err := http.Get(httpURL(ts) + p + "?access_token=" + ts.token(t, "v1", "a", nil))
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode, p)
		require.Equal(t, "*", res.Header.Get("Access-Control-Allow-Origin"))
	}
}

// TestSinglePC: server-sdk-go clients in single peer connection mode
// (join_request with the publisher offer) publish, subscribe (several
// tracks, more than one section of a kind) and exchange data with each
// other and with a dual peer connection client; a single mode session
// resumes after its socket is cut.
func TestSinglePC(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	proxy := startProxy(t, ts)
	pts := ts.via(proxy)
	alice := pts.join(t, "spc", "alice", nil, lksdk.WithSinglePeerConnection())
	alice.publish(t, loadtest.PublishOptions{Audio: true, Video: true})
	carol := ts.join(t, "spc", "carol", nil) // two peer connections
	carol.publish(t, loadtest.PublishOptions{Audio: true, Video: true})
	bob := pts.join(t, "spc", "bob", nil, lksdk.WithSinglePeerConnection())
	dave := ts.join(t, "spc", "dave", nil)
	dave.publish(t, loadtest.PublishOptions{Audio: true, Video: true})

	bob.waitMedia(t, []string{"alice", "carol", "dave"}, 10, 10, 15*time.Second)
	alice.waitMedia(t, []string{"carol", "dave"}, 10, 10, 15*time.Second)
	carol.waitMedia(t, []string{"alice"}, 10, 10, 15*time.Second)
	require.Zero(t, ts.metricWith(t, "gxconf_sfu_joins_total", "outcome", "refused"))

	require.NoError(t, carol.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("to-bob")), lksdk.WithDataPublishReliable(true)))
	require.NoError(t, bob.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("from-bob")), lksdk.WithDataPublishReliable(true)))
	require.Eventually(t, func() bool { return len(bob.dataFrom("carol")) == 1 && len(carol.dataFrom("bob")) == 1 },
		10*time.Second, 10*time.Millisecond)

	// A departure frees bob's sections; a new publisher reuses them.
	dave.close()
	eve := ts.join(t, "spc", "eve", nil)
	eve.publish(t, loadtest.PublishOptions{Audio: true, Video: true})
	bob.waitMedia(t, []string{"eve"}, 10, 10, 15*time.Second)

	// Resume in single mode: same sids, no republish, media flows.
	aliceSID, tracks := alice.room.LocalParticipant.SID(), trackSIDs(alice)
	ga, gv := cutAndRecover(t, ts, proxy, bob, "resumed", 2)
	t.Logf("single mode media gap at the subscriber on resume: audio %s, video %s", ga, gv)
	require.Equal(t, aliceSID, alice.room.LocalParticipant.SID())
	require.Equal(t, tracks, trackSIDs(alice))
	bob.waitMedia(t, []string{"carol", "eve"}, 10, 10, 15*time.Second)
}

// TestJoinTime measures token to first remote frame for a subscriber in
// single peer connection mode (join_request) and with two peer
// connections (v0), over GXTEST_RUNS runs (default 5).
func TestJoinTime(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	runs := gxtestRuns(5)
	ts := startServer(t, nil)
	alice := ts.join(t, "jt", "alice", nil)
	alice.publish(t, loadtest.PublishOptions{Audio: true, Video: true})
	measure := func(opts ...lksdk.ConnectOption) []time.Duration {
		var out []time.Duration
		for i := range runs {
			// Joins a keyframe window apart: a subscriber arriving within
			// 1 s of the previous one's keyframe request waits for the
			// window's end (the PLI throttle), which would measure the
			// throttle instead of the join.
			time.Sleep(1100 * time.Millisecond)
			start := time.Now()
			c := ts.join(t, "jt", "sub"+strconv.Itoa(i), nil, opts...)
			require.Eventually(t, func() bool {
				st := c.stream("alice/video")
				return st != nil && st.Frames.Load() > 0
			}, 15*time.Second, time.Millisecond)
			out = append(out, time.Since(start))
			c.close()
		}
		return out
	}
	v0 := measure()
	v1 := measure(lksdk.WithSinglePeerConnection())
	t.Logf("join to first video frame over %d runs (p50 / p95): single peer connection %s / %s, two peer connections %s / %s",
		runs, pct(v1, 50), pct(v1, 95), pct(v0, 50), pct(v0, 95))
}

// TestCloseDuringNegotiationLeavesNoReader: subscribers that leave while
// their connection is still being negotiated — the answer that starts the
// senders (and binds the downtracks) races the close that stops them —
// leave no downtrack RTCP reader behind: the server stops within the
// harness's bound and goleak finds nothing. pion's RTPSender.Stop, when it
// ran before a concurrent Send, left the sender's SRTCP stream open and
// its reader blocked forever (CI, 5 Dec 2026); pcMu orders the two. The
// interleaving is pion's own and rare, so this churns rather than forces
// it: a guard against the leak coming back, not a proof on every run.
func TestCloseDuringNegotiationLeavesNoReader(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := ts.join(t, "churn", "alice", nil)
	alice.publish(t, loadtest.PublishOptions{Audio: true, Video: true})
	for i := range 12 {
		opts := []lksdk.ConnectOption{lksdk.WithSinglePeerConnection()}
		if i%2 == 1 {
			opts = nil // two peer connections: the subscriber's answer starts the senders
		}
		bob := ts.join(t, "churn", "bob-"+strconv.Itoa(i), nil, opts...)
		bob.close()
	}
	carol := ts.join(t, "churn", "carol", nil)
	carol.waitMedia(t, []string{"alice"}, 10, 10, 15*time.Second)
}

// TestJoinOfferAnsweredOnceSet: the answer to the offer of a server-sdk-go
// join request waits until the client has set that offer — shown by its
// first candidate — because server-sdk-go starts reading the socket
// before it sets the offer, and pion refuses an answer that comes first
// (CI, 6 Dec 2026). Without a candidate the answer goes out after the
// hold; a livekit-client join request (which sets its offer only when the
// answer arrives) is answered at once. Events, not timing: the server
// answers a join request's offer before it reads the socket, so an answer
// not seen before the pong to a ping sent after the join was held.
func TestJoinOfferAnsweredOnceSet(t *testing.T) {
	verifyNoLeaks(t)
	restore := sfu.SetJoinOfferHold(time.Hour)
	t.Cleanup(restore) // after the server stopped (cleanups run last in, first out)
	ts := startServer(t, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	offerPC := func() (*webrtc.PeerConnection, webrtc.SessionDescription) {
		pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = pc.Close() })
		for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
			_, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
			require.NoError(t, err)
		}
		offer, err := pc.CreateOffer(nil)
		require.NoError(t, err)
		return pc, offer
	}
	join := func(identity string, sdk livekit.ClientInfo_SDK, offer webrtc.SessionDescription) *websocket.Conn {
		q := url.Values{"access_token": {ts.token(t, "hold", identity, nil)}, "join_request": {dtclient.EncodeJoinRequest(t, &livekit.JoinRequest{
			ClientInfo:         &livekit.ClientInfo{Sdk: sdk, Protocol: 16, Version: "2.19.0"},
			ConnectionSettings: &livekit.ConnectionSettings{AutoSubscribe: true},
			PublisherOffer:     &livekit.SessionDescription{Type: "offer", Sdp: offer.SDP, Id: 1},
		})}}
		ws, _, err := websocket.Dial(ctx, ts.url+"/rtc?"+q.Encode(), nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = ws.CloseNow() })
		require.NotNil(t, readSignal(t, ws).GetJoin())
		return ws
	}
	// answeredBeforePong sends a ping and reads up to its pong.
	answeredBeforePong := func(ws *websocket.Conn) *livekit.SessionDescription {
		writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: 1}}})
		var answer *livekit.SessionDescription
		for {
			res := readSignal(t, ws)
			if a := res.GetAnswer(); a != nil {
				answer = a
			}
			if res.GetPongResp() != nil {
				return answer
			}
		}
	}
	awaitAnswer := func(ws *websocket.Conn) *livekit.SessionDescription {
		for {
			if a := readSignal(t, ws).GetAnswer(); a != nil {
				return a
			}
		}
	}

	// server-sdk-go: held until the first candidate, then pion takes it.
	pc, offer := offerPC()
	ws := join("go", livekit.ClientInfo_GO, offer)
	require.True(t, answeredBeforePong(ws) == nil, "answer sent before the client set its offer")
	first := make(chan webrtc.ICECandidateInit, 1)
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			select {
			case first <- c.ToJSON():
			default:
			}
		}
	})
	require.NoError(t, pc.SetLocalDescription(offer))
	var cand webrtc.ICECandidateInit
	select {
	case cand = <-first:
	case <-ctx.Done():
		t.Fatal("no candidate gathered")
	}
	ci, err := json.Marshal(cand)
	require.NoError(t, err)
	writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Trickle{Trickle: &livekit.TrickleRequest{
		CandidateInit: string(ci), Target: livekit.SignalTarget_PUBLISHER,
	}}})
	answer := awaitAnswer(ws)
	require.Equal(t, uint32(1), answer.GetId())
	require.NoError(t, pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer.GetSdp()}))

	// livekit-client: answered at once.
	_, offer = offerPC()
	ws = join("js", livekit.ClientInfo_JS, offer)
	require.True(t, answeredBeforePong(ws) != nil, "livekit-client's join request offer not answered at once")

	// server-sdk-go without a candidate: answered once the hold ends (a
	// server started after the hold was shortened).
	sfu.SetJoinOfferHold(50 * time.Millisecond)
	ts = startServer(t, nil)
	_, offer = offerPC()
	ws = join("quiet", livekit.ClientInfo_GO, offer)
	require.Equal(t, uint32(1), awaitAnswer(ws).GetId())
}
