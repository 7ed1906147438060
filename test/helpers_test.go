package test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/lib/pq"
	_ "github.com/mattn/go-sqlite3"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/test/harness"
)

// startStack runs Dendrite + gxconf for one test and prints gxconf's and
// Dendrite's logs if the test fails.
func startStack(t *testing.T, opts harness.StackOptions) *harness.Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts.Bin = gxconfBin
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := harness.StartStack(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		err := s.Stop()
		if t.Failed() || os.Getenv("TEST_SHOW_LOGS") != "" {
			t.Logf("gxconf log:\n%s", tail(s.Gxconf.Log(), 20000))
			t.Logf("dendrite log:\n%s", s.Dendrite.Log())
		}
		require.NoError(t, err, "gxconf must exit cleanly on SIGTERM")
	})
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func register(t *testing.T, s *harness.Stack, name string) *harness.User {
	t.Helper()
	u, err := s.Dendrite.RegisterUser(context.Background(), name, name+"-password", false)
	require.NoError(t, err)
	return u
}

// openID gets a Matrix OpenID token as Element Call does.
func openID(t *testing.T, u *harness.User) map[string]any {
	t.Helper()
	resp, err := u.Client.RequestOpenIDToken(context.Background())
	require.NoError(t, err)
	return map[string]any{
		"access_token":       resp.AccessToken,
		"token_type":         resp.TokenType,
		"matrix_server_name": resp.MatrixServerName,
		"expires_in":         resp.ExpiresIn,
	}
}

// getTokenBody is Element Call's /get_token body.
func getTokenBody(roomID id.RoomID, u *harness.User, memberID string, openid map[string]any) map[string]any {
	return map[string]any{
		"room_id":      roomID,
		"slot_id":      "m.call#ROOM",
		"openid_token": openid,
		"member": map[string]any{
			"id":                memberID,
			"claimed_user_id":   u.ID,
			"claimed_device_id": u.Client.DeviceID,
		},
	}
}

// postJSON posts body (a string is sent verbatim) and decodes the JSON answer.
func postJSON(t *testing.T, url string, body any) (int, map[string]any) {
	t.Helper()
	var raw []byte
	if s, ok := body.(string); ok {
		raw = []byte(s)
	} else {
		var err error
		raw, err = json.Marshal(body)
		require.NoError(t, err)
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(raw))
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	if len(data) > 0 {
		require.NoError(t, json.Unmarshal(data, &out), "answer is JSON: %s", data)
	}
	return resp.StatusCode, out
}

// waitForMessage waits until a message from sender whose body contains want
// appears in the room, as seen by u.
func waitForMessage(t *testing.T, u *harness.User, roomID id.RoomID, sender id.UserID, want string) string {
	t.Helper()
	var found string
	require.Eventually(t, func() bool {
		resp, err := u.Client.Messages(context.Background(), roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			return false
		}
		for _, evt := range resp.Chunk {
			if evt.Sender != sender || evt.Type != event.EventMessage {
				continue
			}
			if body, _ := evt.Content.Raw["body"].(string); strings.Contains(body, want) {
				found = body
				return true
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond, "no message from %s containing %q", sender, want)
	return found
}

// storeMembership reads gxconf's state store directly.
func storeMembership(t *testing.T, s *harness.Stack, roomID id.RoomID, userID id.UserID) string {
	t.Helper()
	db, err := sql.Open(s.DBDriver, s.DBURI)
	require.NoError(t, err)
	defer db.Close()
	var membership string
	err = db.QueryRow("SELECT membership FROM mx_user_profile WHERE room_id=$1 AND user_id=$2", roomID, userID).Scan(&membership)
	if err == sql.ErrNoRows {
		return ""
	}
	require.NoError(t, err)
	return membership
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func containsAllStrings(list []string, want ...string) bool {
	have := map[string]bool{}
	for _, s := range list {
		have[s] = true
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}

// unverifiedClaims decodes a JWT payload without checking it, as clients do.
func unverifiedClaims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	require.Len(t, parts, 3)
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var claims map[string]any
	require.NoError(t, json.Unmarshal(raw, &claims))
	return claims
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
