package harness

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// DendriteVersion is the homeserver version the tests run against.
const DendriteVersion = "v0.13.8"

var dendriteCommands = []string{"dendrite", "generate-keys", "generate-config"}

// RepoRoot finds the directory holding go.mod, starting from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

var installMu sync.Mutex

// DendriteBin returns the directory with Dendrite's binaries, installing them
// with `go install` when they are missing.
func DendriteBin(ctx context.Context) (string, error) {
	dir := os.Getenv("DENDRITE_BIN_DIR")
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, ".cache", "bin")
	}
	installMu.Lock()
	defer installMu.Unlock()
	var missing []string
	for _, c := range dendriteCommands {
		if _, err := os.Stat(filepath.Join(dir, c)); err != nil {
			missing = append(missing, "github.com/matrix-org/dendrite/cmd/"+c+"@"+DendriteVersion)
		}
	}
	if len(missing) == 0 {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", append([]string{"install"}, missing...)...)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	cmd.Dir = os.TempDir() // outside our module: install the pinned versions
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install dendrite %s: %w\n%s", DendriteVersion, err, out)
	}
	return dir, nil
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	return freePort(func(addr string) (io.Closer, error) { return net.Listen("tcp", addr) })
}

// FreeUDPPort returns a loopback UDP port that was free a moment ago.
func FreeUDPPort() (int, error) {
	return freePort(func(addr string) (io.Closer, error) { return net.ListenPacket("udp4", addr) })
}

// Ports are handed out from below the kernel's ephemeral range (32768 and
// up on Linux): a port from that range, free when probed, can be taken as
// the local port of any outgoing connection (Chromium's, an HTTP client's)
// before the process it is meant for binds it ("address already in use").
// A per-process random start and a rising counter keep handed-out ports
// apart.
const portLow, portHigh = 20000, 32000

var portNext atomic.Uint32

func init() {
	portNext.Store(uint32(mrand.IntN(portHigh - portLow)))
}

func freePort(listen func(addr string) (io.Closer, error)) (int, error) {
	for range portHigh - portLow {
		p := portLow + int(portNext.Add(1)%(portHigh-portLow))
		c, err := listen(fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		_ = c.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free port in %d–%d", portLow, portHigh)
}

// DendriteOptions configure a test homeserver.
type DendriteOptions struct {
	// Dir holds keys, config, databases and the log; it must exist.
	Dir string
	// ServerName defaults to "localhost".
	ServerName string
	// Port of the HTTP listener (client, federation, well-known); 0 picks one.
	Port int
	// Host is the listener's IP; empty: 127.0.0.1.
	Host string
	// Registrations are appservice registration files to load.
	Registrations []string
	// WellKnownClient sets global.well_known_client_name.
	WellKnownClient string
	// OpenIDTokenLifetime overrides user_api.openid_token_lifetime_ms (default 1 h).
	OpenIDTokenLifetime time.Duration
	// Stdout receives Dendrite's own output; nil discards it (it also logs to Dir/log).
	Stdout io.Writer
	// Netns runs Dendrite inside that network namespace (`ip netns exec`);
	// the listeners' addresses must exist there and Host must be reachable
	// from the test's namespace. Empty: the test's own namespace.
	Netns string
	// LogLevel of the log in Dir/log; empty: "info". Dendrite logs a
	// failed outgoing federation transaction (which puts the destination
	// in backoff) only at "debug".
	LogLevel string
	// FederationTLS, if set, is the host:port of a federation (HTTPS)
	// listener with a self-signed certificate generated at start. Such a
	// homeserver federates: it does not verify its peers' certificates
	// either (federation_api.disable_tls_validation), as every test
	// homeserver's is self-signed. Its port must be the one other servers
	// find for ServerName (e.g. the explicit port in "hs.test:8448").
	FederationTLS string
}

// Dendrite is a running homeserver.
type Dendrite struct {
	ServerName string
	// URL is the base URL of the client-server (and federation) API.
	URL    string
	Dir    string
	secret string
	cmd    *exec.Cmd
	done   chan struct{}
}

// StartDendrite generates a fresh homeserver in opts.Dir and starts it.
func StartDendrite(ctx context.Context, opts DendriteOptions) (*Dendrite, error) {
	bin, err := DendriteBin(ctx)
	if err != nil {
		return nil, err
	}
	if opts.ServerName == "" {
		opts.ServerName = "localhost"
	}
	if opts.Port == 0 {
		if opts.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(dir, "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	keyArgs := []string{"-private-key", "matrix_key.pem"}
	if opts.FederationTLS != "" {
		// Self-signed; 2048 bits, as 4096 (the default) costs seconds.
		keyArgs = append(keyArgs, "-tls-cert", "server.crt", "-tls-key", "server.key", "-keysize", "2048")
	}
	keys := exec.CommandContext(ctx, filepath.Join(bin, "generate-keys"), keyArgs...)
	keys.Dir = dir
	if out, err := keys.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("generate-keys: %w\n%s", err, out)
	}
	gen := exec.CommandContext(ctx, filepath.Join(bin, "generate-config"), "-dir", dataDir, "-server", opts.ServerName)
	gen.Dir = dir
	raw, err := gen.Output()
	if err != nil {
		return nil, fmt.Errorf("generate-config: %w", err)
	}
	secret := randomHex(16)
	conf, err := editDendriteConfig(raw, secret, dir, opts)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "dendrite.yaml")
	if err := os.WriteFile(cfgPath, conf, 0o600); err != nil {
		return nil, err
	}
	host := opts.Host
	if host == "" {
		host = "127.0.0.1"
	}
	addr := net.JoinHostPort(host, strconv.Itoa(opts.Port))
	args := []string{filepath.Join(bin, "dendrite"), "-config", cfgPath, "-http-bind-address", addr}
	if opts.FederationTLS != "" {
		args = append(args, "-https-bind-address", opts.FederationTLS,
			"-tls-cert", filepath.Join(dir, "server.crt"), "-tls-key", filepath.Join(dir, "server.key"))
	}
	if opts.Netns != "" {
		// ip execs Dendrite: the process (group) we signal is Dendrite's.
		args = append([]string{"ip", "netns", "exec", opts.Netns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	out := opts.Stdout
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dendrite: %w", err)
	}
	d := &Dendrite{ServerName: opts.ServerName, URL: "http://" + addr, Dir: dir, secret: secret, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
	if err := d.waitReady(ctx, 60*time.Second); err != nil {
		d.Stop()
		return nil, err
	}
	return d, nil
}

// editDendriteConfig adapts generate-config's output for an offline loopback
// test server: shared-secret registration, in-memory JetStream, no rate limits,
// no key perspectives (no calls to matrix.org), cheap bcrypt, our appservices.
func editDendriteConfig(raw []byte, secret, dir string, opts DendriteOptions) ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("parse generated dendrite config: %w", err)
	}
	section := func(name string) map[string]any {
		m, _ := doc[name].(map[string]any)
		if m == nil {
			m = map[string]any{}
			doc[name] = m
		}
		return m
	}
	global := section("global")
	if js, ok := global["jetstream"].(map[string]any); ok {
		js["in_memory"] = true
	}
	global["trusted_third_party_id_servers"] = []string{}
	global["well_known_client_name"] = opts.WellKnownClient
	if r, ok := global["report_stats"].(map[string]any); ok {
		r["enabled"] = false
	}
	regs := opts.Registrations
	if regs == nil {
		regs = []string{}
	}
	section("app_service_api")["config_files"] = regs
	client := section("client_api")
	client["registration_shared_secret"] = secret
	if rl, ok := client["rate_limiting"].(map[string]any); ok {
		rl["enabled"] = false
	}
	fed := section("federation_api")
	fed["key_perspectives"] = []any{}
	if opts.FederationTLS != "" {
		fed["disable_tls_validation"] = true
	}
	userAPI := section("user_api")
	userAPI["bcrypt_cost"] = 4
	if opts.OpenIDTokenLifetime > 0 {
		userAPI["openid_token_lifetime_ms"] = opts.OpenIDTokenLifetime.Milliseconds()
	}
	level := opts.LogLevel
	if level == "" {
		level = "info"
	}
	doc["logging"] = []any{map[string]any{"type": "file", "level": level, "params": map[string]any{"path": filepath.Join(dir, "log")}}}
	return yaml.Marshal(doc)
}

func (d *Dendrite) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			return fmt.Errorf("dendrite exited during start-up; see %s", filepath.Join(d.Dir, "log"))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := http.Get(d.URL + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond) // polling a process we cannot subscribe to
	}
	return fmt.Errorf("dendrite not ready after %s", timeout)
}

// Stop terminates the homeserver and waits for it.
func (d *Dendrite) Stop() {
	if d.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
}

// Log returns the tail of Dendrite's log files, for failure messages.
func (d *Dendrite) Log() string {
	matches, _ := filepath.Glob(filepath.Join(d.Dir, "log", "*.log"))
	var b strings.Builder
	for _, m := range matches {
		data, _ := os.ReadFile(m)
		if len(data) > 8000 {
			data = data[len(data)-8000:]
		}
		b.WriteString("== " + filepath.Base(m) + "\n")
		b.Write(data)
	}
	return b.String()
}

// FederationLog returns the last of the log lines that Dendrite's
// federation API wrote (transactions sent and received, destinations in
// backoff) and every warning and error, for failure messages: the plain
// tail (Log) is mostly client API traffic.
func (d *Dendrite) FederationLog() string {
	data, _ := os.ReadFile(filepath.Join(d.Dir, "log", "dendrite.log"))
	var b strings.Builder
	for line := range strings.Lines(string(data)) {
		if strings.Contains(line, "federationapi/") || strings.Contains(line, "level=warning") || strings.Contains(line, "level=error") {
			b.WriteString(line)
		}
	}
	out := b.String()
	if len(out) > 12000 {
		out = "…" + out[len(out)-12000:]
	}
	return out
}

// KeepLog copies Dendrite's log files into dir (which must exist), named
// after prefix, so that they outlive the test's temporary directory.
func (d *Dendrite) KeepLog(dir, prefix string) error {
	matches, _ := filepath.Glob(filepath.Join(d.Dir, "log", "*"))
	var errs []error
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, prefix+"-"+filepath.Base(m)), data, 0o600)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// User is a registered account with a logged-in client.
type User struct {
	ID       id.UserID
	Password string
	Client   *mautrix.Client
}

// RegisterUser creates an account with shared-secret registration (the
// /_synapse/admin/v1/register API that Dendrite implements).
func (d *Dendrite) RegisterUser(ctx context.Context, localpart, password string, admin bool) (*User, error) {
	nonceResp, err := d.getJSON(ctx, "/_synapse/admin/v1/register")
	if err != nil {
		return nil, err
	}
	nonce, _ := nonceResp["nonce"].(string)
	if nonce == "" {
		return nil, errors.New("no registration nonce")
	}
	role := "notadmin"
	if admin {
		role = "admin"
	}
	mac := hmac.New(sha1.New, []byte(d.secret))
	mac.Write([]byte(nonce + "\x00" + localpart + "\x00" + password + "\x00" + role))
	body, _ := json.Marshal(map[string]any{
		"nonce": nonce, "username": localpart, "password": password, "admin": admin,
		"mac": hex.EncodeToString(mac.Sum(nil)),
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.URL+"/_synapse/admin/v1/register", bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("register %s: %d %s", localpart, resp.StatusCode, respBody)
	}
	var reg struct {
		UserID      id.UserID   `json:"user_id"`
		AccessToken string      `json:"access_token"`
		DeviceID    id.DeviceID `json:"device_id"`
	}
	if err := json.Unmarshal(respBody, &reg); err != nil {
		return nil, err
	}
	cli, err := mautrix.NewClient(d.URL, reg.UserID, reg.AccessToken)
	if err != nil {
		return nil, err
	}
	cli.DeviceID = reg.DeviceID
	return &User{ID: reg.UserID, Password: password, Client: cli}, nil
}

func (d *Dendrite) getJSON(ctx context.Context, path string) (map[string]any, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	return out, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
