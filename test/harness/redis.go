package harness

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Redis is a throwaway redis-server (Debian's package) on loopback.
type Redis struct {
	Addr    string
	bin     string
	args    []string
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
}

// StartRedis runs redis-server on a free loopback port without persistence
// and waits until it answers PING; it also listens on the extra addresses
// (e.g. a test network namespace's uplink).
func StartRedis(ctx context.Context, dir string, extraBind ...string) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found (scripts/deps.sh installs it): %w", err)
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), bin: bin,
		logPath: filepath.Join(dir, "redis.log")}
	args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1"}, extraBind...)
	if len(extraBind) > 0 {
		args = append(args, "--protected-mode", "no")
	}
	r.args = append(args, "--save", "", "--appendonly", "no", "--logfile", r.logPath, "--dir", dir)
	if err := r.start(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// start runs the server with r's arguments and waits until it answers PING.
func (r *Redis) start(ctx context.Context) error {
	r.cmd = exec.Command(r.bin, r.args...)
	r.done = make(chan struct{})
	if err := r.cmd.Start(); err != nil {
		return err
	}
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(r.cmd, r.done)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if ping(r.Addr) {
			return nil
		}
		select {
		case <-r.done:
			return fmt.Errorf("redis-server exited during start-up; log:\n%s", r.Log())
		case <-ctx.Done():
			r.Stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling another process' listener
		}
	}
	r.Stop()
	return fmt.Errorf("redis-server did not answer within 20s; log:\n%s", r.Log())
}

// Restart starts a stopped server again on the same address and directory,
// with an empty dataset (no persistence), as after a crash.
func (r *Redis) Restart(ctx context.Context) error {
	select {
	case <-r.done:
	default:
		return fmt.Errorf("redis-server at %s is still running", r.Addr)
	}
	return r.start(ctx)
}

func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "+PONG\r\n"
}

// Stop kills the server (SIGKILL: no shutdown, clients see their
// connections reset) and waits for it; Restart can start it again.
func (r *Redis) Stop() {
	_ = r.cmd.Process.Kill()
	<-r.done
}

// Log returns the server's log.
func (r *Redis) Log() string {
	b, _ := os.ReadFile(r.logPath)
	return string(b)
}

// Freeze stops the server with SIGSTOP: connections stay open and
// requests hang, as behind a network partition. Stop still ends it.
func (r *Redis) Freeze() error { return r.cmd.Process.Signal(syscall.SIGSTOP) }
