package bridge

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
)

// TestRelayLargeControlMessages: control messages up to maxControlMessage
// cross a link (each side advertises it: pion reports no size before the
// association exists and the other side would assume 64 KiB): a 60 KiB
// data packet reaches bob on the linked node, and alice's permission
// naming 400 others (an ~85 KB message) ends bob's subscriptions there
// rather than being lost, leaving him the older, wider permission.
func TestRelayLargeControlMessages(t *testing.T) {
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	onA := a.br.assocFor(t, "room", "node-b")
	require.Equal(t, maxControlMessage, onA.sendLimit())
	alice := a.join(t, "room", "alice")
	bob := b.join(t, "room", "bob")
	alice.publish(t, avOpts())
	bob.waitMedia(t, []string{"alice"}, 10, 20, 20*time.Second)

	payload := strings.Repeat("y", 60<<10)
	_, err := a.srv.RoomService().SendData(context.Background(), &livekit.SendDataRequest{Room: "room", Data: []byte(payload), Kind: livekit.DataPacket_RELIABLE})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bob.hasData("", payload) }, 10*time.Second, 20*time.Millisecond, "the 60 KiB packet on node B")

	var tps []*livekit.TrackPermission
	for i := 0; i < 400; i++ {
		tps = append(tps, &livekit.TrackPermission{ParticipantIdentity: fmt.Sprintf("colleague-%0180d", i), AllTracks: true})
	}
	alice.room.LocalParticipant.SetSubscriptionPermission(&livekit.SubscriptionPermission{TrackPermissions: tps})
	require.Eventually(t, func() bool {
		bob.mu.Lock()
		defer bob.mu.Unlock()
		return bob.ended["alice/audio"] == 1 && bob.ended["alice/video"] == 1
	}, 10*time.Second, 20*time.Millisecond, "bob, not permitted any more, still receives alice on node B")
	require.True(t, a.br.Linked("room", "node-b"))
}

// TestRelayBacklogBounded: a peer node that takes its control channel far
// slower than we send (node A's link delayed 300 ms, 2 MiB of reliable
// data at once, the bound lowered to 256 KiB) does not make node A hold
// the messages without bound: the association fails, once, counted, both
// sides let go of it, and a new link (the cluster relinks) works.
func TestRelayBacklogBounded(t *testing.T) {
	verifyNoLeaks(t)
	old := maxControlBacklog
	maxControlBacklog = 256 << 10
	t.Cleanup(func() { maxControlBacklog = old })
	a := startNodeWith(t, "node-a", func(c *Config) { c.Testing, c.TestLinkDelay = true, 300*time.Millisecond })
	b := startNode(t, "node-b")
	link(t, "room", a, b)
	bob := b.join(t, "room", "bob")
	_ = a.join(t, "room", "alice")
	require.Eventually(t, func() bool { return bob.room.GetParticipantByIdentity("alice") != nil }, 10*time.Second, 20*time.Millisecond)
	payload := []byte(strings.Repeat("z", 60<<10))
	for range 32 {
		_, err := a.srv.RoomService().SendData(context.Background(), &livekit.SendDataRequest{Room: "room", Data: payload, Kind: livekit.DataPacket_RELIABLE})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return !a.br.Linked("room", "node-b") && !b.br.Linked("room", "node-a") },
		15*time.Second, 10*time.Millisecond, "node A kept queuing for node B")
	require.EqualValues(t, 1, a.br.backlogFailed.Load())
	require.Zero(t, b.br.backlogFailed.Load())

	link(t, "room", a, b)
	require.Eventually(t, func() bool { return bob.room.GetParticipantByIdentity("alice") != nil }, 10*time.Second, 20*time.Millisecond)
	_, err := a.srv.RoomService().SendData(context.Background(), &livekit.SendDataRequest{Room: "room", Data: []byte("after"), Kind: livekit.DataPacket_RELIABLE})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bob.hasData("", "after") }, 10*time.Second, 20*time.Millisecond)
}
