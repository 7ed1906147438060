package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSignalAuth: offers must carry a valid MAC under the cluster secret,
// be addressed to this node, be fresh and not replayed; none of these
// refusals creates an association.
func TestSignalAuth(t *testing.T) {
	verifyNoLeaks(t)
	n := startNode(t, "node-b")
	post := func(body []byte, secret string) int {
		req := httptest.NewRequest(http.MethodPost, associatePath, bytes.NewReader(body))
		req.Header.Set(macHeader, base64.StdEncoding.EncodeToString(mac(secret, "offer", nil, body)))
		w := httptest.NewRecorder()
		n.br.handleAssociate(w, req)
		return w.Code
	}
	offer := func(mut func(*signal)) []byte {
		s := &signal{Version: signalVersion, From: "node-a", To: "node-b", Room: "r", TimeMs: time.Now().UnixMilli(), Nonce: newNonce()}
		if mut != nil {
			mut(s)
		}
		b, err := json.Marshal(s)
		require.NoError(t, err)
		return b
	}
	require.Equal(t, http.StatusUnauthorized, post(offer(nil), "another secret of at least thirty-two bytes"))
	require.Equal(t, http.StatusMisdirectedRequest, post(offer(func(s *signal) { s.To = "node-c" }), testSecret))
	require.Equal(t, http.StatusUnauthorized, post(offer(func(s *signal) { s.TimeMs -= time.Minute.Milliseconds() }), testSecret))
	require.Equal(t, http.StatusBadRequest, post(offer(func(s *signal) { s.From = "node-b" }), testSecret))
	// A node of the previous relay protocol (pion's SRTP) is refused
	// plainly rather than linked without media.
	require.Equal(t, http.StatusBadRequest, post(offer(func(s *signal) { s.Version = 1 }), testSecret))
	// A replayed offer is refused even with a valid MAC.
	replay := offer(func(s *signal) { s.Nonce = "fixed" })
	n.br.mu.Lock()
	n.br.nonces["fixed"] = time.Now().Add(time.Minute)
	n.br.mu.Unlock()
	require.Equal(t, http.StatusUnauthorized, post(replay, testSecret))
	n.br.mu.Lock()
	require.Empty(t, n.br.assocs)
	n.br.mu.Unlock()
}
