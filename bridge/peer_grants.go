package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gxfs-conf/gxconf/internal/clip"
	"github.com/gxfs-conf/gxconf/sfu"
)

// grantRequest asks a peer deployment about a token it issued for our
// relay of its room.
type grantRequest struct {
	Version int    `json:"v"`
	From    string `json:"from"`
	To      string `json:"to"`
	TimeMs  int64  `json:"time_ms"`
	Nonce   string `json:"nonce"`
	// Op is "check" (CheckGrant) or "renew" (RenewGrant).
	Op       string `json:"op"`
	Room     string `json:"room"` // the peer's room name
	Identity string `json:"identity"`
	TokenID  string `json:"token_id"`
	UntilMs  int64  `json:"until_ms,omitempty"` // renew
	// Relay is the relay address the request is sent to (as signal.Relay).
	Relay string `json:"relay"`
}

// grantAnswer is the peer's verdict; TimeMs is the grant's issue time
// (check) or the refreshed token's expiry (renew).
type grantAnswer struct {
	Nonce  string `json:"nonce"`
	OK     bool   `json:"ok"`
	TimeMs int64  `json:"time_ms,omitempty"`
	Error  string `json:"error,omitempty"`
}

// grantRefused is the only reason a grant answer gives the peer.
const grantRefused = "refused"

// errPeerRefused: the peer deployment refused the grant.
var errPeerRefused = errors.New("the peer deployment refused the grant")

// PeerGrants returns the GrantChecker for this node's SFU: tokens for peer
// rooms are checked with the peer deployment that issued them (fail
// closed: no answer, no join), every other token with local (nil: none).
func (b *Bridge) PeerGrants(local sfu.GrantChecker) sfu.GrantChecker {
	return &peerGrants{b: b, local: local}
}

type peerGrants struct {
	b     *Bridge
	local sfu.GrantChecker
}

func (g *peerGrants) CheckGrant(ctx context.Context, tokenID, room, identity string, issuedAt time.Time) (time.Time, error) {
	if !sfu.IsPeerRoom(room) {
		if g.local == nil {
			return issuedAt, nil
		}
		return g.local.CheckGrant(ctx, tokenID, room, identity, issuedAt)
	}
	ms, err := g.b.askPeer(ctx, &grantRequest{Op: "check", Room: room, Identity: identity, TokenID: tokenID})
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(ms), nil
}

func (g *peerGrants) RenewGrant(ctx context.Context, tokenID, room, identity string, until time.Time) (time.Time, error) {
	if !sfu.IsPeerRoom(room) {
		if g.local == nil {
			return until, nil
		}
		return g.local.RenewGrant(ctx, tokenID, room, identity, until)
	}
	ms, err := g.b.askPeer(ctx, &grantRequest{Op: "renew", Room: room, Identity: identity, TokenID: tokenID, UntilMs: until.UnixMilli()})
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(ms), nil
}

// askPeer sends a grant request for the peer room req.Room to its peer
// deployment and returns the answer's time.
func (b *Bridge) askPeer(ctx context.Context, req *grantRequest) (int64, error) {
	dep, room, ok := sfu.ParsePeerRoom(req.Room)
	pl, known := b.peering.Peers[dep]
	if !ok || !known {
		return 0, errNoPeer
	}
	req.Version, req.From, req.To, req.Room = 1, b.peering.Self, dep, room
	req.TimeMs, req.Nonce, req.Relay = time.Now().UnixMilli(), newNonce(), pl.RelayAddress
	body, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	sum := peerMAC(pl.SignalKey, "grant", nil, body)
	rb, err := b.postPeer(ctx, pl.RelayAddress, peerGrantPath, body, sum, pl.SignalKey, "grant answer")
	if err != nil {
		return 0, fmt.Errorf("failed to ask %s about a grant: %w", dep, err)
	}
	var ans grantAnswer
	if err := json.Unmarshal(rb, &ans); err != nil || ans.Nonce != req.Nonce {
		return 0, errUnauthenticated
	}
	if !ans.OK {
		return 0, fmt.Errorf("%w: %s", errPeerRefused, ans.Error)
	}
	return ans.TimeMs, nil
}

// grantProblem names what makes a peer's grant request unusable ("":
// nothing).
func grantProblem(req *grantRequest, peer string) string {
	switch {
	case req.Version != 1:
		return fmt.Sprintf("v: grant request version %d, this node speaks 1", req.Version)
	case req.From != peer:
		return "from: not the deployment named in " + peerHeader
	case req.Room == "":
		return "room: missing"
	case req.Identity == "":
		return "identity: missing"
	case req.Op != "check" && req.Op != "renew":
		return fmt.Sprintf("op: %q is neither check nor renew", clip.Text(req.Op, 32))
	}
	return ""
}

// handlePeerGrant answers a peer's question about a token we issued for
// its relay of our room, from our grants.
func (b *Bridge) handlePeerGrant(w http.ResponseWriter, r *http.Request) {
	peer, pl, body, sum, ok := b.readPeer(w, r)
	if !ok {
		return
	}
	var req grantRequest
	problem := ""
	if err := json.Unmarshal(body, &req); err != nil {
		problem = "body: not a grant request: " + clip.Text(err.Error(), maxRefusalText)
	} else {
		problem = grantProblem(&req, peer)
	}
	if problem != "" {
		b.refuseMalformed(w, r, peer, problem)
		return
	}
	if req.To != b.peering.Self {
		b.refuseOtherDeployment(w, peer, req.To)
		return
	}
	if !b.ownRelay(req.Relay) {
		b.log.Warn().Str("peer", peer).Str("relay", req.Relay).Msg("Refused a peer's grant check sent to another relay address")
		http.Error(w, errOtherRelay, http.StatusMisdirectedRequest)
		return
	}
	if !b.freshNonce(req.Nonce, time.UnixMilli(req.TimeMs)) {
		b.refuseStale(w, r, peer, req.TimeMs)
		return
	}
	auth := b.peering.Authority
	if auth == nil {
		http.Error(w, "this deployment does not let peers relay its rooms", http.StatusForbidden)
		return
	}
	var at time.Time
	var err error
	if req.Op == "check" {
		at, err = auth.CheckPeerGrant(r.Context(), peer, req.TokenID, req.Room, req.Identity)
	} else {
		at, err = auth.RenewPeerGrant(r.Context(), peer, req.TokenID, req.Room, req.Identity, time.UnixMilli(req.UntilMs))
	}
	ans := grantAnswer{Nonce: req.Nonce, OK: err == nil}
	if err != nil {
		// The authority's error is ours (it may name our database, its
		// addresses or another internal cause): the peer learns only
		// that the grant was refused, our log keeps the reason.
		ans.Error = grantRefused
		b.log.Info().Err(err).Str("lk_room", req.Room).Str("lk_identity", req.Identity).Str("peer", peer).Msg("Refused a peer's grant check")
	} else {
		ans.TimeMs = at.UnixMilli()
	}
	answerPeer(w, pl.SignalKey, sum, "grant answer", ans)
}
