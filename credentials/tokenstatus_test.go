package credentials

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gxfs-conf/gxconf/credentials/statuslist"

	"github.com/stretchr/testify/require"
)

// TestSDJWTTokenStatusList: SD-JWT VCs whose status claim points into an
// IETF Token Status List made and signed by the harness with
// @sd-jwt/jwt-status-list. A 0 admits, any other value refuses; a list that
// is not the issuer's, not the one referenced, expired or of another type
// is a status list problem; a status gxconf cannot check refuses.
func TestSDJWTTokenStatusList(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := newTestEnv(t, nil, nil, nil)
	e.rooms[kritisRoom] = kritisPolicy()
	hour := time.Hour.Milliseconds()
	for _, l := range []map[string]any{
		{"name": "tsl-1", "statuses": map[string]any{"3": 1}},
		{"name": "tsl-2", "bits": 2, "statuses": map[string]any{"5": 2, "6": 3}},
		{"name": "tsl-expired", "exp": time.Now().UnixMilli() - hour},
		{"name": "tsl-other-issuer", "issuer": "w3c"},
		{"name": "tsl-wrong-typ", "typ": "JWT"},
		{"name": "tsl-other-sub", "sub": "https://lists.example/elsewhere"},
	} {
		e.h.call(t, "tokenList", l, nil)
	}
	// A doctored list: the issuer's signed list for tsl-forge says index 3
	// is invalid; the host serves it with the list replaced by all zeros
	// and the signature kept.
	var made struct {
		JWT string `json:"jwt"`
	}
	e.h.call(t, "tokenList", map[string]any{"name": "tsl-forge", "statuses": map[string]any{"3": 1}}, &made)
	parts := strings.Split(made.JWT, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var claims map[string]any
	require.NoError(t, json.Unmarshal(payload, &claims))
	zeros, err := statuslist.EncodeToken(make([]uint, 1024), 1)
	require.NoError(t, err)
	claims["status_list"] = map[string]any{"bits": 1, "lst": zeros}
	payload, err = json.Marshal(claims)
	require.NoError(t, err)
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	e.h.call(t, "serveTokenList", map[string]any{"name": "tsl-forge", "jwt": strings.Join(parts, ".")}, nil)

	ref := func(list string, idx int) map[string]any { return map[string]any{"list": list, "index": idx} }
	for _, tc := range []struct {
		name  string
		issue map[string]any
		want  string // "" admitted
	}{
		{"valid, 1 bit", map[string]any{"tokenStatus": ref("tsl-1", 2)}, ""},
		{"valid, 2 bits", map[string]any{"tokenStatus": ref("tsl-2", 4)}, ""},
		{"invalid", map[string]any{"tokenStatus": ref("tsl-1", 3)}, "revoked"},
		{"suspended", map[string]any{"tokenStatus": ref("tsl-2", 5)}, "revoked"},
		{"application-specific value", map[string]any{"tokenStatus": ref("tsl-2", 6)}, "revoked"},
		{"index beyond the list", map[string]any{"tokenStatus": ref("tsl-1", 5000)}, "status_list_invalid"},
		{"expired list", map[string]any{"tokenStatus": ref("tsl-expired", 0)}, "status_list_invalid"},
		{"list signed by another issuer", map[string]any{"tokenStatus": ref("tsl-other-issuer", 0)}, "status_list_invalid"},
		{"list typ JWT", map[string]any{"tokenStatus": ref("tsl-wrong-typ", 0)}, "status_list_invalid"},
		{"list about another URI", map[string]any{"tokenStatus": ref("tsl-other-sub", 0)}, "status_list_invalid"},
		{"list doctored by its host", map[string]any{"tokenStatus": ref("tsl-forge", 3)}, "status_list_invalid"},
		{"no list at the URI", map[string]any{"tokenStatus": ref("tsl-missing", 0)}, "status_unavailable"},
		{"another status mechanism beside it", map[string]any{"statusClaim": map[string]any{
			"status_list":      map[string]any{"idx": 0, "uri": e.h.info.Base + "/tokenstatus/tsl-1"},
			"identifiers_list": map[string]any{"id": "00", "uri": e.h.info.Base + "/ids"},
		}}, "status_unavailable"},
		{"an http list", map[string]any{"statusClaim": map[string]any{
			"status_list": map[string]any{"idx": 0, "uri": "http://127.0.0.1:1/tokenstatus/tsl-1"}}}, "malformed"},
		{"a negative index", map[string]any{"statusClaim": map[string]any{
			"status_list": map[string]any{"idx": -1, "uri": e.h.info.Base + "/tokenstatus/tsl-1"}}}, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := map[string]any{"format": "dc+sd-jwt", "issuer": "web"}
			for k, v := range tc.issue {
				args[k] = v
			}
			user := newUser()
			r := e.h.present(t, e.request(t, user, kritisRoom).Link, e.h.issue(t, args), "sd-jwt", nil)
			if tc.want == "" {
				require.Equal(t, http.StatusOK, r.Status, r.Body)
				require.True(t, e.authorize(t, user, kritisRoom).Allow)
				return
			}
			require.Equal(t, tc.want, errorCode(t, r.Body), r.Body)
			require.False(t, e.authorize(t, user, kritisRoom).Allow)
		})
	}
}

// TestSDJWTTokenStatusRecheck: an SD-JWT VC admitted while its entry was 0
// is invalidated by the re-check loop once the issuer's list says 1.
func TestSDJWTTokenStatusRecheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := newTestEnv(t, nil, nil, func(c *Config) { c.Levels.Kritis.StatusMaxAge = time.Minute })
	e.rooms[kritisRoom] = kritisPolicy()
	ctx := context.Background()
	e.h.call(t, "tokenList", map[string]any{"name": "tsl-live"}, nil)
	user := newUser()
	r := e.h.present(t, e.request(t, user, kritisRoom).Link,
		e.h.issue(t, map[string]any{"format": "dc+sd-jwt", "issuer": "web", "tokenStatus": map[string]any{"list": "tsl-live", "index": 9}}), "sd-jwt", nil)
	require.Equal(t, http.StatusOK, r.Status, r.Body)
	require.NoError(t, e.v.RecheckNow(ctx))
	require.Empty(t, e.invalid)

	e.h.call(t, "tokenList", map[string]any{"name": "tsl-live", "statuses": map[string]any{"9": 1}}, nil)
	e.advance(2 * time.Minute) // past the status max age
	require.NoError(t, e.v.RecheckNow(ctx))
	e.mu.Lock()
	defer e.mu.Unlock()
	require.Len(t, e.invalid, 1)
	require.Equal(t, user, e.invalid[0].a.UserID)
	require.ErrorIs(t, e.invalid[0].reason, ErrRevoked)
}
