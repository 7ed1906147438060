package sfu

import (
	"sync"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// RoomHooks tell the cluster which rooms, participants and tracks this
// node hosts. None may block or call the Server.
type RoomHooks struct {
	// Opened and Closed are called under the server's lock when a room
	// opens and when it closes.
	Opened, Closed func(room string)
	// Participant reports a local participant's current info with its live
	// tracks whenever it changes (join, publish, unpublish, mute, update);
	// State DISCONNECTED means it left. Participants relayed from other
	// nodes and hidden ones are never reported. Calls come from SFU
	// goroutines, possibly concurrently; Version orders the infos of one
	// session (Sid). info is the callee's to keep.
	Participant func(room string, info *livekit.ParticipantInfo)
}

// SetRoomHooks sets the room hooks; call it before Run.
func (s *Server) SetRoomHooks(h RoomHooks) { s.hooks = h }

// Load is what this node carries now, for the cluster's placement.
type Load struct {
	Rooms        int
	Participants int
	// Tracks counts published tracks that receive media.
	Tracks int
	// BitrateIn and BitrateOut are client RTP bits per second since the
	// previous call to Load (zero on the first).
	BitrateIn, BitrateOut uint64
}

// loadMeter turns the byte counters into rates between two readings.
type loadMeter struct {
	mu                sync.Mutex
	at                time.Time
	bytesIn, bytesOut float64
	lastIn, lastOut   uint64
}

// Load counts rooms, participants and live tracks and measures the media
// bitrates from the byte counters the read loops flush (about once a
// second, so rates are smoothed over calls at least that far apart). It
// walks the rooms under their locks: call it at heartbeat rate, not per
// packet.
func (s *Server) Load() Load {
	var l Load
	for _, r := range s.listRooms() {
		l.Rooms++
		for _, p := range r.participantList() {
			l.Participants++
			l.Tracks += len(p.liveTracks())
		}
	}
	in, out := counterValue(s.metrics.bytesIn), counterValue(s.metrics.bytesOut)
	m := &s.load
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if !m.at.IsZero() {
		if dt := now.Sub(m.at).Seconds(); dt >= 0.5 {
			m.lastIn = uint64((in - m.bytesIn) * 8 / dt)
			m.lastOut = uint64((out - m.bytesOut) * 8 / dt)
		} else {
			l.BitrateIn, l.BitrateOut = m.lastIn, m.lastOut
			return l
		}
	}
	m.at, m.bytesIn, m.bytesOut = now, in, out
	l.BitrateIn, l.BitrateOut = m.lastIn, m.lastOut
	return l
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil || m.Counter == nil {
		return 0
	}
	return m.Counter.GetValue()
}
