package focus

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/rs/zerolog"
	"github.com/twitchtv/twirp"
)

// maxWait bounds how long a job waits for its participant and how long a
// send is retried: the sticky-event lifetime of a call membership (MSC4354),
// after which the membership is gone anyway (as lk-jwt-service).
const maxWait = time.Hour

// maxDelegationsPerUser caps a Matrix user's live delegations. Each one is a
// goroutine, a database row and an SFU lookup every poll_interval for up to
// maxWait, and the participant it watches is named by client-chosen fields
// (member.id), so without a cap one user could keep thousands running. A
// user in calls on a few devices needs a handful.
const maxDelegationsPerUser = 16

// delegator runs the delayed-leave jobs (MSC4140 delegation, as
// lk-jwt-service's delayedEventManager):
//
//   - waiting: poll the SFU until the participant is there; if it does not
//     come within min(1h, delay_timeout), send the delayed event.
//   - connected: restart the delayed event at once and then every 80 % of
//     delay_timeout, and poll the SFU every poll_interval. Once the
//     participant is gone (left, dropped or removed) send the delayed event;
//     if a restart finds it gone (404, 409) or keeps failing until it would
//     have fired, stop.
//   - sending: retry until the event would have fired (at least 1 s, at most
//     1 h); 404 counts as sent.
//
// Concurrency: Run's loop owns the jobs map; the HTTP handlers and RemoveUser
// reach it through channels. Each job is one goroutine (plus at most one
// restart request in flight) that Run waits for. Jobs are persisted, so a job
// interrupted by a shutdown resumes, waiting again, at the next start.
//
// Nodes sharing the database run each job once: a job's row names its node
// (delegationStore), Run renews the node's liveness every heartbeat and
// claims the rows of nodes that stopped (they release theirs) or died, and a
// job whose row went to another node stops at its next restart.
type delegator struct {
	cfg     DelayedEventsConfig
	store   *delegationStore
	rooms   RoomService
	cs      *csAPI
	log     zerolog.Logger
	metrics *metrics
	now     func() time.Time
	wait    waiter

	mu sync.Mutex
	// loop is non-nil while Run's loop runs and closed when it stops.
	loop chan struct{}

	addCh  chan addDelegation
	sendCh chan sendNowRequest
	doneCh chan jobDone
}

type addDelegation struct {
	d    *delegation
	errc chan error
}

type sendNowRequest struct {
	roomID, userID string
	n              chan int
}

// job is one running delegation.
type job struct {
	d       *delegation
	cancel  context.CancelFunc
	sendNow chan struct{}
}

type jobOutcome int

const (
	// jobCancelled: stopped by shutdown or replacement; the row stays (or
	// was replaced).
	jobCancelled jobOutcome = iota
	// jobFinished: sent, found gone, or given up; the row goes.
	jobFinished
)

type jobDone struct {
	j       *job
	outcome jobOutcome
}

func newDelegator(cfg DelayedEventsConfig, store *delegationStore, rooms RoomService, cs *csAPI, m *metrics, log zerolog.Logger) *delegator {
	m.delegationsLimit.Set(float64(cfg.MaxJobs))
	return &delegator{
		cfg: cfg, store: store, rooms: rooms, cs: cs, metrics: m, log: log,
		now: time.Now, wait: realWait,
		addCh: make(chan addDelegation), sendCh: make(chan sendNowRequest), doneCh: make(chan jobDone),
	}
}

// running returns the channel closed when the loop stops, or nil.
func (g *delegator) running() chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.loop
}

// add persists d, replacing the delegation of the same participant, and
// starts its job if the loop runs (else the loop resumes it when it starts).
func (g *delegator) add(ctx context.Context, d *delegation) error {
	stopped := g.running()
	if stopped == nil {
		return g.store.save(ctx, d)
	}
	req := addDelegation{d: d, errc: make(chan error, 1)}
	select {
	case g.addCh <- req:
		return <-req.errc
	case <-stopped:
		return g.store.save(ctx, d)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sendNow has the jobs of the user in the Matrix room send their delayed
// leave events at once (the user was removed from the call). It returns how
// many jobs were told.
func (g *delegator) sendNow(ctx context.Context, roomID, userID string) int {
	stopped := g.running()
	if stopped == nil {
		return 0
	}
	req := sendNowRequest{roomID: roomID, userID: userID, n: make(chan int, 1)}
	select {
	case g.sendCh <- req:
		return <-req.n
	case <-stopped:
	case <-ctx.Done():
	}
	return 0
}

// Run resumes the persisted jobs and runs jobs until ctx ends; then it stops
// them (their rows stay for the next start) and returns once they are done.
func (g *delegator) Run(ctx context.Context) {
	stopped := make(chan struct{})
	g.mu.Lock()
	g.loop = stopped
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.loop = nil
		g.mu.Unlock()
		close(stopped)
	}()

	jobs := map[delegationKey]*job{}
	perUser := map[string]int{} // live jobs by Matrix user ID
	// atCap is set when a delegation was refused at max_jobs, so that this
	// is logged once, not per request; it is cleared once the jobs are
	// down to 90 % of the cap.
	atCap := false
	var wg sync.WaitGroup
	start := func(d *delegation) {
		k := d.key()
		if old := jobs[k]; old != nil {
			// Replaced: the old delay ID is neither restarted nor sent;
			// the client scheduled a new one for the same participant.
			old.cancel()
			untrack(perUser, old.d.UserID)
		}
		jctx, cancel := context.WithCancel(ctx)
		j := &job{d: d, cancel: cancel, sendNow: make(chan struct{}, 1)}
		jobs[k] = j
		perUser[d.UserID]++
		g.metrics.delegations.Set(float64(len(jobs)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			outcome := g.runJob(jctx, j)
			select {
			case g.doneCh <- jobDone{j: j, outcome: outcome}:
			case <-ctx.Done():
			}
		}()
	}

	// resume starts the stored jobs this node holds and does not run yet.
	resume := func() {
		stored, err := g.store.all(ctx)
		if err != nil {
			g.log.Error().Err(err).Msg("Failed to load delayed leave events; they are not resumed")
		}
		for _, d := range stored {
			if jobs[d.key()] != nil {
				continue
			}
			if !g.now().Before(d.RestartedAt.Add(d.Timeout)) {
				// It has fired on the homeserver by now.
				if err := g.store.remove(ctx, d.key(), d.DelayID); err != nil {
					g.log.Warn().Err(err).Msg("Failed to forget an expired delayed leave event")
				}
				continue
			}
			g.log.Info().Str("lk_room", d.LiveKitRoom).Str("lk_identity", d.Identity).Msg("Resuming delayed leave delegation")
			start(d)
		}
	}
	g.claim(ctx)
	resume()
	heartbeat := time.NewTicker(g.heartbeat())
	defer heartbeat.Stop()

	for {
		select {
		case <-ctx.Done():
			for _, j := range jobs {
				j.cancel()
			}
			wg.Wait()
			// Only now that none runs: a live node may take them at once.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.RequestTimeout)
			if err := g.store.release(rctx); err != nil {
				g.log.Warn().Err(err).Msg("Failed to hand over the delayed leave events")
			}
			cancel()
			return
		case <-heartbeat.C:
			if g.claim(ctx) > 0 {
				resume()
			}
		case req := <-g.addCh:
			switch overCap(jobs, perUser, req.d, g.cfg.MaxJobs) {
			case capUser:
				req.errc <- tooManyDelegations()
				continue
			case capNode:
				if !atCap {
					atCap = true
					g.log.Warn().Int("max_jobs", g.cfg.MaxJobs).
						Msg("Refusing delayed leave delegations: this node runs focus.delayed_events.max_jobs of them")
				}
				req.errc <- delegationsFull()
				continue
			}
			if err := g.store.save(ctx, req.d); err != nil {
				req.errc <- err
				continue
			}
			start(req.d)
			req.errc <- nil
		case req := <-g.sendCh:
			n := 0
			for _, j := range jobs {
				if j.d.RoomID == req.roomID && j.d.UserID == req.userID {
					select {
					case j.sendNow <- struct{}{}:
					default:
					}
					n++
				}
			}
			req.n <- n
		case done := <-g.doneCh:
			k := done.j.d.key()
			if jobs[k] != done.j {
				continue // replaced meanwhile
			}
			delete(jobs, k)
			untrack(perUser, done.j.d.UserID)
			g.metrics.delegations.Set(float64(len(jobs)))
			if atCap && len(jobs) <= g.cfg.MaxJobs*9/10 {
				atCap = false
				g.log.Info().Int("max_jobs", g.cfg.MaxJobs).Msg("Taking delayed leave delegations again")
			}
			done.j.cancel()
			if done.outcome == jobFinished {
				if err := g.store.remove(ctx, k, done.j.d.DelayID); err != nil {
					g.log.Warn().Err(err).Msg("Failed to forget a finished delayed leave event")
				}
			}
		}
	}
}

// heartbeat is how often a node renews its liveness and claims the jobs of
// nodes that stopped or died; a node that has not renewed it for three
// heartbeats (7.5 poll intervals, 15 s by default) is taken as gone.
func (g *delegator) heartbeat() time.Duration { return g.cfg.PollInterval * 5 / 2 }

// claim renews this node's liveness and takes over the jobs of nodes that
// are not alive, returning how many it took (they still need starting).
// Without a renewal nothing is claimed: the node could be the one taken as
// gone.
func (g *delegator) claim(ctx context.Context) int64 {
	now := g.now()
	if err := g.store.alive(ctx, now.Add(3*g.heartbeat())); err != nil {
		g.log.Warn().Err(err).Msg("Failed to renew the delayed leave node")
		return 0
	}
	n, err := g.store.claim(ctx, now)
	if err != nil {
		g.log.Warn().Err(err).Msg("Failed to take over delayed leave events of stopped nodes")
		return 0
	}
	if n > 0 {
		g.log.Info().Int64("count", n).Msg("Took over delayed leave events of stopped nodes")
	}
	return n
}

// capHit is the cap a new delegation would exceed.
type capHit int

const (
	capNone capHit = iota
	// capUser: maxDelegationsPerUser of its user.
	capUser
	// capNode: delayed_events.max_jobs of this node.
	capNode
)

// overCap tells which cap d would take past, if any. Replacing the user's
// own delegation of the same participant takes no new slot. Only the loop
// checks: one added while it is stopped (a moment at start and shutdown) is
// stored and resumed without the check, and so are the stored ones resumed
// at start, even past maxJobs (their users rely on them; new ones wait
// until enough have ended).
func overCap(jobs map[delegationKey]*job, perUser map[string]int, d *delegation, maxJobs int) capHit {
	switch old := jobs[d.key()]; {
	case old != nil && old.d.UserID == d.UserID:
		return capNone
	case perUser[d.UserID] >= maxDelegationsPerUser:
		return capUser
	case len(jobs) >= maxJobs:
		return capNode
	}
	return capNone
}

// untrack frees one of user's slots, forgetting users with none left so the
// map does not keep every user ever seen.
func untrack(perUser map[string]int, user string) {
	if perUser[user]--; perUser[user] <= 0 {
		delete(perUser, user)
	}
}

// runJob is one delegation's state machine (see delegator).
func (g *delegator) runJob(ctx context.Context, j *job) jobOutcome {
	d := j.d
	log := g.log.With().Str("room_id", d.RoomID).Str("user_id", d.UserID).
		Str("lk_room", d.LiveKitRoom).Str("lk_identity", d.Identity).Logger()

	// Waiting for the participant.
	waitUntil := g.now().Add(min(maxWait, d.Timeout))
	var deadline time.Time // when the delayed event fires, as far as we know
	reason, ok := g.waitForParticipant(ctx, j, waitUntil)
	if ctx.Err() != nil {
		return jobCancelled
	}
	if ok {
		log.Debug().Msg("Delegating participant connected")
		var end connectedEnd
		reason, end = g.whileConnected(ctx, j, &deadline, log)
		switch {
		case ctx.Err() != nil, end == endLost:
			return jobCancelled
		case end == endStop:
			return jobFinished
		}
	}

	// Sending.
	remaining := min(maxWait, max(time.Second, deadline.Sub(g.now())))
	err := retry(ctx, g.cfg, g.now, g.wait, g.now().Add(remaining), func(ctx context.Context) (time.Duration, error) {
		return g.act(ctx, d, actionSend)
	})
	switch {
	case ctx.Err() != nil:
		return jobCancelled
	case err != nil:
		log.Warn().Err(err).Str("reason", reason).Msg("Failed to send the delayed leave event")
	default:
		log.Info().Str("reason", reason).Msg("Sent the delayed leave event")
	}
	return jobFinished
}

// waitForParticipant polls the SFU until the participant is there (ok), the
// job is told to send now, or until passes.
func (g *delegator) waitForParticipant(ctx context.Context, j *job, until time.Time) (reason string, ok bool) {
	expired := time.NewTimer(until.Sub(g.now()))
	defer expired.Stop()
	poll := time.NewTicker(g.cfg.PollInterval)
	defer poll.Stop()
	for {
		if present, err := g.present(ctx, j.d); err == nil && present {
			return "", true
		}
		select {
		case <-ctx.Done():
			return "", false
		case <-j.sendNow:
			return "removed", false
		case <-expired.C:
			return "never connected", false
		case <-poll.C:
		}
	}
}

// connectedEnd is how the connected state ends.
type connectedEnd int

const (
	// endSend: the participant is gone; send the delayed event.
	endSend connectedEnd = iota
	// endStop: the job ends without sending.
	endStop
	// endLost: another node runs the job now (the row was claimed or
	// replaced there); stop and leave the row alone.
	endLost
)

// whileConnected restarts the delayed event while the participant stays. It
// returns endSend with the reason to send once the participant is gone, or
// how else the job ends.
func (g *delegator) whileConnected(ctx context.Context, j *job, deadline *time.Time, log zerolog.Logger) (reason string, end connectedEnd) {
	d := j.d
	// The true deadline is unknown (the client restarted the event at some
	// point before handing it over): assume now, and restart at once.
	*deadline = g.now().Add(d.Timeout)
	restartCtx, cancelRestart := context.WithCancel(ctx)
	defer cancelRestart()
	results := make(chan error, 1)
	inFlight := false
	restart := func() {
		inFlight = true
		until := *deadline
		go func() {
			results <- retry(restartCtx, g.cfg, g.now, g.wait, until, func(ctx context.Context) (time.Duration, error) {
				return g.act(ctx, d, actionRestart)
			})
		}()
	}
	defer func() {
		if inFlight {
			cancelRestart()
			<-results
		}
	}()
	restart()
	var next <-chan time.Time
	var nextTimer *time.Timer
	defer func() {
		if nextTimer != nil {
			nextTimer.Stop()
		}
	}()
	poll := time.NewTicker(g.cfg.PollInterval)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", endStop
		case <-j.sendNow:
			return "removed", endSend
		case <-poll.C:
			if present, err := g.present(ctx, d); err == nil && !present {
				return "participant gone", endSend
			}
		case <-next:
			next = nil
			restart()
		case err := <-results:
			inFlight = false
			if err != nil {
				if errors.Is(err, errDelayedEventGone) {
					log.Info().Msg("The delayed leave event is no longer scheduled; stopping")
				} else {
					log.Warn().Err(err).Msg("Failed to restart the delayed leave event; stopping")
				}
				return "", endStop
			}
			at := g.now()
			*deadline = at.Add(d.Timeout)
			owned, err := g.store.restarted(ctx, d.key(), d.DelayID, at)
			if err != nil {
				log.Warn().Err(err).Msg("Failed to record a restart")
			} else if !owned {
				log.Info().Msg("The delayed leave delegation is no longer this node's; stopping")
				return "", endLost
			}
			// Restart at 80 % of the timeout, as lk-jwt-service.
			nextTimer = time.NewTimer(d.Timeout * 8 / 10)
			next = nextTimer.C
		}
	}
}

// act performs one restart or send and counts it.
func (g *delegator) act(ctx context.Context, d *delegation, action string) (time.Duration, error) {
	base, err := g.cs.resolve(ctx, d.ServerName)
	if err != nil {
		g.metrics.delayedActions.WithLabelValues(action, "unresolved").Inc()
		// As lk-jwt-service: without a Client-Server API there is nothing to do.
		return 0, errors.Join(err, errDelayedEventGone)
	}
	_, hint, err := g.cs.do(ctx, base, d.DelayID, action)
	result := "ok"
	switch {
	case errors.Is(err, errDelayedEventGone):
		result = "gone"
	case err != nil:
		result = "error"
	}
	g.metrics.delayedActions.WithLabelValues(action, result).Inc()
	return hint, err
}

// present asks the SFU whether the participant is connected. An error means
// the SFU could not tell.
func (g *delegator) present(ctx context.Context, d *delegation) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	p, err := g.rooms.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: d.LiveKitRoom, Identity: d.Identity})
	var terr twirp.Error
	switch {
	case errors.As(err, &terr) && terr.Code() == twirp.NotFound:
		return false, nil
	case err != nil:
		return false, err
	}
	return p.GetState() != livekit.ParticipantInfo_DISCONNECTED, nil
}
