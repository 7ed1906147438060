package main

import (
	"strings"
	"sync"
	"time"

	"github.com/livekit/protocol/livekit"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/sfu"
)

// directoryHooks announce what the embedded SFU hosts — rooms, local
// participants and their tracks — to the cluster directory. The SFU
// reports a participant's whole info on every change; only differences
// reach the Announcer, so a speaker update writes nothing to Redis.
//
// Concurrency: mu guards rooms. The SFU calls Participant from several
// goroutines; infos of one session are ordered by Version, stale ones are
// dropped. A room's state lives from Opened to Closed; infos of a room that
// is not open (a late report after it closed) are ignored so they cannot
// host it again.
type directoryHooks struct {
	ann cluster.Announcer

	mu    sync.Mutex
	rooms map[string]map[string]*announced // room → identity → state
}

// announced is what was last announced of one identity.
type announced struct {
	sid     string
	version uint32
	gone    bool
	tracks  map[string]cluster.TrackEntry
}

func newDirectoryHooks(ann cluster.Announcer) *directoryHooks {
	return &directoryHooks{ann: ann, rooms: map[string]map[string]*announced{}}
}

// roomHooks are the SFU hooks (Opened and Closed run under the SFU's lock).
func (d *directoryHooks) roomHooks() sfu.RoomHooks {
	return sfu.RoomHooks{Opened: d.opened, Closed: d.closed, Participant: d.participant}
}

func (d *directoryHooks) opened(room string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rooms[room] == nil {
		d.rooms[room] = map[string]*announced{}
	}
	d.ann.HostRoom(cluster.RoomName(room))
}

func (d *directoryHooks) closed(room string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.rooms, room)
	d.ann.ReleaseRoom(cluster.RoomName(room))
}

func (d *directoryHooks) participant(room string, info *livekit.ParticipantInfo) {
	d.mu.Lock()
	defer d.mu.Unlock()
	parts := d.rooms[room]
	if parts == nil {
		return
	}
	rn, id := cluster.RoomName(room), cluster.ParticipantIdentity(info.GetIdentity())
	st := parts[info.GetIdentity()]
	if st != nil && st.sid == info.GetSid() && (st.gone || info.GetVersion() <= st.version) {
		return // stale, or the session already left
	}
	if info.GetState() == livekit.ParticipantInfo_DISCONNECTED {
		if st != nil && st.sid != info.GetSid() {
			return // an older session of the identity, replaced already
		}
		parts[info.GetIdentity()] = &announced{sid: info.GetSid(), version: info.GetVersion(), gone: true}
		d.ann.RemoveParticipant(rn, id)
		return
	}
	if st == nil || st.sid != info.GetSid() || st.gone {
		if st != nil && !st.gone {
			d.ann.RemoveParticipant(rn, id) // drops the old session's tracks
		}
		joined := time.Now()
		if info.GetJoinedAtMs() > 0 {
			joined = time.UnixMilli(info.GetJoinedAtMs())
		} else if info.GetJoinedAt() > 0 {
			joined = time.Unix(info.GetJoinedAt(), 0)
		}
		st = &announced{sid: info.GetSid(), tracks: map[string]cluster.TrackEntry{}}
		parts[info.GetIdentity()] = st
		d.ann.AddParticipant(cluster.ParticipantEntry{Room: rn, Identity: id, SID: info.GetSid(), JoinedAt: joined})
	}
	st.version = info.GetVersion()
	live := make(map[string]bool, len(info.GetTracks()))
	for _, ti := range info.GetTracks() {
		e := trackEntry(rn, id, ti)
		live[ti.GetSid()] = true
		if old, ok := st.tracks[ti.GetSid()]; ok && old == e {
			continue
		}
		st.tracks[ti.GetSid()] = e
		d.ann.AddTrack(e)
	}
	for sid := range st.tracks {
		if !live[sid] {
			delete(st.tracks, sid)
			d.ann.RemoveTrack(rn, cluster.TrackID(sid))
		}
	}
}

// trackEntry is the directory's view of a LiveKit track.
func trackEntry(room cluster.RoomName, owner cluster.ParticipantIdentity, ti *livekit.TrackInfo) cluster.TrackEntry {
	layers := uint8(1)
	if n := len(ti.GetLayers()); n > 1 {
		layers = uint8(min(n, 255))
	}
	return cluster.TrackEntry{
		Room: room, SID: cluster.TrackID(ti.GetSid()), Participant: owner,
		Kind:     strings.ToLower(ti.GetType().String()),
		MimeType: ti.GetMimeType(),
		Source:   strings.ToLower(ti.GetSource().String()),
		Layers:   layers,
	}
}
