package sfu

import (
	"fmt"
	"testing"

	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
)

// TestSubPolicy: resolution and bounds of a subscription permission.
func TestSubPolicy(t *testing.T) {
	bySid := func(sid string) string { return map[string]string{"PA_bob": "bob"}[sid] }

	sp, ignored := newSubPolicy(nil, bySid, nil)
	require.Nil(t, sp)
	require.Zero(t, ignored)
	require.True(t, sp.allows("anyone", "TR_1"))
	sp, _ = newSubPolicy(&livekit.SubscriptionPermission{AllParticipants: true, TrackPermissions: []*livekit.TrackPermission{{ParticipantIdentity: "x"}}}, bySid, nil)
	require.Nil(t, sp, "all_participants takes precedence")

	sp, ignored = newSubPolicy(&livekit.SubscriptionPermission{TrackPermissions: []*livekit.TrackPermission{
		{ParticipantSid: "PA_bob", TrackSids: []string{"TR_1"}},
		{ParticipantSid: "PA_gone", AllTracks: true}, // names nobody in the room
		{AllTracks: true}, // names nobody at all
		{ParticipantIdentity: "carol", ParticipantSid: "PA_bob", AllTracks: true}, // the identity counts
	}}, bySid, nil)
	require.Equal(t, 2, ignored)
	require.True(t, sp.allows("bob", "TR_1"))
	require.False(t, sp.allows("bob", "TR_2"))
	require.True(t, sp.allows("carol", "TR_2"))
	require.False(t, sp.allows("", "TR_1"))
	require.False(t, sp.allows("dave", "TR_1"))
	require.Equal(t, []*livekit.TrackPermission{
		{ParticipantIdentity: "bob", TrackSids: []string{"TR_1"}},
		{ParticipantIdentity: "carol", AllTracks: true},
	}, sp.toProto().GetTrackPermissions())

	// Nobody: an empty list denies all, and stays distinct from "everyone".
	sp, _ = newSubPolicy(&livekit.SubscriptionPermission{}, bySid, nil)
	require.NotNil(t, sp)
	require.False(t, sp.allows("bob", "TR_1"))
	require.NotNil(t, sp.toProto())

	// Oversized lists are cut; what is cut grants nothing.
	var tps []*livekit.TrackPermission
	for i := 0; i < maxPermissionEntries+10; i++ {
		tps = append(tps, &livekit.TrackPermission{ParticipantIdentity: fmt.Sprintf("p%d", i), AllTracks: true})
	}
	sids := make([]string, maxSubscriptionSids+1)
	for i := range sids {
		sids[i] = fmt.Sprintf("TR_%d", i)
	}
	tps[0] = &livekit.TrackPermission{ParticipantIdentity: "p0", TrackSids: sids}
	sp, ignored = newSubPolicy(&livekit.SubscriptionPermission{TrackPermissions: tps}, bySid, nil)
	require.Equal(t, 11, ignored)
	require.True(t, sp.allows(fmt.Sprintf("p%d", maxPermissionEntries-1), "TR_x"))
	require.False(t, sp.allows(fmt.Sprintf("p%d", maxPermissionEntries), "TR_x"))
	require.True(t, sp.allows("p0", sids[maxSubscriptionSids-1]))
	require.False(t, sp.allows("p0", sids[maxSubscriptionSids]))

	// A local publisher's permission keeps only its own track sids.
	own := func(sid string) bool { return sid == "TR_mine" }
	sp, _ = newSubPolicy(&livekit.SubscriptionPermission{TrackPermissions: []*livekit.TrackPermission{
		{ParticipantIdentity: "bob", TrackSids: append([]string{"TR_mine"}, sids[:100]...)}}}, bySid, own)
	require.True(t, sp.allows("bob", "TR_mine"))
	require.False(t, sp.allows("bob", sids[0]))
	require.Len(t, sp.grants["bob"].tracks, 1, "sids of other tracks are not kept")
}
