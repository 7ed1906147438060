package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"crypto/x509"
	"database/sql"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/test/harness"
)

// idpUser is an account of the test's login app.
type idpUser struct {
	password string
	// totpSecret is the RFC 6238 secret (base32); empty: no second factor.
	totpSecret string
	org        string
	roles      []string
	name       string
}

// loginApp is the login and consent app of the test's ORY Hydra: it checks
// the password and, when the account has one, the TOTP code, and reports
// the factors used as amr (RFC 8176: pwd, otp); consent puts org and roles
// into the ID token.
type loginApp struct {
	t     *testing.T
	hydra *harness.Hydra
	users map[string]idpUser
	srv   *httptest.Server
}

func newLoginApp(t *testing.T, users map[string]idpUser) *loginApp {
	a := &loginApp{t: t, users: users}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", a.loginForm)
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("GET /consent", a.consent)
	mux.HandleFunc("GET /cb", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "code received") })
	a.srv = httptest.NewServer(mux)
	t.Cleanup(a.srv.Close)
	return a
}

func (a *loginApp) loginForm(w http.ResponseWriter, r *http.Request) {
	a.renderForm(w, r.URL.Query().Get("login_challenge"), "", http.StatusOK)
}

func (a *loginApp) renderForm(w http.ResponseWriter, challenge, msg string, status int) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<!doctype html><title>Test IdP</title><p id="msg">%s</p>
<form method="post" action="/login"><input type="hidden" name="challenge" value="%s">
<input id="username" name="username"><input id="password" name="password" type="password">
<input id="totp" name="totp" autocomplete="one-time-code"><button id="signin" type="submit">Sign in</button></form>`,
		html.EscapeString(msg), html.EscapeString(challenge))
}

func (a *loginApp) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	challenge, name := r.PostForm.Get("challenge"), r.PostForm.Get("username")
	u, ok := a.users[name]
	if !ok || subtle.ConstantTimeCompare([]byte(u.password), []byte(r.PostForm.Get("password"))) != 1 {
		a.renderForm(w, challenge, "wrong user name or password", http.StatusUnauthorized)
		return
	}
	amr := []string{"pwd"}
	if code := r.PostForm.Get("totp"); code != "" || u.totpSecret != "" {
		if u.totpSecret == "" || !totpValid(u.totpSecret, code, time.Now()) {
			a.renderForm(w, challenge, "wrong one-time code", http.StatusUnauthorized)
			return
		}
		amr = append(amr, "otp")
	}
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	err := a.hydra.Admin(r.Context(), http.MethodPut, "/admin/oauth2/auth/requests/login/accept?login_challenge="+url.QueryEscape(challenge),
		map[string]any{"subject": name, "amr": amr, "remember": false}, &out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	http.Redirect(w, r, out.RedirectTo, http.StatusFound)
}

func (a *loginApp) consent(w http.ResponseWriter, r *http.Request) {
	challenge := r.URL.Query().Get("consent_challenge")
	var req struct {
		Subject        string   `json:"subject"`
		RequestedScope []string `json:"requested_scope"`
	}
	if err := a.hydra.Admin(r.Context(), http.MethodGet, "/admin/oauth2/auth/requests/consent?consent_challenge="+url.QueryEscape(challenge), nil, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	u := a.users[req.Subject]
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	err := a.hydra.Admin(r.Context(), http.MethodPut, "/admin/oauth2/auth/requests/consent/accept?consent_challenge="+url.QueryEscape(challenge),
		map[string]any{
			"grant_scope": req.RequestedScope,
			"session":     map[string]any{"id_token": map[string]any{"org": u.org, "roles": u.roles, "name": u.name}},
		}, &out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	http.Redirect(w, r, out.RedirectTo, http.StatusFound)
}

// totpCode is RFC 6238 TOTP (HMAC-SHA1, 30 s steps, 6 digits).
func totpCode(secret string, t time.Time) string {
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(secret))
	if err != nil {
		return ""
	}
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(t.Unix()/30))
	m := hmac.New(sha1.New, key)
	m.Write(msg[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	return fmt.Sprintf("%06d", v%1000000)
}

// totpValid accepts the current step and its neighbours (clock skew).
func totpValid(secret, code string, now time.Time) bool {
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		if subtle.ConstantTimeCompare([]byte(totpCode(secret, now.Add(d))), []byte(code)) == 1 {
			return true
		}
	}
	return false
}

// catalogIdP is Hydra with the login app, a confidential client for gxconf
// (redirecting to gxconf's callback and to the login app's /cb).
type catalogIdP struct {
	hydra  *harness.Hydra
	app    *loginApp
	client string
	secret string
}

const testTOTPSecret = "JBSWY3DPEHPK3PXP"

func startCatalogIdP(t *testing.T, focusURL string) *catalogIdP {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	app := newLoginApp(t, map[string]idpUser{
		"alice":   {password: "alice-pw", totpSecret: testTOTPSecret, org: "land-nrw", roles: []string{"booking-admin"}, name: "Alice Admin"},
		"charlie": {password: "charlie-pw", org: "land-nrw", roles: []string{"booking-admin"}, name: "Charlie (password only)"},
		"mallory": {password: "mallory-pw", totpSecret: testTOTPSecret, org: "stadt-x", roles: []string{"booking-admin"}, name: "Mallory"},
		"bob":     {password: "bob-pw", totpSecret: testTOTPSecret, org: "provider", roles: []string{"provider"}, name: "Bob Provider"},
	})
	h, err := harness.StartHydra(ctx, t.TempDir(), app.srv.URL+"/login", app.srv.URL+"/consent")
	require.NoError(t, err)
	t.Cleanup(func() {
		h.Stop()
		if t.Failed() {
			t.Logf("hydra log:\n%s", tail(h.Log(), 8000))
		}
	})
	app.hydra = h
	idp := &catalogIdP{hydra: h, app: app, client: "gxconf-catalog", secret: "catalog-client-secret-0123456789"}
	require.NoError(t, h.Admin(ctx, http.MethodPost, "/admin/clients", map[string]any{
		"client_id": idp.client, "client_secret": idp.secret,
		"grant_types": []string{"authorization_code"}, "response_types": []string{"code"},
		"scope": "openid profile", "token_endpoint_auth_method": "client_secret_basic",
		"redirect_uris": []string{focusURL + "/catalog/admin/callback", app.srv.URL + "/cb"},
	}, nil))
	return idp
}

// catalogConfig is the catalog section of the test deployment.
func (idp *catalogIdP) catalogConfig(t *testing.T, focusURL string) map[string]any {
	terms := "0000000000000000000000000000000000000000000000000000000000000001"
	return map[string]any{
		"enabled":          true,
		"base_url":         "https://vc.bund.test",
		"signing_key_file": writeECKey(t),
		"provider": map[string]any{
			"legal_name": "Bundes-Video GmbH", "registration_number_type": "vatID", "registration_number": "DE123456789", "country_code": "DE",
		},
		"levels": map[string]any{
			"public": map[string]any{"terms_url": "https://vc.bund.test/agb-public.pdf", "terms_hash": terms, "sites": []string{"default", "de-ber-1"}},
			"kritis": map[string]any{"terms_url": "https://vc.bund.test/agb-kritis.pdf", "terms_hash": terms, "sites": []string{"default"}, "policy_url": "https://vc.bund.test/kritis.rego"},
			"vs-nfd": map[string]any{"terms_url": "https://vc.bund.test/agb-vsnfd.pdf", "terms_hash": terms, "sites": []string{"default"}},
		},
		// Admitted participants count until they connect; the test's 20
		// token holders never do.
		"pending_window": "10m",
		"admin": map[string]any{
			"issuer": idp.hydra.Issuer, "client_id": idp.client, "client_secret": idp.secret,
			"redirect_url":                  focusURL + "/catalog/admin/callback",
			"dangerously_allow_http_issuer": true,
			"organisations": map[string]any{
				"land-nrw": map[string]any{"legal_name": "Land Nordrhein-Westfalen", "id": "did:web:land-nrw.example"},
				"stadt-x":  map[string]any{"legal_name": "Stadt X"},
			},
		},
	}
}

func writeECKey(t *testing.T) string {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "catalog-key.pem")
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	return path
}

// adminSession logs a user in on gxconf's admin page (authorization code
// flow through Hydra and the login app) and returns the client holding the
// session cookie and the final answer (the page, or gxconf's refusal).
func (idp *catalogIdP) adminSession(t *testing.T, focusURL, user, password string, withTOTP bool) (*http.Client, int, string) {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	resp, err := c.Get(focusURL + "/catalog/admin/login")
	require.NoError(t, err)
	resp.Body.Close()
	challenge := resp.Request.URL.Query().Get("login_challenge")
	require.NotEmpty(t, challenge, "redirected to the login app: %s", resp.Request.URL)
	form := url.Values{"challenge": {challenge}, "username": {user}, "password": {password}}
	if withTOTP {
		form.Set("totp", totpCode(testTOTPSecret, time.Now()))
	}
	resp, err = c.PostForm(idp.app.srv.URL+"/login", form)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return c, resp.StatusCode, string(body)
}

// idToken runs the same flow to the login app's /cb and redeems the code
// itself: an ID token for the admin API's bearer path.
func (idp *catalogIdP) idToken(t *testing.T, user, password string, withTOTP bool) string {
	t.Helper()
	return idp.idTokenFor(t, idp.client, idp.secret, user, password, withTOTP)
}

// addClient registers another relying party at Hydra (redirecting to /cb).
func (idp *catalogIdP) addClient(t *testing.T, id, secret string) {
	t.Helper()
	require.NoError(t, idp.hydra.Admin(context.Background(), http.MethodPost, "/admin/clients", map[string]any{
		"client_id": id, "client_secret": secret,
		"grant_types": []string{"authorization_code"}, "response_types": []string{"code"},
		"scope": "openid profile", "token_endpoint_auth_method": "client_secret_basic",
		"redirect_uris": []string{idp.app.srv.URL + "/cb"},
	}, nil))
}

// idTokenFor is idToken for any client of the IdP.
func (idp *catalogIdP) idTokenFor(t *testing.T, client, secret, user, password string, withTOTP bool) string {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	q := url.Values{
		"client_id": {client}, "response_type": {"code"}, "scope": {"openid profile"},
		"redirect_uri": {idp.app.srv.URL + "/cb"}, "state": {"state-0123456789"}, "nonce": {"nonce-0123456789"},
	}
	resp, err := c.Get(idp.hydra.PublicURL + "/oauth2/auth?" + q.Encode())
	require.NoError(t, err)
	resp.Body.Close()
	challenge := resp.Request.URL.Query().Get("login_challenge")
	require.NotEmpty(t, challenge)
	form := url.Values{"challenge": {challenge}, "username": {user}, "password": {password}}
	if withTOTP {
		form.Set("totp", totpCode(testTOTPSecret, time.Now()))
	}
	resp, err = c.PostForm(idp.app.srv.URL+"/login", form)
	require.NoError(t, err)
	resp.Body.Close()
	code := resp.Request.URL.Query().Get("code")
	require.NotEmpty(t, code, "redirected to /cb with a code: %s", resp.Request.URL)
	tr, err := http.NewRequest(http.MethodPost, idp.hydra.PublicURL+"/oauth2/token", strings.NewReader(url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {idp.app.srv.URL + "/cb"},
	}.Encode()))
	require.NoError(t, err)
	tr.SetBasicAuth(client, secret)
	tr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = http.DefaultClient.Do(tr)
	require.NoError(t, err)
	defer resp.Body.Close()
	var tok struct {
		IDToken string `json:"id_token"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tok))
	require.NotEmpty(t, tok.IDToken)
	return tok.IDToken
}

// adminCall calls gxconf's admin API with a session client (cookie and the
// CSRF header) or a bearer ID token.
func adminCall(t *testing.T, c *http.Client, bearer, method, u string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		require.NoError(t, err)
		rd = strings.NewReader(string(raw))
	}
	req, err := http.NewRequest(method, u, rd)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	} else {
		req.Header.Set("X-GXConf-CSRF", "1")
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if out == nil {
		out = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, out
}

// catalogReport is test/catalogcheck's output.
type catalogReport struct {
	Verified  int            `json:"verified"`
	Kinds     map[string]int `json:"kinds"`
	Errors    []string       `json:"errors"`
	Mandatory bool           `json:"mandatory"`
	SHACL     struct {
		Conforms bool             `json:"conforms"`
		Results  []map[string]any `json:"results"`
	} `json:"shacl"`
	Selftest struct {
		Tier30Conforms     bool `json:"tier30Conforms"`
		NoProviderConforms bool `json:"noProviderConforms"`
		TamperedVerifies   bool `json:"tamperedVerifies"`
	} `json:"selftest"`
	Extra []struct {
		File    string `json:"file"`
		Revoked *bool  `json:"revoked"`
	} `json:"extra"`
}

// runCatalogCheck verifies and validates an export directory with the
// independent npm libraries of test/catalogcheck.
func runCatalogCheck(t *testing.T, dir string, extra ...string) catalogReport {
	t.Helper()
	root, err := harness.RepoRoot()
	require.NoError(t, err)
	script := filepath.Join(root, "test", "catalogcheck", "check.mjs")
	_, err = os.Stat(filepath.Join(root, "test", "catalogcheck", "node_modules", "rdf-validate-shacl"))
	require.NoError(t, err, "npm packages of test/catalogcheck are missing: run scripts/deps.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{script, dir}, extra...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "catalogcheck: %s", stderr.String())
	var r catalogReport
	require.NoError(t, json.Unmarshal(out, &r), "%s", out)
	return r
}

func getJSONInto(t *testing.T, u string, v any) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.Unmarshal(raw, v))
	}
	return resp.StatusCode, string(raw)
}

// auditCounts counts the audit log's rows by decision.
func auditCounts(t *testing.T, s *harness.Stack) map[string]int {
	t.Helper()
	db, err := sql.Open(s.DBDriver, s.DBURI)
	require.NoError(t, err)
	defer db.Close()
	rows, err := db.Query(`SELECT decision, COUNT(*) FROM credentials_audit GROUP BY decision`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var d string
		var n int
		require.NoError(t, rows.Scan(&d, &n))
		out[d] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// acceptBooking has the room's creator accept the room's binding to a
// booking with the bot ("!conf bookings accept"), as a room admin does.
func acceptBooking(t *testing.T, s *harness.Stack, admin *harness.User, room id.RoomID, bookingID string) {
	t.Helper()
	waitForMessage(t, admin, room, s.BotID, "!conf help")
	_, err := admin.Client.SendText(context.Background(), room, "!conf bookings accept "+bookingID)
	require.NoError(t, err)
	waitForMessage(t, admin, room, s.BotID, "Accepted: calls in this room now count against booking "+bookingID)
}
