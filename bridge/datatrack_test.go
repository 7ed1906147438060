package bridge

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/internal/dtclient"
)

// relayedDataTrack has alice on node a publish data track handle 7 and bob
// on node b, once he sees it in her info, subscribe to it; it returns both,
// the track's sid and bob's handle.
func relayedDataTrack(t *testing.T, a, b *node, name string) (alice, bob *dtclient.Client, sid string, handle uint16) {
	t.Helper()
	alice = dtclient.Join(t, a.url, "alice", a.token(t, "room", "alice"), false)
	bob = dtclient.Join(t, b.url, "bob", b.token(t, "room", "bob"), false)
	sid = alice.Published(7, name).GetSid()
	bob.Await("alice's data track on node B", func(res *livekit.SignalResponse) bool {
		for _, p := range res.GetUpdate().GetParticipants() {
			if p.GetIdentity() == "alice" && len(p.GetDataTracks()) == 1 && p.GetDataTracks()[0].GetSid() == sid {
				return true
			}
		}
		return false
	})
	bob.Subscribe(sid, true)
	return alice, bob, sid, bob.AwaitHandles(sid, true)
}

// TestRelayDataTracks: alice's data track on node A shows in her info on
// node B, bob there subscribes and receives her packets with his handle
// (carol there, not subscribed, nothing); her subscription permission set on
// A ends bob's subscription on B and a grant gives it back; her
// unpublication on A ends it on B, and a packet after it reaches nobody.
func TestRelayDataTracks(t *testing.T) {
	verifyNoLeaks(t)
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	carol := dtclient.Join(t, b.url, "carol", b.token(t, "room", "carol"), false)
	alice, bob, sid, h := relayedDataTrack(t, a, b, "geo")
	for i := range 3 {
		require.NoError(t, alice.DC.Send(dtclient.Packet(7, uint16(i), "over the bridge")))
		require.Equal(t, dtclient.Packet(h, uint16(i), "over the bridge"), bob.AwaitPacket())
	}

	alice.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_SubscriptionPermission{SubscriptionPermission: &livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{{ParticipantIdentity: "carol", AllTracks: true}}}}})
	bob.Await("permission denied on node B", func(res *livekit.SignalResponse) bool {
		u := res.GetSubscriptionPermissionUpdate()
		return u.GetTrackSid() == sid && !u.GetAllowed()
	})
	bob.AwaitHandles(sid, false)
	alice.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_SubscriptionPermission{SubscriptionPermission: &livekit.SubscriptionPermission{AllParticipants: true}}})
	h = bob.AwaitHandles(sid, true)
	require.NoError(t, alice.DC.Send(dtclient.Packet(7, 10, "again")))
	require.Equal(t, dtclient.Packet(h, 10, "again"), bob.AwaitPacket())

	alice.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_UnpublishDataTrackRequest{UnpublishDataTrackRequest: &livekit.UnpublishDataTrackRequest{PubHandle: 7}}})
	bob.AwaitHandles(sid, false)
	require.Zero(t, metricValue(t, b.sfuReg, "gxconf_sfu_published_data_tracks"), "a relayed data track counts on its own node only")
	require.EqualValues(t, 4, metricValue(t, b.sfuReg, "gxconf_sfu_data_track_packets_total", "outcome=sent"), "copies node B sent: bob's four; carol did not subscribe")
	require.Empty(t, carol.Pkts)
}

// TestRelayDataTrackPacketScoped: a node cannot inject data track packets
// for a participant another node relays here. node C, linked to B, sends B
// a packet naming alice (relayed to B by A); B drops it — bob, subscribed
// to alice's track on B, is sent nothing — and handles C's next message
// (room metadata, which bob sees) after it, so the check is not a matter of
// time.
func TestRelayDataTrackPacketScoped(t *testing.T) {
	verifyNoLeaks(t)
	a, b, c := startNode(t, "node-a"), startNode(t, "node-b"), startNode(t, "node-c")
	link(t, "room", a, b)
	link(t, "room", b, c)
	alice, bob, _, h := relayedDataTrack(t, a, b, "geo")
	require.NoError(t, alice.DC.Send(dtclient.Packet(7, 1, "genuine")))
	require.Equal(t, dtclient.Packet(h, 1, "genuine"), bob.AwaitPacket())

	c.br.sendOn(t, "room", "node-b", &message{Type: msgData, Label: labelDataTrack, Identity: "alice", Data: dtclient.Packet(7, 2, "forged")})
	c.br.sendOn(t, "room", "node-b", &message{Type: msgRoomMeta, Data: []byte("after the forgery")})
	bob.Await("room metadata from node C", func(res *livekit.SignalResponse) bool {
		return res.GetRoomUpdate().GetRoom().GetMetadata() == "after the forgery"
	})
	// Node B counts each copy it sends as it sends it, before it handles
	// C's next message: one, the genuine packet.
	require.EqualValues(t, 1, metricValue(t, b.sfuReg, "gxconf_sfu_data_track_packets_total", "outcome=sent"), "node B sent bob a packet node C forged for alice")
}

// TestRelayLossyDataBounded: when the peer node takes the control channel's
// data slower than a publisher sends data track packets (node A's relay
// link delayed 300 ms, a 512 KiB burst), node A stops queuing them beyond
// the bound (lowered to 64 KiB here) and counts the drops; what was queued
// still arrives.
func TestRelayLossyDataBounded(t *testing.T) {
	verifyNoLeaks(t)
	old := maxLossyBacklog
	maxLossyBacklog = 64 << 10
	t.Cleanup(func() { maxLossyBacklog = old })
	a := startNodeWith(t, "node-a", func(c *Config) { c.Testing, c.TestLinkDelay = true, 300*time.Millisecond })
	b := startNode(t, "node-b")
	link(t, "room", a, b)
	alice, bob, _, h := relayedDataTrack(t, a, b, "burst")
	payload := strings.Repeat("x", 8<<10)
	for i := range 64 {
		require.NoError(t, alice.DC.Send(dtclient.Packet(7, uint16(i), payload)))
	}
	require.Eventually(t, func() bool { return a.br.lossyDropped.Load() > 0 }, 15*time.Second, 10*time.Millisecond,
		"node A queued the whole burst for node B")
	first := bob.AwaitPacket()
	require.Equal(t, h, binary.BigEndian.Uint16(first[2:4]))
	require.Zero(t, b.br.lossyDropped.Load())
	t.Logf("node A dropped %d of 64 packets for the backed-up link", a.br.lossyDropped.Load())
}
