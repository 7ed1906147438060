package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The parsers read what other nodes (or anyone with access to Redis) wrote.
// Property: no panic; an accepted record re-marshals to bytes that parse to
// the same record (and marshal to the same bytes again).

func sampleNode() Node {
	return Node{
		ID: "n1", Site: "A", Federation: "bund", Epoch: 1733100000123456789,
		SignalURL: "wss://n1.example/rtc", MediaAddrs: []string{"10.1.0.2", "[fd00::2]:7882"}, RelayAddr: "10.99.0.1:7890",
		State: NodeDraining, Limits: Limits{MaxParticipants: 1000, MaxTracks: 4000, MaxBitrate: 1e9, MaxCPU: 0.85},
		Load:      Load{CPU: 0.42, Participants: 12, Tracks: 30, BitrateIn: 1e6, BitrateOut: 5e6, RelayBitrate: 2e6},
		UpdatedAt: time.UnixMilli(1733100000123).UTC(),
	}
}

func seed(f *testing.F, b []byte, err error) {
	f.Helper()
	require.NoError(f, err)
	f.Add(b)
}

func roundTrip[T any](t *testing.T, data []byte, parse func([]byte) (T, error), marshal func(T) ([]byte, error)) {
	v, err := parse(data)
	if err != nil {
		return
	}
	b1, err := marshal(v)
	require.NoError(t, err)
	v2, err := parse(b1)
	require.NoError(t, err, "re-marshalled %s", b1)
	require.Equal(t, v, v2)
	b2, err := marshal(v2)
	require.NoError(t, err)
	require.Equal(t, b1, b2)
}

func FuzzParseNode(f *testing.F) {
	b, err := MarshalNode(sampleNode())
	seed(f, b, err)
	b, err = MarshalNode(Node{ID: "x", State: NodeServing})
	seed(f, b, err)
	f.Add([]byte(`{"id":"n","site":"","federation":"","epoch":"01","signal_url":"","media_addrs":[],"relay_addr":"","state":"serving","limits":{},"load":{"cpu":1e400},"updated_at":0}`))
	f.Add([]byte(`{"id":"n","epoch":"1","media_addrs":null,"state":"serving"}`))
	f.Add([]byte(`{"id":"n","epoch":"1","signal_url":"wss://u:p@h:99999/?q#f","media_addrs":[],"state":"serving"}`))
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, ParseNode, MarshalNode) })
}

func FuzzParseRoomEntry(f *testing.F) {
	b, err := MarshalRoomEntry(RoomEntry{Room: "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc", Node: "n1", Epoch: 7, Since: time.UnixMilli(5).UTC()})
	seed(f, b, err)
	f.Add([]byte(`{"room":"r","node":"n","epoch":"18446744073709551616","since":0}`))
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, ParseRoomEntry, MarshalRoomEntry) })
}

func FuzzParseParticipantEntry(f *testing.F) {
	b, err := MarshalParticipantEntry(ParticipantEntry{Room: "r", Identity: "@alice:bund.test:DEVICE", SID: "PA_x", Node: "n1", Epoch: 1, JoinedAt: time.UnixMilli(99).UTC()})
	seed(f, b, err)
	f.Add([]byte(`{"room":"r","identity":"\u0000","sid":"","node":"n","epoch":"1","joined_at":0}`))
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, ParseParticipantEntry, MarshalParticipantEntry) })
}

func FuzzParseTrackEntry(f *testing.F) {
	b, err := MarshalTrackEntry(TrackEntry{Room: "r", SID: "TR_v", Participant: "@a:x", Node: "n1", Epoch: 2, Kind: "video", MimeType: "video/VP8", Source: "camera", Layers: 3})
	seed(f, b, err)
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, ParseTrackEntry, MarshalTrackEntry) })
}

func FuzzParseEvent(f *testing.F) {
	p := ParticipantEntry{Room: "r", Identity: "@a:x", SID: "PA", Node: "n1", Epoch: 3}
	tr := TrackEntry{Room: "r", SID: "TR", Participant: "@a:x", Node: "n1", Epoch: 3, Kind: "audio", Layers: 1}
	for _, ev := range []Event{
		{Type: EventNodeUp, Node: "n1", Epoch: 3},
		{Type: EventRoomReleased, Node: "n1", Epoch: 3, Room: "r"},
		{Type: EventParticipantAdded, Node: "n1", Epoch: 3, Room: "r", Identity: "@a:x", Participant: &p},
		{Type: EventTrackAdded, Node: "n1", Epoch: 3, Room: "r", Identity: "@a:x", Track: "TR", TrackInfo: &tr},
		{Type: EventTrackRemoved, Node: "n1", Epoch: 3, Room: "r", Identity: "@a:x", Track: "TR"},
	} {
		b, err := MarshalEvent(ev)
		seed(f, b, err)
	}
	f.Add([]byte(`{"type":"resync","node":"n1","epoch":"1"}`))
	f.Add([]byte(`{"type":"node_up","node":"n1","epoch":"1","room":"r"}`))
	for _, b := range mismatchedEvents(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, ParseEvent, MarshalEvent)
		// An accepted event's entry is the one it names.
		if ev, err := ParseEvent(data); err == nil {
			if p := ev.Participant; p != nil {
				require.Equal(t, []any{ev.Room, ev.Identity, ev.Node, ev.Epoch}, []any{p.Room, p.Identity, p.Node, p.Epoch})
			}
			if tr := ev.TrackInfo; tr != nil {
				require.Equal(t, []any{ev.Room, ev.Identity, ev.Track, ev.Node, ev.Epoch}, []any{tr.Room, tr.Participant, tr.SID, tr.Node, tr.Epoch})
			}
		}
	})
}

// mismatchedEvents are added events whose entry is not the one they name.
func mismatchedEvents(tb testing.TB) map[string][]byte {
	tb.Helper()
	p := ParticipantEntry{Room: "r", Identity: "@a:x", SID: "PA", Node: "n1", Epoch: 3}
	tr := TrackEntry{Room: "r", SID: "TR", Participant: "@a:x", Node: "n1", Epoch: 3, Kind: "audio", Layers: 1}
	part := func(edit func(*ParticipantEntry)) Event {
		q := p
		edit(&q)
		return Event{Type: EventParticipantAdded, Node: "n1", Epoch: 3, Room: "r", Identity: "@a:x", Participant: &q}
	}
	track := func(edit func(*TrackEntry)) Event {
		q := tr
		edit(&q)
		return Event{Type: EventTrackAdded, Node: "n1", Epoch: 3, Room: "r", Identity: "@a:x", Track: "TR", TrackInfo: &q}
	}
	out := map[string][]byte{}
	for name, ev := range map[string]Event{
		"participant of another room":  part(func(q *ParticipantEntry) { q.Room = "s" }),
		"another participant":          part(func(q *ParticipantEntry) { q.Identity = "@b:x" }),
		"participant on another node":  part(func(q *ParticipantEntry) { q.Node = "n2" }),
		"participant of another run":   part(func(q *ParticipantEntry) { q.Epoch = 2 }),
		"track of another room":        track(func(q *TrackEntry) { q.Room = "s" }),
		"track of another participant": track(func(q *TrackEntry) { q.Participant = "@b:x" }),
		"another track":                track(func(q *TrackEntry) { q.SID = "TR2" }),
		"track on another node":        track(func(q *TrackEntry) { q.Node = "n2" }),
		"track of another run":         track(func(q *TrackEntry) { q.Epoch = 4 }),
	} {
		b, err := MarshalEvent(ev)
		require.NoError(tb, err)
		out[name] = b
	}
	return out
}

func TestParseEventRefusesAnotherEntry(t *testing.T) {
	for name, b := range mismatchedEvents(t) {
		t.Run(name, func(t *testing.T) {
			_, err := ParseEvent(b)
			require.ErrorIs(t, err, ErrInvalidRecord)
		})
	}
}

func TestParseRejects(t *testing.T) {
	good, err := MarshalNode(sampleNode())
	require.NoError(t, err)
	n, err := ParseNode(good)
	require.NoError(t, err)
	require.Equal(t, sampleNode(), n)
	for name, data := range map[string]string{
		"unknown field":   `{"id":"n","epoch":"1","media_addrs":[],"state":"serving","extra":1}`,
		"bad state":       `{"id":"n","epoch":"1","media_addrs":[],"state":"gone"}`,
		"bad id":          `{"id":"n:1","epoch":"1","media_addrs":[],"state":"serving"}`,
		"epoch not canon": `{"id":"n","epoch":"+1","media_addrs":[],"state":"serving"}`,
		"negative count":  `{"id":"n","epoch":"1","media_addrs":[],"state":"serving","load":{"participants":-1}}`,
		"negative cpu":    `{"id":"n","epoch":"1","media_addrs":[],"state":"serving","load":{"cpu":-0.5}}`,
		"trailing data":   `{"id":"n","epoch":"1","media_addrs":[],"state":"serving"} {}`,
		"no media_addrs":  `{"id":"n","epoch":"1","state":"serving"}`,
		"re-spelled":      `{"ID":"n","epoch":"1","media_addrs":[],"state":"serving"}`,
		"two spellings":   `{"id":"n","epoch":"1","media_addrs":[],"state":"serving","State":"draining"}`,
		"twice":           `{"id":"n","epoch":"1","media_addrs":[],"state":"serving","state":"draining"}`,
	} {
		_, err := ParseNode([]byte(data))
		require.ErrorIs(t, err, ErrInvalidRecord, name)
	}
	_, err = ParseEvent([]byte(`{"type":"participant_removed","node":"n","epoch":"1","room":"r"}`))
	require.ErrorIs(t, err, ErrInvalidRecord, "participant events need an identity")
	_, err = ParseEvent([]byte(`{"type":"resync","node":"n","epoch":"1"}`))
	require.ErrorIs(t, err, ErrInvalidRecord, "resync is local only")
}

func FuzzParseMessage(f *testing.F) {
	b, err := MarshalMessage(Message{From: "n1", FromEpoch: 9, Topic: "bridge.offer", Payload: []byte(`{"x":1}`)})
	seed(f, b, err)
	f.Add([]byte(`{"from":"n1","epoch":"1","topic":"t","payload":"!!"}`))
	f.Add([]byte(`{"from":"n1","epoch":"1","topic":"t","payload":null}`))
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, ParseMessage, MarshalMessage) })
}

// A peer's signal_url goes to clients and to the bridge's dialer: a record
// with anything but a plain ws(s) URL is refused like any malformed one,
// and configuration accepts exactly what the peers accept.
func TestSignalURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"wss://n1.example/rtc", true},
		{"ws://10.1.0.2:7880", true},
		{"ws://[fd00::2]:7880/sfu", true},
		{"WSS://n1.example", true},
		{"https://n1.example", false},
		{"javascript:alert(1)", false},
		{"wss:n1.example", false},
		{"wss:///rtc", false},
		{"//n1.example", false},
		{"wss://user:secret@n1.example", false},
		{"wss://@n1.example", false},
		{"wss://n1.example/rtc?token=x", false},
		{"wss://n1.example/rtc#x", false},
		{"wss://n1.example:0", false},
		{"wss://n1.example:65536", false},
		{"wss://n1.example:", false},
		{"wss://n1.example/a b", false},
		{"wss://n1.example\\@evil.example", false},
		{"wss://n1.example/\u0007", false},
		{"wss://n1.example/" + strings.Repeat("p", 500), false},
	} {
		t.Run(tc.url, func(t *testing.T) {
			n := sampleNode()
			n.SignalURL = tc.url
			b, err := MarshalNode(n)
			require.NoError(t, err)
			_, err = ParseNode(b)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, ErrInvalidRecord)
				require.NotContains(t, err.Error(), "secret")
			}
			cfg := DefaultConfig()
			cfg.Site = "A"
			cfg.SignalURL = tc.url
			require.Equal(t, tc.ok, cfg.Validate() == nil, "config and records disagree")
		})
	}
}

// open reads an envelope anyone with access to Redis may have written.
// Property: no panic; an accepted envelope is signed by a valid node ID with
// the key, for the channel, and its id is refused when it comes again.
func FuzzOpenSigned(f *testing.F) {
	key := []byte(strings.Repeat("k", MinMessageKeyLen))
	at := time.UnixMilli(1733100000123)
	clock := func() time.Time { return at }
	body, err := MarshalMessage(Message{From: "n1", FromEpoch: 7, Topic: "t", Payload: []byte("x")})
	require.NoError(f, err)
	s := newSigner(key, false, "n1", 7, clock, nopLog())
	b, err := s.sealAs("c", body, "n1", 7, at)
	seed(f, b, err)
	f.Add(body)
	f.Add([]byte(`{"body":"","node":"n1","epoch":"7","at":0,"id":"","mac":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newSigner(key, false, "n1", 7, clock, nopLog())
		got, from, err := s.open(KindMessage, "c", data)
		if err != nil {
			return
		}
		require.True(t, from.signed)
		require.NoError(t, checkNodeID(from.node))
		var w wireSigned
		require.NoError(t, decodeStrict(data, &w))
		require.Equal(t, w.Body, got)
		_, _, err = s.open(KindMessage, "c", data)
		require.ErrorIs(t, err, errRefused, "accepted twice")
	})
}
