package cluster

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSnapshotEmbedded(t *testing.T) {
	e := newTestEmbedded(t)
	e.AddParticipant(ParticipantEntry{Room: "r1", Identity: "a"})
	e.AddParticipant(ParticipantEntry{Room: "r1", Identity: "b"})
	e.AddTrack(TrackEntry{Room: "r1", SID: "T", Participant: "a"})
	e.HostRoom("r2")
	st, err := Snapshot(context.Background(), e)
	require.NoError(t, err)
	require.Equal(t, NodeID("solo"), st.Self)
	require.False(t, st.Partial)
	require.Len(t, st.Sites, 1)
	require.Equal(t, SiteID("default"), st.Sites[0].Site)
	require.Equal(t, []RoomStatus{
		{Room: "r1", Nodes: []RoomNodeStatus{{Node: "solo", Participants: 2, Tracks: 1}}},
		{Room: "r2", Nodes: []RoomNodeStatus{{Node: "solo"}}},
	}, st.Rooms)
}

func TestSnapshotRedis(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	a := startNode(t, testRedisConfig(t, srv.addr, "a", "S1"))
	b := startNode(t, testRedisConfig(t, srv.addr, "b", "S2"))
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})
	b.AddParticipant(ParticipantEntry{Room: "r", Identity: "bob"})
	b.AddTrack(TrackEntry{Room: "r", SID: "T", Participant: "bob"})
	want := []RoomStatus{{Room: "r", Nodes: []RoomNodeStatus{{Node: "a", Participants: 1}, {Node: "b", Participants: 1, Tracks: 1}}}}
	require.Eventually(t, func() bool {
		st, err := Snapshot(ctx, a)
		return err == nil && len(st.Sites) == 2 && len(st.Rooms) == 1 && sameRooms(st.Rooms, want)
	}, waitFor, tick)

	srv.kill(9)
	require.Eventually(t, func() bool { return !a.Connected() }, waitFor, tick)
	st, err := Snapshot(ctx, a)
	require.NoError(t, err)
	require.True(t, st.Partial)
	require.Equal(t, []RoomStatus{{Room: "r", Nodes: []RoomNodeStatus{{Node: "a", Participants: 1}}}}, st.Rooms)
}

// sameRooms compares ignoring the order of nodes within a room.
func sameRooms(got, want []RoomStatus) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].Room != want[i].Room || len(got[i].Nodes) != len(want[i].Nodes) {
			return false
		}
		m := map[NodeID]RoomNodeStatus{}
		for _, n := range got[i].Nodes {
			m[n.Node] = n
		}
		for _, n := range want[i].Nodes {
			if m[n.Node] != n {
				return false
			}
		}
	}
	return true
}
