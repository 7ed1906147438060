package focus

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"

	"github.com/gxfs-conf/gxconf/credentials"
)

// roomInfoFunc answers RoomPolicy with a fixed result.
type roomInfoFunc func() (*credentials.AccessPolicy, error)

func (f roomInfoFunc) RoomPolicy(context.Context, string) (*credentials.AccessPolicy, error) {
	return f()
}

func (roomInfoFunc) RoomEncrypted(context.Context, string) (bool, error) { return false, nil }

// A room whose state cannot be read now is a 503 to retry, never a 500; a
// room whose policy event does not parse refuses (403) instead of counting
// as a room without a policy.
func TestRoomPolicyFailuresAreNotServerErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"homeserver unreachable", errors.New("failed to read the room's state: connection refused"), http.StatusServiceUnavailable, "M_UNKNOWN"},
		{"invalid policy", credentials.ErrInvalidPolicy, http.StatusForbidden, "M_FORBIDDEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.hs.issue("tok-alice", "@alice:local.test")
			h.svc.access = NewCredentialAccess(nil, roomInfoFunc(func() (*credentials.AccessPolicy, error) {
				return nil, tc.err
			}), nil, false, zerolog.Nop())
			resp, out := h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
			require.Equal(t, tc.status, resp.StatusCode, out)
			require.Equal(t, tc.code, out["errcode"])
			require.Empty(t, h.rooms.created, "no room is created for a refused request")
		})
	}
}

// Every token says explicitly whether its holder may send data: LiveKit reads
// a missing canPublishData as "like canPublish" in some versions and as
// allowed in others. Subscribe-only (remote) users may not send data.
func TestCanPublishDataIsExplicit(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	h.hs.issue("tok-rita", "@rita:remote.test")
	for _, tc := range []struct {
		token, server, user string
		want                bool
	}{
		{"tok-alice", "local.test", "@alice:local.test", true},
		{"tok-rita", "remote.test", "@rita:remote.test", false},
	} {
		resp, out := h.post(t, "/get_token", tokenBody(tc.token, tc.server, tc.user))
		require.Equal(t, http.StatusOK, resp.StatusCode, out)
		video, ok := jwtClaims(t, out["jwt"].(string))["video"].(map[string]any)
		require.True(t, ok)
		require.Contains(t, video, "canPublishData", "set explicitly for %s", tc.user)
		require.Equal(t, tc.want, video["canPublishData"], tc.user)
	}
}

// dmRecorder records the direct messages the bot would send.
type dmRecorder struct {
	mu   sync.Mutex
	sent []string
}

func (m *dmRecorder) DirectMessage(_ context.Context, userID, text, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent = append(m.sent, userID+": "+text)
	return nil
}

func (*dmRecorder) Notice(context.Context, string, string) error { return nil }

func (m *dmRecorder) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sent)
}

// A user keeps getting the same presentation request (and one direct
// message) while it is unanswered, but once their wallet's answer was
// refused (a wrong credential picked) the next token request brings a new
// one: the used request could not be answered again until it expired.
func TestUsedPresentationRequestIsReplaced(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	cfg := credentials.DefaultConfig()
	cfg.Federations = []credentials.FederationConfig{{ID: "oev", HomeserverDomains: []string{"local.test"},
		TrustedIssuers: []credentials.TrustedIssuer{{DID: "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", Types: []string{"EmployeeCredential"}}}}}
	cfg.AtRestKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	cfg.OID4VP.PublicBaseURL = h.srv.URL // plain http: a test on loopback
	cfg.DIDResolution.AllowPrivateAddressesForTesting = true
	require.NoError(t, cfg.Validate())
	db, err := dbutil.NewWithDialect("file:"+t.TempDir()+"/credentials.db?_txlock=immediate", "sqlite3-fk-wal")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	v, err := credentials.New(context.Background(), cfg, db, zerolog.New(zerolog.NewTestWriter(t)))
	require.NoError(t, err)
	h.svc.Handle(credentials.MountPath, v.Handler())
	pol, err := credentials.ParseAccessPolicy([]byte(`{"level":"public","required_credentials":[{"federation":"oev","type":"EmployeeCredential"}]}`))
	require.NoError(t, err)
	dms := &dmRecorder{}
	h.svc.access = NewCredentialAccess(v, roomInfoFunc(func() (*credentials.AccessPolicy, error) { return pol, nil }), dms, true, zerolog.Nop())

	page := regexp.MustCompile(`/oid4vp/page/([A-Za-z0-9_-]+)`)
	requestID := func() string {
		t.Helper()
		resp, out := h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
		require.Equal(t, http.StatusForbidden, resp.StatusCode, out)
		m := page.FindStringSubmatch(out["error"].(string))
		require.NotNil(t, m, out)
		return m[1]
	}
	first := requestID()
	require.Equal(t, first, requestID(), "an unanswered request is handed out again")
	require.Equal(t, 1, dms.count())

	// The wallet answers; the presentation is refused and uses the request up.
	resp, err := http.PostForm(h.srv.URL+credentials.MountPath+"response/"+first, url.Values{
		"vp_token":                {"not a presentation"},
		"presentation_submission": {`{"definition_id":"` + first + `","descriptor_map":[{"id":"x","format":"ldp_vp","path":"$"}]}`},
	})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	unused, err := v.RequestUnused(context.Background(), first)
	require.NoError(t, err)
	require.False(t, unused)

	second := requestID()
	require.NotEqual(t, first, second, "a used request is not handed out again")
	require.Equal(t, 2, dms.count(), "the new request is sent by direct message")
	resp, err = http.Get(h.srv.URL + credentials.MountPath + "request/" + second)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the new request can be answered")
}
