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
	"time"
)

// Redis is a throwaway redis-server (Debian's package) on loopback.
type Redis struct {
	Addr    string
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
	r := &Redis{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), done: make(chan struct{}),
		logPath: filepath.Join(dir, "redis.log")}
	args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1"}, extraBind...)
	if len(extraBind) > 0 {
		args = append(args, "--protected-mode", "no")
	}
	args = append(args, "--save", "", "--appendonly", "no", "--logfile", r.logPath, "--dir", dir)
	r.cmd = exec.Command(bin, args...)
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if ping(r.Addr) {
			return r, nil
		}
		select {
		case <-r.done:
			return nil, fmt.Errorf("redis-server exited during start-up; log:\n%s", r.Log())
		case <-ctx.Done():
			r.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling another process' listener
		}
	}
	r.Stop()
	return nil, fmt.Errorf("redis-server did not answer within 20s; log:\n%s", r.Log())
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

// Stop kills the server and waits for it.
func (r *Redis) Stop() {
	_ = r.cmd.Process.Kill()
	<-r.done
}

// Log returns the server's log.
func (r *Redis) Log() string {
	b, _ := os.ReadFile(r.logPath)
	return string(b)
}
