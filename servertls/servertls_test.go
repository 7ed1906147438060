package servertls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// testCA issues server certificates for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gxconf test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue writes a leaf certificate with the given serial and its key to dir.
func (ca *testCA) issue(t *testing.T, dir string, serial int64) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "gxconf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	// Write next to the files and rename, as a Secret volume update does.
	write := func(path string, block *pem.Block) {
		tmp := path + ".new"
		require.NoError(t, os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600))
		require.NoError(t, os.Rename(tmp, path))
	}
	write(certFile, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	write(keyFile, &pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	return certFile, keyFile
}

// fakeClock is a settable clock for the reload interval.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// serve starts an HTTP server on a TLS listener of cfg.
func serve(t *testing.T, cfg Config) (addr string, certs *Certs, clock *fakeClock) {
	t.Helper()
	certs, err := NewCerts(cfg, zerolog.Nop())
	require.NoError(t, err)
	clock = &fakeClock{t: time.Now()}
	certs.now = clock.now
	ln, err := Listen("127.0.0.1:0", cfg, certs)
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second, ErrorLog: nil}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), certs, clock
}

// handshake connects with a client that verifies the chain against pool.
func handshake(addr string, client *tls.Config) (tls.ConnectionState, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, client)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

func TestTLSVersionsAndChain(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.issue(t, dir, 100)
	cfg := DefaultConfig()
	cfg.CertFile, cfg.KeyFile = certFile, keyFile
	addr, _, _ := serve(t, cfg)

	// A client that checks the chain gets TLS 1.3 and TLS 1.2 with an AEAD suite.
	st, err := handshake(addr, &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1"})
	require.NoError(t, err)
	require.Equal(t, uint16(tls.VersionTLS13), st.Version)
	st, err = handshake(addr, &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12})
	require.NoError(t, err)
	require.Equal(t, uint16(tls.VersionTLS12), st.Version)
	require.Contains(t, tls12Suites, st.CipherSuite)

	// Plain HTTP over TLS with chain verification works end to end.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}}
	resp, err := hc.Get("https://" + addr + "/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, "ok", string(body))

	for name, client := range map[string]*tls.Config{
		"TLS 1.0":        {RootCAs: ca.pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10},
		"TLS 1.1":        {RootCAs: ca.pool, MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11},
		"CBC suite":      {RootCAs: ca.pool, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}},
		"ChaCha20 suite": {RootCAs: ca.pool, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305}},
		"X25519 only":    {RootCAs: ca.pool, MaxVersion: tls.VersionTLS12, CurvePreferences: []tls.CurveID{tls.X25519}},
		"unknown CA":     {RootCAs: x509.NewCertPool()},
		"wrong name":     {RootCAs: ca.pool, ServerName: "gxconf.example"},
	} {
		t.Run(name, func(t *testing.T) {
			if client.ServerName == "" {
				client.ServerName = "127.0.0.1"
			}
			_, err := handshake(addr, client)
			require.Error(t, err)
			if client.RootCAs == ca.pool && client.ServerName == "127.0.0.1" {
				// The server refused (an alert), not the client.
				require.ErrorContains(t, err, "remote error")
			}
		})
	}

	// TLS 1.3 only.
	cfg.MinVersion = "1.3"
	addr13, _, _ := serve(t, cfg)
	_, err = handshake(addr13, &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12})
	require.Error(t, err)
}

func TestCertificateReload(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.issue(t, dir, 1)
	cfg := DefaultConfig()
	cfg.CertFile, cfg.KeyFile = certFile, keyFile
	addr, _, clock := serve(t, cfg)
	serial := func() int64 {
		t.Helper()
		st, err := handshake(addr, &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1"})
		require.NoError(t, err)
		return st.PeerCertificates[0].SerialNumber.Int64()
	}
	require.EqualValues(t, 1, serial())

	// Renewed on disk: served once the reload interval passed, not before.
	ca.issue(t, dir, 2)
	require.EqualValues(t, 1, serial())
	clock.add(cfg.ReloadInterval)
	require.EqualValues(t, 2, serial())

	// A broken renewal keeps the previous certificate.
	require.NoError(t, os.WriteFile(certFile, []byte("not a certificate"), 0o600))
	clock.add(cfg.ReloadInterval)
	require.EqualValues(t, 2, serial())
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	require.NoError(t, c.Validate())
	require.False(t, c.Enabled())
	c.CertFile = "/x"
	c.MinVersion = "1.1"
	c.ReloadInterval = 0
	err := c.Validate()
	require.ErrorContains(t, err, "cert_file: must be set together with key_file")
	require.ErrorContains(t, err, "min_version")
	require.ErrorContains(t, err, "reload_interval")
	_, err = NewCerts(Config{CertFile: "/does/not/exist", KeyFile: "/nope", MinVersion: "1.2", ReloadInterval: time.Minute}, zerolog.Nop())
	require.Error(t, err)
}
