package bridge

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/gxfs-conf/gxconf/internal/dtclient"
)

// recordPeerData makes n's association (room, peer) record every data
// message it receives before handling it as usual: what the software of
// the deployment at that end sees.
func recordPeerData(t *testing.T, n *node, room, peer string) func() []*message {
	t.Helper()
	return recordPeer(t, n, room, peer, msgData)
}

// recordPeer is recordPeerData for the messages of the types given.
func recordPeer(t *testing.T, n *node, room, peer string, types ...string) func() []*message {
	t.Helper()
	a := n.br.assocFor(t, room, peer)
	require.Eventually(t, a.isOpen, 10*time.Second, 10*time.Millisecond)
	a.dcMu.Lock()
	dc := a.dc
	a.dcMu.Unlock()
	var mu sync.Mutex
	var got []*message
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		m, err := parseMessage(msg.Data)
		if err != nil {
			return
		}
		if slices.Contains(types, m.Type) {
			mu.Lock()
			got = append(got, m)
			mu.Unlock()
		}
		a.post(func() { a.handle(m) })
	})
	return func() []*message {
		mu.Lock()
		defer mu.Unlock()
		return append([]*message(nil), got...)
	}
}

// carrying returns the data messages among ms whose packet holds payload.
func carrying(ms []*message, payload string) []*message {
	var out []*message
	for _, m := range ms {
		if bytes.Contains(m.Data, []byte(payload)) {
			out = append(out, m)
		}
	}
	return out
}

// TestPeerPrivateDataStaysHome: data alice (fed-a) addresses only to bob,
// fed-a's own participant, and a RoomService message to bob never cross
// to fed-b; a message to bob and rita crosses addressed to rita alone (bob
// is not named in what fed-b gets), and a broadcast crosses as it is.
// The control channel is ordered: once the later messages arrived, the
// private ones would have arrived before them.
func TestPeerPrivateDataStaysHome(t *testing.T) {
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	a := startFedA(t, auth)
	b := startFedB(t, a, peerSignalKey)
	alice := a.join(t, "X", "alice")
	bob := a.join(t, "X", "bob")
	rita := b.joinToken(t, "rita", peerToken(t, "rita", "tok-rita", "X"))
	require.Eventually(t, func() bool { return alice.room.GetParticipantByIdentity("rita") != nil }, 20*time.Second, 20*time.Millisecond)
	seen := recordPeerData(t, b, peerRoomX, peerKey("fed-a", ""))

	send := func(payload string, dests ...string) {
		t.Helper()
		require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte(payload)),
			lksdk.WithDataPublishReliable(true), lksdk.WithDataPublishDestination(dests)))
	}
	send("for bob only", "bob")
	_, err := a.srv.RoomService().SendData(context.Background(), &livekit.SendDataRequest{Room: "X", Data: []byte("server to bob"),
		Kind: livekit.DataPacket_RELIABLE, DestinationIdentities: []string{"bob"}})
	require.NoError(t, err)
	send("for bob and rita", "bob", "rita")
	send("for everyone")
	require.Eventually(t, func() bool {
		return rita.hasData("alice", "for bob and rita") && rita.hasData("alice", "for everyone")
	}, 10*time.Second, 20*time.Millisecond)
	require.True(t, bob.hasData("alice", "for bob only"))
	require.True(t, bob.hasData("", "server to bob"))

	ms := seen()
	require.Empty(t, carrying(ms, "for bob only"), "fed-b got a message addressed to fed-a's bob only")
	require.Empty(t, carrying(ms, "server to bob"), "fed-b got a server message to fed-a's bob")
	both := carrying(ms, "for bob and rita")
	require.Len(t, both, 1)
	require.Equal(t, []string{"rita"}, both[0].Dests)
	dp := &livekit.DataPacket{}
	require.NoError(t, proto.Unmarshal(both[0].Data, dp))
	require.Equal(t, []string{"rita"}, dp.GetDestinationIdentities())
	require.Equal(t, []string{"rita"}, dp.GetUser().GetDestinationIdentities())
	require.Empty(t, dp.GetUser().GetDestinationSids())
	all := carrying(ms, "for everyone")
	require.Len(t, all, 1)
	require.Empty(t, all[0].Dests)
}

// TestPeerRestrictedDataTrack: a data track whose publisher lets none of
// fed-b's participants in X subscribe is not relayed to fed-b, however
// fed-b asks (as a media track: TestPeerRestrictedTrack), not even until
// the next change of the room; a grant to rita
// lets the held want through, and narrowing the permission again stops it.
func TestPeerRestrictedDataTrack(t *testing.T) {
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	a := startFedA(t, auth)
	b := startFedB(t, a, peerSignalKey)
	alice := dtclient.Join(t, a.url, "alice", a.token(t, "X", "alice"), false)
	permit := func(identity string) {
		alice.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_SubscriptionPermission{SubscriptionPermission: &livekit.SubscriptionPermission{
			TrackPermissions: []*livekit.TrackPermission{{ParticipantIdentity: identity, AllTracks: true}}}}})
	}
	permit("bob")
	sid := alice.Published(7, "geo").GetSid()
	b.joinToken(t, "rita", peerToken(t, "rita", "tok-rita", "X"))
	onA := peerKey("fed-b", "b1")
	require.Eventually(t, func() bool {
		x := a.br.assocOrNil("X", onA)
		if x == nil {
			return false // fed-b's link is still being set up
		}
		x.dtMu.Lock()
		defer x.dtMu.Unlock()
		return x.dtKnown[sid]
	}, 20*time.Second, 20*time.Millisecond, "fed-a sent alice's data track to fed-b")

	before := a.br.PeerRefused("fed-b", refusedRestricted)
	a.br.handleOn(t, "X", onA, &message{Type: msgDataWant, SID: sid, Mask: 1})
	require.False(t, a.br.dataWanted(t, "X", onA, sid), "fed-a relays a data track none of fed-b's participants may receive")
	require.Equal(t, before+1, a.br.PeerRefused("fed-b", refusedRestricted))

	permit("rita")
	require.Eventually(t, func() bool { w, ok := a.br.dataWantedNow("X", onA, sid); return ok && w }, 10*time.Second, 10*time.Millisecond,
		"the held want goes through once rita may subscribe")
	permit("bob")
	require.Eventually(t, func() bool { w, ok := a.br.dataWantedNow("X", onA, sid); return ok && !w }, 10*time.Second, 10*time.Millisecond,
		"the relay stops once rita may not subscribe any more")
}
