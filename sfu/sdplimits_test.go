package sfu_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
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
// clients make them are answered as before.
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
	for _, s := range []session{mallory, hoarder} {
		writeSignal(t, s.ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})
	}
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_participants") == 0 }, 10*time.Second, 10*time.Millisecond)
}
