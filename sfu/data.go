package sfu

import (
	"errors"
	"io"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/datachannel"
	"github.com/pion/webrtc/v4"
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
	if label == dataTrackLabel {
		p.mu.Lock()
		may := p.video.GetCanPublishData() && !p.closed
		p.mu.Unlock()
		if may {
			p.onDataTrackPacket(data)
		}
		return
	}
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
	agent := p.info.GetKind() == livekit.ParticipantInfo_AGENT
	p.mu.Unlock()
	if p.onRPCReply(dp) {
		return // the answer to a server call (RoomService.PerformRpc)
	}
	switch {
	case dp.GetTranscription() != nil && !agent:
		// A transcription names the participant whose speech it is, and
		// clients show it as theirs: only an agent may send one (as
		// livekit-server), or anyone could put words in another's mouth.
		p.log.Debug().Msg("dropping a transcription from a participant that is no agent")
		return
	case dp.GetMetrics() != nil:
		return // client metrics are for a server that collects them, not for the others
	}
	// The sender is who the server says (hidden participants: nobody), on
	// the channel it came in on.
	identity, sid := p.identity, p.sid
	if p.hidden {
		identity, sid = "", ""
	}
	dp.ParticipantIdentity, dp.ParticipantSid = identity, sid
	dp.Kind = livekit.DataPacket_RELIABLE
	if label == dataLossy {
		dp.Kind = livekit.DataPacket_LOSSY
	}
	dests := dp.GetDestinationIdentities()
	var sids []string
	if u := dp.GetUser(); u != nil {
		u.ParticipantIdentity, u.ParticipantSid = identity, sid
		if len(dests) == 0 {
			dests = u.GetDestinationIdentities()
		}
		sids = u.GetDestinationSids()
	}
	dests, ok := p.room.dataDestinations(dests, sids)
	if !ok {
		return // addressed, but to nobody in the room
	}
	dp.DestinationIdentities = dests
	if u := dp.GetUser(); u != nil {
		u.DestinationIdentities = dests
	}
	out, err := proto.Marshal(dp)
	if err != nil {
		return
	}
	p.room.routeData(p, label, out, dests)
}

// readData reads a detached publisher data channel until it closes. The
// buffer starts small and grows when a message does not fit (the message
// stays queued until read).
func (p *Participant) readData(label string, r datachannel.ReadWriteCloser) {
	buf := make([]byte, 2048)
	for {
		n, _, err := r.ReadDataChannel(buf)
		if errors.Is(err, io.ErrShortBuffer) && n <= maxDataMessage {
			buf = make([]byte, max(n, 2*len(buf)))
			continue
		}
		if err != nil {
			return
		}
		p.onData(label, buf[:n])
	}
}

// maxDataMessage bounds a data channel message (pion's default SCTP max
// message size).
const maxDataMessage = 65536

// dataDestinations returns the identities a data packet goes to that names
// its recipients by identity and, as older SDKs do, by participant sid
// (livekit-server honours both). ok is false when the packet names
// recipients and none of them is in the room: it goes to nobody, not to
// everyone. The identities are written into the packet, so a node it is
// relayed to keeps the restriction.
func (r *Room) dataDestinations(identities, sids []string) (dests []string, ok bool) {
	if len(sids) == 0 {
		return identities, true
	}
	seen := make(map[string]bool, len(identities)+len(sids))
	dests = make([]string, 0, len(identities)+len(sids))
	add := func(id string) {
		if id != "" && !seen[id] {
			seen[id] = true
			dests = append(dests, id)
		}
	}
	for _, id := range identities {
		add(id)
	}
	lookup := r.identityBySid()
	for _, sid := range sids {
		add(lookup(sid))
	}
	return dests, len(dests) > 0
}

// routeData sends an encoded DataPacket to dests (identities), or to
// everyone but from when dests is empty. from may be nil (server data).
func (r *Room) routeData(from *Participant, label string, data []byte, dests []string) {
	r.relay.dataPacket(from, label, data, dests)
	r.routeDataLocal(from, label, data, dests)
}

// routeDataLocal delivers to this node's participants only.
func (r *Room) routeDataLocal(from *Participant, label string, data []byte, dests []string) {
	var want map[string]bool
	if len(dests) > 0 {
		want = make(map[string]bool, len(dests))
		for _, d := range dests {
			want[d] = true
		}
	}
	for _, p := range r.participantList() {
		if p == from || p.remote != nil || (want != nil && !want[p.identity]) {
			continue
		}
		p.sendData(label, data)
	}
}

// maxPendingData bounds the reliable messages kept for a participant
// whose data channel is not open yet.
const maxPendingData = 256

// Bounds on what a participant's data channel may hold unsent. pion queues
// whatever is sent, however slowly (or not at all: a client that never
// acknowledges) the receiver takes it; beyond these a packet is dropped
// and counted (data_dropped_total). Lossy data is worthless once it waits;
// reliable data gets room for bursts, and is dropped only where the
// alternative is a sender filling the server's memory.
// Variables only so that a test can lower them.
var (
	maxLossyBuffered    uint64 = 1 << 20
	maxReliableBuffered uint64 = 16 << 20
)

// sendData writes to the data channel the SFU sends on (the subscriber
// connection's, or in single mode the client's own). Reliable messages
// sent before the channel opened are queued and flushed on open; lossy
// ones are dropped like on a lossy link.
func (p *Participant) sendData(label string, data []byte) {
	p.dcMu.Lock()
	defer p.dcMu.Unlock()
	if label == dataLossy {
		if p.subLossy != nil && p.subLossy.ReadyState() == webrtc.DataChannelStateOpen {
			if p.subLossy.BufferedAmount() > maxLossyBuffered {
				p.s.metrics.dataDropped.WithLabelValues(label).Inc()
				return
			}
			if err := p.subLossy.Send(data); err != nil {
				p.log.Trace().Err(err).Msg("failed to send data packet")
			}
		}
		return
	}
	if !p.dcOpen {
		if len(p.dcPending) < maxPendingData {
			p.dcPending = append(p.dcPending, data)
		}
		return
	}
	if p.subReliable.BufferedAmount() > maxReliableBuffered {
		p.s.metrics.dataDropped.WithLabelValues(label).Inc()
		p.log.Debug().Msg("reliable data packet dropped: 16 MiB wait for the client already")
		return
	}
	if err := p.subReliable.Send(data); err != nil {
		p.log.Trace().Err(err).Msg("failed to send data packet")
	}
}

// onReliableOpen flushes the queued reliable messages in order.
func (p *Participant) onReliableOpen() {
	p.dcMu.Lock()
	defer p.dcMu.Unlock()
	p.dcOpen = true
	for _, d := range p.dcPending {
		if err := p.subReliable.Send(d); err != nil {
			p.log.Trace().Err(err).Msg("failed to send data packet")
		}
	}
	p.dcPending = nil
}

// adoptDataChannel makes an open channel the client created the one the
// SFU sends on (single peer connection mode); a channel the client
// recreates (Safari after a resume) replaces the old one.
func (p *Participant) adoptDataChannel(label string, dc *webrtc.DataChannel) {
	switch label {
	case dataReliable:
		p.dcMu.Lock()
		p.subReliable = dc
		p.dcMu.Unlock()
		p.onReliableOpen()
	case dataLossy:
		p.dcMu.Lock()
		p.subLossy = dc
		p.dcMu.Unlock()
	case dataTrackLabel:
		p.dcMu.Lock()
		p.subDataTrack = dc
		p.dcMu.Unlock()
		p.dataTrackChannelOpen()
	}
}
