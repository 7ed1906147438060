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
// the track's sid and bob's handle once node a relays the track.
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
	handle = bob.AwaitHandles(sid, true)
	awaitDataWanted(t, a, b, sid, true)
	return alice, bob, sid, handle
}

// awaitDataWanted waits until a relays (wanted) or no longer relays the
// data track sid to b: b's subscription reaches a one message later than
// bob is told his handle, and packets sent before are not relayed.
func awaitDataWanted(t *testing.T, a, b *node, sid string, wanted bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		w, ok := a.br.dataWantedNow("room", b.id, sid)
		return ok && w == wanted
	}, 10*time.Second, 5*time.Millisecond,
		"node A relays data track %s to node B: want %v", sid, wanted)
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
	awaitDataWanted(t, a, b, sid, false) // nobody on B may have it
	alice.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_SubscriptionPermission{SubscriptionPermission: &livekit.SubscriptionPermission{AllParticipants: true}}})
	h = bob.AwaitHandles(sid, true)
	awaitDataWanted(t, a, b, sid, true)
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

// TestRelayDataTrackOnDemand: a data track's packets cross only while the
// other node has a subscriber: alice's packet before bob subscribes, and
// after he unsubscribed, stay on node A (node B receives only those sent
// while he is subscribed; each later packet crosses on the same ordered
// channel, so an earlier one would have been counted first). Node A takes
// wants for its own participants' data tracks only, and forgets them when
// the track ends.
func TestRelayDataTrackOnDemand(t *testing.T) {
	verifyNoLeaks(t)
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	alice := dtclient.Join(t, a.url, "alice", a.token(t, "room", "alice"), false)
	bob := dtclient.Join(t, b.url, "bob", b.token(t, "room", "bob"), false)
	sid := alice.Published(7, "geo").GetSid()
	bob.Await("alice's data track on node B", func(res *livekit.SignalResponse) bool {
		for _, p := range res.GetUpdate().GetParticipants() {
			if p.GetIdentity() == "alice" && len(p.GetDataTracks()) == 1 {
				return true
			}
		}
		return false
	})
	received := func(n *node) float64 {
		return metricValue(t, n.sfuReg, "gxconf_sfu_data_track_packets_total", "outcome=received")
	}
	sendSeen := func(seq uint16, onA float64) {
		t.Helper()
		require.NoError(t, alice.DC.Send(dtclient.Packet(7, seq, "p")))
		require.Eventually(t, func() bool { return received(a) == onA }, 10*time.Second, 5*time.Millisecond)
	}
	subscribe := func() uint16 {
		t.Helper()
		bob.Subscribe(sid, true)
		h := bob.AwaitHandles(sid, true)
		awaitDataWanted(t, a, b, sid, true)
		return h
	}

	sendSeen(1, 1) // nobody on B wants it
	h := subscribe()
	sendSeen(2, 2)
	require.Equal(t, dtclient.Packet(h, 2, "p"), bob.AwaitPacket())
	require.EqualValues(t, 1, received(b), "a packet crossed before anyone on node B subscribed")

	bob.Subscribe(sid, false)
	bob.AwaitHandles(sid, false)
	awaitDataWanted(t, a, b, sid, false)
	sendSeen(3, 3)
	h = subscribe()
	sendSeen(4, 4)
	require.Equal(t, dtclient.Packet(h, 4, "p"), bob.AwaitPacket())
	require.EqualValues(t, 2, received(b), "a packet crossed while nobody on node B subscribed")

	// Node A takes wants only for its participants' data tracks: a want for
	// any other sid is ignored (B's next message, handled after it, shows
	// when it was).
	b.br.sendOn(t, "room", "node-a", &message{Type: msgDataWant, SID: "DTR_none", Mask: 1})
	b.br.sendOn(t, "room", "node-a", &message{Type: msgDataWant, SID: sid})
	awaitDataWanted(t, a, b, sid, false)
	require.False(t, a.br.dataWanted(t, "room", "node-b", "DTR_none"))
	// And its wants end with the track.
	b.br.sendOn(t, "room", "node-a", &message{Type: msgDataWant, SID: sid, Mask: 1})
	awaitDataWanted(t, a, b, sid, true)
	alice.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_UnpublishDataTrackRequest{UnpublishDataTrackRequest: &livekit.UnpublishDataTrackRequest{PubHandle: 7}}})
	awaitDataWanted(t, a, b, sid, false)
}
