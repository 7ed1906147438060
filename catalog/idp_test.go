package catalog

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/require"
)

// testIdP is a minimal OpenID provider for the page login: discovery, JWKS
// and a token endpoint that checks the PKCE verifier and issues an ES256 ID
// token carrying the nonce of the authorization request. authorize stands
// in for the user's visit to the authorization endpoint.
type testIdP struct {
	t      testing.TB
	srv    *httptest.Server
	key    *ecdsa.PrivateKey
	mu     sync.Mutex
	codes  map[string]idpGrant
	claims map[string]any
	// refusal, when set, is the error_description of the provider's
	// answer to an unknown code.
	refusal string
}

type idpGrant struct{ challenge, nonce string }

func newTestIdP(t testing.TB, claims map[string]any) *testIdP {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	idp := &testIdP{t: t, key: k, codes: map[string]idpGrant{}, claims: claims}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		u := idp.srv.URL
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": u, "authorization_endpoint": u + "/auth", "token_endpoint": u + "/token", "jwks_uri": u + "/jwks",
			"id_token_signing_alg_values_supported": []string{"ES256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	})
	mux.HandleFunc("POST /token", idp.token)
	idp.srv = httptest.NewTLSServer(mux)
	t.Cleanup(idp.srv.Close)
	return idp
}

// ctx carries the provider's HTTPS client for go-oidc and oauth2.
func (idp *testIdP) ctx() context.Context {
	return oidc.ClientContext(context.Background(), idp.srv.Client())
}

// authorize reads the authorization request the login redirected to and
// returns the code the provider sends back to the callback.
func (idp *testIdP) authorize(location string) (code, state string) {
	u, err := url.Parse(location)
	require.NoError(idp.t, err)
	require.Equal(idp.t, idp.srv.URL+"/auth", u.Scheme+"://"+u.Host+u.Path)
	q := u.Query()
	require.Equal(idp.t, "S256", q.Get("code_challenge_method"))
	code = randomToken()
	idp.mu.Lock()
	idp.codes[code] = idpGrant{challenge: q.Get("code_challenge"), nonce: q.Get("nonce")}
	idp.mu.Unlock()
	return code, q.Get("state")
}

// again issues a second code for the authorization request of code.
func (idp *testIdP) again(code string) string {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	c := randomToken()
	idp.codes[c] = idp.codes[code]
	return c
}

func (idp *testIdP) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	idp.mu.Lock()
	g, ok := idp.codes[r.PostForm.Get("code")]
	delete(idp.codes, r.PostForm.Get("code"))
	idp.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if !ok || base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": idp.refusal})
		return
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: idp.key}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
	require.NoError(idp.t, err)
	now := time.Now()
	claims := map[string]any{
		"iss": idp.srv.URL, "sub": "alice", "aud": "gxconf-admin", "nonce": g.nonce,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	for k, v := range idp.claims {
		claims[k] = v
	}
	raw, err := jwt.Signed(sig).Claims(claims).Serialize()
	require.NoError(idp.t, err)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 3600, "id_token": raw})
}
