package sfu

import (
	"github.com/livekit/protocol/livekit"
	"google.golang.org/protobuf/proto"
)

// Data channel labels used by LiveKit clients.
const (
	dataReliable = "_reliable"
	dataLossy    = "_lossy"
)

// onData routes a DataPacket from the participant's publisher connection:
// canPublishData is checked, the sender identity and sid are overwritten,
// stale reliable sequences are dropped, and the packet goes to the
// destination identities or everyone else, on the channel with the same
// label.
func (p *Participant) onData(label string, data []byte) {
	if label != dataReliable && label != dataLossy {
		return
	}
	dp := &livekit.DataPacket{}
	if err := proto.Unmarshal(data, dp); err != nil {
		p.log.Debug().Err(err).Msg("dropping malformed data packet")
		return
	}
	p.mu.Lock()
	if !p.video.GetCanPublishData() || p.closed {
		p.mu.Unlock()
		return
	}
	if label == dataReliable && dp.GetSequence() != 0 {
		if dp.GetSequence() <= p.lastReliableSeq {
			p.mu.Unlock()
			return
		}
		p.lastReliableSeq = dp.GetSequence()
	}
	p.mu.Unlock()
	dp.ParticipantIdentity = p.identity
	dp.ParticipantSid = p.sid
	if u := dp.GetUser(); u != nil {
		u.ParticipantIdentity = p.identity
		u.ParticipantSid = p.sid
	}
	dests := dp.GetDestinationIdentities()
	if len(dests) == 0 {
		if u := dp.GetUser(); u != nil {
			dests = u.GetDestinationIdentities()
		}
	}
	out, err := proto.Marshal(dp)
	if err != nil {
		return
	}
	p.room.routeData(p, label, out, dests)
}

// routeData sends an encoded DataPacket to dests (identities), or to
// everyone but from when dests is empty. from may be nil (server data).
func (r *Room) routeData(from *Participant, label string, data []byte, dests []string) {
	var want map[string]bool
	if len(dests) > 0 {
		want = make(map[string]bool, len(dests))
		for _, d := range dests {
			want[d] = true
		}
	}
	for _, p := range r.participantList() {
		if p == from || (want != nil && !want[p.identity]) {
			continue
		}
		p.sendData(label, data)
	}
}

// sendData writes to the subscriber connection's data channel; messages
// before the channel opened are dropped like on a lossy link.
func (p *Participant) sendData(label string, data []byte) {
	dc := p.subReliable
	if label == dataLossy {
		dc = p.subLossy
	}
	if dc == nil {
		return
	}
	if err := dc.Send(data); err != nil {
		p.log.Trace().Err(err).Msg("failed to send data packet")
	}
}
