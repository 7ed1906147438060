package sfu

import (
	"context"
	"net/http"
	"time"

	"github.com/livekit/protocol/livekit"
)

// Drain moves every participant off this node before it stops, for a
// rolling restart or maintenance: from now on /healthz answers 503 (so a
// balancer sends new connections elsewhere) and joins are refused with 503;
// after grace — the time a balancer needs to notice the failing health
// check, so the clients' reconnects do not land here again — participants
// get Leave{RECONNECT}, batch at a time every interval, so their clients
// reconnect through the site URL to another node instead of all at once.
// It returns when nobody is left or ctx ends.
func (s *Server) Drain(ctx context.Context, grace time.Duration, batch int, interval time.Duration) {
	if batch < 1 {
		batch = 1
	}
	s.draining.Store(true)
	s.log.Info().Dur("grace", grace).Int("batch", batch).Dur("interval", interval).Msg("draining: moving participants to other nodes")
	if grace > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(grace):
		}
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		var ps []*Participant
		for _, r := range s.listRooms() {
			ps = append(ps, r.participantList()...)
		}
		if len(ps) == 0 {
			s.log.Info().Msg("drained")
			return
		}
		for _, p := range ps[:min(batch, len(ps))] {
			p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Leave{Leave: &livekit.LeaveRequest{
				Reason: livekit.DisconnectReason_MIGRATION, Action: livekit.LeaveRequest_RECONNECT,
			}}})
			p.close(livekit.DisconnectReason_MIGRATION, false)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Draining reports whether Drain was called.
func (s *Server) Draining() bool { return s.draining.Load() }

// handleHealthz answers 200 while the node takes participants and 503 once it
// drains (a readiness probe, a balancer's health check).
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}
