package sfu_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// readSignalErr reads one message from ws, or the error that ended it.
func readSignalErr(ws *websocket.Conn) (*livekit.SignalResponse, error) {
	_, data, err := ws.Read(context.Background())
	if err != nil {
		return nil, err
	}
	res := &livekit.SignalResponse{}
	return res, proto.Unmarshal(data, res)
}

// candidateInit decodes a trickled candidate as LiveKit sends it.
func candidateInit(s string) (webrtc.ICECandidateInit, error) {
	var c webrtc.ICECandidateInit
	err := json.Unmarshal([]byte(s), &c)
	return c, err
}

// awaitSignal reads ws until match accepts a message, for at most 15 s.
func awaitSignal(t *testing.T, ws *websocket.Conn, match func(*livekit.SignalResponse) bool) *livekit.SignalResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		_, data, err := ws.Read(ctx)
		require.NoError(t, err, "the awaited signal message did not come")
		res := &livekit.SignalResponse{}
		require.NoError(t, proto.Unmarshal(data, res))
		if match(res) {
			return res
		}
	}
}

// TestPublishSourceFitsKind: where a token limits what may be published
// (microphone only), a track is what its kind says, not what its label
// says — a video track announced as the microphone is refused, and video
// sent on an announced microphone (its msid naming the audio track's cid)
// is not taken for it. Without a source limit a label is only a label, as
// in livekit-server.
func TestPublishSourceFitsKind(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	micOnly := func(g *auth.VideoGrant) {
		g.SetCanPublish(true)
		g.CanPublishSources = []string{"microphone"}
	}
	ws := joinedRaw(t, ts, "kinds", "mallory", micOnly)
	addTrack := func(cid string, typ livekit.TrackType, source livekit.TrackSource) {
		writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_AddTrack{AddTrack: &livekit.AddTrackRequest{
			Cid: cid, Name: cid, Type: typ, Source: source,
		}}})
	}

	addTrack("cam-as-mic", livekit.TrackType_VIDEO, livekit.TrackSource_MICROPHONE)
	rr := awaitSignal(t, ws, func(r *livekit.SignalResponse) bool { return r.GetRequestResponse() != nil }).GetRequestResponse()
	require.Equal(t, livekit.RequestResponse_NOT_ALLOWED, rr.GetReason())
	require.Equal(t, "cam-as-mic", rr.GetAddTrack().GetCid())
	require.Equal(t, "a video track cannot be the microphone", rr.GetMessage())

	addTrack("mic", livekit.TrackType_AUDIO, livekit.TrackSource_MICROPHONE)
	awaitSignal(t, ws, func(r *livekit.SignalResponse) bool { return r.GetTrackPublished().GetCid() == "mic" })

	// Video whose msid names the microphone's cid.
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	defer pc.Close()
	video, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "mic", "mallory-stream")
	require.NoError(t, err)
	_, err = pc.AddTransceiverFromTrack(video, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	require.NoError(t, err)
	offer, err := pc.CreateOffer(nil)
	require.NoError(t, err)
	gathered := webrtc.GatheringCompletePromise(pc)
	require.NoError(t, pc.SetLocalDescription(offer))
	<-gathered
	writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{
		Type: "offer", Sdp: pc.LocalDescription().SDP, Id: 1,
	}}})
	answer := awaitSignal(t, ws, func(r *livekit.SignalResponse) bool { return r.GetAnswer() != nil }).GetAnswer()
	require.NoError(t, pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer.GetSdp()}))
	go func() { // the server's trickled candidates, until the socket closes
		for {
			res, err := readSignalErr(ws)
			if err != nil {
				return
			}
			if tr := res.GetTrickle(); tr != nil {
				if c, err := candidateInit(tr.GetCandidateInit()); err == nil {
					_ = pc.AddICECandidate(c)
				}
			}
		}
	}()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for seq := uint16(0); ; seq++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_ = video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, SequenceNumber: seq, Timestamp: uint32(seq) * 1800},
				Payload: []byte{0x10, 0x00, 0x9d, 0x01, 0x2a, 1, 2, 3, 4, 5, 6, 7, 8}})
		}
	}()
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_unmatched_media_total") == 1 }, 15*time.Second, 20*time.Millisecond,
		"the video stream should match no announced track")
	require.Zero(t, ts.metric(t, "gxconf_sfu_published_tracks"), "the microphone must not go live with video")

	// Without a source limit the label is the publisher's business.
	free := joinedRaw(t, ts, "kinds", "frank", func(g *auth.VideoGrant) { g.SetCanPublish(true) })
	writeSignal(t, free, &livekit.SignalRequest{Message: &livekit.SignalRequest_AddTrack{AddTrack: &livekit.AddTrackRequest{
		Cid: "odd", Name: "odd", Type: livekit.TrackType_VIDEO, Source: livekit.TrackSource_MICROPHONE,
	}}})
	awaitSignal(t, free, func(r *livekit.SignalResponse) bool { return r.GetTrackPublished().GetCid() == "odd" })
}

// TestOfferMediaSectionsBounded: a client's offers may bring a connection
// at most maxMediaSections (512) media sections: an offer with more is not
// answered, nor one whose fresh mids would take the connection beyond it
// (pion keeps a transceiver per mid ever offered, so offers with new mids
// each time grew memory and answer time without bound); offers within the
// bound are answered as before.
func TestOfferMediaSectionsBounded(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	ws := joinedRaw(t, ts, "offers", "mallory", nil)
	ws.SetReadLimit(4 << 20) // answers of hundreds of sections
	offerOf := func(n int, midPrefix string) string {
		pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
		require.NoError(t, err)
		defer pc.Close()
		for range n {
			_, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
			require.NoError(t, err)
		}
		offer, err := pc.CreateOffer(nil)
		require.NoError(t, err)
		sdp := offer.SDP
		if midPrefix != "" {
			var b strings.Builder
			for line := range strings.Lines(sdp) {
				switch {
				case strings.HasPrefix(line, "a=mid:"):
					line = "a=mid:" + midPrefix + strings.TrimPrefix(line, "a=mid:")
				case strings.HasPrefix(line, "a=group:BUNDLE "):
					mids := strings.Fields(strings.TrimPrefix(line, "a=group:BUNDLE "))
					for i := range mids {
						mids[i] = midPrefix + mids[i]
					}
					line = "a=group:BUNDLE " + strings.Join(mids, " ") + "\r\n"
				}
				b.WriteString(line)
			}
			sdp = b.String()
		}
		return sdp
	}
	send := func(id uint32, sdp string) {
		writeSignal(t, ws, &livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: sdp, Id: id}}})
	}
	answered := func() uint32 {
		return awaitSignal(t, ws, func(r *livekit.SignalResponse) bool { return r.GetAnswer() != nil }).GetAnswer().GetId()
	}
	send(1, offerOf(600, "")) // too many sections at once
	send(2, offerOf(300, "")) // within the bound
	require.EqualValues(t, 2, answered(), "the offer of 600 sections was answered")
	send(3, offerOf(300, "x")) // 300 fresh mids on top of 300
	send(4, offerOf(300, ""))  // the same 300 again
	require.EqualValues(t, 4, answered(), "the offer of 300 fresh mids was answered")
}
