package cluster

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The focus' legacy endpoint names a participant "<user ID>:<device ID>":
// up to 255 + 1 + 128 bytes. A user with a long ID (anyone can register one
// on their own homeserver) must not be left out of the directory: the
// catalog counts a booking's participants from it, and the cluster-wide
// RoomService finds participants through it.
func TestDirectoryHoldsLongestFocusIdentity(t *testing.T) {
	server := "evil.example"
	user := "@" + strings.Repeat("a", 255-len("@:"+server)) + ":" + server
	require.Len(t, user, 255)
	identity := ParticipantIdentity(user + ":" + strings.Repeat("D", 128))

	e := newTestEmbedded(t)
	e.AddParticipant(ParticipantEntry{Room: "r", Identity: identity, SID: "PA_1"})
	e.AddTrack(TrackEntry{Room: "r", SID: "TR_1", Participant: identity, Kind: "audio"})
	parts, err := e.Participants(context.Background(), "r")
	require.NoError(t, err)
	require.Len(t, parts, 1)
	require.Equal(t, identity, parts[0].Identity)
	tracks, err := e.Tracks(context.Background(), "r")
	require.NoError(t, err)
	require.Len(t, tracks, 1)

	// And other nodes read it back from Redis and the bus.
	b, err := MarshalParticipantEntry(parts[0])
	require.NoError(t, err)
	p, err := ParseParticipantEntry(b)
	require.NoError(t, err)
	require.Equal(t, identity, p.Identity)
	b, err = MarshalTrackEntry(tracks[0])
	require.NoError(t, err)
	_, err = ParseTrackEntry(b)
	require.NoError(t, err)
	b, err = MarshalEvent(Event{Type: EventParticipantAdded, Node: p.Node, Epoch: p.Epoch, Room: "r", Identity: identity, Participant: &p})
	require.NoError(t, err)
	ev, err := ParseEvent(b)
	require.NoError(t, err)
	require.Equal(t, identity, ev.Identity)
}
