package sfu_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the TURN REST API's HMAC
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// TestTURNJoinResponse: the JoinResponse carries the embedded TURN server's
// URLs with a credential for the joining identity (checked against the
// TURN REST API formula computed here), the credential allocates over UDP,
// plain TCP and TLS, and stops working once the participant has left; an
// allocation the participant kept ends with its leave.
func TestTURNJoinResponse(t *testing.T) {
	verifyNoLeaks(t)
	const secret = "turn-secret-0123456789abcdef-0123456789"
	_, tlsCfg := testCert(t, t.TempDir(), net.IPv4(127, 0, 0, 1))
	pool := x509.NewCertPool()
	leaf, err := x509.ParseCertificate(tlsCfg.Certificates[0].Certificate[0])
	require.NoError(t, err)
	pool.AddCert(leaf)
	udpPort, tcpPort, tlsPort := freeUDPPort(t), freeTCPPort(t), freeTCPPort(t)
	ts := startServerWith(t, func(c *sfu.Config) {
		c.TURN.Enabled = true
		c.TURN.UDPPort, c.TURN.TCPPort, c.TURN.TLSPort = udpPort, tcpPort, tlsPort
		c.TURN.Secret = secret
		c.TURN.CredentialTTL = time.Hour
	}, func(s *sfu.Server) { s.SetTLSConfig(tlsCfg) })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+ts.token(t, "tj", "@alice:example.org:DEV", nil))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	ws, _, err := websocket.Dial(ctx, ts.url+"/rtc?protocol=16&sdk=go", &websocket.DialOptions{HTTPHeader: h, HTTPClient: hc})
	require.NoError(t, err)
	defer ws.CloseNow()
	j := readSignal(t, ws).GetJoin()
	require.NotNil(t, j)
	var ice *livekit.ICEServer
	for _, s := range j.GetIceServers() {
		if s.GetUsername() != "" {
			ice = s
		}
	}
	require.NotNil(t, ice)
	p := strconv.Itoa
	require.Equal(t, []string{
		"turn:127.0.0.1:" + p(udpPort) + "?transport=udp",
		"turn:127.0.0.1:" + p(tcpPort) + "?transport=tcp",
		"turns:127.0.0.1:" + p(tlsPort) + "?transport=tcp",
	}, ice.GetUrls())
	exp, id, ok := strings.Cut(ice.GetUsername(), ":")
	require.True(t, ok)
	require.Equal(t, "@alice:example.org:DEV", id)
	expiry, err := strconv.ParseInt(exp, 10, 64)
	require.NoError(t, err)
	require.InDelta(t, time.Now().Add(time.Hour).Unix(), expiry, 5)
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(ice.GetUsername()))
	require.Equal(t, base64.StdEncoding.EncodeToString(mac.Sum(nil)), ice.GetCredential())

	allocate := func(conn net.PacketConn, server string) error {
		c, err := turn.NewClient(&turn.ClientConfig{
			STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
			Username: ice.GetUsername(), Password: ice.GetCredential(), Realm: "gxconf", RTO: 200 * time.Millisecond,
		})
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.Listen())
		relay, err := c.Allocate()
		if err == nil {
			_ = relay.Close()
		}
		return err
	}
	viaUDP := func() error {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		require.NoError(t, err)
		defer conn.Close()
		return allocate(conn, "127.0.0.1:"+p(udpPort))
	}
	require.NoError(t, viaUDP(), "turn over udp")
	tcp, err := net.Dial("tcp4", "127.0.0.1:"+p(tcpPort))
	require.NoError(t, err)
	require.NoError(t, allocate(turn.NewSTUNConn(tcp), "127.0.0.1:"+p(tcpPort)), "turn over tcp")
	_ = tcp.Close()
	tc, err := tls.Dial("tcp4", "127.0.0.1:"+p(tlsPort), &tls.Config{RootCAs: pool})
	require.NoError(t, err)
	require.NoError(t, allocate(turn.NewSTUNConn(tc), "127.0.0.1:"+p(tlsPort)), "turn over tls")
	_ = tc.Close()

	// One allocation alice keeps (and would keep refreshing) through her
	// leave; the three above are released (a Refresh with lifetime 0,
	// handled after the client's Close returned).
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_turn_allocations") == 0 }, 10*time.Second, 20*time.Millisecond)
	heldConn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer heldConn.Close()
	held, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: "127.0.0.1:" + p(udpPort), TURNServerAddr: "127.0.0.1:" + p(udpPort), Conn: heldConn,
		Username: ice.GetUsername(), Password: ice.GetCredential(), Realm: "gxconf", RTO: 200 * time.Millisecond,
	})
	require.NoError(t, err)
	defer held.Close()
	require.NoError(t, held.Listen())
	heldRelay, err := held.Allocate()
	require.NoError(t, err)
	defer heldRelay.Close()
	require.Equal(t, 1.0, ts.metric(t, "gxconf_sfu_turn_allocations"))

	// Alice leaves (as clients do: a leave request, then the close; a bare
	// close would keep the session for a resume): her credential, though
	// unexpired, no longer allocates, and the allocation she kept ends.
	leave, err := proto.Marshal(&livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{Reason: livekit.DisconnectReason_CLIENT_INITIATED}}})
	require.NoError(t, err)
	require.NoError(t, ws.Write(ctx, websocket.MessageBinary, leave))
	require.NoError(t, ws.Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_participants") == 0 }, 10*time.Second, 20*time.Millisecond)
	require.Error(t, viaUDP())
	require.Eventually(t, func() bool { return ts.metric(t, "gxconf_sfu_turn_allocations") == 0 }, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, 4.0, ts.metric(t, "gxconf_sfu_turn_allocations_total"))
	require.GreaterOrEqual(t, ts.metric(t, "gxconf_sfu_turn_auth_failures_total"), 1.0)

	// Shutdown also ends TURN connections that are still open.
	idle, err := net.Dial("tcp4", "127.0.0.1:"+p(tcpPort))
	require.NoError(t, err)
	defer idle.Close()
	_, err = idle.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	require.NoError(t, err)
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	_, err = idle.Read(buf)
	require.NoError(t, err, "binding answered")
	ts.stop()
	_, err = idle.Read(buf)
	require.ErrorIs(t, err, io.EOF)
}

// TestTURNExternalTLS: behind a TLS-terminating balancer (turn.external_tls)
// tls_port serves TURN without TLS, the URL says turns: with the balancer's
// port, and no certificate is needed.
func TestTURNExternalTLS(t *testing.T) {
	verifyNoLeaks(t)
	tlsPort := freeTCPPort(t)
	ts := startServer(t, func(c *sfu.Config) {
		c.TURN.Enabled = true
		c.TURN.UDPPort, c.TURN.TLSPort = 0, tlsPort
		c.TURN.ExternalTLS, c.TURN.ExternalTLSPort = true, 443
		c.TURN.Domain = "turn.example.org"
	})
	ws, first := rawJoin(t, ts, "ext", "alice", "")
	defer ws.CloseNow()
	servers := first.GetJoin().GetIceServers()
	require.Len(t, servers, 1)
	require.Equal(t, []string{"turns:turn.example.org:443?transport=tcp"}, servers[0].GetUrls())

	conn, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(tlsPort))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	require.NoError(t, err)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	require.NoError(t, err)
	res := &stun.Message{Raw: buf[:n]}
	require.NoError(t, res.Decode())
	require.Equal(t, stun.BindingSuccess, res.Type)
}
