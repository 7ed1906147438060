package sfu_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
)

// Drain tells every participant to reconnect elsewhere, batch by batch, and
// from its start refuses joins and fails the health check, so a balancer
// sends the reconnects to another node.
func TestDrainMovesParticipantsAway(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	var socks []*websocket.Conn
	for _, id := range []string{"a", "b", "c"} {
		ws, first := rawJoin(t, ts, "dr", id, "")
		require.NotNil(t, first.GetJoin())
		socks = append(socks, ws)
	}
	defer func() {
		for _, ws := range socks {
			ws.CloseNow()
		}
	}()
	resp, err := http.Get(httpURL(ts) + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	done := make(chan struct{})
	const grace = 300 * time.Millisecond
	start := time.Now()
	go func() {
		defer close(done)
		ts.srv.Drain(context.Background(), grace, 2, 50*time.Millisecond)
	}()
	// During the grace period the node fails /healthz (balancers take it
	// out) but nobody is told to leave yet.
	require.Eventually(t, func() bool {
		resp, err := http.Get(httpURL(ts) + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, time.Second, 5*time.Millisecond)
	for i, ws := range socks {
		// Skip the offers and updates queued before the leave.
		var leave *livekit.LeaveRequest
		for leave == nil {
			leave = readSignal(t, ws).GetLeave()
		}
		require.Equal(t, livekit.LeaveRequest_RECONNECT, leave.GetAction())
		require.Equal(t, livekit.DisconnectReason_MIGRATION, leave.GetReason())
		if i == 0 {
			require.GreaterOrEqual(t, time.Since(start), grace, "the first leave waits for the grace period")
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return once everyone left")
	}
	require.True(t, ts.srv.Draining())
	resp, err = http.Get(httpURL(ts) + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	resp, err = http.Get(httpURL(ts) + "/rtc/validate?access_token=" + ts.token(t, "dr", "d", nil))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "no joins while draining")
}
