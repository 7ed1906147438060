package sfu

import (
	"sort"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
)

// speakerTracker turns the audio levels of each interval into
// speakers_changed messages carrying only changes.
type speakerTracker struct {
	active map[string]float32 // participant sid -> level
}

func newSpeakerTracker() *speakerTracker {
	return &speakerTracker{active: map[string]float32{}}
}

func (st *speakerTracker) update(r *Room, ps []*Participant) {
	now := map[string]float32{}
	for _, p := range ps {
		if p.hidden {
			continue
		}
		var best float32
		speaking := false
		for _, t := range p.liveTracks() {
			if t.kind != webrtc.RTPCodecTypeAudio {
				continue
			}
			if lvl, ok := t.takeAudioLevel(); ok && !t.mutedNow() {
				speaking = true
				best = max(best, lvl)
			}
		}
		if speaking {
			now[p.sid] = best
		}
	}
	var changes []*livekit.SpeakerInfo
	for sid, lvl := range now {
		if _, was := st.active[sid]; !was {
			changes = append(changes, &livekit.SpeakerInfo{Sid: sid, Level: lvl, Active: true})
		}
	}
	for sid := range st.active {
		if _, is := now[sid]; !is {
			changes = append(changes, &livekit.SpeakerInfo{Sid: sid, Level: 0, Active: false})
		}
	}
	st.active = now
	if len(changes) == 0 {
		return
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].Level > changes[j].Level })
	r.broadcast(&livekit.SignalResponse{Message: &livekit.SignalResponse_SpeakersChanged{SpeakersChanged: &livekit.SpeakersChanged{Speakers: changes}}})
}
