package bridge

import (
	"testing"
	"time"

	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/require"
)

func avOpts() loadtest.PublishOptions { return loadtest.PublishOptions{Audio: true, Video: true} }

// TestRelayBothWays: alice publishes on node A, bob on node B; each
// receives the other's audio and simulcast video intact, under the
// origin's identity, participant sid and track sids; mute, data and leave
// cross the relay.
func TestRelayBothWays(t *testing.T) {
	verifyNoLeaks(t)
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	alice := a.join(t, "room", "alice")
	bob := b.join(t, "room", "bob")
	alice.publish(t, avOpts())
	bob.publish(t, avOpts())
	bob.waitMedia(t, []string{"alice"}, 30, 50, 20*time.Second)
	alice.waitMedia(t, []string{"bob"}, 30, 50, 20*time.Second)
	require.Equal(t, loadtest.VideoMarker("alice", livekit.VideoQuality_HIGH), bob.stream("alice/video").LastMarker())
	require.Equal(t, loadtest.VideoMarker("bob", livekit.VideoQuality_HIGH), alice.stream("bob/video").LastMarker())

	// Identities, participant sids and track sids are the origin's.
	rp := bob.room.GetParticipantByIdentity("alice")
	require.NotNil(t, rp)
	require.Equal(t, alice.room.LocalParticipant.SID(), rp.SID())
	require.Equal(t, alice.pub.VideoPub.SID(), bob.publication("alice/video").SID())
	require.Equal(t, alice.pub.AudioPub.SID(), bob.publication("alice/audio").SID())
	require.Equal(t, bob.pub.VideoPub.SID(), alice.publication("bob/video").SID())

	// Mute crosses.
	alice.pub.AudioPub.SetMuted(true)
	require.Eventually(t, func() bool {
		bob.mu.Lock()
		defer bob.mu.Unlock()
		return bob.muted["alice/"+alice.pub.AudioPub.SID()]
	}, 10*time.Second, 20*time.Millisecond)

	// Data crosses both ways, reliable and lossy, broadcast and addressed.
	require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("hi-bob")), lksdk.WithDataPublishReliable(true)))
	require.NoError(t, bob.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("hi-alice")),
		lksdk.WithDataPublishReliable(true), lksdk.WithDataPublishDestination([]string{"alice"})))
	require.Eventually(t, func() bool { return bob.hasData("alice", "hi-bob") && alice.hasData("bob", "hi-alice") },
		10*time.Second, 20*time.Millisecond)

	// Leave crosses.
	alice.close()
	require.Eventually(t, func() bool {
		bob.mu.Lock()
		defer bob.mu.Unlock()
		return bob.left["alice"]
	}, 10*time.Second, 20*time.Millisecond)
}
