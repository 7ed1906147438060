package sfu

// Remote candidate budgets across ICE generations. A connection takes at
// most maxCandidates remote candidates per ICE generation, and every
// candidate makes the ICE agent send checks to the address it names; an
// ICE restart (a new remote ufrag) starts a generation, so a client
// restarting ICE in a loop had the SFU probe 128 new addresses each time.
// Clients restart ICE when their network changes or their signal
// connection is resumed: a few times in a call, rarely twice in a minute.
// So a connection's restarts get a fresh budget freshICERestarts times at
// once and once every freshICERestartEvery after; beyond, a restart's
// generation shares what its predecessor left of the budget (a browser's
// generation takes a handful of candidates, so it leaves nearly all).
// Candidates left out for that are counted as
// ice_candidates_ignored_total{reason="ice_restarts"}.

import (
	"maps"
	"time"

	"github.com/livekit/protocol/livekit"
)

const (
	freshICERestarts     = 4
	freshICERestartEvery = 30 * time.Second
)

// restartBudget counts the fresh candidate budgets a connection's ICE
// restarts may still have: freshICERestarts, one more every
// freshICERestartEvery. Guarded by Participant.mu.
type restartBudget struct {
	left float64
	at   time.Time // when left was refilled; zero: never used, full
}

func (b *restartBudget) refill(now time.Time) {
	if b.at.IsZero() {
		b.left, b.at = freshICERestarts, now
		return
	}
	if d := now.Sub(b.at); d > 0 {
		b.left = min(b.left+d.Seconds()/freshICERestartEvery.Seconds(), freshICERestarts)
	}
	b.at = now
}

// available tells whether a restart now would get a fresh budget.
func (b *restartBudget) available(now time.Time) bool {
	b.refill(now)
	return b.left >= 1
}

// take spends a fresh budget, if there is one.
func (b *restartBudget) take(now time.Time) bool {
	if !b.available(now) {
		return false
	}
	b.left--
	return true
}

// candidateRoomLocked says how a description with ice-ufrag ufrag may add
// remote candidates to target's connection: the candidates of its ICE
// generation already taken (a copy, nil for a new generation), how many
// more it may take, and whether the generation shares the budget of
// earlier ones. Caller holds p.mu.
func (p *Participant) candidateRoomLocked(target livekit.SignalTarget, ufrag string, now time.Time) (seen map[string]struct{}, room int, shared bool) {
	if ufrag == p.remoteUfrag[target] {
		// a copy: in single mode a held offer is set from its timer
		// while the read loop takes trickled candidates
		return maps.Clone(p.candSeen[target]), p.candidateRoomOfGenerationLocked(target), p.candShared[target]
	}
	if p.remoteUfrag[target] == "" || p.iceRestarts[target].available(now) {
		return nil, maxCandidates, false
	}
	return nil, p.candidateRoomOfGenerationLocked(target), true // what the current one leaves
}

// candidateRoomOfGenerationLocked is how many more remote candidates
// target's connection may take in its ICE generation. Caller holds p.mu.
func (p *Participant) candidateRoomOfGenerationLocked(target livekit.SignalTarget) int {
	return max(maxCandidates-p.candCarry[target]-len(p.candSeen[target]), 0)
}

// candidateLimitReason is the ice_candidates_ignored_total reason for a
// candidate over the bound of a generation.
func candidateLimitReason(shared bool) string {
	if shared {
		return "ice_restarts"
	}
	return "limit"
}

// newICEGenerationLocked starts target's ICE generation of ufrag, once its
// description is set: with a fresh candidate budget when it is the first or
// a restart may have one, else with what the previous one left. Caller
// holds p.mu.
func (p *Participant) newICEGenerationLocked(target livekit.SignalTarget, ufrag string, now time.Time) {
	if p.remoteUfrag[target] == "" || p.iceRestarts[target].take(now) {
		p.candCarry[target], p.candShared[target] = 0, false
	} else {
		p.candCarry[target] = min(p.candCarry[target]+len(p.candSeen[target]), maxCandidates)
		p.candShared[target] = true
	}
	p.remoteUfrag[target], p.candSeen[target] = ufrag, nil
}
