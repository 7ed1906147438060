package credentials

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"
)

// loopbackTLS is a self-signed certificate for 127.0.0.1 shared by the Node
// harness (issuer/status/did:web host), the Go OID4VP test server and, via
// NODE_EXTRA_CA_CERTS, the harness's wallet.
type loopbackTLS struct {
	certFile, keyFile string
	cert              tls.Certificate
	pool              *x509.CertPool
}

func newLoopbackTLS(t testing.TB) *loopbackTLS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "gxconf test loopback"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	l := &loopbackTLS{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	require.NoError(t, os.WriteFile(l.certFile, certPEM, 0o600))
	require.NoError(t, os.WriteFile(l.keyFile, keyPEM, 0o600))
	l.cert, err = tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	l.pool = x509.NewCertPool()
	require.True(t, l.pool.AppendCertsFromPEM(certPEM))
	return l
}

// harness is the Node issuer/wallet subprocess.
type harness struct {
	cmd    *exec.Cmd
	stdin  *json.Encoder
	out    *bufio.Scanner
	mu     sync.Mutex
	nextID int
	info   harnessInfo
}

type harnessInfo struct {
	Port    int               `json:"port"`
	Base    string            `json:"base"`
	Issuers map[string]string `json:"issuers"`
	Holder  string            `json:"holder"`
}

var npmOnce sync.Once

// harnessDir locates test/credharness and makes sure its node_modules exist.
// Node is required: a missing node fails the test instead of skipping it.
func harnessDir(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is required for the credential harness (test/credharness): %v", err)
	}
	dir, err := filepath.Abs(filepath.Join("..", "test", "credharness"))
	require.NoError(t, err)
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		npmOnce.Do(func() {
			cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("npm ci in %s failed: %v\n%s", dir, err, out)
			}
		})
	}
	_, err = os.Stat(filepath.Join(dir, "node_modules", "@digitalbazaar", "vc"))
	require.NoError(t, err, "test/credharness/node_modules is incomplete; run npm ci there")
	return dir
}

func startHarness(t testing.TB, tlsc *loopbackTLS) *harness {
	t.Helper()
	dir := harnessDir(t)
	cmd := exec.Command("node", "harness.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HARNESS_TLS_CERT="+tlsc.certFile, "HARNESS_TLS_KEY="+tlsc.keyFile, "NODE_EXTRA_CA_CERTS="+tlsc.certFile)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	h := &harness{cmd: cmd, stdin: json.NewEncoder(stdin), out: bufio.NewScanner(stdout)}
	h.out.Buffer(make([]byte, 1<<20), 64<<20)
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	require.True(t, h.out.Scan(), "harness exited before it was ready")
	var ready struct {
		Ready bool `json:"ready"`
		harnessInfo
	}
	require.NoError(t, json.Unmarshal(h.out.Bytes(), &ready))
	require.True(t, ready.Ready)
	h.info = ready.harnessInfo
	return h
}

// call sends one command and decodes its result into out (if non-nil).
func (h *harness) call(t testing.TB, cmd string, args any, out any) {
	t.Helper()
	require.NoError(t, h.tryCall(cmd, args, out))
}

func (h *harness) tryCall(cmd string, args any, out any) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextID++
	id := h.nextID
	if err := h.stdin.Encode(map[string]any{"id": id, "cmd": cmd, "args": args}); err != nil {
		return err
	}
	if !h.out.Scan() {
		return fmt.Errorf("harness closed its output: %v", h.out.Err())
	}
	var resp struct {
		ID     int             `json:"id"`
		OK     bool            `json:"ok"`
		Error  string          `json:"error"`
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(h.out.Bytes(), &resp); err != nil {
		return err
	}
	if resp.ID != id {
		return fmt.Errorf("harness answered %d, want %d", resp.ID, id)
	}
	if !resp.OK {
		return fmt.Errorf("harness %s: %s", cmd, resp.Error)
	}
	if out != nil {
		return json.Unmarshal(resp.Result, out)
	}
	return nil
}

// issue returns the credential as raw JSON (an object or a string).
func (h *harness) issue(t testing.TB, args map[string]any) json.RawMessage {
	t.Helper()
	var raw json.RawMessage
	h.call(t, "issue", args, &raw)
	return raw
}

type presentResult struct {
	Status      int               `json:"status"`
	Body        string            `json:"body"`
	ResponseURI string            `json:"response_uri"`
	Form        map[string]string `json:"form"`
}

func (h *harness) present(t testing.TB, link string, cred json.RawMessage, format string, extra map[string]any) presentResult {
	t.Helper()
	args := map[string]any{"link": link, "credential": cred, "format": format}
	for k, v := range extra {
		args[k] = v
	}
	var r presentResult
	h.call(t, "present", args, &r)
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
	now      func() time.Time
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
func testConfig(info harnessInfo) Config {
	cfg := DefaultConfig()
	cfg.Federations = []FederationConfig{{
		ID:                "oev",
		HomeserverDomains: []string{"bund.example"},
		TrustedIssuers: []TrustedIssuer{
			{DID: info.Issuers["w3c"], Types: []string{"EmployeeCredential"}},
			{DID: info.Issuers["xfsc"], Types: []string{"EmployeeCredential"}, StatusProfile: "xfsc-compat"},
			{DID: info.Issuers["web"], Types: []string{"EmployeeCredential", "VSNfDVerpflichtung"}},
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
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{tlsc.cert}}
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
		WithRootCAs(tlsc.pool),
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
