package bridge

import (
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
)

// TestRelaySubscriptionPermission: alice on node A lets only bob subscribe;
// bob on node B receives her, carol on node B does not (node B enforces the
// permission the relay carried, which arrives before the tracks); a grant to
// carol and a revocation of bob's, made on A, take effect on B.
func TestRelaySubscriptionPermission(t *testing.T) {
	verifyNoLeaks(t)
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	alice := a.join(t, "room", "alice")
	alice.room.LocalParticipant.SetSubscriptionPermission(&livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{{ParticipantIdentity: "bob", AllTracks: true}},
	})
	bob := b.join(t, "room", "bob")
	carol := b.join(t, "room", "carol")
	alice.publish(t, avOpts())
	bob.waitMedia(t, []string{"alice"}, 10, 20, 20*time.Second)
	denied := func(n float64) func() bool {
		return func() bool { return metricValue(t, b.sfuReg, "gxconf_sfu_subscriptions_denied_total") == n }
	}
	require.Eventually(t, denied(2), 10*time.Second, 20*time.Millisecond, "node B refuses carol both tracks")
	carol.mu.Lock()
	require.Empty(t, carol.streams, "carol receives nothing of alice")
	carol.mu.Unlock()
	require.Zero(t, metricValue(t, a.sfuReg, "gxconf_sfu_subscriptions_denied_total"), "node A has no subscriber to refuse")

	// A grant on A reaches carol on B.
	alice.room.LocalParticipant.SetSubscriptionPermission(&livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{
			{ParticipantIdentity: "bob", AllTracks: true},
			{ParticipantIdentity: "carol", TrackSids: []string{alice.pub.AudioPub.SID()}},
		},
	})
	require.Eventually(t, func() bool {
		st := carol.stream("alice/audio")
		return st != nil && st.Frames.Load() >= 20
	}, 20*time.Second, 20*time.Millisecond, "carol receives alice's audio")
	require.Nil(t, carol.stream("alice/video"), "but not her video")

	// Revoking bob's on A takes alice's tracks from bob on B.
	alice.room.LocalParticipant.SetSubscriptionPermission(&livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{{ParticipantIdentity: "carol", AllTracks: true}},
	})
	require.Eventually(t, func() bool {
		bob.mu.Lock()
		defer bob.mu.Unlock()
		return bob.ended["alice/audio"] == 1 && bob.ended["alice/video"] == 1
	}, 15*time.Second, 20*time.Millisecond, "alice's tracks leave bob's connection")
	require.Eventually(t, func() bool {
		st := carol.stream("alice/video")
		return st != nil && st.Frames.Load() >= 10
	}, 20*time.Second, 20*time.Millisecond, "carol now receives alice's video too")
}
