package catalog

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/gxfs-conf/gxconf/internal/clip"
	"github.com/open-policy-agent/opa/v1/rego"
	"golang.org/x/oauth2"
)

//go:embed policy/admin.rego
var defaultAdminPolicy string

// AdminPolicyQuery is the rule an admin policy must define.
const AdminPolicyQuery = "data.gxconf.catalog.admin.decision"

// Admin is an authenticated admin.
type Admin struct {
	Principal
	Issuer string   `json:"issuer"`
	Sub    string   `json:"sub"`
	Name   string   `json:"name,omitempty"`
	AMR    []string `json:"amr"`
	ACR    string   `json:"acr,omitempty"`
	MFA    bool     `json:"mfa"`
	Expiry time.Time
}

// adminAuth verifies OpenID Connect ID tokens of the admin API, keeps the
// page's login sessions and asks the Rego policy.
type adminAuth struct {
	cfg    AdminConfig
	secret string
	orgs   []string
	query  rego.PreparedEvalQuery

	mu       sync.Mutex
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	sessions map[string]*Admin // session ID hash → admin
	// loginKey seals the pending login's state cookie (AES-256-GCM, the
	// state as additional data); generated at start, so a restart ends
	// pending logins.
	loginKey cipher.AEAD
	// usedLogins: hashes of states whose login completed, until they expire
	// (a state cookie is single use). Only logins the identity provider
	// vouched for are recorded, so anonymous clients cannot grow it.
	usedLogins map[string]time.Time
}

// loginState is what a pending login keeps in its cookie.
type loginState struct {
	Verifier string    `json:"v"`
	Nonce    string    `json:"n"`
	Expires  time.Time `json:"e"`
}

func newAdminAuth(ctx context.Context, cfg AdminConfig, c *Catalog) (*adminAuth, error) {
	src, name := defaultAdminPolicy, "gxconf/catalog-admin.rego"
	if cfg.PolicyFile != "" {
		b, err := os.ReadFile(cfg.PolicyFile)
		if err != nil {
			return nil, fmt.Errorf("catalog: admin.policy_file: %w", err)
		}
		src, name = string(b), cfg.PolicyFile
	}
	q, err := rego.New(rego.Query(AdminPolicyQuery), rego.Module(name, src)).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("catalog: failed to compile admin policy %s: %w", name, err)
	}
	secret := cfg.ClientSecret
	if cfg.ClientSecretFile != "" {
		b, err := os.ReadFile(cfg.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("catalog: admin.client_secret_file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("catalog: failed to generate the login key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	a := &adminAuth{cfg: cfg, secret: secret, query: q, sessions: map[string]*Admin{}, loginKey: aead, usedLogins: map[string]time.Time{}}
	for k := range cfg.Organisations {
		a.orgs = append(a.orgs, k)
	}
	slices.Sort(a.orgs)
	if a.cfg.RedirectURL == "" {
		a.cfg.RedirectURL = c.baseURL() + "/catalog/admin/callback"
	}
	return a, nil
}

// oidcProvider discovers the OpenID provider at first use (it may start
// after gxconf) and keeps it.
func (a *adminAuth) oidcProvider(ctx context.Context) (*oidc.Provider, *oidc.IDTokenVerifier, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.provider != nil {
		return a.provider, a.verifier, nil
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(dctx, a.cfg.Issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to discover the OpenID provider: %w", err)
	}
	a.provider = p
	a.verifier = p.Verifier(&oidc.Config{ClientID: a.cfg.ClientID})
	return a.provider, a.verifier, nil
}

// verify checks an ID token (signature, issuer, audience, expiry) and reads
// the admin's attributes; nonce, when set, must match.
func (a *adminAuth) verify(ctx context.Context, raw, nonce string, now time.Time) (*Admin, error) {
	_, v, err := a.oidcProvider(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if nonce != "" && subtle.ConstantTimeCompare([]byte(tok.Nonce), []byte(nonce)) != 1 {
		return nil, fmt.Errorf("%w: nonce mismatch", ErrUnauthenticated)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	ad := &Admin{Issuer: tok.Issuer, Sub: tok.Subject, Expiry: tok.Expiry}
	ad.Subject = tok.Issuer + "|" + tok.Subject
	ad.Org, _ = claims[a.cfg.OrgClaim].(string)
	ad.Roles = stringList(claims[a.cfg.RolesClaim])
	ad.AMR = stringList(claims["amr"])
	ad.ACR, _ = claims["acr"].(string)
	ad.Name, _ = claims["name"].(string)
	ad.MFA = mfaProven(ad.AMR, ad.ACR, a.cfg.AcceptedACR)
	return ad, nil
}

func stringList(v any) []string {
	switch x := v.(type) {
	case string:
		return strings.Fields(x)
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// mfaProven: a configured acr, or else an amr (RFC 8176 §2) that says
// "mfa" or names factors of two kinds (knowledge, possession, inherence).
func mfaProven(amr []string, acr string, accepted []string) bool {
	if len(accepted) > 0 {
		return acr != "" && slices.Contains(accepted, acr)
	}
	kinds := map[string]bool{}
	for _, m := range amr {
		switch m {
		case "mfa":
			return true
		case "pwd", "pin", "kba":
			kinds["knowledge"] = true
		case "otp", "hwk", "swk", "sms", "tel", "sc":
			kinds["possession"] = true
		case "fpt", "face", "iris", "retina", "vbm":
			kinds["inherence"] = true
		}
	}
	return len(kinds) >= 2
}

// decide asks the Rego policy; it fails closed.
func (a *adminAuth) decide(ctx context.Context, ad *Admin, action string, org string, b *Booking) (bool, string, error) {
	res := map[string]any{"org": org}
	if b != nil {
		res["org"], res["level"], res["state"] = b.Org, string(b.Snapshot.Level), string(b.State)
	}
	roles := ad.Roles
	if roles == nil {
		roles = []string{}
	}
	input := map[string]any{
		"subject":       map[string]any{"sub": ad.Subject, "org": ad.Org, "roles": toAny(roles), "mfa": ad.MFA},
		"action":        action,
		"resource":      res,
		"organisations": toAny(a.orgs),
	}
	rs, err := a.query.Eval(ctx, rego.EvalInput(input))
	if err != nil {
		return false, "", fmt.Errorf("failed to evaluate admin policy: %w", err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return false, "", fmt.Errorf("admin policy returned no decision")
	}
	raw, _ := json.Marshal(rs[0].Expressions[0].Value)
	var d struct {
		Allow  *bool  `json:"allow"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(raw, &d); err != nil || d.Allow == nil {
		return false, "", fmt.Errorf("admin policy returned a malformed decision")
	}
	return *d.Allow, d.Reason, nil
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// Page login: authorization code flow with PKCE, state and nonce.

const (
	sessionCookie = "gxconf_catalog_session"
	// loginCookie + "_" + a digest of the state holds a pending login, so
	// logins in several tabs do not overwrite each other.
	loginCookie = "gxconf_catalog_login"
	loginTTL    = 10 * time.Minute
)

func loginCookieName(state string) string {
	return loginCookie + "_" + hashID(state)[:16]
}

// sealLogin encrypts a pending login, bound to its state.
func (a *adminAuth) sealLogin(state string, l loginState) string {
	plain, _ := json.Marshal(l)
	nonce := make([]byte, a.loginKey.NonceSize())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(a.loginKey.Seal(nonce, nonce, plain, []byte(state)))
}

// openLogin reads the pending login of state from its cookie.
func (a *adminAuth) openLogin(r *http.Request, state string, now time.Time) (loginState, bool) {
	var l loginState
	if state == "" {
		return l, false
	}
	c, err := r.Cookie(loginCookieName(state))
	if err != nil {
		return l, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(c.Value)
	ns := a.loginKey.NonceSize()
	if err != nil || len(raw) < ns {
		return l, false
	}
	plain, err := a.loginKey.Open(nil, raw[:ns], raw[ns:], []byte(state))
	if err != nil || json.Unmarshal(plain, &l) != nil || now.After(l.Expires) {
		return l, false
	}
	a.mu.Lock()
	_, used := a.usedLogins[hashID(state)]
	a.mu.Unlock()
	return l, !used
}

func (a *adminAuth) secureCookie(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(a.cfg.RedirectURL, "https:")
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashID(s string) string {
	h := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

func (a *adminAuth) oauth(p *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{
		ClientID: a.cfg.ClientID, ClientSecret: a.secret, Endpoint: p.Endpoint(),
		RedirectURL: a.cfg.RedirectURL, Scopes: []string{oidc.ScopeOpenID, "profile"},
	}
}

func (a *adminAuth) login(w http.ResponseWriter, r *http.Request, now time.Time) {
	if a.secret == "" {
		http.Error(w, "The admin page login is not configured (catalog.admin.client_secret).", http.StatusNotFound)
		return
	}
	p, _, err := a.oidcProvider(r.Context())
	if err != nil {
		http.Error(w, "The identity provider is unreachable; try again later.", http.StatusServiceUnavailable)
		return
	}
	// The pending login lives in the browser (sealed, bound to the state),
	// not in a server-side table others' logins could fill.
	state, nonce, verifier := randomToken(), randomToken(), oauth2.GenerateVerifier()
	exp := now.Add(loginTTL)
	http.SetCookie(w, &http.Cookie{
		Name: loginCookieName(state), Value: a.sealLogin(state, loginState{Verifier: verifier, Nonce: nonce, Expires: exp}),
		Path: "/catalog/admin/callback", HttpOnly: true, Secure: a.secureCookie(r),
		// Lax: the callback is a top-level navigation from the identity provider.
		SameSite: http.SameSiteLaxMode, MaxAge: int(loginTTL / time.Second),
	})
	http.Redirect(w, r, a.oauth(p).AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusFound)
}

// callback finishes the login; it returns the admin for the audit log.
func (a *adminAuth) callback(w http.ResponseWriter, r *http.Request, now time.Time) (*Admin, error) {
	q := r.URL.Query()
	state := q.Get("state")
	l, ok := a.openLogin(r, state, now)
	if state != "" {
		http.SetCookie(w, &http.Cookie{Name: loginCookieName(state), Value: "", Path: "/catalog/admin/callback", MaxAge: -1, HttpOnly: true, Secure: a.secureCookie(r), SameSite: http.SameSiteLaxMode})
	}
	if !ok {
		return nil, fmt.Errorf("%w: unknown or expired login state", ErrUnauthenticated)
	}
	if e := q.Get("error"); e != "" {
		return nil, fmt.Errorf("%w: the identity provider answered %s", ErrUnauthenticated, clip.Quote(e))
	}
	p, _, err := a.oidcProvider(r.Context())
	if err != nil {
		return nil, err
	}
	tok, err := a.oauth(p).Exchange(r.Context(), q.Get("code"), oauth2.VerifierOption(l.Verifier))
	if err != nil {
		why := fmt.Errorf("%w: code exchange failed", ErrUnauthenticated)
		if re := (*oauth2.RetrieveError)(nil); errors.As(err, &re) && re.ErrorCode != "" {
			why = fmt.Errorf("%w: code exchange failed: the identity provider answered %s", ErrUnauthenticated, clip.Quote(re.ErrorCode))
		}
		return nil, &hiddenCause{refusal: why, cause: err}
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, fmt.Errorf("%w: no ID token", ErrUnauthenticated)
	}
	ad, err := a.verify(r.Context(), raw, l.Nonce, now)
	if err != nil {
		return nil, err
	}
	// The identity provider vouched for this login: its state is spent.
	a.mu.Lock()
	for k, exp := range a.usedLogins {
		if now.After(exp) {
			delete(a.usedLogins, k)
		}
	}
	_, replay := a.usedLogins[hashID(state)]
	a.usedLogins[hashID(state)] = l.Expires
	a.mu.Unlock()
	if replay {
		return nil, fmt.Errorf("%w: unknown or expired login state", ErrUnauthenticated)
	}
	if !ad.MFA {
		return ad, fmt.Errorf("%w: the login did not use multi-factor authentication", ErrForbidden)
	}
	sid := randomToken()
	exp := now.Add(a.cfg.SessionTTL)
	if !ad.Expiry.IsZero() && ad.Expiry.Before(exp) {
		exp = ad.Expiry
	}
	ad.Expiry = exp
	a.mu.Lock()
	for k, s := range a.sessions {
		if now.After(s.Expiry) {
			delete(a.sessions, k)
		}
	}
	a.sessions[hashID(sid)] = ad
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: sid, Path: "/catalog/", HttpOnly: true,
		Secure: a.secureCookie(r), SameSite: http.SameSiteStrictMode, Expires: exp,
	})
	return ad, nil
}

func (a *adminAuth) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		a.mu.Lock()
		delete(a.sessions, hashID(c.Value))
		a.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/catalog/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// authenticate reads a bearer ID token, or the page's session cookie. A
// cookie-authenticated request that changes state must carry the header
// X-GXConf-CSRF (a cross-site form cannot set it; no CORS is offered).
func (a *adminAuth) authenticate(r *http.Request, now time.Time) (*Admin, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		raw, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || raw == "" {
			return nil, fmt.Errorf("%w: Authorization must be Bearer <ID token>", ErrUnauthenticated)
		}
		return a.verify(r.Context(), raw, "", now)
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, fmt.Errorf("%w: log in first", ErrUnauthenticated)
	}
	a.mu.Lock()
	ad, ok := a.sessions[hashID(c.Value)]
	a.mu.Unlock()
	if !ok || now.After(ad.Expiry) {
		return nil, fmt.Errorf("%w: the session has ended; log in again", ErrUnauthenticated)
	}
	if r.Method != http.MethodGet && r.Header.Get("X-GXConf-CSRF") != "1" {
		return nil, fmt.Errorf("%w: missing X-GXConf-CSRF header", ErrForbidden)
	}
	return ad, nil
}
