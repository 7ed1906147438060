package credentials

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"

	"github.com/gxfs-conf/gxconf/test/credharness"
)

// loopbackTLS and harness wrap the shared driver of the Node issuer/wallet
// (test/credharness) with test helpers.
type loopbackTLS = credharness.TLS

func newLoopbackTLS(t testing.TB) *loopbackTLS {
	t.Helper()
	l, err := credharness.NewLoopbackTLS(t.TempDir())
	require.NoError(t, err)
	return l
}

type harness struct {
	*credharness.Harness
	info credharness.Info
}

// startHarness starts the Node harness; node is required (the test fails, it
// does not skip, when node is missing).
func startHarness(t testing.TB, tlsc *loopbackTLS) *harness {
	t.Helper()
	h, err := credharness.Start(tlsc, os.Stderr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	return &harness{Harness: h, info: h.Info}
}

func (h *harness) call(t testing.TB, cmd string, args any, out any) {
	t.Helper()
	require.NoError(t, h.Call(cmd, args, out))
}

func (h *harness) tryCall(cmd string, args any, out any) error { return h.Call(cmd, args, out) }

// issue returns the credential as raw JSON (an object or a string).
func (h *harness) issue(t testing.TB, args map[string]any) json.RawMessage {
	t.Helper()
	raw, err := h.Issue(args)
	require.NoError(t, err)
	return raw
}

type presentResult = credharness.PresentResult

func (h *harness) present(t testing.TB, link string, cred json.RawMessage, format string, extra map[string]any) presentResult {
	t.Helper()
	r, err := h.Present(link, cred, format, extra)
	require.NoError(t, err)
	return r
}

// testEnv is a verifier behind an HTTPS test server plus the harness.
type testEnv struct {
	t        testing.TB
	h        *harness
	tls      *loopbackTLS
	v        *Verifier
	db       *dbutil.Database
	srv      *httptest.Server
	mu       sync.Mutex
	attested []Attestation
	invalid  []invalidation
	offset   time.Duration
	rooms    map[string]*AccessPolicy
}

// clock is the verifier's clock: real time plus an adjustable offset.
func (e *testEnv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return time.Now().Add(e.offset)
}

func (e *testEnv) advance(d time.Duration) {
	e.mu.Lock()
	e.offset += d
	e.mu.Unlock()
}

type invalidation struct {
	a      Attestation
	reason error
}

func newTestDB(t testing.TB) *dbutil.Database {
	t.Helper()
	db, err := dbutil.NewFromConfig("", dbutil.Config{PoolConfig: dbutil.PoolConfig{
		Type: "sqlite3-fk-wal", URI: "file:" + filepath.Join(t.TempDir(), "gxconf.db") + "?_txlock=immediate",
		MaxOpenConns: 4, MaxIdleConns: 1,
	}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// testConfig trusts the harness's issuers in federation "oev".
func testConfig(info credharness.Info) Config {
	cfg := DefaultConfig()
	cfg.Federations = []FederationConfig{{
		ID:                "oev",
		HomeserverDomains: []string{"bund.example"},
		TrustedIssuers: []TrustedIssuer{
			{DID: info.Issuers["w3c"], Types: []string{"EmployeeCredential"}},
			{DID: info.Issuers["xfsc"], Types: []string{"EmployeeCredential"}, StatusProfile: "xfsc-compat"},
			{DID: info.Issuers["web"], Types: []string{"EmployeeCredential", "VSNfDVerpflichtung"}},
			// The other Linked Data proof suites' issuers (did:key).
			{DID: info.Issuers["ed2018"], Types: []string{"EmployeeCredential"}},
			{DID: info.Issuers["eddsa"], Types: []string{"EmployeeCredential"}},
			{DID: info.Issuers["p256"], Types: []string{"EmployeeCredential"}},
			{DID: info.Issuers["p384"], Types: []string{"EmployeeCredential"}},
		},
		// The w3c issuer is also the federation's trust anchor: issuers it
		// vouches for with a ParticipantCredential may issue EmployeeCredentials.
		TrustAnchors: []TrustAnchor{{DID: info.Issuers["w3c"], ParticipantType: "ParticipantCredential", Types: []string{"EmployeeCredential"}}},
	}}
	cfg.AtRestKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	cfg.DIDResolution.AllowPrivateAddressesForTesting = true
	cfg.RetainClaims = []string{"memberOf"}
	return cfg
}

// newTestEnv starts the harness (shared if h != nil) and a verifier.
func newTestEnv(t testing.TB, h *harness, tlsc *loopbackTLS, mutate func(*Config)) *testEnv {
	t.Helper()
	if tlsc == nil {
		tlsc = newLoopbackTLS(t)
	}
	if h == nil {
		h = startHarness(t, tlsc)
	}
	e := &testEnv{t: t, h: h, tls: tlsc, db: newTestDB(t), rooms: map[string]*AccessPolicy{}}
	var handler http.Handler
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{tlsc.Cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	e.srv = srv

	cfg := testConfig(h.info)
	cfg.OID4VP.PublicBaseURL = srv.URL
	if mutate != nil {
		mutate(&cfg)
	}
	require.NoError(t, cfg.Validate())
	v, err := New(context.Background(), cfg, e.db, zerolog.New(zerolog.NewTestWriter(t)),
		WithRootCAs(tlsc.Pool),
		WithClock(e.clock),
		WithRoomPolicy(func(_ context.Context, room string) (*AccessPolicy, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.rooms[room], nil
		}),
		WithOnAttestation(func(_ context.Context, a Attestation) {
			e.mu.Lock()
			e.attested = append(e.attested, a)
			e.mu.Unlock()
		}),
		WithOnInvalidated(func(_ context.Context, a Attestation, reason error) {
			e.mu.Lock()
			e.invalid = append(e.invalid, invalidation{a, reason})
			e.mu.Unlock()
		}),
	)
	require.NoError(t, err)
	e.v = v
	handler = v.Handler()
	return e
}

// errorCode extracts the reason code from an OID4VP error body.
func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
		Desc  string `json:"error_description"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &e), body)
	code, _, _ := cutColon(e.Desc)
	return code
}

func cutColon(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
