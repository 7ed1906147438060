package test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/test/harness"
)

// TestBrowserMeetingCall: two invitees accept the bot's invites to a
// scheduled meeting and join its call from the room the bot created, in
// headless Chromium (gxconf's call page: matrix-js-sdk + livekit-client).
func TestBrowserMeetingCall(t *testing.T) {
	e := startBrowserEnv(t)
	s := e.stack
	alice, bob, carol := register(t, s, "alice"), register(t, s, "bob"), register(t, s, "carol")
	status, out := api(t, s, "POST", "meeting/create", "Bearer "+alice.Client.AccessToken, map[string]any{
		"title": "Lagebesprechung", "start": time.Now().Add(time.Hour).In(mustZone(t, "Europe/Berlin")).Format("2006-01-02T15:04"),
		"invite": []string{bob.ID.String(), carol.ID.String()},
	})
	require.Equal(t, 201, status, out)
	room := id.RoomID(out["room_id"].(string))
	for _, u := range []*harness.User{bob, carol} {
		require.Contains(t, inviteReason(t, u, room), "📅 Lagebesprechung")
		_, err := u.Client.JoinRoomByID(context.Background(), room)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return storeMembership(t, s, room, u.ID) == "join" },
			30*time.Second, 50*time.Millisecond, "appservice did not record %s's join", u.ID)
	}

	b := e.join("bob", bob, room, callOptions{})
	c := e.join("carol", carol, room, callOptions{})
	bs := b.await(t, `s.phase === "in-call"`, joinTimeout)
	cs := c.await(t, `s.phase === "in-call"`, joinTimeout)
	b.await(t, remoteHas(cs.SFU.Identity), mediaTimeout)
	c.await(t, remoteHas(bs.SFU.Identity), mediaTimeout)
	requireMediaFlows(t, b, cs.SFU.Identity)
	requireMediaFlows(t, c, bs.SFU.Identity)
	require.Eventually(t, func() bool { return len(callMembers(t, s, room)) == 2 }, 30*time.Second, 100*time.Millisecond,
		"both announced their call membership in the meeting room (power level 0 for call.member)")
}
