package atrest

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Config is the `at_rest:` section.
type Config struct {
	// KeysDir holds one key per file (base64 of 32 random bytes); the file
	// name is the key id (letters, digits, '.', '_', '-'; at most 64).
	// Kubernetes' own entries of a mounted Secret (names starting with
	// "..") are skipped. Empty: only credentials.at_rest_key (no rotation).
	KeysDir string `yaml:"keys_dir"`
	// Primary is the id of the key that seals new values and that Rotate
	// re-encrypts to. Required when KeysDir holds more than one key.
	Primary string `yaml:"primary"`
}

// DefaultConfig is no key directory.
func DefaultConfig() Config { return Config{} }

// Enabled reports whether keys come from KeysDir.
func (c Config) Enabled() bool { return c.KeysDir != "" }

var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// LegacyKeyID names the key of values sealed before key ids existed
// (credentials.at_rest_key); they carry no header.
const LegacyKeyID = "legacy"

// Validate reports every problem, each named by its key within the
// section; it reads the key files.
func (c *Config) Validate() error {
	if !c.Enabled() {
		if c.Primary != "" {
			return errors.New("primary: needs keys_dir")
		}
		return nil
	}
	keys, err := ReadKeys(c.KeysDir)
	if err != nil {
		return err
	}
	var errs []error
	if c.Primary == "" && len(keys) > 1 {
		errs = append(errs, fmt.Errorf("primary: must name the key that seals new values (keys_dir holds %d keys)", len(keys)))
	}
	if c.Primary != "" {
		if _, ok := keys[c.Primary]; !ok {
			errs = append(errs, fmt.Errorf("primary: %q is not a key in keys_dir (have %s)", c.Primary, strings.Join(sortedIDs(keys), ", ")))
		}
	}
	return errors.Join(errs...)
}

// PrimaryID is the id of the primary key: Primary, or the only key.
func (c Config) PrimaryID(keys map[string][]byte) string {
	if c.Primary != "" {
		return c.Primary
	}
	ids := sortedIDs(keys)
	if len(ids) == 1 {
		return ids[0]
	}
	return ""
}

// ReadKeys reads every key file of dir. Errors name keys_dir and the file,
// never a key.
func ReadKeys(dir string) (map[string][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("keys_dir: %w", err)
	}
	keys := map[string][]byte{}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "..") || e.IsDir() {
			continue
		}
		path := filepath.Join(dir, name)
		if fi, err := os.Stat(path); err != nil || fi.IsDir() {
			continue // a dangling or directory symlink
		}
		if !keyIDPattern.MatchString(name) || name == LegacyKeyID {
			errs = append(errs, fmt.Errorf("keys_dir: %s: a key file's name is its id: letters, digits, '.', '_', '-', at most 64, not %q", name, LegacyKeyID))
			continue
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("keys_dir: %w", err))
			continue
		}
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
		if err != nil || len(k) != 32 {
			errs = append(errs, fmt.Errorf("keys_dir: %s: must hold base64 of exactly 32 bytes", name))
			continue
		}
		keys[name] = k
	}
	if len(errs) == 0 && len(keys) == 0 {
		errs = append(errs, fmt.Errorf("keys_dir: %s holds no key", dir))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return keys, nil
}

func sortedIDs(keys map[string][]byte) []string {
	ids := make([]string, 0, len(keys))
	for id := range keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
