package test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/gxfs-conf/gxconf/test/credharness"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// peerSubscribers is the number of fed-b users watching alice@fed-a.
const peerSubscribers = 20

// ixWindow is how long IX bytes are counted.
const ixWindow = 5 * time.Second

// TestFederatedPeering proves issue 10's peered deployments on the
// two-federation rig: alice@fed-a publishes audio and video, 20 users of
// fed-b watch. The fed-b users' clients run inside fed-b's namespace
// (test/cmd/peersub under `ip netns exec`), where fed-a is reachable only
// across the IX, as a federation's own users reach the other federation.
//
// Without peering fed-a's focus sends them to fed-a's SFU and every one of
// them pulls alice's tracks across the IX (~20 copies). With peering (both
// gxconfs restarted with each other as peers) fed-a's focus sends them to
// fed-b's SFU with a token for fed-a's room in fed-a's namespace there;
// fed-b's relay pulls one copy over the IX and serves the 20 locally.
// fed-a stays the authority: a kick on fed-a ends the kicked user's session
// on fed-b's SFU and their token no longer admits them there. The IX goes
// down and comes back: both sides' calls carry on and alice's media returns
// to fed-b's users without anyone rejoining. Both deployments' `gxconf
// cluster status` show the peer link, and fed-a's rooms at a level its
// peer is not approved for are not relayed.
func TestFederatedPeering(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	peersub := buildPeerSub(t, dir)

	// fed-a runs on a site approved for VS-NfD and trusts the credential
	// harness's issuer (in the root namespace; a did:key issuer needs no
	// network) for VS-NfD obligations of both homeservers' users.
	tlsc, err := credharness.NewLoopbackTLS(t.TempDir())
	require.NoError(t, err)
	wallet, err := credharness.Start(tlsc, os.Stderr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = wallet.Close() })
	atRest := make([]byte, 32)
	_, _ = rand.Read(atRest)
	rig, err := harness.StartFederations(ctx, harness.FederationOptions{Bin: gxconfBin, Dir: dir,
		PerFederation: map[string]map[string]any{"fed-a": {
			"focus": map[string]any{"sfu": map[string]any{"approved_site": true}},
			"credentials": map[string]any{
				"federations": []any{map[string]any{
					"id":                 "oev",
					"homeserver_domains": []string{harness.FederationServerName("fed-a"), harness.FederationServerName("fed-b")},
					"trusted_issuers":    []any{map[string]any{"did": wallet.Info.Issuers["w3c"], "types": []string{"VSNfDVerpflichtung"}}},
				}},
				"at_rest_key":    base64.StdEncoding.EncodeToString(atRest),
				"did_resolution": map[string]any{"allow_private_addresses_for_testing": true},
				"levels":         map[string]any{"vs_nfd_approved_environment": true},
			},
		}},
	})
	require.NoError(t, err)
	closeOnCleanup(t, rig)
	fa, fb := rig.A, rig.B
	alice := register(t, fa.Stack, "alice")
	dave := register(t, fa.Stack, "dave") // watches on fed-a itself: the reference path
	subs := make([]*harness.User, peerSubscribers)
	for i := range subs {
		subs[i] = register(t, fb.Stack, fmt.Sprintf("sub%02d", i))
	}

	// A public room: fed-b's users join without invites, the first over
	// federation (make_join/send_join), the others locally on fed-b.
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "public_chat", Name: "Peered call", Invite: []id.UserID{fa.BotID},
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice.ID: 100, fa.BotID: 50}},
	})
	require.NoError(t, err)
	room := created.RoomID
	lkRoom := focus.LiveKitRoomAlias(room.String(), focus.LegacySlotID)
	_, err = dave.Client.JoinRoomByID(ctx, room)
	require.NoError(t, err)
	beforeFirstRemoteJoin(t, alice, room, fa.BotID)
	start := time.Now()
	err = joinRetrying(ctx, subs[0].Client, room)
	require.NoError(t, err, "the first fed-b user cannot join over federation")
	var wg sync.WaitGroup
	errs := make([]error, len(subs))
	for i := 1; i < len(subs); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = joinRetrying(ctx, subs[i].Client, room)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "%s cannot join", subs[i].ID)
	}
	faBot, err := fa.BotClient()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, err := faBot.JoinedMembers(ctx, room)
		return err == nil && len(m.Joined) == 3+len(subs)
	}, 60*time.Second, 100*time.Millisecond, "fed-a does not see every fed-b user joined")
	t.Logf("%d fed-b users joined the room over federation; fed-a had every join after %s", len(subs), time.Since(start))

	token := func(t *testing.T, fed *harness.Federation, u *harness.User, member string) (string, string) {
		t.Helper()
		status, out := postJSON(t, fed.FocusURL+"/get_token", getTokenBody(room, u, member, openID(t, u)))
		require.Equal(t, http.StatusOK, status, "%s's token from %s: %v", u.ID, fed.Name, out)
		return out["url"].(string), out["jwt"].(string)
	}
	aliceID := focus.LiveKitIdentity(alice.ID.String(), alice.Client.DeviceID.String(), "alice-1")
	// publish has alice publish audio and video on fed-a (again after a restart).
	publish := func(t *testing.T) {
		t.Helper()
		url, jwt := token(t, fa, alice, "alice-1")
		c := joinWithTokenUntil(t, t, url, jwt)
		pub, err := loadtest.StartPublisher(c.room, loadtest.PublishOptions{Audio: true, Video: true})
		require.NoError(t, err)
		t.Cleanup(pub.Stop)
	}
	// sessions gets every fed-b user's session from fed-a's focus.
	sessions := func(t *testing.T) []peerSession {
		t.Helper()
		out := make([]peerSession, len(subs))
		for i, u := range subs {
			out[i].URL, out[i].JWT = token(t, fa, u, fmt.Sprintf("sub-%d", i))
		}
		return out
	}
	// watch starts the fed-b users' clients in fed-b's namespace and dave's
	// in the root namespace, and waits until all receive alice's media.
	watch := func(t *testing.T, ss []peerSession) (*peerSubs, *peerSubs) {
		t.Helper()
		durl, djwt := token(t, fa, dave, "dave-1")
		ref := startPeerSubs(t, peersub, nil, []peerSession{{durl, djwt}})
		fbs := startPeerSubs(t, peersub, fb.Site, ss)
		start := time.Now()
		for _, p := range []*peerSubs{ref, fbs} {
			p.requireMedia(t, aliceID, 25, 60*time.Second)
		}
		t.Logf("%d fed-b users receive alice's media %s after their clients started", len(ss), time.Since(start))
		return ref, fbs
	}

	// ixBytes counts what crossed the IX towards fed-b over the window, and
	// logs both gxconfs' CPU use in it.
	ixBytes := func(t *testing.T) uint64 {
		t.Helper()
		rx0, _, err := fb.IXBytes()
		require.NoError(t, err)
		ca0, err := fa.GxconfCPU()
		require.NoError(t, err)
		cb0, err := fb.GxconfCPU()
		require.NoError(t, err)
		time.Sleep(ixWindow) // a measurement window, not a wait for an event
		rx1, _, err := fb.IXBytes()
		require.NoError(t, err)
		ca1, err := fa.GxconfCPU()
		require.NoError(t, err)
		cb1, err := fb.GxconfCPU()
		require.NoError(t, err)
		t.Logf("CPU over the window (race build: %v): fed-a's gxconf %.0f%%, fed-b's %.0f%% of one core",
			raceEnabled, 100*(ca1-ca0).Seconds()/ixWindow.Seconds(), 100*(cb1-cb0).Seconds()/ixWindow.Seconds())
		return rx1 - rx0
	}
	var withoutPeering uint64

	t.Run("without peering every fed-b user pulls alice's tracks across the IX", func(t *testing.T) {
		publish(t)
		ss := sessions(t)
		for _, s := range ss {
			require.Equal(t, fa.SFUURL, s.URL, "without peering fed-b's users get fed-a's SFU")
		}
		require.NoError(t, fb.RouteOverIX(fa))
		ref, fbs := watch(t, ss)
		withoutPeering = ixBytes(t)
		t.Logf("alice publishes audio (80 B per 20 ms) and simulcast video; subscribers get the 720p layer, nominally 1.7 Mbit/s (frame payloads, before RTP, SRTP, UDP and IP headers)")
		t.Logf("without peering: %d B crossed the IX to fed-b in %s = %.0f kbit/s for %d subscribers x 2 tracks: %.0f kbit/s per subscriber",
			withoutPeering, ixWindow, kbps(withoutPeering, ixWindow), len(ss), kbps(withoutPeering, ixWindow)/float64(len(ss)))
		t.Logf("latency: fed-a -> IX -> fed-b user vs fed-a -> local user: %s", latencyDelta(ref, fbs))
		fbs.stop(t)
		ref.stop(t)
	})

	secret := make([]byte, 32)
	_, err = rand.Read(secret)
	require.NoError(t, err)
	peering := harness.PeeringOptions{Secret: hex.EncodeToString(secret)}
	// Peers now: restart both with each other as peers. (The route over
	// the IX stays; fed-b's users only connect to fed-b's SFU from now on.)
	require.NoError(t, fb.RestartGxconf(ctx, rig.PeeringConfig(fb, peering)))
	require.NoError(t, fa.RestartGxconf(ctx, rig.PeeringConfig(fa, peering)))

	var fbs, ref *peerSubs
	var ss []peerSession
	outer := t
	t.Run("with peering fed-b's relay pulls one copy and serves its users", func(t *testing.T) {
		publish(outer)
		ss = sessions(t)
		peerRoom := sfu.PeerRoomName("fed-a", lkRoom)
		tokenSecret := config.PeerConfig{Secret: peering.Secret}.TokenSecret("fed-a")
		for i, s := range ss {
			require.Equal(t, fb.SFUURL, s.URL, "fed-b's users get fed-b's SFU")
			g := verifyJWT(t, s.JWT, sfu.PeerAPIKey("fed-a"), tokenSecret)
			require.Equal(t, peerRoom, g.Video.Room)
			require.False(t, g.Video.GetCanPublish())
			require.False(t, g.Video.GetCanPublishData())
			require.Equal(t, focus.LiveKitIdentity(subs[i].ID.String(), subs[i].Client.DeviceID.String(), fmt.Sprintf("sub-%d", i)), g.Identity)
		}
		ref, fbs = watch(outer, ss)
		with := ixBytes(t)
		t.Logf("with peering: %d B crossed the IX to fed-b in %s = %.0f kbit/s for %d subscribers (%.1f%% of the bytes without peering; %.1f copies)",
			with, ixWindow, kbps(with, ixWindow), len(ss), 100*float64(with)/float64(withoutPeering),
			float64(with)/float64(withoutPeering)*float64(len(ss)))
		require.Less(t, with*5, withoutPeering, "the IX carries about one copy with peering")
		t.Logf("latency: fed-a -> IX relay -> fed-b's SFU -> fed-b user vs fed-a -> local user: %s", latencyDelta(ref, fbs))
	})

	t.Run("cluster status shows the peer link on both sides", func(t *testing.T) {
		require.NotNil(t, fbs)
		var sa, sb cluster.Status
		if !assert.Eventually(t, func() bool {
			sa, sb = clusterStatus(t, fa.MetricsURL), clusterStatus(t, fb.MetricsURL)
			return sa.Peering != nil && sb.Peering != nil && len(sa.Peering.Links) == 1 && len(sb.Peering.Links) == 1 &&
				sa.Peering.Links[0].Connected && sb.Peering.Links[0].Connected &&
				sa.Peering.Links[0].TracksOut == 2 && sb.Peering.Links[0].TracksIn == 2 &&
				len(sa.Peering.Participants) == len(subs) && len(sb.Peering.Participants) == 2 &&
				// A lone node samples its load as a cluster node does.
				len(sa.Sites) == 1 && sa.Sites[0].Nodes[0].Load.BitrateIn > 0 && sb.Sites[0].Nodes[0].Load.BitrateOut > 0
		}, 20*time.Second, 200*time.Millisecond) {
			ja, _ := json.Marshal(sa.Peering)
			jb, _ := json.Marshal(sb.Peering)
			t.Fatalf("peer links in the status:\nfed-a %s\nfed-b %s", ja, jb)
		}
		la, lb := sa.Peering.Links[0], sb.Peering.Links[0]
		require.Equal(t, lkRoom, la.Room)
		require.Equal(t, "fed-b", la.Peer)
		require.Equal(t, "out", la.Direction)
		require.Equal(t, sfu.PeerRoomName("fed-a", lkRoom), lb.Room)
		require.Equal(t, "fed-a", lb.Peer)
		require.Equal(t, "in", lb.Direction)
		for _, p := range sa.Peering.Participants {
			require.Equal(t, "fed-b", p.Deployment)
			require.Equal(t, lkRoom, p.Room)
		}
		// fed-b sees fed-a's participants of the room: alice and dave.
		daveID := focus.LiveKitIdentity(dave.ID.String(), dave.Client.DeviceID.String(), "dave-1")
		var remote []string
		for _, p := range sb.Peering.Participants {
			require.Equal(t, "fed-a", p.Deployment)
			remote = append(remote, p.Identity)
		}
		require.ElementsMatch(t, []string{aliceID, daveID}, remote)
		for _, fed := range []*harness.Federation{fa, fb} {
			out, err := exec.Command(gxconfBin, "cluster", "status", "-url", fed.MetricsURL).CombinedOutput()
			require.NoError(t, err, "%s", out)
			require.Contains(t, string(out), "PEER", fed.Name)
			t.Logf("gxconf cluster status on %s:\n%s", fed.Name, out)
		}
		t.Logf("link fed-a -> fed-b: %d tracks, %.0f kbit/s, RTT %s, %d lost, %d resent", la.TracksOut, float64(la.BitrateOut)/1000, la.RTT, la.LostPackets, la.Retransmits)
		require.Equal(t, 2.0, scrapeMetric(t, fa.MetricsURL, "gxconf_bridge_peer_tracks", `peer="fed-b"`, `direction="out"`))
		require.Equal(t, 2.0, scrapeMetric(t, fb.MetricsURL, "gxconf_bridge_peer_tracks", `peer="fed-a"`, `direction="in"`))
		require.Equal(t, 1.0, scrapeMetric(t, fa.MetricsURL, "gxconf_bridge_peer_track_copies", `peer="fed-b"`), "one copy per track for 20 users")
	})

	t.Run("a kick on fed-a ends the user's session on fed-b's relay", func(t *testing.T) {
		require.NotNil(t, fbs)
		start := time.Now()
		_, err := alice.Client.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: subs[0].ID, Reason: "not on the list"})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			s := fbs.status().Sessions[0]
			return !s.Connected && s.Disconnects == 1
		}, 60*time.Second, 50*time.Millisecond, "the kicked user stays on fed-b's SFU")
		t.Logf("removal: kick on fed-a ended the user's session on fed-b's SFU after %s (reason %q)", time.Since(start), fbs.status().Sessions[0].Reason)
		require.Equal(t, string(lksdk.ParticipantRemoved), fbs.status().Sessions[0].Reason)
		_, err = lksdk.ConnectToRoomWithToken(ss[0].URL, ss[0].JWT, lksdk.NewRoomCallback())
		require.Error(t, err, "the kicked user's token still admits them on fed-b's SFU")
		for i, s := range fbs.status().Sessions[1:] {
			require.True(t, s.Connected, "session %d", i+1)
		}
	})

	t.Run("a vs-nfd room is not relayed through a peer not approved for it", func(t *testing.T) {
		// fed-a lets fed-b relay public and kritis rooms only.
		u := subs[1]
		created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "public_chat", Name: "VS-NfD", Invite: []id.UserID{fa.BotID},
			PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice.ID: 100, fa.BotID: 50}},
			InitialState: []*event.Event{{Type: event.StateEncryption, StateKey: ptr(""),
				Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
		})
		require.NoError(t, err)
		secret := created.RoomID
		beforeFirstRemoteJoin(t, alice, secret, fa.BotID)
		_, err = u.Client.JoinRoomByID(ctx, secret)
		require.NoError(t, err)
		_, err = alice.Client.SendStateEvent(ctx, secret, event.Type{Type: "de.gxconf.access", Class: event.StateEventType}, "", map[string]any{
			"level":                "vs-nfd",
			"allowed_homeservers":  []string{fa.ServerName, fb.ServerName},
			"need_to_know":         []string{u.ID.String()},
			"required_credentials": []any{map[string]any{"federation": "oev", "type": "VSNfDVerpflichtung"}},
		})
		require.NoError(t, err)
		waitForMessage(t, alice, secret, fa.BotID, "Access policy of this room: level vs-nfd")
		status, out := postJSON(t, fa.FocusURL+"/get_token", getTokenBody(secret, u, "sub-1", openID(t, u)))
		require.Equal(t, http.StatusForbidden, status, out)
		dm, body := waitForDirectMessage(t, u, fa.BotID, "openid4vp://")
		cred, err := wallet.Issue(map[string]any{"format": "ldp_vc", "issuer": "w3c", "type": "VSNfDVerpflichtung"})
		require.NoError(t, err)
		res, err := wallet.Present(openid4vpLink.FindString(body), cred, "ldp_vp", nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		waitForMessageIn(t, u, dm, fa.BotID, "is verified until")
		status, out = postJSON(t, fa.FocusURL+"/get_token", getTokenBody(secret, u, "sub-1", openID(t, u)))
		require.Equal(t, http.StatusOK, status, out)
		require.Equal(t, fa.SFUURL, out["url"], "a vs-nfd room stays on fed-a's approved site")
		g := verifyJWT(t, out["jwt"].(string), fa.SFUKey, fa.SFUSecret)
		require.False(t, sfu.IsPeerRoom(g.Video.Room))
		require.False(t, g.Video.GetCanPublish())
		// The public room still goes through the peer.
		status, out = postJSON(t, fa.FocusURL+"/get_token", getTokenBody(room, u, "sub-1b", openID(t, u)))
		require.Equal(t, http.StatusOK, status, out)
		require.Equal(t, fb.SFUURL, out["url"])
	})

	t.Run("the IX goes down and comes back: media returns without a rejoin", func(t *testing.T) {
		require.NotNil(t, fbs)
		// fed-b's side of the call: a fed-b user publishes on fed-b's own SFU
		// (with a token from fed-b's focus, as Element Call's members do)
		// and another watches there, in fed-b's namespace.
		purl, pjwt := token(t, fb, subs[1], "sub-1-own")
		require.Equal(t, fb.SFUURL, purl, "fed-b's focus places its own user on its own SFU")
		own := joinWithTokenUntil(t, t, purl, pjwt)
		ownPub, err := loadtest.StartPublisher(own.room, loadtest.PublishOptions{Audio: true, Video: true})
		require.NoError(t, err)
		t.Cleanup(ownPub.Stop)
		ownID := focus.LiveKitIdentity(subs[1].ID.String(), subs[1].Client.DeviceID.String(), "sub-1-own")
		wurl, wjwt := token(t, fb, subs[2], "sub-2-own")
		local := startPeerSubs(t, peersub, fb.Site, []peerSession{{wurl, wjwt}})
		local.requireMedia(t, ownID, 25, 60*time.Second)

		require.NoError(t, fb.SetIX(false))
		down := time.Now()
		// fed-b's relay notices (ICE consent fails within ~3 s): alice
		// leaves fed-b's room; frames stop.
		require.Eventually(t, func() bool {
			return scrapeMetric(t, fb.MetricsURL, "gxconf_bridge_peer_rooms", `peer="fed-a"`, `role="relay"`) == 0
		}, 30*time.Second, 100*time.Millisecond, "fed-b's relay did not notice the IX is down")
		t.Logf("IX down: fed-b's relay dropped the link after %s", time.Since(down))
		before := fbs.status()
		refBefore := ref.status().Sessions[0].Streams[aliceID+"/audio"].Frames
		localBefore := local.status().Sessions[0].Streams[ownID+"/audio"].Frames
		// Both sides carry on locally: dave still receives alice on fed-a,
		// fed-b's watcher still receives the fed-b publisher on fed-b's SFU;
		// fed-b's users stay connected to fed-b's SFU.
		ref.requireFramesAfter(t, aliceID, refBefore, 25, 10*time.Second)
		local.requireFramesAfter(t, ownID, localBefore, 25, 10*time.Second)
		require.NoError(t, fb.SetIX(true))
		up := time.Now()
		for i := 1; i < len(ss); i++ {
			fbs.requireFramesAfterSession(t, i, aliceID, before.Sessions[i].Streams[aliceID+"/audio"].Frames, 25, 60*time.Second)
		}
		t.Logf("IX up: alice's media reached all %d fed-b users again %s after the link came back (%s after it went down)",
			len(ss)-1, time.Since(up), time.Since(down))
		for i, s := range fbs.status().Sessions[1:] {
			require.True(t, s.Connected, "session %d", i+1)
			require.Zero(t, s.Disconnects, "session %d disconnected", i+1)
			require.Zero(t, s.Reconnecting, "session %d reconnected", i+1)
			for k, st := range s.Streams {
				require.Zero(t, st.Corrupt, "session %d: %s", i+1, k)
			}
		}
		ls := local.status().Sessions[0]
		require.True(t, ls.Connected, "fed-b's local watcher")
		require.Zero(t, ls.Disconnects+ls.Reconnecting, "fed-b's local call was interrupted by the IX")
		require.Zero(t, ls.Streams[ownID+"/video"].Corrupt)
	})

	// The scale figure of issue 10 (a manual measurement: several hundred
	// listeners are more than a test run should cost): GXTEST_PEER_SCALE
	// more fed-b users listen to alice's audio through fed-b's relay, their
	// clients in the root namespace.
	n, _ := strconv.Atoi(os.Getenv("GXTEST_PEER_SCALE"))
	if n <= 0 {
		return
	}
	t.Run("scale: listeners of fed-b through the peer relay", func(t *testing.T) {
		start := time.Now()
		listeners := make([]*harness.User, n)
		for i := range listeners {
			listeners[i] = register(t, fb.Stack, fmt.Sprintf("lis%03d", i))
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		sem := make(chan struct{}, 8)
		for i, u := range listeners {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				errs[i] = joinRetrying(ctx, u.Client, room)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "%s cannot join", listeners[i].ID)
		}
		require.Eventually(t, func() bool {
			m, err := faBot.JoinedMembers(ctx, room)
			return err == nil && len(m.Joined) == 3+len(subs)-1+n
		}, 5*time.Minute, 500*time.Millisecond, "fed-a does not see every listener joined")
		t.Logf("%d listeners registered and joined in %s", n, time.Since(start))
		start = time.Now()
		ls := make([]peerSession, n)
		for i, u := range listeners {
			ls[i].URL, ls[i].JWT = token(t, fa, u, fmt.Sprintf("lis-%d", i))
			require.Equal(t, fb.SFUURL, ls[i].URL)
		}
		t.Logf("%d peer tokens from fed-a's focus in %s", n, time.Since(start))
		start = time.Now()
		p := startPeerSubs(t, peersub, nil, ls, "-audio")
		p.requireMedia(t, aliceID, 25, 10*time.Minute)
		t.Logf("%d listeners receive alice's audio %s after their clients started", n, time.Since(start))
		b := ixBytes(t)
		t.Logf("scale: 1 speaker on fed-a, %d listeners (+%d watchers) on fed-b: %.0f kbit/s crossed the IX to fed-b",
			n, len(subs)-1, kbps(b, ixWindow))
	})
}

func kbps(b uint64, d time.Duration) float64 { return float64(b) * 8 / d.Seconds() / 1000 }

// buildPeerSub builds test/cmd/peersub (without the race detector: it is a
// client, not code under test).
func buildPeerSub(t *testing.T, dir string) string {
	t.Helper()
	root, err := harness.RepoRoot()
	require.NoError(t, err)
	out := filepath.Join(dir, "peersub")
	cmd := exec.Command("go", "build", "-o", out, "./test/cmd/peersub")
	cmd.Dir = root
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", b)
	return out
}

// peerSession is one session for peersub.
type peerSession struct {
	URL string `json:"url"`
	JWT string `json:"jwt"`
}

// peerSubStatus is a line of peersub's output.
type peerSubStatus struct {
	Joined     bool             `json:"joined"`
	JoinErrors map[int]string   `json:"join_errors"`
	Arrivals   map[uint32]int64 `json:"arrivals"`
	Sessions   []struct {
		Connected    bool   `json:"connected"`
		Disconnects  int64  `json:"disconnects"`
		Reason       string `json:"reason"`
		Reconnecting int64  `json:"reconnecting"`
		Reconnected  int64  `json:"reconnected"`
		Streams      map[string]struct {
			Frames  uint64 `json:"frames"`
			Corrupt uint64 `json:"corrupt"`
		} `json:"streams"`
	} `json:"sessions"`
}

// peerSubs is a running peersub.
type peerSubs struct {
	// audioOnly: the sessions subscribe to audio only (-audio).
	audioOnly bool
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	done      chan struct{}
	log       strings.Builder

	mu       sync.Mutex
	last     peerSubStatus
	arrivals map[uint32]int64
}

// startPeerSubs runs peersub in site's namespace (nil: the test's) with
// the sessions and args; it stops when t ends.
func startPeerSubs(t *testing.T, bin string, site *harness.Site, ss []peerSession, args ...string) *peerSubs {
	t.Helper()
	p := &peerSubs{done: make(chan struct{}), arrivals: map[uint32]int64{}, audioOnly: slices.Contains(args, "-audio")}
	if site != nil {
		p.cmd = site.Command(bin, args...)
	} else {
		p.cmd = exec.Command(bin, args...)
	}
	var err error
	p.stdin, err = p.cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := p.cmd.StdoutPipe()
	require.NoError(t, err)
	p.cmd.Stderr = &syncWriter{b: &p.log, mu: &p.mu}
	require.NoError(t, p.cmd.Start())
	raw, err := json.Marshal(ss)
	require.NoError(t, err)
	_, err = p.stdin.Write(append(raw, '\n'))
	require.NoError(t, err)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var st peerSubStatus
			if json.Unmarshal(sc.Bytes(), &st) != nil {
				continue
			}
			p.mu.Lock()
			p.last = st
			for k, v := range st.Arrivals {
				p.arrivals[k] = v
			}
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

type syncWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(b)
}

func (p *peerSubs) status() peerSubStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// stop closes peersub's input (it disconnects and exits) and waits.
func (p *peerSubs) stop(t *testing.T) {
	if p.stdin == nil {
		return
	}
	_ = p.stdin.Close()
	p.stdin = nil
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	_ = p.cmd.Wait()
}

// requireMedia waits until every session joined and received more than n
// intact audio and video (unless audio only) frames of identity, none
// corrupt.
func (p *peerSubs) requireMedia(t *testing.T, identity string, n uint64, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		st := p.status()
		if !st.Joined || len(st.JoinErrors) > 0 {
			return st.Joined
		}
		for _, s := range st.Sessions {
			if s.Streams[identity+"/audio"].Frames <= n || (!p.audioOnly && s.Streams[identity+"/video"].Frames <= n) {
				return false
			}
		}
		return true
	}, within, 100*time.Millisecond, "not every session receives %s: %+v\n%s", identity, p.status(), p.stderr())
	st := p.status()
	require.Empty(t, st.JoinErrors, "joins failed")
	for i, s := range st.Sessions {
		for k, v := range s.Streams {
			require.Zero(t, v.Corrupt, "session %d: %s arrives intact", i, k)
		}
	}
}

func (p *peerSubs) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// requireFramesAfter waits until session 0 received n more audio frames of
// identity than before.
func (p *peerSubs) requireFramesAfter(t *testing.T, identity string, before, n uint64, within time.Duration) {
	t.Helper()
	p.requireFramesAfterSession(t, 0, identity, before, n, within)
}

func (p *peerSubs) requireFramesAfterSession(t *testing.T, i int, identity string, before, n uint64, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		st := p.status()
		return len(st.Sessions) > i && st.Sessions[i].Streams[identity+"/audio"].Frames > before+n &&
			st.Sessions[i].Streams[identity+"/video"].Frames > 0
	}, within, 50*time.Millisecond, "session %d receives no more frames of %s", i, identity)
}

// latencyDelta compares when the same audio frames reached b's first
// session and a's: the median and 90th percentile of b - a.
func latencyDelta(a, b *peerSubs) string {
	a.mu.Lock()
	at := maps.Clone(a.arrivals)
	a.mu.Unlock()
	b.mu.Lock()
	bt := maps.Clone(b.arrivals)
	b.mu.Unlock()
	var d []time.Duration
	for seq, ta := range at {
		if tb, ok := bt[seq]; ok {
			d = append(d, time.Duration(tb-ta))
		}
	}
	if len(d) == 0 {
		return "no common frames"
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return fmt.Sprintf("median %s, p90 %s over %d frames", d[len(d)/2], d[len(d)*9/10], len(d))
}
