package sfu

// A participant's negotiation budget: the time the server may spend on
// its session descriptions. Its signal messages are handled one at a time
// in its read loop, and a description is costly: a valid offer of 200
// sections (1 MB) takes about 150 ms of a core, so a client sending
// offers, answers or ICE restarts back to back could hold a core for as
// long as it liked. Each description's handling is charged to a bucket of
// time; when it is spent, the read loop reads the client's next message
// only once the debt is repaid. The client is slowed, never refused, and
// its messages keep their order.

import (
	"context"
	"sync"
	"time"
)

// Figures of the budget. A browser's or SDK's negotiation costs a few
// milliseconds (tens under the race detector), and Element Call and
// livekit-client renegotiate on publish, unpublish, screen share and ICE
// restart: a handful in a second when a call starts, a few a minute after.
// negotiationBurst lets well over a hundred such negotiations through at
// once; beyond it a participant gets negotiationRefill of handling per
// second, a tenth of a core, which still answers a browser's offer every
// few tens of milliseconds. A throttled read waits at most
// maxNegotiationWait (less with a short ping timeout, negotiationWait):
// pings and a leave queued behind the debt are read within it, so the
// client's ping timeout (15 s by default) never expires for a throttle,
// and the debt a single message can leave is bounded to that wait.
const (
	negotiationBurst   = time.Second
	negotiationRefill  = 100 * time.Millisecond // per second
	maxNegotiationWait = 3 * time.Second
)

// negotiationWait is the longest a throttled read waits with the given
// ping settings: at most half of what the client's ping timeout leaves
// after the interval between its pings, so a pong it waits for comes in
// time.
func negotiationWait(pingInterval, pingTimeout time.Duration) time.Duration {
	return max(min(maxNegotiationWait, (pingTimeout-pingInterval)/2), 0)
}

// negotiationBudget is a bucket of handling time, refilled with time
// (negotiationRefill per second, up to negotiationBurst); it may go into
// debt, bounded by what maxWait repays. It is shared by the read loops of
// the participant's sockets (a resume starts one while the old one ends)
// and the single mode join offer's timer, hence its lock.
type negotiationBudget struct {
	maxWait time.Duration

	mu   sync.Mutex
	left time.Duration // negative: debt
	at   time.Time     // when left was refilled
	// throttled: an episode is under way (counted and logged once); it
	// ends when the bucket is full again.
	throttled bool
}

func newNegotiationBudget(now time.Time, maxWait time.Duration) *negotiationBudget {
	return &negotiationBudget{maxWait: maxWait, left: negotiationBurst, at: now}
}

// refillLocked adds what the time since the last refill earned.
func (b *negotiationBudget) refillLocked(now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.left = min(b.left+time.Duration(float64(d)*negotiationRefill.Seconds()), negotiationBurst)
	}
	b.at = now
}

// chargeNegotiation charges the participant's budget with the time
// handling a description took since start.
func (p *Participant) chargeNegotiation(start time.Time) {
	p.negBudget.charge(start, time.Now())
}

// charge takes the time from start to now.
func (b *negotiationBudget) charge(start, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	maxDebt := time.Duration(float64(b.maxWait) * negotiationRefill.Seconds())
	b.left = max(b.left-now.Sub(start), -maxDebt)
}

// due tells how long the next read must wait for the debt to be repaid
// (0: none), and whether that wait starts an episode.
func (b *negotiationBudget) due(now time.Time) (wait time.Duration, first bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	if b.left >= negotiationBurst {
		b.throttled = false
	}
	if b.left >= 0 {
		return 0, false
	}
	wait = min(time.Duration(float64(-b.left)/negotiationRefill.Seconds()), b.maxWait)
	first = !b.throttled
	b.throttled = true
	return wait, first
}

// throttleReads waits, before the read loop reads the next message, until
// the participant's negotiation debt is repaid, or ctx ends, or the
// participant is closed (its socket is then closed too: the read fails).
func (p *Participant) throttleReads(ctx context.Context) {
	wait, first := p.negBudget.due(time.Now())
	if wait <= 0 {
		return
	}
	if first {
		p.s.metrics.negThrottles.Inc()
		p.log.Info().Dur("wait", wait).Msg("reading signal messages throttled: negotiations used up the budget")
	}
	start := time.Now()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-p.leftAnnounced():
	}
	p.s.metrics.negThrottled.Add(time.Since(start).Seconds())
}
