package sfu_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/internal/dtclient"
	"github.com/gxfs-conf/gxconf/sfu"
)

// joinDT joins room as identity with one peer connection (livekit-client's
// join request) and a _data_track channel.
func joinDT(t *testing.T, ts *testServer, room, identity string, mut func(*auth.VideoGrant), autoData bool) *dtclient.Client {
	t.Helper()
	return dtclient.Join(t, ts.url, identity, ts.token(t, room, identity, mut), autoData)
}

func metricWith(t *testing.T, ts *testServer, name, label, value string) float64 {
	t.Helper()
	mfs, err := ts.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestDataTracks: a data track is published with livekit-server's checks,
// shows in its publisher's info, and its packets reach exactly the
// participants subscribed to it (on request, or all with
// auto_subscribe_data_track), each copy carrying the subscriber's handle
// and otherwise unchanged; the publisher's subscription permission, an
// unsubscription, an unpublication and the publisher's leave end
// subscriptions.
func TestDataTracks(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := joinDT(t, ts, "dt", "alice", nil, false)
	bob := joinDT(t, ts, "dt", "bob", nil, false)
	carol := joinDT(t, ts, "dt", "carol", nil, true)
	dave := joinDT(t, ts, "dt", "dave", nil, false)                            // never subscribes
	erin := dtclient.JoinV0(t, ts.url, "erin", ts.token(t, "dt", "erin", nil)) // two peer connections, auto_subscribe_data_track=1 on /rtc
	viewer := joinDT(t, ts, "dt", "viewer", func(g *auth.VideoGrant) { g.SetCanPublishData(false) }, false)

	// Refused, as livekit-server refuses them.
	viewer.Publish(1, "x")
	require.EqualValues(t, 1, viewer.AwaitRefusal(livekit.RequestResponse_NOT_ALLOWED).GetPublishDataTrack().GetPubHandle())
	alice.Publish(0, "x")
	alice.AwaitRefusal(livekit.RequestResponse_INVALID_HANDLE)
	alice.Publish(70000, "x")
	alice.AwaitRefusal(livekit.RequestResponse_INVALID_HANDLE)
	alice.Publish(1, "")
	alice.AwaitRefusal(livekit.RequestResponse_INVALID_NAME)
	alice.Publish(1, strings.Repeat("n", 257))
	alice.AwaitRefusal(livekit.RequestResponse_INVALID_NAME)
	alice.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_PublishDataTrackRequest{PublishDataTrackRequest: &livekit.PublishDataTrackRequest{
		PubHandle: 1, Name: "x", FrameEncoding: &livekit.DataTrackFrameEncoding{Value: &livekit.DataTrackFrameEncoding_Custom{Custom: strings.Repeat("e", 33)}}}}})
	alice.AwaitRefusal(livekit.RequestResponse_INVALID_REQUEST)

	alice.Publish(7, "geo")
	info := alice.Await("publish_data_track_response", func(res *livekit.SignalResponse) bool { return res.GetPublishDataTrackResponse() != nil }).GetPublishDataTrackResponse().GetInfo()
	sid := info.GetSid()
	require.True(t, strings.HasPrefix(sid, "DTR_"), sid)
	require.EqualValues(t, 7, info.GetPubHandle())
	require.Equal(t, "geo", info.GetName())
	alice.Publish(7, "other")
	alice.AwaitRefusal(livekit.RequestResponse_DUPLICATE_HANDLE)
	alice.Publish(8, "geo")
	alice.AwaitRefusal(livekit.RequestResponse_DUPLICATE_NAME)
	require.EqualValues(t, 1, ts.metric(t, "gxconf_sfu_published_data_tracks"))

	aliceInfo := func(c *dtclient.Client, withTrack bool) {
		t.Helper()
		c.Await("alice's info", func(res *livekit.SignalResponse) bool {
			for _, p := range res.GetUpdate().GetParticipants() {
				if p.GetIdentity() == "alice" && (len(p.GetDataTracks()) == 1 && p.GetDataTracks()[0].GetSid() == sid) == withTrack {
					return true
				}
			}
			return false
		})
	}
	aliceInfo(bob, true)
	carolHandle := carol.AwaitHandles(sid, true) // auto_subscribe_data_track
	erinHandle := erin.AwaitHandles(sid, true)
	bob.Subscribe(sid, true)
	bobHandle := bob.AwaitHandles(sid, true)
	dave.Subscribe("DTR_nothing", true) // an unknown track: nothing

	const n = 5
	for i := range n {
		require.NoError(t, alice.DC.Send(dtclient.Packet(7, uint16(i), "frame-"+string(rune('a'+i)))))
	}
	for _, c := range []struct {
		c      *dtclient.Client
		handle uint16
	}{{bob, bobHandle}, {carol, carolHandle}, {erin, erinHandle}} {
		for i := range n {
			got := c.c.AwaitPacket()
			want := dtclient.Packet(c.handle, uint16(i), "frame-"+string(rune('a'+i)))
			require.Equal(t, want, got, "%s's copy of packet %d: its handle, the rest unchanged", c.c.Identity, i)
		}
	}
	require.NoError(t, alice.DC.Send(dtclient.Packet(9, 1, "no such handle")))
	require.NoError(t, alice.DC.Send([]byte{1, 2, 3}))
	require.Eventually(t, func() bool {
		return metricWith(t, ts, "gxconf_sfu_data_track_packets_total", "outcome", "unknown_handle") == 1 &&
			metricWith(t, ts, "gxconf_sfu_data_track_packets_total", "outcome", "malformed") == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 3*n, metricWith(t, ts, "gxconf_sfu_data_track_packets_total", "outcome", "sent"), "dave, who did not subscribe, got copies")
	require.Empty(t, dave.Pkts)

	// alice lets only carol subscribe: bob and erin are told and lose the track.
	alice.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_SubscriptionPermission{SubscriptionPermission: &livekit.SubscriptionPermission{
		TrackPermissions: []*livekit.TrackPermission{{ParticipantIdentity: "carol", AllTracks: true}}}}})
	bob.Await("permission denied", func(res *livekit.SignalResponse) bool {
		u := res.GetSubscriptionPermissionUpdate()
		return u.GetTrackSid() == sid && u.GetParticipantSid() == alice.Sid && !u.GetAllowed()
	})
	bob.AwaitHandles(sid, false)
	erin.AwaitHandles(sid, false)
	require.NoError(t, alice.DC.Send(dtclient.Packet(7, 10, "for carol")))
	require.Equal(t, dtclient.Packet(carolHandle, 10, "for carol"), carol.AwaitPacket())
	require.EqualValues(t, 3*n+1, metricWith(t, ts, "gxconf_sfu_data_track_packets_total", "outcome", "sent"), "bob or erin got a copy after the revocation")
	// A grant gives it back (his wish was kept).
	alice.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_SubscriptionPermission{SubscriptionPermission: &livekit.SubscriptionPermission{AllParticipants: true}}})
	bob.Await("permission granted", func(res *livekit.SignalResponse) bool {
		u := res.GetSubscriptionPermissionUpdate()
		return u.GetTrackSid() == sid && u.GetAllowed()
	})
	bobHandle = bob.AwaitHandles(sid, true)
	erinHandle = erin.AwaitHandles(sid, true)
	require.NoError(t, alice.DC.Send(dtclient.Packet(7, 11, "for all")))
	require.Equal(t, dtclient.Packet(bobHandle, 11, "for all"), bob.AwaitPacket())
	require.Equal(t, dtclient.Packet(carolHandle, 11, "for all"), carol.AwaitPacket())
	require.Equal(t, dtclient.Packet(erinHandle, 11, "for all"), erin.AwaitPacket())

	// bob unsubscribes; alice unpublishes, and carol's subscription ends.
	bob.Subscribe(sid, false)
	bob.AwaitHandles(sid, false)
	alice.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_UnpublishDataTrackRequest{UnpublishDataTrackRequest: &livekit.UnpublishDataTrackRequest{PubHandle: 7}}})
	require.Equal(t, sid, alice.Await("unpublish_data_track_response", func(res *livekit.SignalResponse) bool {
		return res.GetUnpublishDataTrackResponse() != nil
	}).GetUnpublishDataTrackResponse().GetInfo().GetSid())
	carol.AwaitHandles(sid, false)
	aliceInfo(bob, false)
	alice.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_UnpublishDataTrackRequest{UnpublishDataTrackRequest: &livekit.UnpublishDataTrackRequest{PubHandle: 7}}})
	alice.AwaitRefusal(livekit.RequestResponse_NOT_FOUND)

	// A publisher that leaves takes its data tracks with it.
	alice.Publish(3, "geo2")
	sid2 := alice.Await("publish_data_track_response", func(res *livekit.SignalResponse) bool { return res.GetPublishDataTrackResponse() != nil }).GetPublishDataTrackResponse().GetInfo().GetSid()
	carol.AwaitHandles(sid2, true)
	alice.Send(&livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})
	carol.AwaitHandles(sid2, false)
	require.Zero(t, ts.metric(t, "gxconf_sfu_published_data_tracks"))
}

// TestRelayedDataTracks: sfu's side of the relay. A relayed participant's
// data tracks (RelayRoom.AddRemoteParticipant) are published under the
// origin's sids — except one naming a sid a local participant's track
// has, which is ignored —; the first local subscriber and the last one's
// leaving are reported (RemoteHooks.OnDataWant); DeliverDataTrack forwards
// its packets, and only for a relayed participant.
func TestRelayedDataTracks(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := joinDT(t, ts, "rdt", "alice", nil, false)
	bob := joinDT(t, ts, "rdt", "bob", nil, false)
	aliceSid := alice.Published(1, "geo").GetSid()

	wants := make(chan string, 8)
	rr, err := ts.srv.RelayRoom("rdt", false)
	require.NoError(t, err)
	_, err = rr.AddRemoteParticipant(&livekit.ParticipantInfo{Sid: "PA_remote", Identity: "remote", State: livekit.ParticipantInfo_ACTIVE,
		DataTracks: []*livekit.DataTrackInfo{{Sid: aliceSid, PubHandle: 1, Name: "stolen"}, {Sid: "DTR_remote", PubHandle: 2, Name: "cursor"}}},
		sfu.RemoteHooks{OnDataWant: func(sid string, wanted bool) { wants <- fmt.Sprintf("%s %v", sid, wanted) }})
	require.NoError(t, err)
	bob.Await("the relayed participant's data tracks", func(res *livekit.SignalResponse) bool {
		for _, p := range res.GetUpdate().GetParticipants() {
			if p.GetIdentity() == "remote" {
				require.Len(t, p.GetDataTracks(), 1, "a relayed participant took over alice's sid")
				require.Equal(t, "DTR_remote", p.GetDataTracks()[0].GetSid())
				return true
			}
		}
		return false
	})

	bob.Subscribe("DTR_remote", true)
	h := bob.AwaitHandles("DTR_remote", true)
	require.Equal(t, "DTR_remote true", <-wants)
	rr.DeliverDataTrack("remote", dtclient.Packet(2, 1, "relayed"))
	require.Equal(t, dtclient.Packet(h, 1, "relayed"), bob.AwaitPacket())
	bob.Subscribe(aliceSid, true)
	hAlice := bob.AwaitHandles(aliceSid, true)
	sent := metricWith(t, ts, "gxconf_sfu_data_track_packets_total", "outcome", "sent")
	rr.DeliverDataTrack("alice", dtclient.Packet(1, 2, "forged")) // alice is local: the relay cannot speak for her
	require.Equal(t, sent, metricWith(t, ts, "gxconf_sfu_data_track_packets_total", "outcome", "sent"), "a relayed packet claimed to be alice's was sent")
	require.NoError(t, alice.DC.Send(dtclient.Packet(1, 3, "alice's own")))
	require.Equal(t, dtclient.Packet(hAlice, 3, "alice's own"), bob.AwaitPacket())
	bob.Subscribe("DTR_remote", false)
	bob.AwaitHandles("DTR_remote", false)
	require.Equal(t, "DTR_remote false", <-wants)
}
