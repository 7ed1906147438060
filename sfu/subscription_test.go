package sfu_test

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// permissionUpdates reads a raw signal socket until n
// subscription_permission_update messages came, and returns them as
// "<participant sid> <track sid> <allowed>", sorted.
func permissionUpdates(t *testing.T, ws *websocket.Conn, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out []string
	for len(out) < n {
		_, data, err := ws.Read(ctx)
		require.NoError(t, err, "waiting for %d permission updates, got %v", n, out)
		res := &livekit.SignalResponse{}
		require.NoError(t, proto.Unmarshal(data, res))
		if u := res.GetSubscriptionPermissionUpdate(); u != nil {
			out = append(out, u.GetParticipantSid()+" "+u.GetTrackSid()+" "+map[bool]string{true: "allowed", false: "denied"}[u.GetAllowed()])
		}
	}
	sort.Strings(out)
	return out
}

// trackSids are the sids of identity's tracks as c sees them, sorted.
func (c *client) trackSids(t *testing.T, identity string) (string, []string) {
	t.Helper()
	for _, rp := range c.room.GetRemoteParticipants() {
		if rp.Identity() == identity {
			var sids []string
			for _, pub := range rp.TrackPublications() {
				sids = append(sids, pub.SID())
			}
			sort.Strings(sids)
			return rp.SID(), sids
		}
	}
	t.Fatalf("%s does not see %s", c.identity, identity)
	return "", nil
}

func expectUpdates(sid string, tracks []string, verdict string) []string {
	var out []string
	for _, tr := range tracks {
		out = append(out, sid+" "+tr+" "+verdict)
	}
	sort.Strings(out)
	return out
}

// TestSubscriptionPermission: a publisher's subscription permission decides
// who receives its tracks, by identity and by sid, is told to those left
// out (and when they are let in), takes tracks away at once and gives them
// back.
func TestSubscriptionPermission(t *testing.T) {
	ts := startServer(t, nil)
	const room = "perm"
	alice := ts.join(t, room, "alice", nil)
	alice.room.LocalParticipant.SetSubscriptionPermission(&livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{{ParticipantIdentity: "bob", AllTracks: true}},
	})
	bob := ts.join(t, room, "bob", nil)
	carol := joinedRaw(t, ts, room, "carol", nil) // reads the permission updates
	dave := ts.join(t, room, "dave", nil)
	alice.publish(t, lightMedia())

	bob.waitMedia(t, []string{"alice"}, 10, 20, 20*time.Second)
	aliceSid, tracks := bob.trackSids(t, "alice")
	require.Len(t, tracks, 2)
	require.Equal(t, expectUpdates(aliceSid, tracks, "denied"), permissionUpdates(t, carol, 2), "carol is told she may not subscribe")
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_subscriptions_denied_total") == 4 }, 10*time.Second, 20*time.Millisecond,
		"carol and dave are each refused both tracks once")
	require.Empty(t, ts.srv.DescribeSubscriptions(room, "dave"), "dave is not subscribed")
	require.Empty(t, ts.srv.DescribeSubscriptions(room, "carol"))

	// Dave let in by his sid: he is subscribed and receives media.
	daveSid := dave.room.LocalParticipant.SID()
	alice.room.LocalParticipant.SetSubscriptionPermission(&livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{
			{ParticipantIdentity: "bob", AllTracks: true},
			{ParticipantSid: daveSid, AllTracks: true},
		},
	})
	dave.waitMedia(t, []string{"alice"}, 10, 20, 20*time.Second)
	require.Empty(t, ts.srv.DescribeSubscriptions(room, "carol"), "carol is still out")

	// Bob's permission taken away: his subscriptions end.
	alice.room.LocalParticipant.SetSubscriptionPermission(&livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{{ParticipantIdentity: "dave", AllTracks: true}},
	})
	require.Eventually(t, func() bool {
		bob.mu.Lock()
		defer bob.mu.Unlock()
		return bob.ended["alice/audio"] == 1 && bob.ended["alice/video"] == 1
	}, 15*time.Second, 20*time.Millisecond, "alice's tracks leave bob's connection")
	require.Empty(t, ts.srv.DescribeSubscriptions(room, "bob"))

	// Everyone again: carol is told and subscribed, bob gets the tracks back
	// (his old streams forgotten first: the new ones may arrive at once).
	bob.mu.Lock()
	delete(bob.streams, "alice/audio")
	delete(bob.streams, "alice/video")
	bob.mu.Unlock()
	alice.room.LocalParticipant.SetSubscriptionPermission(&livekit.SubscriptionPermission{AllParticipants: true})
	require.Equal(t, expectUpdates(aliceSid, tracks, "allowed"), permissionUpdates(t, carol, 2))
	require.Eventually(t, func() bool { return len(ts.srv.DescribeSubscriptions(room, "carol")) == 2 }, 10*time.Second, 20*time.Millisecond)
	bob.waitMedia(t, []string{"alice"}, 10, 20, 20*time.Second)
}

// TestSubscriptionPermissionPerTrack: a grant of some track sids lets the
// subscriber have those only; an entry naming nobody (no sid, no identity)
// grants nothing and does not undo the rest.
func TestSubscriptionPermissionPerTrack(t *testing.T) {
	ts := startServer(t, nil)
	const room = "perm-track"
	alice := ts.join(t, room, "alice", nil)
	bob := ts.join(t, room, "bob", nil)
	alice.publish(t, lightMedia())
	bob.waitMedia(t, []string{"alice"}, 5, 10, 20*time.Second)
	var audioSid string
	for _, pub := range alice.room.LocalParticipant.TrackPublications() {
		if pub.Kind() == lksdk.TrackKindAudio {
			audioSid = pub.SID()
		}
	}
	require.NotEmpty(t, audioSid)
	alice.room.LocalParticipant.SetSubscriptionPermission(&livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{
			{ParticipantIdentity: "bob", TrackSids: []string{audioSid}},
			{AllTracks: true}, // names nobody
		},
	})
	require.Eventually(t, func() bool {
		subs := ts.srv.DescribeSubscriptions(room, "bob")
		return len(subs) == 1 && subs[0][:len("alice/audio")] == "alice/audio"
	}, 15*time.Second, 20*time.Millisecond, "bob keeps the audio only: %v", ts.srv.DescribeSubscriptions(room, "bob"))
	// Bob's own subscription request for the video is refused as well.
	_, tracks := bob.trackSids(t, "alice")
	for _, sid := range tracks {
		if sid != audioSid {
			pub := bob.publicationBySid(t, "alice", sid)
			require.NoError(t, pub.SetSubscribed(true))
		}
	}
	carol := ts.join(t, room, "carol", nil)
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_subscriptions_denied_total") == 3 }, 10*time.Second, 20*time.Millisecond,
		"bob's video taken away, carol refused both")
	require.Len(t, ts.srv.DescribeSubscriptions(room, "bob"), 1)
	require.Empty(t, ts.srv.DescribeSubscriptions(room, "carol"))
	_ = carol
}

// publicationBySid is identity's publication sid as c sees it.
func (c *client) publicationBySid(t *testing.T, identity, sid string) *lksdk.RemoteTrackPublication {
	t.Helper()
	for _, rp := range c.room.GetRemoteParticipants() {
		if rp.Identity() == identity {
			for _, pub := range rp.TrackPublications() {
				if pub.SID() == sid {
					return pub.(*lksdk.RemoteTrackPublication)
				}
			}
		}
	}
	t.Fatalf("%s does not see %s's track %s", c.identity, identity, sid)
	return nil
}

// TestSubscriptionPermissionRace: a subscriber asking for a track over and
// over while its publisher's permission flips between everyone and nobody
// ends in the state the last permission and the last request decide: no
// subscription slips past a denial, and no denial outlives a grant.
func TestSubscriptionPermissionRace(t *testing.T) {
	ts := startServer(t, nil)
	const room = "perm-race"
	carol := joinedRaw(t, ts, room, "carol", nil)
	rr, err := ts.srv.RelayRoom(room, false)
	require.NoError(t, err)
	remote, err := rr.AddRemoteParticipant(&livekit.ParticipantInfo{Sid: "PA_remote", Identity: "remote"}, sfu.RemoteHooks{})
	require.NoError(t, err)
	defer remote.Close(livekit.DisconnectReason_CLIENT_INITIATED)
	codec := sfu.RelayCodec{RTPCodecParameters: webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, PayloadType: 111}}
	_, err = remote.PublishTrack(&livekit.TrackInfo{Sid: "TR_race", Type: livekit.TrackType_AUDIO}, codec, func(uint8) {}, func(int) {})
	require.NoError(t, err)
	nobody := &livekit.SubscriptionPermission{}

	// pingPong returns once the server has handled everything carol sent.
	pingPong := func() {
		writeSignal(t, carol, &livekit.SignalRequest{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: 4711}}})
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for {
			_, data, err := carol.Read(ctx)
			require.NoError(t, err)
			res := &livekit.SignalResponse{}
			require.NoError(t, proto.Unmarshal(data, res))
			if res.GetPongResp().GetLastPingTimestamp() == 4711 {
				return
			}
		}
	}
	for round := 0; round < gxtestRuns(3); round++ {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 100; i++ {
				if i%2 == 0 {
					remote.SetSubscriptionPermission(nobody)
				} else {
					remote.SetSubscriptionPermission(nil)
				}
			}
		}()
		for i := 0; i < 100; i++ {
			writeSignal(t, carol, &livekit.SignalRequest{Message: &livekit.SignalRequest_Subscription{Subscription: &livekit.UpdateSubscription{
				TrackSids: []string{"TR_race"}, Subscribe: i%3 != 2,
			}}})
		}
		writeSignal(t, carol, &livekit.SignalRequest{Message: &livekit.SignalRequest_Subscription{Subscription: &livekit.UpdateSubscription{
			TrackSids: []string{"TR_race"}, Subscribe: true,
		}}})
		<-done
		remote.SetSubscriptionPermission(nobody)
		pingPong()
		require.Empty(t, ts.srv.DescribeSubscriptions(room, "carol"), "round %d: a subscription slipped past the denial", round)
		require.Zero(t, ts.srv.SendingTracks(room, "carol"), "round %d: a revoked subscription left its sender on carol's connection", round)
		remote.SetSubscriptionPermission(nil)
		require.Len(t, ts.srv.DescribeSubscriptions(room, "carol"), 1, "round %d: the grant did not give carol the track she wants", round)
		require.Equal(t, 1, ts.srv.SendingTracks(room, "carol"))
	}
}

// TestTrackSubscribedEvent: a publisher is told track_subscribed once per
// track, when its first visible subscriber receives it; a hidden
// subscriber does not count.
func TestTrackSubscribedEvent(t *testing.T) {
	ts := startServer(t, nil)
	const room = "track-subscribed"
	var mu sync.Mutex
	told := map[string]int{}
	alice := ts.connect(t, room, "alice", nil, func(cb *lksdk.RoomCallback) {
		cb.OnLocalTrackSubscribed = func(pub *lksdk.LocalTrackPublication, _ *lksdk.LocalParticipant) {
			mu.Lock()
			told[pub.SID()]++
			mu.Unlock()
		}
	})
	alice.publish(t, lightMedia())
	rec := ts.join(t, room, "rec", func(g *auth.VideoGrant) { g.Hidden = true })
	rec.waitMedia(t, []string{"alice"}, 5, 10, 20*time.Second)
	mu.Lock()
	require.Empty(t, told, "a hidden subscriber counted")
	mu.Unlock()
	bob := ts.join(t, room, "bob", nil)
	bob.waitMedia(t, []string{"alice"}, 5, 10, 20*time.Second)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(told) == 2
	}, 10*time.Second, 20*time.Millisecond, "alice is told both tracks are subscribed")
	carol := ts.join(t, room, "carol", nil)
	carol.waitMedia(t, []string{"alice"}, 5, 10, 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	for sid, n := range told {
		require.Equal(t, 1, n, "track_subscribed for %s more than once", sid)
	}
}

// TestPermissionChangeEnforced: RoomService.UpdateParticipant taking away
// canPublish unpublishes the participant's tracks (its subscribers lose
// them, it is told track_unpublished); taking away canSubscribe ends its
// subscriptions, and giving it back brings them back.
func TestPermissionChangeEnforced(t *testing.T) {
	ts := startServer(t, nil)
	const room = "perm-change"
	ctx := context.Background()
	rs := ts.srv.RoomService()
	alice := ts.join(t, room, "alice", nil)
	carol := ts.join(t, room, "carol", nil)
	alice.publish(t, lightMedia())
	carol.publish(t, lightMedia())
	bob := ts.join(t, room, "bob", nil)
	bob.waitMedia(t, []string{"alice", "carol"}, 5, 10, 20*time.Second)

	// canSubscribe taken from bob: his subscriptions end.
	_, err := rs.UpdateParticipant(ctx, &livekit.UpdateParticipantRequest{Room: room, Identity: "bob",
		Permission: &livekit.ParticipantPermission{CanSubscribe: false, CanPublish: true, CanPublishData: true}})
	require.NoError(t, err)
	require.Empty(t, ts.srv.DescribeSubscriptions(room, "bob"))
	require.Eventually(t, func() bool {
		bob.mu.Lock()
		defer bob.mu.Unlock()
		return bob.ended["alice/video"] == 1 && bob.ended["carol/audio"] == 1
	}, 15*time.Second, 20*time.Millisecond, "the tracks leave bob's connection")

	// canPublish taken from alice: her tracks are unpublished.
	_, err = rs.UpdateParticipant(ctx, &livekit.UpdateParticipantRequest{Room: room, Identity: "alice",
		Permission: &livekit.ParticipantPermission{CanSubscribe: true, CanPublish: false, CanPublishData: true}})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(alice.room.LocalParticipant.TrackPublications()) == 0 }, 15*time.Second, 20*time.Millisecond,
		"alice is told her tracks are unpublished")
	require.Eventually(t, func() bool {
		for _, rp := range carol.room.GetRemoteParticipants() {
			if rp.Identity() == "alice" {
				return len(rp.TrackPublications()) == 0
			}
		}
		return false
	}, 15*time.Second, 20*time.Millisecond, "carol sees alice's tracks gone")
	for _, line := range ts.srv.DescribeSubscriptions(room, "carol") {
		require.NotContains(t, line, "alice/")
	}

	// canSubscribe given back: bob auto-subscribes to carol again (his old
	// streams forgotten first: the new ones may arrive at once).
	bob.mu.Lock()
	delete(bob.streams, "carol/audio")
	delete(bob.streams, "carol/video")
	bob.mu.Unlock()
	_, err = rs.UpdateParticipant(ctx, &livekit.UpdateParticipantRequest{Room: room, Identity: "bob",
		Permission: &livekit.ParticipantPermission{CanSubscribe: true, CanPublish: true, CanPublishData: true}})
	require.NoError(t, err)
	bob.waitMedia(t, []string{"carol"}, 5, 10, 20*time.Second)

	// canPublishSources narrowed for carol: her camera goes, her microphone stays.
	_, err = rs.UpdateParticipant(ctx, &livekit.UpdateParticipantRequest{Room: room, Identity: "carol",
		Permission: &livekit.ParticipantPermission{CanSubscribe: true, CanPublish: true, CanPublishData: true,
			CanPublishSources: []livekit.TrackSource{livekit.TrackSource_MICROPHONE}}})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		subs := ts.srv.DescribeSubscriptions(room, "bob")
		return len(subs) == 1 && strings.HasPrefix(subs[0], "carol/audio ")
	}, 15*time.Second, 20*time.Millisecond, "bob keeps carol's audio only: %v", ts.srv.DescribeSubscriptions(room, "bob"))
}
