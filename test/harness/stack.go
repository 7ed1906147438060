package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"
)

// StackOptions configure a Dendrite + gxconf pair.
type StackOptions struct {
	// Bin is the gxconf binary.
	Bin string
	// Dir receives configs, databases and logs.
	Dir string
	// Config is merged over the generated gxconf config (nested maps merge).
	Config map[string]any
	// OpenIDTokenLifetime shortens Dendrite's OpenID tokens.
	OpenIDTokenLifetime time.Duration
	// Env is added to gxconf's environment.
	Env []string
	// SFUPort is the embedded SFU's HTTP port; 0 picks a free one (tests
	// that must name the URL in the config beforehand pick it themselves).
	SFUPort int
	// FocusPort is the focus API's port; 0 picks a free one (tests that
	// register the focus URL elsewhere beforehand pick it themselves).
	FocusPort int
}

// Stack is a running homeserver with gxconf registered as its appservice.
type Stack struct {
	Dendrite *Dendrite
	Gxconf   *Process
	// FocusURL is the focus API (livekit_service_url).
	FocusURL string
	// MetricsURL serves /metrics, apart from the focus listener.
	MetricsURL string
	// DBDriver and DBURI open gxconf's database from a test (database/sql).
	DBDriver, DBURI  string
	ConfigPath       string
	RegistrationPath string
	BotID            id.UserID
	// SFUURL, SFUKey and SFUSecret reach the embedded SFU (signalling and Twirp).
	SFUURL, SFUKey, SFUSecret string
}

// StartStack writes a gxconf config for a fresh Dendrite, generates the
// registration with `gxconf generate-registration`, starts Dendrite with it,
// then starts `gxconf serve`.
func StartStack(ctx context.Context, opts StackOptions) (*Stack, error) {
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	hsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	asPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	focusPort := opts.FocusPort
	if focusPort == 0 {
		if focusPort, err = FreePort(); err != nil {
			return nil, err
		}
	}
	sfuPort := opts.SFUPort
	if sfuPort == 0 {
		if sfuPort, err = FreePort(); err != nil {
			return nil, err
		}
	}
	metricsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	udpPort, err := FreeUDPPort()
	if err != nil {
		return nil, err
	}
	hsURL := fmt.Sprintf("http://127.0.0.1:%d", hsPort)
	s := &Stack{
		FocusURL:         fmt.Sprintf("http://127.0.0.1:%d", focusPort),
		MetricsURL:       fmt.Sprintf("http://127.0.0.1:%d", metricsPort),
		DBDriver:         "sqlite3",
		DBURI:            "file:" + filepath.Join(dir, "gxconf.db") + "?mode=ro",
		ConfigPath:       filepath.Join(dir, "gxconf.yaml"),
		RegistrationPath: filepath.Join(dir, "registration.yaml"),
		BotID:            id.NewUserID("gxconf", "localhost"),
		SFUURL:           fmt.Sprintf("ws://127.0.0.1:%d", sfuPort),
		SFUKey:           "gxconf-test",
		SFUSecret:        randomHex(24),
	}
	cfg := map[string]any{
		"homeserver": map[string]any{"domain": "localhost", "address": hsURL},
		"database":   map[string]any{"uri": "file:" + filepath.Join(dir, "gxconf.db") + "?_txlock=immediate"},
		"appservice": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", asPort)},
		"focus": map[string]any{
			"listen": fmt.Sprintf("127.0.0.1:%d", focusPort),
			"openid": map[string]any{"server_overrides": map[string]any{"localhost": hsURL}},
			// Tests send many requests from one address.
			"rate_limit": map[string]any{"per_ip": map[string]any{"rate": 1000, "burst": 1000}, "per_user": map[string]any{"rate": 1000, "burst": 1000}},
		},
		"sfu": map[string]any{
			"listen": fmt.Sprintf("127.0.0.1:%d", sfuPort),
			"keys":   map[string]any{s.SFUKey: s.SFUSecret},
			"rtc":    map[string]any{"udp_port": udpPort, "tcp_port": 0, "node_ip": "127.0.0.1"},
		},
		"metrics": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", metricsPort)},
		"logging": map[string]any{"level": "debug"},
	}
	mergeMaps(cfg, opts.Config)
	if db, _ := cfg["database"].(map[string]any); db["type"] == "postgres" {
		s.DBDriver, s.DBURI = "postgres", db["uri"].(string)
	}
	raw, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.ConfigPath, raw, 0o600); err != nil {
		return nil, err
	}
	gen := exec.CommandContext(ctx, opts.Bin, "generate-registration", "-c", s.ConfigPath, "-r", s.RegistrationPath)
	if out, err := gen.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("generate-registration: %w\n%s", err, out)
	}
	hsDir := filepath.Join(dir, "dendrite")
	if err := os.MkdirAll(hsDir, 0o755); err != nil {
		return nil, err
	}
	s.Dendrite, err = StartDendrite(ctx, DendriteOptions{
		Dir:                 hsDir,
		Port:                hsPort,
		Registrations:       []string{s.RegistrationPath},
		OpenIDTokenLifetime: opts.OpenIDTokenLifetime,
	})
	if err != nil {
		return nil, err
	}
	s.Gxconf, err = StartGxconf(ctx, opts.Bin, s.ConfigPath, s.RegistrationPath, filepath.Join(dir, "gxconf.log"), s.FocusURL+"/healthz", opts.Env...)
	if err != nil {
		s.Dendrite.Stop()
		return nil, err
	}
	return s, nil
}

// Stop stops gxconf (gracefully) and Dendrite; it returns gxconf's exit error.
func (s *Stack) Stop() error {
	var err error
	if s.Gxconf != nil {
		err = s.Gxconf.Stop()
	}
	if s.Dendrite != nil {
		s.Dendrite.Stop()
	}
	return err
}

// mergeMaps copies src into dst, merging nested maps.
func mergeMaps(dst, src map[string]any) {
	for k, v := range src {
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				mergeMaps(dv, sv)
				continue
			}
		}
		dst[k] = v
	}
}
