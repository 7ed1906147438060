package sfu

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNegotiationBudget: the bucket's arithmetic. A burst of handling is
// free; beyond it each read waits for the debt at a tenth of real time,
// never longer than maxWait (the debt one message leaves is bounded to
// it); an episode lasts until the bucket is full again.
func TestNegotiationBudget(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newNegotiationBudget(t0, 3*time.Second)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	b.charge(at(0), at(900*time.Millisecond)) // 900 ms of handling
	wait, first := b.due(at(900 * time.Millisecond))
	require.Zero(t, wait, "within the burst (and 90 ms refilled)")
	require.False(t, first)

	// 130 ms left at 1.2 s, 200 ms more: 70 ms of debt
	b.charge(at(time.Second), at(1200*time.Millisecond))
	wait, first = b.due(at(1200 * time.Millisecond))
	require.Equal(t, 700*time.Millisecond, wait.Round(time.Millisecond))
	require.True(t, first)

	b.charge(at(1300*time.Millisecond), at(11300*time.Millisecond)) // one message of 10 s
	wait, first = b.due(at(11300 * time.Millisecond))
	require.Equal(t, 3*time.Second, wait, "bounded")
	require.False(t, first, "the same episode")
	wait, _ = b.due(at(14300 * time.Millisecond))
	require.Zero(t, wait, "the bounded debt repaid")

	// Full again 10 s after the debt was repaid: the episode is over.
	wait, first = b.due(at(24300 * time.Millisecond))
	require.Zero(t, wait)
	require.False(t, first)
	b.charge(at(24300*time.Millisecond), at(25400*time.Millisecond))
	_, first = b.due(at(25400 * time.Millisecond))
	require.True(t, first, "a new episode")

	require.Equal(t, 3*time.Second, negotiationWait(5*time.Second, 15*time.Second))
	require.Equal(t, 500*time.Millisecond, negotiationWait(time.Second, 2*time.Second))
}
