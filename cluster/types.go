package cluster

import (
	"fmt"
	"time"
	"unicode/utf8"
)

// NodeID names one gxconf node. Letters, digits, '.', '_' and '-', at most 64.
type NodeID string

// SiteID names a site ("Betriebsstätte"): nodes behind one entry URL.
type SiteID string

// FederationID names a federation (a group of homeservers with common trust).
type FederationID string

// RoomName is a LiveKit room name (MSC4195 livekit_alias).
type RoomName string

// ParticipantIdentity is a LiveKit participant identity.
type ParticipantIdentity string

// TrackID is a LiveKit track SID.
type TrackID string

// NodeState says whether a node takes new participants.
type NodeState string

// Node states.
const (
	// NodeServing takes new participants.
	NodeServing NodeState = "serving"
	// NodeDraining keeps its participants until they are moved off but is
	// never chosen by placement.
	NodeDraining NodeState = "draining"
)

// Load is what a node reports about itself every heartbeat.
type Load struct {
	// CPU is the busy fraction of all cores, 0..1.
	CPU float64
	// Participants and Tracks count what the node serves (tracks: published
	// tracks, including relayed ones).
	Participants uint32
	Tracks       uint32
	// BitrateIn and BitrateOut are client media bits per second.
	BitrateIn  uint64
	BitrateOut uint64
	// RelayBitrate is bits per second on relay links, both directions.
	RelayBitrate uint64
}

// Limits are a node's own capacity; placement keeps nodes below them. Zero
// means unlimited.
type Limits struct {
	// MaxParticipants, MaxTracks: counts as in Load.
	MaxParticipants uint32 `yaml:"max_participants"`
	MaxTracks       uint32 `yaml:"max_tracks"`
	// MaxBitrate caps BitrateIn+BitrateOut in bits per second.
	MaxBitrate uint64 `yaml:"max_bitrate"`
	// MaxCPU caps Load.CPU (0..1).
	MaxCPU float64 `yaml:"max_cpu"`
}

// Node is one node's record as published in the registry.
type Node struct {
	ID         NodeID
	Site       SiteID
	Federation FederationID
	// Epoch distinguishes runs of a node with the same ID (its start time in
	// Unix nanoseconds); directory entries of an older epoch are stale.
	Epoch uint64
	// SignalURL is the ws(s):// URL of this node's LiveKit signalling.
	SignalURL string
	// MediaAddrs are the addresses clients send media to (host or host:port).
	MediaAddrs []string
	// RelayAddr is host:port of the node's relay endpoint on the IX; empty
	// when the node relays nothing.
	RelayAddr string
	State     NodeState
	Limits    Limits
	Load      Load
	// UpdatedAt is when the node wrote this record (its own clock).
	UpdatedAt time.Time
}

// Serving reports whether placement may choose the node.
func (n Node) Serving() bool { return n.State == NodeServing }

// RoomEntry says that a node hosts a room.
type RoomEntry struct {
	Room  RoomName
	Node  NodeID
	Epoch uint64
	Since time.Time
}

// ParticipantEntry says on which node a participant is connected.
type ParticipantEntry struct {
	Room     RoomName
	Identity ParticipantIdentity
	// SID is the participant's session ID on its node.
	SID      string
	Node     NodeID
	Epoch    uint64
	JoinedAt time.Time
}

// TrackEntry says which participant published a track and on which node.
type TrackEntry struct {
	Room        RoomName
	SID         TrackID
	Participant ParticipantIdentity
	Node        NodeID
	Epoch       uint64
	// Kind is "audio" or "video"; MimeType e.g. "video/VP8"; Source e.g.
	// "camera" (LiveKit's TrackSource, lower case).
	Kind     string
	MimeType string
	Source   string
	// Layers is the number of simulcast layers published (1 if none).
	Layers uint8
}

const (
	maxIDLen = 64
	// maxNameLen bounds room names, identities and track SIDs. It holds the
	// longest identity the focus builds (the legacy "<user ID>:<device
	// ID>", 255 + 1 + 128 bytes): the node ignores longer names, and a
	// participant left out of the directory is missed by the catalog's
	// participant limits and the cluster-wide RoomService.
	maxNameLen = 512
)

// ValidNodeID reports whether id is a well-formed node ID.
func ValidNodeID(id NodeID) bool { return validToken(string(id), maxIDLen) }

func validToken(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// validName accepts non-empty UTF-8 without control characters (room names,
// identities, track SIDs, URLs).
func validName(s string, max int) bool {
	if s == "" || len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func checkName(what, s string) error {
	if !validName(s, maxNameLen) {
		return fmt.Errorf("%w: %s %q", ErrInvalidRecord, what, s)
	}
	return nil
}

func checkNodeID(id NodeID) error {
	if !ValidNodeID(id) {
		return fmt.Errorf("%w: node id %q", ErrInvalidRecord, id)
	}
	return nil
}
