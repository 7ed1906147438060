package test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/test/credharness"
	"github.com/gxfs-conf/gxconf/test/harness"
)

var openid4vpLink = regexp.MustCompile(`openid4vp://\S+`)

// TestCredentialGateWithDendrite: a KRITIS room admits only members who
// presented a trusted credential from their wallet (an independent Node
// issuer/wallet built from npm libraries); revocation removes them again.
func TestCredentialGateWithDendrite(t *testing.T) {
	ctx := context.Background()
	tlsc, err := credharness.NewLoopbackTLS(t.TempDir())
	require.NoError(t, err)
	wallet, err := credharness.Start(tlsc, os.Stderr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = wallet.Close() })
	require.NoError(t, wallet.SetList(map[string]any{"name": "live", "issuer": "w3c", "kind": "bitstring", "revoked": []int{7}}))

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	s := startStack(t, harness.StackOptions{
		// gxconf trusts the harness's self-signed loopback certificate.
		Env: []string{"SSL_CERT_FILE=" + tlsc.CertFile},
		Config: map[string]any{
			"credentials": map[string]any{
				"federations": []any{map[string]any{
					"id":                 "oev",
					"homeserver_domains": []string{"localhost"},
					"trusted_issuers":    []any{map[string]any{"did": wallet.Info.Issuers["w3c"], "types": []string{"EmployeeCredential"}}},
				}},
				"at_rest_key":      base64.StdEncoding.EncodeToString(key),
				"did_resolution":   map[string]any{"allow_private_addresses_for_testing": true},
				"recheck_interval": "10s",
				"levels":           map[string]any{"kritis": map[string]any{"status_max_age": "1s"}},
			},
			"audit": map[string]any{"ship": "file", "file": auditFile},
		},
	})
	alice, bob, carol := register(t, s, "alice"), register(t, s, "bob"), register(t, s, "carol")

	// Alice's encrypted room, the bot invited; Bob and Carol join.
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Name: "KRITIS Lage", Invite: []id.UserID{bob.ID, carol.ID, s.BotID},
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}},
		// Bob moderates (50): enough to send state events, not to lower the level.
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice.ID: 100, bob.ID: 50, s.BotID: 50}},
	})
	require.NoError(t, err)
	room := created.RoomID
	for _, u := range []*harness.User{bob, carol} {
		_, err = u.Client.JoinRoomByID(ctx, room)
		require.NoError(t, err)
	}
	waitForMessage(t, alice, room, s.BotID, "!conf help")

	// The policy: KRITIS, an EmployeeCredential of federation oev, local users only.
	_, err = alice.Client.SendStateEvent(ctx, room, event.Type{Type: "de.gxconf.access", Class: event.StateEventType}, "", map[string]any{
		"level":                "kritis",
		"required_credentials": []any{map[string]any{"federation": "oev", "type": "EmployeeCredential"}},
		"allowed_homeservers":  []string{"localhost"},
	})
	require.NoError(t, err)
	waitForMessage(t, alice, room, s.BotID, "Access policy of this room: level kritis")

	t.Run("a member without credential is refused and gets the bot's request", func(t *testing.T) {
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, bob, "bob-1", openID(t, bob)))
		require.Equal(t, http.StatusForbidden, status, out)
		require.Equal(t, "M_FORBIDDEN", out["errcode"])
		require.Contains(t, out["error"], "missing credential EmployeeCredential from federation oev")
		require.Contains(t, out["error"], s.FocusURL+"/oid4vp/page/")
		require.Empty(t, sfuRooms(t, s), "no SFU room for a refused user")
	})

	var bobDM id.RoomID
	var bobCall *sdkClient
	var bobURL, bobJWT, bobUnused string // the tokens bob holds when his credential is revoked
	outer := t
	t.Run("after presenting a valid credential the member gets a token and joins", func(t *testing.T) {
		var body string
		bobDM, body = waitForDirectMessage(t, bob, s.BotID, "openid4vp://")
		link := openid4vpLink.FindString(body)
		require.NotEmpty(t, link, body)
		cred, err := wallet.Issue(map[string]any{"format": "ldp_vc", "issuer": "w3c", "type": "EmployeeCredential",
			"status": map[string]any{"list": "live", "index": 3}})
		require.NoError(t, err)
		res, err := wallet.Present(link, cred, "ldp_vp", nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.Status, res.Body)
		waitForMessageIn(t, bob, bobDM, s.BotID, "is verified until")

		before := time.Now()
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, bob, "bob-1", openID(t, bob)))
		require.Equal(t, http.StatusOK, status, out)
		grants := verifyJWT(t, out["jwt"].(string), s.SFUKey, s.SFUSecret)
		require.Equal(t, focus.LiveKitIdentity(bob.ID.String(), bob.Client.DeviceID.String(), "bob-1"), grants.Identity)
		exp := time.Unix(int64(unverifiedClaims(t, out["jwt"].(string))["exp"].(float64)), 0)
		require.True(t, exp.Before(before.Add(time.Hour+time.Minute)), "the token never outlives the KRITIS attestation (1 h)")
		bobCall = joinWithTokenUntil(t, outer, out["url"].(string), out["jwt"].(string))
		bobURL, bobJWT = out["url"].(string), out["jwt"].(string)
		// A second device's token, never used.
		status, out = postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, bob, "bob-2", openID(t, bob)))
		require.Equal(t, http.StatusOK, status, out)
		bobUnused = out["jwt"].(string)
	})

	t.Run("a revoked credential is refused", func(t *testing.T) {
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, carol, "carol-1", openID(t, carol)))
		require.Equal(t, http.StatusForbidden, status, out)
		_, body := waitForDirectMessage(t, carol, s.BotID, "openid4vp://")
		cred, err := wallet.Issue(map[string]any{"format": "ldp_vc", "issuer": "w3c", "type": "EmployeeCredential",
			"status": map[string]any{"list": "live", "index": 7}})
		require.NoError(t, err)
		res, err := wallet.Present(openid4vpLink.FindString(body), cred, "ldp_vp", nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusBadRequest, res.Status, res.Body)
		require.Contains(t, res.Body, "revoked")
		status, out = postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, carol, "carol-1", openID(t, carol)))
		require.Equal(t, http.StatusForbidden, status, out)
	})

	t.Run("revoking an active participant's credential removes them", func(t *testing.T) {
		require.NotNil(t, bobCall, "bob is in the call")
		require.NoError(t, wallet.SetList(map[string]any{"name": "live", "issuer": "w3c", "kind": "bitstring", "revoked": []int{3, 7}}))
		// The re-check loop (every 10 s here) finds the revocation and the
		// SFU ends bob's session.
		select {
		case r := <-bobCall.disconnected:
			require.Equal(t, lksdk.ParticipantRemoved, r)
		case <-time.After(60 * time.Second):
			t.Fatal("bob was not removed from the SFU after revocation")
		}
		waitForMessage(t, alice, room, s.BotID, bob.ID.String()+" was removed from the call")
		waitForMessageIn(t, bob, bobDM, s.BotID, "You were removed from the call")
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, bob, "bob-1", openID(t, bob)))
		require.Equal(t, http.StatusForbidden, status, out)
		// Neither the token he joined with nor the one he never used admits him.
		requireRefused(t, s, bobURL, bobJWT)
		requireRefused(t, s, bobURL, bobUnused)
	})

	t.Run("lowering the level needs the top power level", func(t *testing.T) {
		// Bob (power 50) may send state, but not lower the level: gxconf keeps
		// KRITIS in force, says so and puts the policy back.
		_, err := bob.Client.SendStateEvent(ctx, room, event.Type{Type: "de.gxconf.access", Class: event.StateEventType}, "", map[string]any{"level": "public"})
		require.NoError(t, err)
		waitForMessage(t, alice, room, s.BotID, "did not accept "+bob.ID.String())
		require.Eventually(t, func() bool {
			var content map[string]any
			err := alice.Client.StateEvent(ctx, room, event.Type{Type: "de.gxconf.access", Class: event.StateEventType}, "", &content)
			return err == nil && content["level"] == "kritis"
		}, 30*time.Second, 100*time.Millisecond, "the bot did not restore the policy")
		_, err = alice.Client.SendText(ctx, room, "!conf policy")
		require.NoError(t, err)
		waitForMessage(t, alice, room, s.BotID, "Access policy of this room: level kritis; credential EmployeeCredential from oev")
	})

	t.Run("the audit log is intact and complete", func(t *testing.T) {
		out, err := exec.Command(gxconfBin, "audit", "verify", "-c", s.ConfigPath, "-file", auditFile).CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "audit log intact")
		require.Contains(t, string(out), "every shipped entry is the database's row")
		// Admin actions: alice's policy change accepted, bob's refused;
		// access decisions with and without the credential.
		raw, err := os.ReadFile(auditFile)
		require.NoError(t, err)
		for _, want := range []string{
			`"decision":"policy_changed","user_id":"` + alice.ID.String(),
			`"decision":"policy_refused","user_id":"` + bob.ID.String(),
			`"decision":"deny"`, `"decision":"allow"`, `"decision":"verified"`,
		} {
			require.Contains(t, string(raw), want)
		}
	})
	require.NotContains(t, s.Gxconf.Log(), base64.StdEncoding.EncodeToString(key), "the at-rest key is never logged")
}

// sfuRooms lists the embedded SFU's rooms through its Twirp API.
func sfuRooms(t *testing.T, s *harness.Stack) []string {
	t.Helper()
	rooms, err := lksdk.NewRoomServiceClient(strings.Replace(s.SFUURL, "ws://", "http://", 1), s.SFUKey, s.SFUSecret).
		ListRooms(context.Background(), &livekit.ListRoomsRequest{})
	require.NoError(t, err)
	var names []string
	for _, r := range rooms.Rooms {
		names = append(names, r.Name)
	}
	return names
}

// waitForDirectMessage accepts the bot's direct-chat invite and waits for a
// message containing want; it returns the chat and the message body.
func waitForDirectMessage(t *testing.T, u *harness.User, bot id.UserID, want string) (id.RoomID, string) {
	t.Helper()
	ctx := context.Background()
	var dm id.RoomID
	require.Eventually(t, func() bool {
		resp, err := u.Client.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			return false
		}
		for roomID, inv := range resp.Rooms.Invite {
			for _, evt := range inv.State.Events {
				if evt.Type == event.StateMember && evt.Sender == bot {
					dm = roomID
				}
			}
		}
		for roomID := range resp.Rooms.Join {
			if members, err := u.Client.JoinedMembers(ctx, roomID); err == nil && len(members.Joined) == 2 {
				if _, ok := members.Joined[bot]; ok {
					if name, err := roomName(u, roomID); err == nil && name == "gxconf" {
						dm = roomID
					}
				}
			}
		}
		return dm != ""
	}, 30*time.Second, 100*time.Millisecond, "no direct chat from the bot")
	_, err := u.Client.JoinRoomByID(ctx, dm)
	require.NoError(t, err)
	return dm, waitForMessageIn(t, u, dm, bot, want)
}

func roomName(u *harness.User, roomID id.RoomID) (string, error) {
	var content struct {
		Name string `json:"name"`
	}
	err := u.Client.StateEvent(context.Background(), roomID, event.StateRoomName, "", &content)
	return content.Name, err
}

// waitForMessageIn is waitForMessage returning the body.
func waitForMessageIn(t *testing.T, u *harness.User, roomID id.RoomID, sender id.UserID, want string) string {
	t.Helper()
	body := waitForMessage(t, u, roomID, sender, want)
	require.True(t, strings.Contains(body, want))
	return body
}
