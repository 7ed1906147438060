package main

import (
	"fmt"
	"sync"
	"testing"

	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/cluster"
)

// recordingAnnouncer notes every Announcer call.
type recordingAnnouncer struct {
	mu  sync.Mutex
	ops []string
}

func (a *recordingAnnouncer) note(f string, args ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ops = append(a.ops, fmt.Sprintf(f, args...))
}

func (a *recordingAnnouncer) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.ops
	a.ops = nil
	return out
}

func (a *recordingAnnouncer) SetState(s cluster.NodeState)   { a.note("state %s", s) }
func (a *recordingAnnouncer) HostRoom(r cluster.RoomName)    { a.note("host %s", r) }
func (a *recordingAnnouncer) ReleaseRoom(r cluster.RoomName) { a.note("release %s", r) }
func (a *recordingAnnouncer) AddTrack(t cluster.TrackEntry) {
	a.note("track %s %s %s %s %s %d", t.Participant, t.SID, t.Kind, t.MimeType, t.Source, t.Layers)
}
func (a *recordingAnnouncer) AddParticipant(p cluster.ParticipantEntry) {
	a.note("join %s/%s %s", p.Room, p.Identity, p.SID)
}
func (a *recordingAnnouncer) RemoveParticipant(r cluster.RoomName, id cluster.ParticipantIdentity) {
	a.note("leave %s/%s", r, id)
}
func (a *recordingAnnouncer) RemoveTrack(r cluster.RoomName, sid cluster.TrackID) {
	a.note("untrack %s %s", r, sid)
}

// The directory hooks turn the SFU's participant reports into Announcer
// calls: only differences, stale versions and late reports dropped.
func TestDirectoryHooksAnnounceDifferences(t *testing.T) {
	ann := &recordingAnnouncer{}
	h := newDirectoryHooks(ann).roomHooks()
	audio := &livekit.TrackInfo{Sid: "TR_a", Type: livekit.TrackType_AUDIO, MimeType: "audio/opus", Source: livekit.TrackSource_MICROPHONE}
	video := &livekit.TrackInfo{Sid: "TR_v", Type: livekit.TrackType_VIDEO, MimeType: "video/VP8", Source: livekit.TrackSource_CAMERA,
		Layers: []*livekit.VideoLayer{{}, {}, {}}}
	info := func(sid string, v uint32, state livekit.ParticipantInfo_State, tracks ...*livekit.TrackInfo) *livekit.ParticipantInfo {
		return &livekit.ParticipantInfo{Identity: "alice", Sid: sid, Version: v, State: state, Tracks: tracks, JoinedAtMs: 1700000000000}
	}

	h.Participant("r", info("PA_1", 1, livekit.ParticipantInfo_JOINED))
	require.Empty(t, ann.take(), "a report of a room that is not open")

	h.Opened("r")
	require.Equal(t, []string{"host r"}, ann.take())
	h.Participant("r", info("PA_1", 1, livekit.ParticipantInfo_JOINED))
	require.Equal(t, []string{"join r/alice PA_1"}, ann.take())
	h.Participant("r", info("PA_1", 2, livekit.ParticipantInfo_ACTIVE))
	require.Empty(t, ann.take(), "nothing the directory keeps changed")
	h.Participant("r", info("PA_1", 4, livekit.ParticipantInfo_ACTIVE, audio, video))
	require.ElementsMatch(t, []string{"track alice TR_a audio audio/opus microphone 1", "track alice TR_v video video/VP8 camera 3"}, ann.take())
	h.Participant("r", info("PA_1", 3, livekit.ParticipantInfo_ACTIVE, audio))
	require.Empty(t, ann.take(), "a stale version")
	h.Participant("r", info("PA_1", 5, livekit.ParticipantInfo_ACTIVE, audio))
	require.Equal(t, []string{"untrack r TR_v"}, ann.take())

	// A new session of the identity replaces the old one; the old one's
	// leave, arriving late, changes nothing.
	h.Participant("r", info("PA_2", 1, livekit.ParticipantInfo_JOINED))
	require.Equal(t, []string{"leave r/alice", "join r/alice PA_2"}, ann.take())
	h.Participant("r", info("PA_1", 6, livekit.ParticipantInfo_DISCONNECTED))
	require.Empty(t, ann.take())
	h.Participant("r", info("PA_2", 2, livekit.ParticipantInfo_DISCONNECTED))
	require.Equal(t, []string{"leave r/alice"}, ann.take())
	h.Participant("r", info("PA_2", 3, livekit.ParticipantInfo_ACTIVE))
	require.Empty(t, ann.take(), "a report after the leave")

	h.Closed("r")
	require.Equal(t, []string{"release r"}, ann.take())
	h.Participant("r", info("PA_3", 1, livekit.ParticipantInfo_JOINED))
	require.Empty(t, ann.take(), "a report after the room closed")
}
