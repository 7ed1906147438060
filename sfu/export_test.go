package sfu

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/livekit/protocol/livekit"
)

// DescribeSubscriptions is, for tests that fail, what the server knows of
// identity's subscriptions in room: per downtrack whether it has a sender
// and on which section, whether pion bound it, the layer it forwards and
// the packets it sent.
func (s *Server) DescribeSubscriptions(room, identity string) []string {
	r := s.getRoom(room)
	if r == nil {
		return []string{"no room " + room}
	}
	p := r.participant(identity)
	if p == nil {
		return []string{"no participant " + identity}
	}
	type sub struct {
		dt       *downTrack
		attached bool
	}
	p.mu.Lock()
	var subs []sub
	for _, dt := range p.subscriptions {
		subs = append(subs, sub{dt, dt.attached})
	}
	p.mu.Unlock()
	var out []string
	for _, sb := range subs {
		dt := sb.dt
		mid := ""
		if pc := p.sendPC(); pc != nil {
			for _, tr := range pc.GetTransceivers() {
				if s := tr.Sender(); s != nil && s.Track() == dt {
					mid = tr.Mid()
				}
			}
		}
		dt.mu.Lock()
		line := fmt.Sprintf("%s/%s %s attached=%v mid=%q bound=%v ssrc=%d current=%d target=%d packets=%d direct=%d",
			dt.track.owner.identity, dt.kind, dt.id, sb.attached, mid, dt.bound, dt.ssrc, dt.current.Load(), dt.target.Load(), dt.packets, dt.direct)
		dt.mu.Unlock()
		out = append(out, line)
	}
	sort.Strings(out)
	return out
}

// SetAnnounceHooks sets the announcement test hooks (participant.go) until
// the returned function restores them.
func SetAnnounceHooks(announce, announcingLeave func(identity string)) (restore func()) {
	testHookAnnounce.Store(&announce)
	testHookAnnouncingLeave.Store(&announcingLeave)
	return func() { testHookAnnounce.Store(nil); testHookAnnouncingLeave.Store(nil) }
}

// SetLeaveHooks sets the participant close test hooks (participant.go)
// until the returned function restores them.
func SetLeaveHooks(closing, awaiting func(identity string)) (restore func()) {
	testHookClosing, testHookAwaitingLeave = closing, awaiting
	return func() { testHookClosing, testHookAwaitingLeave = nil, nil }
}

// SetJoinOfferHold sets how long the answer to a server-sdk-go client's
// join request offer waits for its first candidate (singlepc.go) until
// the returned function restores it.
func SetJoinOfferHold(d time.Duration) (restore func()) {
	old := joinOfferHold
	joinOfferHold = d
	return func() { joinOfferHold = old }
}

// QueuedCandidates is how many trickled candidates identity's publisher
// and subscriber connections hold until their remote descriptions.
func (s *Server) QueuedCandidates(room, identity string) (pub, sub int) {
	p := s.participantIn(room, identity)
	if p == nil {
		return -1, -1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.candQueue[0]), len(p.candQueue[1])
}

// DataBuffered is what identity's reliable data channel holds unsent.
func (s *Server) DataBuffered(room, identity string) uint64 {
	p := s.participantIn(room, identity)
	if p == nil {
		return 0
	}
	p.dcMu.Lock()
	defer p.dcMu.Unlock()
	if p.subReliable == nil {
		return 0
	}
	return p.subReliable.BufferedAmount()
}

// SetDataBacklogLimits sets the unsent data a participant's lossy and
// reliable channels may hold (data.go) until the returned function
// restores them.
func SetDataBacklogLimits(lossy, reliable uint64) (restore func()) {
	ol, or := maxLossyBuffered, maxReliableBuffered
	maxLossyBuffered, maxReliableBuffered = lossy, reliable
	return func() { maxLossyBuffered, maxReliableBuffered = ol, or }
}

// OfferMids is how many sections of identity's publisher offers the
// server keeps a track id for.
func (s *Server) OfferMids(room, identity string) int {
	p := s.participantIn(room, identity)
	if p == nil {
		return -1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.midCid)
}

// RemoteCandidates is how many remote candidates at ip identity's publisher
// connection was handed in this ICE generation (trickled or in a
// description). Counted from what the participant gave pion, not from
// pion's GetStats, which races with pion closing the connection after a
// failed DTLS handshake (it clears its stats getter unguarded).
func (s *Server) RemoteCandidates(room, identity, ip string) int {
	p := s.participantIn(room, identity)
	if p == nil {
		return -1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for key := range p.candSeen[livekit.SignalTarget_PUBLISHER] {
		if f := strings.Fields(key); len(f) == 4 && f[1] == ip {
			n++
		}
	}
	return n
}

// participantIn is identity's session in room, or nil.
func (s *Server) participantIn(room, identity string) *Participant {
	r := s.getRoom(room)
	if r == nil {
		return nil
	}
	return r.participant(identity)
}

// SendingTracks is how many senders of identity's subscriber connection
// (the single connection in single mode) carry a track.
func (s *Server) SendingTracks(room, identity string) int {
	p := s.participantIn(room, identity)
	if p == nil {
		return -1
	}
	pc := p.sendPC()
	if pc == nil {
		return 0
	}
	n := 0
	for _, tr := range pc.GetTransceivers() {
		if sd := tr.Sender(); sd != nil && sd.Track() != nil {
			n++
		}
	}
	return n
}

// PendingRPCs is how many server calls to identity's client wait.
func (s *Server) PendingRPCs(room, identity string) int {
	p := s.participantIn(room, identity)
	if p == nil {
		return -1
	}
	p.rpc.mu.Lock()
	defer p.rpc.mu.Unlock()
	return len(p.rpc.pending)
}

// KnownCapabilities is knownCapabilities, for its test.
var KnownCapabilities = knownCapabilities
