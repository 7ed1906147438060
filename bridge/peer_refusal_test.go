package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/internal/logbuf"
)

// TestPeerSignalRefusalsCounted: peer requests that are not authenticated
// (a wrong key, a peer name nobody configured) and requests replayed or
// too old are refused, as before, and now also counted in
// gxconf_bridge_peer_refused_total (kind "unauthenticated", "replayed";
// an unconfigured name under peer="(unknown)") and logged. They were
// refused silently: a replayed capture or a peer with the wrong secret
// left no trace on our side.
func TestPeerSignalRefusalsCounted(t *testing.T) {
	verifyNoLeaks(t)
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	logs := &logbuf.Buffer{}
	a := startNodeFull(t, "a1", nil, func(n *node) {
		n.br.log = zerolog.New(logs).Level(zerolog.WarnLevel)
		n.br.SetPeering(Peering{Self: "fed-a", Authority: auth,
			Peers: map[string]PeerLink{"fed-b": {RelayAddress: "127.0.0.1:9", SignalKey: peerSignalKey}}})
	})
	post := func(path, peer string, key []byte, v any) int {
		t.Helper()
		body, err := json.Marshal(v)
		require.NoError(t, err)
		label := "offer"
		if path == peerGrantPath {
			label = "grant"
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+a.br.Addr()+path, bytes.NewReader(body))
		req.Header.Set(peerHeader, peer)
		req.Header.Set(macHeader, base64.StdEncoding.EncodeToString(peerMAC(key, label, nil, body)))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	check := func(from string, at time.Time, nonce string) *grantRequest {
		return &grantRequest{Version: 1, From: from, To: "fed-a", TimeMs: at.UnixMilli(), Relay: a.br.Addr(), Nonce: nonce,
			Op: "check", Room: "X", Identity: "rita", TokenID: "tok-rita"}
	}
	wrongKey := []byte("another-signal-key-0123456789abcdef")

	require.Equal(t, http.StatusUnauthorized, post(peerGrantPath, "fed-b", wrongKey, check("fed-b", time.Now(), newNonce())))
	require.Equal(t, http.StatusUnauthorized, post(peerAssociatePath, "fed-b", wrongKey,
		&signal{Version: signalVersion, From: "fed-b", To: "fed-a", Room: "X", Node: "b1", Relay: a.br.Addr(), TimeMs: time.Now().UnixMilli(), Nonce: newNonce()}))
	require.Equal(t, http.StatusUnauthorized, post(peerGrantPath, "fed-zz", peerSignalKey, check("fed-zz", time.Now(), newNonce())))
	require.Equal(t, uint64(2), a.br.PeerRefused("fed-b", refusedUnauthenticated))
	require.Equal(t, uint64(1), a.br.PeerRefused(unknownPeer, refusedUnauthenticated))
	require.Zero(t, a.br.PeerRefused("fed-zz", refusedUnauthenticated), "the sender's name is no label")

	nonce := newNonce()
	require.Equal(t, http.StatusOK, post(peerGrantPath, "fed-b", peerSignalKey, check("fed-b", time.Now(), nonce)))
	require.Zero(t, a.br.PeerRefused("fed-b", refusedReplayed))
	require.Equal(t, http.StatusUnauthorized, post(peerGrantPath, "fed-b", peerSignalKey, check("fed-b", time.Now(), nonce)), "replayed")
	require.Equal(t, http.StatusUnauthorized, post(peerGrantPath, "fed-b", peerSignalKey, check("fed-b", time.Now().Add(-time.Minute), newNonce())), "too old")
	require.Equal(t, http.StatusUnauthorized, post(peerAssociatePath, "fed-b", peerSignalKey,
		&signal{Version: signalVersion, From: "fed-b", To: "fed-a", Room: "X", Node: "b1", Relay: a.br.Addr(), TimeMs: time.Now().Add(time.Minute).UnixMilli(), Nonce: newNonce()}),
		"from the future")
	require.Equal(t, uint64(3), a.br.PeerRefused("fed-b", refusedReplayed))
	require.False(t, a.br.Linked("X", peerKey("fed-b", "b1")))

	out := logs.String()
	require.Equal(t, 3, strings.Count(out, "Refused a peer request that is not authenticated"), out)
	require.Equal(t, 3, strings.Count(out, "Refused a peer request that is too old, from the future or replayed"), out)
}

// TestClusterSignalRefusalsLogged: a cluster offer whose MAC does not
// verify under the cluster secret, and a replayed one, are refused as
// before and now logged (they were refused silently).
func TestClusterSignalRefusalsLogged(t *testing.T) {
	verifyNoLeaks(t)
	logs := &logbuf.Buffer{}
	n := startNodeFull(t, "node-b", nil, func(n *node) { n.br.log = zerolog.New(logs).Level(zerolog.WarnLevel) })
	post := func(secret string, s *signal) int {
		t.Helper()
		body, err := json.Marshal(s)
		require.NoError(t, err)
		req, _ := http.NewRequest(http.MethodPost, "http://"+n.br.Addr()+associatePath, bytes.NewReader(body))
		req.Header.Set(macHeader, base64.StdEncoding.EncodeToString(mac(secret, "offer", nil, body)))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	offer := &signal{Version: signalVersion, From: "node-a", To: "node-b", Room: "r", TimeMs: time.Now().UnixMilli(), Nonce: newNonce()}
	require.Equal(t, http.StatusUnauthorized, post("another secret of at least thirty-two bytes", offer))
	offer.TimeMs = time.Now().Add(-time.Minute).UnixMilli()
	require.Equal(t, http.StatusUnauthorized, post(testSecret, offer))
	out := logs.String()
	require.Contains(t, out, "Refused a relay offer that is not authenticated")
	require.Contains(t, out, "Refused a relay offer that is too old, from the future or replayed")
	require.Contains(t, out, `"peer_node_id":"node-a"`)
}

// TestSignalRefusalsNameTheField: an authenticated offer or grant check
// that cannot be used is refused with 400 naming the member at fault (it
// said only "bad request": a peer or node of another gxconf version,
// say, could not tell why it was refused), and one addressed elsewhere
// with 421 naming "to".
func TestSignalRefusalsNameTheField(t *testing.T) {
	verifyNoLeaks(t)
	a := startFedA(t, newFakeAuthority())
	send := func(path string, body []byte, header http.Header) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+a.br.Addr()+path, bytes.NewReader(body))
		req.Header = header
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(raw)
	}
	cluster := func(mut func(*signal)) (int, string) {
		s := &signal{Version: signalVersion, From: "a0", To: "a1", Room: "r", TimeMs: time.Now().UnixMilli(), Nonce: newNonce()}
		mut(s)
		body, err := json.Marshal(s)
		require.NoError(t, err)
		return send(associatePath, body, http.Header{macHeader: {base64.StdEncoding.EncodeToString(mac(testSecret, "offer", nil, body))}})
	}
	peer := func(path string, v any) (int, string) {
		body, err := json.Marshal(v)
		require.NoError(t, err)
		label := "offer"
		if path == peerGrantPath {
			label = "grant"
		}
		return send(path, body, http.Header{peerHeader: {"fed-b"}, macHeader: {base64.StdEncoding.EncodeToString(peerMAC(peerSignalKey, label, nil, body))}})
	}
	offer := func(mut func(*signal)) (int, string) {
		s := &signal{Version: signalVersion, From: "fed-b", To: "fed-a", Room: "X", Node: "b1", Relay: a.br.Addr(), TimeMs: time.Now().UnixMilli(), Nonce: newNonce()}
		mut(s)
		return peer(peerAssociatePath, s)
	}
	grant := func(mut func(*grantRequest)) (int, string) {
		g := &grantRequest{Version: 1, From: "fed-b", To: "fed-a", TimeMs: time.Now().UnixMilli(), Relay: a.br.Addr(), Nonce: newNonce(),
			Op: "check", Room: "X", Identity: "rita", TokenID: "tok-rita"}
		mut(g)
		return peer(peerGrantPath, g)
	}
	for _, tc := range []struct {
		name   string
		do     func() (int, string)
		status int
		says   string
	}{
		{"cluster version", func() (int, string) { return cluster(func(s *signal) { s.Version = 1 }) }, 400, "v: relay protocol version 1, this node speaks 2"},
		{"cluster from self", func() (int, string) { return cluster(func(s *signal) { s.From = "a1" }) }, 400, "from: this node's own id"},
		{"cluster room", func() (int, string) { return cluster(func(s *signal) { s.Room = "" }) }, 400, "room: missing"},
		{"cluster to", func() (int, string) { return cluster(func(s *signal) { s.To = "a9" }) }, 421, `to: "a9" is not this node`},
		{"peer version", func() (int, string) { return offer(func(s *signal) { s.Version = 1 }) }, 400, "v: relay protocol version 1"},
		{"peer from", func() (int, string) { return offer(func(s *signal) { s.From = "fed-c" }) }, 400, "from: not the deployment named in X-Gxconf-Peer"},
		{"peer room", func() (int, string) { return offer(func(s *signal) { s.Room = peerRoomX }) }, 400, "room: a peer room"},
		{"peer node", func() (int, string) { return offer(func(s *signal) { s.Node = "" }) }, 400, "node: missing"},
		{"peer to", func() (int, string) { return offer(func(s *signal) { s.To = "fed-z" }) }, 421, `to: "fed-z" is not this deployment (fed-a)`},
		{"grant op", func() (int, string) { return grant(func(g *grantRequest) { g.Op = "delete" }) }, 400, `op: "delete" is neither check nor renew`},
		{"grant identity", func() (int, string) { return grant(func(g *grantRequest) { g.Identity = "" }) }, 400, "identity: missing"},
		{"grant body", func() (int, string) { return peer(peerGrantPath, []string{"x"}) }, 400, "body: not a grant request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := tc.do()
			require.Equal(t, tc.status, status, body)
			require.Contains(t, body, tc.says)
		})
	}
	require.False(t, a.br.Linked("X", peerKey("fed-b", "b1")))
}

// TestUnauthenticatedRefusalLogsBounded: anyone on the IX can send
// unauthenticated signalling requests; each is counted, but at most
// unauthLogBurst a minute are logged, so they cannot flood the log.
func TestUnauthenticatedRefusalLogsBounded(t *testing.T) {
	verifyNoLeaks(t)
	logs := &logbuf.Buffer{}
	a := startNodeFull(t, "a1", nil, func(n *node) {
		n.br.log = zerolog.New(logs).Level(zerolog.WarnLevel)
		n.br.SetPeering(Peering{Self: "fed-a", Authority: newFakeAuthority(),
			Peers: map[string]PeerLink{"fed-b": {RelayAddress: "127.0.0.1:9", SignalKey: peerSignalKey}}})
	})
	const n = 2*unauthLogBurst + 5
	for i := range n {
		path := peerGrantPath
		if i%2 == 1 {
			path = associatePath
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+a.br.Addr()+path, strings.NewReader("{}"))
		req.Header.Set(peerHeader, "fed-b")
		req.Header.Set(macHeader, base64.StdEncoding.EncodeToString([]byte("not a mac")))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	require.Equal(t, uint64((n+1)/2), a.br.PeerRefused("fed-b", refusedUnauthenticated))
	out := logs.String()
	lines := strings.Count(out, "Refused a peer request that is not authenticated") + strings.Count(out, "Refused a relay offer that is not authenticated")
	require.Equal(t, unauthLogBurst, lines, out)
}
