package servertls

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// TR-02102-2 (2025-01) §3.3.1: TLS 1.2 with ECDHE and AEAD suites. CBC and
// static-RSA suites are left out although parts are still permitted, and so is
// ChaCha20-Poly1305, which the guideline does not list.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
}

// TR-02102-2 §3.6: the NIST curves (Go implements no Brainpool curves).
var groups = []tls.CurveID{tls.CurveP384, tls.CurveP256, tls.CurveP521}

// Certs serves the certificate from CertFile/KeyFile and reloads it when
// either file changes; a failed reload keeps the previous certificate.
type Certs struct {
	cfg Config
	log zerolog.Logger
	now func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	checked time.Time
}

// NewCerts loads the certificate once; it fails if the files are unusable.
func NewCerts(cfg Config, log zerolog.Logger) (*Certs, error) {
	c := &Certs{cfg: cfg, log: log, now: time.Now}
	stamp, err := c.fileStamp()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("failed to load tls.cert_file/key_file: %w", err)
	}
	c.cert, c.stamp, c.checked = &cert, stamp, c.now()
	return c, nil
}

// fileStamp identifies the files' current contents cheaply (size and mtime;
// Kubernetes swaps a Secret volume's files by symlink, which changes both).
func (c *Certs) fileStamp() (string, error) {
	var s string
	for _, f := range []string{c.cfg.CertFile, c.cfg.KeyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("failed to read tls file: %w", err)
		}
		s += fmt.Sprintf("%s:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}

// GetCertificate is tls.Config.GetCertificate: the current certificate,
// reloaded first if the interval passed and the files changed.
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); now.Sub(c.checked) >= c.cfg.ReloadInterval {
		c.checked = now
		if stamp, err := c.fileStamp(); err != nil {
			c.log.Warn().Err(err).Msg("Keeping the TLS certificate: its files are unreadable")
		} else if stamp != c.stamp {
			cert, err := tls.LoadX509KeyPair(c.cfg.CertFile, c.cfg.KeyFile)
			if err != nil {
				c.log.Warn().Err(err).Msg("Keeping the TLS certificate: the new one does not load")
			} else {
				c.cert, c.stamp = &cert, stamp
				c.log.Info().Msg("Reloaded the TLS certificate")
			}
		}
	}
	return c.cert, nil
}

// ServerConfig is the TLS configuration of a listener serving certs.
func ServerConfig(cfg Config, certs *Certs) *tls.Config {
	minVersion := uint16(tls.VersionTLS12)
	if cfg.MinVersion == "1.3" {
		minVersion = tls.VersionTLS13
	}
	return &tls.Config{
		MinVersion:       minVersion,
		CipherSuites:     tls12Suites,
		CurvePreferences: groups,
		GetCertificate:   certs.GetCertificate,
		// HTTP/1.1 only: WebSocket upgrades (SFU signalling) need it.
		NextProtos: []string{"http/1.1"},
	}
}

// Listen listens on addr with TLS when cfg is enabled, plain TCP otherwise.
func Listen(addr string, cfg Config, certs *Certs) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil || !cfg.Enabled() {
		return ln, err
	}
	return tls.NewListener(ln, ServerConfig(cfg, certs)), nil
}
