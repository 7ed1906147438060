package bridge

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

var (
	peerSignalKey   = []byte("signal-key-fed-a-fed-b-0123456789abcdef")
	peerTokenSecret = "token-secret-fed-a-0123456789abcdef"
	errNoGrant      = errors.New("no such grant")
	errRevokedGrant = errors.New("grant revoked")
)

// fakeAuthority is fed-a's grant store: token id → grant.
type fakeAuthority struct {
	mu     sync.Mutex
	grants map[string]*fakePeerGrant
	checks int
	// asked counts the PeerParticipantGranted questions by identity;
	// failing fails those about an identity (the store unavailable).
	asked   map[string]int
	failing map[string]error
}

type fakePeerGrant struct {
	peer, room, identity string
	issued               time.Time
	revoked              bool
}

func newFakeAuthority() *fakeAuthority {
	return &fakeAuthority{grants: map[string]*fakePeerGrant{}, asked: map[string]int{}, failing: map[string]error{}}
}

func (f *fakeAuthority) grant(id, peer, room, identity string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants[id] = &fakePeerGrant{peer: peer, room: room, identity: identity, issued: time.Now()}
}

func (f *fakeAuthority) revoke(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants[id].revoked = true
}

func (f *fakeAuthority) find(peer, tokenID, room, identity string) (*fakePeerGrant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks++
	g := f.grants[tokenID]
	switch {
	case g == nil || g.peer != peer || g.room != room || g.identity != identity:
		return nil, errNoGrant
	case g.revoked:
		return nil, errRevokedGrant
	}
	return g, nil
}

func (f *fakeAuthority) CheckPeerGrant(_ context.Context, peer, tokenID, room, identity string) (time.Time, error) {
	g, err := f.find(peer, tokenID, room, identity)
	if err != nil {
		return time.Time{}, err
	}
	return g.issued, nil
}

func (f *fakeAuthority) RenewPeerGrant(_ context.Context, peer, tokenID, room, identity string, until time.Time) (time.Time, error) {
	if _, err := f.find(peer, tokenID, room, identity); err != nil {
		return time.Time{}, err
	}
	return until, nil
}

func (f *fakeAuthority) granted(peer, room, identity string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, g := range f.grants {
		if g.peer == peer && g.room == room && !g.revoked && (identity == "" || g.identity == identity) {
			return true
		}
	}
	return false
}

func (f *fakeAuthority) PeerRoomGranted(_ context.Context, peer, room string) (bool, error) {
	return f.granted(peer, room, ""), nil
}

func (f *fakeAuthority) PeerParticipantGranted(_ context.Context, peer, room, identity string) (bool, error) {
	f.mu.Lock()
	f.asked[identity]++
	err := f.failing[identity]
	f.mu.Unlock()
	if err != nil {
		return false, err
	}
	return f.granted(peer, room, identity), nil
}

// fail makes the questions about identity's grant fail with err (nil:
// answer them again).
func (f *fakeAuthority) fail(identity string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.failing, identity)
		return
	}
	f.failing[identity] = err
}

// questions is how often PeerParticipantGranted was asked about identity.
func (f *fakeAuthority) questions(identity string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.asked[identity]
}

// startFedA is fed-a's node: the authority of its rooms, peered with fed-b.
// ritaWatchesAlice starts fed-a and fed-b, alice publishing in fed-a's X
// and rita (granted X) watching her through fed-b's relay.
func ritaWatchesAlice(t *testing.T) (a, b *node, alice, rita *client) {
	t.Helper()
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	a = startFedA(t, auth)
	b = startFedB(t, a, peerSignalKey)
	alice = a.join(t, "X", "alice")
	alice.publish(t, avOpts())
	rita = b.joinToken(t, "rita", peerToken(t, "rita", "tok-rita", "X"))
	rita.waitMedia(t, []string{"alice"}, 30, 50, 20*time.Second)
	return a, b, alice, rita
}

func startFedA(t *testing.T, auth *fakeAuthority) *node {
	t.Helper()
	return startNodeFull(t, "a1", nil, func(n *node) {
		n.br.SetPeering(Peering{Self: "fed-a", Authority: auth,
			Peers: map[string]PeerLink{"fed-b": {RelayAddress: "127.0.0.1:9", SignalKey: peerSignalKey}}})
	})
}

// startFedB is fed-b's node relaying fed-a's rooms (signal key key) and
// following its peer rooms until the test ends.
func startFedB(t *testing.T, a *node, key []byte) *node {
	t.Helper()
	return startFedBNode(t, a, key, "b1")
}

// startFedBNode is startFedB for fed-b's node id.
func startFedBNode(t *testing.T, a *node, key []byte, id string) *node {
	t.Helper()
	b := startNodeFull(t, id, nil, func(n *node) {
		n.br.SetPeering(Peering{Self: "fed-b", Peers: map[string]PeerLink{"fed-a": {RelayAddress: a.br.Addr(), SignalKey: key}}})
		n.srv.SetPeering(sfu.Peering{Keys: map[string]string{"fed-a": peerTokenSecret}, Joined: n.br.PeerJoined})
		n.srv.SetGrantChecker(n.br.PeerGrants(nil))
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.br.FollowPeers(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return b
}

// peerToken is fed-a's focus's token for identity on fed-b's relay of X.
func peerToken(t testing.TB, identity, id, room string) string {
	t.Helper()
	now := time.Now()
	claims := jwt.MapClaims{
		"iss": sfu.PeerAPIKey("fed-a"), "sub": identity, "jti": id,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"video": map[string]any{"roomJoin": true, "room": sfu.PeerRoomName("fed-a", room),
			"canPublish": false, "canPublishData": false, "canSubscribe": true},
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(peerTokenSecret))
	require.NoError(t, err)
	return tok
}

func validate(t *testing.T, n *node, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, strings.Replace(n.url, "ws://", "http://", 1)+"/rtc/validate", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

var peerRoomX = sfu.PeerRoomName("fed-a", "X")

// TestPeerRelay: fed-b's subscribers of fed-a's room X join fed-b's node
// with fed-a's peer tokens; fed-b links the room with fed-a once and both
// receive alice's media over that one association (one copy per track);
// fed-a sees them in X; fed-a's removal reaches fed-b's relay, and the
// revoked grant refuses the same token at fed-b.
func TestPeerRelay(t *testing.T) {
	verifyNoLeaks(t)
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
	require.Equal(t, alice.room.LocalParticipant.SID(), rita.room.GetParticipantByIdentity("alice").SID())

	// One association, each track once.
	require.Eventually(t, func() bool {
		pa, pb := a.br.PeerDeployments(), b.br.PeerDeployments()
		return len(pa) == 1 && pa[0] == PeerDeployment{Peer: "fed-b", Authority: 1, TracksOut: 2, DistinctOut: 2} &&
			len(pb) == 1 && pb[0] == PeerDeployment{Peer: "fed-a", Relay: 1, TracksIn: 2}
	}, 10*time.Second, 50*time.Millisecond, "%+v %+v", a.br.PeerDeployments(), b.br.PeerDeployments())
	// Both sides' status shows the link and the other side's participants.
	ctx := context.Background()
	require.Eventually(t, func() bool {
		la, pa := a.br.PeeringStatus(ctx)
		lb, pb := b.br.PeeringStatus(ctx)
		return len(la) == 1 && len(pa) == 2 && len(lb) == 1 && len(pb) == 1
	}, 10*time.Second, 50*time.Millisecond)
	la, pa := a.br.PeeringStatus(ctx)
	lb, pb := b.br.PeeringStatus(ctx)
	require.Equal(t, []string{"X", "fed-b", "b1", cluster.PeerOut}, []string{la[0].Room, la[0].Peer, la[0].PeerNode, la[0].Direction})
	require.True(t, la[0].Connected)
	require.True(t, lb[0].Connected)
	require.Equal(t, 2, la[0].TracksOut)
	require.NotZero(t, la[0].BitrateOut)
	require.NotZero(t, la[0].PacketsOut)
	require.Equal(t, []string{peerRoomX, "fed-a", "a1", cluster.PeerIn}, []string{lb[0].Room, lb[0].Peer, lb[0].PeerNode, lb[0].Direction})
	require.Equal(t, 2, lb[0].TracksIn)
	require.NotZero(t, lb[0].BitrateIn)
	require.Equal(t, []cluster.PeerParticipant{
		{Room: "X", Identity: "rita", Deployment: "fed-b", Node: "b1"},
		{Room: "X", Identity: "rob", Deployment: "fed-b", Node: "b1"},
	}, pa)
	require.Equal(t, []cluster.PeerParticipant{{Room: peerRoomX, Identity: "alice", Deployment: "fed-a", Node: "a1"}}, pb)

	st, ok := a.br.Stats("X", peerKey("fed-b", "b1"))
	require.True(t, ok)
	t.Logf("fed-a -> fed-b: video packets per layer %v, audio %d, for 2 subscribers", st.SentPackets, st.SentAudio)
	names := map[string]bool{}
	for _, p := range a.br.Peers() {
		names[p.Peer] = true
	}
	require.True(t, names["fed-b"], "relay metrics are labelled with the peer deployment")

	// fed-a sees fed-b's subscribers in its room, without publish rights.
	require.Eventually(t, func() bool {
		return alice.room.GetParticipantByIdentity("rita") != nil && alice.room.GetParticipantByIdentity("rob") != nil
	}, 10*time.Second, 20*time.Millisecond)

	// fed-a's policy removes rita: its grant is revoked and the removal
	// reaches fed-b's relay.
	auth.revoke("tok-rita")
	_, err := a.srv.RoomService().RemoveParticipant(context.Background(), &livekit.RoomParticipantIdentity{Room: "X", Identity: "rita"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := b.srv.RoomService().GetParticipant(context.Background(), &livekit.RoomParticipantIdentity{Room: peerRoomX, Identity: "rita"})
		return err != nil
	}, 10*time.Second, 20*time.Millisecond, "rita is still on fed-b's relay")
	require.Equal(t, http.StatusForbidden, validate(t, b, peerToken(t, "rita", "tok-rita", "X")), "a revoked grant at fed-a refuses the rejoin")
	require.Equal(t, http.StatusOK, validate(t, b, peerToken(t, "rob", "tok-rob", "X")))
	rob.waitMedia(t, []string{"alice"}, 60, 100, 20*time.Second)
}

// TestPeerTrackCopies: every node of the peer deployment that relays a
// room gets its own copy of each track over the IX, however many users
// watch there; the copies-per-track gauge tells.
func TestPeerTrackCopies(t *testing.T) {
	verifyNoLeaks(t)
	auth := newFakeAuthority()
	for _, id := range []string{"rita", "rob", "ruth"} {
		auth.grant("tok-"+id, "fed-b", "X", id)
	}
	a := startFedA(t, auth)
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(a.br.Collector()))
	b1 := startFedBNode(t, a, peerSignalKey, "b1")
	b2 := startFedBNode(t, a, peerSignalKey, "b2")
	alice := a.join(t, "X", "alice")
	alice.publish(t, avOpts())
	copies := func(authority, tracks int, want float64) {
		t.Helper()
		require.Eventually(t, func() bool {
			pa := a.br.PeerDeployments()
			return len(pa) == 1 && pa[0] == PeerDeployment{Peer: "fed-b", Authority: authority, TracksOut: tracks, DistinctOut: 2} &&
				metricValue(t, reg, "gxconf_bridge_peer_track_copies", "peer=fed-b") == want
		}, 20*time.Second, 50*time.Millisecond, "%+v", a.br.PeerDeployments())
	}
	// Two users on one node: one copy.
	for _, id := range []string{"rita", "rob"} {
		b1.joinToken(t, id, peerToken(t, id, "tok-"+id, "X")).waitMedia(t, []string{"alice"}, 30, 50, 20*time.Second)
	}
	copies(1, 2, 1)
	// A user on another node of fed-b: that node relays the room too.
	b2.joinToken(t, "ruth", peerToken(t, "ruth", "tok-ruth", "X")).waitMedia(t, []string{"alice"}, 30, 50, 20*time.Second)
	copies(2, 4, 2)
}

// TestPeerRelaySecurity: fed-a accepts no association without a grant for
// the peer, nor with the wrong key, nor replayed requests; whatever fed-b
// sends through the association to publish, send data or act on fed-a's
// participants has no effect in fed-a's room.
func TestPeerRelaySecurity(t *testing.T) {
	verifyNoLeaks(t)
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	a := startFedA(t, auth)
	b := startFedB(t, a, peerSignalKey)
	ctx := context.Background()

	t.Run("no grant, no relay", func(t *testing.T) {
		err := b.br.linkPeer(ctx, sfu.PeerRoomName("fed-a", "Y"))
		require.ErrorContains(t, err, "403")
		require.NotZero(t, a.br.PeerRefused("fed-b", refusedParticipant))
	})
	t.Run("wrong peer secret", func(t *testing.T) {
		bad := startFedB(t, a, []byte("another-signal-key-0123456789abcdef"))
		require.ErrorContains(t, bad.br.linkPeer(ctx, peerRoomX), "401")
		// Nobody can vouch for the token: the join is refused.
		require.Equal(t, http.StatusForbidden, validate(t, bad, peerToken(t, "rita", "tok-rita", "X")))
	})
	t.Run("replayed", func(t *testing.T) {
		body, err := json.Marshal(&grantRequest{Version: 1, From: "fed-b", To: "fed-a", TimeMs: time.Now().UnixMilli(),
			Relay: a.br.Addr(), Nonce: newNonce(), Op: "check", Room: "X", Identity: "rita", TokenID: "tok-rita"})
		require.NoError(t, err)
		post := func() int {
			req, _ := http.NewRequest(http.MethodPost, "http://"+a.br.Addr()+peerGrantPath, bytes.NewReader(body))
			req.Header.Set(peerHeader, "fed-b")
			req.Header.Set(macHeader, base64.StdEncoding.EncodeToString(peerMAC(peerSignalKey, "grant", nil, body)))
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			return resp.StatusCode
		}
		require.Equal(t, http.StatusOK, post())
		require.Equal(t, http.StatusUnauthorized, post())
	})

	alice := a.join(t, "X", "alice")
	alice.publish(t, avOpts())
	rita := b.joinToken(t, "rita", peerToken(t, "rita", "tok-rita", "X"))
	rita.waitMedia(t, []string{"alice"}, 10, 10, 20*time.Second)
	require.Eventually(t, func() bool { return alice.room.GetParticipantByIdentity("rita") != nil }, 10*time.Second, 20*time.Millisecond)
	peerOnB := peerKey("fed-a", "")
	rs := a.srv.RoomService()
	aliceInfo := func() *livekit.ParticipantInfo {
		p, err := rs.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "X", Identity: "alice"})
		require.NoError(t, err)
		return p
	}
	videoSID := alice.pub.VideoPub.SID()

	// fed-b announces a track for rita, sends data, and asks fed-a to
	// remove, mute and update alice and to change the room's metadata.
	sid := rita.room.LocalParticipant.SID()
	b.br.sendOn(t, peerRoomX, peerOnB, &message{Type: msgParticipant, Codecs: []trackCodec{{SID: "TR_evil", MimeType: "video/VP8", ClockRate: 90000}},
		info: &livekit.ParticipantInfo{Identity: "rita", Sid: sid, Version: 1000, State: livekit.ParticipantInfo_ACTIVE,
			Tracks: []*livekit.TrackInfo{{Sid: "TR_evil", Type: livekit.TrackType_VIDEO}}}})
	b.br.sendOn(t, peerRoomX, peerOnB, &message{Type: msgStream, SID: "TR_evil", SSRC: 1234, Kind: "video"})
	b.br.sendOn(t, peerRoomX, peerOnB, &message{Type: msgData, Label: "_reliable", Data: []byte("evil")})
	b.br.sendOn(t, peerRoomX, peerOnB, &message{Type: msgMute, Identity: "alice", SID: videoSID})
	b.br.sendOn(t, peerRoomX, peerOnB, &message{Type: msgUpdate, info: &livekit.ParticipantInfo{Identity: "alice", Name: "pwned"}})
	b.br.sendOn(t, peerRoomX, peerOnB, &message{Type: msgRoomMeta, Data: []byte("pwned")})
	// fed-b's own RoomService removes alice from its relay: the removal
	// goes to fed-a as a remove message.
	_, err := b.srv.RoomService().RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: peerRoomX, Identity: "alice"})
	require.NoError(t, err)
	// A participant without a grant.
	b.br.sendOn(t, peerRoomX, peerOnB, &message{Type: msgParticipant,
		info: &livekit.ParticipantInfo{Identity: "eve", Sid: "PA_eve", Version: 1, State: livekit.ParticipantInfo_ACTIVE}})

	require.Eventually(t, func() bool {
		return a.br.PeerRefused("fed-b", refusedTrack) >= 2 && a.br.PeerRefused("fed-b", refusedData) >= 1 &&
			a.br.PeerRefused("fed-b", refusedControl) >= 4 && a.br.PeerRefused("fed-b", refusedParticipant) >= 2
	}, 10*time.Second, 20*time.Millisecond)
	rp, err := rs.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "X", Identity: "rita"})
	require.NoError(t, err)
	require.Empty(t, rp.GetTracks(), "fed-b's participant published nothing in fed-a's room")
	require.False(t, rp.GetPermission().GetCanPublish())
	_, err = rs.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "X", Identity: "eve"})
	require.Error(t, err, "a participant without a grant does not enter")
	info := aliceInfo()
	require.Equal(t, livekit.ParticipantInfo_ACTIVE, info.GetState(), "alice is still in fed-a's room")
	require.NotEqual(t, "pwned", info.GetName())
	for _, tr := range info.GetTracks() {
		require.False(t, tr.GetMuted(), "fed-b muted alice's %s", tr.GetSid())
	}
	require.False(t, alice.hasData("", "evil"))
	require.Nil(t, alice.room.GetParticipantByIdentity("eve"))
}

// TestPeerRelayRelinks: the IX link dies; fed-b's subscriber stays
// connected to fed-b's node, fed-b links again and its media resumes
// without anyone rejoining.
func TestPeerRelayRelinks(t *testing.T) {
	verifyNoLeaks(t)
	a, _, _, rita := ritaWatchesAlice(t)
	before := rita.stream("alice/video")

	// fed-a's end goes silent, as when the IX link is cut.
	a.br.assocFor(t, "X", peerKey("fed-b", "b1")).vanish()
	start := time.Now()
	require.Eventually(t, func() bool {
		v := rita.stream("alice/video")
		return v != before && v != nil && v.Frames.Load() >= 10
	}, 30*time.Second, 50*time.Millisecond, "media did not resume")
	t.Logf("media resumed %s after the link died", time.Since(start).Round(100*time.Millisecond))
	require.Equal(t, lksdk.ConnectionStateConnected, rita.room.ConnectionState(), "rita did not reconnect by hand")
}

// TestPeerRestrictedTrack: a track whose publisher lets none of the peer
// deployment's participants in the room subscribe does not cross to it,
// whatever the peer asks (fed-b's SFU refuses rita too, but fed-b is
// another deployment); a grant to rita lets it cross, a revocation stops
// it, and asking again after that is refused again.
func TestPeerRestrictedTrack(t *testing.T) {
	verifyNoLeaks(t)
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	a := startFedA(t, auth)
	b := startFedB(t, a, peerSignalKey)
	alice := a.join(t, "X", "alice")
	onlyBob := &livekit.SubscriptionPermission{TrackPermissions: []*livekit.TrackPermission{{ParticipantIdentity: "bob", AllTracks: true}}}
	alice.room.LocalParticipant.SetSubscriptionPermission(onlyBob)
	alice.publish(t, avOpts())
	rita := b.joinToken(t, "rita", peerToken(t, "rita", "tok-rita", "X"))
	require.Eventually(t, func() bool { return alice.room.GetParticipantByIdentity("rita") != nil }, 10*time.Second, 20*time.Millisecond)
	// rita sees alice's tracks (fed-a announced them) and may not subscribe.
	require.Eventually(t, func() bool {
		p := rita.room.GetParticipantByIdentity("alice")
		return p != nil && len(p.TrackPublications()) == 2
	}, 10*time.Second, 20*time.Millisecond)
	tracksOut := func() int {
		pd := a.br.PeerDeployments()
		if len(pd) != 1 {
			return -1
		}
		return pd[0].TracksOut
	}
	// fed-b asks for alice's tracks all the same.
	peerOnB := peerKey("fed-a", "")
	ask := func() {
		for _, sid := range []string{alice.pub.VideoPub.SID(), alice.pub.AudioPub.SID()} {
			b.br.sendOn(t, peerRoomX, peerOnB, &message{Type: msgWant, SID: sid, Mask: 1})
		}
	}
	ask()
	require.Eventually(t, func() bool { return a.br.PeerRefused("fed-b", refusedRestricted) == 2 }, 10*time.Second, 20*time.Millisecond,
		"refused %d", a.br.PeerRefused("fed-b", refusedRestricted))
	require.Zero(t, tracksOut(), "nothing of alice crosses to fed-b")
	rita.mu.Lock()
	require.Empty(t, rita.streams)
	rita.mu.Unlock()

	// A grant to rita: fed-b's SFU lets her subscribe, fed-a relays.
	alice.room.LocalParticipant.SetSubscriptionPermission(&livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{{ParticipantIdentity: "rita", AllTracks: true}},
	})
	rita.waitMedia(t, []string{"alice"}, 10, 10, 20*time.Second)
	require.Equal(t, 2, tracksOut())

	// Revoked: both wants are held again (counted), nothing crosses, and
	// asking again changes nothing (a want of a held track is counted again
	// only when it asks for other layers than the held one). fed-b's room
	// metadata after the asks, refused as control on arrival, shows when
	// they were handled (one ordered channel).
	before := a.br.PeerRefused("fed-b", refusedRestricted)
	alice.room.LocalParticipant.SetSubscriptionPermission(onlyBob)
	require.Eventually(t, func() bool { return tracksOut() == 0 }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return a.br.PeerRefused("fed-b", refusedRestricted) == before+2 }, 10*time.Second, 20*time.Millisecond,
		"refused %d, before the revocation %d", a.br.PeerRefused("fed-b", refusedRestricted), before)
	control := a.br.PeerRefused("fed-b", refusedControl)
	ask()
	b.br.sendOn(t, peerRoomX, peerOnB, &message{Type: msgRoomMeta, Data: []byte("marker")})
	require.Eventually(t, func() bool { return a.br.PeerRefused("fed-b", refusedControl) == control+1 }, 10*time.Second, 20*time.Millisecond)
	require.Zero(t, tracksOut(), "asked again after the revocation, alice's tracks crossed")
	require.GreaterOrEqual(t, a.br.PeerRefused("fed-b", refusedRestricted), before+2)
}

// TestPeerRelayNeedsParticipantAndGrant: a peer node that links fed-a's
// room by hand and asks for alice's tracks without announcing any of its
// participants gets nothing (nobody in X would see who watches); the wants
// go through once it announces rita, who holds a grant, are held again
// when she leaves, and once no user of fed-b holds a grant for X any more
// fed-a ends the link, though fed-b removed nobody.
func TestPeerRelayNeedsParticipantAndGrant(t *testing.T) {
	old := peerGrantInterval
	peerGrantInterval = 100 * time.Millisecond
	t.Cleanup(func() { peerGrantInterval = old })
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	a := startFedA(t, auth)
	b := startNodeFull(t, "b1", nil, func(n *node) {
		n.br.SetPeering(Peering{Self: "fed-b", Peers: map[string]PeerLink{"fed-a": {RelayAddress: a.br.Addr(), SignalKey: peerSignalKey}}})
	})
	alice := a.join(t, "X", "alice")
	alice.publish(t, avOpts())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	require.NoError(t, b.br.linkPeer(ctx, peerRoomX))
	onA, onB := peerKey("fed-b", "b1"), peerKey("fed-a", "")
	require.Eventually(t, func() bool {
		n, ok := b.br.inTrackCountNow(peerRoomX, onB)
		return a.br.Linked("X", onA) && ok && n == 2
	}, 10*time.Second, 10*time.Millisecond,
		"fed-b knows alice's tracks")
	tracksOut := func() int {
		st, _ := a.br.Stats("X", onA)
		return st.TracksOut
	}
	for _, sid := range []string{alice.pub.VideoPub.SID(), alice.pub.AudioPub.SID()} {
		b.br.sendOn(t, peerRoomX, onB, &message{Type: msgWant, SID: sid, Mask: 1})
	}
	require.Eventually(t, func() bool { return a.br.PeerRefused("fed-b", refusedRestricted) == 2 }, 10*time.Second, 10*time.Millisecond, "refused %d", a.br.PeerRefused("fed-b", refusedRestricted))
	require.Zero(t, tracksOut(), "alice's tracks cross to a peer that announced nobody")

	rita := func(state livekit.ParticipantInfo_State, version uint32) {
		b.br.sendOn(t, peerRoomX, onB, &message{Type: msgParticipant,
			info: &livekit.ParticipantInfo{Identity: "rita", Sid: "PA_rita", Version: version, State: state}})
	}
	rita(livekit.ParticipantInfo_ACTIVE, 1)
	require.Eventually(t, func() bool { return tracksOut() == 2 }, 10*time.Second, 10*time.Millisecond, "the held wants go through with rita there")
	rita(livekit.ParticipantInfo_DISCONNECTED, 2)
	require.Eventually(t, func() bool { return tracksOut() == 0 }, 10*time.Second, 10*time.Millisecond, "alice's tracks stop when fed-b's last participant leaves")
	require.True(t, a.br.Linked("X", onA), "the grant still holds: the link stays")
	rita(livekit.ParticipantInfo_ACTIVE, 3)
	require.Eventually(t, func() bool { return tracksOut() == 2 }, 10*time.Second, 10*time.Millisecond)

	refused := a.br.PeerRefused("fed-b", refusedParticipant)
	auth.revoke("tok-rita")
	require.Eventually(t, func() bool { return !a.br.Linked("X", onA) && !b.br.Linked(peerRoomX, onB) }, 10*time.Second, 10*time.Millisecond,
		"fed-a keeps relaying X to fed-b without any grant")
	require.Equal(t, refused+1, a.br.PeerRefused("fed-b", refusedParticipant))
}

// TestPeerParticipantSidCollision: fed-b announces its rita again with
// the sid of bob, fed-a's own participant: fed-a refuses her (a
// permission, speaker update or data packet naming bob's sid would
// otherwise go to either), and a permission alice gives bob by sid goes
// to bob.
func TestPeerParticipantSidCollision(t *testing.T) {
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	a := startFedA(t, auth)
	b := startFedB(t, a, peerSignalKey)
	alice := a.join(t, "X", "alice")
	bob := a.join(t, "X", "bob")
	b.joinToken(t, "rita", peerToken(t, "rita", "tok-rita", "X"))
	require.Eventually(t, func() bool { return alice.room.GetParticipantByIdentity("rita") != nil }, 20*time.Second, 20*time.Millisecond)
	bobSID := bob.room.LocalParticipant.SID()
	require.NotEmpty(t, bobSID)

	refused := a.br.PeerRefused("fed-b", refusedParticipant)
	b.br.sendOn(t, peerRoomX, peerKey("fed-a", ""), &message{Type: msgParticipant,
		info: &livekit.ParticipantInfo{Identity: "rita", Sid: bobSID, Version: 1 << 30, State: livekit.ParticipantInfo_ACTIVE}})
	require.Eventually(t, func() bool { return a.br.PeerRefused("fed-b", refusedParticipant) == refused+1 }, 10*time.Second, 10*time.Millisecond)
	ctx := context.Background()
	rs := a.srv.RoomService()
	res, err := rs.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: "X"})
	require.NoError(t, err)
	for _, p := range res.GetParticipants() {
		if p.GetIdentity() != "bob" {
			require.NotEqual(t, bobSID, p.GetSid(), "%s has bob's sid in fed-a's room", p.GetIdentity())
		}
	}

	alice.room.LocalParticipant.SetSubscriptionPermission(&livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{{ParticipantSid: bobSID, AllTracks: true}}})
	onA := a.br.assocFor(t, "X", peerKey("fed-b", "b1"))
	require.Eventually(t, func() bool {
		tps := onA.rr.SubscriptionPermission("alice").GetTrackPermissions()
		return len(tps) == 1 && tps[0].GetParticipantIdentity() == "bob"
	}, 10*time.Second, 10*time.Millisecond, "alice's permission for bob's sid")
}

// signedPeerOffer posts fed-b's signed offer to relay room from node to
// a's peer signalling endpoint and returns the status. The offer's DTLS
// fingerprint is made up: an accepted association never connects.
func signedPeerOffer(t *testing.T, a *node, room, node string) int {
	t.Helper()
	offer := &signal{Version: signalVersion, From: "fed-b", To: "fed-a", Room: room, Node: node, Relay: a.br.Addr(),
		TimeMs: time.Now().UnixMilli(), Nonce: newNonce(),
		ICE: webrtc.ICEParameters{UsernameFragment: "ufragAAAAAAA", Password: "passwordpasswordpassword"},
		DTLS: webrtc.DTLSParameters{Role: webrtc.DTLSRoleClient, Fingerprints: []webrtc.DTLSFingerprint{{Algorithm: "sha-256",
			Value: strings.TrimSuffix(strings.Repeat("AB:", 32), ":")}}},
		SCTP: webrtc.SCTPCapabilities{MaxMessageSize: 65536}}
	body, err := json.Marshal(offer)
	require.NoError(t, err)
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.br.Addr()+peerAssociatePath, bytes.NewReader(body))
	req.Header.Set(peerHeader, "fed-b")
	req.Header.Set(macHeader, base64.StdEncoding.EncodeToString(peerMAC(peerSignalKey, "offer", nil, body)))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// TestPeerNodesPerRoomConcurrentOffers: offers a peer sends at once, each
// naming another node, get no more associations of one room than
// maxPeerNodesPerRoom: the bound is not only checked, each slot is taken
// before the (slow) set-up.
func TestPeerNodesPerRoomConcurrentOffers(t *testing.T) {
	old := maxPeerNodesPerRoom
	maxPeerNodesPerRoom = 2
	t.Cleanup(func() { maxPeerNodesPerRoom = old })
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	a := startFedA(t, auth)
	const n = 12
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = signedPeerOffer(t, a, "X", fmt.Sprintf("node-%d", i))
		}()
	}
	wg.Wait()
	count := map[int]int{}
	for _, c := range codes {
		count[c]++
	}
	// (An accepted association that already failed frees its slot.)
	require.LessOrEqual(t, count[http.StatusOK], maxPeerNodesPerRoom, "status codes %v", codes)
	require.Equal(t, n, count[http.StatusOK]+count[http.StatusTooManyRequests], "status codes %v", codes)
	require.Equal(t, uint64(count[http.StatusTooManyRequests]), a.br.PeerRefused("fed-b", refusedAssociation))
}
