package bridge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gxfs-conf/gxconf/internal/clip"
	"github.com/pion/webrtc/v4"
)

// signalReadTimeout bounds reading a signalling request, body included
// (a body of at most maxSignalBody from a peer on the IX); idle
// keep-alive connections are closed after signalIdleTimeout. Variables
// only so that tests can shorten them.
var (
	signalReadTimeout = 10 * time.Second
	signalIdleTimeout = 60 * time.Second
)

// associatePath is the signalling endpoint on the relay address.
const associatePath = "/gxconf/relay/v1/associate"

const (
	macHeader     = "X-Gxconf-Relay-Mac"
	maxClockSkew  = 30 * time.Second
	maxSignalBody = 64 << 10
	// maxSignalHeader bounds a signalling request's header: ours are a
	// MAC and a peer name.
	maxSignalHeader = 16 << 10
	// maxRefusalText bounds how much of a relay's refusal (its answer's
	// body, up to maxSignalBody) our errors and logs quote.
	maxRefusalText = 256
)

// signalVersion is the relay protocol's version. 2: the relay's media is
// the bridge's own SRTP, keyed from DTLS (the DTLS server sends its Server
// Hello on the control channel). Version 1 nodes (pion's SRTP) cannot relay
// to version 2 nodes: offers of another version are refused with 400, so a
// mixed cluster says so instead of linking without media.
const signalVersion = 2

// signal is one side's half of an association: who, which room, and its
// ICE, DTLS and SCTP parameters.
type signal struct {
	Version int    `json:"v"`
	From    string `json:"from"`
	To      string `json:"to"`
	Room    string `json:"room"`
	TimeMs  int64  `json:"time_ms"`
	// Node is the sending node's id in a peer association, whose From
	// and To are deployment names.
	Node string `json:"node,omitempty"`
	// Relay is the relay address a peer association's offer is sent to
	// (PeerLink.RelayAddress): a deployment's nodes share the peer's key
	// but not their replay windows, so an offer is bound to the node it
	// was meant for (ownRelay) and a captured one cannot be replayed to
	// another node.
	Relay      string                  `json:"relay,omitempty"`
	Nonce      string                  `json:"nonce"`
	ICE        webrtc.ICEParameters    `json:"ice"`
	Candidates []webrtc.ICECandidate   `json:"candidates"`
	DTLS       webrtc.DTLSParameters   `json:"dtls"`
	SCTP       webrtc.SCTPCapabilities `json:"sctp"`
}

var (
	errUnauthenticated = errors.New("relay signal not authenticated")
	errStale           = errors.New("relay signal too old or replayed")
)

func newNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// mac is HMAC-SHA256 under the cluster secret over a context label, an
// optional bound MAC (the offer's, for an answer) and the body.
func mac(secret, label string, bound []byte, body []byte) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte("gxconf relay v1 " + label + "\n"))
	h.Write(bound)
	h.Write([]byte{'\n'})
	h.Write(body)
	return h.Sum(nil)
}

// dialSignal sends our offer to the peer's relay address and returns its
// verified answer.
func (b *Bridge) dialSignal(ctx context.Context, addr string, offer *signal) (*signal, error) {
	body, err := json.Marshal(offer)
	if err != nil {
		return nil, err
	}
	sum := mac(b.cfg.Secret, "offer", nil, body)
	rb, err := b.postSigned(ctx, addr, associatePath, body, sum, "", func(got, rb []byte) bool {
		return hmac.Equal(got, mac(b.cfg.Secret, "answer", sum, rb))
	})
	if err != nil {
		return nil, err
	}
	return decodeAnswer(rb, offer)
}

// postSigned POSTs body with its MAC sum (and, for a peer deployment, our
// deployment's name) to a relay address and returns the answer's body
// once verify accepts the answer's MAC.
func (b *Bridge) postSigned(ctx context.Context, addr, path string, body, sum []byte, self string, verify func(got, body []byte) bool) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if self != "" {
		req.Header.Set(peerHeader, self)
	}
	req.Header.Set(macHeader, base64.StdEncoding.EncodeToString(sum))
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("failed to reach relay %s: %w", addr, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, maxSignalBody))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		// The refusal's text is the other side's (or whoever answers on
		// the IX): our logs keep a short printable prefix of it.
		return nil, fmt.Errorf("relay %s refused: %s: %s", addr, resp.Status, clip.Text(strings.TrimSpace(string(rb)), maxRefusalText))
	}
	got, err := base64.StdEncoding.DecodeString(resp.Header.Get(macHeader))
	if err != nil || !verify(got, rb) {
		return nil, errUnauthenticated
	}
	return rb, nil
}

// decodeAnswer decodes a verified answer and checks it answers offer.
func decodeAnswer(rb []byte, offer *signal) (*signal, error) {
	ans := &signal{}
	if err := json.Unmarshal(rb, ans); err != nil {
		return nil, fmt.Errorf("failed to decode relay answer: %w", err)
	}
	if ans.Version != signalVersion {
		return nil, fmt.Errorf("relay answer of protocol version %d, want %d (a node of another gxconf version)", ans.Version, signalVersion)
	}
	if ans.From != offer.To || ans.To != offer.From || ans.Room != offer.Room || ans.Nonce != offer.Nonce {
		return nil, errUnauthenticated
	}
	return ans, nil
}

// handleAssociate answers an authenticated offer and starts the
// association in the background.
func (b *Bridge) handleAssociate(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, ok := readSignalBody(w, r)
	if !ok {
		return
	}
	sum, err := base64.StdEncoding.DecodeString(r.Header.Get(macHeader))
	if err != nil || !hmac.Equal(sum, mac(b.cfg.Secret, "offer", nil, body)) {
		b.unauthLog().Warn().Str("remote", r.RemoteAddr).
			Msg("Refused a relay offer that is not authenticated (its MAC does not verify under the cluster secret)")
		http.Error(w, errUnauthenticated.Error(), http.StatusUnauthorized)
		return
	}
	offer := &signal{}
	problem := ""
	if err := json.Unmarshal(body, offer); err != nil {
		problem = "body: not a relay offer: " + clip.Text(err.Error(), maxRefusalText)
	} else {
		problem = b.offerProblem(offer)
	}
	if problem != "" {
		b.log.Warn().Str("remote", r.RemoteAddr).Str("problem", problem).Msg("Refused a malformed relay offer")
		http.Error(w, "bad request: "+problem, http.StatusBadRequest)
		return
	}
	if offer.To != b.cfg.NodeID {
		http.Error(w, fmt.Sprintf("to: %q is not this node (%s)", clip.Text(offer.To, maxIDLen), b.cfg.NodeID), http.StatusMisdirectedRequest)
		return
	}
	if !b.freshNonce(offer.Nonce, time.UnixMilli(offer.TimeMs)) {
		b.log.Warn().Str("remote", r.RemoteAddr).Str("peer_node_id", offer.From).Time("signed_at", time.UnixMilli(offer.TimeMs)).
			Msg("Refused a relay offer that is too old, from the future or replayed")
		http.Error(w, errStale.Error(), http.StatusUnauthorized)
		return
	}
	a, ans, err := b.accept(offer.Room, offer.From, offer.Nonce, nil)
	if err != nil {
		b.log.Warn().Err(err).Str("lk_room", offer.Room).Str("node_id", offer.From).Msg("failed to accept relay association")
		http.Error(w, "cannot associate", http.StatusServiceUnavailable)
		return
	}
	rb, err := json.Marshal(ans)
	if err != nil {
		a.close()
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(macHeader, base64.StdEncoding.EncodeToString(mac(b.cfg.Secret, "answer", sum, rb)))
	_, _ = w.Write(rb)
	a.startAsync(offer)
}

// readSignalBody reads a signalling request's body, at most
// maxSignalBody (the server's MaxBytesHandler), and writes the refusal
// itself: 413 for a larger body, 400 for one that broke off.
func readSignalBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(r.Body)
	if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
		http.Error(w, fmt.Sprintf("body larger than %d bytes", maxSignalBody), http.StatusRequestEntityTooLarge)
		return nil, false
	}
	if err != nil {
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return nil, false
	}
	return body, true
}

// versionProblem names a relay protocol version other than ours.
func versionProblem(v int) string {
	return fmt.Sprintf("v: relay protocol version %d, this node speaks %d (a node of another gxconf version)", v, signalVersion)
}

// offerProblem names what makes a cluster offer unusable ("": nothing).
func (b *Bridge) offerProblem(o *signal) string {
	switch {
	case o.Version != signalVersion:
		return versionProblem(o.Version)
	case o.Room == "":
		return "room: missing"
	case o.From == "":
		return "from: missing"
	case o.From == b.cfg.NodeID:
		return "from: this node's own id"
	}
	return ""
}

// freshNonce accepts an offer time within the allowed skew and a nonce
// not seen in that window.
func (b *Bridge) freshNonce(nonce string, at time.Time) bool {
	now := time.Now()
	if nonce == "" || len(nonce) > 64 || at.Before(now.Add(-maxClockSkew)) || at.After(now.Add(maxClockSkew)) {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for n, exp := range b.nonces {
		if now.After(exp) {
			delete(b.nonces, n)
		}
	}
	if _, seen := b.nonces[nonce]; seen {
		return false
	}
	b.nonces[nonce] = now.Add(2 * maxClockSkew)
	return true
}
