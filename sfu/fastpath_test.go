package sfu

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/srtp/v3"
	"github.com/stretchr/testify/require"
)

// TestKeyCaptureMatchesDTLSExporter: the keys the direct send path derives
// from pion's public hooks (Server Hello hook, key log) equal those of the
// DTLS connection's own exporter, for each cipher suite pion offers to
// WebRTC peers (SHA-256 and SHA-384 PRFs), with and without the extended
// master secret, and for each SRTP profile.
func TestKeyCaptureMatchesDTLSExporter(t *testing.T) {
	cases := []struct {
		suite   dtls.CipherSuiteID
		ems     dtls.ExtendedMasterSecretType
		profile dtls.SRTPProtectionProfile
	}{
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.RequireExtendedMasterSecret, dtls.SRTP_AEAD_AES_128_GCM},
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, dtls.RequireExtendedMasterSecret, dtls.SRTP_AEAD_AES_256_GCM},
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.DisableExtendedMasterSecret, dtls.SRTP_AES128_CM_HMAC_SHA1_80},
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, dtls.RequestExtendedMasterSecret, dtls.SRTP_AEAD_AES_128_GCM},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%#04x/ems%d", dtls.CipherSuiteName(c.suite), uint16(c.profile), c.ems), func(t *testing.T) {
			k := &keyCapture{}
			server, client := dtlsPair(t, c.suite, c.ems, c.profile, k)
			for _, conn := range []*dtls.Conn{server, client} {
				state, ok := conn.ConnectionState()
				require.True(t, ok)
				want, err := state.ExportKeyingMaterial("EXTRACTOR-dtls_srtp", nil, 60)
				require.NoError(t, err)
				got, err := k.ExportKeyingMaterial("EXTRACTOR-dtls_srtp", nil, 60)
				require.NoError(t, err)
				require.Equal(t, want, got)
			}
			state, _ := server.ConnectionState()
			prof := map[dtls.SRTPProtectionProfile]srtp.ProtectionProfile{
				dtls.SRTP_AEAD_AES_128_GCM:       srtp.ProtectionProfileAeadAes128Gcm,
				dtls.SRTP_AEAD_AES_256_GCM:       srtp.ProtectionProfileAeadAes256Gcm,
				dtls.SRTP_AES128_CM_HMAC_SHA1_80: srtp.ProtectionProfileAes128CmHmacSha1_80,
			}[c.profile]
			cfg := srtp.Config{Profile: prof}
			require.NoError(t, cfg.ExtractSessionKeysFromDTLS(&state, false))
			keys, remote, err := k.keys()
			require.NoError(t, err)
			require.Equal(t, prof, keys.profile)
			require.Equal(t, cfg.Keys.LocalMasterKey, keys.key)
			require.Equal(t, cfg.Keys.LocalMasterSalt, keys.salt)
			require.Equal(t, prof, remote.profile)
			require.Equal(t, cfg.Keys.RemoteMasterKey, remote.key)
			require.Equal(t, cfg.Keys.RemoteMasterSalt, remote.salt)
			require.Nil(t, k.master, "the master secret is forgotten")
			_, err = k.ExportKeyingMaterial("EXTRACTOR-dtls_srtp", nil, 60)
			require.ErrorIs(t, err, errNoFastPath)
		})
	}
}

// TestKeyCaptureIncomplete: without the server's hello (the SFU was the
// DTLS client) or the key log there are no keys, and a malformed key log
// line is ignored.
func TestKeyCaptureIncomplete(t *testing.T) {
	k := &keyCapture{}
	_, _, err := k.keys()
	require.ErrorIs(t, err, errNoFastPath)
	for _, line := range []string{"", "CLIENT_RANDOM zz 00\n", "CLIENT_RANDOM 00 00\n", "SERVER_HANDSHAKE a b\n", "CLIENT_RANDOM a\n"} {
		n, err := k.Write([]byte(line))
		require.NoError(t, err)
		require.Equal(t, len(line), n)
	}
	require.Nil(t, k.master)
	k.profile = dtls.SRTP_AEAD_AES_128_GCM
	_, _, err = k.keys()
	require.ErrorIs(t, err, errNoFastPath)
	_, err = k.ExportKeyingMaterial("x", []byte{1}, 16)
	require.ErrorIs(t, err, errNoFastPath)
}

// dtlsPair handshakes a DTLS server (reporting to k) and client over
// loopback UDP.
func dtlsPair(t *testing.T, suite dtls.CipherSuiteID, ems dtls.ExtendedMasterSecretType, profile dtls.SRTPProtectionProfile, k *keyCapture) (server, client *dtls.Conn) {
	t.Helper()
	a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	b, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	cert, err := selfsign.GenerateSelfSigned()
	require.NoError(t, err)
	ccert, err := selfsign.GenerateSelfSigned()
	require.NoError(t, err)
	type res struct {
		c   *dtls.Conn
		err error
	}
	sc := make(chan res, 1)
	go func() {
		c, err := dtls.ServerWithOptions(a, b.LocalAddr(),
			dtls.WithCertificates(cert), dtls.WithCipherSuites(suite), dtls.WithExtendedMasterSecret(ems),
			dtls.WithSRTPProtectionProfiles(profile), dtls.WithInsecureSkipVerify(true),
			dtls.WithServerHelloMessageHook(k.serverHello), dtls.WithKeyLogWriter(k))
		sc <- res{c, err}
	}()
	client, err = dtls.ClientWithOptions(b, a.LocalAddr(),
		dtls.WithCertificates(ccert), dtls.WithCipherSuites(suite), dtls.WithExtendedMasterSecret(ems),
		dtls.WithSRTPProtectionProfiles(profile), dtls.WithInsecureSkipVerify(true))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hs := make(chan error, 1)
	go func() { hs <- client.HandshakeContext(ctx) }()
	r := <-sc
	require.NoError(t, r.err)
	require.NoError(t, r.c.HandshakeContext(ctx))
	require.NoError(t, <-hs)
	t.Cleanup(func() { _ = r.c.Close(); _ = client.Close() })
	return r.c, client
}

// BenchmarkSubscriberConnection compares making a sending connection
// through the shared API (no direct path keys) with one through its own
// API with the key capture hooks (what every join pays since the direct
// path stopped reading pion's internals).
func BenchmarkSubscriberConnection(b *testing.B) {
	cfg := DefaultConfig()
	cfg.RTC.UDPPort, cfg.RTC.TCPPort = 0, 0
	se, socks, err := newSettingEngine(&cfg, pionLoggerFactory{})
	if err != nil {
		b.Fatal(err)
	}
	defer socks.close()
	r, err := newSubscriberAPI(se)
	if err != nil {
		b.Fatal(err)
	}
	for _, capture := range []bool{false, true} {
		b.Run(map[bool]string{false: "shared-api", true: "own-api-with-hooks"}[capture], func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				pc, _, err := r.newPeerConnection(capture, nil)
				if err != nil {
					b.Fatal(err)
				}
				_ = pc.Close()
			}
		})
	}
}
