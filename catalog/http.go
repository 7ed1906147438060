package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/internal/clip"
	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// Handler serves the catalogue (public), the provider's DID document, the
// status list, and the admin API and page. Mount it at "/catalog/" and
// "/.well-known/did.json".
func (c *Catalog) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/did.json", c.serveDID)
	mux.HandleFunc("GET /catalog/{$}", c.serveCatalogue)
	mux.HandleFunc("GET /catalog/credentials/{name}", c.serveCredential)
	mux.HandleFunc("GET "+ShapePath, c.serveShape)
	mux.HandleFunc("GET /catalog/status/revocation", c.serveStatus)
	mux.HandleFunc("GET /catalog/admin/{$}", servePage)
	mux.HandleFunc("GET /catalog/admin/login", func(w http.ResponseWriter, r *http.Request) { c.admin.login(w, r, c.now()) })
	mux.HandleFunc("GET /catalog/admin/callback", c.serveCallback)
	mux.HandleFunc("POST /catalog/admin/logout", func(w http.ResponseWriter, r *http.Request) {
		// Another site's form can POST here: the browser sends no session
		// cookie with it (SameSite=Strict) but applies the answer's
		// Set-Cookie. The page's header is required, as for the admin API.
		if r.Header.Get("X-GXConf-CSRF") != "1" {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "missing X-GXConf-CSRF header"})
			return
		}
		c.admin.logout(w, r)
		w.WriteHeader(http.StatusNoContent)
	})
	api := "/catalog/admin/api/"
	mux.Handle("GET "+api+"me", c.adminAPI("me", c.apiMe))
	mux.Handle("GET "+api+"bookings", c.adminAPI("list", c.apiList))
	mux.Handle("POST "+api+"bookings", c.adminAPI("book", c.apiBook))
	mux.Handle("GET "+api+"bookings/{id}", c.adminAPI("get", c.apiGet))
	mux.Handle("GET "+api+"bookings/{id}/entitlement", c.adminAPI("entitlement", c.apiGet))
	mux.Handle("POST "+api+"bookings/{id}/rooms", c.adminAPI("bind", c.apiBind))
	mux.Handle("POST "+api+"bookings/{id}/unbind", c.adminAPI("unbind", c.apiBind))
	for _, action := range []string{"confirm", "suspend", "resume", "cancel", "revoke"} {
		mux.Handle("POST "+api+"bookings/{id}/"+action, c.adminAPI(action, c.apiAct))
	}
	return mux
}

func (c *Catalog) serveDID(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/did+json")
	_, _ = w.Write(c.didDoc)
}

// catalogueView is the public catalogue document.
type catalogueView struct {
	Provider    string            `json:"provider"`
	DID         string            `json:"did"`
	Shape       string            `json:"shape"`
	StatusList  string            `json:"status_list"`
	Levels      map[string]string `json:"terms"`
	Tiers       []Tier            `json:"tiers"`
	Credentials []credentialView  `json:"credentials"`
}

type credentialView struct {
	Credential
	URL string `json:"url"`
}

func (c *Catalog) serveCatalogue(w http.ResponseWriter, _ *http.Request) {
	v := catalogueView{
		Provider: c.cat.Provider, DID: c.cat.DID, Shape: c.baseURL() + ShapePath, StatusList: c.StatusListURL(),
		Levels: map[string]string{}, Tiers: c.cat.Tiers,
	}
	for lv, o := range c.cfg.Levels {
		v.Levels[string(lv)] = o.TermsHash
	}
	for _, cr := range c.cat.Creds {
		v.Credentials = append(v.Credentials, credentialView{Credential: cr, URL: c.baseURL() + "/catalog/credentials/" + cr.Name})
	}
	writeJSON(w, http.StatusOK, v)
}

func (c *Catalog) serveCredential(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSuffix(r.PathValue("name"), ".jwt")
	cr, ok := c.cat.Credential(name)
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/vc+jwt")
	_, _ = io.WriteString(w, cr.JWT)
}

func (c *Catalog) serveShape(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/turtle")
	_, _ = io.WriteString(w, c.cat.Shape)
}

func (c *Catalog) serveStatus(w http.ResponseWriter, r *http.Request) {
	jwt, err := c.StatusList(r.Context())
	if err != nil {
		c.log.Error().Err(err).Msg("Failed to build the status list")
		http.Error(w, "status list unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/vc+jwt")
	w.Header().Set("Cache-Control", "max-age=60")
	_, _ = io.WriteString(w, jwt)
}

func (c *Catalog) serveCallback(w http.ResponseWriter, r *http.Request) {
	ad, err := c.admin.callback(w, r, c.now())
	if err != nil {
		if ad == nil {
			c.auditUnauthenticated(r, "login", err)
		} else { // the identity provider vouched for ad: the refusal is its
			c.auditRefusal(r, ad.Subject, "login", "", "", err.Error())
		}
		c.metrics.admin.WithLabelValues("login", "refused").Inc()
		http.Error(w, "Login refused: "+publicReason(err), http.StatusForbidden)
		return
	}
	c.auditAdmin(r.Context(), ad.Subject, "login", ad.Org, "", "amr="+strings.Join(ad.AMR, ","), true)
	c.metrics.admin.WithLabelValues("login", "ok").Inc()
	http.Redirect(w, r, "/catalog/admin/", http.StatusFound)
}

// publicReason is an error's text without wrapped causes from libraries
// (hiddenCause).
// It is at most maxPublicReason bytes of printable text: what a refusal
// quotes from the request is a short prefix (clip.Quote), and this bounds
// the rest.
func publicReason(err error) string {
	if hc := (*hiddenCause)(nil); errors.As(err, &hc) {
		err = hc.refusal
	}
	for _, s := range []error{ErrUnauthenticated, ErrForbidden, ErrInvalid, ErrState, ErrNotFound, ErrWindow} {
		if errors.Is(err, s) {
			return clip.Text(err.Error(), maxPublicReason)
		}
	}
	return "internal error"
}

// maxPublicReason bounds the text of a refusal's answer.
const maxPublicReason = 512

// apiFunc handles one admin request for an authenticated admin; it returns
// the response, the booking it concerned (for the audit log) and an error.
type apiFunc func(ctx context.Context, ad *Admin, r *http.Request, body []byte) (any, *Booking, error)

// presentsCredentials: the request carries an Authorization header or the
// page's session cookie, valid or not.
func presentsCredentials(r *http.Request) bool {
	if r.Header.Get("Authorization") != "" {
		return true
	}
	_, err := r.Cookie(sessionCookie)
	return err == nil
}

// adminAPI authenticates, decodes and renders; every state-changing
// request and every refusal of presented credentials is written to the
// audit log. Requests without any credentials are only counted
// (gxconf_catalog_admin_anonymous_refusals_total). The Rego policy is
// asked inside each handler, once the resource's organisation is known.
func (c *Catalog) adminAPI(action string, fn apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		ad, err := c.admin.authenticate(r, c.now())
		if err != nil {
			if !presentsCredentials(r) {
				// Nobody to hold to account: counted and logged at debug,
				// not appended to the (never pruned) audit log.
				c.metrics.anonymous.Inc()
				c.log.Debug().Str("action", action).Str("remote", r.RemoteAddr).Msg("Refused an admin request without credentials")
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": publicReason(err)})
				return
			}
			c.renderAdmin(w, r, action, nil, nil, nil, err)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			c.renderAdmin(w, r, action, ad, nil, nil, fmt.Errorf("%w: body too large", ErrInvalid))
			return
		}
		out, b, err := fn(ctx, ad, r, body)
		c.renderAdmin(w, r, action, ad, b, out, err)
	})
}

func (c *Catalog) renderAdmin(w http.ResponseWriter, r *http.Request, action string, ad *Admin, b *Booking, out any, err error) {
	subject, org, bookingID := "anonymous", "", ""
	if ad != nil {
		subject, org = ad.Subject, ad.Org
	}
	if b != nil {
		bookingID, org = b.ID, b.Org
	}
	mutates := r.Method != http.MethodGet
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrUnauthenticated):
			status = http.StatusUnauthorized
		case errors.Is(err, ErrForbidden):
			status = http.StatusForbidden
		case errors.Is(err, ErrNotFound):
			status = http.StatusNotFound
		case errors.Is(err, ErrInvalid), errors.Is(err, ErrWindow):
			status = http.StatusBadRequest
		case errors.Is(err, ErrState):
			status = http.StatusConflict
		}
		if status == http.StatusInternalServerError {
			c.log.Error().Err(err).Str("action", action).Msg("Admin request failed")
		}
		c.metrics.admin.WithLabelValues(action, fmt.Sprint(status)).Inc()
		switch {
		case ad == nil && status == http.StatusUnauthorized:
			c.auditUnauthenticated(r, action, err)
		case status == http.StatusUnauthorized || status == http.StatusForbidden || mutates:
			c.auditRefusal(r, subject, action, org, bookingID, publicReason(err))
		}
		writeJSON(w, status, map[string]string{"error": publicReason(err)})
		return
	}
	c.metrics.admin.WithLabelValues(action, "ok").Inc()
	if mutates {
		c.auditAdmin(r.Context(), subject, action, org, bookingID, "", true)
	}
	if s, ok := out.(rawJWT); ok {
		w.Header().Set("Content-Type", "application/vc+jwt")
		_, _ = io.WriteString(w, string(s))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

type rawJWT string

// The audit budget of refusals that established no identity.
const (
	unauthenticatedAuditRate  = 1 // rows per second
	unauthenticatedAuditBurst = 60
)

// auditUnauthenticated records a refusal before any identity was
// established: a bearer token or session cookie that is not valid, a login
// whose state, code or ID token failed. Anyone can cause these, and the
// audit log is never pruned, so they are written with a fixed reason (the
// error, which carries text from the request and the OIDC library, goes to
// the operator log) and at most unauthenticatedAuditBurst at once, then
// unauthenticatedAuditRate per second; the rest are counted
// (gxconf_catalog_admin_unaudited_refusals_total) and logged at debug.
func (c *Catalog) auditUnauthenticated(r *http.Request, action string, err error) {
	if !c.authAudit.Allow() {
		c.metrics.unaudited.Inc()
		c.log.Debug().Err(err).Str("action", action).Str("remote", r.RemoteAddr).Msg("Refused credentials that established no identity (over the audit budget)")
		return
	}
	c.log.Info().Err(err).Str("action", action).Str("remote", r.RemoteAddr).Msg("Refused credentials that established no identity")
	reason := "presented credentials not valid"
	if action == "login" {
		reason = "login failed before an identity was established"
	}
	c.auditAdmin(r.Context(), "unauthenticated", action, "", "", reason, false)
}

// The audit budget of each identified subject's refusals.
const (
	subjectAuditRate    = rate.Limit(0.1) // rows per second
	subjectAuditBurst   = 60
	subjectAuditTracked = 4096 // subjects with a budget; then all start afresh
)

// subjectBudget is a rate limiter per subject.
type subjectBudget struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func (s *subjectBudget) allow(subject string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.m[subject]
	if !ok {
		if s.m == nil || len(s.m) >= subjectAuditTracked {
			s.m = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(subjectAuditRate, subjectAuditBurst)
		s.m[subject] = l
	}
	return l.Allow()
}

// auditRefusal records a refusal of an identified subject (an account of
// the identity provider, possibly without any role). Any such account can
// cause refusals, and the audit log is never pruned, so each subject has a
// budget: subjectAuditBurst rows at once, then subjectAuditRate per
// second; the rest are counted
// (gxconf_catalog_admin_unaudited_subject_refusals_total) and logged.
func (c *Catalog) auditRefusal(r *http.Request, subject, action, org, bookingID, reason string) {
	if !c.subjectAudit.allow(subject) {
		c.metrics.overBudget.Inc()
		c.log.Info().Str("subject", subject).Str("action", action).Str("remote", r.RemoteAddr).Str("reason", auditText(reason)).
			Msg("Refused an admin request (over the subject's audit budget, not audited)")
		return
	}
	c.auditAdmin(r.Context(), subject, action, org, bookingID, reason, false)
}

// auditAdmin writes one admin action to the hash-chained audit log:
// decision admin:<action> or admin-denied:<action>, the admin as user, the
// booking (or organisation) as room.
func (c *Catalog) auditAdmin(ctx context.Context, subject, action, org, bookingID, reason string, ok bool) {
	decision := "admin:" + action
	if !ok {
		decision = "admin-denied:" + action
	}
	target := bookingID
	if target == "" {
		target = "org:" + org
	}
	if err := c.audit.Append(context.WithoutCancel(ctx), credentials.AuditEntry{
		Decision: decision, UserID: subject, RoomID: auditText(target), Reason: auditText(reason),
	}); err != nil {
		c.log.Error().Err(err).Str("action", action).Msg("Failed to audit an admin action")
	}
}

// maxAuditText bounds the target and reason of one admin audit entry. The
// audit log is never pruned, and refusals quote request text (a booking ID
// from the path, a room ID, a time zone, the Rego reason's organisation):
// every field is validated where it is read, and this is the backstop.
const maxAuditText = 512

// auditText is s cut to maxAuditText bytes at a rune boundary, marked "…".
func auditText(s string) string {
	if len(s) <= maxAuditText {
		return s
	}
	cut := maxAuditText - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// maxOrgLen bounds the org a request names (admin.organisations keys are
// at most 32 bytes, config's simpleName).
const maxOrgLen = 128

// checkOrg refuses an org named in a request that cannot be a configured
// organisation's key, before it reaches the policy's reason or the audit
// log. A well-formed key that is not configured is left to the policy, so
// the answer does not tell an account without a role which keys exist.
func checkOrg(org string) error {
	if len(org) > maxOrgLen {
		return fmt.Errorf("%w: org is longer than %d bytes", ErrInvalid, maxOrgLen)
	}
	if org != "" && !simpleName.MatchString(org) {
		return fmt.Errorf("%w: org must be lower-case letters, digits and '-', starting with a letter, at most 32", ErrInvalid)
	}
	return nil
}

// authorize asks the Rego policy for an action on org's resource.
func (c *Catalog) authorize(ctx context.Context, ad *Admin, action, org string, b *Booking) error {
	ok, reason, err := c.admin.decide(ctx, ad, action, org, b)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s", ErrForbidden, reason)
	}
	return nil
}

func (c *Catalog) apiMe(ctx context.Context, ad *Admin, _ *http.Request, _ []byte) (any, *Booking, error) {
	return map[string]any{
		"subject": ad.Subject, "name": ad.Name, "org": ad.Org, "roles": ad.Roles, "amr": ad.AMR, "acr": ad.ACR, "mfa": ad.MFA,
		"provider": c.authorize(ctx, ad, "confirm", ad.Org, nil) == nil,
	}, nil, nil
}

func (c *Catalog) apiList(ctx context.Context, ad *Admin, r *http.Request, _ []byte) (any, *Booking, error) {
	org := r.URL.Query().Get("org")
	if err := checkOrg(org); err != nil {
		return nil, nil, err
	}
	provider := c.authorize(ctx, ad, "confirm", ad.Org, nil) == nil
	if org == "" && !provider {
		org = ad.Org
	}
	if err := c.authorize(ctx, ad, "list", org, nil); err != nil && !(provider && org == "") {
		return nil, nil, err
	}
	bs, err := c.List(ctx, org)
	if err != nil {
		return nil, nil, err
	}
	out := make([]bookingView, 0, len(bs))
	for _, b := range bs {
		out = append(out, c.view(ctx, b))
	}
	return map[string]any{"bookings": out}, nil, nil
}

// bookingView is a booking with its bound rooms, without the JWT.
type bookingView struct {
	*Booking
	Entitlement string    `json:"entitlement,omitempty"`
	BoundRooms  []Binding `json:"bound_rooms"`
}

func (c *Catalog) view(ctx context.Context, b *Booking) bookingView {
	rooms, err := c.Bindings(ctx, b.ID)
	if err != nil {
		c.log.Warn().Err(err).Str("booking", b.ID).Msg("Failed to list a booking's rooms")
	}
	if rooms == nil {
		rooms = []Binding{}
	}
	return bookingView{Booking: b, BoundRooms: rooms}
}

type bookBody struct {
	BookingRequest
	Org string `json:"org"`
}

func (c *Catalog) apiBook(ctx context.Context, ad *Admin, _ *http.Request, body []byte) (any, *Booking, error) {
	var req bookBody
	if err := decodeStrict(body, &req); err != nil {
		return nil, nil, err
	}
	if err := checkOrg(req.Org); err != nil {
		return nil, nil, err
	}
	if req.Org == "" {
		req.Org = ad.Org
	}
	if err := c.authorize(ctx, ad, "book", req.Org, nil); err != nil {
		return nil, &Booking{Org: req.Org}, err
	}
	b, err := c.Book(ctx, ad.Principal, req.Org, req.BookingRequest)
	if err != nil {
		return nil, &Booking{Org: req.Org}, err
	}
	return c.view(ctx, b), b, nil
}

// bookingInPath is the booking the path's {id} names. An ID that no
// booking can have (newBookingID makes "bk_" and 16 base32 letters) is not
// found without being quoted, so a long path does not reach the audit log.
func (c *Catalog) bookingInPath(ctx context.Context, r *http.Request) (*Booking, error) {
	id := r.PathValue("id")
	if len(id) > 64 {
		return nil, fmt.Errorf("%w: no such booking", ErrNotFound)
	}
	return c.Get(ctx, id)
}

func (c *Catalog) apiGet(ctx context.Context, ad *Admin, r *http.Request, _ []byte) (any, *Booking, error) {
	b, err := c.bookingInPath(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	entitlement := strings.HasSuffix(r.URL.Path, "/entitlement")
	action := "get"
	if entitlement {
		action = "entitlement"
	}
	if err := c.authorize(ctx, ad, action, b.Org, b); err != nil {
		return nil, b, err
	}
	if entitlement {
		if b.Entitlement == "" {
			return nil, b, fmt.Errorf("%w: the booking has no entitlement yet (it is %s)", ErrState, b.State)
		}
		return rawJWT(b.Entitlement), b, nil
	}
	return c.view(ctx, b), b, nil
}

func (c *Catalog) apiAct(ctx context.Context, ad *Admin, r *http.Request, body []byte) (any, *Booking, error) {
	var req struct {
		Reason string `json:"reason"`
	}
	if len(body) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			return nil, nil, err
		}
	}
	if len(req.Reason) > 500 {
		return nil, nil, fmt.Errorf("%w: reason too long", ErrInvalid)
	}
	action := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	b, err := c.bookingInPath(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	if err := c.authorize(ctx, ad, action, b.Org, b); err != nil {
		return nil, b, err
	}
	after, err := c.Act(ctx, ad.Principal, b.ID, action, req.Reason)
	if err != nil {
		// The refusal concerns b: audited with its ID and organisation,
		// not the admin's own.
		return nil, b, err
	}
	return c.view(ctx, after), after, nil
}

func (c *Catalog) apiBind(ctx context.Context, ad *Admin, r *http.Request, body []byte) (any, *Booking, error) {
	var req struct {
		RoomID  string `json:"room_id"`
		Meeting string `json:"meeting"`
	}
	if err := decodeStrict(body, &req); err != nil {
		return nil, nil, err
	}
	b, err := c.bookingInPath(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	unbind := strings.HasSuffix(r.URL.Path, "/unbind")
	action := "bind"
	if unbind {
		action = "unbind"
	}
	if err := c.authorize(ctx, ad, action, b.Org, b); err != nil {
		return nil, b, err
	}
	if unbind {
		if err := c.unbindFrom(ctx, b.ID, req.RoomID); err != nil {
			return nil, b, err
		}
		return c.view(ctx, b), b, nil
	}
	if err := c.BindRoom(ctx, ad.Principal, b.ID, req.RoomID, req.Meeting); err != nil {
		return nil, b, err
	}
	return c.view(ctx, b), b, nil
}

// decodeStrict decodes a request body: unknown, duplicate or re-spelled
// members and trailing data are refused (strictjson).
func decodeStrict(body []byte, v any) error {
	if err := strictjson.UnmarshalKnown(body, v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
