package bridge

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/livekit/protocol/livekit"
	"google.golang.org/protobuf/proto"

	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// Control message types.
const (
	msgParticipant = "participant" // P (+ Codecs, Perm): a participant of the sender's node changed
	msgWant        = "want"        // SID, Mask: layers the sender's subscribers want
	msgDataWant    = "data_want"   // SID, Mask 1/0: the sender's subscribers want a data track's packets, or no longer
	msgStream      = "stream"      // SID, Layer, SSRC: an SSRC will carry a layer
	msgStreamReady = "stream_ready"
	msgData        = "data"          // Label, Data, Dests; on _data_track: Identity (the publisher), Data (a data track packet)
	msgRemove      = "remove"        // Identity, Reason
	msgMute        = "mute"          // Identity, SID: RoomService.MutePublishedTrack on the sender's node
	msgBye         = "bye"           // the sender closes the association
	msgRoomMeta    = "room_metadata" // Data: RoomService.UpdateRoomMetadata on the sender's node
	msgUpdate      = "update"        // P (identity, name, metadata, attributes, permission): RoomService.UpdateParticipant on the sender's node
	// msgSRTP is the DTLS server's first message: Data is its Server
	// Hello random, Suite and Profile what it chose (public, sent in clear
	// in the handshake); the DTLS client needs them to derive the SRTP keys.
	msgSRTP = "srtp"
)

// labelDataTrack marks a data message carrying a data track packet.
const labelDataTrack = "_data_track"

// Bounds of untrusted control input.
const (
	maxControlMessage = 256 << 10
	maxDests          = 4096
	maxTracks         = 256
	maxIDLen          = 512
	maxDataTracks     = 64 // of one participant (sfu's limit)
)

// Bounds of what one peer may make this node hold for an association.
// Every relayed track costs about 1 MB of packet caches here (sfu's
// RemoteTrack), and a peer may announce maxTracks per message and any
// number of participants, so without these a few small messages take
// gigabytes. A 1000-person call (the largest room size offered) fits
// maxRemoteParticipants; 2048 tracks fit 500 participants each with
// audio, camera and a screen share, or 1000 with audio and camera.
// Variables only so that tests can lower them.
var (
	maxRemoteParticipants = 1000
	maxInTracks           = 2048
)

// trackCodec is the codec of a live track in a participant message.
type trackCodec struct {
	SID        string `json:"sid"`
	MimeType   string `json:"mime"`
	ClockRate  uint32 `json:"clock"`
	Channels   uint16 `json:"ch,omitempty"`
	Fmtp       string `json:"fmtp,omitempty"`
	AudioLevel uint8  `json:"alevel,omitempty"`
}

// permGrant is one subscriber's entry of a subscription permission: all
// tracks, or those listed.
type permGrant struct {
	Identity string   `json:"id"`
	All      bool     `json:"all,omitempty"`
	Tracks   []string `json:"tracks,omitempty"`
}

// Bounds of a relayed subscription permission (as sfu's).
const (
	maxPermGrants = 1024
	maxPermTracks = 512
)

// permToWire is a permission by identity (sfu.RelayRoom's) as carried.
func permToWire(perm *livekit.SubscriptionPermission) *[]permGrant {
	if perm == nil || perm.GetAllParticipants() {
		return nil
	}
	gs := []permGrant{}
	for _, tp := range perm.GetTrackPermissions() {
		g := permGrant{Identity: tp.GetParticipantIdentity(), All: tp.GetAllTracks()}
		if !g.All && len(tp.GetTrackSids()) > 0 {
			g.Tracks = append([]string(nil), tp.GetTrackSids()...)
		}
		gs = append(gs, g)
	}
	return &gs
}

// permFromWire is the carried permission for sfu (nil: everyone).
func permFromWire(w *[]permGrant) *livekit.SubscriptionPermission {
	if w == nil {
		return nil
	}
	perm := &livekit.SubscriptionPermission{}
	for _, g := range *w {
		perm.TrackPermissions = append(perm.TrackPermissions, &livekit.TrackPermission{
			ParticipantIdentity: g.Identity, AllTracks: g.All, TrackSids: g.Tracks,
		})
	}
	return perm
}

// message is one control message.
type message struct {
	Type     string       `json:"t"`
	P        []byte       `json:"p,omitempty"` // livekit.ParticipantInfo, protobuf
	Codecs   []trackCodec `json:"codecs,omitempty"`
	SID      string       `json:"sid,omitempty"`
	Layer    int          `json:"layer,omitempty"`
	Mask     uint8        `json:"mask,omitempty"`
	SSRC     uint32       `json:"ssrc,omitempty"`
	Kind     string       `json:"kind,omitempty"` // stream: "audio" or "video"
	Label    string       `json:"label,omitempty"`
	Data     []byte       `json:"data,omitempty"`
	Dests    []string     `json:"dests,omitempty"`
	Identity string       `json:"identity,omitempty"`
	Reason   int32        `json:"reason,omitempty"`
	Suite    uint16       `json:"suite,omitempty"`
	Profile  uint16       `json:"profile,omitempty"`
	// Perm is, in a participant message, who may subscribe to the
	// participant's tracks (sfu's subscription permission by identity);
	// absent: everyone.
	Perm *[]permGrant `json:"perm,omitempty"`

	info *livekit.ParticipantInfo // decoded P
}

var errBadMessage = errors.New("invalid control message")

func bad(why string) error { return fmt.Errorf("%w: %s", errBadMessage, why) }

// parseMessage decodes and validates a control message from the peer.
func parseMessage(b []byte) (*message, error) {
	if len(b) > maxControlMessage {
		return nil, bad("too large")
	}
	m := &message{}
	if err := strictjson.UnmarshalKnown(b, m); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadMessage, err)
	}
	if len(m.SID) > maxIDLen || len(m.Identity) > maxIDLen || len(m.Label) > maxIDLen || len(m.Dests) > maxDests || len(m.Codecs) > maxTracks {
		return nil, bad("field too long")
	}
	if m.Layer < 0 || m.Layer > 2 || m.Mask > 7 {
		return nil, bad("layer out of range")
	}
	switch m.Type {
	case msgUpdate:
		info := &livekit.ParticipantInfo{}
		if err := proto.Unmarshal(m.P, info); err != nil {
			return nil, fmt.Errorf("%w: %w", errBadMessage, err)
		}
		if info.GetIdentity() == "" || len(info.GetIdentity()) > maxIDLen {
			return nil, bad("update without identity")
		}
		m.info = info
	case msgParticipant:
		info := &livekit.ParticipantInfo{}
		if err := proto.Unmarshal(m.P, info); err != nil {
			return nil, fmt.Errorf("%w: %w", errBadMessage, err)
		}
		if info.GetIdentity() == "" || info.GetSid() == "" || len(info.GetIdentity()) > maxIDLen || len(info.GetTracks()) > maxTracks {
			return nil, bad("participant without identity or sid")
		}
		if len(info.GetDataTracks()) > maxDataTracks {
			return nil, bad("too many data tracks")
		}
		for _, t := range info.GetDataTracks() {
			if t.GetSid() == "" || len(t.GetSid()) > maxIDLen || t.GetPubHandle() == 0 || t.GetPubHandle() > 65535 || len(t.GetName()) > maxIDLen {
				return nil, bad("bad data track")
			}
		}
		for _, t := range info.GetTracks() {
			if t.GetSid() == "" {
				return nil, bad("track without sid")
			}
		}
		if err := checkPerm(m.Perm); err != nil {
			return nil, err
		}
		m.info = info
	case msgWant:
		if m.SID == "" {
			return nil, bad("want without sid")
		}
	case msgDataWant:
		if m.SID == "" || m.Mask > 1 {
			return nil, bad("data want without sid, or not 0/1")
		}
	case msgStream, msgStreamReady:
		if m.SID == "" || (m.Type == msgStream && (m.SSRC == 0 || (m.Kind != "audio" && m.Kind != "video"))) {
			return nil, bad("stream without sid, ssrc or kind")
		}
	case msgData:
		switch m.Label {
		case "_reliable", "_lossy":
		case labelDataTrack:
			if m.Identity == "" || len(m.Dests) > 0 || len(m.Data) < 12 {
				return nil, bad("data track packet without publisher or header")
			}
		default:
			return nil, bad("unknown data label")
		}
	case msgRemove:
		if m.Identity == "" {
			return nil, bad("remove without identity")
		}
	case msgMute:
		if m.Identity == "" || m.SID == "" {
			return nil, bad("mute without identity or sid")
		}
	case msgSRTP:
		if len(m.Data) != 32 || m.Suite == 0 || m.Profile == 0 {
			return nil, bad("srtp without random, suite or profile")
		}
	case msgBye, msgRoomMeta:
	default:
		return nil, bad("unknown type")
	}
	for _, c := range m.Codecs {
		if c.SID == "" || c.MimeType == "" || len(c.SID) > maxIDLen || len(c.MimeType) > 64 || len(c.Fmtp) > maxIDLen {
			return nil, bad("bad codec")
		}
	}
	if m.Perm != nil && m.Type != msgParticipant {
		return nil, bad("permission outside a participant message")
	}
	// Canonical form: empty slices are absent.
	if len(m.P) == 0 {
		m.P = nil
	}
	if len(m.Codecs) == 0 {
		m.Codecs = nil
	}
	if len(m.Data) == 0 {
		m.Data = nil
	}
	if len(m.Dests) == 0 {
		m.Dests = nil
	}
	return m, nil
}

// fitPerm makes a participant message fit the control channel (limit,
// the largest message the peer accepts): a subscription permission too
// large to cross (a thousand long identities) becomes "nobody", so the
// other node fails closed instead of keeping an older, wider permission.
// It reports whether it had to.
func fitPerm(m *message, limit int) bool {
	if m.Perm == nil || len(*m.Perm) == 0 {
		return false
	}
	b, err := m.marshal()
	if err == nil && len(b) <= limit {
		return false
	}
	m.Perm = &[]permGrant{}
	return true
}

// checkPerm validates a carried subscription permission.
func checkPerm(w *[]permGrant) error {
	if w == nil {
		return nil
	}
	if len(*w) > maxPermGrants {
		return bad("permission names too many participants")
	}
	for i, g := range *w {
		if g.Identity == "" || len(g.Identity) > maxIDLen || len(g.Tracks) > maxPermTracks || (g.All && len(g.Tracks) > 0) {
			return bad("bad permission entry")
		}
		for _, sid := range g.Tracks {
			if sid == "" || len(sid) > maxIDLen {
				return bad("bad permission track")
			}
		}
		if len(g.Tracks) == 0 {
			(*w)[i].Tracks = nil
		}
	}
	return nil
}

// marshal encodes a message; participant messages carry info.
func (m *message) marshal() ([]byte, error) {
	if m.info != nil {
		p, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.info)
		if err != nil {
			return nil, err
		}
		m.P = p
	}
	return json.Marshal(m)
}
