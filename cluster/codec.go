package cluster

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// The registry stores records as JSON. Epochs are decimal strings so that
// Redis' Lua (cjson, doubles) compares them exactly; times are Unix
// milliseconds. Parsers reject unknown fields and anything a marshaller
// would not produce, so that an accepted record re-marshals.

type wireLoad struct {
	CPU          float64 `json:"cpu"`
	Participants uint32  `json:"participants"`
	Tracks       uint32  `json:"tracks"`
	BitrateIn    uint64  `json:"bitrate_in"`
	BitrateOut   uint64  `json:"bitrate_out"`
	RelayBitrate uint64  `json:"relay_bitrate"`
}

type wireLimits struct {
	MaxParticipants uint32  `json:"max_participants"`
	MaxTracks       uint32  `json:"max_tracks"`
	MaxBitrate      uint64  `json:"max_bitrate"`
	MaxCPU          float64 `json:"max_cpu"`
}

type wireNode struct {
	ID         string     `json:"id"`
	Site       string     `json:"site"`
	Federation string     `json:"federation"`
	Epoch      string     `json:"epoch"`
	SignalURL  string     `json:"signal_url"`
	MediaAddrs []string   `json:"media_addrs"`
	RelayAddr  string     `json:"relay_addr"`
	State      string     `json:"state"`
	Limits     wireLimits `json:"limits"`
	Load       wireLoad   `json:"load"`
	UpdatedAt  int64      `json:"updated_at"`
}

type wireRoom struct {
	Room  string `json:"room"`
	Node  string `json:"node"`
	Epoch string `json:"epoch"`
	Since int64  `json:"since"`
}

type wireParticipant struct {
	Room     string `json:"room"`
	Identity string `json:"identity"`
	SID      string `json:"sid"`
	Node     string `json:"node"`
	Epoch    string `json:"epoch"`
	JoinedAt int64  `json:"joined_at"`
}

type wireTrack struct {
	Room        string `json:"room"`
	SID         string `json:"sid"`
	Participant string `json:"participant"`
	Node        string `json:"node"`
	Epoch       string `json:"epoch"`
	Kind        string `json:"kind"`
	MimeType    string `json:"mime_type"`
	Source      string `json:"source"`
	Layers      uint8  `json:"layers"`
}

type wireEvent struct {
	Type        string           `json:"type"`
	Node        string           `json:"node"`
	Epoch       string           `json:"epoch"`
	Room        string           `json:"room,omitempty"`
	Identity    string           `json:"identity,omitempty"`
	Track       string           `json:"track,omitempty"`
	Participant *wireParticipant `json:"participant,omitempty"`
	TrackInfo   *wireTrack       `json:"track_info,omitempty"`
}

const maxRecordBytes = 128 << 10

// maxMediaAddrs bounds a node record's media addresses.
const maxMediaAddrs = 32

func decodeStrict(data []byte, v any) error {
	if len(data) > maxRecordBytes {
		return fmt.Errorf("%w: %d bytes", ErrInvalidRecord, len(data))
	}
	if err := strictjson.UnmarshalKnown(data, v); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	return nil
}

func fmtEpoch(e uint64) string { return strconv.FormatUint(e, 10) }

func parseEpoch(s string) (uint64, error) {
	e, err := strconv.ParseUint(s, 10, 64)
	if err != nil || strconv.FormatUint(e, 10) != s {
		return 0, fmt.Errorf("%w: epoch %q", ErrInvalidRecord, s)
	}
	return e, nil
}

func fmtTime(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func parseTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func checkFraction(what string, f float64) error {
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e6 {
		return fmt.Errorf("%w: %s %v", ErrInvalidRecord, what, f)
	}
	return nil
}

// MarshalNode encodes a node record.
func MarshalNode(n Node) ([]byte, error) {
	addrs := n.MediaAddrs
	if addrs == nil {
		addrs = []string{}
	}
	return json.Marshal(wireNode{
		ID: string(n.ID), Site: string(n.Site), Federation: string(n.Federation),
		Epoch: fmtEpoch(n.Epoch), SignalURL: n.SignalURL, MediaAddrs: addrs, RelayAddr: n.RelayAddr,
		State: string(n.State),
		Limits: wireLimits{
			MaxParticipants: n.Limits.MaxParticipants, MaxTracks: n.Limits.MaxTracks,
			MaxBitrate: n.Limits.MaxBitrate, MaxCPU: n.Limits.MaxCPU,
		},
		Load: wireLoad{
			CPU: n.Load.CPU, Participants: n.Load.Participants, Tracks: n.Load.Tracks,
			BitrateIn: n.Load.BitrateIn, BitrateOut: n.Load.BitrateOut, RelayBitrate: n.Load.RelayBitrate,
		},
		UpdatedAt: fmtTime(n.UpdatedAt),
	})
}

// ParseNode decodes and checks a node record read from the registry.
func ParseNode(data []byte) (Node, error) {
	var w wireNode
	if err := decodeStrict(data, &w); err != nil {
		return Node{}, err
	}
	n := Node{
		ID: NodeID(w.ID), Site: SiteID(w.Site), Federation: FederationID(w.Federation),
		SignalURL: w.SignalURL, RelayAddr: w.RelayAddr, State: NodeState(w.State),
		Limits: Limits{
			MaxParticipants: w.Limits.MaxParticipants, MaxTracks: w.Limits.MaxTracks,
			MaxBitrate: w.Limits.MaxBitrate, MaxCPU: w.Limits.MaxCPU,
		},
		Load: Load{
			CPU: w.Load.CPU, Participants: w.Load.Participants, Tracks: w.Load.Tracks,
			BitrateIn: w.Load.BitrateIn, BitrateOut: w.Load.BitrateOut, RelayBitrate: w.Load.RelayBitrate,
		},
		UpdatedAt: parseTime(w.UpdatedAt),
	}
	var err error
	if n.Epoch, err = parseEpoch(w.Epoch); err != nil {
		return Node{}, err
	}
	if err := checkNodeID(n.ID); err != nil {
		return Node{}, err
	}
	if n.Site != "" && !validToken(string(n.Site), maxIDLen) {
		return Node{}, fmt.Errorf("%w: site %q", ErrInvalidRecord, n.Site)
	}
	if n.Federation != "" && !validToken(string(n.Federation), maxIDLen) {
		return Node{}, fmt.Errorf("%w: federation %q", ErrInvalidRecord, n.Federation)
	}
	if n.State != NodeServing && n.State != NodeDraining {
		return Node{}, fmt.Errorf("%w: state %q", ErrInvalidRecord, n.State)
	}
	if n.SignalURL != "" && !validSignalURL(n.SignalURL) {
		// Not quoted: it may hold user info.
		return Node{}, fmt.Errorf("%w: signal_url", ErrInvalidRecord)
	}
	if n.RelayAddr != "" {
		if err := checkName("relay_addr", n.RelayAddr); err != nil {
			return Node{}, err
		}
	}
	if w.MediaAddrs == nil || len(w.MediaAddrs) > maxMediaAddrs {
		return Node{}, fmt.Errorf("%w: media_addrs", ErrInvalidRecord)
	}
	for _, a := range w.MediaAddrs {
		if err := checkName("media_addr", a); err != nil {
			return Node{}, err
		}
	}
	if len(w.MediaAddrs) > 0 {
		n.MediaAddrs = w.MediaAddrs
	}
	if err := checkFraction("cpu", n.Load.CPU); err != nil {
		return Node{}, err
	}
	if err := checkFraction("max_cpu", n.Limits.MaxCPU); err != nil {
		return Node{}, err
	}
	return n, nil
}

// validSignalURL accepts what a node may publish as its signalling URL:
// placement hands it to clients (livekit-client appends "/rtc?…" to it) and
// the bridge dials it. So: an absolute ws:// or wss:// URL with a host and a
// valid port, without user info (credentials do not belong in a record
// every node reads and clients get), query or fragment, no spaces or
// control characters, at most maxNameLen bytes.
func validSignalURL(s string) bool {
	if !validName(s, maxNameLen) || strings.ContainsAny(s, " ?#\\") {
		return false
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Opaque != "" || u.User != nil || u.Hostname() == "" {
		return false
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return false
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return false
	}
	return true
}

// MarshalRoomEntry encodes a room-hosting entry.
func MarshalRoomEntry(e RoomEntry) ([]byte, error) {
	return json.Marshal(wireRoom{Room: string(e.Room), Node: string(e.Node), Epoch: fmtEpoch(e.Epoch), Since: fmtTime(e.Since)})
}

// ParseRoomEntry decodes and checks a room-hosting entry.
func ParseRoomEntry(data []byte) (RoomEntry, error) {
	var w wireRoom
	if err := decodeStrict(data, &w); err != nil {
		return RoomEntry{}, err
	}
	return roomFromWire(w)
}

func roomFromWire(w wireRoom) (RoomEntry, error) {
	e := RoomEntry{Room: RoomName(w.Room), Node: NodeID(w.Node), Since: parseTime(w.Since)}
	var err error
	if e.Epoch, err = parseEpoch(w.Epoch); err != nil {
		return RoomEntry{}, err
	}
	if err := checkName("room", w.Room); err != nil {
		return RoomEntry{}, err
	}
	if err := checkNodeID(e.Node); err != nil {
		return RoomEntry{}, err
	}
	return e, nil
}

func participantToWire(p ParticipantEntry) wireParticipant {
	return wireParticipant{
		Room: string(p.Room), Identity: string(p.Identity), SID: p.SID, Node: string(p.Node),
		Epoch: fmtEpoch(p.Epoch), JoinedAt: fmtTime(p.JoinedAt),
	}
}

func participantFromWire(w wireParticipant) (ParticipantEntry, error) {
	p := ParticipantEntry{
		Room: RoomName(w.Room), Identity: ParticipantIdentity(w.Identity), SID: w.SID,
		Node: NodeID(w.Node), JoinedAt: parseTime(w.JoinedAt),
	}
	var err error
	if p.Epoch, err = parseEpoch(w.Epoch); err != nil {
		return ParticipantEntry{}, err
	}
	for what, s := range map[string]string{"room": w.Room, "identity": w.Identity} {
		if err := checkName(what, s); err != nil {
			return ParticipantEntry{}, err
		}
	}
	if w.SID != "" {
		if err := checkName("sid", w.SID); err != nil {
			return ParticipantEntry{}, err
		}
	}
	if err := checkNodeID(p.Node); err != nil {
		return ParticipantEntry{}, err
	}
	return p, nil
}

// MarshalParticipantEntry encodes a participant entry.
func MarshalParticipantEntry(p ParticipantEntry) ([]byte, error) {
	return json.Marshal(participantToWire(p))
}

// ParseParticipantEntry decodes and checks a participant entry.
func ParseParticipantEntry(data []byte) (ParticipantEntry, error) {
	var w wireParticipant
	if err := decodeStrict(data, &w); err != nil {
		return ParticipantEntry{}, err
	}
	return participantFromWire(w)
}

func trackToWire(t TrackEntry) wireTrack {
	return wireTrack{
		Room: string(t.Room), SID: string(t.SID), Participant: string(t.Participant), Node: string(t.Node),
		Epoch: fmtEpoch(t.Epoch), Kind: t.Kind, MimeType: t.MimeType, Source: t.Source, Layers: t.Layers,
	}
}

func trackFromWire(w wireTrack) (TrackEntry, error) {
	t := TrackEntry{
		Room: RoomName(w.Room), SID: TrackID(w.SID), Participant: ParticipantIdentity(w.Participant),
		Node: NodeID(w.Node), Kind: w.Kind, MimeType: w.MimeType, Source: w.Source, Layers: w.Layers,
	}
	var err error
	if t.Epoch, err = parseEpoch(w.Epoch); err != nil {
		return TrackEntry{}, err
	}
	for what, s := range map[string]string{"room": w.Room, "sid": w.SID, "participant": w.Participant} {
		if err := checkName(what, s); err != nil {
			return TrackEntry{}, err
		}
	}
	for what, s := range map[string]string{"kind": w.Kind, "mime_type": w.MimeType, "source": w.Source} {
		if s != "" && !validName(s, maxIDLen) {
			return TrackEntry{}, fmt.Errorf("%w: %s %q", ErrInvalidRecord, what, s)
		}
	}
	if err := checkNodeID(t.Node); err != nil {
		return TrackEntry{}, err
	}
	return t, nil
}

// MarshalTrackEntry encodes a track entry.
func MarshalTrackEntry(t TrackEntry) ([]byte, error) { return json.Marshal(trackToWire(t)) }

// ParseTrackEntry decodes and checks a track entry.
func ParseTrackEntry(data []byte) (TrackEntry, error) {
	var w wireTrack
	if err := decodeStrict(data, &w); err != nil {
		return TrackEntry{}, err
	}
	return trackFromWire(w)
}

// wireEventTypes are the events that travel over the bus; node_updated and
// resync are derived locally.
var wireEventTypes = map[EventType]bool{
	EventNodeUp: true, EventNodeDown: true,
	EventRoomHosted: true, EventRoomReleased: true,
	EventParticipantAdded: true, EventParticipantRemoved: true,
	EventTrackAdded: true, EventTrackRemoved: true,
}

// MarshalEvent encodes an event for the bus.
func MarshalEvent(ev Event) ([]byte, error) {
	w := wireEvent{
		Type: string(ev.Type), Node: string(ev.Node), Epoch: fmtEpoch(ev.Epoch),
		Room: string(ev.Room), Identity: string(ev.Identity), Track: string(ev.Track),
	}
	if ev.Participant != nil {
		p := participantToWire(*ev.Participant)
		w.Participant = &p
	}
	if ev.TrackInfo != nil {
		t := trackToWire(*ev.TrackInfo)
		w.TrackInfo = &t
	}
	return json.Marshal(w)
}

// ParseEvent decodes and checks an event read from the bus.
func ParseEvent(data []byte) (Event, error) {
	var w wireEvent
	if err := decodeStrict(data, &w); err != nil {
		return Event{}, err
	}
	ev := Event{
		Type: EventType(w.Type), Node: NodeID(w.Node), Room: RoomName(w.Room),
		Identity: ParticipantIdentity(w.Identity), Track: TrackID(w.Track),
	}
	if !wireEventTypes[ev.Type] {
		return Event{}, fmt.Errorf("%w: event type %q", ErrInvalidRecord, w.Type)
	}
	var err error
	if ev.Epoch, err = parseEpoch(w.Epoch); err != nil {
		return Event{}, err
	}
	if err := checkNodeID(ev.Node); err != nil {
		return Event{}, err
	}
	needRoom := ev.Type != EventNodeUp && ev.Type != EventNodeDown
	needIdentity := needRoom && ev.Type != EventRoomHosted && ev.Type != EventRoomReleased
	needTrack := ev.Type == EventTrackAdded || ev.Type == EventTrackRemoved
	for _, f := range []struct {
		what string
		v    string
		need bool
	}{{"room", w.Room, needRoom}, {"identity", w.Identity, needIdentity}, {"track", w.Track, needTrack}} {
		if !f.need && f.v != "" {
			return Event{}, fmt.Errorf("%w: %s in %s event", ErrInvalidRecord, f.what, ev.Type)
		}
		if f.need {
			if err := checkName(f.what, f.v); err != nil {
				return Event{}, err
			}
		}
	}
	if w.Participant != nil {
		if ev.Type != EventParticipantAdded {
			return Event{}, fmt.Errorf("%w: participant in %s event", ErrInvalidRecord, ev.Type)
		}
		p, err := participantFromWire(*w.Participant)
		if err != nil {
			return Event{}, err
		}
		ev.Participant = &p
	}
	if w.TrackInfo != nil {
		if ev.Type != EventTrackAdded {
			return Event{}, fmt.Errorf("%w: track_info in %s event", ErrInvalidRecord, ev.Type)
		}
		t, err := trackFromWire(*w.TrackInfo)
		if err != nil {
			return Event{}, err
		}
		ev.TrackInfo = &t
	}
	if err := checkPayload(ev); err != nil {
		return Event{}, err
	}
	return ev, nil
}

// checkPayload refuses an event whose entry is not the one the event names:
// a participant or track of another room, identity, track, node or run.
// Every node builds its events from the entry itself (core, opLocked,
// removalEvent), so only a forged or corrupted event disagrees, and a
// subscriber that trusted the header would file the entry under the wrong
// room.
func checkPayload(ev Event) error {
	if p := ev.Participant; p != nil &&
		(p.Room != ev.Room || p.Identity != ev.Identity || p.Node != ev.Node || p.Epoch != ev.Epoch) {
		return fmt.Errorf("%w: participant entry does not match its %s event", ErrInvalidRecord, ev.Type)
	}
	if t := ev.TrackInfo; t != nil &&
		(t.Room != ev.Room || t.SID != ev.Track || t.Participant != ev.Identity || t.Node != ev.Node || t.Epoch != ev.Epoch) {
		return fmt.Errorf("%w: track entry does not match its %s event", ErrInvalidRecord, ev.Type)
	}
	return nil
}
