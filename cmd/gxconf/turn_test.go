package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/stretchr/testify/require"
)

// TestServeTURNTLS runs serve with the embedded TURN server on its own TLS
// port and on the signalling port: both answer STUN over TLS with the tls
// section's certificate (and refuse TLS 1.1, like every listener), while
// the signalling port still serves HTTP.
func TestServeTURNTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := testCertificate(t, dir)

	focusPort, asPort, sfuPort, turnsPort := freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "tcp")
	raw := fmt.Sprintf(`
homeserver: {domain: bund.test, address: "http://127.0.0.1:1"}
database: {uri: "file:%s?_txlock=immediate"}
appservice: {listen: "127.0.0.1:%d"}
focus: {listen: "127.0.0.1:%d"}
sfu:
  listen: "127.0.0.1:%d"
  rtc: {udp_port: %d, tcp_port: 0, node_ip: 127.0.0.1}
  turn: {enabled: true, udp_port: 0, tls_port: %d, tls_on_signal_port: true, relay_port_range_start: 61000, relay_port_range_end: 64999}
metrics: {enabled: false}
tls: {cert_file: %q, key_file: %q}
`, filepath.Join(dir, "gxconf.db"), asPort, focusPort, sfuPort, freePort(t, "udp"), turnsPort, certFile, keyFile)
	serveConfig(t, raw, true)

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	require.Eventually(t, func() bool {
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/rtc/validate", sfuPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized
	}, 20*time.Second, 50*time.Millisecond, "signalling over TLS next to TURN")

	binding := func(port int) error {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{RootCAs: pool})
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		res := &stun.Message{Raw: buf[:n]}
		if err := res.Decode(); err != nil {
			return err
		}
		var xor stun.XORMappedAddress
		if err := xor.GetFrom(res); err != nil {
			return err
		}
		if !xor.IP.Equal(net.IPv4(127, 0, 0, 1)) {
			return fmt.Errorf("mapped address %s", xor.IP)
		}
		return nil
	}
	require.NoError(t, binding(sfuPort), "STUN over TLS on the signalling port")
	require.NoError(t, binding(turnsPort), "STUN over TLS on turn.tls_port")

	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", turnsPort), &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10})
	if err == nil {
		conn.Close()
	}
	require.Error(t, err, "turn.tls_port accepted TLS 1.1")
}
