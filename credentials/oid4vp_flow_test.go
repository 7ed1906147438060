package credentials

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
)

// flowFixture is a Verifier trusting one did:key issuer, that issuer's
// holder and an HTTPS status-list host, driven through its HTTP handler as a
// wallet would (no Node harness: everything is signed here).
type flowFixture struct {
	v      *Verifier
	db     *dbutil.Database
	issuer edIdentity
	holder edIdentity
	status *httptest.Server
	rooms  map[string]*AccessPolicy
	logs   syncBuffer

	mu     sync.Mutex
	offset time.Duration
	lists  map[string]string
	// onFetch, if set, runs when the status host is asked for a list.
	onFetch func()
}

const (
	flowUser       = "@alice:bund.example"
	flowPublicRoom = "!pub:bund.example"
	flowKritisRoom = "!kritis:bund.example"
)

func newFlowFixture(t *testing.T, opts ...Option) *flowFixture {
	t.Helper()
	f := &flowFixture{issuer: newEdIdentity(t), holder: newEdIdentity(t), db: newTestDB(t), lists: map[string]string{},
		rooms: map[string]*AccessPolicy{
			flowPublicRoom: {Level: LevelPublic, RequiredCredentials: []CredentialRequirement{{Type: "EmployeeCredential"}}},
			flowKritisRoom: {Level: LevelKritis, RequiredCredentials: []CredentialRequirement{{Type: "EmployeeCredential"}},
				AllowedHomeservers: []string{"bund.example"}},
		}}
	f.status = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		hook := f.onFetch
		body, ok := f.lists[r.URL.Path]
		f.mu.Unlock()
		if hook != nil {
			hook()
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(f.status.Close)
	pool := x509.NewCertPool()
	pool.AddCert(f.status.Certificate())

	cfg := DefaultConfig()
	cfg.Federations = []FederationConfig{{ID: "f", TrustedIssuers: []TrustedIssuer{{DID: f.issuer.did, Types: []string{"EmployeeCredential"}}}}}
	cfg.OID4VP.PublicBaseURL = "https://focus.bund.example"
	cfg.AtRestKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	cfg.DIDResolution.AllowPrivateAddressesForTesting = true
	cfg.RetainClaims = []string{"sector"}
	require.NoError(t, cfg.Validate())
	v, err := New(context.Background(), cfg, f.db, zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), &f.logs)), append([]Option{
		WithRootCAs(pool), WithClock(f.clock),
		WithRoomPolicy(func(_ context.Context, room string) (*AccessPolicy, error) { return f.rooms[room], nil }),
	}, opts...)...)
	require.NoError(t, err)
	f.v = v
	return f
}

func (f *flowFixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Now().Add(f.offset)
}

func (f *flowFixture) advance(d time.Duration) {
	f.mu.Lock()
	f.offset += d
	f.mu.Unlock()
}

// setList publishes a BitstringStatusList at path, signed by the issuer:
// every entry revoked, or none.
func (f *flowFixture) setList(t *testing.T, path string, revoked bool) {
	t.Helper()
	fill := byte(0)
	if revoked {
		fill = 0xff
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, err := zw.Write(bytes.Repeat([]byte{fill}, 16<<10))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	now := f.clock()
	list := map[string]any{
		"@context": []any{ContextCredentialsV2}, "type": []any{"VerifiableCredential", "BitstringStatusListCredential"},
		"issuer": f.issuer.did, "validFrom": now.Add(-48 * time.Hour).UTC().Format(time.RFC3339),
		"credentialSubject": map[string]any{"id": f.status.URL + path + "#list", "type": "BitstringStatusList",
			"statusPurpose": "revocation", "encodedList": "u" + base64.RawURLEncoding.EncodeToString(b.Bytes())},
	}
	signed := f.issuer.sign(`{"alg":"EdDSA","typ":"vc+jwt","kid":"`+f.issuer.kid+`"}`, mustJSON(t, list))
	f.mu.Lock()
	f.lists[path] = signed
	f.mu.Unlock()
}

// credential is a vc+jwt EmployeeCredential of the holder, with a status
// entry in the list at statusPath unless that is empty.
func (f *flowFixture) credential(t *testing.T, sector, statusPath string) string {
	t.Helper()
	now := f.clock()
	cred := map[string]any{
		"@context": []any{ContextCredentialsV2}, "type": []any{"VerifiableCredential", "EmployeeCredential"},
		"issuer": f.issuer.did, "validFrom": now.Add(-24 * time.Hour).UTC().Format(time.RFC3339),
		"validUntil":        now.Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339),
		"credentialSubject": map[string]any{"id": f.holder.did, "sector": sector},
	}
	if statusPath != "" {
		cred["credentialStatus"] = map[string]any{"type": "BitstringStatusListEntry", "statusPurpose": "revocation",
			"statusListIndex": "3", "statusListCredential": f.status.URL + statusPath}
	}
	return f.issuer.sign(`{"alg":"EdDSA","typ":"vc+jwt","kid":"`+f.issuer.kid+`"}`, mustJSON(t, cred))
}

func (f *flowFixture) request(t *testing.T, room string) *Request {
	t.Helper()
	req, err := f.v.CreateRequest(context.Background(), flowUser, room, "call")
	require.NoError(t, err)
	return req
}

// answer is a draft wallet's direct_post form for req: a jwt_vp_json with
// the request's nonce and the verifier's client_id, and a Presentation
// Exchange submission.
func (f *flowFixture) answer(t *testing.T, req *Request, creds ...any) url.Values {
	t.Helper()
	sr, err := f.v.store.getRequest(context.Background(), req.ID)
	require.NoError(t, err)
	vp := f.holder.sign(`{"alg":"EdDSA","typ":"JWT","kid":"`+f.holder.kid+`"}`, mustJSON(t, map[string]any{
		"iss": f.holder.did, "aud": f.v.ClientID(), "nonce": sr.Nonce,
		"vp": map[string]any{"type": []any{"VerifiablePresentation"}, "verifiableCredential": creds}}))
	return url.Values{"vp_token": {vp}, "state": {req.ID}, "presentation_submission": {mustJSON(t, map[string]any{
		"id": "s", "definition_id": req.ID,
		"descriptor_map": []any{map[string]any{"id": "credential-0", "format": "jwt_vp_json", "path": "$"}}})}}
}

func (f *flowFixture) post(ctx context.Context, id string, form url.Values) *httptest.ResponseRecorder {
	hr := httptest.NewRequest(http.MethodPost, MountPath+"response/"+id, strings.NewReader(form.Encode())).WithContext(ctx)
	hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	f.v.Handler().ServeHTTP(rec, hr)
	return rec
}

// state is what the verification page's status endpoint says.
func (f *flowFixture) state(t *testing.T, id string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	f.v.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, MountPath+"status/"+id, nil))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var st struct {
		State string `json:"state"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &st))
	return st.State
}

func (f *flowFixture) lastAudit(t *testing.T) (decision, reason string) {
	t.Helper()
	require.NoError(t, f.db.QueryRow(context.Background(),
		`SELECT decision, reason FROM credentials_audit ORDER BY seq DESC LIMIT 1`).Scan(&decision, &reason))
	return decision, reason
}

func (f *flowFixture) authorize(t *testing.T, room string) Decision {
	t.Helper()
	d, err := f.v.Authorize(context.Background(), AccessRequest{UserID: flowUser, Policy: f.rooms[room],
		Room: RoomFacts{ID: room, E2EE: true, SiteApproved: true, Participants: 1}})
	require.NoError(t, err)
	return d
}

// A wallet that hangs up while gxconf verifies (here: while the status list
// is fetched) has already used the nonce up; the outcome must still be
// recorded, not left "processing" (the page showing a dead QR code) and
// unaudited.
func TestResponseRecordedWhenWalletHangsUp(t *testing.T) {
	var heard []error
	f := newFlowFixture(t, WithOnAttestation(func(ctx context.Context, _ Attestation) { heard = append(heard, ctx.Err()) }))
	f.setList(t, "/l", false)
	req := f.request(t, flowPublicRoom)
	form := f.answer(t, req, f.credential(t, "energie", "/l"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.mu.Lock()
	f.onFetch = cancel // the wallet's connection ends during verification
	f.mu.Unlock()
	f.post(ctx, req.ID, form)

	require.Equal(t, "verified", f.state(t, req.ID))
	decision, _ := f.lastAudit(t)
	require.Equal(t, "verified", decision)
	atts, err := f.v.Attestations(context.Background(), flowUser)
	require.NoError(t, err)
	require.Len(t, atts, 1)
	unused, err := f.v.RequestUnused(context.Background(), req.ID)
	require.NoError(t, err)
	require.False(t, unused)
	require.Equal(t, []error{nil}, heard, "the integrator hears of the attestation with a live context")
}

// An attestation verified for a public room was checked against the public
// level's status-list max age (24 h); it must not admit to a kritis room,
// whose max age is 1 h.
func TestLowerLevelAttestationDoesNotAdmitAtHigherLevel(t *testing.T) {
	f := newFlowFixture(t)
	f.setList(t, "/l", false)
	cred := f.credential(t, "energie", "/l")
	req := f.request(t, flowPublicRoom)
	rec := f.post(context.Background(), req.ID, f.answer(t, req, cred))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())

	// The credential is revoked; two hours later the public room still
	// accepts it from the list fetched before (within its max age).
	f.setList(t, "/l", true)
	f.advance(2 * time.Hour)
	req = f.request(t, flowPublicRoom)
	rec = f.post(context.Background(), req.ID, f.answer(t, req, cred))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.True(t, f.authorize(t, flowPublicRoom).Allow)

	d := f.authorize(t, flowKritisRoom)
	require.False(t, d.Allow, "a public attestation admitted to a kritis room")
	require.Len(t, d.Missing, 1)

	// Asked at the kritis level, the wallet's answer meets a fresh list.
	req = f.request(t, flowKritisRoom)
	require.Equal(t, LevelKritis, req.Level)
	rec = f.post(context.Background(), req.ID, f.answer(t, req, cred))
	require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	require.Equal(t, "revoked", errorCode(t, rec.Body.String()))
	require.False(t, f.authorize(t, flowKritisRoom).Allow)
}

// failingSealer seals the first failAt-1 values and then fails with an error
// whose text must stay in the log.
type failingSealer struct {
	n      atomic.Int32
	failAt int32
}

const sealerSecret = "kms-token-s3cr3t"

func (s *failingSealer) Seal(plain, _ []byte) ([]byte, error) {
	if s.n.Add(1) >= s.failAt {
		return nil, errors.New("key store refused " + sealerSecret)
	}
	return append([]byte("sealed:"), plain...), nil
}

func (s *failingSealer) Open(sealed, _ []byte) ([]byte, error) {
	return bytes.TrimPrefix(sealed, []byte("sealed:")), nil
}

// A presentation refused because its second attestation could not be
// stored leaves no attestation behind: the first must not admit the user.
func TestRefusedPresentationStoresNoAttestation(t *testing.T) {
	f := newFlowFixture(t, WithSealer(&failingSealer{failAt: 2}))
	req := f.request(t, flowPublicRoom)
	rec := f.post(context.Background(), req.ID, f.answer(t, req,
		f.credential(t, "energie", ""), f.credential(t, "wasser", "")))
	require.Equal(t, http.StatusInternalServerError, rec.Code, rec.Body.String())
	decision, _ := f.lastAudit(t)
	require.Equal(t, "refused", decision)
	atts, err := f.v.Attestations(context.Background(), flowUser)
	require.NoError(t, err)
	require.Empty(t, atts)
	require.False(t, f.authorize(t, flowPublicRoom).Allow)
}

// An internal failure is answered 500 server_error without its text: that
// is a database's or key store's, not the wallet's business.
func TestInternalErrorNotEchoedToWallet(t *testing.T) {
	f := newFlowFixture(t, WithSealer(&failingSealer{failAt: 1}))
	req := f.request(t, flowPublicRoom)
	rec := f.post(context.Background(), req.ID, f.answer(t, req, f.credential(t, "energie", "")))
	require.Equal(t, http.StatusInternalServerError, rec.Code, rec.Body.String())
	var body struct {
		Error string `json:"error"`
		Desc  string `json:"error_description"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	require.Equal(t, "server_error", body.Error)
	require.Equal(t, "internal", body.Desc)
	require.NotContains(t, rec.Body.String(), sealerSecret)
	require.Equal(t, "refused", f.state(t, req.ID))
}

// An OID4VP 1.0 answer holds one presentation per credential query (none of
// gxconf's queries sets "multiple"): a wallet repeating its presentation
// must not get an attestation per copy, nor an empty answer count.
func TestDCQLOnePresentationPerQuery(t *testing.T) {
	f := newFlowFixture(t)
	cred := f.credential(t, "energie", "")
	dcql := func(req *Request, n int) url.Values {
		form := f.answer(t, req, cred)
		items := make([]string, n)
		for i := range items {
			items[i] = form.Get("vp_token")
		}
		return url.Values{"state": {req.ID}, "vp_token": {mustJSON(t, map[string]any{"c0_vc_jwt": items})}}
	}

	req := f.request(t, flowPublicRoom)
	rec := f.post(context.Background(), req.ID, dcql(req, 40))
	require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	require.Equal(t, "submission_mismatch", errorCode(t, rec.Body.String()))
	require.Contains(t, rec.Body.String(), `credential query \"c0_vc_jwt\" has 40 presentations`)
	atts, err := f.v.Attestations(context.Background(), flowUser)
	require.NoError(t, err)
	require.Empty(t, atts)

	req = f.request(t, flowPublicRoom)
	rec = f.post(context.Background(), req.ID, dcql(req, 0))
	require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	require.Equal(t, "submission_mismatch", errorCode(t, rec.Body.String()))

	// One presentation in the array of 1.0, or alone as the drafts had it.
	req = f.request(t, flowPublicRoom)
	rec = f.post(context.Background(), req.ID, dcql(req, 1))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	req = f.request(t, flowPublicRoom)
	rec = f.post(context.Background(), req.ID, url.Values{"vp_token": {mustJSON(t, map[string]any{"c0_vc_jwt": f.answer(t, req, cred).Get("vp_token")})}})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	atts, err = f.v.Attestations(context.Background(), flowUser)
	require.NoError(t, err)
	require.Len(t, atts, 2)
}

// A POST that is no response is refused without using the request up, and
// logged like every other refusal.
func TestEarlyRefusalLogged(t *testing.T) {
	f := newFlowFixture(t)
	req := f.request(t, flowPublicRoom)
	hr := httptest.NewRequest(http.MethodPost, MountPath+"response/"+req.ID, strings.NewReader(`{"vp_token":"x"}`))
	hr.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	f.v.Handler().ServeHTTP(rec, hr)
	require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	rec = f.post(context.Background(), req.ID, url.Values{"state": {req.ID}})
	require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())

	var lines []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(f.logs.Bytes()), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal(l, &m), string(l))
		if m["request_id"] == req.ID {
			lines = append(lines, m)
		}
	}
	require.Len(t, lines, 2, string(f.logs.Bytes()))
	require.Equal(t, "malformed", lines[0]["reason"])
	require.Contains(t, lines[0]["error"], "application/x-www-form-urlencoded")
	require.Contains(t, lines[1]["error"], "vp_token missing")
	require.Equal(t, "pending", f.state(t, req.ID))
}

// A request that cannot be looked up (the database is down) is a server
// error, not an unknown request: a wallet shows its user a dead link for
// 404 but may retry a 500.
func TestRequestLookupFailureIsNotUnknown(t *testing.T) {
	f := newFlowFixture(t)
	req := f.request(t, flowPublicRoom)
	get := func(u string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		f.v.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, u, nil))
		return rec
	}
	for _, u := range []string{MountPath + "request/" + req.ID, MountPath + "status/" + req.ID, MountPath + "page/" + req.ID} {
		require.Equal(t, http.StatusOK, get(u).Code, u)
	}
	require.Equal(t, http.StatusNotFound, get(MountPath+"status/unknown").Code)
	require.NoError(t, f.db.Close())
	for _, u := range []string{MountPath + "request/" + req.ID, MountPath + "status/" + req.ID, MountPath + "page/" + req.ID} {
		rec := get(u)
		require.Equal(t, http.StatusInternalServerError, rec.Code, "%s: %s", u, rec.Body.String())
		require.NotContains(t, rec.Body.String(), "closed", u)
	}
}

// A verification whose audit entry cannot be written admits nobody: the
// attestation it stored is withdrawn.
func TestUnauditedVerificationAdmitsNobody(t *testing.T) {
	f := newFlowFixture(t)
	req := f.request(t, flowPublicRoom)
	form := f.answer(t, req, f.credential(t, "energie", ""))
	_, err := f.db.Exec(context.Background(), `ALTER TABLE credentials_audit RENAME TO credentials_audit_away`)
	require.NoError(t, err)
	rec := f.post(context.Background(), req.ID, form)
	require.Equal(t, http.StatusInternalServerError, rec.Code, rec.Body.String())
	_, err = f.db.Exec(context.Background(), `ALTER TABLE credentials_audit_away RENAME TO credentials_audit`)
	require.NoError(t, err)

	atts, err := f.v.Attestations(context.Background(), flowUser)
	require.NoError(t, err)
	require.Empty(t, atts, "an unaudited verification left an attestation")
	require.False(t, f.authorize(t, flowPublicRoom).Allow)
}
