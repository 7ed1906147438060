package bridge

import (
	"context"
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
	speaking := avOpts()
	speaking.AudioLevel = 25
	alice.publish(t, speaking)
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

	// Speakers: node B derives alice's speaking from the relayed audio
	// levels (the header extension crosses untouched).
	require.Eventually(t, func() bool { return bob.flag(speakers, "alice") }, 10*time.Second, 20*time.Millisecond)

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

// TestRelayLowLayerOnly: a subscriber on B asking for LOW makes only the
// low layer cross the relay; when B's last subscriber leaves, nothing
// crosses any more.
func TestRelayLowLayerOnly(t *testing.T) {
	verifyNoLeaks(t)
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	alice := a.join(t, "room", "alice")
	bob := b.join(t, "room", "bob")
	alice.publish(t, avOpts())
	bob.waitMedia(t, []string{"alice"}, 10, 10, 20*time.Second)

	pub := bob.publication("alice/video")
	require.NotNil(t, pub)
	require.NoError(t, pub.SetVideoQuality(livekit.VideoQuality_LOW))
	st := bob.stream("alice/video")
	low := loadtest.VideoMarker("alice", livekit.VideoQuality_LOW)
	require.Eventually(t, func() bool { return st.LastMarker() == low }, 10*time.Second, 20*time.Millisecond)

	// Over a window of at least 30 relayed low-layer packets, h and f do
	// not cross at all (the window moves on while the switch settles).
	stats := func() LinkStats { s, ok := a.br.Stats("room", b.id); require.True(t, ok); return s }
	prev := stats()
	require.Eventually(t, func() bool {
		cur := stats()
		if cur.SentPackets[0] < prev.SentPackets[0]+30 {
			return false
		}
		ok := cur.SentPackets[1] == prev.SentPackets[1] && cur.SentPackets[2] == prev.SentPackets[2]
		prev = cur
		return ok
	}, 15*time.Second, 100*time.Millisecond, "layers above LOW keep crossing")
	t.Logf("relay A->B video per layer: packets %v bytes %v; audio packets %d", prev.SentPackets, prev.SentBytes, prev.SentAudio)
	require.Zero(t, st.Corrupt.Load())

	// B's only subscriber leaves: the relay stops carrying alice's tracks.
	bob.close()
	prev = stats()
	require.Eventually(t, func() bool {
		cur := stats()
		ok := cur.SentPackets == prev.SentPackets && cur.SentAudio == prev.SentAudio
		prev = cur
		return ok
	}, 15*time.Second, 500*time.Millisecond, "the relay keeps carrying media nobody on B wants")
}

// TestRelayKeyframeThrottle: a flood of keyframe requests from B (as a
// broken or hostile relay would send) reaches the publisher at most once
// per throttle interval per layer, merged with the local requests.
func TestRelayKeyframeThrottle(t *testing.T) {
	verifyNoLeaks(t)
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	alice := a.join(t, "room", "alice")
	bob := b.join(t, "room", "bob")
	alice.publish(t, avOpts())
	bob.waitMedia(t, []string{"alice"}, 10, 10, 20*time.Second)

	rr, err := a.srv.RelayRoom("room", false)
	require.NoError(t, err)
	lt := rr.LocalTrack(alice.pub.VideoPub.SID())
	require.NotNil(t, lt)
	it := b.br.inTrackFor(t, "room", a.id, alice.pub.VideoPub.SID())
	layer := -1
	for l := 2; l >= 0 && layer < 0; l-- {
		if it.ssrc[l].Load() != 0 {
			layer = l
		}
	}
	require.GreaterOrEqual(t, layer, 0, "no relayed video layer")

	before := lt.KeyframeRequests()
	statsA := func() LinkStats { s, _ := a.br.Stats("room", b.id); return s }
	inBefore := statsA().PLIsIn
	const flood = 300
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond) // ~1.5 s of requests, 200/s
	for i := 0; i < flood; i++ {
		<-tick.C
		it.requestKeyframe(layer)
	}
	tick.Stop()
	require.Eventually(t, func() bool { return statsA().PLIsIn >= inBefore+flood }, 10*time.Second, 20*time.Millisecond)
	elapsed := time.Since(start)
	after := lt.KeyframeRequests()
	interval := time.Second
	if layer == 0 {
		interval = 500 * time.Millisecond
	}
	got := after[layer] - before[layer]
	limit := uint64(elapsed/interval) + 1
	t.Logf("%d requests from the relay in %v on layer %d -> %d to the publisher (limit %d)", flood, elapsed.Round(time.Millisecond), layer, got, limit)
	require.LessOrEqual(t, got, limit)
	require.Greater(t, got, uint64(0))
}

// TestRelayRoomService: MutePublishedTrack and RemoveParticipant on either
// node act on the participant's origin node.
func TestRelayRoomService(t *testing.T) {
	verifyNoLeaks(t)
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	alice := a.join(t, "room", "alice")
	bob := b.join(t, "room", "bob")
	alice.publish(t, loadtest.PublishOptions{Audio: true})
	require.Eventually(t, func() bool {
		return bob.stream("alice/audio") != nil && alice.room.GetParticipantByIdentity("bob") != nil
	}, 10*time.Second, 20*time.Millisecond)

	ctx := context.Background()
	sid := alice.pub.AudioPub.SID()
	_, err := b.srv.RoomService().MutePublishedTrack(ctx, &livekit.MuteRoomTrackRequest{Room: "room", Identity: "alice", TrackSid: sid, Muted: true})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return alice.pub.AudioPub.IsMuted() && bob.flag(mutes, "alice/"+sid) },
		10*time.Second, 20*time.Millisecond, "mute on B did not reach the publisher on A")
	ps, err := a.srv.RoomService().ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: "room"})
	require.NoError(t, err)
	require.Len(t, ps.GetParticipants(), 2, "node A lists its own and the relayed participant")

	// UpdateParticipant on B reaches alice on A; everyone sees it.
	_, err = b.srv.RoomService().UpdateParticipant(ctx, &livekit.UpdateParticipantRequest{Room: "room", Identity: "alice", Metadata: "set-on-b",
		Attributes: map[string]string{"k": "v"}})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		rp := bob.room.GetParticipantByIdentity("alice")
		return alice.room.LocalParticipant.Metadata() == "set-on-b" && alice.room.LocalParticipant.Attributes()["k"] == "v" &&
			rp != nil && rp.Metadata() == "set-on-b"
	}, 10*time.Second, 20*time.Millisecond, "UpdateParticipant on B did not reach alice on A")

	// UpdateRoomMetadata on A reaches bob on B.
	_, err = a.srv.RoomService().UpdateRoomMetadata(ctx, &livekit.UpdateRoomMetadataRequest{Room: "room", Metadata: "room-md"})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bob.room.Metadata() == "room-md" }, 10*time.Second, 20*time.Millisecond)

	// SendData on A reaches bob on B.
	_, err = a.srv.RoomService().SendData(ctx, &livekit.SendDataRequest{Room: "room", Data: []byte("server-hello"), Kind: livekit.DataPacket_RELIABLE,
		DestinationIdentities: []string{"bob"}})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bob.hasData("", "server-hello") }, 10*time.Second, 20*time.Millisecond)

	oldToken := a.token(t, "room", "alice")
	_, err = b.srv.RoomService().RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "room", Identity: "alice"})
	require.NoError(t, err)
	_, err = a.srv.RoomService().RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "room", Identity: "bob"})
	require.NoError(t, err)
	for _, c := range []*client{alice, bob} {
		require.Eventually(t, func() bool { return c.room.ConnectionState() == lksdk.ConnectionStateDisconnected },
			10*time.Second, 20*time.Millisecond, "%s was not removed", c.identity)
	}
	for _, n := range []*node{a, b} {
		require.Eventually(t, func() bool {
			ps, err := n.srv.RoomService().ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: "room"})
			return err == nil && len(ps.GetParticipants()) == 0
		}, 10*time.Second, 20*time.Millisecond)
	}
	// The removal on B also refuses alice's older token on her node.
	_, err = lksdk.ConnectToRoomWithToken(a.url, oldToken, lksdk.NewRoomCallback())
	require.Error(t, err)
}

// TestRelayPeerGone: when a node goes away, the other drops its
// participants and keeps serving its own.
func TestRelayPeerGone(t *testing.T) {
	verifyNoLeaks(t)
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	alice := a.join(t, "room", "alice")
	bob := b.join(t, "room", "bob")
	carol := b.join(t, "room", "carol")
	alice.publish(t, loadtest.PublishOptions{Audio: true})
	carol.publish(t, loadtest.PublishOptions{Audio: true})
	require.Eventually(t, func() bool { return bob.stream("alice/audio") != nil && bob.stream("carol/audio") != nil },
		10*time.Second, 20*time.Millisecond)
	start := time.Now()
	a.stop()
	require.Eventually(t, func() bool { return bob.flag(lefts, "alice") }, 10*time.Second, 20*time.Millisecond)
	t.Logf("alice gone on node B %v after node A stopped", time.Since(start).Round(time.Millisecond))
	require.Eventually(t, func() bool { return !b.br.Linked("room", a.id) }, 10*time.Second, 20*time.Millisecond, "B kept the association to a stopped node")
	t.Logf("association closed on node B %v after node A stopped", time.Since(start).Round(time.Millisecond))
	n := bob.stream("carol/audio").Frames.Load()
	require.Eventually(t, func() bool { return bob.stream("carol/audio").Frames.Load() > n+10 }, 10*time.Second, 20*time.Millisecond)
}

// TestRelayLossRecovered: with 5 % of the relayed video lost on the link,
// node B NACKs, node A answers from its packet cache, and the subscriber
// on B sees under 0.5 % loss and no corrupt frame.
func TestRelayLossRecovered(t *testing.T) {
	verifyNoLeaks(t)
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	a.br.assocFor(t, "room", b.id).lossEvery.Store(20)
	alice := a.join(t, "room", "alice")
	bob := b.join(t, "room", "bob")
	alice.publish(t, avOpts())
	bob.waitMedia(t, []string{"alice"}, 150, 10, 30*time.Second)
	st := bob.stream("alice/video")
	exp, got := st.Loss()
	sa, _ := a.br.Stats("room", b.id)
	sb, _ := b.br.Stats("room", a.id)
	loss := 0.0
	if got < exp {
		loss = float64(exp-got) / float64(exp)
	}
	t.Logf("subscriber: expected %d received %d (loss %.3f%%); relay: NACKed %d, retransmitted %d", exp, got, 100*loss, sb.NACKsOut, sa.Retransmits)
	require.Greater(t, exp, uint64(100))
	require.Greater(t, sa.Retransmits, uint64(0))
	require.Less(t, loss, 0.005)
	require.Zero(t, st.Corrupt.Load())
}

// TestRelayBitrateBudget: with a 1 Mbit/s budget on A's relay link, a
// subscriber on B asking for HIGH (1.7 Mbit/s) gets the medium layer, and
// only that layer (plus audio) crosses.
func TestRelayBitrateBudget(t *testing.T) {
	verifyNoLeaks(t)
	a := startNodeWith(t, "node-a", func(c *Config) { c.MaxBitrate = 1_000_000 })
	b := startNode(t, "node-b")
	link(t, "room", a, b)
	alice := a.join(t, "room", "alice")
	bob := b.join(t, "room", "bob")
	alice.publish(t, avOpts())
	bob.waitMedia(t, []string{"alice"}, 10, 10, 20*time.Second)
	st := bob.stream("alice/video")
	mid := loadtest.VideoMarker("alice", livekit.VideoQuality_MEDIUM)
	require.Eventually(t, func() bool { return st.LastMarker() == mid }, 15*time.Second, 20*time.Millisecond)
	stats := func() LinkStats { s, _ := a.br.Stats("room", b.id); return s }
	prev := stats()
	require.Eventually(t, func() bool {
		cur := stats()
		if cur.SentPackets[1] < prev.SentPackets[1]+30 {
			return false
		}
		ok := cur.SentPackets[0] == prev.SentPackets[0] && cur.SentPackets[2] == prev.SentPackets[2]
		prev = cur
		return ok
	}, 15*time.Second, 100*time.Millisecond, "layers other than the budget's keep crossing")
	t.Logf("relay A->B video per layer: packets %v bytes %v", prev.SentPackets, prev.SentBytes)
	require.Equal(t, mid, st.LastMarker())
}

// TestRelayPeerVanishes: a node that stops answering without a word (as
// after kill -9) is detected by ICE consent within about 3 s; its
// participants leave the other node.
func TestRelayPeerVanishes(t *testing.T) {
	verifyNoLeaks(t)
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	alice := a.join(t, "room", "alice")
	bob := b.join(t, "room", "bob")
	alice.publish(t, loadtest.PublishOptions{Audio: true})
	require.Eventually(t, func() bool { return bob.stream("alice/audio") != nil }, 10*time.Second, 20*time.Millisecond)
	start := time.Now()
	a.br.assocFor(t, "room", b.id).vanish()
	require.Eventually(t, func() bool { return bob.flag(lefts, "alice") }, 10*time.Second, 20*time.Millisecond)
	t.Logf("alice gone on node B %v after node A's relay went silent", time.Since(start).Round(time.Millisecond))
}

// TestRelayThreeNodes: a room on three nodes (full mesh of associations):
// everyone hears everyone, and each node relays only its own participants
// (a track crosses from its origin to each node once, never via a third).
func TestRelayThreeNodes(t *testing.T) {
	verifyNoLeaks(t)
	a, b, c := startNode(t, "node-a"), startNode(t, "node-b"), startNode(t, "node-c")
	link(t, "room", a, b)
	link(t, "room", a, c)
	link(t, "room", b, c)
	cs := []*client{a.join(t, "room", "alice"), b.join(t, "room", "bob"), c.join(t, "room", "carol")}
	for _, cl := range cs {
		cl.publish(t, loadtest.PublishOptions{Audio: true})
	}
	for _, cl := range cs {
		require.Eventually(t, func() bool {
			n := 0
			for _, other := range []string{"alice", "bob", "carol"} {
				if st := cl.stream(other + "/audio"); st != nil && st.Frames.Load() > 20 {
					n++
				}
			}
			return n == 2
		}, 20*time.Second, 50*time.Millisecond, "%s does not hear the other two", cl.identity)
	}
	require.Equal(t, []string{"bob"}, c.br.remoteIdentities(t, "room", b.id))
	require.Equal(t, []string{"alice"}, c.br.remoteIdentities(t, "room", a.id))
	require.Equal(t, []string{"carol"}, b.br.remoteIdentities(t, "room", c.id))
}

// TestRelayUnpublishReleases: a track unpublished on its origin stops
// crossing and its relay streams are released on both nodes; a track
// published afterwards crosses as usual (stopped streams do not stall the
// association).
func TestRelayUnpublishReleases(t *testing.T) {
	verifyNoLeaks(t)
	a, b := startNode(t, "node-a"), startNode(t, "node-b")
	link(t, "room", a, b)
	alice := a.join(t, "room", "alice")
	bob := b.join(t, "room", "bob")
	alice.publish(t, avOpts())
	bob.waitMedia(t, []string{"alice"}, 10, 10, 20*time.Second)
	vsid := alice.pub.VideoPub.SID()
	has := func(list []string, sid string) bool {
		for _, s := range list {
			if s == sid {
				return true
			}
		}
		return false
	}
	out, _ := a.br.relayed(t, "room", b.id)
	_, in := b.br.relayed(t, "room", a.id)
	require.True(t, has(out, vsid) && has(in, vsid))

	require.NoError(t, alice.room.LocalParticipant.UnpublishTrack(vsid))
	require.Eventually(t, func() bool {
		out, _, okA := a.br.relayedNow("room", b.id)
		_, in, okB := b.br.relayedNow("room", a.id)
		return okA && okB && !has(out, vsid) && !has(in, vsid)
	}, 10*time.Second, 20*time.Millisecond, "relay streams of the unpublished track were kept")

	// A new video track from alice crosses.
	p2, err := loadtest.StartPublisher(alice.room, loadtest.PublishOptions{Video: true})
	require.NoError(t, err)
	t.Cleanup(p2.Stop)
	require.Eventually(t, func() bool {
		pub := bob.publication("alice/video")
		st := bob.stream("alice/video")
		return pub != nil && pub.SID() == p2.VideoPub.SID() && st != nil && st.Frames.Load() > 10
	}, 20*time.Second, 20*time.Millisecond, "the new track did not cross")
	require.Zero(t, bob.stream("alice/video").Corrupt.Load())
}

// TestRelayParticipantMoves: alice's node goes silent (kill -9) and she
// rejoins on a third node at once; node B, still holding the relayed alice
// of the dead node until ICE consent fails, takes the new relayed session
// instead of refusing it (it would never be offered again), so bob gets
// her new track.
func TestRelayParticipantMoves(t *testing.T) {
	verifyNoLeaks(t)
	a, b, c := startNode(t, "node-a"), startNode(t, "node-b"), startNode(t, "node-c")
	link(t, "room", a, b)
	link(t, "room", a, c)
	link(t, "room", b, c)
	alice := a.join(t, "room", "alice")
	bob := b.join(t, "room", "bob")
	alice.publish(t, loadtest.PublishOptions{Audio: true})
	require.Eventually(t, func() bool { return bob.stream("alice/audio") != nil }, 10*time.Second, 20*time.Millisecond)
	a.br.assocFor(t, "room", b.id).vanish()
	a.br.assocFor(t, "room", c.id).vanish()
	alice2 := c.join(t, "room", "alice")
	alice2.publish(t, loadtest.PublishOptions{Audio: true})
	require.Eventually(t, func() bool {
		pub, st := bob.publication("alice/audio"), bob.stream("alice/audio")
		return pub != nil && pub.SID() == alice2.pub.AudioPub.SID() && st != nil && st.Frames.Load() > 10
	}, 15*time.Second, 20*time.Millisecond, "bob does not get alice's track from her new node")
	require.Equal(t, []string{"alice"}, b.br.remoteIdentities(t, "room", c.id))
}
