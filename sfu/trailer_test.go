package sfu_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gxfs-conf/gxconf/internal/rtptest"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

// capabilityProxy is a proxy to the SFU that adds capabilities to v0 join
// requests, for an SDK that cannot say it reads packet trailers. A proxied
// connection ends as soon as either side closes. It returns the proxy's
// ws:// URL and a function that waits until every proxied connection ended
// and stops the proxy: call it after the SFU stopped.
func capabilityProxy(t *testing.T, ts *testServer, caps string) (string, func()) {
	target, err := url.Parse(httpURL(ts))
	require.NoError(t, err)
	var active sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		active.Add(1)
		defer active.Done()
		back, err := net.Dial("tcp", target.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer back.Close()
		r.URL.RawQuery += "&capabilities=" + caps
		if err := r.Write(back); err != nil {
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(back, brw); done <- struct{}{} }()
		go func() { _, _ = io.Copy(conn, back); done <- struct{}{} }()
		<-done
		_, _ = conn.Close(), back.Close()
		<-done
	}))
	return "ws" + strings.TrimPrefix(srv.URL, "http"), func() {
		done := make(chan struct{})
		go func() { active.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("a proxied connection stayed open after the SFU stopped")
		}
		srv.Close()
	}
}

// TestPacketTrailers: alice publishes video with user timestamps in packet
// trailers (server-sdk-go's AttachUserTimestamp). The TrackInfo the others
// get says so; bob's client does not read trailers (server-sdk-go does not
// say CAP_PACKET_TRAILER) and receives every frame without it; carol's
// says it reads them and receives them as alice sent them.
func TestPacketTrailers(t *testing.T) {
	verifyNoLeaks(t)
	bobEnds, carolEnds := &rtptest.FrameEnds{}, &rtptest.FrameEnds{}
	t.Cleanup(func() { bobEnds.Wait(); carolEnds.Wait() }) // after the rooms below are left
	stopProxy := func() {}
	t.Cleanup(func() { stopProxy() }) // after the SFU stopped
	ts := startServer(t, nil)
	proxyURL, stopIt := capabilityProxy(t, ts, "CAP_PACKET_TRAILER")
	stopProxy = stopIt
	var bobPub *lksdk.RemoteTrackPublication
	var pubMu sync.Mutex
	ts.joinWith(t, "pt", "bob", func(cb *lksdk.RoomCallback) {
		cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
			pubMu.Lock()
			bobPub = pub
			pubMu.Unlock()
			bobEnds.Read(track)
		}
	})
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
		carolEnds.Read(track)
	}
	carol, err := lksdk.ConnectToRoomWithToken(proxyURL, ts.token(t, "pt", "carol", nil), cb, lksdk.WithAutoSubscribe(true))
	require.NoError(t, err)
	t.Cleanup(carol.Disconnect)

	alice := ts.join(t, "pt", "alice", nil)
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "alice")
	require.NoError(t, err)
	_, err = alice.room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: "cam", Source: livekit.TrackSource_CAMERA, AttachUserTimestamp: true})
	require.NoError(t, err)

	// Frames of two packets, each a keyframe (so a subscriber starts at
	// any of them), the second ending in a trailer; the first ends in
	// bytes that look like one but has no marker.
	first := append([]byte{0x10, 0x00, 0x9d, 0x01, 0x2a}, rtptest.Trailer(1)...)
	body := []byte{0x00, 0xaa, 0xbb, 0xcc, 0xdd}
	stop := make(chan struct{})
	var sender sync.WaitGroup
	sender.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := uint16(0); ; i++ {
			ts := uint32(i) * 3000
			_ = track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: 2 * i, Timestamp: ts}, Payload: first})
			_ = track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: 2*i + 1, Timestamp: ts, Marker: true}, Payload: append(append([]byte(nil), body...), rtptest.Trailer(uint64(1000+i))...)})
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	defer sender.Wait()
	defer close(stop)

	require.Eventually(t, func() bool { return bobEnds.Count() >= 10 && carolEnds.Count() >= 10 }, 20*time.Second, 20*time.Millisecond,
		"frames: bob %d, carol %d", bobEnds.Count(), carolEnds.Count())
	pubMu.Lock()
	info := bobPub.TrackInfo()
	pubMu.Unlock()
	require.Equal(t, []livekit.PacketTrailerFeature{livekit.PacketTrailerFeature_PTF_USER_TIMESTAMP}, info.GetPacketTrailerFeatures())
	for _, p := range bobEnds.Snapshot() {
		require.Equal(t, body, p, "bob gets frames without their trailer")
	}
	for _, p := range carolEnds.Snapshot() {
		require.Len(t, p, len(body)+15)
		require.True(t, bytes.HasPrefix(p, body) && bytes.HasSuffix(p, []byte("LKTS")), "carol gets the trailer: %x", p)
	}
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_packet_trailers_stripped_total") >= 10 }, 10*time.Second, 50*time.Millisecond)
}
