package sfu_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"github.com/twitchtv/twirp"

	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/sfu"
)

// participantLog keeps the latest info the Participant hook reported per
// identity (ordered by Version, as a consumer must).
type participantLog struct {
	mu    sync.Mutex
	last  map[string]*livekit.ParticipantInfo
	rooms map[string]string
}

func (l *participantLog) hook(room string, info *livekit.ParticipantInfo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old := l.last[info.GetIdentity()]; old != nil && old.GetSid() == info.GetSid() && old.GetVersion() > info.GetVersion() {
		return
	}
	l.last[info.GetIdentity()] = info
	l.rooms[info.GetIdentity()] = room
}

func (l *participantLog) get(identity string) (*livekit.ParticipantInfo, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last[identity], l.rooms[identity]
}

// The Participant hook reports local participants with their tracks as they
// join, publish, unpublish and leave, and never a relayed participant.
func TestParticipantHookReportsLocalParticipantsAndTracks(t *testing.T) {
	verifyNoLeaks(t)
	plog := &participantLog{last: map[string]*livekit.ParticipantInfo{}, rooms: map[string]string{}}
	ts := startServerWith(t, nil, func(s *sfu.Server) {
		s.SetRoomHooks(sfu.RoomHooks{Participant: plog.hook})
	})

	alice := ts.join(t, "hooks", "alice", nil)
	require.Eventually(t, func() bool {
		info, room := plog.get("alice")
		return info != nil && room == "hooks" && info.GetSid() != "" && info.GetState() != livekit.ParticipantInfo_DISCONNECTED
	}, 10*time.Second, 20*time.Millisecond)

	alice.publish(t, loadtest.PublishOptions{Audio: true, Video: true})
	require.Eventually(t, func() bool {
		info, _ := plog.get("alice")
		return len(info.GetTracks()) == 2
	}, 20*time.Second, 20*time.Millisecond)
	info, _ := plog.get("alice")
	var video *livekit.TrackInfo
	for _, tr := range info.GetTracks() {
		require.NotEmpty(t, tr.GetSid())
		require.NotEmpty(t, tr.GetMimeType())
		if tr.GetType() == livekit.TrackType_VIDEO {
			video = tr
		}
	}
	require.NotNil(t, video)

	// A participant relayed from another node is not this node's to report.
	rr, err := ts.srv.RelayRoom("hooks", false)
	require.NoError(t, err)
	remote, err := rr.AddRemoteParticipant(&livekit.ParticipantInfo{Sid: "PA_remote", Identity: "remote", State: livekit.ParticipantInfo_ACTIVE}, sfu.RemoteHooks{})
	require.NoError(t, err)

	// Unpublishing drops the track from the next report.
	for _, pub := range alice.room.LocalParticipant.TrackPublications() {
		if pub.SID() == video.GetSid() {
			require.NoError(t, alice.room.LocalParticipant.UnpublishTrack(pub.SID()))
		}
	}
	require.Eventually(t, func() bool {
		info, _ := plog.get("alice")
		return len(info.GetTracks()) == 1 && info.GetTracks()[0].GetType() == livekit.TrackType_AUDIO
	}, 10*time.Second, 20*time.Millisecond)

	alice.close()
	require.Eventually(t, func() bool {
		info, _ := plog.get("alice")
		return info.GetState() == livekit.ParticipantInfo_DISCONNECTED
	}, 10*time.Second, 20*time.Millisecond)
	remote.Close(livekit.DisconnectReason_CLIENT_INITIATED)
	got, _ := plog.get("remote")
	require.Nil(t, got, "a relayed participant was reported")
}

// fakeForwarder answers for an "other node" that hosts room "far" with
// participant "bob", and for participant "carol" in room "near".
type fakeForwarder struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeForwarder) called(what string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, what)
}

func (f *fakeForwarder) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeForwarder) has(room, identity string) bool {
	return (room == "far" && identity == "bob") || (room == "near" && identity == "carol")
}

func (f *fakeForwarder) ListParticipants(_ context.Context, req *livekit.ListParticipantsRequest) (*livekit.ListParticipantsResponse, error) {
	f.called("list " + req.GetRoom())
	switch req.GetRoom() {
	case "far":
		return &livekit.ListParticipantsResponse{Participants: []*livekit.ParticipantInfo{{Identity: "bob"}}}, nil
	case "near":
		// carol lives there; "remote" is relayed here from there, with its
		// origin's name.
		return &livekit.ListParticipantsResponse{Participants: []*livekit.ParticipantInfo{{Identity: "carol"}, {Identity: "remote", Name: "origin"}}}, nil
	}
	return nil, twirp.NotFoundError("room")
}

func (f *fakeForwarder) GetParticipant(_ context.Context, req *livekit.RoomParticipantIdentity) (*livekit.ParticipantInfo, error) {
	f.called("get " + req.GetRoom() + "/" + req.GetIdentity())
	if !f.has(req.GetRoom(), req.GetIdentity()) {
		return nil, twirp.NotFoundError("participant")
	}
	return &livekit.ParticipantInfo{Identity: req.GetIdentity(), Name: "from afar"}, nil
}

func (f *fakeForwarder) RemoveParticipant(_ context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error) {
	f.called("remove " + req.GetRoom() + "/" + req.GetIdentity())
	if !f.has(req.GetRoom(), req.GetIdentity()) {
		return nil, twirp.NotFoundError("participant")
	}
	return &livekit.RemoveParticipantResponse{}, nil
}

func (f *fakeForwarder) MutePublishedTrack(_ context.Context, req *livekit.MuteRoomTrackRequest) (*livekit.MuteRoomTrackResponse, error) {
	f.called("mute " + req.GetRoom() + "/" + req.GetIdentity() + "/" + req.GetTrackSid())
	return &livekit.MuteRoomTrackResponse{Track: &livekit.TrackInfo{Sid: req.GetTrackSid(), Muted: true}}, nil
}

func (f *fakeForwarder) UpdateParticipant(_ context.Context, req *livekit.UpdateParticipantRequest) (*livekit.ParticipantInfo, error) {
	f.called("update " + req.GetRoom() + "/" + req.GetIdentity())
	return &livekit.ParticipantInfo{Identity: req.GetIdentity(), Metadata: req.GetMetadata()}, nil
}

func (f *fakeForwarder) SendData(_ context.Context, req *livekit.SendDataRequest) (*livekit.SendDataResponse, error) {
	f.called("data " + req.GetRoom())
	return &livekit.SendDataResponse{}, nil
}

func (f *fakeForwarder) UpdateRoomMetadata(_ context.Context, req *livekit.UpdateRoomMetadataRequest) (*livekit.Room, error) {
	f.called("metadata " + req.GetRoom())
	return &livekit.Room{Name: req.GetRoom(), Metadata: req.GetMetadata()}, nil
}

func (f *fakeForwarder) PerformRpc(_ context.Context, req *livekit.PerformRpcRequest) (*livekit.PerformRpcResponse, error) {
	f.called("rpc " + req.GetRoom() + "/" + req.GetDestinationIdentity())
	if !f.has(req.GetRoom(), req.GetDestinationIdentity()) && req.GetDestinationIdentity() != "remote" {
		return nil, twirp.NotFoundError("participant")
	}
	return &livekit.PerformRpcResponse{Payload: "from " + req.GetDestinationIdentity() + "'s node"}, nil
}

func (f *fakeForwarder) UpdateSubscriptions(_ context.Context, req *livekit.UpdateSubscriptionsRequest) (*livekit.UpdateSubscriptionsResponse, error) {
	f.called("subscriptions " + req.GetRoom() + "/" + req.GetIdentity())
	if !f.has(req.GetRoom(), req.GetIdentity()) && req.GetIdentity() != "remote" {
		return nil, twirp.NotFoundError("participant")
	}
	return &livekit.UpdateSubscriptionsResponse{}, nil
}

// ListRooms answers for the whole cluster (the forwarder adds this node's
// rooms itself).
func (f *fakeForwarder) ListRooms(_ context.Context, req *livekit.ListRoomsRequest) (*livekit.ListRoomsResponse, error) {
	f.called("rooms")
	return &livekit.ListRoomsResponse{Rooms: []*livekit.Room{{Name: "far", NumParticipants: 1}, {Name: "near", NumParticipants: 3}}}, nil
}

func (f *fakeForwarder) CreateRoom(_ context.Context, req *livekit.CreateRoomRequest) (*livekit.Room, error) {
	f.called("find " + req.GetName())
	if req.GetName() != "far" {
		return nil, twirp.NotFoundError("room")
	}
	return &livekit.Room{Name: "far", Sid: "RM_far", Metadata: "from afar"}, nil
}

func (f *fakeForwarder) DeleteRoom(_ context.Context, req *livekit.DeleteRoomRequest) (*livekit.DeleteRoomResponse, error) {
	f.called("delete " + req.GetRoom())
	if req.GetRoom() != "far" && req.GetRoom() != "near" {
		return nil, twirp.NotFoundError("room")
	}
	return &livekit.DeleteRoomResponse{}, nil
}

func identities(ps []*livekit.ParticipantInfo) map[string]string {
	out := map[string]string{}
	for _, p := range ps {
		out[p.GetIdentity()] = p.GetName()
	}
	return out
}

// With a Forwarder the Twirp RoomService answers for participants and rooms
// of other nodes: what is here is served here, the rest is forwarded, and
// ListParticipants merges both without the relayed copies.
func TestTwirpForwardsWhatIsNotHere(t *testing.T) {
	verifyNoLeaks(t)
	fwd := &fakeForwarder{}
	ts := startServerWith(t, nil, func(s *sfu.Server) { s.SetForwarder(fwd) })
	ctx := context.Background()
	rs := lksdk.NewRoomServiceClient(httpURL(ts), ts.key, ts.secret)

	ws, first := rawJoin(t, ts, "near", "alice", "")
	require.NotNil(t, first.GetJoin())
	defer ws.CloseNow()
	rr, err := ts.srv.RelayRoom("near", false)
	require.NoError(t, err)
	remote, err := rr.AddRemoteParticipant(&livekit.ParticipantInfo{Sid: "PA_remote", Identity: "remote", Name: "copy"}, sfu.RemoteHooks{})
	require.NoError(t, err)
	defer remote.Close(livekit.DisconnectReason_CLIENT_INITIATED)

	t.Run("list merges, origin wins over relayed copy", func(t *testing.T) {
		res, err := rs.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: "near"})
		require.NoError(t, err)
		require.Len(t, res.Participants, 3)
		require.Equal(t, map[string]string{"alice": "alice", "carol": "", "remote": "origin"}, identities(res.Participants))
	})
	t.Run("list of a room elsewhere", func(t *testing.T) {
		res, err := rs.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: "far"})
		require.NoError(t, err)
		require.Equal(t, map[string]string{"bob": ""}, identities(res.Participants))
		_, err = rs.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: "nowhere"})
		requireTwirpCode(t, err, twirp.NotFound)
	})
	t.Run("local participant is served here", func(t *testing.T) {
		before := len(fwd.log())
		p, err := rs.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "near", Identity: "alice"})
		require.NoError(t, err)
		require.Equal(t, "alice", p.GetIdentity())
		require.Len(t, fwd.log(), before, "a local participant was forwarded")
	})
	t.Run("participants elsewhere are forwarded", func(t *testing.T) {
		p, err := rs.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "near", Identity: "carol"})
		require.NoError(t, err)
		require.Equal(t, "from afar", p.GetName())
		_, err = rs.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "far", Identity: "bob"})
		require.NoError(t, err)
		_, err = rs.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "far", Identity: "nobody"})
		requireTwirpCode(t, err, twirp.NotFound)
		m, err := rs.MutePublishedTrack(ctx, &livekit.MuteRoomTrackRequest{Room: "near", Identity: "carol", TrackSid: "TR_x", Muted: true})
		require.NoError(t, err)
		require.True(t, m.GetTrack().GetMuted())
		u, err := rs.UpdateParticipant(ctx, &livekit.UpdateParticipantRequest{Room: "far", Identity: "bob", Metadata: "md"})
		require.NoError(t, err)
		require.Equal(t, "md", u.GetMetadata())
	})
	t.Run("room calls go elsewhere only when the room is not here", func(t *testing.T) {
		_, err := rs.SendData(ctx, &livekit.SendDataRequest{Room: "near", Data: []byte("x"), Kind: livekit.DataPacket_RELIABLE})
		require.NoError(t, err)
		_, err = rs.SendData(ctx, &livekit.SendDataRequest{Room: "far", Data: []byte("x"), Kind: livekit.DataPacket_RELIABLE})
		require.NoError(t, err)
		room, err := rs.UpdateRoomMetadata(ctx, &livekit.UpdateRoomMetadataRequest{Room: "far", Metadata: "m"})
		require.NoError(t, err)
		require.Equal(t, "m", room.GetMetadata())
	})
	t.Run("subscriptions of a relayed or absent participant go to its node", func(t *testing.T) {
		_, err := rs.UpdateSubscriptions(ctx, &livekit.UpdateSubscriptionsRequest{Room: "near", Identity: "alice", TrackSids: []string{"TR_y"}, Subscribe: true})
		require.NoError(t, err)
		_, err = rs.UpdateSubscriptions(ctx, &livekit.UpdateSubscriptionsRequest{Room: "near", Identity: "remote", TrackSids: []string{"TR_y"}, Subscribe: true})
		require.NoError(t, err)
		_, err = rs.UpdateSubscriptions(ctx, &livekit.UpdateSubscriptionsRequest{Room: "far", Identity: "bob", TrackSids: []string{"TR_y"}, Subscribe: true})
		require.NoError(t, err)
		_, err = rs.UpdateSubscriptions(ctx, &livekit.UpdateSubscriptionsRequest{Room: "far", Identity: "nobody"})
		requireTwirpCode(t, err, twirp.NotFound)
	})
	t.Run("rooms are listed by the forwarder; a node's own counts leave relayed copies out", func(t *testing.T) {
		res, err := rs.ListRooms(ctx, &livekit.ListRoomsRequest{})
		require.NoError(t, err)
		require.Len(t, res.GetRooms(), 2)
		local := ts.srv.LocalRooms([]string{"near", "far"})
		require.Len(t, local, 1)
		require.Equal(t, "near", local[0].GetName())
		require.EqualValues(t, 1, local[0].GetNumParticipants(), "alice, not the relayed copy")
		require.Len(t, ts.srv.LocalRooms(nil), 1)
	})
	t.Run("CreateRoom returns a room hosted elsewhere, creates one nobody hosts", func(t *testing.T) {
		r, err := rs.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "far", Metadata: "other settings"})
		require.NoError(t, err)
		require.Equal(t, "from afar", r.GetMetadata())
		require.Empty(t, ts.srv.LocalRooms([]string{"far"}), "no second copy here")
		near, err := rs.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "near"})
		require.NoError(t, err)
		require.EqualValues(t, 2, near.GetNumParticipants(), "the room here, unchanged")
		r, err = rs.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "new", Metadata: "mine"})
		require.NoError(t, err)
		require.Equal(t, "mine", r.GetMetadata())
		require.Len(t, ts.srv.LocalRooms([]string{"new"}), 1)
	})
	t.Run("DeleteRoom closes the room here and elsewhere", func(t *testing.T) {
		_, err := rs.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "near"})
		require.NoError(t, err)
		for {
			m := readSignal(t, ws)
			if l := m.GetLeave(); l != nil {
				require.Equal(t, livekit.DisconnectReason_ROOM_DELETED, l.GetReason())
				break
			}
		}
		_, err = rs.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "new"})
		require.NoError(t, err, "hosted here only")
		_, err = rs.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "far"})
		require.NoError(t, err, "hosted elsewhere only")
		_, err = rs.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "new"})
		requireTwirpCode(t, err, twirp.NotFound)
		require.Empty(t, ts.srv.LocalRooms(nil))
	})
	require.Equal(t, []string{
		"list near", "list far", "list nowhere",
		"get near/carol", "remove far/bob", "remove far/nobody", "mute near/carol/TR_x", "update far/bob",
		"data far", "metadata far",
		"subscriptions near/remote", "subscriptions far/bob", "subscriptions far/nobody",
		"rooms",
		"find far", "find new",
		"delete near", "delete new", "delete far", "delete new",
	}, fwd.log())

}

// A room DeleteRoom closed is not re-created for the relay (a peer node
// that has not closed its copy yet would link it back); a join may
// re-create it, and the relay then links it.
func TestDeletedRoomIsNotRelayedBack(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	ctx := context.Background()
	rs := lksdk.NewRoomServiceClient(httpURL(ts), ts.key, ts.secret)
	_, err := ts.srv.RelayRoom("gone", true)
	require.NoError(t, err, "the relay creates a room")
	_, err = rs.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "gone"})
	require.NoError(t, err)
	_, err = ts.srv.RelayRoom("gone", true)
	require.ErrorIs(t, err, sfu.ErrRoomNotFound)
	require.Empty(t, ts.srv.LocalRooms(nil))

	ws, first := rawJoin(t, ts, "gone", "alice", "")
	require.NotNil(t, first.GetJoin(), "a join re-creates the deleted room")
	defer ws.CloseNow()
	_, err = ts.srv.RelayRoom("gone", true)
	require.NoError(t, err)
}

// A relay announcing many video tracks that never carry a packet costs no
// packet-cache slots (a peer may announce 2048 tracks per association; with
// slots allocated up front, 256 simulcast tracks took ~147 MB).
func TestRelayTracksCacheOnFirstPacket(t *testing.T) {
	ts := startServer(t, nil)
	rr, err := ts.srv.RelayRoom("announced", true)
	require.NoError(t, err)
	remote, err := rr.AddRemoteParticipant(&livekit.ParticipantInfo{Sid: "PA_remote", Identity: "remote"}, sfu.RemoteHooks{})
	require.NoError(t, err)
	defer remote.Close(livekit.DisconnectReason_CLIENT_INITIATED)
	codec := sfu.RelayCodec{RTPCodecParameters: webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	const tracks = 256
	before := heap()
	for i := 0; i < tracks; i++ {
		_, err := remote.PublishTrack(&livekit.TrackInfo{Sid: fmt.Sprintf("TR_%d", i), Type: livekit.TrackType_VIDEO, Simulcast: true,
			Layers: []*livekit.VideoLayer{{Quality: livekit.VideoQuality_LOW}, {Quality: livekit.VideoQuality_MEDIUM}, {Quality: livekit.VideoQuality_HIGH}}},
			codec, func(uint8) {}, func(int) {})
		require.NoError(t, err)
	}
	grown := int64(heap()) - int64(before)
	t.Logf("%d announced tracks: heap grew %d KB", tracks, grown>>10)
	require.Less(t, grown, int64(32<<20), "announced tracks allocated packet caches")
}
