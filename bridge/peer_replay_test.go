package bridge

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// recorder keeps the requests a bridge's client sends (body and headers).
type recorder struct {
	inner http.RoundTripper
	mu    sync.Mutex
	reqs  []recorded
}

type recorded struct {
	path   string
	header http.Header
	body   []byte
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, recorded{path: req.URL.Path, header: req.Header.Clone(), body: body})
	r.mu.Unlock()
	req.Body = io.NopCloser(bytes.NewReader(body))
	return r.inner.RoundTrip(req)
}

func (r *recorder) first(t *testing.T, path string) recorded {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rq := range r.reqs {
		if rq.path == path {
			return rq
		}
	}
	t.Fatalf("no request to %s recorded", path)
	return recorded{}
}

// replay posts a recorded request, as captured, to addr.
func replay(t *testing.T, addr string, rq recorded) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+rq.path, bytes.NewReader(rq.body))
	require.NoError(t, err)
	req.Header = rq.header.Clone()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// TestPeerRequestsBoundToTheNode: fed-a runs two nodes with the same peer
// key; fed-b's relay address names a1. An offer and a grant check fed-b
// sent to a1, captured on the IX, are refused by a2 within their validity
// window (each node keeps its own replay window): they are signed for
// a1's relay address. Before, a2 accepted the offer (an association fed-b
// never asked for, taking one of fed-b's slots in the room and replacing
// an association of the same fed-b node there) and answered the check.
func TestPeerRequestsBoundToTheNode(t *testing.T) {
	verifyNoLeaks(t)
	auth := newFakeAuthority()
	auth.grant("tok-rita", "fed-b", "X", "rita")
	fedA := func(id string) *node {
		return startNodeFull(t, id, nil, func(n *node) {
			n.br.SetPeering(Peering{Self: "fed-a", Authority: auth,
				Peers: map[string]PeerLink{"fed-b": {RelayAddress: "127.0.0.1:9", SignalKey: peerSignalKey}}})
		})
	}
	a1, a2 := fedA("a1"), fedA("a2")
	rec := &recorder{inner: http.DefaultTransport}
	b := startNodeFull(t, "b1", nil, func(n *node) {
		n.br.client.Transport = rec
		n.br.SetPeering(Peering{Self: "fed-b", Peers: map[string]PeerLink{"fed-a": {RelayAddress: a1.br.Addr(), SignalKey: peerSignalKey}}})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	require.NoError(t, b.br.linkPeer(ctx, peerRoomX))
	_, err := b.br.PeerGrants(nil).CheckGrant(ctx, "tok-rita", peerRoomX, "rita", time.Now())
	require.NoError(t, err)

	offer := rec.first(t, peerAssociatePath)
	var sig signal
	require.NoError(t, json.Unmarshal(offer.body, &sig))
	require.Equal(t, a1.br.Addr(), sig.Relay, "the offer names the relay address it is sent to")
	code, body := replay(t, a2.br.Addr(), offer)
	require.Equal(t, http.StatusMisdirectedRequest, code, body)
	require.False(t, a2.br.Linked("X", peerKey("fed-b", "b1")), "a2 holds no association fed-b did not ask it for")
	code, body = replay(t, a1.br.Addr(), offer)
	require.Equal(t, http.StatusUnauthorized, code, "a1 has seen the offer: %s", body)

	check := rec.first(t, peerGrantPath)
	code, body = replay(t, a2.br.Addr(), check)
	require.Equal(t, http.StatusMisdirectedRequest, code, body)
	code, body = replay(t, a1.br.Addr(), check)
	require.Equal(t, http.StatusUnauthorized, code, "a1 has seen the check: %s", body)

	// A request signed for another address is refused as such, also when
	// fresh: a relay_address naming a1 by another address does not link.
	other := startNodeFull(t, "b2", nil, func(n *node) {
		n.br.SetPeering(Peering{Self: "fed-b", Peers: map[string]PeerLink{"fed-a": {RelayAddress: "localhost:" + a1.br.Addr()[strings.LastIndex(a1.br.Addr(), ":")+1:], SignalKey: peerSignalKey}}})
	})
	require.ErrorContains(t, other.br.linkPeer(ctx, peerRoomX), "421")
}

// TestPeerGrantRefusalIsGeneric: fed-a's authority's error (here naming
// its database) stays in fed-a's log; fed-b is told only that the grant
// was refused. Before, the error's text was fed-b's to read.
func TestPeerGrantRefusalIsGeneric(t *testing.T) {
	verifyNoLeaks(t)
	internal := errors.New("failed to read grant: dial tcp 10.20.30.40:5432: connect: connection refused (postgres://gxconf@db.internal/gxconf)")
	a := startNodeFull(t, "a1", nil, func(n *node) {
		n.br.SetPeering(Peering{Self: "fed-a", Authority: failingAuthority{internal},
			Peers: map[string]PeerLink{"fed-b": {RelayAddress: "127.0.0.1:9", SignalKey: peerSignalKey}}})
	})
	body, err := json.Marshal(&grantRequest{Version: 1, From: "fed-b", To: "fed-a", TimeMs: time.Now().UnixMilli(),
		Relay: a.br.Addr(), Nonce: newNonce(), Op: "check", Room: "X", Identity: "rita", TokenID: "tok-rita"})
	require.NoError(t, err)
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.br.Addr()+peerGrantPath, bytes.NewReader(body))
	req.Header.Set(peerHeader, "fed-b")
	req.Header.Set(macHeader, base64.StdEncoding.EncodeToString(peerMAC(peerSignalKey, "grant", nil, body)))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	var ans grantAnswer
	require.NoError(t, json.Unmarshal(raw, &ans))
	require.False(t, ans.OK)
	require.Equal(t, grantRefused, ans.Error)
	for _, leak := range []string{"10.20.30.40", "postgres", "db.internal", "dial tcp"} {
		require.NotContains(t, string(raw), leak)
	}

	// fed-b's side, end to end: the join is refused, the reason generic.
	b := startNodeFull(t, "b1", nil, func(n *node) {
		n.br.SetPeering(Peering{Self: "fed-b", Peers: map[string]PeerLink{"fed-a": {RelayAddress: a.br.Addr(), SignalKey: peerSignalKey}}})
	})
	_, err = b.br.PeerGrants(nil).CheckGrant(context.Background(), "tok-rita", peerRoomX, "rita", time.Now())
	require.ErrorIs(t, err, errPeerRefused)
	require.NotContains(t, err.Error(), "10.20.30.40")
}

// failingAuthority fails every question with err.
type failingAuthority struct{ err error }

func (f failingAuthority) CheckPeerGrant(context.Context, string, string, string, string) (time.Time, error) {
	return time.Time{}, f.err
}

func (f failingAuthority) RenewPeerGrant(context.Context, string, string, string, string, time.Time) (time.Time, error) {
	return time.Time{}, f.err
}

func (f failingAuthority) PeerRoomGranted(context.Context, string, string) (bool, error) {
	return false, f.err
}

func (f failingAuthority) PeerParticipantGranted(context.Context, string, string, string) (bool, error) {
	return false, f.err
}

// TestRelayRefusalQuotedByPrefix: a relay's refusal (a peer's, or
// whatever answers on the IX) is quoted in our error and log line by a
// short printable prefix; its whole body (up to 64 KB) was.
func TestRelayRefusalQuotedByPrefix(t *testing.T) {
	verifyNoLeaks(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "nope\x1b[31m"+strings.Repeat("z", 60<<10), http.StatusForbidden)
	}))
	defer srv.Close()
	b := startNodeFull(t, "b1", nil, func(n *node) {
		n.br.SetPeering(Peering{Self: "fed-b", Peers: map[string]PeerLink{"fed-a": {RelayAddress: srv.Listener.Addr().String(), SignalKey: peerSignalKey}}})
	})
	err := b.br.linkPeer(context.Background(), peerRoomX)
	require.ErrorContains(t, err, "403")
	require.ErrorContains(t, err, "zzzz")
	require.Less(t, len(err.Error()), 512, "%.200s", err)
	require.NotContains(t, err.Error(), "\x1b")
	_, err = b.br.PeerGrants(nil).CheckGrant(context.Background(), "tok-rita", peerRoomX, "rita", time.Now())
	require.Error(t, err)
	require.Less(t, len(err.Error()), 512, "%.200s", err)
}

// TestOwnRelayAddresses: a request is this node's when signed for its
// listen address as configured or bound, for one of Peering.Addresses, or,
// when it listens on every address, for one of the host's addresses with
// its port; not for another port, a foreign address or none.
func TestOwnRelayAddresses(t *testing.T) {
	all, err := net.Listen("tcp", ":0")
	require.NoError(t, err)
	defer all.Close()
	port := all.Addr().(*net.TCPAddr).Port
	b := &Bridge{cfg: Config{Listen: ":0"}, ln: all, peering: Peering{Addresses: []string{"relay.ix.example:7890"}}}
	for addr, want := range map[string]bool{
		"127.0.0.1:" + strconv.Itoa(port):   true,
		"127.0.0.1:" + strconv.Itoa(port+1): false,
		"192.0.2.1:" + strconv.Itoa(port):   false,
		"relay.ix.example:7890":             true,
		"relay.ix.example:7891":             false,
		"":                                  false,
	} {
		require.Equal(t, want, b.ownRelay(addr), addr)
	}

	one, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer one.Close()
	b = &Bridge{cfg: Config{Listen: "127.0.0.1:0"}, ln: one}
	require.True(t, b.ownRelay(one.Addr().String()))
	require.False(t, b.ownRelay("[::1]:"+strconv.Itoa(one.Addr().(*net.TCPAddr).Port)), "a listener on one address is that address only")
}
