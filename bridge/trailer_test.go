package bridge

import (
	"bytes"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/internal/rtptest"
)

// TestRelayPacketTrailers: alice on node A publishes video whose frames end
// in packet trailers (server-sdk-go's AttachUserTimestamp). The relay
// carries the frames as they came and the TrackInfo that announces the
// trailers; node B cuts them for bob, whose client does not read them.
func TestRelayPacketTrailers(t *testing.T) {
	verifyNoLeaks(t)
	ends := &rtptest.FrameEnds{}
	t.Cleanup(ends.Wait) // after bob left
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	infos := make(chan *livekit.TrackInfo, 4)
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
		infos <- pub.TrackInfo()
		ends.Read(track)
	}
	bob, err := lksdk.ConnectToRoomWithToken(b.url, b.token(t, "room", "bob"), cb, lksdk.WithAutoSubscribe(true))
	require.NoError(t, err)
	t.Cleanup(bob.Disconnect)

	alice := a.join(t, "room", "alice")
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "alice")
	require.NoError(t, err)
	_, err = alice.room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: "cam", Source: livekit.TrackSource_CAMERA, AttachUserTimestamp: true})
	require.NoError(t, err)
	body := []byte{0x10, 0x00, 0x9d, 0x01, 0x2a, 0xaa, 0xbb} // a VP8 keyframe's start: every frame is one
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := uint16(0); ; i++ {
			p := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: i, Timestamp: uint32(i) * 3000, Marker: true},
				Payload: append(append([]byte(nil), body...), rtptest.Trailer(uint64(1000+i))...)}
			_ = track.WriteRTP(p)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); <-sent }()

	require.Eventually(t, func() bool { return ends.Count() >= 10 }, 20*time.Second, 20*time.Millisecond, "bob on node B receives alice's frames")
	require.Equal(t, []livekit.PacketTrailerFeature{livekit.PacketTrailerFeature_PTF_USER_TIMESTAMP}, (<-infos).GetPacketTrailerFeatures())
	for _, p := range ends.Snapshot() {
		require.True(t, bytes.Equal(body, p), "bob gets frames without their trailer: %x", p)
	}
}
