package bridge

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
)

func TestParseMessage(t *testing.T) {
	info := &livekit.ParticipantInfo{Sid: "PA_x", Identity: "alice", Attributes: map[string]string{"a": "1", "b": "2"},
		Tracks: []*livekit.TrackInfo{{Sid: "TR_1", Type: livekit.TrackType_AUDIO}}}
	good := []*message{
		{Type: msgParticipant, info: info, Codecs: []trackCodec{{SID: "TR_1", MimeType: "audio/opus", ClockRate: 48000, Channels: 2, AudioLevel: 1}}},
		{Type: msgParticipant, info: info, Perm: &[]permGrant{{Identity: "bob", All: true}, {Identity: "carol", Tracks: []string{"TR_1"}}}},
		{Type: msgParticipant, info: info, Perm: &[]permGrant{}}, // nobody
		{Type: msgWant, SID: "TR_1", Mask: 5},
		{Type: msgStream, SID: "TR_1", Layer: 2, SSRC: 7, Kind: "video"},
		{Type: msgStreamReady, SID: "TR_1", Layer: 1},
		{Type: msgData, Label: "_lossy", Data: []byte{1, 2}, Dests: []string{"bob"}},
		{Type: msgRemove, Identity: "bob", Reason: int32(livekit.DisconnectReason_PARTICIPANT_REMOVED)},
		{Type: msgMute, Identity: "bob", SID: "TR_1"},
		{Type: msgBye},
		{Type: msgSRTP, Data: bytes.Repeat([]byte{7}, 32), Suite: 0xc02b, Profile: 7},
		{Type: msgRoomMeta, Data: []byte("md")},
		{Type: msgUpdate, info: &livekit.ParticipantInfo{Identity: "bob", Metadata: "md", Permission: &livekit.ParticipantPermission{CanPublish: true}}},
		{Type: msgData, Label: labelDataTrack, Identity: "alice", Data: bytes.Repeat([]byte{1}, 12)},
		{Type: msgDataWant, SID: "DTR_1", Mask: 1},
		{Type: msgDataWant, SID: "DTR_1"},
		{Type: msgParticipant, info: &livekit.ParticipantInfo{Sid: "PA_x", Identity: "alice",
			DataTracks: []*livekit.DataTrackInfo{{Sid: "DTR_1", PubHandle: 7, Name: "geo"}, {Sid: "DTR_2", PubHandle: 65535, Name: "b"}}}},
	}
	for _, m := range good {
		t.Run(m.Type, func(t *testing.T) {
			b, err := m.marshal()
			require.NoError(t, err)
			got, err := parseMessage(b)
			require.NoError(t, err)
			b2, err := got.marshal()
			require.NoError(t, err)
			require.Equal(t, string(b), string(b2))
		})
	}
	for name, in := range map[string]string{
		"unknown type":     `{"t":"x"}`,
		"unknown field":    `{"t":"want","sid":"s","zzz":1}`,
		"trailing":         `{"t":"want","sid":"s"}{}`,
		"layer range":      `{"t":"stream_ready","sid":"s","layer":3}`,
		"mask range":       `{"t":"want","sid":"s","mask":8}`,
		"stream no ssrc":   `{"t":"stream","sid":"s","kind":"video"}`,
		"stream bad kind":  `{"t":"stream","sid":"s","ssrc":1,"kind":"data"}`,
		"bad label":        `{"t":"data","label":"x"}`,
		"no identity":      `{"t":"remove"}`,
		"participant junk": `{"t":"participant","p":"AAAA"}`,
		"participant none": `{"t":"participant"}`,
		"not json":         `]`,
		"srtp short":       `{"t":"srtp","data":"AAAA","suite":1,"profile":1}`,
		"re-spelled field": `{"T":"remove","identity":"x"}`,
		"two spellings":    `{"t":"remove","identity":"x","IDENTITY":"y"}`,
		"same field twice": `{"t":"remove","identity":"x","identity":"y"}`,
		"perm no id":       `{"t":"participant","p":"CgRQQV94EgVhbGljZQ==","perm":[{"all":true}]}`,
		"perm all+tracks":  `{"t":"participant","p":"CgRQQV94EgVhbGljZQ==","perm":[{"id":"b","all":true,"tracks":["T"]}]}`,
		"perm empty track": `{"t":"participant","p":"CgRQQV94EgVhbGljZQ==","perm":[{"id":"b","tracks":[""]}]}`,
		"perm unknown key": `{"t":"participant","p":"CgRQQV94EgVhbGljZQ==","perm":[{"id":"b","sid":"PA_b"}]}`,
		"perm elsewhere":   `{"t":"want","sid":"s","perm":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseMessage([]byte(in))
			require.ErrorIs(t, err, errBadMessage)
		})
	}
	dataTracks := func(n int, mut func(*livekit.DataTrackInfo)) *message {
		info := &livekit.ParticipantInfo{Sid: "PA_x", Identity: "alice"}
		for i := range n {
			dt := &livekit.DataTrackInfo{Sid: fmt.Sprintf("DTR_%d", i), PubHandle: uint32(i + 1), Name: "n"}
			mut(dt)
			info.DataTracks = append(info.DataTracks, dt)
		}
		return &message{Type: msgParticipant, info: info}
	}
	keep := func(*livekit.DataTrackInfo) {}
	for name, m := range map[string]*message{
		"data track packet without publisher": {Type: msgData, Label: labelDataTrack, Data: bytes.Repeat([]byte{1}, 12)},
		"data track packet with destinations": {Type: msgData, Label: labelDataTrack, Identity: "alice", Data: bytes.Repeat([]byte{1}, 12), Dests: []string{"bob"}},
		"data track packet without header":    {Type: msgData, Label: labelDataTrack, Identity: "alice", Data: []byte{1}},
		"too many data tracks":                dataTracks(65, keep),
		"data track handle 0":                 dataTracks(1, func(d *livekit.DataTrackInfo) { d.PubHandle = 0 }),
		"data track handle over 16 bits":      dataTracks(1, func(d *livekit.DataTrackInfo) { d.PubHandle = 65536 }),
		"data track without sid":              dataTracks(1, func(d *livekit.DataTrackInfo) { d.Sid = "" }),
		"data want without sid":               {Type: msgDataWant, Mask: 1},
		"data want mask 2":                    {Type: msgDataWant, SID: "DTR_1", Mask: 2},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := m.marshal()
			require.NoError(t, err)
			_, err = parseMessage(b)
			require.ErrorIs(t, err, errBadMessage)
		})
	}
	b, err := dataTracks(64, keep).marshal()
	require.NoError(t, err)
	_, err = parseMessage(b)
	require.NoError(t, err, "64 data tracks, sfu's limit, cross")
}

// FuzzParseMessage: no panic; an accepted message re-marshals to a
// message that parses to the same canonical encoding.
func FuzzParseMessage(f *testing.F) {
	info := &livekit.ParticipantInfo{Sid: "PA_x", Identity: "alice", Metadata: "m", Tracks: []*livekit.TrackInfo{{Sid: "TR_1"}}}
	for _, m := range []*message{
		{Type: msgParticipant, info: info, Codecs: []trackCodec{{SID: "TR_1", MimeType: "video/VP8", ClockRate: 90000}}},
		{Type: msgWant, SID: "TR_1", Mask: 3},
		{Type: msgStream, SID: "TR_1", SSRC: 99, Kind: "audio"},
		{Type: msgData, Label: "_reliable", Data: []byte("x")},
		{Type: msgData, Label: labelDataTrack, Identity: "alice", Data: bytes.Repeat([]byte{9}, 14)},
		{Type: msgDataWant, SID: "DTR_1", Mask: 1},
		{Type: msgRemove, Identity: "bob"},
		{Type: msgParticipant, info: info, Perm: &[]permGrant{{Identity: "bob", Tracks: []string{"TR_1"}}}},
	} {
		b, err := m.marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"t":"participant","p":""}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := parseMessage(in)
		if err != nil {
			return
		}
		b, err := m.marshal()
		if err != nil {
			t.Fatalf("accepted message does not marshal: %v", err)
		}
		m2, err := parseMessage(b)
		if err != nil {
			t.Fatalf("re-marshalled message rejected: %v\n%s", err, b)
		}
		b2, err := m2.marshal()
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("not canonical:\n%s\n%s", b, b2)
		}
	})
}

// TestFitPerm: a permission too large for the control channel crosses as
// "nobody" (fail closed), one that fits crosses unchanged; the limit is
// what the peer accepts.
func TestFitPerm(t *testing.T) {
	info := &livekit.ParticipantInfo{Sid: "PA_x", Identity: "alice"}
	small := &message{Type: msgParticipant, info: info, Perm: &[]permGrant{{Identity: "bob", All: true}}}
	require.False(t, fitPerm(small, maxControlMessage))
	require.Equal(t, []permGrant{{Identity: "bob", All: true}}, *small.Perm)

	var many []permGrant
	for i := 0; i < maxPermGrants; i++ {
		many = append(many, permGrant{Identity: fmt.Sprintf("%0250d", i), Tracks: []string{"TR_1"}})
	}
	big := &message{Type: msgParticipant, info: info, Perm: &many}
	b, err := big.marshal()
	require.NoError(t, err)
	require.Greater(t, len(b), maxControlMessage)
	require.True(t, fitPerm(big, maxControlMessage))
	require.NotNil(t, big.Perm)
	require.Empty(t, *big.Perm)
	b, err = big.marshal()
	require.NoError(t, err)
	m, err := parseMessage(b)
	require.NoError(t, err)
	require.NotNil(t, permFromWire(m.Perm), "nobody, not everyone")
	require.Empty(t, permFromWire(m.Perm).GetTrackPermissions())

	mid := &message{Type: msgParticipant, info: info, Perm: &[]permGrant{}}
	for i := 0; i < 400; i++ {
		*mid.Perm = append(*mid.Perm, permGrant{Identity: fmt.Sprintf("%0180d", i), All: true})
	}
	require.False(t, fitPerm(mid, maxControlMessage))
	require.True(t, fitPerm(mid, 65535), "a peer that accepts 64 KiB gets nobody")
}
