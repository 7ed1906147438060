package sfu_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

var errRevoked = errors.New("revoked")

// fakeGrants is a GrantChecker with revocable token IDs.
type fakeGrants struct {
	mu       sync.Mutex
	revoked  map[string]bool
	issued   map[string]time.Time // grant issue times to report
	notAfter time.Time
	checks   []string // token IDs asked about ("" for none)
	renewals atomic.Int32
}

func newFakeGrants() *fakeGrants {
	return &fakeGrants{revoked: map[string]bool{}, issued: map[string]time.Time{}}
}

func (f *fakeGrants) CheckGrant(_ context.Context, id, _, _ string, iat time.Time) (time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks = append(f.checks, id)
	if f.revoked[id] {
		return time.Time{}, errRevoked
	}
	if t, ok := f.issued[id]; ok {
		return t, nil
	}
	return iat, nil
}

func (f *fakeGrants) RenewGrant(_ context.Context, id, _, _ string, until time.Time) (time.Time, error) {
	f.renewals.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.revoked[id] {
		return time.Time{}, errRevoked
	}
	if !f.notAfter.IsZero() && f.notAfter.Before(until) {
		until = f.notAfter
	}
	return until, nil
}

func (f *fakeGrants) revoke(id string) {
	f.mu.Lock()
	f.revoked[id] = true
	f.mu.Unlock()
}

// mintTokenID is an access token with a JWT ID, as gxconf's focus issues.
func mintTokenID(t testing.TB, ts *testServer, room, identity, id string, iat time.Time) string {
	t.Helper()
	claims := jwt.MapClaims{
		"iss": ts.key, "sub": identity, "jti": id,
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": iat.Add(time.Hour).Unix(),
		"video": map[string]any{"roomJoin": true, "room": room, "canPublish": true, "canSubscribe": true},
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(ts.secret))
	require.NoError(t, err)
	return tok
}

func validateStatus(t *testing.T, ts *testServer, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, httpURL(ts)+"/rtc/validate", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// dialStatus opens /rtc with token and query and returns the HTTP status
// (101 for an accepted upgrade).
func dialStatus(t *testing.T, ts *testServer, token, query string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	ws, res, err := websocket.Dial(ctx, ts.url+"/rtc?protocol=16&sdk=go"+query, &websocket.DialOptions{HTTPHeader: h})
	if err == nil {
		ws.CloseNow()
		return http.StatusSwitchingProtocols
	}
	require.NotNil(t, res, "dial failed without an HTTP answer: %v", err)
	return res.StatusCode
}

// A removal is final for every token issued before it, also one from the
// same second (JWT times are whole seconds) and also for an identity that
// was not connected at the time of the removal.
func TestRemovalRefusesSameSecondTokens(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	ctx := context.Background()
	rs := ts.srv.RoomService()
	_, err := rs.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "ss"})
	require.NoError(t, err)

	c := ts.join(t, "ss", "mallory", nil)
	before := time.Now()
	_, err = rs.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "ss", Identity: "mallory"})
	require.NoError(t, err)
	c.close()
	sameSecond := mintToken(t, ts, "ss", "mallory", before)
	require.Equal(t, http.StatusForbidden, validateStatus(t, ts, sameSecond), "a token of the removal's second may predate it")
	require.Equal(t, http.StatusForbidden, dialStatus(t, ts, sameSecond, ""))
	require.Equal(t, http.StatusForbidden, dialStatus(t, ts, sameSecond, "&reconnect=1&sid=PA_x"), "nor can it reconnect")

	// Not connected: the removal answers not_found and still holds.
	unused := mintToken(t, ts, "ss", "trudy", time.Now().Add(-time.Minute))
	_, err = rs.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "ss", Identity: "trudy"})
	requireTwirpCode(t, err, "not_found")
	require.Equal(t, http.StatusForbidden, validateStatus(t, ts, unused))
	require.Equal(t, http.StatusForbidden, dialStatus(t, ts, unused, ""))

	require.Equal(t, http.StatusOK, validateStatus(t, ts, mintToken(t, ts, "ss", "trudy", time.Now().Add(2*time.Second))), "a later token admits")
}

// With a GrantChecker every join, validation and reconnect asks it; a
// revoked token is refused everywhere, other tokens are unaffected. A grant
// issued after an in-memory removal (to the millisecond) admits even in the
// removal's second.
func TestGrantCheckerRefusesRevokedTokens(t *testing.T) {
	verifyNoLeaks(t)
	grants := newFakeGrants()
	ts := startServerWith(t, nil, func(s *sfu.Server) { s.SetGrantChecker(grants) })
	now := time.Now()
	old := mintTokenID(t, ts, "gc", "alice", "jti-old", now)
	other := mintTokenID(t, ts, "gc", "bob", "jti-bob", now)
	require.Equal(t, http.StatusOK, validateStatus(t, ts, old))
	require.Equal(t, http.StatusSwitchingProtocols, dialStatus(t, ts, old, ""))

	grants.revoke("jti-old")
	require.Equal(t, http.StatusForbidden, validateStatus(t, ts, old))
	require.Equal(t, http.StatusForbidden, dialStatus(t, ts, old, ""), "join")
	require.Equal(t, http.StatusForbidden, dialStatus(t, ts, old, "&reconnect=1&sid=PA_x"), "reconnect")
	// (server-sdk-go's failed join is covered end-to-end in test/; its
	// goroutines may outlive the call under load and trip the leak check.)
	require.Equal(t, http.StatusOK, validateStatus(t, ts, other))

	// A token without ID is checked too (per identity).
	require.Equal(t, http.StatusOK, validateStatus(t, ts, ts.token(t, "gc", "carol", nil)))
	grants.mu.Lock()
	require.Contains(t, grants.checks, "")
	grants.mu.Unlock()

	// RemoveParticipant of bob, then a new grant for bob in the same second:
	// its millisecond issue time is after the removal, so it admits.
	_, err := ts.srv.RoomService().RemoveParticipant(context.Background(), &livekit.RoomParticipantIdentity{Room: "gc", Identity: "bob"})
	requireTwirpCode(t, err, "not_found")
	require.Equal(t, http.StatusForbidden, validateStatus(t, ts, other), "bob's grant predates the removal")
	fresh := mintTokenID(t, ts, "gc", "bob", "jti-bob-2", time.Now())
	grants.mu.Lock()
	grants.issued["jti-bob-2"] = time.Now()
	grants.mu.Unlock()
	require.Equal(t, http.StatusOK, validateStatus(t, ts, fresh))
}

// refresh_token keeps the token's ID, never outlives the grant, and stops
// once the grant is revoked.
func TestRefreshStopsAfterRevocation(t *testing.T) {
	verifyNoLeaks(t)
	grants := newFakeGrants()
	grants.notAfter = time.Now().Add(10 * time.Minute)
	ts := startServerWith(t, func(c *sfu.Config) { c.TokenRefreshInterval = time.Second }, func(s *sfu.Server) { s.SetGrantChecker(grants) })
	tok := mintTokenID(t, ts, "rf", "rita", "jti-rita", time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	ws, _, err := websocket.Dial(ctx, ts.url+"/rtc?protocol=16&sdk=go", &websocket.DialOptions{HTTPHeader: h})
	require.NoError(t, err)
	defer ws.CloseNow()
	require.NotNil(t, readSignal(t, ws).GetJoin())

	refreshes := make(chan string, 64)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			res := &livekit.SignalResponse{}
			if err := proto.Unmarshal(data, res); err == nil && res.GetRefreshToken() != "" {
				refreshes <- res.GetRefreshToken()
			}
		}
	}()
	var refreshed string
	select {
	case refreshed = <-refreshes:
	case <-time.After(10 * time.Second):
		t.Fatal("no refresh_token")
	}
	v, err := auth.ParseAPIToken(refreshed)
	require.NoError(t, err)
	claims, g, err := v.Verify(ts.secret)
	require.NoError(t, err)
	require.Equal(t, "jti-rita", claims.ID, "the refreshed token keeps the grant's ID")
	require.Equal(t, "rita", g.Identity)
	require.Equal(t, "rf", g.Video.Room)
	require.LessOrEqual(t, claims.ExpiresAt.Unix(), grants.notAfter.Unix(), "never beyond the grant's end")

	grants.revoke("jti-rita")
	// Two more rounds: a refresh allowed just before the revocation has
	// arrived by then.
	after := grants.renewals.Load()
	require.Eventually(t, func() bool { return grants.renewals.Load() >= after+2 }, 10*time.Second, 20*time.Millisecond)
	for len(refreshes) > 0 {
		<-refreshes
	}
	after = grants.renewals.Load()
	require.Eventually(t, func() bool { return grants.renewals.Load() >= after+2 }, 10*time.Second, 20*time.Millisecond)
	require.Empty(t, refreshes, "no refresh_token after the revocation")
	ws.CloseNow()
	<-readDone
}
