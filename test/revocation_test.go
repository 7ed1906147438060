package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/test/credharness"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// sfuStatus asks the embedded SFU's /rtc/validate about a token.
func sfuStatus(t *testing.T, s *harness.Stack, jwt string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, strings.Replace(s.SFUURL, "ws://", "http://", 1)+"/rtc/validate", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+jwt)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// sfuDial opens the signal WebSocket as a reconnecting client does and
// returns the HTTP status (101 once upgraded).
func sfuDial(t *testing.T, s *harness.Stack, jwt, query string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+jwt)
	ws, res, err := websocket.Dial(ctx, s.SFUURL+"/rtc?protocol=16&sdk=go"+query, &websocket.DialOptions{HTTPHeader: h})
	if err == nil {
		ws.CloseNow()
		return http.StatusSwitchingProtocols
	}
	require.NotNil(t, res, "no HTTP answer: %v", err)
	return res.StatusCode
}

// requireRefused checks that a token no longer admits anywhere: validate,
// join with server-sdk-go, reconnect.
func requireRefused(t *testing.T, s *harness.Stack, url, jwt string) {
	t.Helper()
	require.Equal(t, http.StatusForbidden, sfuStatus(t, s, jwt), "validate")
	require.Equal(t, http.StatusForbidden, sfuDial(t, s, jwt, "&reconnect=1&sid=PA_old"), "reconnect")
	room, err := lksdk.ConnectToRoomWithToken(url, jwt, lksdk.NewRoomCallback())
	if err == nil {
		room.Disconnect()
	}
	require.Error(t, err, "join with server-sdk-go")
}

// TestRemovalIsFinal: no token issued before a leave, kick or ban admits
// its holder afterwards — connected at the time or not, issued in the same
// second, refreshed by the SFU, or presented after a restart of gxconf.
func TestRemovalIsFinal(t *testing.T) {
	ctx := context.Background()
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	s := startStack(t, harness.StackOptions{Config: map[string]any{
		"sfu":   map[string]any{"token_refresh_interval": "1s"},
		"audit": map[string]any{"ship": "file", "file": auditFile},
	}})
	alice := register(t, s, "alice")
	names := []string{"bob", "carol", "dave", "erin", "frank", "gina"}
	users := map[string]*harness.User{}
	invite := []id.UserID{}
	for _, n := range names {
		users[n] = register(t, s, n)
		invite = append(invite, users[n].ID)
	}
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: invite})
	require.NoError(t, err)
	room := created.RoomID
	for _, n := range names {
		_, err := users[n].Client.JoinRoomByID(ctx, room)
		require.NoError(t, err)
	}
	token := func(t *testing.T, u *harness.User, member string) (string, string) {
		t.Helper()
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, u, member, openID(t, u)))
		require.Equal(t, http.StatusOK, status, out)
		return out["url"].(string), out["jwt"].(string)
	}
	waitRefused := func(t *testing.T, jwt string) {
		t.Helper()
		require.Eventually(t, func() bool { return sfuStatus(t, s, jwt) == http.StatusForbidden },
			30*time.Second, 50*time.Millisecond, "the token still admits after the removal")
	}

	t.Run("leave: a token never used is refused", func(t *testing.T) {
		bob := users["bob"]
		url, jwt := token(t, bob, "bob-1")
		require.Equal(t, http.StatusOK, sfuStatus(t, s, jwt))
		_, err := bob.Client.LeaveRoom(ctx, room)
		require.NoError(t, err)
		waitRefused(t, jwt)
		requireRefused(t, s, url, jwt)
	})

	t.Run("kick: the connected participant is removed and cannot reconnect", func(t *testing.T) {
		carol := users["carol"]
		url, jwt := token(t, carol, "carol-1")
		_, unused := token(t, carol, "carol-2")
		c := joinWithToken(t, url, jwt)
		_, err := alice.Client.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: carol.ID, Reason: "test"})
		require.NoError(t, err)
		select {
		case r := <-c.disconnected:
			require.Equal(t, lksdk.ParticipantRemoved, r)
		case <-time.After(30 * time.Second):
			t.Fatal("carol was not removed from the SFU")
		}
		requireRefused(t, s, url, jwt)
		requireRefused(t, s, url, unused)
	})

	t.Run("ban: a token never used is refused", func(t *testing.T) {
		dave := users["dave"]
		url, jwt := token(t, dave, "dave-1")
		_, err := alice.Client.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: dave.ID, Reason: "test"})
		require.NoError(t, err)
		waitRefused(t, jwt)
		requireRefused(t, s, url, jwt)
	})

	t.Run("tokens fetched every few hundred ms up to the ban are all refused", func(t *testing.T) {
		// The last of them is issued in the second of the ban, or between the
		// homeserver accepting it and gxconf processing it.
		erin := users["erin"]
		var mu sync.Mutex
		var jwts []string
		stop := make(chan struct{})
		done := make(chan struct{})
		openid := openID(t, erin)
		go func() {
			defer close(done)
			raw, _ := json.Marshal(getTokenBody(room, erin, "erin-1", openid))
			for {
				resp, err := http.Post(s.FocusURL+"/get_token", "application/json", bytes.NewReader(raw))
				if err != nil {
					return
				}
				var out struct{ JWT string }
				_ = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return // refused: the ban has been processed
				}
				mu.Lock()
				jwts = append(jwts, out.JWT)
				mu.Unlock()
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond): // the client's pace, not a wait for the server
				}
			}
		}()
		require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(jwts) >= 3 }, 30*time.Second, 20*time.Millisecond)
		_, err := alice.Client.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: erin.ID, Reason: "test"})
		require.NoError(t, err)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			close(stop)
			<-done
			t.Fatal("erin kept getting tokens after the ban")
		}
		mu.Lock()
		defer mu.Unlock()
		last := jwts[len(jwts)-1]
		waitRefused(t, last)
		for i, jwt := range jwts {
			require.Equal(t, http.StatusForbidden, sfuStatus(t, s, jwt), "token %d of %d", i+1, len(jwts))
		}
		requireRefused(t, s, s.SFUURL, last)
	})

	t.Run("a refreshed token stops working with the removal", func(t *testing.T) {
		frank := users["frank"]
		_, jwt := token(t, frank, "frank-1")
		wsCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		h := http.Header{}
		h.Set("Authorization", "Bearer "+jwt)
		ws, _, err := websocket.Dial(wsCtx, s.SFUURL+"/rtc?protocol=16&sdk=go&auto_subscribe=0", &websocket.DialOptions{HTTPHeader: h})
		require.NoError(t, err)
		defer ws.CloseNow()
		var refreshed string
		for refreshed == "" {
			_, data, err := ws.Read(wsCtx)
			require.NoError(t, err, "no refresh_token before the connection ended")
			res := &livekit.SignalResponse{}
			require.NoError(t, proto.Unmarshal(data, res))
			refreshed = res.GetRefreshToken()
		}
		require.Equal(t, unverifiedClaims(t, jwt)["jti"], unverifiedClaims(t, refreshed)["jti"], "the refreshed token keeps the grant's ID")
		require.Equal(t, http.StatusOK, sfuStatus(t, s, refreshed))
		_, err = frank.Client.LeaveRoom(ctx, room)
		require.NoError(t, err)
		waitRefused(t, refreshed)
		requireRefused(t, s, s.SFUURL, refreshed)
		requireRefused(t, s, s.SFUURL, jwt)
	})

	t.Run("revocations survive a restart", func(t *testing.T) {
		gina := users["gina"]
		url, jwt := token(t, gina, "gina-1")
		_, err := gina.Client.LeaveRoom(ctx, room)
		require.NoError(t, err)
		waitRefused(t, jwt)
		require.NoError(t, s.Gxconf.Stop())
		startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		p, err := harness.StartGxconf(startCtx, gxconfBin, s.ConfigPath, s.RegistrationPath,
			filepath.Join(t.TempDir(), "gxconf-restarted.log"), s.FocusURL+"/healthz")
		require.NoError(t, err)
		s.Gxconf = p
		requireRefused(t, s, url, jwt)
		// A member's token still works after the restart.
		aURL, aJWT := token(t, alice, "alice-1")
		require.Equal(t, http.StatusOK, sfuStatus(t, s, aJWT))
		joinWithToken(t, aURL, aJWT)
	})

	t.Run("the audit log records the decisions and removals, shipped and verifiable", func(t *testing.T) {
		// Removals are appended by the appservice's job after the SFU
		// removal; wait for gina's (the last) to be shipped.
		var raw []byte
		require.Eventually(t, func() bool {
			raw, _ = os.ReadFile(auditFile)
			return bytes.Contains(raw, []byte(`"decision":"remove","user_id":"`+users["gina"].ID.String()))
		}, 60*time.Second, 100*time.Millisecond, "gina's removal is not in the shipped audit log")
		text := string(raw)
		for _, want := range []string{
			`"decision":"allow","user_id":"` + alice.ID.String(),
			`"decision":"remove","user_id":"` + users["bob"].ID.String() + `","room_id":"` + room.String(),
			"left the room",
			`"decision":"remove","user_id":"` + users["carol"].ID.String(),
			"removed from the room; 1 participant(s) removed",
			"banned from the room",
		} {
			require.Contains(t, text, want)
		}
		out, err := exec.Command(gxconfBin, "audit", "verify", "-c", s.ConfigPath, "-file", auditFile).CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "every shipped entry is the database's row")
	})
}

// TestCredentialExpiryIsFinal: when a member's attestation expires, neither
// the token they are connected with nor one they never used admits them any
// more — although LiveKit accepts a token up to a minute past its expiry —
// and their session ends.
func TestCredentialExpiryIsFinal(t *testing.T) {
	ctx := context.Background()
	tlsc, err := credharness.NewLoopbackTLS(t.TempDir())
	require.NoError(t, err)
	wallet, err := credharness.Start(tlsc, os.Stderr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = wallet.Close() })
	require.NoError(t, wallet.SetList(map[string]any{"name": "live", "issuer": "w3c", "kind": "bitstring", "revoked": []int{}}))
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	s := startStack(t, harness.StackOptions{
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
				"levels":           map[string]any{"public": map[string]any{"attestation_ttl": "8s"}},
			},
		},
	})
	alice, bob := register(t, s, "alice"), register(t, s, "bob")
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.ID, s.BotID}})
	require.NoError(t, err)
	room := created.RoomID
	_, err = bob.Client.JoinRoomByID(ctx, room)
	require.NoError(t, err)
	waitForMessage(t, alice, room, s.BotID, "!conf help")
	_, err = alice.Client.SendStateEvent(ctx, room, event.Type{Type: "de.gxconf.access", Class: event.StateEventType}, "", map[string]any{
		"level":                "public",
		"required_credentials": []any{map[string]any{"federation": "oev", "type": "EmployeeCredential"}},
	})
	require.NoError(t, err)
	waitForMessage(t, alice, room, s.BotID, "Access policy of this room: level public")

	status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, bob, "bob-1", openID(t, bob)))
	require.Equal(t, http.StatusForbidden, status, out)
	dm, body := waitForDirectMessage(t, bob, s.BotID, "openid4vp://")
	cred, err := wallet.Issue(map[string]any{"format": "ldp_vc", "issuer": "w3c", "type": "EmployeeCredential",
		"status": map[string]any{"list": "live", "index": 3}})
	require.NoError(t, err)
	res, err := wallet.Present(openid4vpLink.FindString(body), cred, "ldp_vp", nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.Status, res.Body)
	waitForMessageIn(t, bob, dm, s.BotID, "is verified until")

	status, out = postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, bob, "bob-1", openID(t, bob)))
	require.Equal(t, http.StatusOK, status, out)
	url, used := out["url"].(string), out["jwt"].(string)
	status, out = postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, bob, "bob-2", openID(t, bob)))
	require.Equal(t, http.StatusOK, status, out)
	unused := out["jwt"].(string)
	require.Equal(t, http.StatusOK, sfuStatus(t, s, unused))
	call := joinWithToken(t, url, used)

	// The tokens end with the attestation; LiveKit's verification allows a
	// minute of leeway past exp, the grant check none.
	require.Eventually(t, func() bool { return sfuStatus(t, s, unused) == http.StatusForbidden },
		30*time.Second, 100*time.Millisecond, "the token still admits after the attestation expired")
	exp := time.Unix(int64(unverifiedClaims(t, unused)["exp"].(float64)), 0)
	require.True(t, time.Now().Before(exp.Add(time.Minute)), "refused within LiveKit's leeway")
	requireRefused(t, s, url, unused)
	requireRefused(t, s, url, used)
	select {
	case r := <-call.disconnected:
		require.Equal(t, lksdk.ParticipantRemoved, r)
	case <-time.After(60 * time.Second):
		t.Fatal("bob's session did not end after his attestation expired")
	}
}
