package sfu

import (
	"fmt"
	"testing"

	"github.com/pion/dtls/v3"
	"github.com/pion/srtp/v3"
	"github.com/stretchr/testify/require"
)

// TestDTLSKeysBothSides: the server's capture and a client told the
// server's Hello derive the keys of both directions as the DTLS
// connections' own exporters do, each side's local key being the other's
// remote key; the keys never show in their formatting.
func TestDTLSKeysBothSides(t *testing.T) {
	srv := &DTLSKeys{}
	server, client := dtlsPair(t, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.RequireExtendedMasterSecret, dtls.SRTP_AEAD_AES_128_GCM, &srv.k)
	random, suite, profile, ok := srv.ServerHello()
	require.True(t, ok)

	// The client's key log says what the server's did (same client random
	// and master secret).
	cli := &DTLSKeys{}
	_, _, _, ok = cli.ServerHello()
	require.False(t, ok, "a client has no Server Hello of its own")
	srv.k.mu.Lock()
	cli.k.clientRandom, cli.k.master = srv.k.clientRandom, append([]byte(nil), srv.k.master...)
	srv.k.mu.Unlock()
	require.Error(t, cli.SetServerHello(random[:5], suite, profile))
	require.NoError(t, cli.SetServerHello(random, suite, profile))

	sk, err := srv.SRTPKeys(false)
	require.NoError(t, err)
	ck, err := cli.SRTPKeys(true)
	require.NoError(t, err)
	for _, c := range []struct {
		conn   *dtls.Conn
		keys   SRTPKeys
		client bool
	}{{server, sk, false}, {client, ck, true}} {
		state, ok := c.conn.ConnectionState()
		require.True(t, ok)
		cfg := srtp.Config{Profile: srtp.ProtectionProfileAeadAes128Gcm}
		require.NoError(t, cfg.ExtractSessionKeysFromDTLS(&state, c.client))
		require.Equal(t, cfg.Keys.LocalMasterKey, c.keys.LocalKey)
		require.Equal(t, cfg.Keys.LocalMasterSalt, c.keys.LocalSalt)
		require.Equal(t, cfg.Keys.RemoteMasterKey, c.keys.RemoteKey)
		require.Equal(t, cfg.Keys.RemoteMasterSalt, c.keys.RemoteSalt)
	}
	require.Equal(t, sk.LocalKey, ck.RemoteKey)
	require.Equal(t, ck.LocalKey, sk.RemoteKey)
	require.Nil(t, srv.k.master, "the master secret is forgotten")

	for _, s := range []string{fmt.Sprint(sk), fmt.Sprintf("%v %+v %#v %s", sk, sk, sk, sk)} {
		require.NotContains(t, s, fmt.Sprint(sk.LocalKey))
		require.NotContains(t, s, fmt.Sprintf("%x", sk.LocalKey))
	}
}
