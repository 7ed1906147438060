package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	// Registers the "sqlite3-fk-wal" driver (mattn/go-sqlite3 with foreign keys and WAL).
	_ "go.mau.fi/util/dbutil/litestream"
	// Registers the "postgres" driver.
	_ "github.com/lib/pq"
)

// Owner is recorded in the database so that two programs never share one by accident.
const Owner = "gxconf"

// Config is the `database:` section.
type Config struct {
	// Type is sqlite3-fk-wal (SQLite, default) or postgres.
	Type string `yaml:"type"`
	// URI is the connection string: a SQLite file URI or a PostgreSQL URL.
	URI string `yaml:"uri"`
	// MaxOpenConns limits the pool; SQLite works best with few writers.
	MaxOpenConns int `yaml:"max_open_conns"`
	// MaxIdleConns keeps connections around between requests.
	MaxIdleConns int `yaml:"max_idle_conns"`
	// TLS protects the connection to PostgreSQL (added to the URI).
	TLS TLSConfig `yaml:"tls"`
}

// TLSConfig is `database.tls`: TLS to PostgreSQL with files from mounted
// Secrets, added to the URI as lib/pq's (libpq's) sslmode, sslrootcert,
// sslcert and sslkey parameters. Empty keys leave the URI as it is.
type TLSConfig struct {
	// Mode is the sslmode: verify-full (the server's chain and host name are
	// checked; the only mode that stops a man in the middle), verify-ca,
	// require (encrypted, unauthenticated) or disable.
	Mode string `yaml:"mode"`
	// RootCertFile is the PEM CA bundle the server's chain is checked
	// against (sslrootcert); empty: the system's roots.
	RootCertFile string `yaml:"root_cert_file"`
	// CertFile and KeyFile are the client certificate and key (sslcert,
	// sslkey) for PostgreSQL's cert authentication. The key file must not
	// be readable by others (0600, or 0640 owned by root, as libpq checks).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// sslModes are the modes gxconf accepts; allow and prefer fall back to
// plain text without telling, so they are refused.
var sslModes = []string{"disable", "require", "verify-ca", "verify-full"}

// tlsParams maps the section's keys to the URI parameters they set.
func (t TLSConfig) params() [][2]string {
	return [][2]string{{"mode", "sslmode"}, {"root_cert_file", "sslrootcert"}, {"cert_file", "sslcert"}, {"key_file", "sslkey"}}
}

func (t TLSConfig) value(key string) string {
	switch key {
	case "mode":
		return t.Mode
	case "root_cert_file":
		return t.RootCertFile
	case "cert_file":
		return t.CertFile
	case "key_file":
		return t.KeyFile
	}
	return ""
}

func (t TLSConfig) set() bool { return t != TLSConfig{} }

// errInvalidURI names database.uri without quoting it: it holds the password.
var errInvalidURI = errors.New("uri: not a valid URL (percent-encode '%', '@', ':', '/', '?' and '#' in the user name and password, e.g. '%' as %25)")

// DSN is the connection string handed to the driver: URI, plus the tls
// section's parameters for PostgreSQL.
func (c *Config) DSN() (string, error) {
	if c.Type != "postgres" {
		return c.URI, nil
	}
	u, err := url.Parse(c.URI)
	if err != nil {
		// Not echoed, nor url.Parse's error: both quote the URI, password
		// and all, and lib/pq would return the same when connecting.
		return "", errInvalidURI
	}
	if !c.TLS.set() {
		return c.URI, nil
	}
	q := u.Query()
	for _, p := range c.TLS.params() {
		if v := c.TLS.value(p[0]); v != "" {
			q.Set(p[1], v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// SSLMode is the sslmode the connection will use ("" for SQLite); lib/pq
// defaults to require.
func (c *Config) SSLMode() string {
	if c.Type != "postgres" {
		return ""
	}
	if c.TLS.Mode != "" {
		return c.TLS.Mode
	}
	if u, err := url.Parse(c.URI); err == nil {
		if m := u.Query().Get("sslmode"); m != "" {
			return m
		}
	}
	return "require"
}

// DefaultConfig is a SQLite file next to the working directory.
func DefaultConfig() Config {
	return Config{
		Type:         "sqlite3-fk-wal",
		URI:          "file:gxconf.db?_txlock=immediate",
		MaxOpenConns: 5,
		MaxIdleConns: 2,
	}
}

// Validate reports every problem, each named by its key within the section.
func (c *Config) Validate() error {
	var errs []error
	switch c.Type {
	case "sqlite3-fk-wal", "postgres":
	case "sqlite3", "sqlite":
		errs = append(errs, fmt.Errorf("type: %q lacks foreign keys and WAL; use sqlite3-fk-wal", c.Type))
	default:
		errs = append(errs, fmt.Errorf("type: must be sqlite3-fk-wal or postgres, got %q", c.Type))
	}
	if c.URI == "" {
		errs = append(errs, errors.New("uri: must be set"))
	} else if c.Type == "postgres" && !strings.HasPrefix(c.URI, "postgres://") && !strings.HasPrefix(c.URI, "postgresql://") {
		errs = append(errs, errors.New("uri: a postgres uri starts with postgres:// or postgresql://"))
	} else if _, err := c.DSN(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxOpenConns < 1 {
		errs = append(errs, fmt.Errorf("max_open_conns: must be at least 1, got %d", c.MaxOpenConns))
	}
	if c.MaxIdleConns < 0 {
		errs = append(errs, fmt.Errorf("max_idle_conns: must not be negative, got %d", c.MaxIdleConns))
	}
	errs = append(errs, c.validateTLS()...)
	return errors.Join(errs...)
}

func (c *Config) validateTLS() []error {
	t := c.TLS
	if !t.set() {
		if c.Type == "postgres" && c.URI != "" {
			if m := c.SSLMode(); m == "allow" || m == "prefer" {
				return []error{fmt.Errorf("uri: sslmode=%s falls back to plain text unnoticed; use verify-full (or disable on a trusted local socket)", m)}
			}
		}
		return nil
	}
	if c.Type != "postgres" {
		return []error{errors.New("tls: applies to PostgreSQL only (database.type postgres)")}
	}
	var errs []error
	if t.Mode != "" && !slices.Contains(sslModes, t.Mode) {
		errs = append(errs, fmt.Errorf("tls.mode: must be one of %s, got %q", strings.Join(sslModes, ", "), t.Mode))
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("tls.cert_file: must be set together with tls.key_file"))
	}
	if t.Mode == "disable" && (t.RootCertFile != "" || t.CertFile != "") {
		errs = append(errs, errors.New("tls.mode: disable contradicts the certificate files set"))
	}
	if u, err := url.Parse(c.URI); err == nil {
		q := u.Query()
		for _, p := range t.params() {
			if t.value(p[0]) != "" && q.Has(p[1]) {
				errs = append(errs, fmt.Errorf("tls.%s: the uri sets %s too; set it in one place", p[0], p[1]))
			}
		}
	}
	for _, f := range [][2]string{{"root_cert_file", t.RootCertFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
		if f[1] == "" {
			continue
		}
		if _, err := os.Stat(f[1]); err != nil {
			errs = append(errs, fmt.Errorf("tls.%s: %w", f[0], err))
		}
	}
	return errs
}

// Open connects to the database and claims it for gxconf. Callers build their
// own children with Database.Child and run their upgrades.
func Open(ctx context.Context, cfg Config, log zerolog.Logger) (*dbutil.Database, error) {
	dsn, err := cfg.DSN()
	if err != nil {
		return nil, fmt.Errorf("failed to open database: %w", err)
	}
	if m := cfg.SSLMode(); m != "" && m != "verify-full" {
		log.Warn().Str("sslmode", m).Msg("The database connection does not verify the server's name (database.tls.mode verify-full does)")
	}
	db, err := dbutil.NewFromConfig(Owner, dbutil.Config{PoolConfig: dbutil.PoolConfig{
		Type:         cfg.Type,
		URI:          dsn,
		MaxOpenConns: cfg.MaxOpenConns,
		MaxIdleConns: cfg.MaxIdleConns,
	}}, dbutil.ZeroLogger(log.With().Str("component", "database").Logger()))
	if err != nil {
		return nil, fmt.Errorf("failed to open database: %w", err)
	}
	// The root database has no tables of its own; Upgrade records the owner and
	// refuses a database that belongs to another program.
	if err := db.Upgrade(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("failed to claim database: %w", err)
	}
	return db, nil
}
