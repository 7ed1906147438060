package servertls

import (
	"errors"
	"fmt"
	"time"
)

// Config is the `tls:` section: native TLS on the focus, appservice and SFU
// signalling listeners. Empty cert_file leaves them plain HTTP (TLS ends at a
// reverse proxy or Ingress).
type Config struct {
	// CertFile is the PEM certificate chain (leaf first); KeyFile its key.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
	// ReloadInterval is how often, at most, the files are checked for a
	// change (on the next handshake).
	ReloadInterval time.Duration `yaml:"reload_interval"`
}

// DefaultConfig returns the section's defaults: TLS off.
func DefaultConfig() Config {
	return Config{MinVersion: "1.2", ReloadInterval: time.Minute}
}

// Enabled reports whether the listeners serve TLS.
func (c Config) Enabled() bool { return c.CertFile != "" }

// Validate reports every problem, each named by its key within the section.
func (c *Config) Validate() error {
	var errs []error
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("cert_file: must be set together with key_file"))
	}
	if c.MinVersion != "1.2" && c.MinVersion != "1.3" {
		errs = append(errs, fmt.Errorf("min_version: must be 1.2 or 1.3, got %q", c.MinVersion))
	}
	if c.ReloadInterval < time.Second {
		errs = append(errs, fmt.Errorf("reload_interval: must be at least 1s, got %s", c.ReloadInterval))
	}
	return errors.Join(errs...)
}
