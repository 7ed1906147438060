package sfu_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/sfu"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

// TestTURNTCPOnlyClient proves that a client whose network lets through
// nothing but TCP to one port (the signalling port, which also serves
// TURN over TLS: sfu.turn.tls_on_signal_port) joins and exchanges media
// with a normal client.
//
// The restricted client runs in its own network namespace, joined to this
// one by a veth pair on a /30 the test creates, with an nftables filter
// that drops every packet except TCP to and from <host>:<signalling port>.
// Both clients are this test binary re-executed (TestTURNClientHelper)
// with the test certificate as their only root (SSL_CERT_FILE): one inside
// the namespace, one outside with TURN disabled (lksdk.WithDisableTURN).
// Media from and to the restricted client therefore can only have crossed
// the embedded TURN server over TLS, which the relay metrics confirm.
// tcpOnlyNet is a network namespace whose only way out is TCP to the
// SFU's signalling port (which also serves TURNS), and that SFU.
type tcpOnlyNet struct {
	ns, hostIP, tag string
	ts              *testServer
	certFile, dir   string
}

// newTCPOnlyNet creates the namespace, the veth pair on a random /30 and
// the nftables filter, all removed at cleanup, and starts the SFU on the
// host side of the pair with TURN over TLS on its signalling port.
// missingPeer skips a test whose real peer is not installed — except in CI
// (CI set), where every peer test must run: there it fails.
func missingPeer(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func newTCPOnlyNet(t *testing.T) *tcpOnlyNet {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test")
	}
	if os.Geteuid() != 0 {
		missingPeer(t, "needs root for network namespaces")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			missingPeer(t, "needs "+bin+" (Debian packages iproute2, nftables; scripts/deps.sh)")
		}
	}

	// The namespace, the veth pair and the /30; removed on every path.
	tag := fmt.Sprintf("%05x", mrand.IntN(1<<20))
	ns, hostIf, nsIf := "gxturn-"+tag, "gxth"+tag, "gxtn"+tag
	octet := 4 * mrand.IntN(64)
	hostIP := fmt.Sprintf("10.213.%d.%d", mrand.IntN(256), octet+1)
	nsIP := hostIP[:strings.LastIndex(hostIP, ".")+1] + strconv.Itoa(octet+2)
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		require.NoError(t, err, "%v: %s", args, out)
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", hostIf).Run()
		_ = exec.Command("ip", "netns", "del", ns).Run()
	})
	run("ip", "netns", "add", ns)
	run("ip", "link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	run("ip", "link", "set", nsIf, "netns", ns)
	run("ip", "addr", "add", hostIP+"/30", "dev", hostIf)
	run("ip", "link", "set", hostIf, "up")
	run("ip", "netns", "exec", ns, "ip", "addr", "add", nsIP+"/30", "dev", nsIf)
	run("ip", "netns", "exec", ns, "ip", "link", "set", nsIf, "up")
	run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

	dir := t.TempDir()
	certFile, tlsCfg := testCert(t, dir, net.ParseIP(hostIP))

	ts := startServerWith(t, func(c *sfu.Config) {
		c.Listen = net.JoinHostPort(hostIP, "0")
		c.TURN.Enabled = true
		c.TURN.UDPPort = 0
		c.TURN.TLSPort = 0
		c.TURN.TLSOnSignalPort = true
		c.TURN.Domain = hostIP
	}, func(s *sfu.Server) { s.SetTLSConfig(tlsCfg) })
	require.True(t, strings.HasPrefix(ts.url, "wss://"+hostIP+":"), ts.url)
	_, portStr, err := net.SplitHostPort(strings.TrimPrefix(ts.url, "wss://"))
	require.NoError(t, err)

	// Everything but TCP to and from the signalling/TURNS port is dropped.
	rules := fmt.Sprintf(`table inet gxturn {
  chain out { type filter hook output priority 0; policy drop;
    oif "lo" accept
    ip daddr %[1]s tcp dport %[2]s accept
  }
  chain in { type filter hook input priority 0; policy drop;
    iif "lo" accept
    ip saddr %[1]s tcp sport %[2]s accept
  }
}
`, hostIP, portStr)
	rulesFile := filepath.Join(dir, "filter.nft")
	require.NoError(t, os.WriteFile(rulesFile, []byte(rules), 0o600))
	run("ip", "netns", "exec", ns, "nft", "-f", rulesFile)
	return &tcpOnlyNet{ns: ns, hostIP: hostIP, tag: tag, ts: ts, certFile: certFile, dir: dir}
}

func TestTURNTCPOnlyClient(t *testing.T) {
	verifyNoLeaks(t)
	n := newTCPOnlyNet(t)
	ts, ns, hostIP, tag, certFile := n.ts, n.ns, n.hostIP, n.tag, n.certFile
	var err error

	// Probes the restricted client must fail to reach: TCP on another port
	// and UDP to the SFU's media port, both on the host's veth address.
	probeTCP, err := net.Listen("tcp4", net.JoinHostPort(hostIP, "0"))
	require.NoError(t, err)
	defer probeTCP.Close()
	probeUDP, err := net.ListenPacket("udp4", net.JoinHostPort(hostIP, "0"))
	require.NoError(t, err)
	defer probeUDP.Close()

	room := "turn-" + tag
	restricted := startTURNClient(t, []string{"ip", "netns", "exec", ns}, map[string]string{
		"GXCONF_TURN_CHILD_IDENTITY": "tcp-only",
		"GXCONF_TURN_CHILD_PEER":     "normal",
		"GXCONF_TURN_CHILD_TOKEN":    ts.token(t, room, "tcp-only", nil),
		"GXCONF_TURN_CHILD_PROBES":   probeTCP.Addr().String() + "," + probeUDP.LocalAddr().String(),
	}, ts.url, certFile)
	normal := startTURNClient(t, nil, map[string]string{
		"GXCONF_TURN_CHILD_IDENTITY":     "normal",
		"GXCONF_TURN_CHILD_PEER":         "tcp-only",
		"GXCONF_TURN_CHILD_TOKEN":        ts.token(t, room, "normal", nil),
		"GXCONF_TURN_CHILD_DISABLE_TURN": "1",
	}, ts.url, certFile)

	rr := restricted.result(t)
	nr := normal.result(t)
	t.Logf("tcp-only client received %s; normal client received %s", rr, nr)

	// The probes saw nothing from the namespace.
	_ = probeUDP.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, _, err = probeUDP.ReadFrom(make([]byte, 64))
	require.Error(t, err, "udp from the namespace must be dropped")

	allocs := metricByLabel(t, ts, "gxconf_sfu_turn_allocations_total", "transport")
	relayed := metricByLabel(t, ts, "gxconf_sfu_turn_relayed_bytes_total", "direction")
	t.Logf("turn: allocations by transport %v, relayed bytes %v", allocs, relayed)
	require.GreaterOrEqual(t, allocs["tls"], 1.0, "allocated over TLS on the signalling port")
	require.Len(t, allocs, 1, "and over nothing else")
	// At least the media both clients counted went through the relay.
	require.Greater(t, relayed["to_peer"], 20_000.0, "tcp-only client's media relayed to the SFU")
	require.Greater(t, relayed["from_peer"], 20_000.0, "normal client's media relayed to the tcp-only client")

	restricted.stop(t)
	normal.stop(t)
}

// metricByLabel returns a counter's values by one label.
func metricByLabel(t *testing.T, ts *testServer, name, label string) map[string]float64 {
	t.Helper()
	mfs, err := ts.reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// testCert writes a self-signed certificate for ip to dir (for the child
// processes' SSL_CERT_FILE) and returns the server's TLS configuration.
func testCert(t *testing.T, dir string, ip net.IP) (string, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gxconf turn test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{ip}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	certFile := filepath.Join(dir, "cert.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return certFile, &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{"http/1.1"},
	}
}

// turnChild is a client process running TestTURNClientHelper.
type turnChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	done   chan error
	output *strings.Builder
	mu     *sync.Mutex
}

func startTURNClient(t *testing.T, prefix []string, env map[string]string, url, certFile string) *turnChild {
	t.Helper()
	args := append(append([]string{}, prefix...), os.Args[0], "-test.run=^TestTURNClientHelper$", "-test.v", "-test.count=1")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+certFile, "SSL_CERT_DIR=/nonexistent", "GXCONF_TURN_CHILD_URL="+url)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = cmd.Stdout
	c := &turnChild{cmd: cmd, stdin: stdin, lines: make(chan string, 100), done: make(chan error, 1), output: &strings.Builder{}, mu: &sync.Mutex{}}
	require.NoError(t, cmd.Start())
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.output.WriteString(line + "\n")
			c.mu.Unlock()
			if strings.HasPrefix(line, "TURNCHILD ") {
				c.lines <- line
			}
		}
		c.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// result waits for the child's report of received media.
func (c *turnChild) result(t *testing.T) string {
	t.Helper()
	for {
		select {
		case l := <-c.lines:
			if strings.HasPrefix(l, "TURNCHILD OK ") {
				return strings.TrimPrefix(l, "TURNCHILD OK ")
			}
			if strings.HasPrefix(l, "TURNCHILD FAIL ") {
				c.mu.Lock()
				defer c.mu.Unlock()
				t.Fatalf("client failed: %s\n%s", l, c.output.String())
			}
		case err := <-c.done:
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("client exited early (%v):\n%s", err, c.output.String())
		case <-time.After(60 * time.Second):
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("client reported nothing in 60s:\n%s", c.output.String())
		}
	}
}

// stop closes the child's stdin (it leaves the room) and waits for it.
func (c *turnChild) stop(t *testing.T) {
	t.Helper()
	_ = c.stdin.Close()
	select {
	case err := <-c.done:
		c.done <- err // for the cleanup
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("client did not stop")
	}
}

// TestTURNClientHelper is the client side of TestTURNTCPOnlyClient, run as
// a child process; it skips when run directly.
func TestTURNClientHelper(t *testing.T) {
	identity := os.Getenv("GXCONF_TURN_CHILD_IDENTITY")
	if identity == "" {
		t.Skip("run by TestTURNTCPOnlyClient")
	}
	fail := func(format string, args ...any) {
		fmt.Printf("TURNCHILD FAIL "+format+"\n", args...)
		t.FailNow()
	}
	// The filter: nothing but the one TCP port gets out.
	if probes := os.Getenv("GXCONF_TURN_CHILD_PROBES"); probes != "" {
		p := strings.Split(probes, ",")
		if c, err := net.DialTimeout("tcp4", p[0], 2*time.Second); err == nil {
			c.Close()
			fail("tcp to %s got through the filter", p[0])
		}
		if c, err := net.Dial("udp4", p[1]); err == nil {
			_, werr := c.Write([]byte("probe"))
			c.Close()
			if werr == nil {
				// The write may succeed locally and be dropped later; the
				// parent checks nothing arrived.
				fmt.Println("TURNCHILD note: udp write returned no error")
			}
		}
	}

	var mu sync.Mutex
	streams := map[string]*loadtest.StreamStats{}
	var readers loadtest.Readers
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		st := &loadtest.StreamStats{}
		mu.Lock()
		streams[rp.Identity()+"/"+pub.Kind().String()] = st
		mu.Unlock()
		readers.Go(func() { loadtest.ReadTrack(track, st, time.Second) })
	}
	opts := []lksdk.ConnectOption{lksdk.WithAutoSubscribe(true)}
	if os.Getenv("GXCONF_TURN_CHILD_DISABLE_TURN") != "" {
		opts = append(opts, lksdk.WithDisableTURN())
	}
	start := time.Now()
	var firstFrame time.Duration
	room, err := lksdk.ConnectToRoomWithToken(os.Getenv("GXCONF_TURN_CHILD_URL"), os.Getenv("GXCONF_TURN_CHILD_TOKEN"), cb, opts...)
	if err != nil {
		fail("join: %v", err)
	}
	pub, err := loadtest.StartPublisher(room, loadtest.PublishOptions{Audio: true, Video: true})
	if err != nil {
		fail("publish: %v", err)
	}
	peer := os.Getenv("GXCONF_TURN_CHILD_PEER")
	browserPeer := os.Getenv("GXCONF_TURN_CHILD_PEER_BROWSER") != ""
	stream := func(kind string) *loadtest.StreamStats {
		mu.Lock()
		defer mu.Unlock()
		return streams[peer+"/"+kind]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	for {
		v, a := stream("video"), stream("audio")
		if firstFrame == 0 && v != nil && (v.Frames.Load() > 0 || browserPeer && v.Packets.Load() > 0) {
			firstFrame = time.Since(start)
		}
		if browserPeer && v != nil && a != nil && v.Packets.Load() >= 300 && a.Packets.Load() >= 100 {
			// A browser's media is real VP8/Opus, not the load tool's
			// pattern: count packets only.
			fmt.Printf("TURNCHILD OK video_packets=%d audio_packets=%d from %s\n", v.Packets.Load(), a.Packets.Load(), peer)
			break
		}
		if !browserPeer && v != nil && a != nil && v.Frames.Load() >= 60 && a.Frames.Load() >= 100 {
			if v.Corrupt.Load() != 0 || a.Corrupt.Load() != 0 {
				fail("corrupt media from %s", peer)
			}
			fmt.Printf("TURNCHILD OK video_frames=%d audio_frames=%d from %s, first video frame %d ms after connect started\n",
				v.Frames.Load(), a.Frames.Load(), peer, firstFrame.Milliseconds())
			break
		}
		select {
		case <-ctx.Done():
			fail("no media from %s in 45s", peer)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Keep publishing until the parent is done with both sides.
	_, _ = io.Copy(io.Discard, os.Stdin)
	pub.Stop()
	room.Disconnect()
	readers.Wait()
}
