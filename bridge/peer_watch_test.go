package bridge

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/require"
)

// lowerPeerGrantInterval makes the authority re-check grants every 100 ms
// for the test.
func lowerPeerGrantInterval(t *testing.T) {
	old := peerGrantInterval
	peerGrantInterval = 100 * time.Millisecond
	t.Cleanup(func() { peerGrantInterval = old })
}

// TestPeerParticipantGrantRechecked: fed-b's rita and rob watch alice in
// fed-a's X; rita's grant ends at fed-a without her removal reaching fed-b
// (fed-b stopped renewing it, or it was revoked by a path that removes
// nobody), rob's holds. While fed-a's grant store fails for her she stays
// (no one is removed for an error); then fed-a removes her from X and has
// fed-b remove her, and rob stays and keeps receiving.
func TestPeerParticipantGrantRechecked(t *testing.T) {
	verifyNoLeaks(t)
	lowerPeerGrantInterval(t)
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	auth.grant("tok-rob", "fed-b", "X", "rob")
	a := startFedA(t, auth)
	b := startFedB(t, a, peerSignalKey)
	alice := a.join(t, "X", "alice")
	alice.publish(t, avOpts())
	rita := b.joinToken(t, "rita", peerToken(t, "rita", "tok-rita", "X"))
	rob := b.joinToken(t, "rob", peerToken(t, "rob", "tok-rob", "X"))
	rita.waitMedia(t, []string{"alice"}, 30, 50, 20*time.Second)
	rob.waitMedia(t, []string{"alice"}, 30, 50, 20*time.Second)
	onA := peerKey("fed-b", "b1")
	ctx := context.Background()
	in := func(n *node, room, identity string) bool {
		_, err := n.srv.RoomService().GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: room, Identity: identity})
		return err == nil
	}
	require.Eventually(t, func() bool { return in(a, "X", "rita") && in(a, "X", "rob") }, 10*time.Second, 10*time.Millisecond)

	// The store fails for rita: asked again and again, she stays. A round
	// that asked has handed its removals to the worker before the next
	// round asks, and the worker runs them before peerIdentities.
	refused := a.br.PeerRefused("fed-b", refusedParticipant)
	auth.fail("rita", errors.New("grant store unavailable"))
	auth.revoke("tok-rita")
	asked := auth.questions("rita")
	require.Eventually(t, func() bool { return auth.questions("rita") >= asked+3 || !in(a, "X", "rita") }, 10*time.Second, 10*time.Millisecond,
		"fed-a does not ask about rita's grant again")
	ids, ok := a.br.peerIdentities("X", onA)
	require.True(t, ok)
	require.Equal(t, []string{"rita", "rob"}, ids, "a grant store error removed rita")
	require.True(t, in(b, peerRoomX, "rita"))
	require.Equal(t, refused, a.br.PeerRefused("fed-b", refusedParticipant))

	// The store answers: rita, without a grant, goes on both sides.
	auth.fail("rita", nil)
	require.Eventually(t, func() bool {
		return !in(a, "X", "rita") && !in(b, peerRoomX, "rita") && alice.room.GetParticipantByIdentity("rita") == nil
	}, 10*time.Second, 10*time.Millisecond, "rita, whose grant ended, is still in X at fed-a or at fed-b")
	require.Greater(t, a.br.PeerRefused("fed-b", refusedParticipant), refused)
	ids, ok = a.br.peerIdentities("X", onA)
	require.True(t, ok)
	require.Equal(t, []string{"rob"}, ids)
	require.True(t, in(b, peerRoomX, "rob"))
	require.True(t, a.br.Linked("X", onA), "rob's grant holds: the link stays")
	video, audio := rob.stream("alice/video").Frames.Load(), rob.stream("alice/audio").Frames.Load()
	rob.waitMedia(t, []string{"alice"}, video+30, audio+50, 20*time.Second)
	require.Equal(t, lksdk.ConnectionStateConnected, rob.room.ConnectionState())
}

// TestPeerUngrantedParticipantGetsNothing: a peer node that keeps
// announcing rita after her grant was revoked, and keeps wanting alice's
// tracks, which only rita may receive, is told to remove her; fed-a
// removes her from X itself, so alice's tracks stop crossing (the held
// wants are re-checked without her) and data addressed to her stays,
// while rob, still granted, stays in X and gets what is addressed to him.
// Announced again, rita is new and refused again.
func TestPeerUngrantedParticipantGetsNothing(t *testing.T) {
	verifyNoLeaks(t)
	lowerPeerGrantInterval(t)
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	auth.grant("tok-rob", "fed-b", "X", "rob")
	a := startFedA(t, auth)
	b := startNodeFull(t, "b1", nil, func(n *node) {
		n.br.SetPeering(Peering{Self: "fed-b", Peers: map[string]PeerLink{"fed-a": {RelayAddress: a.br.Addr(), SignalKey: peerSignalKey}}})
	})
	alice := a.join(t, "X", "alice")
	alice.room.LocalParticipant.SetSubscriptionPermission(&livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{{ParticipantIdentity: "rita", AllTracks: true}}})
	alice.publish(t, avOpts())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	require.NoError(t, b.br.linkPeer(ctx, peerRoomX))
	onA, onB := peerKey("fed-b", "b1"), peerKey("fed-a", "")
	require.Eventually(t, func() bool {
		n := 0
		return b.br.onWorker(peerRoomX, onB, func(x *association) { n = len(x.inTracks) }) && n == 2
	}, 10*time.Second, 10*time.Millisecond, "fed-b knows alice's tracks")
	seen := recordPeer(t, b, peerRoomX, onB, msgData, msgRemove)
	announce := func(identity string, version uint32) {
		b.br.sendOn(t, peerRoomX, onB, &message{Type: msgParticipant,
			info: &livekit.ParticipantInfo{Identity: identity, Sid: "PA_" + identity, Version: version, State: livekit.ParticipantInfo_ACTIVE}})
	}
	announce("rita", 1)
	announce("rob", 1)
	require.Eventually(t, func() bool {
		ids, ok := a.br.peerIdentities("X", onA)
		return ok && slices.Equal(ids, []string{"rita", "rob"})
	}, 10*time.Second, 10*time.Millisecond)
	for _, sid := range []string{alice.pub.VideoPub.SID(), alice.pub.AudioPub.SID()} {
		b.br.sendOn(t, peerRoomX, onB, &message{Type: msgWant, SID: sid, Mask: 1})
	}
	tracksOut := func() int {
		st, _ := a.br.Stats("X", onA)
		return st.TracksOut
	}
	require.Eventually(t, func() bool { return tracksOut() == 2 }, 10*time.Second, 10*time.Millisecond, "alice's tracks cross for rita")

	refused, restricted := a.br.PeerRefused("fed-b", refusedParticipant), a.br.PeerRefused("fed-b", refusedRestricted)
	auth.revoke("tok-rita")
	require.Eventually(t, func() bool {
		ids, ok := a.br.peerIdentities("X", onA)
		return ok && slices.Equal(ids, []string{"rob"}) && tracksOut() == 0 &&
			a.br.PeerRefused("fed-b", refusedRestricted) == restricted+2
	}, 10*time.Second, 10*time.Millisecond, "rita, without a grant, is still in X, or alice's tracks still cross for her")
	require.Equal(t, refused+1, a.br.PeerRefused("fed-b", refusedParticipant))
	require.Eventually(t, func() bool {
		return slices.ContainsFunc(seen(), func(m *message) bool { return m.Type == msgRemove && m.Identity == "rita" })
	}, 10*time.Second, 10*time.Millisecond, "fed-b was not told to remove rita")
	require.True(t, a.br.Linked("X", onA), "rob's grant holds: the link stays")

	// Data addressed to rita stays; to rob it crosses (after it, on the
	// one ordered channel: rita's would have arrived first).
	send := func(payload, dest string) {
		t.Helper()
		require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte(payload)),
			lksdk.WithDataPublishReliable(true), lksdk.WithDataPublishDestination([]string{dest})))
	}
	send("for rita", "rita")
	send("for rob", "rob")
	require.Eventually(t, func() bool { return len(carrying(seen(), "for rob")) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Empty(t, carrying(seen(), "for rita"), "data for rita, removed, crossed to fed-b")

	// fed-b announces her again, the same session: she is new here, and
	// asked about again.
	announce("rita", 2)
	require.Eventually(t, func() bool { return a.br.PeerRefused("fed-b", refusedParticipant) == refused+2 }, 10*time.Second, 10*time.Millisecond,
		"rita, announced again, was not refused")
	ids, ok := a.br.peerIdentities("X", onA)
	require.True(t, ok)
	require.Equal(t, []string{"rob"}, ids)
	require.Zero(t, tracksOut())
}
