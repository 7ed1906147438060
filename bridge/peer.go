package bridge

import (
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gxfs-conf/gxconf/internal/clip"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/livekit"
)

// Peered deployments (issue 10): two gxconf deployments of different
// federations that name each other as peers relay each other's rooms over
// the IX, one copy per track, instead of every remote subscriber fetching
// every track across it.
//
// Deployment A's focus hands a user of peer B a subscribe-only token for
// sfu.PeerRoomName(A, X) on B's URL. When such a participant joins a node
// of B, that node links the peer room with A's relay address for room X
// (FollowPeers, re-linking with backoff while it has participants there).
// Signalling (POST peerAssociatePath) is the cluster's, authenticated with
// the key derived from the A-B peer secret instead of the cluster secret,
// From/To naming deployments and Node the dialing node; replay protection
// as for the cluster. A accepts only while a user served by B holds an
// active grant for X (PeerAuthority): no grant, no relay.
//
// A is the authority of its room: participants announced by B enter X
// only with an active grant for B and never with tracks, and leave it
// once that grant expires or is revoked (asked again with the room's
// grant: watchPeerGrant); a track whose publisher lets none of B's
// participants in X subscribe does not cross to B, whatever B asks
// (holdPeerWant; data tracks: onDataWant); B's data, track streams, and
// remove / mute / update / metadata requests are ignored, logged and
// counted (gxconf_bridge_peer_refused_total). A's removals
// (RoomService.RemoveParticipant on A, the focus's leave and revocation
// path) reach B as the existing remove message and B applies them. B's SFU
// asks A about every peer token at join and refresh (PeerGrants, POST
// peerGrantPath) and refuses when A cannot be asked.

const (
	peerAssociatePath = "/gxconf/relay/v1/peer/associate"
	peerGrantPath     = "/gxconf/relay/v1/peer/grant"
	peerHeader        = "X-Gxconf-Peer"
	// peerKeyPrefix marks association keys of peer deployments; cluster
	// node ids cannot contain ':'.
	peerKeyPrefix = "gxpeer:"
	// peerRetryMax caps the backoff of re-linking a peer room.
	peerRetryMax = 10 * time.Second
	// peerFollowInterval bounds how long a peer room waits for its link
	// when a join was not signalled.
	peerFollowInterval = time.Second
)

// PeerAuthority answers for this deployment's rooms when a peer relays
// them (the focus implements it from its grants).
type PeerAuthority interface {
	// CheckPeerGrant checks a token issued for peer's relay (as
	// sfu.GrantChecker.CheckGrant) and returns the grant's issue time.
	CheckPeerGrant(ctx context.Context, peer, tokenID, room, identity string) (time.Time, error)
	// RenewPeerGrant is sfu.GrantChecker.RenewGrant for such a token.
	RenewPeerGrant(ctx context.Context, peer, tokenID, room, identity string, until time.Time) (time.Time, error)
	// PeerRoomGranted tells whether a user served by peer holds an active
	// grant for room.
	PeerRoomGranted(ctx context.Context, peer, room string) (bool, error)
	// PeerParticipantGranted tells whether identity holds an active grant
	// for room issued for peer's relay (asked when the peer announces it
	// and again every peerGrantInterval while it is in the room).
	PeerParticipantGranted(ctx context.Context, peer, room, identity string) (bool, error)
}

// Peering configures the bridge for peered deployments.
type Peering struct {
	// Self is this deployment's peer name.
	Self string
	// Peers are the peer deployments by name.
	Peers map[string]PeerLink
	// Authority answers for our rooms; nil: peers may not relay them.
	Authority PeerAuthority
	// Addresses are further addresses peers reach this node's relay by
	// (its cluster.relay_address, when the bridge listens on another):
	// a peer's request is accepted only when signed for one of them or
	// for the listen address (ownRelay).
	Addresses []string
}

// PeerLink is one peer deployment as the bridge sees it.
type PeerLink struct {
	// RelayAddress is the peer's relay signalling address on the IX.
	RelayAddress string
	// SignalKey authenticates signalling and grant checks with the peer
	// (derived from the peer secret).
	SignalKey []byte
}

// errOtherRelay refuses a peer's request signed for another relay
// address: another node of this deployment, or a peer whose
// relay_address names this node otherwise than Peering.Addresses.
const errOtherRelay = "the request names another relay address (peering.peers.<name>.relay_address must be this node's cluster.relay_address or bridge.listen)"

// ownRelay tells whether addr, the relay address a peer's request is
// signed for, is this node's: its listen address (as configured or bound,
// or one of the host's addresses when it listens on all of them) or one of
// Peering.Addresses. Replay protection is per node, so a
// request valid at one node of the deployment must not be at another.
func (b *Bridge) ownRelay(addr string) bool {
	if addr == "" {
		return false
	}
	if addr == b.cfg.Listen || addr == b.Addr() || slices.Contains(b.peering.Addresses, addr) {
		return true
	}
	// A listener on every address (":7890"): any of this host's interface
	// addresses with the listener's port.
	ap, err := netip.ParseAddrPort(addr)
	bound, berr := netip.ParseAddrPort(b.Addr())
	if err != nil || berr != nil || !bound.Addr().IsUnspecified() || ap.Port() != bound.Port() {
		return false
	}
	ifs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range ifs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == ap.Addr().Unmap() {
				return true
			}
		}
	}
	return false
}

// SetPeering enables peered deployments; call it before Run.
func (b *Bridge) SetPeering(p Peering) {
	b.peering = p
	b.mux.HandleFunc(peerAssociatePath, b.handlePeerAssociate)
	b.mux.HandleFunc(peerGrantPath, b.handlePeerGrant)
}

// PeerJoined tells the bridge a participant joined a peer room here
// (sfu.Peering.Joined), so FollowPeers links it at once. It never blocks.
func (b *Bridge) PeerJoined(string) {
	select {
	case b.peerPoke <- struct{}{}:
	default:
	}
}

// peerRole is what makes an association one with a peered deployment.
type peerRole struct {
	// deployment is the peer deployment's name (the metrics label).
	deployment string
	// authority: the room is ours and the peer only subscribes.
	authority bool
	// node is the peer's node at the other end, once known (under the
	// bridge's mu).
	node string
}

// label names the association's peer in metrics: the node, or the peer
// deployment.
func (a *association) label() string {
	if a.pr != nil {
		return a.pr.deployment
	}
	return a.peer
}

// Kinds of refused peer requests (gxconf_bridge_peer_refused_total).
const (
	refusedTrack       = "track"
	refusedData        = "data"
	refusedControl     = "control"
	refusedParticipant = "participant"
	refusedAssociation = "association"
	// a want for a track none of the peer's participants may receive
	refusedRestricted = "restricted_track"
	// a signalling request or grant check whose MAC does not verify under
	// the key of the peer it names (or that names no configured peer)
	refusedUnauthenticated = "unauthenticated"
	// a signalling request or grant check too old, from the future or
	// with a nonce seen before (a replay)
	refusedReplayed = "replayed"
)

// unknownPeer labels refusals of requests naming no configured peer: the
// name is the sender's, not a bounded set (peer names cannot contain
// parentheses).
const unknownPeer = "(unknown)"

// maxPeerNodesPerRoom bounds the associations one peer deployment holds
// for one of our rooms: one per node of its that serves users of the room,
// each with its own copy of every track it wants over the IX. A peer that
// made up node names could otherwise multiply our egress and setup work.
// A variable only so that a test can lower it.
var maxPeerNodesPerRoom = 16

// reservePeerAssociation takes one of the maxPeerNodesPerRoom slots of
// peer in room for the association key (an offer for an existing key
// replaces that association, so it keeps its slot), counting the
// associations registered and those being set up (peerPending) in one
// critical section: offers sent at once cannot all pass the count before
// any registers. release ends the reservation once the association is
// registered or failed.
func (b *Bridge) reservePeerAssociation(room, peer, key string) (release func(), ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	held := map[string]bool{}
	for k, a := range b.assocs {
		if k.room == room && k.peer != key && a.pr != nil && a.pr.deployment == peer {
			held[k.peer] = true
		}
	}
	prefix := peerKey(peer, "") + "/"
	for k := range b.peerPending {
		if k.room == room && k.peer != key && strings.HasPrefix(k.peer, prefix) {
			held[k.peer] = true
		}
	}
	if len(held) >= maxPeerNodesPerRoom {
		return nil, false
	}
	k := assocKey{room, key}
	b.peerPending[k]++
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.peerPending[k]--; b.peerPending[k] == 0 {
			delete(b.peerPending, k)
		}
	}, true
}

func (b *Bridge) countRefused(peer, kind string) {
	b.mu.Lock()
	b.refused[[2]string{peer, kind}]++
	b.mu.Unlock()
}

// PeerRefused returns how many requests of kind ("track", "data",
// "control", "participant", "association", "restricted_track",
// "unauthenticated", "replayed") peer made of our rooms that were refused.
func (b *Bridge) PeerRefused(peer, kind string) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refused[[2]string{peer, kind}]
}

// peerMayAsk filters the control messages of a peer relaying our room:
// it may announce its subscribers, say which layers they want and close;
// it may not publish, send data, or act on our participants or room.
func (a *association) peerMayAsk(m *message) bool {
	var kind string
	switch m.Type {
	case msgParticipant, msgWant, msgDataWant, msgStreamReady, msgBye, msgSRTP:
		return true
	case msgStream:
		kind = refusedTrack
	case msgData:
		kind = refusedData
	default: // remove, mute, update, room metadata
		kind = refusedControl
	}
	a.b.countRefused(a.pr.deployment, kind)
	a.log.Warn().Str("type", m.Type).Str("lk_identity", m.Identity).Msg("Ignored a peer's request on our room")
	return false
}

// admitPeerParticipant vets a participant a peer announces in our room:
// a new one must hold an active grant for that peer (else the peer is told
// to remove it; recheckPeerGrants asks again while it is here); tracks are
// dropped (the peer's users only subscribe). It reports whether the
// message is to be applied.
func (a *association) admitPeerParticipant(m *message, isNew bool) bool {
	info := m.info
	if len(info.GetTracks()) > 0 || len(m.Codecs) > 0 || len(info.GetDataTracks()) > 0 {
		a.b.countRefused(a.pr.deployment, refusedTrack)
		a.log.Warn().Str("lk_identity", info.GetIdentity()).Msg("Ignored tracks a peer announced in our room")
		info.Tracks, m.Codecs, info.DataTracks = nil, nil, nil
	}
	info.Permission = &livekit.ParticipantPermission{CanSubscribe: true}
	m.Perm = nil // nothing of theirs to subscribe to
	if !isNew || info.GetState() == livekit.ParticipantInfo_DISCONNECTED {
		return true
	}
	// The grant store is local: the worker waits for it briefly.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ok, err := a.b.peering.Authority.PeerParticipantGranted(ctx, a.pr.deployment, a.room, info.GetIdentity())
	if err == nil && ok {
		return true
	}
	a.b.countRefused(a.pr.deployment, refusedParticipant)
	a.log.Warn().Err(err).Str("lk_identity", info.GetIdentity()).Msg("A peer announced a participant without a grant; removing it there")
	a.send(&message{Type: msgRemove, Identity: info.GetIdentity(), Reason: int32(livekit.DisconnectReason_PARTICIPANT_REMOVED)})
	return false
}

// holdPeerWant returns the layers of track sid that may cross to the
// peer: on the authority's side of a peer room, none while the track's
// publisher lets none of the participants the peer announced here
// subscribe to it. The peer's SFU enforces the permission for its users
// too, but it is another deployment: a restricted track crosses only to
// one with a user who may see it. A held want is kept (peerHeld) and
// sent once a permission or a participant lets it in (recheckPeerWants).
// g is the gate to ask (nil: a new one). Worker only.
func (a *association) holdPeerWant(sid string, mask uint8, g *peerGate) uint8 {
	if a.pr == nil || !a.pr.authority {
		return mask
	}
	if mask != 0 && g == nil {
		g = a.peerGate()
	}
	if mask == 0 || g.allows(sid) {
		delete(a.peerHeld, sid)
		return mask
	}
	if a.peerHeld[sid] != mask {
		a.b.countRefused(a.pr.deployment, refusedRestricted)
		a.log.Info().Str("track_sid", sid).Msg("Holding back a track from the peer: its publisher lets none of the peer's participants here subscribe to it")
	}
	a.peerHeld[sid] = mask
	return 0
}

// onDataWant applies the peer's want of one of our data tracks (only of
// those sent to it); on the authority's side of a peer room it is held as
// a media want is (holdPeerWant). Worker only.
func (a *association) onDataWant(sid string, want bool) {
	a.dtMu.Lock()
	want = want && a.dtKnown[sid]
	a.dtMu.Unlock()
	if want && a.pr != nil && a.pr.authority && !a.peerGate().allows(sid) {
		a.holdDataWant(sid)
		want = false
	} else {
		delete(a.dtHeld, sid)
	}
	a.setDataWanted(sid, want)
}

// holdDataWant keeps the peer's want of data track sid (dtHeld) and counts
// it as refused. Worker only.
func (a *association) holdDataWant(sid string) {
	if !a.dtHeld[sid] {
		a.b.countRefused(a.pr.deployment, refusedRestricted)
		a.log.Info().Str("track_sid", sid).Msg("Holding back a data track from the peer: its publisher lets none of the peer's participants here subscribe to it")
	}
	a.dtHeld[sid] = true
}

func (a *association) setDataWanted(sid string, want bool) {
	a.dtMu.Lock()
	if want {
		a.dtWanted[sid] = true
	} else {
		delete(a.dtWanted, sid)
	}
	a.dtMu.Unlock()
}

// peerGate answers, for one state of the room, whether the publisher of a
// local track lets one of the participants the peer announced here
// subscribe to it.
type peerGate struct {
	a      *association
	owners map[string]string // track sid → publisher identity
	perms  map[string]*livekit.SubscriptionPermission
}

func (a *association) peerGate() *peerGate {
	g := &peerGate{a: a, owners: map[string]string{}, perms: map[string]*livekit.SubscriptionPermission{}}
	for _, p := range a.rr.LocalParticipants() {
		for _, t := range p.GetTracks() {
			g.owners[t.GetSid()] = p.GetIdentity()
		}
		for _, t := range p.GetDataTracks() {
			g.owners[t.GetSid()] = p.GetIdentity()
		}
	}
	return g
}

// allows is true for a track that is not, or no longer, here: onWant
// ignores those. Nothing crosses while the peer has announced none of its
// participants here: nobody in the room sees who would watch.
func (g *peerGate) allows(sid string) bool {
	owner, ok := g.owners[sid]
	if !ok {
		return true
	}
	if len(g.a.remotes) == 0 {
		return false
	}
	perm, seen := g.perms[owner]
	if !seen {
		perm = g.a.rr.SubscriptionPermission(owner)
		g.perms[owner] = perm
	}
	if perm == nil {
		return true
	}
	for _, tp := range perm.GetTrackPermissions() {
		if g.a.remotes[tp.GetParticipantIdentity()] != nil && (tp.GetAllTracks() || slices.Contains(tp.GetTrackSids(), sid)) {
			return true
		}
	}
	return false
}

// recheckPeerWants applies holdPeerWant again after the permissions or the
// peer's participants changed: tracks that may no longer cross stop, held
// ones that may now cross start. Worker only.
func (a *association) recheckPeerWants() {
	if a.pr == nil || !a.pr.authority {
		return
	}
	a.dtMu.Lock()
	var dtWanted []string
	for sid := range a.dtWanted {
		dtWanted = append(dtWanted, sid)
	}
	for sid := range a.dtHeld {
		if !a.dtKnown[sid] { // the track ended
			delete(a.dtHeld, sid)
		}
	}
	a.dtMu.Unlock()
	if len(a.out) == 0 && len(a.peerHeld) == 0 && len(dtWanted) == 0 && len(a.dtHeld) == 0 {
		return
	}
	g := a.peerGate()
	for sid, ot := range a.out {
		if ot.wanted != 0 && !g.allows(sid) {
			a.setWant(sid, a.holdPeerWant(sid, ot.wanted, g))
		}
	}
	for sid, mask := range a.peerHeld {
		if g.allows(sid) {
			delete(a.peerHeld, sid)
			a.setWant(sid, mask)
		}
	}
	for _, sid := range dtWanted {
		if !g.allows(sid) {
			a.holdDataWant(sid)
			a.setDataWanted(sid, false)
		}
	}
	for sid := range a.dtHeld {
		if g.allows(sid) {
			delete(a.dtHeld, sid)
			a.setDataWanted(sid, true)
		}
	}
}

// peerKey is the association key of a peer room: on the relaying side one
// per (peer room, peer deployment), on the authority's side one per (room,
// relaying node of the peer).
func peerKey(deployment, node string) string {
	if node == "" {
		return peerKeyPrefix + deployment
	}
	return peerKeyPrefix + deployment + "/" + node
}

// peerMAC is the HMAC of peer signalling under a peer's signal key.
func peerMAC(key []byte, label string, bound, body []byte) []byte {
	return mac(string(key), "peer "+label, bound, body)
}

// linkPeer links the peer room local (sfu.PeerRoomName(P, X)) with P's
// relay for X; this node dials. It returns once the association is up.
func (b *Bridge) linkPeer(ctx context.Context, local string) error {
	dep, room, ok := sfu.ParsePeerRoom(local)
	if !ok {
		return fmt.Errorf("%q is no peer room", local)
	}
	pl, ok := b.peering.Peers[dep]
	if !ok {
		return fmt.Errorf("%s is not a configured peer", dep)
	}
	return b.dial(ctx, assocKey{local, peerKey(dep, "")}, &peerRole{deployment: dep}, func(ctx context.Context, a *association, offer *signal) (*signal, error) {
		offer.From, offer.To, offer.Room, offer.Node, offer.Relay = b.peering.Self, dep, room, b.cfg.NodeID, pl.RelayAddress
		ans, err := b.dialPeerSignal(ctx, pl, offer)
		if err != nil {
			return nil, err
		}
		b.mu.Lock()
		a.pr.node = ans.Node
		b.mu.Unlock()
		return ans, nil
	})
}

// dialPeerSignal sends our offer to a peer deployment's relay and returns
// its verified answer.
func (b *Bridge) dialPeerSignal(ctx context.Context, pl PeerLink, offer *signal) (*signal, error) {
	body, err := json.Marshal(offer)
	if err != nil {
		return nil, err
	}
	sum := peerMAC(pl.SignalKey, "offer", nil, body)
	rb, err := b.postPeer(ctx, pl.RelayAddress, peerAssociatePath, body, sum, pl.SignalKey, "answer")
	if err != nil {
		return nil, err
	}
	return decodeAnswer(rb, offer)
}

// postPeer POSTs an authenticated body to a peer's relay address and
// returns the answer's body once its MAC (label, bound to ours) verifies.
func (b *Bridge) postPeer(ctx context.Context, addr, path string, body, sum, key []byte, label string) ([]byte, error) {
	rb, err := b.postSigned(ctx, addr, path, body, sum, b.peering.Self, func(got, rb []byte) bool {
		return hmac.Equal(got, peerMAC(key, label, sum, rb))
	})
	if err != nil {
		return nil, fmt.Errorf("peer relay: %w", err)
	}
	return rb, nil
}

// readPeer authenticates a peer's request: the peer it names, the body
// and its MAC under that peer's key. It writes the refusal itself.
func (b *Bridge) readPeer(w http.ResponseWriter, r *http.Request) (peer string, pl PeerLink, body, sum []byte, ok bool) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return "", PeerLink{}, nil, nil, false
	}
	body, ok = readSignalBody(w, r)
	if !ok {
		return "", PeerLink{}, nil, nil, false
	}
	peer = r.Header.Get(peerHeader)
	pl, known := b.peering.Peers[peer]
	sum, err := base64.StdEncoding.DecodeString(r.Header.Get(macHeader))
	// An unknown peer is refused like a wrong MAC: nothing tells which
	// peers exist. Our log and metrics say which it was.
	if !known || err != nil || !hmac.Equal(sum, peerMAC(pl.SignalKey, labelFor(r.URL.Path), nil, body)) {
		label := peer
		if !known {
			label = unknownPeer
		}
		b.countRefused(label, refusedUnauthenticated)
		b.unauthLog().Warn().Str("peer", clip.Text(peer, maxIDLen)).Bool("known_peer", known).Str("remote", r.RemoteAddr).Str("path", r.URL.Path).
			Msg("Refused a peer request that is not authenticated (unknown peer, or a MAC that does not verify under its key)")
		http.Error(w, errUnauthenticated.Error(), http.StatusUnauthorized)
		return "", PeerLink{}, nil, nil, false
	}
	return peer, pl, body, sum, true
}

// peerOfferProblem names what makes a peer's offer unusable ("": nothing).
func peerOfferProblem(o *signal, peer string) string {
	switch {
	case o.Version != signalVersion:
		return versionProblem(o.Version)
	case o.From != peer:
		return "from: not the deployment named in " + peerHeader
	case o.Room == "":
		return "room: missing"
	case sfu.IsPeerRoom(o.Room):
		return "room: a peer room; a deployment relays only the other's own rooms"
	case o.Node == "" || len(o.Node) > 64:
		return "node: missing or longer than 64 bytes"
	}
	return ""
}

// refuseMalformed answers a peer's authenticated request that is not
// usable, naming the member at fault (problem), and logs it.
func (b *Bridge) refuseMalformed(w http.ResponseWriter, r *http.Request, peer, problem string) {
	b.log.Warn().Str("peer", peer).Str("path", r.URL.Path).Str("problem", problem).Msg("Refused a peer's malformed request")
	http.Error(w, "bad request: "+problem, http.StatusBadRequest)
}

// refuseOtherDeployment answers a peer's request addressed to another
// deployment than ours.
func (b *Bridge) refuseOtherDeployment(w http.ResponseWriter, peer, to string) {
	b.log.Warn().Str("peer", peer).Str("to", clip.Text(to, maxIDLen)).Msg("Refused a peer's request addressed to another deployment")
	http.Error(w, fmt.Sprintf("to: %q is not this deployment (%s)", clip.Text(to, maxIDLen), b.peering.Self), http.StatusMisdirectedRequest)
}

// refuseStale answers a peer's authenticated request whose time is out
// of the window or whose nonce was seen before (a replay), and counts
// and logs it.
func (b *Bridge) refuseStale(w http.ResponseWriter, r *http.Request, peer string, timeMs int64) {
	b.countRefused(peer, refusedReplayed)
	b.log.Warn().Str("peer", peer).Str("remote", r.RemoteAddr).Str("path", r.URL.Path).Time("signed_at", time.UnixMilli(timeMs)).
		Msg("Refused a peer request that is too old, from the future or replayed")
	http.Error(w, errStale.Error(), http.StatusUnauthorized)
}

func labelFor(path string) string {
	if path == peerGrantPath {
		return "grant"
	}
	return "offer"
}

// answerPeer writes an authenticated answer bound to the request's MAC.
func answerPeer(w http.ResponseWriter, key, sum []byte, label string, v any) {
	rb, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(macHeader, base64.StdEncoding.EncodeToString(peerMAC(key, label, sum, rb)))
	_, _ = w.Write(rb)
}

// handlePeerAssociate answers a peer's offer to relay one of our rooms, if
// a user it serves holds a grant for it.
func (b *Bridge) handlePeerAssociate(w http.ResponseWriter, r *http.Request) {
	peer, pl, body, sum, ok := b.readPeer(w, r)
	if !ok {
		return
	}
	offer := &signal{}
	problem := ""
	if err := json.Unmarshal(body, offer); err != nil {
		problem = "body: not a relay offer: " + clip.Text(err.Error(), maxRefusalText)
	} else {
		problem = peerOfferProblem(offer, peer)
	}
	if problem != "" {
		b.refuseMalformed(w, r, peer, problem)
		return
	}
	if offer.To != b.peering.Self {
		b.refuseOtherDeployment(w, peer, offer.To)
		return
	}
	if !b.ownRelay(offer.Relay) {
		b.log.Warn().Str("peer", peer).Str("relay", offer.Relay).Msg("Refused a peer's offer sent to another relay address")
		http.Error(w, errOtherRelay, http.StatusMisdirectedRequest)
		return
	}
	if !b.freshNonce(offer.Nonce, time.UnixMilli(offer.TimeMs)) {
		b.refuseStale(w, r, peer, offer.TimeMs)
		return
	}
	if b.peering.Authority == nil {
		http.Error(w, "this deployment does not let peers relay its rooms", http.StatusForbidden)
		return
	}
	granted, err := b.peering.Authority.PeerRoomGranted(r.Context(), peer, offer.Room)
	if err != nil {
		b.log.Warn().Err(err).Str("lk_room", offer.Room).Str("peer", peer).Msg("failed to check a peer's grants")
		http.Error(w, "cannot check grants", http.StatusServiceUnavailable)
		return
	}
	if !granted {
		b.countRefused(peer, refusedParticipant)
		b.log.Warn().Str("lk_room", offer.Room).Str("peer", peer).Msg("Refused a peer's relay: none of its users holds a grant for the room")
		http.Error(w, "no grant for this peer in the room", http.StatusForbidden)
		return
	}
	release, ok := b.reservePeerAssociation(offer.Room, peer, peerKey(peer, offer.Node))
	if !ok {
		b.countRefused(peer, refusedAssociation)
		b.log.Warn().Str("lk_room", offer.Room).Str("peer", peer).Int("limit", maxPeerNodesPerRoom).Msg("Refused a peer's relay: it holds as many associations for the room as its nodes may")
		http.Error(w, fmt.Sprintf("at most %d associations per peer and room", maxPeerNodesPerRoom), http.StatusTooManyRequests)
		return
	}
	a, ans, err := b.accept(offer.Room, peerKey(peer, offer.Node), offer.Nonce, &peerRole{deployment: peer, authority: true, node: offer.Node})
	release()
	if err != nil {
		b.log.Warn().Err(err).Str("lk_room", offer.Room).Str("peer", peer).Msg("failed to accept a peer's relay association")
		http.Error(w, "cannot associate", http.StatusServiceUnavailable)
		return
	}
	ans.From, ans.To, ans.Room, ans.Node = b.peering.Self, peer, offer.Room, b.cfg.NodeID
	answerPeer(w, pl.SignalKey, sum, "answer", ans)
	a.startAsync(offer)
}

// FollowPeers keeps every peer room of this node that has local
// participants linked with its peer deployment until ctx ends: it links
// on joins (PeerJoined) and every peerFollowInterval, re-links a lost
// association with backoff, and unlinks a room nobody here uses any more.
func (b *Bridge) FollowPeers(ctx context.Context) error {
	if len(b.peering.Peers) == 0 {
		return nil
	}
	tick := time.NewTicker(peerFollowInterval)
	defer tick.Stop()
	pf := &peerFollower{b: b, retry: map[string]*peerRetry{}, unused: map[string]time.Time{}}
	defer pf.wg.Wait()
	for {
		pf.reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-b.peerPoke:
		case <-tick.C:
		}
	}
}

type peerRetry struct {
	linking bool
	fails   int
	next    time.Time
}

// peerFollower is FollowPeers' state; the link goroutines update retry
// under mu.
type peerFollower struct {
	b  *Bridge
	wg sync.WaitGroup

	mu    sync.Mutex
	retry map[string]*peerRetry // by peer room
	// unused is when a linked peer room was first seen without local
	// participants (FollowPeers' goroutine only).
	unused map[string]time.Time
}

func (pf *peerFollower) reconcile(ctx context.Context) {
	rooms := pf.b.sfu.PeerRooms()
	now := time.Now()
	for room, n := range rooms {
		dep, _, ok := sfu.ParsePeerRoom(room)
		if _, known := pf.b.peering.Peers[dep]; !ok || !known || n == 0 {
			continue
		}
		if pf.b.Linked(room, peerKey(dep, "")) {
			continue
		}
		pf.mu.Lock()
		rt := pf.retry[room]
		if rt == nil {
			rt = &peerRetry{}
			pf.retry[room] = rt
		}
		if rt.linking || now.Before(rt.next) {
			pf.mu.Unlock()
			continue
		}
		rt.linking = true
		pf.mu.Unlock()
		pf.wg.Add(1)
		go func() {
			defer pf.wg.Done()
			err := pf.b.linkPeer(ctx, room)
			pf.mu.Lock()
			defer pf.mu.Unlock()
			rt.linking = false
			if err == nil {
				rt.fails, rt.next = 0, time.Time{}
				return
			}
			rt.fails++
			rt.next = time.Now().Add(min(time.Second<<min(rt.fails-1, 4), peerRetryMax))
			if ctx.Err() == nil {
				pf.b.log.Warn().Err(err).Str("lk_room", room).Str("peer", dep).Int("attempt", rt.fails).
					Msg("Failed to link a peer room with its deployment; retrying")
			}
		}()
	}
	// Rooms gone or unused here: forget their retries, unlink after a grace.
	pf.mu.Lock()
	for room, rt := range pf.retry {
		if rooms[room] == 0 && !rt.linking {
			delete(pf.retry, room)
		}
	}
	pf.mu.Unlock()
	pf.b.mu.Lock()
	var unused []assocKey
	for k, a := range pf.b.assocs {
		if a.pr != nil && !a.pr.authority && rooms[k.room] == 0 {
			unused = append(unused, k)
		}
	}
	pf.b.mu.Unlock()
	next := map[string]time.Time{}
	for _, k := range unused {
		since, ok := pf.unused[k.room]
		if !ok {
			since = now
		}
		if now.Sub(since) < unlinkGrace {
			next[k.room] = since
			continue
		}
		pf.b.log.Info().Str("lk_room", k.room).Msg("Unlinking a peer room nobody here uses any more")
		pf.b.Unlink(k.room, k.peer)
	}
	pf.unused = next
}

// errNoPeer: a peer room of a deployment that is not configured.
var errNoPeer = errors.New("the room belongs to no configured peer")
