package test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twitchtv/twirp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// Calls from a real browser: gxconf's call page (web/, matrix-js-sdk +
// livekit-client, doing what Element Call does) in headless Chromium, against
// Dendrite, gxconf's focus and appservice, and the SFU (see browserTestSFU).
// The page is served by gxconf itself at /selftest/, which proves the
// operator self-test page too.

const (
	// joinTimeout covers login, sync, discovery, tokens, ICE and the first frames.
	joinTimeout  = 60 * time.Second
	mediaTimeout = 45 * time.Second
)

// createCallRoom has owner create a private room that the members join, as
// people are in a room before they call in it; it returns once gxconf's
// appservice has seen every join (the focus admits members it knows of).
func createCallRoom(t *testing.T, s *harness.Stack, owner *harness.User, encrypted bool, members ...*harness.User) id.RoomID {
	t.Helper()
	ctx := context.Background()
	var invite []id.UserID
	for _, m := range members {
		invite = append(invite, m.ID)
	}
	req := &mautrix.ReqCreateRoom{
		Preset: "private_chat", Name: "Videokonferenz", Invite: invite,
		// Members may announce themselves in the call, as in rooms that Element
		// creates with calls enabled (state events otherwise need level 50).
		PowerLevelOverride: &event.PowerLevelsEventContent{Events: map[string]int{
			"m.room.name": 50, "m.room.avatar": 50, "m.room.canonical_alias": 50, "m.room.topic": 50,
			"m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.encryption": 100,
			"m.room.tombstone": 100, "m.room.server_acl": 100,
			"org.matrix.msc3401.call.member": 0, "org.matrix.msc4143.rtc.slot": 100,
		}},
	}
	if encrypted {
		req.InitialState = []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}}
	}
	created, err := owner.Client.CreateRoom(ctx, req)
	require.NoError(t, err)
	for _, m := range members {
		_, err := m.Client.JoinRoomByID(ctx, created.RoomID)
		require.NoError(t, err)
	}
	for _, u := range append([]*harness.User{owner}, members...) {
		require.Eventually(t, func() bool { return storeMembership(t, s, created.RoomID, u.ID) == "join" },
			30*time.Second, 50*time.Millisecond, "appservice did not record %s's join", u.ID)
	}
	return created.RoomID
}

// callMembers reads the call memberships gxconf's appservice stored from the
// membership events it received (kind, user, device, focus URL).
func callMembers(t *testing.T, s *harness.Stack, room id.RoomID) []string {
	t.Helper()
	db, err := sql.Open(s.DBDriver, s.DBURI)
	require.NoError(t, err)
	defer db.Close()
	rows, err := db.Query("SELECT kind, user_id, device_id, focus_url FROM as_call_member WHERE room_id=$1 ORDER BY user_id", room)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var kind, user, device, focusURL string
		require.NoError(t, rows.Scan(&kind, &user, &device, &focusURL))
		out = append(out, fmt.Sprintf("%s %s %s %s", kind, user, device, focusURL))
	}
	require.NoError(t, rows.Err())
	return out
}

// remoteHas is a JavaScript condition: identity is in the call with a
// subscribed camera video and microphone audio track.
func remoteHas(identity string) string {
	return fmt.Sprintf(`(() => { const r = s.remote[%s]; if (!r) return false;
		const ts = Object.values(r.tracks);
		return ts.some(t => t.kind === "video" && t.source === "camera" && t.subscribed) &&
		       ts.some(t => t.kind === "audio" && t.source === "microphone" && t.subscribed); })()`, js(identity))
}

// videoOf and audioOf are JavaScript expressions for identity's inbound stats.
func videoOf(identity string) string {
	return fmt.Sprintf(`st.find(x => x.identity === %s && x.kind === "video" && x.source === "camera")`, js(identity))
}

func audioOf(identity string) string {
	return fmt.Sprintf(`st.find(x => x.identity === %s && x.kind === "audio")`, js(identity))
}

// requireMediaFlows proves that viewer decodes identity's video in a visible
// element and receives its audio, and that both keep flowing.
func requireMediaFlows(t *testing.T, viewer *participant, identity string) {
	t.Helper()
	v, a := videoOf(identity), audioOf(identity)
	first := viewer.awaitStats(t, fmt.Sprintf(`(v => v && v.framesDecoded > 0 && v.elementWidth > 0 && v.elementHeight > 0 && v.videoWidth > 0 && v.videoHeight > 0)(%s) &&
		(a => a && a.bytesReceived > 0)(%s)`, v, a), mediaTimeout)
	fv, fa := findStats(first, identity, "video"), findStats(first, identity, "audio")
	// Rising, not merely non-zero: a second of video later, more frames and bytes.
	later := viewer.awaitStats(t, fmt.Sprintf(`(v => v && v.framesDecoded >= %d)(%s) && (a => a && a.bytesReceived > %d)(%s)`,
		fv.FramesDecoded+25, v, fa.BytesReceived, a), mediaTimeout)
	lv := findStats(later, identity, "video")
	t.Logf("%s receives %s: %d→%d frames decoded at %dx%d, audio %d→%d bytes", viewer.name, identity,
		fv.FramesDecoded, lv.FramesDecoded, lv.FrameWidth, lv.FrameHeight, fa.BytesReceived, findStats(later, identity, "audio").BytesReceived)
}

func findStats(st []inbound, identity, kind string) inbound {
	for _, s := range st {
		if s.Identity == identity && s.Kind == kind {
			return s
		}
	}
	return inbound{}
}

func TestBrowserCall(t *testing.T) {
	start := time.Now()
	e := startBrowserEnv(t)
	s := e.stack
	alice, bob, carol := register(t, s, "alice"), register(t, s, "bob"), register(t, s, "carol")
	room := createCallRoom(t, s, alice, false, bob)
	lkRoom := focus.LiveKitRoomAlias(room.String(), "m.call#ROOM")

	// Alice finds the focus through .well-known (her page is opened with
	// parameters), Bob through rtc/transports (he logs in through the page's
	// form, as an operator does); both get their token from /get_token
	// (Element Call's body).
	a := e.join("alice", alice, room, callOptions{Discovery: "well-known"})
	b := e.joinViaForm(t, "bob", bob, room)
	as := a.await(t, `s.phase === "in-call"`, joinTimeout)
	bs := b.await(t, `s.phase === "in-call"`, joinTimeout)
	aliceID, bobID := as.SFU.Identity, bs.SFU.Identity

	t.Run("discovery and tokens as Element Call does them", func(t *testing.T) {
		require.Equal(t, "well-known", as.Focus.Via)
		require.Equal(t, "rtc/transports", bs.Focus.Via)
		require.Equal(t, s.FocusURL, as.Focus.ServiceURL)
		require.Equal(t, s.FocusURL, bs.Focus.ServiceURL)
		for _, st := range []pageState{as, bs} {
			require.Equal(t, []tokenAttempt{{Endpoint: "get_token", Status: 200}}, st.TokenAttempts)
			require.Equal(t, lkRoom, st.SFU.LKRoom)
			require.Equal(t, focus.LiveKitIdentity(st.UserID, st.DeviceID, st.MemberID), st.SFU.Identity,
				"the identity in the JWT is lk-jwt-service's hash of user, device and member ID")
			require.Equal(t, 1, st.SFUConnectAttempts)
		}
	})

	t.Run("each receives the other's video and audio", func(t *testing.T) {
		a.await(t, remoteHas(bobID), mediaTimeout)
		b.await(t, remoteHas(aliceID), mediaTimeout)
		requireMediaFlows(t, a, bobID)
		requireMediaFlows(t, b, aliceID)
		t.Logf("media flows both ways %s after the test started", time.Since(start).Round(time.Millisecond))
		a.screenshot(t, "browser-call-alice.png")
		b.screenshot(t, "browser-call-bob.png")
	})

	t.Run("membership is announced the way matrix-js-sdk does", func(t *testing.T) {
		want := []string{alice.ID.String() + "|" + as.DeviceID, bob.ID.String() + "|" + bs.DeviceID}
		a.await(t, fmt.Sprintf(`[%s, %s].every(m => s.rtcMembers.includes(m))`, js(want[0]), js(want[1])), mediaTimeout)
		// gxconf's appservice received both call.member state events.
		require.Eventually(t, func() bool {
			return len(callMembers(t, s, room)) == 2
		}, 30*time.Second, 100*time.Millisecond, "appservice call members: %v", callMembers(t, s, room))
		require.Equal(t, []string{
			fmt.Sprintf("msc3401 %s %s %s", alice.ID, as.DeviceID, s.FocusURL),
			fmt.Sprintf("msc3401 %s %s %s", bob.ID, bs.DeviceID, s.FocusURL),
		}, callMembers(t, s, room))
	})

	t.Run("simulcast: bob asks for a small video and receives a lower layer", func(t *testing.T) {
		v := videoOf(aliceID)
		big := b.awaitStats(t, fmt.Sprintf(`(v => v && v.frameHeight >= %d)(%s)`, captureHeight*3/4, v), mediaTimeout)
		before := findStats(big, aliceID, "video")
		// Element Call shows a small tile; livekit-client's adaptive stream asks the SFU for a layer that fits.
		b.do(t, fmt.Sprintf("requestVideoSize(%s, 160, 90)", js(aliceID)))
		small := b.awaitStats(t, fmt.Sprintf(`(v => v && v.frameHeight > 0 && v.frameHeight <= %d && v.elementHeight <= 90)(%s)`, captureHeight/2, v), mediaTimeout)
		after := findStats(small, aliceID, "video")
		require.Less(t, after.FrameHeight, before.FrameHeight)
		t.Logf("bob receives alice at %dx%d, then %dx%d after asking for 160x90", before.FrameWidth, before.FrameHeight, after.FrameWidth, after.FrameHeight)
		// And back up when the tile grows again.
		b.do(t, fmt.Sprintf("requestVideoSize(%s, 480, 270)", js(aliceID)))
		b.awaitStats(t, fmt.Sprintf(`(v => v && v.frameHeight >= %d)(%s)`, captureHeight*3/4, v), mediaTimeout)
	})

	t.Run("a data message from alice reaches bob", func(t *testing.T) {
		msg := "Guten Tag from alice " + time.Now().Format(time.RFC3339Nano)
		a.do(t, fmt.Sprintf("sendData(%s)", js(msg)))
		st := b.await(t, fmt.Sprintf(`s.dataMessages.some(m => m.text === %s && m.from === %s)`, js(msg), js(aliceID)), mediaTimeout)
		require.Equal(t, "gxconf-test", st.DataMessages[len(st.DataMessages)-1].Topic)
	})

	t.Run("carol, not in the room, is refused and never reaches the SFU", func(t *testing.T) {
		c := e.join("carol", carol, room, callOptions{Probe: true})
		st := c.await(t, `s.phase === "failed" || s.phase === "in-call"`, joinTimeout)
		require.Equal(t, "failed", st.Phase, "carol got into the call: %+v", st)
		require.Equal(t, []tokenAttempt{
			{Endpoint: "get_token", Status: 403, Errcode: "M_FORBIDDEN"},
			{Endpoint: "sfu_get", Status: 403, Errcode: "M_FORBIDDEN"},
		}, st.TokenAttempts)
		require.Nil(t, st.SFU)
		require.Zero(t, st.SFUConnectAttempts)
		require.NotEmpty(t, st.Errors)
		if e.sfu.URL != "" {
			require.ElementsMatch(t, []string{aliceID, bobID}, e.sfu.participants(t, lkRoom))
		}
	})

	t.Run("alice's subscription permission: bob is told he may not, loses her tracks, and gets them back", func(t *testing.T) {
		tracksOf := func(cond string) string {
			return fmt.Sprintf(`(() => { const r = s.remote[%s]; if (!r) return false; const ts = Object.values(r.tracks);
				return ts.length >= 2 && ts.every(t => %s); })()`, js(aliceID), cond)
		}
		a.do(t, "setSubscribers([])")
		b.await(t, tracksOf("!t.allowed && !t.subscribed"), mediaTimeout)
		a.do(t, fmt.Sprintf("setSubscribers([%s])", js(bobID)))
		b.await(t, tracksOf("t.allowed && t.subscribed"), mediaTimeout)
		requireMediaFlows(t, b, aliceID)
		a.do(t, "setSubscribers(null)")
		require.Empty(t, a.state(t).Errors)
	})

	t.Run("the operator calls alice's client (RoomService.PerformRpc)", func(t *testing.T) {
		got, err := e.sfu.performRpc(t, lkRoom, aliceID, "gxconf.echo", "Guten Tag")
		require.NoError(t, err)
		require.Equal(t, "echo from "+alice.ID.String()+": Guten Tag", got)
		_, err = e.sfu.performRpc(t, lkRoom, aliceID, "no.such.method", "")
		var te twirp.Error
		require.ErrorAs(t, err, &te)
		require.Equal(t, twirp.InvalidArgument, te.Code(), "livekit-client answers an unknown method with UNSUPPORTED_METHOD: %v", err)
		require.Contains(t, te.Msg(), "RpcError 1400")
	})

	t.Run("alice's text streams reach bob (data streams v2)", func(t *testing.T) {
		requireTextStreams(t, a, b, aliceID)
	})

	t.Run("bob calls alice's client with a 20 kB payload (RPC over data streams)", func(t *testing.T) {
		requireLargeRpc(t, b, aliceID, alice.ID.String())
	})

	t.Run("alice publishes a data track, bob subscribes to it and receives its frames", func(t *testing.T) {
		requireDataTrackFlows(t, a, b, aliceID, "gxconf.position")
	})

	t.Run("bob mutes his camera and alice sees it", func(t *testing.T) {
		b.do(t, "setCamera(false)")
		a.await(t, fmt.Sprintf(`Object.values(s.remote[%s].tracks).some(t => t.source === "camera" && t.muted)`, js(bobID)), mediaTimeout)
		b.do(t, "setCamera(true)")
		a.await(t, fmt.Sprintf(`Object.values(s.remote[%s].tracks).some(t => t.source === "camera" && !t.muted)`, js(bobID)), mediaTimeout)
	})

	t.Run("bob leaves and alice sees him go", func(t *testing.T) {
		b.do(t, "leave()")
		st := a.await(t, fmt.Sprintf(`s.departed.includes(%s) && !(%s in s.remote) && s.rtcMembers.length === 1`, js(bobID), js(bobID)), mediaTimeout)
		require.Equal(t, []string{alice.ID.String() + "|" + as.DeviceID}, st.RTCMembers)
		require.Eventually(t, func() bool { return len(callMembers(t, s, room)) == 1 },
			30*time.Second, 100*time.Millisecond, "appservice still lists bob's call membership: %v", callMembers(t, s, room))
		if e.sfu.URL != "" {
			require.Equal(t, []string{aliceID}, e.sfu.participants(t, lkRoom))
		}
	})

	for _, p := range []*participant{a, b} {
		require.Empty(t, p.state(t).Errors, "%s's page reported errors", p.name)
	}
	t.Logf("browser call scenarios took %s", time.Since(start).Round(time.Millisecond))
}

// TestBrowserCallE2EE is the same call with per-member end-to-end encrypted
// media: matrix-js-sdk exchanges the keys as Olm-encrypted to-device
// messages, livekit-client's E2EE worker encrypts and decrypts the frames,
// and the SFU forwards them untouched. The membership is a legacy
// call.member state event (Dendrite has no sticky events), whose LiveKit
// identity is "@user:DEVICE": the keys are bound to that identity, so the
// token comes from /sfu/get as in Element Call's legacy mode.
func TestBrowserCallE2EE(t *testing.T) {
	start := time.Now()
	e := startBrowserEnv(t)
	s := e.stack
	alice, bob := register(t, s, "alice"), register(t, s, "bob")
	room := createCallRoom(t, s, alice, true, bob)

	a := e.join("alice", alice, room, callOptions{E2EE: true, JWT: "legacy"})
	b := e.join("bob", bob, room, callOptions{E2EE: true, JWT: "legacy"})
	// e2eeActive: livekit-client's E2EE worker encrypts what we publish.
	as := a.await(t, `s.phase === "in-call" && s.e2eeActive`, joinTimeout)
	bs := b.await(t, `s.phase === "in-call" && s.e2eeActive`, joinTimeout)
	aliceID, bobID := as.SFU.Identity, bs.SFU.Identity
	require.Equal(t, alice.ID.String()+":"+as.DeviceID, aliceID)
	require.Equal(t, bob.ID.String()+":"+bs.DeviceID, bobID)
	for _, st := range []pageState{as, bs} {
		require.Equal(t, []tokenAttempt{{Endpoint: "sfu_get", Status: 200}}, st.TokenAttempts)
	}

	t.Run("media keys travel through the MatrixRTC session", func(t *testing.T) {
		// Each has its own key and the other's, bound to the LiveKit identities.
		a.await(t, fmt.Sprintf(`[%s, %s].every(id => s.mediaKeys.includes(id))`, js(aliceID), js(bobID)), mediaTimeout)
		b.await(t, fmt.Sprintf(`[%s, %s].every(id => s.mediaKeys.includes(id))`, js(aliceID), js(bobID)), mediaTimeout)
	})

	t.Run("both decode each other's encrypted video", func(t *testing.T) {
		for _, pair := range []struct {
			viewer *participant
			other  string
		}{{a, bobID}, {b, aliceID}} {
			st := pair.viewer.await(t, remoteHas(pair.other)+fmt.Sprintf(` && Object.values(s.remote[%s].tracks).every(t => t.encrypted)`, js(pair.other)), mediaTimeout)
			require.NotEmpty(t, st.Remote[pair.other].Tracks)
			requireMediaFlows(t, pair.viewer, pair.other)
		}
		a.screenshot(t, "browser-call-e2ee-alice.png")
		b.screenshot(t, "browser-call-e2ee-bob.png")
	})

	for _, p := range []*participant{a, b} {
		require.Empty(t, p.state(t).Errors, "%s's page reported errors", p.name)
	}
	t.Logf("E2EE browser call took %s", time.Since(start).Round(time.Millisecond))
}
