package sfu_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestICERestartsShareCandidates: a connection's ICE restarts get a fresh
// budget of 128 remote candidates 4 times at once (then once every 30 s);
// a restart beyond shares what the previous generation left. Each restart
// gave 128 new addresses for the ICE agent to probe, so a client
// restarting in a loop had the SFU probe any number of addresses. A
// generation that took few candidates, as a browser's, leaves its
// successor nearly all. Candidates left out for sharing are counted as
// ice_candidates_ignored_total{reason="ice_restarts"}.
func TestICERestartsShareCandidates(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	client := newCandidateClient(t, ts, "restarts", "mallory")
	// restart offers an ICE restart (or, the first time, the first offer)
	// with n candidates at 192.0.2.gen in place of the client's own, and
	// returns how many of them the connection took.
	restart := func(gen, n int) int {
		t.Helper()
		ip := fmt.Sprintf("192.0.2.%d", gen)
		client.negotiate(client.offerID > 0, ip, 10000, 10000+n)
		return ts.srv.RemoteCandidates("restarts", "mallory", ip)
	}
	ignored := func(reason string) float64 {
		return ts.metricWith(t, "gxconf_sfu_ice_candidates_ignored_total", "reason", reason)
	}

	require.Equal(t, 128, restart(0, 150), "the first generation")
	for gen := 1; gen <= 3; gen++ {
		require.Equal(t, 128, restart(gen, 150), "restart %d: a fresh budget", gen)
	}
	require.Equal(t, 3, restart(4, 3), "restart 4: a fresh budget, as a browser uses it")
	require.EqualValues(t, 4*22, ignored("limit"))
	require.Zero(t, ignored("ice_restarts"))

	// Beyond: a restart gets what the previous generation left (restart
	// 5: what restart 4 left, then nothing). One more fresh budget comes
	// every 30 s: a slow run may see one, a restart taking 128 then.
	limit, shared, refills, last := 4*22, 0, 0, 0
	for gen := 5; gen <= 7; gen++ { // 8 offers: all a client that did not connect gets answered
		n := restart(gen, 150)
		switch {
		case n == 128:
			refills++
			limit += 22
		case gen == 5:
			require.Equal(t, 125, n, "restart 5 shares what restart 4 left")
			shared += 150 - n
		default:
			require.Zero(t, n, "restart %d took candidates with none left", gen)
			shared += 150
		}
		last = n
	}
	require.LessOrEqual(t, refills, 1, "restarts 5 to 7 got fresh budgets")
	require.EqualValues(t, limit, ignored("limit"))
	require.EqualValues(t, shared, ignored("ice_restarts"))

	// Trickled ones count alike.
	client.trickle("192.0.2.7", 30000)
	if last == 128 {
		limit++
	} else {
		shared++
	}
	require.Eventually(t, func() bool { return ignored("ice_restarts") == float64(shared) && ignored("limit") == float64(limit) },
		5*time.Second, 5*time.Millisecond, "a trickled one over the shared budget")
}
