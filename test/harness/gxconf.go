package harness

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// BuildGxconf builds ./cmd/gxconf into dir, with the race detector when race is set.
func BuildGxconf(ctx context.Context, dir string, race bool) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "gxconf")
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/gxconf")...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build gxconf: %w\n%s", err, b)
	}
	return out, nil
}

// Process is a running gxconf.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	// LogPath holds gxconf's stdout and stderr.
	LogPath string
	err     error
}

// StartGxconf runs `gxconf serve` and waits until healthURL answers 200.
func StartGxconf(ctx context.Context, bin, cfgPath, regPath, logPath, healthURL string, env ...string) (*Process, error) {
	return StartGxconfIn(ctx, "", bin, cfgPath, regPath, logPath, healthURL, env...)
}

// StartGxconfIn is StartGxconf inside network namespace netns (`ip netns
// exec`, which execs gxconf: the process is gxconf itself); "" is the
// test's own namespace.
func StartGxconfIn(ctx context.Context, netns, bin, cfgPath, regPath, logPath, healthURL string, env ...string) (*Process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "-c", cfgPath, "-r", regPath)
	if netns != "" {
		cmd = exec.Command("ip", "netns", "exec", netns, bin, "serve", "-c", cfgPath, "-r", regPath)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// GOTRACEBACK=all: the dump Stop asks for on a hung shutdown shows
	// every goroutine.
	cmd.Env = append(append(os.Environ(), "GOTRACEBACK=all"), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	p := &Process{cmd: cmd, done: make(chan struct{}), LogPath: logPath}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return nil, fmt.Errorf("gxconf exited during start-up (%v); log:\n%s", p.err, p.Log())
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		default:
		}
		if resp, err := http.Get(healthURL); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		time.Sleep(50 * time.Millisecond) // polling another process' listener
	}
	p.Stop()
	return nil, fmt.Errorf("gxconf not healthy after 60s; log:\n%s", p.Log())
}

// Stop sends SIGTERM (a graceful shutdown), waits, and reports how it exited.
func (p *Process) Stop() error {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		// SIGQUIT makes the Go runtime print every goroutine's stack
		// and exit: the log then says what held the shutdown.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		log := p.Log()
		kept := filepath.Join(os.TempDir(), fmt.Sprintf("gxconf-hung-%d.log", p.cmd.Process.Pid))
		_ = os.WriteFile(kept, []byte(log), 0o600)
		return fmt.Errorf("gxconf did not stop within 20s of SIGTERM (whole log kept in %s)\n%s", kept, hungReport(log))
	}
	return p.err
}

// Pid is the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Log returns gxconf's output.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}
