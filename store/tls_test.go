package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/test/harness"
)

func TestDSN(t *testing.T) {
	dir := t.TempDir()
	ca, crt, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for _, f := range []string{ca, crt, key} {
		require.NoError(t, os.WriteFile(f, []byte("x"), 0o600))
	}
	pg := func(uri string, tls TLSConfig) Config {
		return Config{Type: "postgres", URI: uri, MaxOpenConns: 1, TLS: tls}
	}
	cases := map[string]struct {
		cfg  Config
		want url.Values
		mode string
	}{
		"URI untouched":  {pg("postgres://u:p@db/gx?sslmode=verify-full", TLSConfig{}), url.Values{"sslmode": {"verify-full"}}, "verify-full"},
		"lib/pq default": {pg("postgres://u:p@db/gx", TLSConfig{}), url.Values{}, "require"},
		"files added": {pg("postgres://u:p@db/gx?connect_timeout=5", TLSConfig{Mode: "verify-full", RootCertFile: ca, CertFile: crt, KeyFile: key}),
			url.Values{"connect_timeout": {"5"}, "sslmode": {"verify-full"}, "sslrootcert": {ca}, "sslcert": {crt}, "sslkey": {key}}, "verify-full"},
		"CA only": {pg("postgresql://db/gx", TLSConfig{Mode: "verify-ca", RootCertFile: ca}), url.Values{"sslmode": {"verify-ca"}, "sslrootcert": {ca}}, "verify-ca"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, c.cfg.Validate())
			dsn, err := c.cfg.DSN()
			require.NoError(t, err)
			u, err := url.Parse(dsn)
			require.NoError(t, err)
			require.Equal(t, c.want, u.Query())
			orig, err := url.Parse(c.cfg.URI)
			require.NoError(t, err)
			require.Equal(t, orig.User.String(), u.User.String(), "credentials kept")
			require.Equal(t, orig.Host+orig.Path, u.Host+u.Path)
			require.Equal(t, c.mode, c.cfg.SSLMode())
		})
	}
	sqlite := DefaultConfig()
	dsn, err := sqlite.DSN()
	require.NoError(t, err)
	require.Equal(t, sqlite.URI, dsn)
	require.Empty(t, sqlite.SSLMode())
}

func TestTLSConfigValidate(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(ca, []byte("x"), 0o600))
	cases := map[string]struct {
		cfg  Config
		want []string
	}{
		"SQLite with tls":    {Config{Type: "sqlite3-fk-wal", URI: "file:x", MaxOpenConns: 1, TLS: TLSConfig{Mode: "verify-full"}}, []string{"tls: applies to PostgreSQL only"}},
		"unknown mode":       {Config{Type: "postgres", URI: "postgres://db/x", MaxOpenConns: 1, TLS: TLSConfig{Mode: "prefer"}}, []string{"tls.mode: must be one of disable, require, verify-ca, verify-full"}},
		"cert without key":   {Config{Type: "postgres", URI: "postgres://db/x", MaxOpenConns: 1, TLS: TLSConfig{CertFile: ca}}, []string{"tls.cert_file: must be set together with tls.key_file"}},
		"missing file":       {Config{Type: "postgres", URI: "postgres://db/x", MaxOpenConns: 1, TLS: TLSConfig{Mode: "verify-full", RootCertFile: filepath.Join(dir, "nope.crt")}}, []string{"tls.root_cert_file:", "no such file"}},
		"set twice":          {Config{Type: "postgres", URI: "postgres://db/x?sslmode=disable&sslrootcert=/a", MaxOpenConns: 1, TLS: TLSConfig{Mode: "verify-full", RootCertFile: ca}}, []string{"tls.mode: the uri sets sslmode too", "tls.root_cert_file: the uri sets sslrootcert too"}},
		"disable with files": {Config{Type: "postgres", URI: "postgres://db/x", MaxOpenConns: 1, TLS: TLSConfig{Mode: "disable", RootCertFile: ca}}, []string{"tls.mode: disable contradicts"}},
		"prefer in the URI":  {Config{Type: "postgres", URI: "postgres://db/x?sslmode=prefer", MaxOpenConns: 1}, []string{"uri: sslmode=prefer falls back to plain text"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := c.cfg.Validate()
			require.Error(t, err)
			for _, w := range c.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
	// A URI with a password that does not parse is refused without echoing it.
	bad := Config{Type: "postgres", URI: "postgres://u:s3cret@db:port/x", MaxOpenConns: 1, TLS: TLSConfig{Mode: "require"}}
	_, err := bad.DSN()
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret")
}

// pki is a throwaway CA issuing the server's and the client's certificates.
type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

func newPKI(t *testing.T, dir, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	p := &pki{cert: cert, key: key, dir: dir}
	writePEM(t, filepath.Join(dir, name+".crt"), "CERTIFICATE", der)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

// issue writes name.crt and name.key for cn (and ips, for a server).
func (p *pki) issue(t *testing.T, name, cn string, ips ...net.IP) (crt, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, IPAddresses: ips,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &k.PublicKey, p.key)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	crt, key = filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	writePEM(t, crt, "CERTIFICATE", der)
	writePEM(t, key, "PRIVATE KEY", kder)
	return crt, key
}

// startTLSPostgres runs a PostgreSQL server on loopback that accepts only
// TLS connections authenticated by a client certificate of ca (pg_hba
// "hostssl … cert"), with a server certificate for 127.0.0.1.
func startTLSPostgres(t *testing.T) (port int, ca *pki) {
	t.Helper()
	initdb, err := exec.LookPath("initdb")
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(m) > 0 {
		initdb, err = m[len(m)-1], nil
	}
	if err != nil {
		if testing.Short() {
			t.Skip("PostgreSQL not installed")
		}
		t.Fatal("PostgreSQL server not installed (scripts/deps.sh installs it)")
	}
	bin := filepath.Dir(initdb)
	dir, err := os.MkdirTemp("", "gxconf-pgtls-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	var asUser string
	var uid, gid int
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		require.NoError(t, err, "running as root needs the postgres user")
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		asUser = "postgres"
	}
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, name), args...)
		if asUser != "" {
			cmd = exec.Command("runuser", append([]string{"-u", asUser, "--", filepath.Join(bin, name)}, args...)...)
		}
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s: %s", name, out)
	}
	srvDir := filepath.Join(dir, "srv")
	require.NoError(t, os.Mkdir(srvDir, 0o700))
	ca = newPKI(t, srvDir, "ca")
	ca.issue(t, "server", "postgres", net.IPv4(127, 0, 0, 1))
	if asUser != "" {
		for _, p := range []string{dir, srvDir, filepath.Join(srvDir, "server.key"), filepath.Join(srvDir, "server.crt"), filepath.Join(srvDir, "ca.crt")} {
			require.NoError(t, os.Chown(p, uid, gid))
		}
	}
	data := filepath.Join(dir, "data")
	run("initdb", "-D", data, "-U", "gxconf", "--auth=trust", "-E", "UTF8")
	// Only TLS with a client certificate from loopback; the local socket
	// (trust) is for createdb.
	hba := "local all all trust\nhostssl all all 127.0.0.1/32 cert\n"
	require.NoError(t, os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600))
	if asUser != "" {
		require.NoError(t, os.Chown(filepath.Join(data, "pg_hba.conf"), uid, gid))
	}
	port, err = harness.FreePort()
	require.NoError(t, err)
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on -c ssl_cert_file=%s -c ssl_key_file=%s -c ssl_ca_file=%s -c ssl_min_protocol_version=TLSv1.2",
		port, dir, filepath.Join(srvDir, "server.crt"), filepath.Join(srvDir, "server.key"), filepath.Join(srvDir, "ca.crt"))
	run("pg_ctl", "-D", data, "-l", filepath.Join(dir, "postgres.log"), "-o", opts, "-w", "-t", "60", "start")
	t.Cleanup(func() { run("pg_ctl", "-D", data, "-m", "fast", "-w", "stop") })
	run("createdb", "-h", dir, "-p", strconv.Itoa(port), "-U", "gxconf", "gxconf")
	cliDir := t.TempDir()
	ca.dir = cliDir
	writePEM(t, filepath.Join(cliDir, "ca.crt"), "CERTIFICATE", ca.cert.Raw)
	return port, ca
}

// TestPostgresTLS connects to a real PostgreSQL that takes only TLS with
// client certificates: database.tls with verify-full, the CA and a client
// certificate gets an encrypted, authenticated session; a wrong CA, a host
// name the certificate does not carry, a missing client certificate and
// plain text are all refused.
func TestPostgresTLS(t *testing.T) {
	port, ca := startTLSPostgres(t)
	ctx := context.Background()
	crt, key := ca.issue(t, "client", "gxconf")
	caFile := filepath.Join(ca.dir, "ca.crt")
	cfg := func(host string, tls TLSConfig) Config {
		c := DefaultConfig()
		c.Type, c.URI, c.TLS = "postgres", fmt.Sprintf("postgres://gxconf@%s:%d/gxconf?connect_timeout=10", host, port), tls
		return c
	}

	good := cfg("127.0.0.1", TLSConfig{Mode: "verify-full", RootCertFile: caFile, CertFile: crt, KeyFile: key})
	require.NoError(t, good.Validate())
	db, err := Open(ctx, good, zerolog.Nop())
	require.NoError(t, err)
	var ssl bool
	var version string
	require.NoError(t, db.QueryRow(ctx, "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &version))
	require.True(t, ssl)
	require.Contains(t, []string{"TLSv1.2", "TLSv1.3"}, version)
	require.NoError(t, db.Close())

	otherCA := newPKI(t, t.TempDir(), "other")
	otherCAFile := filepath.Join(otherCA.dir, "other.crt")
	for name, c := range map[string]struct {
		cfg  Config
		want string
	}{
		"unknown CA":           {cfg("127.0.0.1", TLSConfig{Mode: "verify-full", RootCertFile: otherCAFile, CertFile: crt, KeyFile: key}), "certificate signed by unknown authority"},
		"name not in the cert": {cfg("localhost", TLSConfig{Mode: "verify-full", RootCertFile: caFile, CertFile: crt, KeyFile: key}), "localhost"},
		"no client cert":       {cfg("127.0.0.1", TLSConfig{Mode: "verify-full", RootCertFile: caFile}), "certificate"},
		"plain text":           {cfg("127.0.0.1", TLSConfig{Mode: "disable"}), "pg_hba.conf"},
	} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, c.cfg.Validate())
			db, err := Open(ctx, c.cfg, zerolog.Nop())
			if err == nil {
				_ = db.Close()
			}
			require.Error(t, err)
			require.ErrorContains(t, err, c.want)
		})
	}
}
