package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// HydraVersion is the ORY Hydra release the admin-login tests run.
const HydraVersion = "v2.3.0"

// HydraBin returns the hydra binary: $GXTEST_HYDRA_BIN, or .cache/bin/hydra,
// built there when missing. Hydra's go.mod replaces its client module by a
// directory the module zip lacks, so `go install` cannot build it: the
// module is downloaded, that replace dropped (the published client of the
// same API is used instead) and the binary built in a copy.
func HydraBin(ctx context.Context) (string, error) {
	if p := os.Getenv("GXTEST_HYDRA_BIN"); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, ".cache", "bin", "hydra")
	installMu.Lock()
	defer installMu.Unlock()
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "build-hydra.sh"), bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build hydra %s: %w\n%s", HydraVersion, err, out)
	}
	return bin, nil
}

// Hydra is a running ORY Hydra (in-memory, --dev: plain HTTP on loopback).
type Hydra struct {
	cmd       *exec.Cmd
	done      chan struct{}
	PublicURL string
	AdminURL  string
	// Issuer is the issuer the discovery document names.
	Issuer  string
	LogPath string
}

// StartHydra runs `hydra serve all --dev` with an in-memory store; loginURL
// and consentURL are the test's login and consent app.
func StartHydra(ctx context.Context, dir, loginURL, consentURL string) (*Hydra, error) {
	bin, err := HydraBin(ctx)
	if err != nil {
		return nil, err
	}
	pub, err := FreePort()
	if err != nil {
		return nil, err
	}
	adm, err := FreePort()
	if err != nil {
		return nil, err
	}
	h := &Hydra{
		PublicURL: fmt.Sprintf("http://127.0.0.1:%d", pub), AdminURL: fmt.Sprintf("http://127.0.0.1:%d", adm),
		LogPath: filepath.Join(dir, "hydra.log"), done: make(chan struct{}),
	}
	logFile, err := os.Create(h.LogPath)
	if err != nil {
		return nil, err
	}
	// --sqa-opt-out: no telemetry reports to ORY.
	h.cmd = exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out")
	h.cmd.Env = append(os.Environ(),
		"DSN=memory",
		"SECRETS_SYSTEM="+randomHex(16),
		"URLS_SELF_ISSUER="+h.PublicURL+"/",
		"URLS_LOGIN="+loginURL,
		"URLS_CONSENT="+consentURL,
		fmt.Sprintf("SERVE_PUBLIC_PORT=%d", pub), "SERVE_PUBLIC_HOST=127.0.0.1",
		fmt.Sprintf("SERVE_ADMIN_PORT=%d", adm), "SERVE_ADMIN_HOST=127.0.0.1",
		"LOG_LEVEL=info",
	)
	h.cmd.Stdout, h.cmd.Stderr = logFile, logFile
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := h.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() {
		_ = h.cmd.Wait()
		logFile.Close()
		close(h.done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-h.done:
			return nil, fmt.Errorf("hydra exited during start-up; log:\n%s", h.Log())
		case <-ctx.Done():
			h.Stop()
			return nil, ctx.Err()
		default:
		}
		if resp, err := http.Get(h.PublicURL + "/.well-known/openid-configuration"); err == nil {
			var doc struct {
				Issuer string `json:"issuer"`
			}
			err = json.NewDecoder(resp.Body).Decode(&doc)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK && doc.Issuer != "" {
				h.Issuer = doc.Issuer
				if r2, err := http.Get(h.AdminURL + "/health/ready"); err == nil {
					r2.Body.Close()
					if r2.StatusCode == http.StatusOK {
						return h, nil
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.Stop()
	return nil, fmt.Errorf("hydra did not become ready; log:\n%s", h.Log())
}

// Log returns Hydra's output so far.
func (h *Hydra) Log() string {
	b, _ := os.ReadFile(h.LogPath)
	return string(b)
}

// Stop ends Hydra and waits for it.
func (h *Hydra) Stop() {
	if h.cmd.Process != nil {
		_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGTERM)
	}
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		<-h.done
	}
}

// Admin calls Hydra's admin API with a JSON body and decodes the answer.
func (h *Hydra) Admin(ctx context.Context, method, path string, body, out any) error {
	var rd *strings.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(raw))
	} else {
		rd = strings.NewReader("")
	}
	req, err := http.NewRequestWithContext(ctx, method, h.AdminURL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("hydra %s %s: %d %v", method, path, resp.StatusCode, e)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}
