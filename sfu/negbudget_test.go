package sfu_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

// connectedPublisher joins identity on a raw socket with a pion client
// whose publisher connection (one sendonly video section) connects; it
// returns the socket and the client's offer.
func connectedPublisher(t *testing.T, ts *testServer, room, identity string) (*websocket.Conn, string) {
	t.Helper()
	ws := joinedRaw(t, ts, room, identity, func(g *auth.VideoGrant) { g.SetCanPublish(true) })
	ws.SetReadLimit(4 << 20)
	client, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	connected := make(chan struct{})
	client.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			close(connected)
		}
	})
	_, err = client.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	require.NoError(t, err)
	offer, err := client.CreateOffer(nil)
	require.NoError(t, err)
	gathered := webrtc.GatheringCompletePromise(client)
	require.NoError(t, client.SetLocalDescription(offer))
	<-gathered
	sdp := client.LocalDescription().SDP
	writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: sdp, Id: 1}}})
	a := awaitSignal(t, ws, func(r *livekit.SignalResponse) bool { return r.GetAnswer() != nil }).GetAnswer()
	require.NoError(t, client.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: a.GetSdp()}))
	select {
	case <-connected:
	case <-time.After(15 * time.Second):
		t.Fatal("the publisher connection did not connect")
	}
	return ws, sdp
}

// withCopies is offer (one media section, mid 0) with n more copies of
// its section, mids c1…cn, bundled, without their candidates and streams.
func withCopies(offer string, n int) string {
	i := strings.Index(offer, "m=")
	var b strings.Builder
	mids := ""
	for k := 1; k <= n; k++ {
		mids += fmt.Sprintf(" c%d", k)
	}
	for line := range strings.Lines(offer[:i]) {
		if strings.HasPrefix(line, "a=group:BUNDLE") {
			line = strings.TrimRight(line, "\r\n") + mids + "\r\n"
		}
		b.WriteString(line)
	}
	b.WriteString(offer[i:])
	for k := 1; k <= n; k++ {
		for line := range strings.Lines(offer[i:]) {
			switch {
			case strings.HasPrefix(line, "a=candidate:"), strings.HasPrefix(line, "a=end-of-candidates"),
				strings.HasPrefix(line, "a=ssrc"), strings.HasPrefix(line, "a=msid:"):
				continue
			case strings.HasPrefix(line, "a=mid:"):
				line = fmt.Sprintf("a=mid:c%d\r\n", k)
			}
			b.WriteString(line)
		}
	}
	return b.String()
}

// TestNegotiationThrottled: a participant sending costly offers back to
// back has its signal messages read late once their handling has taken
// its budget (1 s, refilled at 100 ms a second): each offer of 200
// sections took a core for about 150 ms, and nothing bounded how many a
// client sent, so one signal connection could hold a core. Its offers are
// all answered, its pings get their pongs, another participant is not
// held back, and a leave sent behind the debt still ends the session.
func TestNegotiationThrottled(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	throttles := func() float64 { return ts.metric(t, "gxconf_sfu_negotiation_throttles_total") }
	waited := func() float64 { return ts.metric(t, "gxconf_sfu_negotiation_throttled_seconds_total") }

	mallory, offer := connectedPublisher(t, ts, "budget", "mallory")
	big := withCopies(offer, 199)
	t.Logf("offer of %d bytes", len(big))
	id := uint32(1)
	// throttle sends offers back to back until a ping waits behind the
	// debt they leave; all are answered.
	throttle := func() {
		t.Helper()
		before := waited()
		for sent := 0; waited() == before; sent++ {
			require.Less(t, sent, 80, "offers sent back to back were never throttled")
			id++
			start := time.Now()
			require.True(t, offerAnswered(t, mallory, id, big), "offer %d not answered", id)
			t.Logf("offer %d answered in %s", id, time.Since(start))
		}
	}
	throttle()
	require.EqualValues(t, 1, throttles())

	// Others negotiate on their own budget (mallory's loop waits for a
	// message meanwhile: only bob could count).
	bob, _ := connectedPublisher(t, ts, "budget", "bob")
	require.EqualValues(t, 1, throttles())

	// Throttled again, mallory leaves: the leave is read once the debt of
	// the offer before it is repaid (the wait is bounded), and the session
	// ends.
	throttle()
	before := waited()
	id++
	writeSignal(t, mallory, &livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: big, Id: id}}})
	writeSignal(t, mallory, &livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	answered := false
	for {
		_, data, err := mallory.Read(ctx)
		if err != nil {
			require.NotErrorIs(t, err, context.DeadlineExceeded, "the session did not end")
			break
		}
		answered = answered || strings.Contains(string(data), "a=mid:c199")
	}
	require.True(t, answered, "the offer before the leave was not answered")
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_participants") == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Greater(t, waited(), before, "the leave was not behind a debt")
	writeSignal(t, bob, &livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_participants") == 0 }, 10*time.Second, 10*time.Millisecond)
}
