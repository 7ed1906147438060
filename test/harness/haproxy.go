package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// HAProxy is Debian's haproxy as a site's entry: TCP (L4) in front of the
// site's nodes' signalling ports, each checked on the SFU's /healthz (503
// while a node drains, nothing when it is dead).
type HAProxy struct {
	// Addr is the frontend host:port.
	Addr    string
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
}

// HAProxyServer is one backend node.
type HAProxyServer struct{ Name, Addr string }

// StartHAProxy writes a config and runs haproxy in the foreground inside
// network namespace netns (or the test's own when ""), listening on bind,
// and waits until the frontend accepts connections from here.
func StartHAProxy(ctx context.Context, dir, netns, bind string, servers []HAProxyServer) (*HAProxy, error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return nil, fmt.Errorf("haproxy not found (scripts/deps.sh installs it): %w", err)
	}
	var cfg strings.Builder
	// Long client/server timeouts: the signalling WebSocket lives as long
	// as the call. A connection to a dead node is retried on another one
	// (redispatch). Checks every 200 ms: a node is out after 2 failures.
	fmt.Fprintf(&cfg, `global
  maxconn 2000
  log stdout format raw local0 info
defaults
  mode tcp
  log global
  option tcplog
  timeout connect 1s
  timeout client 1h
  timeout server 1h
  timeout check 1s
  retries 3
  option redispatch
frontend site
  bind %s
  default_backend nodes
backend nodes
  balance leastconn
  option httpchk
  http-check send meth GET uri /healthz
  http-check expect status 200
  default-server inter 200ms fall 2 rise 2
`, bind)
	for _, s := range servers {
		fmt.Fprintf(&cfg, "  server %s %s check\n", s.Name, s.Addr)
	}
	name := strings.NewReplacer(":", "_", ".", "_").Replace(bind)
	cfgPath := filepath.Join(dir, "haproxy-"+name+".cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		return nil, err
	}
	h := &HAProxy{Addr: bind, done: make(chan struct{}), logPath: filepath.Join(dir, "haproxy-"+name+".log")}
	logFile, err := os.Create(h.logPath)
	if err != nil {
		return nil, err
	}
	args := []string{"-db", "-f", cfgPath}
	h.cmd = exec.Command(bin, args...)
	if netns != "" {
		h.cmd = exec.Command("ip", append([]string{"netns", "exec", netns, bin}, args...)...)
	}
	h.cmd.Stdout, h.cmd.Stderr = logFile, logFile
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := h.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() { _ = h.cmd.Wait(); logFile.Close(); close(h.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", bind, 500*time.Millisecond); err == nil {
			c.Close()
			return h, nil
		}
		select {
		case <-h.done:
			return nil, fmt.Errorf("haproxy exited during start-up; log:\n%s", h.Log())
		case <-ctx.Done():
			h.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling another process' listener
		}
	}
	h.Stop()
	return nil, fmt.Errorf("haproxy did not listen on %s within 20s; log:\n%s", bind, h.Log())
}

// Stop ends haproxy and waits for it.
func (h *HAProxy) Stop() {
	_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
	<-h.done
}

// Log returns haproxy's output (connections, server state changes).
func (h *HAProxy) Log() string {
	b, _ := os.ReadFile(h.logPath)
	return string(b)
}
