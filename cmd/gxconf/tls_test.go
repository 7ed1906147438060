package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/appservice"
	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// freePort returns a loopback port for network ("tcp" or "udp") from
// below the kernel's ephemeral range (harness.FreePort says why: a probed
// ephemeral port can become some client's local port before serve binds it).
func freePort(t *testing.T, network string) int {
	t.Helper()
	var (
		p   int
		err error
	)
	if network == "udp" {
		p, err = harness.FreeUDPPort()
	} else {
		p, err = harness.FreePort()
	}
	require.NoError(t, err)
	return p
}

// testCertificate writes a self-signed ECDSA certificate for 127.0.0.1 and
// its key into dir and returns their paths with a pool trusting it.
func testCertificate(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "gxconf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(leaf)
	return certFile, keyFile, pool
}

// TestServeTLS runs serve with the tls section: the focus, appservice and SFU
// signalling listeners answer only over TLS 1.2+ with the configured
// certificate, which a client checks against its CA.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := testCertificate(t, dir)

	focusPort, asPort, sfuPort := freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "tcp")
	raw := fmt.Sprintf(`
homeserver: {domain: bund.test, address: "http://127.0.0.1:1"}
database: {uri: "file:%s?_txlock=immediate"}
appservice: {listen: "127.0.0.1:%d"}
focus: {listen: "127.0.0.1:%d"}
sfu: {listen: "127.0.0.1:%d", rtc: {udp_port: %d, tcp_port: 0, node_ip: 127.0.0.1}}
metrics: {enabled: false}
tls: {cert_file: %q, key_file: %q}
`, filepath.Join(dir, "gxconf.db"), asPort, focusPort, sfuPort, freePort(t, "udp"), certFile, keyFile)
	serveConfig(t, raw, false)

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	get := func(url string) (int, error) {
		resp, err := client.Get(url)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	require.Eventually(t, func() bool {
		code, err := get(fmt.Sprintf("https://127.0.0.1:%d/healthz", focusPort))
		return err == nil && code == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "focus /healthz over TLS")
	code, err := get(fmt.Sprintf("https://127.0.0.1:%d/rtc/validate", sfuPort))
	require.NoError(t, err, "SFU signalling over TLS")
	require.Equal(t, http.StatusUnauthorized, code)
	code, err = get(fmt.Sprintf("https://127.0.0.1:%d/_matrix/app/v1/ping", asPort))
	require.NoError(t, err, "appservice over TLS")
	require.NotZero(t, code)

	// TLS 1.1 and plain HTTP are refused on every listener.
	for _, port := range []int{focusPort, asPort, sfuPort} {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10})
		if err == nil {
			conn.Close()
		}
		require.Error(t, err, "port %d accepted TLS 1.1", port)
		plain := &http.Client{Timeout: 5 * time.Second}
		resp, err := plain.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
		if err == nil {
			resp.Body.Close()
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, "port %d answered plain HTTP", port)
		}
	}
}

// TestMetricsListenerTLS runs serve with metrics.tls: the metrics listener
// (metrics and pprof) answers only over TLS 1.2+ with the TR-02102-2 suites
// and the tls section's certificate, checked by the client against its CA,
// and serves a renewed certificate without a restart.
func TestMetricsListenerTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := testCertificate(t, dir)
	metricsPort := freePort(t, "tcp")
	raw := fmt.Sprintf(`
homeserver: {domain: bund.test, address: "http://127.0.0.1:1"}
database: {uri: "file:%s?_txlock=immediate"}
appservice: {listen: "127.0.0.1:%d"}
focus: {listen: "127.0.0.1:%d"}
sfu: {listen: "127.0.0.1:%d", rtc: {udp_port: %d, tcp_port: 0, node_ip: 127.0.0.1}}
metrics: {enabled: true, listen: "127.0.0.1:%d", tls: true, pprof: true}
tls: {cert_file: %q, key_file: %q, reload_interval: 1s}
`, filepath.Join(dir, "gxconf.db"), freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "udp"), metricsPort, certFile, keyFile)
	serveConfig(t, raw, false)

	addr := fmt.Sprintf("127.0.0.1:%d", metricsPort)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	get := func(path string) (int, error) {
		resp, err := client.Get("https://" + addr + path)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	require.Eventually(t, func() bool {
		code, err := get("/metrics")
		return err == nil && code == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "/metrics over TLS")
	code, err := get("/debug/pprof/")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code, "pprof over TLS")
	// A web page's request (here after a DNS rebinding) is refused (noPages).
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/debug/pprof/", nil)
	require.NoError(t, err)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "a page read the metrics listener")

	// The chain is checked: a client that does not trust the CA fails.
	_, err = (&http.Client{Timeout: 5 * time.Second}).Get("https://" + addr + "/metrics")
	require.ErrorContains(t, err, "certificate")

	// Old versions, CBC and ChaCha20 suites are refused by the server.
	for name, c := range map[string]*tls.Config{
		"TLS 1.0":  {MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10},
		"TLS 1.1":  {MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11},
		"CBC":      {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}},
		"ChaCha20": {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}},
	} {
		c.RootCAs = pool
		conn, err := tls.Dial("tcp", addr, c)
		if err == nil {
			conn.Close()
		}
		require.Error(t, err, name)
		require.ErrorContains(t, err, "remote error", "%s: refused by the server", name)
	}
	st, err := tlsState(addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12})
	require.NoError(t, err)
	require.Equal(t, uint16(tls.VersionTLS12), st.Version)

	// Plain HTTP gets no metrics.
	resp, err = (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
	if err == nil {
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	}

	// A renewed certificate (a new key, as cert-manager writes it) is served
	// without a restart.
	before, err := tlsState(addr, &tls.Config{RootCAs: pool})
	require.NoError(t, err)
	newDir := t.TempDir()
	newCert, newKey, _ := testCertificate(t, newDir)
	both := pool.Clone()
	for _, f := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		b, err := os.ReadFile(f[0])
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(f[1]+".new", b, 0o600))
		require.NoError(t, os.Rename(f[1]+".new", f[1]))
	}
	pemBytes, err := os.ReadFile(newCert)
	require.NoError(t, err)
	require.True(t, both.AppendCertsFromPEM(pemBytes))
	require.Eventually(t, func() bool {
		st, err := tlsState(addr, &tls.Config{RootCAs: both})
		return err == nil && !st.PeerCertificates[0].Equal(before.PeerCertificates[0])
	}, 30*time.Second, 100*time.Millisecond, "the renewed certificate is served")
}

// tlsState completes a handshake with addr and returns its state.
func tlsState(addr string, c *tls.Config) (tls.ConnectionState, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, c)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

// serveConfig runs `gxconf serve` on the config raw until the test ends;
// with cleanStop the test fails if serve returns an error on shutdown.
func serveConfig(t *testing.T, raw string, cleanStop bool) {
	t.Helper()
	cfg, err := config.Parse([]byte(raw), nil)
	require.NoError(t, err)
	reg := appservice.NewRegistration(cfg.Appservice, cfg.Homeserver.Domain)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, reg, zerolog.New(io.Discard)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if cleanStop {
				require.NoError(t, err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
}
