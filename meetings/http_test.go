package meetings

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeAuth accepts "token-<localpart>" access tokens and OpenID tokens
// whose access_token is "oid-<localpart>".
type fakeAuth struct{}

func (fakeAuth) AccessToken(_ context.Context, tok string) (string, error) {
	if lp, ok := strings.CutPrefix(tok, "token-"); ok {
		return "@" + lp + ":hs.test", nil
	}
	return "", errors.New("M_UNKNOWN_TOKEN")
}

func (fakeAuth) OpenID(_ context.Context, tok OpenIDToken) (string, error) {
	if lp, ok := strings.CutPrefix(tok.AccessToken, "oid-"); ok && tok.MatrixServerName == "hs.test" {
		return "@" + lp + ":hs.test", nil
	}
	return "", errors.New("M_UNKNOWN_TOKEN")
}

func call(t *testing.T, srv *httptest.Server, method, path, auth, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	require.NoError(t, json.Unmarshal(raw, &out), string(raw))
	return resp.StatusCode, out
}

func TestHTTPAPI(t *testing.T) {
	env := newTestService(t, func(o *Options) { o.Auth = fakeAuth{} })
	srv := httptest.NewServer(env.svc.Handler())
	defer srv.Close()

	status, out := call(t, srv, "POST", "/meetings/v1/meeting/create", "", `{}`)
	require.Equal(t, 401, status, out)
	status, out = call(t, srv, "POST", "/meetings/v1/meeting/create", "Bearer wrong", `{}`)
	require.Equal(t, 401, status, out)
	require.Equal(t, "M_UNKNOWN_TOKEN", out["errcode"])

	body := `{"title":"Weekly","start":"2026-03-23T10:00","duration":"1h","rrule":"FREQ=WEEKLY;COUNT=4","except":["2026-03-30"],"invite":["@bob:hs.test"],"timezone":"Europe/Berlin"}`
	status, out = call(t, srv, "POST", "/meetings/v1/meeting/create", "Bearer token-alice", body)
	require.Equal(t, 201, status, out)
	id := out["meeting_id"].(string)
	require.Equal(t, "2026-03-23T10:00:00+01:00", out["occurrences"].([]any)[0])
	require.Equal(t, "2026-04-06T10:00:00+02:00", out["occurrences"].([]any)[1])
	require.Contains(t, out["meeting_url"], out["room_id"].(string))

	// OpenID (MX-Identity), as Nordeck's API accepts.
	oid := base64.StdEncoding.EncodeToString([]byte(`{"access_token":"oid-bob","token_type":"Bearer","matrix_server_name":"hs.test","expires_in":3600}`))
	status, out = call(t, srv, "GET", "/meetings/v1/meeting/"+id, "MX-Identity "+oid, "")
	require.Equal(t, 200, status, out)
	require.Equal(t, "Weekly", out["title"])
	status, out = call(t, srv, "PUT", "/meetings/v1/meeting/update", "MX-Identity "+oid, fmt.Sprintf(`{"meeting_id":%q,"title":"Mine now"}`, id))
	require.Equal(t, 403, status, out)
	require.Equal(t, "M_FORBIDDEN", out["errcode"])
	status, out = call(t, srv, "GET", "/meetings/v1/meeting/"+id, "Bearer token-mallory", "")
	require.Equal(t, 404, status, out)
	status, out = call(t, srv, "PUT", "/meetings/v1/meeting/update", "Bearer token-mallory", fmt.Sprintf(`{"meeting_id":%q,"title":"Mine now"}`, id))
	require.Equal(t, 404, status, out, "an outsider does not learn that the meeting exists")
	require.NotContains(t, out["error"], "@alice")

	status, out = call(t, srv, "PUT", "/meetings/v1/meeting/update", "Bearer token-alice", fmt.Sprintf(`{"meeting_id":%q,"start":"2026-03-23T11:00"}`, id))
	require.Equal(t, 200, status, out)
	require.EqualValues(t, 1, out["sequence"])

	status, out = call(t, srv, "POST", "/meetings/v1/meeting/create", "Bearer token-alice", `{"title":"x","start":"2026-03-23T10:00","colour":"red"}`)
	require.Equal(t, 400, status, out)
	require.Contains(t, out["error"], `unknown field "colour"`)
	// A member is read only under its exact name: a second spelling could
	// carry a value another reader of the body would not see.
	for _, body := range []string{`{"Title":"x","start":"2026-03-23T10:00"}`, `{"title":"x","TITLE":"y","start":"2026-03-23T10:00"}`,
		`{"title":"x","title":"y","start":"2026-03-23T10:00"}`} {
		status, out = call(t, srv, "POST", "/meetings/v1/meeting/create", "Bearer token-alice", body)
		require.Equal(t, 400, status, body)
		require.Contains(t, out["error"], "body:", body)
	}
	status, out = call(t, srv, "POST", "/meetings/v1/meeting/create", "Bearer token-alice", `{"title":"x","start":"2026-02-29T10:00"}`)
	require.Equal(t, 400, status, out)
	require.Equal(t, `start: "2026-02-29" is not a date: February 2026 has 28 days`, out["error"])

	many := make([]string, 10000)
	for i := range many {
		many[i] = fmt.Sprintf("@user%05d:hs.test", i)
	}
	raw, _ := json.Marshal(map[string]any{"title": "Huge", "start": "2026-03-23T10:00", "participants": many})
	status, out = call(t, srv, "POST", "/meetings/v1/meeting/create", "Bearer token-alice", string(raw))
	require.Equal(t, 403, status, out)
	require.Equal(t, "DE_GXCONF_POLICY", out["errcode"])
	require.Contains(t, out["error"], "participants: 10000 invitees; a meeting may have at most 1000")

	status, out = call(t, srv, "GET", "/meetings/v1/meetings", "Bearer token-bob", "")
	require.Equal(t, 200, status, out)
	require.Len(t, out["meetings"], 1)

	// The feed address outlives the token it was issued for: an OpenID
	// token (which any call focus a room names gets) does not obtain it.
	status, out = call(t, srv, "POST", "/meetings/v1/feed", "MX-Identity "+oid, "")
	require.Equal(t, 401, status, out)
	require.Contains(t, out["error"], "Bearer")
	status, out = call(t, srv, "POST", "/meetings/v1/feed", "Bearer token-bob", "")
	require.Equal(t, 200, status, out)
	feed := strings.TrimPrefix(out["url"].(string), "https://conf.hs.test")
	resp, err := srv.Client().Get(srv.URL + feed)
	require.NoError(t, err)
	ics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "text/calendar; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Contains(t, string(ics), "SUMMARY:Weekly")
	for _, bad := range []string{"/meetings/cal/" + strings.Repeat("a", 52) + ".ics", "/meetings/cal/x.ics", "/meetings/cal/" + strings.TrimSuffix(feed[len("/meetings/cal/"):], ".ics")} {
		resp, err := srv.Client().Get(srv.URL + bad)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, 404, resp.StatusCode, bad)
	}

	status, out = call(t, srv, "POST", "/meetings/v1/meeting/cancel", "Bearer token-alice", fmt.Sprintf(`{"meeting_id":%q}`, id))
	require.Equal(t, 200, status, out)
	require.Equal(t, true, out["cancelled"])
}
