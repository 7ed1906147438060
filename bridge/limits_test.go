package bridge

import (
	"fmt"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
)

// TestPeerAnnouncementsBounded: the peer owning a relayed room announces
// participants with maxTracks video tracks each beyond the association's
// participant and track limits, and floods stream messages for a track
// that does not exist and for one layer of a real track: the relaying
// node holds no more participants and tracks than the limits, no
// receiver for the unknown track and one per layer of the real one.
func TestPeerAnnouncementsBounded(t *testing.T) {
	oldP, oldT := maxRemoteParticipants, maxInTracks
	maxRemoteParticipants, maxInTracks = 3, 64 // alice and two ghosts; alice's 2 tracks and 62
	t.Cleanup(func() { maxRemoteParticipants, maxInTracks = oldP, oldT })

	a, b, alice, _ := ritaWatchesAlice(t)
	refusedP := b.br.PeerRefused("fed-a", refusedParticipant)
	refusedT := b.br.PeerRefused("fed-a", refusedTrack)

	const ghosts = 3
	var ghostMsgs []*message
	for p := 0; p < ghosts; p++ {
		m := &message{Type: msgParticipant, info: &livekit.ParticipantInfo{Identity: fmt.Sprintf("ghost%d", p), Sid: fmt.Sprintf("PA_g%d", p), Version: 1, State: livekit.ParticipantInfo_ACTIVE}}
		for i := 0; i < maxTracks; i++ {
			sid := fmt.Sprintf("TR_%d_%d", p, i)
			m.info.Tracks = append(m.info.Tracks, &livekit.TrackInfo{Sid: sid, Type: livekit.TrackType_VIDEO})
			m.Codecs = append(m.Codecs, trackCodec{SID: sid, MimeType: "video/VP8", ClockRate: 90000})
		}
		ghostMsgs = append(ghostMsgs, m)
	}
	onB := peerKey("fed-b", "b1")
	x := a.br.assocFor(t, "X", onB)
	require.True(t, x.sendAll(ghostMsgs))
	// The refused participant is counted once the worker handled all three.
	// An association lost meanwhile (ICE gives up after 2 s without
	// consent, which a loaded CI machine can cause) took the injected
	// ghosts with it, and the relink resyncs only fed-a's real
	// participants: they are injected again on the new association.
	require.Eventually(t, func() bool {
		if b.br.PeerRefused("fed-a", refusedParticipant) > refusedP {
			return true
		}
		if cur := a.br.assocOrNil("X", onB); cur != nil && cur != x && cur.sendAll(ghostMsgs) {
			x = cur
		}
		return false
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, []string{"alice", "ghost0", "ghost1"}, b.br.remoteIdentities(t, peerRoomX, peerKey("fed-a", "")))
	require.Equal(t, maxInTracks, b.br.inTrackCount(t, peerRoomX, peerKey("fed-a", "")))
	require.Greater(t, b.br.PeerRefused("fed-a", refusedTrack), refusedT)

	// A real track of alice's and its receivers on fed-b.
	var videoSID string
	for _, tp := range alice.room.LocalParticipant.TrackPublications() {
		if tp.Kind() == "video" {
			videoSID = tp.SID()
		}
	}
	require.NotEmpty(t, videoSID)
	for i := 0; i < 3000; i++ {
		a.br.sendOn(t, "X", peerKey("fed-b", "b1"), &message{Type: msgStream, SID: "TR_bogus", SSRC: uint32(100000 + i), Kind: "video"})
	}
	for i := 0; i < 100; i++ {
		a.br.sendOn(t, "X", peerKey("fed-b", "b1"), &message{Type: msgStream, SID: videoSID, Layer: 0, SSRC: uint32(200000 + i), Kind: "video"})
	}
	a.br.sendOn(t, "X", peerKey("fed-b", "b1"), &message{Type: msgStream, SID: videoSID, Layer: 7, SSRC: 300000, Kind: "video"})
	// The last message is handled once its predecessor's SSRC is the layer's.
	require.Eventually(t, func() bool {
		var ssrc uint32
		ok := b.br.onWorker(peerRoomX, peerKey("fed-a", ""), func(a *association) {
			if it := a.inTracks[videoSID]; it != nil {
				ssrc = it.ssrc[0].Load()
			}
		})
		return ok && ssrc == 200099
	}, 20*time.Second, 50*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	_, in := b.br.relayed(t, peerRoomX, peerKey("fed-a", ""))
	perSID := map[string]int{}
	for _, sid := range in {
		perSID[sid]++
	}
	require.Zero(t, perSID["TR_bogus"], "receivers for an unknown track")
	require.LessOrEqual(t, perSID[videoSID], 3, "receivers of one track")
	require.LessOrEqual(t, len(in), 3*maxInTracks)
}

// TestPeerNodesPerRoomBounded: a peer deployment holds at most
// maxPeerNodesPerRoom associations for one of our rooms (lowered to 1
// here): a second node of fed-b asking to relay X is refused and counted,
// the first keeps relaying.
func TestPeerNodesPerRoomBounded(t *testing.T) {
	verifyNoLeaks(t)
	old := maxPeerNodesPerRoom
	maxPeerNodesPerRoom = 1
	t.Cleanup(func() { maxPeerNodesPerRoom = old })
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	auth.grant("tok-ruth", "fed-b", "X", "ruth")
	a := startFedA(t, auth)
	b1 := startFedBNode(t, a, peerSignalKey, "b1")
	b2 := startFedBNode(t, a, peerSignalKey, "b2")
	alice := a.join(t, "X", "alice")
	alice.publish(t, avOpts())
	b1.joinToken(t, "rita", peerToken(t, "rita", "tok-rita", "X")).waitMedia(t, []string{"alice"}, 10, 10, 20*time.Second)
	b2.joinToken(t, "ruth", peerToken(t, "ruth", "tok-ruth", "X"))
	require.Eventually(t, func() bool { return a.br.PeerRefused("fed-b", refusedAssociation) > 0 }, 20*time.Second, 20*time.Millisecond)
	pa := a.br.PeerDeployments()
	require.Len(t, pa, 1)
	require.Equal(t, 1, pa[0].Authority, "%+v", pa)
}
