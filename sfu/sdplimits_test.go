package sfu_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

// videoOffer is a pion client's offer of one sendonly video section.
func videoOffer(t *testing.T) string {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	defer pc.Close()
	_, err = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	require.NoError(t, err)
	o, err := pc.CreateOffer(nil)
	require.NoError(t, err)
	return o.SDP
}

// withSections is offer (one video section) with n copies of its section,
// mids s0…s(n-1), and extra lines at the end of the last one.
func withSections(offer string, n int, extra string) string {
	i := strings.Index(offer, "m=video")
	var mids []string
	for k := range n {
		mids = append(mids, fmt.Sprintf("s%d", k))
	}
	var b strings.Builder
	for line := range strings.Lines(offer[:i]) {
		if strings.HasPrefix(line, "a=group:BUNDLE") {
			line = "a=group:BUNDLE " + strings.Join(mids, " ") + "\r\n"
		}
		b.WriteString(line)
	}
	for k := range n {
		for line := range strings.Lines(offer[i:]) {
			switch {
			case strings.HasPrefix(line, "a=mid:"):
				line = "a=mid:" + mids[k] + "\r\n"
			case strings.HasPrefix(line, "a=msid:"):
				line = fmt.Sprintf("a=msid:stream track%d\r\n", k)
			}
			b.WriteString(line)
		}
	}
	b.WriteString(extra)
	return b.String()
}

// repeatTo repeats line(i) for i = 0, 1, … while the result stays under n bytes.
func repeatTo(n int, line func(i int) string) string {
	var b strings.Builder
	for i := 0; ; i++ {
		l := line(i)
		if b.Len()+len(l) > n {
			return b.String()
		}
		b.WriteString(l)
	}
}

func liveHeapMB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / 1e6
}

// TestRemoteSDPBounded: a client's offers and answers are refused before
// pion parses them when a line, a media section or its a=ssrc, a=ssrc-group
// or a=rid lines go over their bounds (sdplimits.go). pion matched every
// a=ssrc line of a section against all the section's others, several times
// per description: one offer or answer of 900 kB of them held a core (and
// the participant's leave) for seconds, with FID groups for minutes. And it
// keeps each new section's fmtp lines and a track per a=rid for the
// connection's life: offers adding a section of huge fmtp lines or
// thousands of rids each grew the server by megabytes. Descriptions as
// clients make them are answered as before, also pion's (server-sdk-go),
// whose sections repeat their rids once more with every offer.
func TestRemoteSDPBounded(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	base := videoOffer(t)
	type session struct {
		// send sends req and a ping; it returns whether an answer came
		// before the pong, and how long the pong took.
		send     func(req *livekit.SignalRequest) (bool, time.Duration)
		offer    func(id uint32, sdp string) (bool, time.Duration)
		subOffer *livekit.SessionDescription
		ws       *websocket.Conn
	}
	join := func(identity string) session {
		ws := joinedRaw(t, ts, "sdp", identity, func(g *auth.VideoGrant) { g.SetCanPublish(true) })
		ws.SetReadLimit(4 << 20)
		sess := session{ws: ws}
		for sess.subOffer == nil { // the subscriber offer follows the join
			sess.subOffer = readSignal(t, ws).GetOffer()
		}
		ping := int64(0)
		sess.send = func(req *livekit.SignalRequest) (bool, time.Duration) {
			t.Helper()
			start := time.Now()
			writeSignal(t, ws, req)
			ping++
			writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: ping}}})
			answered := false
			for {
				r := awaitSignal(t, ws, func(r *livekit.SignalResponse) bool {
					return r.GetAnswer() != nil || r.GetPongResp().GetLastPingTimestamp() == ping
				})
				if r.GetAnswer() != nil {
					answered = true
					continue
				}
				return answered, time.Since(start)
			}
		}
		sess.offer = func(id uint32, sdp string) (bool, time.Duration) {
			t.Helper()
			require.Less(t, len(sdp), 1<<20, "a signal message is at most 1 MiB")
			return sess.send(&livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: sdp, Id: id}}})
		}
		return sess
	}
	refused := func(reason string) float64 {
		return ts.metricWith(t, "gxconf_sfu_session_descriptions_refused_total", "reason", reason)
	}

	// CPU: 900 kB of a=ssrc lines in an offer's section, then in an answer's.
	ssrcs := repeatTo(900_000, func(i int) string { return fmt.Sprintf("a=ssrc:%d cname:mallory\r\n", 100000+i) })
	mallory := join("mallory")
	answered, took := mallory.offer(1, base+ssrcs)
	require.False(t, answered)
	require.Less(t, took, 2*time.Second, "an offer of a=ssrc lines held the connection")
	require.EqualValues(t, 1, refused("ssrc"))

	client, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	defer client.Close()
	require.NoError(t, client.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: mallory.subOffer.GetSdp()}))
	answer, err := client.CreateAnswer(nil)
	require.NoError(t, err)
	video := base[strings.Index(base, "m=video"):]
	_, took = mallory.send(&livekit.SignalRequest{Message: &livekit.SignalRequest_Answer{Answer: &livekit.SessionDescription{
		Type: "answer", Sdp: answer.SDP + strings.Replace(video, "a=mid:0", "a=mid:9", 1) + ssrcs, Id: mallory.subOffer.GetId(),
	}}})
	require.Less(t, took, 2*time.Second, "an answer of a=ssrc lines held the connection")
	require.EqualValues(t, 2, refused("ssrc"))
	// the client's real answer is taken: no refusal
	mallory.send(&livekit.SignalRequest{Message: &livekit.SignalRequest_Answer{Answer: &livekit.SessionDescription{Type: "answer", Sdp: answer.SDP, Id: mallory.subOffer.GetId()}}})
	require.EqualValues(t, 2, refused("ssrc"))

	// Memory: offers each adding a section of a huge fmtp line or of
	// thousands of rids, on a connection of its own.
	hoarder := join("hoarder")
	before := liveHeapMB()
	for k := 2; k <= 7; k++ {
		var extra string
		if k%2 == 0 {
			extra = "a=fmtp:96 " + repeatTo(800_000, func(i int) string { return fmt.Sprintf("x%d=1;", i) }) + "\r\n"
		} else {
			extra = repeatTo(800_000, func(i int) string { return fmt.Sprintf("a=rid:r%d send\r\n", i) })
		}
		answered, _ := hoarder.offer(uint32(k), withSections(base, k, extra))
		require.False(t, answered, "offer %d was answered", k)
	}
	grown := liveHeapMB() - before
	t.Logf("grown %.1f MB", grown)
	require.Less(t, grown, 8.0, "offers of huge sections grew the heap by %.1f MB", grown)
	require.EqualValues(t, 3, refused("line_length"))
	require.EqualValues(t, 3, refused("rid"))

	// A section over 32 KiB of ordinary lines.
	answered, _ = hoarder.offer(8, base+repeatTo(40_000, func(i int) string { return fmt.Sprintf("a=extmap:%d urn:example:%d\r\n", 1+i%14, i) }))
	require.False(t, answered)
	require.EqualValues(t, 1, refused("section_size"))

	// As clients make them: simulcast by rid; one stream and its RTX by SSRC.
	simulcast := "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n"
	answered, _ = hoarder.offer(9, base+simulcast)
	require.True(t, answered)
	bySSRC := "a=ssrc-group:FID 1000 2000\r\n"
	for _, s := range []int{1000, 2000} {
		bySSRC += fmt.Sprintf("a=ssrc:%d cname:mallory\r\na=ssrc:%d msid:stream track0\r\n", s, s)
	}
	answered, _ = hoarder.offer(10, base+simulcast+bySSRC)
	require.True(t, answered)
	// pion as a client repeats the rids in every offer it makes.
	repeats := strings.Repeat("a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\n", 1000) +
		"a=simulcast:send " + strings.Repeat("q;h;f;", 999) + "q;h;f\r\n"
	answered, _ = hoarder.offer(11, base+repeats)
	require.True(t, answered)
	// After some 6,000 renegotiations its a=simulcast line alone is over
	// the section bound; it is read with each rid once.
	answered, _ = hoarder.offer(12, base+simulcast[:strings.Index(simulcast, "a=simulcast")]+"a=simulcast:send "+strings.Repeat("q;h;f;", 6000)+"q;h;f\r\n")
	require.True(t, answered, "a repeated a=simulcast list outgrew the section")
	for _, s := range []session{mallory, hoarder} {
		writeSignal(t, s.ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})
	}
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_participants") == 0 }, 10*time.Second, 10*time.Millisecond)
}

// candidateClient is a pion client that sends audio, joined to a room
// over a raw signal connection: the client of the remote candidate bound
// tests, which offer and trickle made-up host candidates.
type candidateClient struct {
	t       *testing.T
	ws      *websocket.Conn
	pc      *webrtc.PeerConnection
	offerID uint32
}

func newCandidateClient(t *testing.T, ts *testServer, room, identity string) *candidateClient {
	ws := joinedRaw(t, ts, room, identity, nil)
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	_, err = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	require.NoError(t, err)
	return &candidateClient{t: t, ws: ws, pc: pc}
}

// negotiate offers (an ICE restart when restart) with the host candidates
// of ip at ports [from, to) in place of the client's own, and sets the
// answer.
func (c *candidateClient) negotiate(restart bool, ip string, from, to int) {
	c.t.Helper()
	offer, err := c.pc.CreateOffer(&webrtc.OfferOptions{ICERestart: restart})
	require.NoError(c.t, err)
	require.NoError(c.t, c.pc.SetLocalDescription(offer))
	var sdp strings.Builder
	for line := range strings.Lines(offer.SDP) {
		if strings.HasPrefix(line, "a=candidate:") {
			continue
		}
		sdp.WriteString(line)
		if strings.HasPrefix(line, "a=mid:") {
			for port := from; port < to; port++ {
				fmt.Fprintf(&sdp, "a=candidate:%d 1 udp 2130706431 %s %d typ host\r\n", port, ip, port)
			}
		}
	}
	c.offerID++
	writeSignal(c.t, c.ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: sdp.String(), Id: c.offerID}}})
	a := awaitSignal(c.t, c.ws, func(r *livekit.SignalResponse) bool { return r.GetAnswer() != nil }).GetAnswer()
	require.Equal(c.t, c.offerID, a.GetId())
	require.NoError(c.t, c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: a.GetSdp()}))
}

// trickle sends the host candidate of ip at port for the publisher
// connection.
func (c *candidateClient) trickle(ip string, port int) {
	writeSignal(c.t, c.ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Trickle{Trickle: &livekit.TrickleRequest{
		CandidateInit: fmt.Sprintf(`{"candidate":"candidate:%d 1 udp 2130706431 %s %d typ host","sdpMid":"0","sdpMLineIndex":0}`, port, ip, port),
		Target:        livekit.SignalTarget_PUBLISHER,
	}}})
}

// TestSDPCandidatesBounded: the a=candidate lines of a client's offers
// count against the 128 remote candidates a connection takes per ICE
// generation, like trickled ones (TestTrickleBoundedPerICEGeneration): pion
// adds every candidate of every description, each renegotiation's to the
// last's, and probes each address, so offers carrying candidates made the
// SFU probe any number of addresses. A candidate repeated in later offers
// (clients that do not trickle send theirs every time) counts once; an ICE
// restart starts anew.
func TestSDPCandidatesBounded(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	client := newCandidateClient(t, ts, "cands", "mallory")
	// negotiate offers with the candidates of ports [from, to) of
	// 192.0.2.1 in place of the client's own.
	negotiate := func(restart bool, from, to int) {
		t.Helper()
		client.negotiate(restart, "192.0.2.1", from, to)
	}
	ignored := func() float64 {
		return ts.metricWith(t, "gxconf_sfu_ice_candidates_ignored_total", "reason", "limit")
	}
	// pion's ICE agent adds a remote candidate in a goroutine of its own.
	candidates := func(want int, msg string) {
		t.Helper()
		require.Eventually(t, func() bool { return ts.srv.RemoteCandidates("cands", "mallory", "192.0.2.1") == want }, 5*time.Second, 5*time.Millisecond,
			"%s: %d candidates, want %d", msg, ts.srv.RemoteCandidates("cands", "mallory", "192.0.2.1"), want)
	}

	negotiate(false, 10000, 10300)
	candidates(128, "one offer's candidates")
	require.EqualValues(t, 172, ignored())
	negotiate(false, 20000, 20300)
	candidates(128, "a renegotiation's candidates on top")
	require.EqualValues(t, 472, ignored())
	negotiate(false, 10000, 10100) // repeated ones count once
	require.EqualValues(t, 472, ignored())
	client.trickle("192.0.2.1", 30000)
	require.Eventually(t, func() bool { return ignored() == 473 }, 5*time.Second, 5*time.Millisecond, "a trickled one over the bound")

	negotiate(true, 40000, 40020)
	candidates(20, "an ICE restart drops the old candidates and takes new ones")
	negotiate(false, 40000, 40300)
	candidates(128, "bounded again")
	require.EqualValues(t, 473+300-128, ignored())
}

// TestQueuedCandidatesWithinTheBound: candidates trickled before the
// first offer wait for it and then count against the ICE generation's
// bound with the offer's own: 64 queued ones came on top of an offer's
// 128, 192 addresses to probe.
func TestQueuedCandidatesWithinTheBound(t *testing.T) {
	verifyNoLeaks(t)
	const queued, bound = 64, 128 // queued before the description; per ICE generation
	ts := startServer(t, nil)
	client := newCandidateClient(t, ts, "queued", "mallory")
	for port := 30000; port < 30000+queued; port++ {
		client.trickle("192.0.2.1", port)
	}
	client.negotiate(false, "192.0.2.1", 10000, 10000+bound)
	require.EqualValues(t, queued, ts.metricWith(t, "gxconf_sfu_ice_candidates_ignored_total", "reason", "limit"))
	require.Eventually(t, func() bool { return ts.srv.RemoteCandidates("queued", "mallory", "192.0.2.1") == bound }, 5*time.Second, 5*time.Millisecond,
		"%d candidates, want %d", ts.srv.RemoteCandidates("queued", "mallory", "192.0.2.1"), bound)
}

// TestEarlyOffersBounded: a client's publisher connection takes at most 8
// offers before it first connects. Until then pion's operation queue waits
// for ICE and DTLS, and each description set meanwhile queues an operation
// holding it: 30 offers of 470 kB from a client that did not connect kept
// about 45 MB until its connection timed out. Once connected, renegotiation
// is not bounded.
func TestEarlyOffersBounded(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	canPublish := func(g *auth.VideoGrant) { g.SetCanPublish(true) }
	ws := joinedRaw(t, ts, "early", "mallory", canPublish)
	ws.SetReadLimit(4 << 20)
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	for range 100 {
		_, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		require.NoError(t, err)
	}
	big, err := pc.CreateOffer(nil)
	require.NoError(t, err)
	require.NoError(t, pc.Close())

	before := liveHeapMB()
	answered := 0
	for i := 1; i <= 30; i++ {
		writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: big.SDP, Id: uint32(i)}}})
		writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: int64(i)}}})
		for {
			r := awaitSignal(t, ws, func(r *livekit.SignalResponse) bool {
				return r.GetAnswer() != nil || r.GetPongResp().GetLastPingTimestamp() == int64(i)
			})
			if r.GetAnswer() == nil {
				break
			}
			answered++
		}
	}
	grown := liveHeapMB() - before
	t.Logf("grown %.1f MB", grown)
	require.Equal(t, 8, answered)
	require.EqualValues(t, 22, ts.metricWith(t, "gxconf_sfu_session_descriptions_refused_total", "reason", "unconnected"))
	require.Less(t, grown, 25.0, "offers before the connection grew the heap by %.1f MB", grown)
	writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})

	// A client that connects renegotiates as often as it likes.
	alice := joinedRaw(t, ts, "early", "alice", canPublish)
	client, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	defer client.Close()
	connected := make(chan struct{})
	client.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			close(connected)
		}
	})
	negotiate := func(id uint32) {
		t.Helper()
		_, err := client.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		require.NoError(t, err)
		offer, err := client.CreateOffer(nil)
		require.NoError(t, err)
		gathered := webrtc.GatheringCompletePromise(client)
		require.NoError(t, client.SetLocalDescription(offer))
		<-gathered
		writeSignal(t, alice, &livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: client.LocalDescription().SDP, Id: id}}})
		a := awaitSignal(t, alice, func(r *livekit.SignalResponse) bool { return r.GetAnswer() != nil }).GetAnswer()
		require.Equal(t, id, a.GetId())
		require.NoError(t, client.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: a.GetSdp()}))
	}
	negotiate(1)
	select {
	case <-connected:
	case <-time.After(15 * time.Second):
		t.Fatal("the publisher connection did not connect")
	}
	for id := uint32(2); id <= 12; id++ {
		negotiate(id)
	}
	require.EqualValues(t, 22, ts.metricWith(t, "gxconf_sfu_session_descriptions_refused_total", "reason", "unconnected"))
	writeSignal(t, alice, &livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})
}

// TestEarlySubscriberOffersBounded: the server makes at most 8 subscriber
// offers before the subscriber connection first connects; a negotiation
// beyond waits for the connection. Each answer set meanwhile stayed queued
// in pion with the connection's start, and a client that did not connect
// could have as many as it liked by switching a subscription on and off:
// 60 answers of 90 kB kept about 16 MB (1,000 in 8 s, 267 MB). A client that
// connects then gets the offer that waited.
func TestEarlySubscriberOffersBounded(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	bob := ts.join(t, "subs", "bob", nil)
	bob.publish(t, lightMedia())
	var audio string
	require.Eventually(t, func() bool {
		for _, pub := range bob.room.LocalParticipant.TrackPublications() {
			if pub.Kind() == lksdk.TrackKindAudio && pub.SID() != "" {
				audio = pub.SID()
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_published_tracks") == 2 }, 10*time.Second, 10*time.Millisecond)

	// toggle switches ws's subscription to bob's audio, answers every offer
	// it brings with answer(offer) and returns how many came.
	ping := int64(0)
	onMessage := func(r *livekit.SignalResponse) bool { return r.GetOffer() != nil }
	toggle := func(ws *websocket.Conn, on bool, answer func(*livekit.SessionDescription) string) int {
		t.Helper()
		writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Subscription{Subscription: &livekit.UpdateSubscription{TrackSids: []string{audio}, Subscribe: on}}})
		ping++
		writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: ping}}})
		offers := 0
		for {
			r := awaitSignal(t, ws, func(r *livekit.SignalResponse) bool {
				return onMessage(r) || r.GetPongResp().GetLastPingTimestamp() == ping
			})
			if r.GetOffer() == nil {
				return offers
			}
			offers++
			writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Answer{Answer: &livekit.SessionDescription{
				Type: "answer", Sdp: answer(r.GetOffer()), Id: r.GetOffer().GetId(),
			}}})
		}
	}

	// A client that never connects, its answers padded to 90 kB.
	var pad strings.Builder
	for i := 0; pad.Len() < 28_000; i++ {
		fmt.Fprintf(&pad, "a=extmap:%d urn:example:%d\r\n", 1+i%14, i)
	}
	padded := func(offer *livekit.SessionDescription) string {
		pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
		require.NoError(t, err)
		defer pc.Close()
		require.NoError(t, pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer.GetSdp()}))
		a, err := pc.CreateAnswer(nil)
		require.NoError(t, err)
		var b strings.Builder
		for line := range strings.Lines(a.SDP) {
			b.WriteString(line)
			if strings.HasPrefix(line, "a=mid:") {
				b.WriteString(pad.String())
			}
		}
		return b.String()
	}
	mallory := joinedRaw(t, ts, "subs", "mallory", nil)
	offers := toggle(mallory, true, padded) // the join's offer, and the subscription's
	before := liveHeapMB()
	for i := range 60 {
		offers += toggle(mallory, i%2 == 1, padded)
	}
	grown := liveHeapMB() - before
	t.Logf("grown %.1f MB", grown)
	require.Equal(t, 8, offers)
	require.Less(t, grown, 8.0, "answers before the connection grew the heap by %.1f MB", grown)
	writeSignal(t, mallory, &livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})

	// A client that answers with its connection and connects only then (it
	// learns the server's candidates last).
	client, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	defer client.Close()
	withoutCandidates := func(sdp string) string {
		var b strings.Builder
		for line := range strings.Lines(sdp) {
			if !strings.HasPrefix(line, "a=candidate:") {
				b.WriteString(line)
			}
		}
		return b.String()
	}
	real := func(offer *livekit.SessionDescription) string {
		require.NoError(t, client.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: withoutCandidates(offer.GetSdp())}))
		a, err := client.CreateAnswer(nil)
		require.NoError(t, err)
		require.NoError(t, client.SetLocalDescription(a))
		return withoutCandidates(a.SDP) // the server does not learn the client's either
	}
	carol := joinedRaw(t, ts, "subs", "carol", nil)
	var candidates []webrtc.ICECandidateInit // the server's, trickled
	awaitOffer := func(r *livekit.SignalResponse) bool {
		if tr := r.GetTrickle(); tr != nil && tr.GetTarget() == livekit.SignalTarget_SUBSCRIBER {
			c, err := candidateInit(tr.GetCandidateInit())
			require.NoError(t, err)
			candidates = append(candidates, c)
		}
		return r.GetOffer() != nil
	}
	onMessage = awaitOffer
	offers = toggle(carol, true, real)
	subscribed := true
	for offers < 8 {
		subscribed = !subscribed
		offers += toggle(carol, subscribed, real)
	}
	subscribed = !subscribed
	require.Zero(t, toggle(carol, subscribed, real), "a ninth offer before the connection")
	connected := make(chan struct{})
	client.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			close(connected)
		}
	})
	for _, c := range candidates {
		_ = client.AddICECandidate(c)
	}
	select {
	case <-connected:
	case <-time.After(15 * time.Second):
		t.Fatal("the subscriber connection did not connect")
	}
	off := awaitSignal(t, carol, awaitOffer).GetOffer()
	writeSignal(t, carol, &livekit.SignalRequest{Message: &livekit.SignalRequest_Answer{Answer: &livekit.SessionDescription{Type: "answer", Sdp: real(off), Id: off.GetId()}}})
	for range 10 {
		subscribed = !subscribed
		require.Equal(t, 1, toggle(carol, subscribed, real), "once connected, every change is negotiated")
	}
	writeSignal(t, carol, &livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})
}

// offerAnswered sends an offer and a ping on ws and tells whether the
// offer was answered before the pong.
func offerAnswered(t *testing.T, ws *websocket.Conn, id uint32, sdp string) bool {
	t.Helper()
	writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: sdp, Id: id}}})
	writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: int64(id)}}})
	answered := false
	for {
		r := awaitSignal(t, ws, func(r *livekit.SignalResponse) bool {
			return r.GetAnswer() != nil || r.GetPongResp().GetLastPingTimestamp() == int64(id)
		})
		if r.GetAnswer() == nil {
			return answered
		}
		require.Equal(t, id, r.GetAnswer().GetId())
		answered = true
	}
}

// TestOfferTracksPerSection: an offer with a media section that pion
// takes to describe more than one track (Plan B: two a=ssrc streams in a
// section; simulcast by SSRC, a=ssrc-group:SIM, which pion reads alike) is
// refused before pion sees it, in both connection modes. pion set such an
// offer and then failed to answer it, and since it cannot roll a remote
// offer back, the connection stayed in have-remote-offer: every later
// offer of the client failed too, and the client was not told. Now the
// next offer is answered. The shapes clients make are answered: a stream
// with its RTX (FID) and FlexFEC (FEC-FR) repair streams, simulcast by rid
// without a=ssrc lines (Chrome, Safari) or with one per layer and their
// RTX (Firefox), recvonly sections listing SSRCs.
func TestOfferTracksPerSection(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	var base strings.Builder // one sendonly video section, no a=ssrc or a=msid lines
	for line := range strings.Lines(videoOffer(t)) {
		if !strings.HasPrefix(line, "a=ssrc") && !strings.HasPrefix(line, "a=msid:") {
			base.WriteString(line)
		}
	}
	ssrc := func(msid string, ssrcs ...int) string {
		var b strings.Builder
		for _, s := range ssrcs {
			fmt.Fprintf(&b, "a=ssrc:%d cname:alice\r\n", s)
			if msid != "" {
				fmt.Fprintf(&b, "a=ssrc:%d msid:%s\r\n", s, msid)
			}
		}
		return b.String()
	}
	const msid = "a=msid:stream track0\r\n"
	const rids = "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n"
	sendonly := base.String()
	recvonly := strings.Replace(sendonly, "a=sendonly", "a=recvonly", 1)
	answered := map[string]string{
		"a stream and its RTX":           sendonly + msid + "a=ssrc-group:FID 1 2\r\n" + ssrc("stream track0", 1, 2),
		"RTX groups after the streams":   sendonly + msid + ssrc("stream track0", 1, 2) + "a=ssrc-group:FID 1 2\r\n",
		"RTX and FlexFEC":                sendonly + msid + "a=ssrc-group:FID 1 2\r\na=ssrc-group:FEC-FR 1 3\r\n" + ssrc("stream track0", 1, 2, 3),
		"simulcast by rid":               sendonly + msid + rids,
		"simulcast by rid, SSRC per rid": sendonly + msid + rids + "a=ssrc-group:FID 1 4\r\na=ssrc-group:FID 2 5\r\na=ssrc-group:FID 3 6\r\n" + ssrc("", 1, 2, 3, 4, 5, 6),
		"one stream without msid":        sendonly + ssrc("", 7),
		"one stream, as 7 and 007":       sendonly + ssrc("", 7) + "a=ssrc:007 cname:alice\r\n",
		"recvonly, several SSRCs":        recvonly + ssrc("", 8, 9),
	}
	refused := map[string]string{
		"two streams (Plan B)":        sendonly + msid + ssrc("stream track0", 1) + ssrc("stream track1", 2),
		"two streams without msid":    sendonly + ssrc("", 1, 2),
		"simulcast by SSRC (SIM)":     sendonly + msid + "a=ssrc-group:SIM 1 2 3\r\na=ssrc-group:FID 1 4\r\na=ssrc-group:FID 2 5\r\na=ssrc-group:FID 3 6\r\n" + ssrc("stream track0", 1, 2, 3, 4, 5, 6),
		"rids without a known msid":   sendonly + rids + ssrc("", 1, 2),
		"an FID group of three SSRCs": sendonly + msid + "a=ssrc-group:FID 1 2 3\r\n" + ssrc("stream track0", 1, 2, 3),
	}
	// A session per offer: before its connection connects, a client's
	// offers are answered at most 8 times (TestEarlyOffersBounded).
	n := 0
	join := func(t *testing.T, mode string) *websocket.Conn {
		t.Helper()
		n++
		identity := fmt.Sprintf("alice-%d", n)
		canPublish := func(g *auth.VideoGrant) { g.SetCanPublish(true) }
		if mode == "dual" {
			return joinedRaw(t, ts, "tracks", identity, canPublish)
		}
		ws := rawV1(t, ts, ts.token(t, "tracks", identity, canPublish), &livekit.JoinRequest{
			ClientInfo: &livekit.ClientInfo{Sdk: livekit.ClientInfo_JS, Protocol: 16, Version: "2.19.0"},
		})
		require.NotNil(t, readSignal(t, ws).GetJoin())
		return ws
	}
	leave := func(ws *websocket.Conn) {
		writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})
	}
	for _, mode := range []string{"dual", "single"} {
		t.Run(mode, func(t *testing.T) {
			before := ts.metricWith(t, "gxconf_sfu_session_descriptions_refused_total", "reason", "tracks")
			for name, sdp := range refused {
				ws := join(t, mode)
				require.False(t, offerAnswered(t, ws, 1, sdp), "%s answered", name)
				// the connection is not stuck with it
				require.True(t, offerAnswered(t, ws, 2, answered["a stream and its RTX"]), "the offer after %s not answered", name)
				leave(ws)
			}
			require.EqualValues(t, len(refused), ts.metricWith(t, "gxconf_sfu_session_descriptions_refused_total", "reason", "tracks")-before)
			for name, sdp := range answered {
				ws := join(t, mode)
				require.True(t, offerAnswered(t, ws, 1, sdp), "%s not answered", name)
				leave(ws)
			}
		})
	}
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_participants") == 0 }, 10*time.Second, 10*time.Millisecond)
}

// TestUnanswerableOfferEndsSession: when pion takes a client's offer and
// then cannot answer it, the session ends with a leave that tells the
// client to join again (STATE_MISMATCH, RECONNECT), in both connection
// modes. pion cannot roll a remote offer back: the connection stayed in
// have-remote-offer, refused every later offer, and the client was not
// told. The offers here: one checkOfferTracks does not look for (two
// sections sharing a mid, each with a stream, which pion counts as one
// section of two, Plan B), and offers pion's SetRemoteDescription commits
// and then fails on (offerStuck).
func TestUnanswerableOfferEndsSession(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	offer := videoOffer(t)
	var section strings.Builder // the video section, without a=ssrc or a=msid lines
	for line := range strings.Lines(offer[strings.Index(offer, "m=video"):]) {
		if !strings.HasPrefix(line, "a=ssrc") && !strings.HasPrefix(line, "a=msid:") {
			section.WriteString(line)
		}
	}
	stream := func(ssrc int) string {
		return fmt.Sprintf("a=msid:s t%d\r\na=ssrc:%d cname:alice\r\na=ssrc:%d msid:s t%d\r\n", ssrc, ssrc, ssrc, ssrc)
	}
	sharedMid := offer[:strings.Index(offer, "m=video")] + section.String() + stream(1) + section.String() + stream(2)
	// Offers pion sets and then fails on, with no way back: a payload type
	// without its rtpmap, a section without a mid, no ICE credentials.
	mline := offer[strings.Index(offer, "m=video"):]
	mline = mline[:strings.Index(mline, "\r\n")]
	unknownPT := strings.Replace(offer, mline, mline+" 77", 1)
	var noMid, noUfrag strings.Builder
	for line := range strings.Lines(offer) {
		if !strings.HasPrefix(line, "a=mid:") {
			noMid.WriteString(line)
		}
		if !strings.HasPrefix(line, "a=ice-ufrag:") {
			noUfrag.WriteString(line)
		}
	}
	canPublish := func(g *auth.VideoGrant) { g.SetCanPublish(true) }
	i := 0
	for _, tc := range []struct{ name, sdp string }{
		{"shared mid", sharedMid}, {"unknown payload type", unknownPT}, {"no mid", noMid.String()}, {"no ufrag", noUfrag.String()},
	} {
		for _, mode := range []string{"dual", "single"} {
			i++
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				var ws *websocket.Conn
				if mode == "dual" {
					ws = joinedRaw(t, ts, "unanswerable", mode, canPublish)
				} else {
					ws = rawV1(t, ts, ts.token(t, "unanswerable", mode, canPublish), &livekit.JoinRequest{
						ClientInfo: &livekit.ClientInfo{Sdk: livekit.ClientInfo_JS, Protocol: 16, Version: "2.19.0"},
					})
					require.NotNil(t, readSignal(t, ws).GetJoin())
				}
				writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: tc.sdp, Id: 1}}})
				leave := awaitSignal(t, ws, func(r *livekit.SignalResponse) bool {
					require.Nil(t, r.GetAnswer(), "answered")
					return r.GetLeave() != nil
				}).GetLeave()
				require.Equal(t, livekit.LeaveRequest_RECONNECT, leave.GetAction())
				require.Equal(t, livekit.DisconnectReason_STATE_MISMATCH, leave.GetReason())
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				for { // the server closes the socket
					if _, _, err := ws.Read(ctx); err != nil {
						require.NotErrorIs(t, err, context.DeadlineExceeded)
						break
					}
				}
				require.EqualValues(t, i, ts.metricWith(t, "gxconf_sfu_session_descriptions_refused_total", "reason", "unanswerable"))
				require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_participants") == 0 }, 10*time.Second, 10*time.Millisecond)
			})
		}
	}
}
