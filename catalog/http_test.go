package catalog

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/credentials"
)

// session logs an admin in without an OpenID provider (the end-to-end test
// uses a real one) and returns the cookie.
func (e *env) session(ad *Admin) *http.Cookie {
	sid := randomToken()
	ad.Expiry = e.clock.now().Add(time.Hour)
	e.c.admin.mu.Lock()
	e.c.admin.sessions[hashID(sid)] = ad
	e.c.admin.mu.Unlock()
	return &http.Cookie{Name: sessionCookie, Value: sid}
}

func call(t *testing.T, srv *httptest.Server, cookie *http.Cookie, csrf bool, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if cookie != nil {
		req.AddCookie(cookie)
	}
	if csrf {
		req.Header.Set("X-GXConf-CSRF", "1")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

func TestAdminHTTP(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	alice := e.session(&Admin{Principal: Principal{Subject: "idp|alice", Org: "land-nrw", Roles: []string{"booking-admin"}}, MFA: true, AMR: []string{"pwd", "otp"}})
	mallory := e.session(&Admin{Principal: Principal{Subject: "idp|mallory", Org: "stadt-x", Roles: []string{"booking-admin"}}, MFA: true})
	weak := e.session(&Admin{Principal: Principal{Subject: "idp|weak", Org: "land-nrw", Roles: []string{"booking-admin"}}, MFA: false})
	now := e.clock.now()
	body, _ := json.Marshal(map[string]any{
		"tier": "public-20-gold", "unit": "dateRange", "valid_from": now, "valid_until": now.Add(time.Hour),
		"rooms": []string{"!r:x"}, "accept_terms": testTerms,
	})

	code, out := call(t, srv, nil, true, http.MethodPost, "/catalog/admin/api/bookings", string(body))
	require.Equal(t, http.StatusUnauthorized, code, out)
	code, out = call(t, srv, alice, false, http.MethodPost, "/catalog/admin/api/bookings", string(body))
	require.Equal(t, http.StatusForbidden, code, out)
	require.Contains(t, out, "X-GXConf-CSRF")
	code, out = call(t, srv, weak, true, http.MethodPost, "/catalog/admin/api/bookings", string(body))
	require.Equal(t, http.StatusForbidden, code, out)
	require.Contains(t, out, "multi-factor")
	code, out = call(t, srv, alice, true, http.MethodPost, "/catalog/admin/api/bookings", `{"tier":"public-20-gold","evil":1}`)
	require.Equal(t, http.StatusBadRequest, code, out)

	code, out = call(t, srv, alice, true, http.MethodPost, "/catalog/admin/api/bookings", string(body))
	require.Equal(t, http.StatusOK, code, out)
	var b bookingView
	require.NoError(t, json.Unmarshal([]byte(out), &b))
	require.Equal(t, StateActive, b.State)
	require.Empty(t, b.Entitlement, "the list view carries no JWT")
	require.Equal(t, "!r:x", b.BoundRooms[0].RoomID)
	require.Empty(t, b.BoundRooms[0].ConfirmedBy)
	bound, err := e.c.ConfirmRoom(context.Background(), "!r:x", b.ID, "@roomadmin:x")
	require.NoError(t, err)
	require.True(t, bound)

	// Mallory can neither read, bind nor cancel it, nor take the room.
	code, _ = call(t, srv, mallory, false, http.MethodGet, "/catalog/admin/api/bookings/"+b.ID, "")
	require.Equal(t, http.StatusForbidden, code)
	code, _ = call(t, srv, mallory, true, http.MethodPost, "/catalog/admin/api/bookings/"+b.ID+"/cancel", "{}")
	require.Equal(t, http.StatusForbidden, code)
	code, out = call(t, srv, mallory, true, http.MethodPost, "/catalog/admin/api/bookings", strings.Replace(string(body), `"rooms"`, `"org":"land-nrw","rooms"`, 1))
	require.Equal(t, http.StatusForbidden, code, "mallory books for stadt-x only: %s", out)
	code, out = call(t, srv, mallory, true, http.MethodPost, "/catalog/admin/api/bookings", string(body))
	require.Equal(t, http.StatusConflict, code, "alice's room cannot be taken: %s", out)
	require.Contains(t, out, "bound to another organisation's booking")
	code, out = call(t, srv, mallory, false, http.MethodGet, "/catalog/admin/api/bookings", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, out, `"bookings":[]`)

	code, out = call(t, srv, alice, false, http.MethodGet, "/catalog/admin/api/bookings/"+b.ID+"/entitlement", "")
	require.Equal(t, http.StatusOK, code)
	require.Len(t, strings.Split(out, "."), 3)
	code, _ = call(t, srv, alice, true, http.MethodPost, "/catalog/admin/api/bookings/"+b.ID+"/confirm", "{}")
	require.Equal(t, http.StatusForbidden, code)
	code, _ = call(t, srv, alice, true, http.MethodPost, "/catalog/admin/api/bookings/"+b.ID+"/cancel", "{}")
	require.Equal(t, http.StatusOK, code)
	code, out = call(t, srv, alice, true, http.MethodPost, "/catalog/admin/api/bookings/"+b.ID+"/cancel", "{}")
	require.Equal(t, http.StatusConflict, code, out)

	// Public documents.
	code, out = call(t, srv, nil, false, http.MethodGet, "/.well-known/did.json", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, out, `"did:web:vc.bund.example"`)
	code, _ = call(t, srv, nil, false, http.MethodGet, "/catalog/credentials/offering-public-20", "")
	require.Equal(t, http.StatusOK, code)
	code, _ = call(t, srv, nil, false, http.MethodGet, "/catalog/credentials/..%2fsecret", "")
	require.Equal(t, http.StatusNotFound, code)
	resp, err := http.Get(srv.URL + "/catalog/admin/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'sha256-")
	require.NotContains(t, resp.Header.Get("Content-Security-Policy"), "unsafe-inline'; style", "no inline scripts but the page's own")

	// A callback without a login this gxconf started (login CSRF, replay) is refused
	// before the identity provider is asked anything.
	code, out = call(t, srv, nil, false, http.MethodGet, "/catalog/admin/callback?state=forged&code=stolen", "")
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, out, "unknown or expired login state")
	// A bearer header that is no ID token.
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/catalog/admin/api/me", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Basic YWxpY2U6cHc=")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	n, err := credentials.VerifyAuditChain(context.Background(), e.db)
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, 8, "refusals and actions are audited")
}

// TestBookingOrganisersHTTP: the booking API takes the organisers who may
// schedule meetings under a booking, refuses what is no Matrix user ID
// (naming the field) and shows them in the booking.
func TestBookingOrganisersHTTP(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	alice := e.session(&Admin{Principal: Principal{Subject: "idp|alice", Org: "land-nrw", Roles: []string{"booking-admin"}}, MFA: true, AMR: []string{"pwd", "otp"}})
	now := e.clock.now()
	req := func(organisers ...string) string {
		body, _ := json.Marshal(map[string]any{
			"tier": "public-20-gold", "unit": "dateRange", "valid_from": now, "valid_until": now.Add(time.Hour),
			"organisers": organisers, "accept_terms": testTerms,
		})
		return string(body)
	}
	for _, bad := range []string{"alice", "@alice", "@al ice:x", "#room:x", strings.Repeat("@a", 200) + ":x"} {
		code, out := call(t, srv, alice, true, http.MethodPost, "/catalog/admin/api/bookings", req("@ok:x", bad))
		require.Equal(t, http.StatusBadRequest, code, "%q: %s", bad, out)
		require.Contains(t, out, "organisers: ", bad)
	}
	code, out := call(t, srv, alice, true, http.MethodPost, "/catalog/admin/api/bookings", req("@alice:land-nrw.example", "@bob:land-nrw.example"))
	require.Equal(t, http.StatusOK, code, out)
	var b bookingView
	require.NoError(t, json.Unmarshal([]byte(out), &b))
	code, out = call(t, srv, alice, false, http.MethodGet, "/catalog/admin/api/bookings/"+b.ID, "")
	require.Equal(t, http.StatusOK, code, out)
	require.NoError(t, json.Unmarshal([]byte(out), &b))
	require.Equal(t, []string{"@alice:land-nrw.example", "@bob:land-nrw.example"}, b.Organisers)
}

func auditRows(t *testing.T, e *env) int {
	t.Helper()
	var n int
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT COUNT(*) FROM credentials_audit`).Scan(&n))
	return n
}

// TestAnonymousAdminRefusalsNotAudited: admin API requests without any
// credentials are refused, counted and not written to the audit log (which
// is never pruned); presented-but-invalid credentials stay audited.
func TestAnonymousAdminRefusalsNotAudited(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	before := auditRows(t, e)
	for range 50 {
		code, out := call(t, srv, nil, false, http.MethodGet, "/catalog/admin/api/me", "")
		require.Equal(t, http.StatusUnauthorized, code, out)
		require.Contains(t, out, "log in first")
	}
	require.Equal(t, before, auditRows(t, e), "anonymous refusals are not audited")
	require.Equal(t, 50.0, testutil.ToFloat64(e.c.metrics.anonymous))

	// A session cookie that is no session, and a bearer header that is no ID
	// token: presented credentials, refused and audited.
	code, _ := call(t, srv, &http.Cookie{Name: sessionCookie, Value: "forged"}, false, http.MethodGet, "/catalog/admin/api/me", "")
	require.Equal(t, http.StatusUnauthorized, code)
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/catalog/admin/api/me", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Basic YWxpY2U6cHc=")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Equal(t, before+2, auditRows(t, e))
	require.Equal(t, 50.0, testutil.ToFloat64(e.c.metrics.anonymous))
}

// TestUnauthenticatedRefusalsBudgeted: refusals before any identity is
// established (a bearer token that is no ID token, a forged login callback)
// are audited with a fixed reason, never the request's or the OIDC
// library's text, and at most 60 at once, then one per second; the rest are
// counted. Anyone can cause them, and the audit log is never pruned.
func TestUnauthenticatedRefusalsBudgeted(t *testing.T) {
	idp := newTestIdP(t, map[string]any{"org": "land-nrw", "roles": []string{"booking-admin"}, "amr": []string{"pwd", "otp"}})
	e := newEnv(t, func(c *Config) { c.Admin.Issuer = idp.srv.URL; c.Admin.ClientSecret = "s" })
	h := e.c.Handler()
	serve := func(path, bearer string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequestWithContext(idp.ctx(), http.MethodGet, path, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	before := auditRows(t, e)
	start := time.Now()
	require.Equal(t, http.StatusForbidden, serve("/catalog/admin/callback?state=forged&error=INJECTED-TEXT", ""))
	const n = 200
	for i := range n {
		// A token whose issuer is text of the attacker's choosing.
		require.Equal(t, http.StatusUnauthorized, serve("/catalog/admin/api/me",
			"eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJJTkpFQ1RFRC1URVhUIn0.x"+strconv.Itoa(i)))
	}
	elapsed := time.Since(start)

	added := auditRows(t, e) - before
	unaudited := int(testutil.ToFloat64(e.c.metrics.unaudited))
	require.Equal(t, n+1, added+unaudited, "every refusal is audited or counted")
	require.GreaterOrEqual(t, added, 60)
	require.LessOrEqual(t, added, 61+int(elapsed/time.Second))
	rows, err := e.db.Query(context.Background(), `SELECT user_id, reason FROM credentials_audit ORDER BY seq DESC LIMIT $1`, added)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var user, reason string
		require.NoError(t, rows.Scan(&user, &reason))
		require.Equal(t, "unauthenticated", user)
		require.NotContains(t, reason, "INJECTED")
		require.NotContains(t, reason, "oidc")
	}
	require.NoError(t, rows.Err())
}

// TestAdminLoginNotLockedOut: pending logins are no server-side table
// others can fill; after 10,001 anonymous logins a fresh one still gets its
// redirect and completes. The login state is single use and bound to its
// cookie.
func TestAdminLoginNotLockedOut(t *testing.T) {
	idp := newTestIdP(t, map[string]any{"org": "land-nrw", "roles": []string{"booking-admin"}, "amr": []string{"pwd", "otp"}})
	e := newEnv(t, func(c *Config) { c.Admin.Issuer = idp.srv.URL; c.Admin.ClientSecret = "s" })
	h := e.c.Handler()
	for range 10001 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(idp.ctx(), http.MethodGet, "/catalog/admin/login", nil))
		require.Equal(t, http.StatusFound, rec.Code, rec.Body.String())
	}

	srv := httptest.NewUnstartedServer(h)
	srv.Config.BaseContext = func(net.Listener) context.Context { return idp.ctx() }
	srv.Start()
	defer srv.Close()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(srv.URL + "/catalog/admin/login")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode)
	code, state := idp.authorize(resp.Header.Get("Location"))
	code2 := idp.again(code)
	loginCookies := resp.Cookies()
	callback := srv.URL + "/catalog/admin/callback?" + url.Values{"state": {state}, "code": {code}}.Encode()

	// Without the login's cookie (another browser), the state is unknown.
	resp, err = (&http.Client{CheckRedirect: c.CheckRedirect}).Get(callback)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)

	resp, err = c.Get(callback)
	require.NoError(t, err)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode, string(raw))
	require.Equal(t, "/catalog/admin/", resp.Header.Get("Location"))
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			session = ck
		}
	}
	require.NotNil(t, session)
	st, out := call(t, srv, &http.Cookie{Name: sessionCookie, Value: session.Value}, false, http.MethodGet, "/catalog/admin/api/me", "")
	require.Equal(t, http.StatusOK, st, out)
	require.Contains(t, out, `"org":"land-nrw"`)

	// A replayed callback (the login cookie as it was, a fresh code for the
	// same authorization request) is refused.
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/catalog/admin/callback?"+url.Values{"state": {state}, "code": {code2}}.Encode(), nil)
	require.NoError(t, err)
	for _, ck := range loginCookies {
		req.AddCookie(ck)
	}
	resp, err = (&http.Client{CheckRedirect: c.CheckRedirect}).Do(req)
	require.NoError(t, err)
	raw, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, string(raw), "unknown or expired login state")
}

// TestRefusedRequestTextBounded: request text that a refusal quotes (an
// org, a booking ID in the path, a room ID, a time zone) does not reach the
// never-pruned audit log unbounded. An org that cannot be an organisation's
// key is refused (400, naming the field) before the policy quotes it, a
// path ID no booking can have is not found without being quoted, and every
// audit entry's target and reason are cut to maxAuditText.
func TestRefusedRequestTextBounded(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	nobody := e.session(&Admin{Principal: Principal{Subject: "idp|nobody"}, MFA: true})
	alice := e.session(&Admin{Principal: Principal{Subject: "idp|alice", Org: "land-nrw", Roles: []string{"booking-admin"}}, MFA: true})
	huge := strings.Repeat("A", 60000)
	orgBody, _ := json.Marshal(map[string]any{"org": huge})

	code, out := call(t, srv, nobody, true, http.MethodPost, "/catalog/admin/api/bookings", string(orgBody))
	require.Equal(t, http.StatusBadRequest, code, out[:min(200, len(out))])
	require.Contains(t, out, "org is longer than 128 bytes")
	code, out = call(t, srv, nobody, true, http.MethodPost, "/catalog/admin/api/bookings", `{"org":"Land NRW"}`)
	require.Equal(t, http.StatusBadRequest, code, out)
	require.Contains(t, out, "org must be")
	code, out = call(t, srv, nobody, false, http.MethodGet, "/catalog/admin/api/bookings?org="+strings.ToLower(huge), "")
	require.Equal(t, http.StatusBadRequest, code, out[:min(200, len(out))])
	require.Contains(t, out, "org is longer")
	// A well-formed key that is not configured is the policy's to refuse,
	// like a configured one: the answer does not list the keys.
	code, out = call(t, srv, nobody, true, http.MethodPost, "/catalog/admin/api/bookings", `{"org":"stadt-y"}`)
	require.Equal(t, http.StatusForbidden, code, out)

	code, out = call(t, srv, nobody, true, http.MethodPost, "/catalog/admin/api/bookings/bk_"+huge+"/cancel", "")
	require.Equal(t, http.StatusNotFound, code, out[:min(200, len(out))])
	require.False(t, strings.Contains(out, "AAAA"), "the path ID is not quoted: %.200s", out)

	// Text the handlers quote in their own refusals is cut in the audit log.
	b := e.book(t, "public-20-gold", nil)
	bindBody, _ := json.Marshal(map[string]any{"room_id": "!" + huge})
	code, _ = call(t, srv, alice, true, http.MethodPost, "/catalog/admin/api/bookings/"+b.ID+"/rooms", string(bindBody))
	require.Equal(t, http.StatusBadRequest, code)
	now := e.clock.now()
	tzBody, _ := json.Marshal(map[string]any{
		"tier": "public-20-gold", "unit": "dateRange", "valid_from": now, "valid_until": now.Add(time.Hour),
		"tz": huge, "accept_terms": testTerms,
	})
	code, _ = call(t, srv, alice, true, http.MethodPost, "/catalog/admin/api/bookings", string(tzBody))
	require.Equal(t, http.StatusBadRequest, code)

	var rows, longest int
	require.NoError(t, e.db.QueryRow(context.Background(),
		`SELECT COUNT(*), COALESCE(MAX(MAX(LENGTH(room_id), LENGTH(reason))), 0) FROM credentials_audit WHERE decision LIKE 'admin-denied:%'`).Scan(&rows, &longest))
	require.Equal(t, 6, rows, "every refusal but the GET's 400 is audited")
	require.LessOrEqual(t, longest, maxAuditText)
}

// TestSubjectRefusalsBudgeted: an account of the identity provider without
// any role can cause refusals at will; each subject's are audited at most
// 60 at once, then one per 10 seconds, and the rest are counted. Another
// subject's refusals keep their own budget.
func TestSubjectRefusalsBudgeted(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	nobody := e.session(&Admin{Principal: Principal{Subject: "idp|nobody"}, MFA: true})
	other := e.session(&Admin{Principal: Principal{Subject: "idp|other"}, MFA: true})
	audited := func(subject string) int {
		var n int
		require.NoError(t, e.db.QueryRow(context.Background(), `SELECT COUNT(*) FROM credentials_audit WHERE user_id = $1`, subject).Scan(&n))
		return n
	}
	start := time.Now()
	const n = 100
	for range n {
		code, out := call(t, srv, nobody, true, http.MethodPost, "/catalog/admin/api/bookings", `{}`)
		require.Equal(t, http.StatusForbidden, code, out)
	}
	elapsed := time.Since(start)
	added := audited("idp|nobody")
	require.Equal(t, n, added+int(testutil.ToFloat64(e.c.metrics.overBudget)), "every refusal is audited or counted")
	require.GreaterOrEqual(t, added, subjectAuditBurst)
	require.LessOrEqual(t, added, subjectAuditBurst+1+int(elapsed/(10*time.Second)))

	code, out := call(t, srv, other, true, http.MethodPost, "/catalog/admin/api/bookings", `{}`)
	require.Equal(t, http.StatusForbidden, code, out)
	require.Equal(t, 1, audited("idp|other"))
}

// TestLoginRefusalKeepsTheProvidersTextOut: a login refused at the
// callback answers the browser with the refusal and the provider's error
// code, quoted by a short prefix — not the token endpoint's whole answer
// (its description can name the provider's internals) nor a long error
// parameter; the log keeps the cause.
func TestLoginRefusalKeepsTheProvidersTextOut(t *testing.T) {
	idp := newTestIdP(t, map[string]any{"org": "land-nrw", "roles": []string{"booking-admin"}, "amr": []string{"pwd", "otp"}})
	idp.refusal = "code not valid; session store at redis://10.20.30.40:6379 " + strings.Repeat("d", 400)
	e := newEnv(t, func(c *Config) { c.Admin.Issuer = idp.srv.URL; c.Admin.ClientSecret = "s" })
	srv := httptest.NewUnstartedServer(e.c.Handler())
	srv.Config.BaseContext = func(net.Listener) context.Context { return idp.ctx() }
	srv.Start()
	defer srv.Close()
	login := func(extra url.Values) (int, string) {
		t.Helper()
		jar, err := cookiejar.New(nil)
		require.NoError(t, err)
		c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Get(srv.URL + "/catalog/admin/login")
		require.NoError(t, err)
		resp.Body.Close()
		_, state := idp.authorize(resp.Header.Get("Location"))
		extra.Set("state", state)
		resp, err = c.Get(srv.URL + "/catalog/admin/callback?" + extra.Encode())
		require.NoError(t, err)
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(raw)
	}

	code, body := login(url.Values{"code": {"not-the-code"}})
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, body, `code exchange failed: the identity provider answered "invalid_grant"`)
	require.NotContains(t, body, "10.20.30.40")
	require.NotContains(t, body, "code not valid")

	code, body = login(url.Values{"error": {"access_denied" + strings.Repeat("<x>", 1000)}})
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, body, `the identity provider answered "access_denied<x>`)
	require.Less(t, len(body), 200, "%.300s", body)
}

// TestLogoutNeedsThePagesHeader: another site's form can POST to the
// logout; the browser sends no session cookie with it (SameSite=Strict) but
// applies the answer's Set-Cookie, which ended the admin's session. A
// logout without the page's X-GXConf-CSRF header is now refused and
// changes nothing.
func TestLogoutNeedsThePagesHeader(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	alice := e.session(&Admin{Principal: Principal{Subject: "idp|alice", Org: "land-nrw", Roles: []string{"booking-admin"}}, MFA: true})
	logout := func(cookie *http.Cookie, csrf bool) *http.Response {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/catalog/admin/logout", strings.NewReader(""))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if cookie != nil {
			req.AddCookie(cookie)
		}
		if csrf {
			req.Header.Set("X-GXConf-CSRF", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	for _, cookie := range []*http.Cookie{nil, alice} {
		resp := logout(cookie, false)
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
		require.Empty(t, resp.Cookies(), "a cross-site form's logout clears no cookie")
		code, out := call(t, srv, alice, false, http.MethodGet, "/catalog/admin/api/me", "")
		require.Equal(t, http.StatusOK, code, out)
	}

	resp := logout(alice, true)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Len(t, resp.Cookies(), 1)
	require.Equal(t, sessionCookie, resp.Cookies()[0].Name)
	require.Negative(t, resp.Cookies()[0].MaxAge)
	code, _ := call(t, srv, alice, false, http.MethodGet, "/catalog/admin/api/me", "")
	require.Equal(t, http.StatusUnauthorized, code)
}

// TestRefusedTransitionAuditedWithItsBooking: a transition the booking's
// state refuses (409) is audited against that booking and its
// organisation, not against the acting admin's own organisation.
func TestRefusedTransitionAuditedWithItsBooking(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	provider := e.session(&Admin{Principal: Principal{Subject: "idp|provider", Org: "stadt-x", Roles: []string{"provider"}}, MFA: true})
	b := e.book(t, "public-20-gold", nil) // land-nrw's, active at once

	code, out := call(t, srv, provider, true, http.MethodPost, "/catalog/admin/api/bookings/"+b.ID+"/confirm", "{}")
	require.Equal(t, http.StatusConflict, code, out)
	require.Contains(t, out, "cannot confirm a booking that is active")

	var target, reason string
	require.NoError(t, e.db.QueryRow(context.Background(),
		`SELECT room_id, reason FROM credentials_audit WHERE decision = 'admin-denied:confirm'`).Scan(&target, &reason))
	require.Equal(t, b.ID, target, "the refusal names the booking it concerned")
	require.Contains(t, reason, "cannot confirm")
}

// TestBindMeetingKeyIsPrintable: an organisation's admin may claim a room
// they do not control, and the bot quotes the binding's meeting key in
// that room ("!conf bookings"): a key with line breaks, control or bidi
// formatting characters is refused (400, naming the field), so the claim
// cannot put text of its own making into the room's messages.
func TestBindMeetingKeyIsPrintable(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	alice := e.session(&Admin{Principal: Principal{Subject: "idp|alice", Org: "land-nrw", Roles: []string{"booking-admin"}}, MFA: true})
	b := e.book(t, "public-20-gold", nil)
	path := "/catalog/admin/api/bookings/" + b.ID + "/rooms"
	for _, meeting := range []string{
		"weekly\n\nThis room's booking has ended; re-enter your password at https://evil.example",
		"weekly\u202egnp.exe",
		"tab\there",
		strings.Repeat("m", 256),
	} {
		body, _ := json.Marshal(map[string]string{"room_id": "!victim:x", "meeting": meeting})
		code, out := call(t, srv, alice, true, http.MethodPost, path, string(body))
		require.Equal(t, http.StatusBadRequest, code, "%q: %s", meeting, out)
		require.Contains(t, out, "meeting: ")
	}
	_, _, bound, err := e.c.RoomBooking(context.Background(), "!victim:x")
	require.NoError(t, err)
	require.False(t, bound, "no refused binding was stored")

	body, _ := json.Marshal(map[string]string{"room_id": "!victim:x", "meeting": "Weekly sync – Raum 3"})
	code, out := call(t, srv, alice, true, http.MethodPost, path, string(body))
	require.Equal(t, http.StatusOK, code, out)
	text, err := e.c.RoomBookings(context.Background(), "!victim:x")
	require.NoError(t, err)
	require.Contains(t, text, "• counted with meeting Weekly sync – Raum 3\n")
}

// TestUnbindKeepsABindingMadeMeanwhile: an unbind checks that the room is
// bound to the booking in the path and deletes that binding in one
// transaction. A binding another organisation's booking made in between
// (here: committed while the unbind waits for the database's write lock,
// as a concurrent bind on another request or replica would) stays: the
// unbind answers 404 instead of deleting the other organisation's binding.
func TestUnbindKeepsABindingMadeMeanwhile(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	alice := e.session(&Admin{Principal: Principal{Subject: "idp|alice", Org: "land-nrw", Roles: []string{"booking-admin"}}, MFA: true})
	own := e.book(t, "public-20-gold", nil)
	other, err := e.c.Book(ctx, Principal{Subject: "https://idp|x", Org: "stadt-x"}, "stadt-x", BookingRequest{
		Tier: "public-20-gold", Unit: UnitDateRange, ValidFrom: e.clock.now(), ValidUntil: e.clock.now().Add(time.Hour),
		Organisers: []string{"@org:x"}, AcceptTerms: testTerms,
	})
	require.NoError(t, err)
	require.NoError(t, e.c.BindRoom(ctx, orgAdmin, own.ID, "!r:x", "")) // alice's unconfirmed claim

	// The other organisation's scheduler takes the room over (allowed: an
	// unconfirmed claim blocks nobody), in a transaction that holds the
	// write lock until the unbind is waiting for it.
	conn, err := e.db.RawDB.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, `BEGIN IMMEDIATE`)
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, `UPDATE catalog_binding SET booking_id = $1, confirmed_by = 'meetings:@org:x' WHERE room_id = '!r:x'`, other.ID)
	require.NoError(t, err)

	type answer struct {
		code int
		out  string
	}
	done := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/catalog/admin/api/bookings/"+own.ID+"/unbind", strings.NewReader(`{"room_id":"!r:x"}`))
		req.AddCookie(alice)
		req.Header.Set("X-GXConf-CSRF", "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- answer{out: err.Error()}
			return
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		done <- answer{resp.StatusCode, string(raw)}
	}()
	// The unbind holds a second connection while it waits for the lock.
	require.Eventually(t, func() bool { return e.db.RawDB.Stats().InUse >= 2 }, 5*time.Second, 10*time.Millisecond)
	_, err = conn.ExecContext(ctx, `COMMIT`)
	require.NoError(t, err)

	a := <-done
	require.Equal(t, http.StatusNotFound, a.code, a.out)
	require.Contains(t, a.out, "is not bound to "+own.ID)
	bd, ok, err := e.c.st.binding(ctx, "!r:x")
	require.NoError(t, err)
	require.True(t, ok, "the other organisation's binding is kept")
	require.Equal(t, other.ID, bd.Booking)
}
