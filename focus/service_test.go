package focus

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twitchtv/twirp"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"
)

const (
	testKey    = "testkey"
	testSecret = "test-secret-that-is-long-enough-0123456789"
)

// fakeHomeserver answers federation userinfo for known tokens.
type fakeHomeserver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	tokens  map[string]string
	lookups atomic.Int32
}

func newFakeHomeserver(t *testing.T) *fakeHomeserver {
	hs := &fakeHomeserver{tokens: map[string]string{}}
	hs.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/federation/v1/openid/userinfo" {
			http.NotFound(w, r)
			return
		}
		hs.lookups.Add(1)
		hs.mu.Lock()
		sub, ok := hs.tokens[r.URL.Query().Get("access_token")]
		hs.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN_TOKEN","error":"Access Token unknown or expired"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"sub": sub})
	}))
	t.Cleanup(hs.srv.Close)
	return hs
}

func (hs *fakeHomeserver) issue(token, user string) {
	hs.mu.Lock()
	hs.tokens[token] = user
	hs.mu.Unlock()
}

// fakeRooms records RoomService calls.
type fakeRooms struct {
	mu       sync.Mutex
	created  []*livekit.CreateRoomRequest
	removed  []*livekit.RoomParticipantIdentity
	absent   map[string]bool     // identities to answer NotFound for
	present  map[string][]string // room → identities listed
	createFn func() error
	getErr   error // GetParticipant fails with it
	lookups  int   // GetParticipant calls
}

func (f *fakeRooms) CreateRoom(_ context.Context, req *livekit.CreateRoomRequest) (*livekit.Room, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.createFn != nil {
		if err := f.createFn(); err != nil {
			return nil, err
		}
	}
	f.created = append(f.created, req)
	return &livekit.Room{Name: req.Name}, nil
}

func (f *fakeRooms) ListParticipants(_ context.Context, req *livekit.ListParticipantsRequest) (*livekit.ListParticipantsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*livekit.ParticipantInfo
	for _, id := range f.present[req.Room] {
		out = append(out, &livekit.ParticipantInfo{Identity: id})
	}
	return &livekit.ListParticipantsResponse{Participants: out}, nil
}

func (f *fakeRooms) GetParticipant(_ context.Context, req *livekit.RoomParticipantIdentity) (*livekit.ParticipantInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	if f.getErr != nil {
		return nil, f.getErr
	}
	for _, id := range f.present[req.Room] {
		if id == req.Identity {
			return &livekit.ParticipantInfo{Identity: id, State: livekit.ParticipantInfo_ACTIVE}, nil
		}
	}
	return nil, twirp.NotFoundError("participant not found")
}

// setPresent puts identity into lkRoom (or takes it out).
func (f *fakeRooms) setPresent(lkRoom, identity string, present bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.present == nil {
		f.present = map[string][]string{}
	}
	ids := slices.DeleteFunc(f.present[lkRoom], func(s string) bool { return s == identity })
	if present {
		ids = append(ids, identity)
	}
	f.present[lkRoom] = ids
}

func (f *fakeRooms) RemoveParticipant(_ context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.absent[req.Identity] {
		return nil, twirp.NotFoundError("participant not found")
	}
	f.removed = append(f.removed, req)
	return &livekit.RemoveParticipantResponse{}, nil
}

// fakeMembers says who is joined where.
type fakeMembers map[string]bool

func (m fakeMembers) IsJoined(_ context.Context, roomID, userID string) (bool, error) {
	return m[roomID+"|"+userID], nil
}

type harness struct {
	svc   *Service
	hs    *fakeHomeserver
	rooms *fakeRooms
	reg   *prometheus.Registry
	srv   *httptest.Server
}

func newHarness(t *testing.T, mutate func(*Config)) *harness {
	t.Helper()
	return newHarnessOpts(t, mutate, nil)
}

// newHarnessOpts is newHarness with opts changing the service's options.
func newHarnessOpts(t *testing.T, mutate func(*Config), opts func(*Options)) *harness {
	t.Helper()
	hs := newFakeHomeserver(t)
	cfg := DefaultConfig()
	cfg.SFU = SFUConfig{URL: "wss://sfu.test", APIKey: testKey, APISecret: testSecret}
	cfg.OpenID.ServerOverrides = map[string]string{"local.test": hs.srv.URL, "remote.test": hs.srv.URL}
	cfg.RateLimit.PerIP = RateConfig{}
	cfg.RateLimit.PerUser = RateConfig{}
	if mutate != nil {
		mutate(&cfg)
	}
	db, err := dbutil.NewWithDialect("file:"+t.TempDir()+"/focus.db?_txlock=immediate", "sqlite3-fk-wal")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	rooms := &fakeRooms{absent: map[string]bool{}}
	reg := prometheus.NewRegistry()
	o := Options{
		Config:      cfg,
		LocalDomain: "local.test",
		DB:          db,
		Rooms:       rooms,
		Members: fakeMembers{
			"!room:local.test|@alice:local.test": true,
			"!room:local.test|@rita:remote.test": true,
		},
		Log:        zerolog.New(zerolog.NewTestWriter(t)),
		Registerer: reg,
	}
	if opts != nil {
		opts(&o)
	}
	svc, err := New(context.Background(), o)
	require.NoError(t, err)
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return &harness{svc: svc, hs: hs, rooms: rooms, reg: reg, srv: srv}
}

func (h *harness) post(t *testing.T, path string, body any) (*http.Response, map[string]any) {
	t.Helper()
	var raw []byte
	switch b := body.(type) {
	case string:
		raw = []byte(b)
	default:
		var err error
		raw, err = json.Marshal(b)
		require.NoError(t, err)
	}
	resp, err := http.Post(h.srv.URL+path, "application/json", bytes.NewReader(raw))
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp, out
}

func tokenBody(token, server, user string) map[string]any {
	return map[string]any{
		"room_id": "!room:local.test",
		"slot_id": "m.call#ROOM",
		"openid_token": map[string]any{
			"access_token": token, "token_type": "Bearer", "matrix_server_name": server, "expires_in": 3600,
		},
		"member": map[string]any{"id": "member1", "claimed_user_id": user, "claimed_device_id": "DEV1"},
	}
}

func decodeJWT(t *testing.T, jwt string) *auth.ClaimGrants {
	t.Helper()
	v, err := auth.ParseAPIToken(jwt)
	require.NoError(t, err)
	require.Equal(t, testKey, v.APIKey())
	_, grants, err := v.Verify(testSecret)
	require.NoError(t, err)
	return grants
}

func TestGetTokenIssuesLiveKitToken(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	body := tokenBody("tok-alice", "local.test", "@alice:local.test")
	body["some_future_field"] = map[string]any{"x": 1} // unknown fields are accepted
	before := time.Now()
	resp, out := h.post(t, "/get_token", body)
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Equal(t, "*", resp.Header.Get("Access-Control-Allow-Origin"))
	require.Equal(t, "wss://sfu.test", out["url"])

	grants := decodeJWT(t, out["jwt"].(string))
	wantRoom := LiveKitRoomAlias("!room:local.test", "m.call#ROOM")
	wantID := LiveKitIdentity("@alice:local.test", "DEV1", "member1")
	require.Equal(t, wantID, grants.Identity)
	require.Equal(t, wantRoom, grants.Video.Room)
	require.True(t, grants.Video.RoomJoin)
	require.False(t, grants.Video.RoomCreate)
	require.True(t, grants.Video.GetCanPublish())
	require.True(t, grants.Video.GetCanSubscribe())
	require.True(t, grants.Video.GetCanUpdateOwnMetadata())

	claims := jwtClaims(t, out["jwt"].(string))
	exp := time.Unix(int64(claims["exp"].(float64)), 0)
	require.WithinDuration(t, before.Add(15*time.Minute), exp, 5*time.Second)
	require.Equal(t, wantID, claims["sub"])

	require.Len(t, h.rooms.created, 1)
	require.Equal(t, wantRoom, h.rooms.created[0].Name)
	require.EqualValues(t, 300, h.rooms.created[0].EmptyTimeout)
	require.EqualValues(t, 20, h.rooms.created[0].DepartureTimeout)
	require.Equal(t, 1.0, testutil.ToFloat64(h.svc.metrics.requests.WithLabelValues("get_token", "ok")))
}

// jwtClaims reads the payload without verification, as Element Call does.
func jwtClaims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	require.Len(t, parts, 3)
	raw, err := decodeSegment(parts[1])
	require.NoError(t, err)
	var claims map[string]any
	require.NoError(t, json.Unmarshal(raw, &claims))
	return claims
}

func TestSFUGetUsesLegacyIdentity(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	resp, out := h.post(t, "/sfu/get", map[string]any{
		"room":         "!room:local.test",
		"device_id":    "DEV1",
		"openid_token": map[string]any{"access_token": "tok-alice", "matrix_server_name": "local.test"},
	})
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	grants := decodeJWT(t, out["jwt"].(string))
	require.Equal(t, "@alice:local.test:DEV1", grants.Identity)
	require.Equal(t, LiveKitRoomAlias("!room:local.test", LegacySlotID), grants.Video.Room, "same room as /get_token with m.call#ROOM")
}

// The legacy identity "<user_id>:<device_id>" joins two strings that may
// both hold colons: @alice:local.test with device 8448:DEV1 must not get the
// identity of @alice:local.test:8448 with device DEV1 (a duplicate identity
// drops the other participant from the LiveKit room and takes their place).
func TestSFUGetLegacyIdentityCannotCollide(t *testing.T) {
	h := newHarnessOpts(t, func(c *Config) {
		c.FullAccessHomeservers = []string{"local.test:8448"}
	}, func(o *Options) {
		o.Config.OpenID.ServerOverrides["local.test:8448"] = o.Config.OpenID.ServerOverrides["local.test"]
		o.Members = fakeMembers{
			"!room:local.test|@alice:local.test":      true,
			"!room:local.test|@alice:local.test:8448": true,
		}
	})
	h.hs.issue("tok-alice", "@alice:local.test")
	h.hs.issue("tok-victim", "@alice:local.test:8448")
	legacy := func(token, server, device string) (*http.Response, map[string]any) {
		return h.post(t, "/sfu/get", map[string]any{
			"room": "!room:local.test", "device_id": device,
			"openid_token": map[string]any{"access_token": token, "matrix_server_name": server},
		})
	}
	resp, out := legacy("tok-victim", "local.test:8448", "DEV1")
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Equal(t, "@alice:local.test:8448:DEV1", decodeJWT(t, out["jwt"].(string)).Identity)

	resp, out = legacy("tok-alice", "local.test", "8448:DEV1")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, out)
	require.Equal(t, "M_BAD_JSON", out["errcode"])
	require.Contains(t, out["error"], "`device_id`")
	require.Nil(t, out["jwt"])
}

func TestRemoteUsersAreSubscribeOnly(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-rita", "@rita:remote.test")
	resp, out := h.post(t, "/get_token", tokenBody("tok-rita", "remote.test", "@rita:remote.test"))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	grants := decodeJWT(t, out["jwt"].(string))
	require.False(t, grants.Video.GetCanPublish())
	require.True(t, grants.Video.GetCanSubscribe())
	require.Contains(t, out["jwt"], ".") // a real JWT

	h2 := newHarness(t, func(c *Config) { c.FullAccessHomeservers = []string{"remote.test"} })
	h2.hs.issue("tok-rita", "@rita:remote.test")
	_, out = h2.post(t, "/get_token", tokenBody("tok-rita", "remote.test", "@rita:remote.test"))
	require.True(t, decodeJWT(t, out["jwt"].(string)).Video.GetCanPublish())
}

func TestTokenRequestErrors(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	h.hs.issue("tok-mallory", "@mallory:local.test")
	h.hs.issue("tok-spoof", "@alice:remote.test")
	cases := []struct {
		name   string
		path   string
		body   any
		status int
		code   string
	}{
		{"not json", "/get_token", `{"room_id":`, 400, "M_NOT_JSON"},
		{"wrong type", "/get_token", `{"room_id": 5}`, 400, "M_NOT_JSON"},
		{"missing slot", "/get_token", map[string]any{"room_id": "!room:local.test"}, 400, "M_BAD_JSON"},
		{"missing member", "/get_token", func() any { b := tokenBody("tok-alice", "local.test", ""); return b }(), 400, "M_BAD_JSON"},
		{"forged token", "/get_token", tokenBody("forged", "local.test", "@alice:local.test"), 401, "M_UNAUTHORIZED"},
		{"claimed other user", "/get_token", tokenBody("tok-alice", "local.test", "@bob:local.test"), 401, "M_UNAUTHORIZED"},
		{"sub of another server", "/get_token", tokenBody("tok-spoof", "local.test", "@alice:remote.test"), 401, "M_UNAUTHORIZED"},
		{"bad server name", "/get_token", tokenBody("tok-alice", "local test/", "@alice:local.test"), 401, "M_UNAUTHORIZED"},
		{"not a member", "/get_token", tokenBody("tok-mallory", "local.test", "@mallory:local.test"), 403, "M_FORBIDDEN"},
		{"legacy missing room", "/sfu/get", map[string]any{"openid_token": map[string]any{"access_token": "x", "matrix_server_name": "local.test"}}, 400, "M_BAD_JSON"},
		{"partial delay", "/get_token", func() any {
			b := tokenBody("tok-alice", "local.test", "@alice:local.test")
			b["delay_id"] = "d"
			return b
		}(), 400, "M_BAD_JSON"},
		// local.test has no override and no reachable well-known document;
		// the client's delay_cs_api_url is ignored.
		{"unresolvable client-server API", "/get_token", func() any {
			b := tokenBody("tok-alice", "local.test", "@alice:local.test")
			b["delay_id"], b["delay_timeout"], b["delay_cs_api_url"] = "d", 5000, "https://hs"
			return b
		}(), 400, "M_BAD_JSON"},
		{"delayed leave, unresolvable client-server API", "/delegate_delayed_leave", func() any {
			b := tokenBody("tok-alice", "local.test", "@alice:local.test")
			b["delay_id"], b["delay_timeout"], b["delay_cs_api_url"] = "d", 5000, "https://hs"
			return b
		}(), 400, "M_BAD_JSON"},
		{"delayed leave missing delay", "/delegate_delayed_leave", tokenBody("tok-alice", "local.test", "@alice:local.test"), 400, "M_BAD_JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := h.post(t, tc.path, tc.body)
			require.Equal(t, tc.status, resp.StatusCode, out)
			require.Equal(t, tc.code, out["errcode"])
			require.NotEmpty(t, out["error"])
			require.NotContains(t, out["error"], "tok-", "no token echoed")
		})
	}
	require.Empty(t, h.rooms.created, "no room is created for a refused request")
}

func TestMethodsAndCORS(t *testing.T) {
	h := newHarness(t, nil)
	for _, path := range []string{"/get_token", "/sfu/get", "/delegate_delayed_leave"} {
		req, _ := http.NewRequest(http.MethodOptions, h.srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "*", resp.Header.Get("Access-Control-Allow-Origin"))
		require.Equal(t, "POST", resp.Header.Get("Access-Control-Allow-Methods"))
		resp, err = http.Get(h.srv.URL + path)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	}
	resp, err := http.Get(h.srv.URL + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = http.Post(h.srv.URL+"/healthz", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func TestDiscoveryDocuments(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.PublicURL = "https://call.local.test/livekit/jwt/"
		c.Discovery.HomeserverBaseURL = "https://matrix.local.test"
	})
	get := func(path string) map[string]any {
		resp, err := http.Get(h.srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "*", resp.Header.Get("Access-Control-Allow-Origin"))
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return out
	}
	want := []any{map[string]any{"type": "livekit", "livekit_service_url": "https://call.local.test/livekit/jwt"}}
	wk := get("/.well-known/matrix/client")
	require.Equal(t, want, wk["org.matrix.msc4143.rtc_foci"])
	require.Equal(t, map[string]any{"base_url": "https://matrix.local.test"}, wk["m.homeserver"])
	require.Equal(t, want, get("/_matrix/client/unstable/org.matrix.msc4143/rtc/transports")["rtc_transports"])
	require.Equal(t, want, get("/_matrix/client/v1/rtc/transports")["rtc_transports"])
}

func TestRateLimits(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.RateLimit.PerIP = RateConfig{Rate: 0.001, Burst: 3}
	})
	h.hs.issue("tok-alice", "@alice:local.test")
	for i := 0; i < 3; i++ {
		resp, out := h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
		require.Equal(t, http.StatusOK, resp.StatusCode, out)
	}
	resp, out := h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Equal(t, "M_LIMIT_EXCEEDED", out["errcode"])
	require.Greater(t, out["retry_after_ms"], 0.0)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))

	h2 := newHarness(t, func(c *Config) { c.RateLimit.PerUser = RateConfig{Rate: 0.001, Burst: 1} })
	h2.hs.issue("tok-alice", "@alice:local.test")
	resp, _ = h2.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, out = h2.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, out)
}

// Another API mounted on the focus listener (meetings) shares the per-IP limit.
func TestLimitPerIPWrapsOtherAPIs(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RateLimit.PerIP = RateConfig{Rate: 0.001, Burst: 2} })
	calls := 0
	wrapped := httptest.NewServer(h.svc.LimitPerIP(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls++
		w.WriteHeader(http.StatusNoContent)
	})))
	defer wrapped.Close()
	for i := 0; i < 2; i++ {
		resp, err := http.Get(wrapped.URL + "/meetings/v1/meetings")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusNoContent, resp.StatusCode)
	}
	resp, err := http.Get(wrapped.URL + "/meetings/v1/meetings")
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Equal(t, "M_LIMIT_EXCEEDED", out["errcode"])
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.Equal(t, 2, calls)
}

func TestBodyLimit(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxBodyBytes = 1024 })
	resp, out := h.post(t, "/get_token", `{"room_id":"`+strings.Repeat("a", 2000)+`"}`)
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	require.Equal(t, "M_TOO_LARGE", out["errcode"])
}

func TestOpenIDCache(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	for i := 0; i < 3; i++ {
		resp, out := h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
		require.Equal(t, http.StatusOK, resp.StatusCode, out)
	}
	require.EqualValues(t, 1, h.hs.lookups.Load(), "answered from the cache after the first lookup")
	require.Equal(t, 2.0, testutil.ToFloat64(h.svc.metrics.openIDCached))

	// A token that expires in one second is not trusted from the cache after that.
	now := time.Now()
	h.svc.openid.now = func() time.Time { return now }
	body := tokenBody("tok-alice", "local.test", "@alice:local.test")
	body["openid_token"].(map[string]any)["access_token"] = "tok-short"
	body["openid_token"].(map[string]any)["expires_in"] = 1
	h.hs.issue("tok-short", "@alice:local.test")
	resp, _ := h.post(t, "/get_token", body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	h.svc.openid.now = func() time.Time { return now.Add(2 * time.Second) }
	h.hs.mu.Lock()
	delete(h.hs.tokens, "tok-short")
	h.hs.mu.Unlock()
	resp, _ = h.post(t, "/get_token", body)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

func TestRemoveUser(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	_, out := h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.NotEmpty(t, out["jwt"])
	_, out = h.post(t, "/sfu/get", map[string]any{"room": "!room:local.test", "device_id": "DEV2",
		"openid_token": map[string]any{"access_token": "tok-alice", "matrix_server_name": "local.test"}})
	require.NotEmpty(t, out["jwt"])
	h.rooms.absent["@alice:local.test:DEV2"] = true

	n, err := h.svc.RemoveUser(context.Background(), "!room:local.test", "@alice:local.test", "left the room")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Len(t, h.rooms.removed, 1)
	require.Equal(t, LiveKitIdentity("@alice:local.test", "DEV1", "member1"), h.rooms.removed[0].Identity)
	require.Equal(t, LiveKitRoomAlias("!room:local.test", "m.call#ROOM"), h.rooms.removed[0].Room)

	// The grants are revoked: a second call removes nothing.
	n, err = h.svc.RemoveUser(context.Background(), "!room:local.test", "@alice:local.test", "left the room")
	require.NoError(t, err)
	require.Zero(t, n)
	require.Len(t, h.rooms.removed, 1)
}

func TestAccessDeciderAndRoomFailure(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	h.svc.access = deciderFunc(func(_ context.Context, req AccessRequest) (AccessDecision, error) {
		require.Equal(t, "@alice:local.test", req.UserID)
		return AccessDecision{}, &DeniedError{Reason: "This room needs an EmployeeCredential."}
	})
	resp, out := h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Equal(t, "M_FORBIDDEN", out["errcode"])
	require.Equal(t, "This room needs an EmployeeCredential.", out["error"])

	notAfter := time.Now().Add(2 * time.Minute)
	h.svc.access = deciderFunc(func(context.Context, AccessRequest) (AccessDecision, error) {
		return AccessDecision{NotAfter: notAfter, MaxParticipants: 7, DenyPublish: true}, nil
	})
	resp, out = h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	claims := jwtClaims(t, out["jwt"].(string))
	require.LessOrEqual(t, int64(claims["exp"].(float64)), notAfter.Unix(), "token never outlives the decision")
	require.False(t, decodeJWT(t, out["jwt"].(string)).Video.GetCanPublish())
	require.EqualValues(t, 7, h.rooms.created[len(h.rooms.created)-1].MaxParticipants)

	h.svc.access = MembershipOnly{}
	h.rooms.createFn = func() error { return twirp.InternalError("boom") }
	resp, out = h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	require.Equal(t, "Unable to create room on SFU", out["error"])
}

type deciderFunc func(context.Context, AccessRequest) (AccessDecision, error)

func (f deciderFunc) Decide(ctx context.Context, req AccessRequest) (AccessDecision, error) {
	return f(ctx, req)
}

func decodeSegment(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(s)
}
