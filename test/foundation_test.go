package test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/test/harness"
)

const (
	lkKey    = "gxconf-test"
	lkSecret = "a-test-secret-generated-for-this-run-0123456789"
)

// TestFoundationWithDendrite runs gxconf in front of a (fake) stock LiveKit
// server, registered as an appservice with a real Dendrite, and walks through
// what a homeserver admin and Element Call users see — once on SQLite, once on
// PostgreSQL, through the same code.
func TestFoundationWithDendrite(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testFoundation(t, nil) })
	t.Run("postgres", func(t *testing.T) {
		pg, err := harness.StartPostgres(context.Background())
		require.NoError(t, err)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("postgres log:\n%s", pg.Log())
			}
			pg.Stop()
		})
		testFoundation(t, map[string]any{"type": "postgres", "uri": pg.URI})
	})
}

func testFoundation(t *testing.T, database map[string]any) {
	ctx := context.Background()
	lk := newFakeLiveKit(t, lkKey, lkSecret)
	cfg := map[string]any{
		"focus": map[string]any{
			"sfu": map[string]any{"url": lk.srv.URL, "api_key": lkKey, "api_secret": lkSecret},
		},
	}
	if database != nil {
		cfg["database"] = database
	}
	s := startStack(t, harness.StackOptions{OpenIDTokenLifetime: 5 * time.Second, Config: cfg})
	alice, bob, carol := register(t, s, "alice"), register(t, s, "bob"), register(t, s, "carol")

	// Alice opens a room and invites Bob and the bot; the bot joins by itself.
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Name: "Lagebesprechung", Invite: []id.UserID{bob.ID, s.BotID},
	})
	require.NoError(t, err)
	room := created.RoomID
	require.Eventually(t, func() bool {
		members, err := alice.Client.JoinedMembers(ctx, room)
		if err != nil {
			return false
		}
		_, joined := members.Joined[s.BotID]
		return joined
	}, 30*time.Second, 100*time.Millisecond, "bot did not accept the invite")
	waitForMessage(t, alice, room, s.BotID, "!conf help")

	_, err = bob.Client.JoinRoomByID(ctx, room)
	require.NoError(t, err)
	// The appservice received Bob's join through a transaction and stored it.
	require.Eventually(t, func() bool { return storeMembership(t, s, room, bob.ID) == "join" },
		30*time.Second, 50*time.Millisecond, "appservice did not record bob's join")

	t.Run("member gets a token from /get_token", func(t *testing.T) {
		before := time.Now()
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, bob, "bob-member-1", openID(t, bob)))
		require.Equal(t, http.StatusOK, status, out)
		require.Equal(t, lk.srv.URL, out["url"])
		grants := verifyJWT(t, out["jwt"].(string), lkKey, lkSecret)
		require.Equal(t, focus.LiveKitIdentity(bob.ID.String(), bob.Client.DeviceID.String(), "bob-member-1"), grants.Identity)
		require.Equal(t, focus.LiveKitRoomAlias(room.String(), "m.call#ROOM"), grants.Video.Room)
		require.True(t, grants.Video.RoomJoin)
		require.True(t, grants.Video.GetCanPublish(), "local users publish")
		require.True(t, grants.Video.GetCanSubscribe())
		claims := unverifiedClaims(t, out["jwt"].(string))
		exp := time.Unix(int64(claims["exp"].(float64)), 0)
		require.WithinDuration(t, before.Add(15*time.Minute), exp, 10*time.Second)

		rooms := lk.createdRooms()
		require.NotEmpty(t, rooms)
		require.Equal(t, grants.Video.Room, rooms[len(rooms)-1].Name)
		require.EqualValues(t, 300, rooms[len(rooms)-1].EmptyTimeout)
		require.EqualValues(t, 20, rooms[len(rooms)-1].DepartureTimeout)
	})

	t.Run("member gets a token from legacy /sfu/get", func(t *testing.T) {
		status, out := postJSON(t, s.FocusURL+"/sfu/get", map[string]any{
			"room": room, "device_id": bob.Client.DeviceID, "openid_token": openID(t, bob),
		})
		require.Equal(t, http.StatusOK, status, out)
		grants := verifyJWT(t, out["jwt"].(string), lkKey, lkSecret)
		require.Equal(t, bob.ID.String()+":"+bob.Client.DeviceID.String(), grants.Identity)
		require.Equal(t, focus.LiveKitRoomAlias(room.String(), "m.call#ROOM"), grants.Video.Room)
	})

	t.Run("non-member is refused with 403", func(t *testing.T) {
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, carol, "carol-1", openID(t, carol)))
		require.Equal(t, http.StatusForbidden, status, out)
		require.Equal(t, "M_FORBIDDEN", out["errcode"])
	})

	t.Run("forged OpenID token is refused with 401", func(t *testing.T) {
		forged := openID(t, bob)
		forged["access_token"] = "forged" + forged["access_token"].(string)
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, bob, "bob-member-1", forged))
		require.Equal(t, http.StatusUnauthorized, status, out)
		require.Equal(t, "M_UNAUTHORIZED", out["errcode"])
	})

	t.Run("OpenID token of another user is refused with 401", func(t *testing.T) {
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, bob, "bob-member-1", openID(t, carol)))
		require.Equal(t, http.StatusUnauthorized, status, out)
		require.Equal(t, "M_UNAUTHORIZED", out["errcode"])
	})

	t.Run("expired OpenID token is refused with 401", func(t *testing.T) {
		tok := openID(t, bob)
		// Wait until Dendrite itself no longer knows the token (it lives 5 s here).
		require.Eventually(t, func() bool {
			resp, err := http.Get(s.Dendrite.URL + "/_matrix/federation/v1/openid/userinfo?access_token=" + tok["access_token"].(string))
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusUnauthorized
		}, 30*time.Second, 250*time.Millisecond)
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, bob, "bob-member-1", tok))
		require.Equal(t, http.StatusUnauthorized, status, out)
		require.Equal(t, "M_UNAUTHORIZED", out["errcode"])
	})

	t.Run("malformed requests are refused with 400", func(t *testing.T) {
		status, out := postJSON(t, s.FocusURL+"/get_token", `{"room_id": "!x:localhost",`)
		require.Equal(t, http.StatusBadRequest, status, out)
		require.Equal(t, "M_NOT_JSON", out["errcode"])
		status, out = postJSON(t, s.FocusURL+"/get_token", map[string]any{"room_id": room})
		require.Equal(t, http.StatusBadRequest, status, out)
		require.Equal(t, "M_BAD_JSON", out["errcode"])
	})

	t.Run("bot answers help and shows call members", func(t *testing.T) {
		_, err := alice.Client.SendText(ctx, room, "!conf help")
		require.NoError(t, err)
		waitForMessage(t, alice, room, s.BotID, "gxconf bot commands")

		// Alice announces a call membership the way matrix-js-sdk does in legacy mode.
		stateKey := "_" + alice.ID.String() + "_" + alice.Client.DeviceID.String() + "_m.call"
		_, err = alice.Client.SendStateEvent(ctx, room, event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}, stateKey, map[string]any{
			"application": "m.call", "call_id": "", "device_id": alice.Client.DeviceID, "scope": "m.room",
			"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
			"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": s.FocusURL, "livekit_alias": room}},
			"expires":        14400000,
		})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			_, err := alice.Client.SendText(ctx, room, "!conf status")
			require.NoError(t, err)
			resp, err := alice.Client.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 5)
			if err != nil {
				return false
			}
			for _, evt := range resp.Chunk {
				if body, _ := evt.Content.Raw["body"].(string); evt.Sender == s.BotID && containsAll(body, "1 device(s) in a call", alice.ID.String(), "device "+alice.Client.DeviceID.String()) {
					return true
				}
			}
			return false
		}, 30*time.Second, time.Second, "!conf status never listed alice's call membership")
	})

	t.Run("leaving the room removes the user's participants", func(t *testing.T) {
		identity := focus.LiveKitIdentity(bob.ID.String(), bob.Client.DeviceID.String(), "bob-member-1")
		legacy := bob.ID.String() + ":" + bob.Client.DeviceID.String()
		alias := focus.LiveKitRoomAlias(room.String(), "m.call#ROOM")
		_, err := bob.Client.LeaveRoom(ctx, room)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			removed := lk.removedIdentities()
			return containsAllStrings(removed, alias+"/"+identity, alias+"/"+legacy)
		}, 30*time.Second, 50*time.Millisecond, "RemoveParticipant not called for bob: %v", lk.removedIdentities())
		require.NotContains(t, lk.removedIdentities(), alias+"/"+focus.LiveKitIdentity(alice.ID.String(), alice.Client.DeviceID.String(), "x"))

		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, bob, "bob-member-1", openID(t, bob)))
		require.Equal(t, http.StatusForbidden, status, out)
	})

	t.Run("rooms without the bot are policed through the rooms namespace", func(t *testing.T) {
		other, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{carol.ID}})
		require.NoError(t, err)
		_, err = carol.Client.JoinRoomByID(ctx, other.RoomID)
		require.NoError(t, err)
		// Asking at once, as Element Call does after joining by link: the bot
		// cannot ask the homeserver about a room it is not in, so the focus
		// waits for the join to arrive through the rooms namespace.
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(other.RoomID, carol, "carol-1", openID(t, carol)))
		require.Equal(t, http.StatusOK, status, out)
		require.Equal(t, "join", storeMembership(t, s, other.RoomID, carol.ID))
		_, err = alice.Client.KickUser(ctx, other.RoomID, &mautrix.ReqKickUser{UserID: carol.ID, Reason: "test"})
		require.NoError(t, err)
		want := focus.LiveKitRoomAlias(other.RoomID.String(), "m.call#ROOM") + "/" + focus.LiveKitIdentity(carol.ID.String(), carol.Client.DeviceID.String(), "carol-1")
		require.Eventually(t, func() bool { return containsAllStrings(lk.removedIdentities(), want) },
			30*time.Second, 50*time.Millisecond, "kicked user not removed")
	})

	t.Run("metrics are served on their own listener only", func(t *testing.T) {
		resp, err := http.Get(s.FocusURL + "/metrics")
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusNotFound, resp.StatusCode, "not on the public focus listener")
		resp, err = http.Get(s.MetricsURL + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		body := readAll(t, resp)
		for _, want := range []string{
			`gxconf_focus_requests_total{endpoint="get_token",outcome="ok"}`,
			`gxconf_focus_requests_total{endpoint="get_token",outcome="M_FORBIDDEN"}`,
			`gxconf_focus_openid_lookup_seconds_bucket`,
			`gxconf_appservice_transactions_total{result="ok"}`,
			`gxconf_appservice_events_total{type="m.room.member"}`,
			`gxconf_focus_participants_removed_total{result="removed"}`,
		} {
			require.Contains(t, body, want)
		}
	})

	require.NotContains(t, s.Gxconf.Log(), lkSecret, "secrets never logged")
}

// verifyJWT checks a LiveKit token's signature with key/secret and returns its grants.
func verifyJWT(t *testing.T, jwt, key, secret string) *auth.ClaimGrants {
	t.Helper()
	v, err := auth.ParseAPIToken(jwt)
	require.NoError(t, err)
	require.Equal(t, key, v.APIKey())
	_, grants, err := v.Verify(secret)
	require.NoError(t, err)
	return grants
}
