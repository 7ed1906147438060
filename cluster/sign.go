package cluster

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Signed node-to-node messages and bus events (cluster.message_key_file).
//
// Without a key, whoever can publish to gxconf's Redis channels can forge a
// message (sfu.remove_participant removes anyone, sfu.room_service runs any
// RoomService call) or an event. With one, every message and event a node
// publishes is wrapped in an envelope:
//
//	{"body": <the message or event as MarshalMessage/MarshalEvent wrote it>,
//	 "node": sender id, "epoch": sender epoch, "at": send time (Unix ms),
//	 "id": random 128-bit id, "mac": HMAC-SHA256}
//
// The MAC covers the channel it was published to (so a message to one node
// cannot be replayed into another's inbox, nor a message as an event), the
// sender, its epoch, the send time, the id and the body's exact bytes. A
// receiver with the key refuses anything unsigned (unless
// message_key_accept_unsigned, while a cluster turns signing on), badly
// signed, sent more than messageWindow from its clock, seen before (ids are
// remembered for the window), or whose body names another sender than the
// signed one. Node records and directory entries are not signed.
//
// A node without a key takes a signed envelope's body unverified: during
// the rolling enablement some nodes sign while others do not yet know the
// key. An older gxconf, whose decoder refuses the envelope, must be
// upgraded before any node gets a key.

// MinMessageKeyLen is the shortest message key accepted, in bytes.
const MinMessageKeyLen = 32

// messageWindow is how far a signed publication's send time may be from the
// receiver's clock, either way: it bounds the clock skew between nodes and
// how long ids are remembered against replays.
const messageWindow = 30 * time.Second

// maxRefusalSources bounds the (sender, fault) pairs remembered for logging
// each once: senders are whatever a forger writes.
const maxRefusalSources = 1024

// Kinds of publication, the metric's kind label.
const (
	KindMessage = "message"
	KindEvent   = "event"
)

// Refusal reasons, the metric's reason label.
const (
	RefusedUnsigned     = "unsigned"
	RefusedBadSignature = "bad_signature"
	RefusedSender       = "sender_mismatch"
	RefusedStale        = "stale"
	RefusedReplayed     = "replayed"
)

// Refusal counts the publications of one kind refused for one reason.
type Refusal struct {
	Kind   string
	Reason string
	Count  uint64
}

// SigningStats are a node's counts of refused publications and of
// unsigned ones it accepted (message_key_accept_unsigned), by kind.
type SigningStats struct {
	Refused          []Refusal
	AcceptedUnsigned map[string]uint64
}

type wireSigned struct {
	Body  []byte `json:"body"`
	Node  string `json:"node"`
	Epoch string `json:"epoch"`
	At    int64  `json:"at"`
	ID    string `json:"id"`
	MAC   []byte `json:"mac"`
}

// sender is who a received publication claims to come from: the signed
// sender of a verified envelope.
type sender struct {
	signed bool
	node   NodeID
	epoch  uint64
}

type refusalKey struct{ kind, reason string }

type refusalSource struct {
	kind, reason string
	node         string
}

// signer seals what a node publishes and opens what it receives. Its
// methods are safe for concurrent use.
type signer struct {
	key            []byte // nil: no signing
	acceptUnsigned bool
	node           NodeID
	epoch          uint64
	now            func() time.Time
	log            zerolog.Logger

	mu       sync.Mutex
	seen     map[string]time.Time // id -> when it leaves the window
	sweepAt  time.Time
	refused  map[refusalKey]uint64
	unsigned map[string]uint64
	logged   map[refusalSource]struct{}
	full     bool // logged reached maxRefusalSources (and that was logged)
}

func newSigner(key []byte, acceptUnsigned bool, node NodeID, epoch uint64, now func() time.Time, log zerolog.Logger) *signer {
	return &signer{
		key: key, acceptUnsigned: acceptUnsigned, node: node, epoch: epoch, now: now, log: log,
		seen: map[string]time.Time{}, refused: map[refusalKey]uint64{}, unsigned: map[string]uint64{},
		logged: map[refusalSource]struct{}{},
	}
}

// loadMessageKey reads a message key file (a trailing newline is not part
// of the key). Errors never quote the content.
func loadMessageKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the key: %w", err)
	}
	key := []byte(strings.TrimRight(string(b), "\r\n"))
	if len(key) < MinMessageKeyLen {
		return nil, fmt.Errorf("must hold at least %d bytes, got %d", MinMessageKeyLen, len(key))
	}
	return key, nil
}

func (s *signer) mac(channel, node, epoch string, at int64, id string, body []byte) []byte {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte("gxconf cluster publication v1"))
	for _, f := range [][]byte{[]byte(channel), []byte(node), []byte(epoch), strconv.AppendInt(nil, at, 10), []byte(id), body} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	return h.Sum(nil)
}

// seal returns body as published on channel: signed with the key, or as
// it is without one.
func (s *signer) seal(channel string, body []byte) ([]byte, error) {
	if s.key == nil {
		return body, nil
	}
	return s.sealAs(channel, body, s.node, s.epoch, s.now())
}

func (s *signer) sealAs(channel string, body []byte, node NodeID, epoch uint64, at time.Time) ([]byte, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("failed to draw a message id: %w", err)
	}
	w := wireSigned{Body: body, Node: string(node), Epoch: fmtEpoch(epoch), At: at.UnixMilli(), ID: hex.EncodeToString(id[:])}
	w.MAC = s.mac(channel, w.Node, w.Epoch, w.At, w.ID, w.Body)
	return json.Marshal(w)
}

var errRefused = errors.New("publication refused")

// open returns the body of a publication received on channel and its
// signed sender, or errRefused (counted and logged by open).
func (s *signer) open(kind, channel string, data []byte) ([]byte, sender, error) {
	var w wireSigned
	if err := decodeStrict(data, &w); err != nil {
		// Not an envelope: unsigned (or malformed, which the parser tells).
		if s.key == nil {
			return data, sender{}, nil
		}
		if !s.acceptUnsigned {
			return nil, sender{}, s.refuse(kind, RefusedUnsigned, claimedSender(kind, data))
		}
		s.mu.Lock()
		s.unsigned[kind]++
		s.mu.Unlock()
		return data, sender{}, nil
	}
	if s.key == nil {
		return w.Body, sender{}, nil
	}
	if !hmac.Equal(w.MAC, s.mac(channel, w.Node, w.Epoch, w.At, w.ID, w.Body)) {
		return nil, sender{}, s.refuse(kind, RefusedBadSignature, w.Node)
	}
	epoch, err := parseEpoch(w.Epoch)
	if err != nil || checkNodeID(NodeID(w.Node)) != nil || w.ID == "" || len(w.ID) > maxIDLen {
		// Signed with the key, so written by a node: a bug, not a forgery.
		return nil, sender{}, s.refuse(kind, RefusedBadSignature, w.Node)
	}
	now := s.now()
	at := time.UnixMilli(w.At)
	if now.Sub(at) > messageWindow || at.Sub(now) > messageWindow {
		return nil, sender{}, s.refuse(kind, RefusedStale, w.Node)
	}
	s.mu.Lock()
	if _, dup := s.seen[w.ID]; dup {
		s.mu.Unlock()
		return nil, sender{}, s.refuse(kind, RefusedReplayed, w.Node)
	}
	s.seen[w.ID] = at.Add(messageWindow)
	if now.After(s.sweepAt) {
		for id, until := range s.seen {
			if now.After(until) {
				delete(s.seen, id)
			}
		}
		s.sweepAt = now.Add(messageWindow / 4)
	}
	s.mu.Unlock()
	return w.Body, sender{signed: true, node: NodeID(w.Node), epoch: epoch}, nil
}

// claimedSender is the sender an unsigned publication names, for the log.
func claimedSender(kind string, data []byte) string {
	var w struct {
		From string `json:"from"`
		Node string `json:"node"`
	}
	if json.Unmarshal(data, &w) != nil {
		return ""
	}
	if kind == KindMessage {
		return w.From
	}
	return w.Node
}

// refuse counts a refused publication and logs it once per sender, kind
// and reason; it returns errRefused.
func (s *signer) refuse(kind, reason, node string) error {
	node = clip(node)
	src := refusalSource{kind: kind, reason: reason, node: node}
	s.mu.Lock()
	s.refused[refusalKey{kind, reason}]++
	_, seen := s.logged[src]
	first := !seen && len(s.logged) < maxRefusalSources
	if first {
		s.logged[src] = struct{}{}
	}
	overflow := !seen && !first && !s.full
	if overflow {
		s.full = true
	}
	s.mu.Unlock()
	switch {
	case first:
		s.log.Warn().Str("peer_node_id", node).Str("kind", kind).Str("reason", reason).
			Msg("refused a cluster publication (logged once per sender and reason; counted in gxconf_cluster_refused_publications_total)")
	case overflow:
		s.log.Warn().Msg("refused cluster publications from too many senders; further ones are only counted")
	}
	return errRefused
}

// checkSender refuses a verified publication whose body names another
// sender than the signed one.
func (s *signer) checkSender(kind string, from sender, node NodeID, epoch uint64) error {
	if !from.signed || (from.node == node && from.epoch == epoch) {
		return nil
	}
	return s.refuse(kind, RefusedSender, string(from.node))
}

// stats returns the counts.
func (s *signer) stats() SigningStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SigningStats{AcceptedUnsigned: map[string]uint64{}}
	for k, n := range s.refused {
		st.Refused = append(st.Refused, Refusal{Kind: k.kind, Reason: k.reason, Count: n})
	}
	for k, n := range s.unsigned {
		st.AcceptedUnsigned[k] = n
	}
	slices.SortFunc(st.Refused, func(a, b Refusal) int {
		return strings.Compare(a.Kind+"/"+a.Reason, b.Kind+"/"+b.Reason)
	})
	return st
}

// senderBound reports whether an event of this type is published only by
// the node it names (so the signed sender must be that node); removals are
// also published by whichever node reaps a dead one.
func senderBound(t EventType) bool {
	switch t {
	case EventNodeUp, EventNodeDown, EventRoomHosted, EventParticipantAdded, EventTrackAdded:
		return true
	}
	return false
}
