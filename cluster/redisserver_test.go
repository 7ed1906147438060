package cluster

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/test/harness"
)

// redisServer is a real redis-server process (Debian's package) on a random
// loopback port, in a temporary directory, without persistence.
type redisServer struct {
	tb    testing.TB
	path  string
	addr  string
	dir   string
	extra []string
	// tls serves the port with TLS only (redis-server --tls-port).
	tls bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    *bytes.Buffer
}

func startRedis(tb testing.TB, extra ...string) *redisServer {
	tb.Helper()
	return startRedisWith(tb, false, extra...)
}

func startRedisWith(tb testing.TB, tls bool, extra ...string) *redisServer {
	tb.Helper()
	if testing.Short() {
		tb.Skip("starts a redis-server process; skipped under -short")
	}
	path, err := exec.LookPath("redis-server")
	require.NoError(tb, err, "redis-server is needed (Debian package redis-server, see scripts/deps.sh)")
	port, err := harness.FreePort()
	require.NoError(tb, err)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s := &redisServer{tb: tb, path: path, addr: addr, dir: tb.TempDir(), extra: extra, tls: tls}
	s.start()
	tb.Cleanup(func() { s.kill(syscall.SIGTERM) })
	return s
}

func (s *redisServer) start() {
	s.tb.Helper()
	_, port, _ := net.SplitHostPort(s.addr)
	ports := []string{"--port", port}
	if s.tls {
		ports = []string{"--port", "0", "--tls-port", port}
	}
	args := append(append(ports,
		"--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--loglevel", "warning", "--daemonize", "no",
	), s.extra...)
	cmd := exec.Command(s.path, args...)
	log := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(s.tb, cmd.Start())
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited, s.log = cmd, exited, log
	s.mu.Unlock()
	require.Eventually(s.tb, func() bool {
		c, err := net.DialTimeout("tcp", s.addr, 100*time.Millisecond)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}, 10*time.Second, 20*time.Millisecond, "redis-server did not start: %s", log)
}

// kill stops the process with sig and waits for it.
func (s *redisServer) kill(sig syscall.Signal) {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	<-exited
}

// client is a plain client for inspecting the keyspace.
func (s *redisServer) client(tb testing.TB, password string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.addr, Password: password, DisableIdentity: true})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}
