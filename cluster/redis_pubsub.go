package cluster

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// receive delivers the bus' events to subscribers until ctx ends. go-redis
// reconnects and re-subscribes by itself; a re-subscription means events may
// have been lost, so subscribers get EventResync.
func (r *Redis) receive(ctx context.Context) {
	inbox := r.keys.inbox(r.self.ID)
	ps := r.ps
	r.psMu.Lock()
	channels := []string{r.keys.events()}
	if !r.superseded.Load() {
		channels = append(channels, inbox)
		r.inboxOn = true
	}
	// On failure go-redis subscribes when it (re)connects.
	_ = ps.Subscribe(ctx, channels...)
	r.psMu.Unlock()
	done := make(chan struct{})
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		select {
		case <-ctx.Done():
		case <-done:
		}
		_ = ps.Close()
	}()
	defer func() {
		close(done)
		<-closed
	}()

	idle := 2 * r.cfg.LivenessTTL
	subscribed := false
	backoff := time.Duration(0)
	for {
		msg, err := ps.ReceiveTimeout(ctx, idle)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Quiet bus: make sure the connection is alive.
				_ = ps.Ping(ctx)
				continue
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), r.cfg.HeartbeatInterval)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff/2 + rand.N(backoff/2+1)):
			}
			continue
		}
		backoff = 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == r.keys.events() {
				if subscribed {
					r.bus.publish(Event{Type: EventResync})
				}
				subscribed = true
			}
		case *redis.Message:
			if m.Channel == inbox {
				if r.superseded.Load() {
					continue // sent before setInbox took effect; the newer run has it too
				}
				body, from, err := r.sig.open(KindMessage, m.Channel, []byte(m.Payload))
				if err != nil {
					continue // counted and logged
				}
				msg, err := ParseMessage(body)
				if err != nil {
					r.log.Warn().Err(err).Msg("ignoring malformed cluster message")
					continue
				}
				if r.sig.checkSender(KindMessage, from, msg.From, msg.FromEpoch) != nil {
					continue
				}
				r.mail.deliver(msg)
				continue
			}
			body, from, err := r.sig.open(KindEvent, m.Channel, []byte(m.Payload))
			if err != nil {
				continue
			}
			ev, err := ParseEvent(body)
			if err != nil {
				r.log.Warn().Err(err).Msg("ignoring malformed cluster event")
				continue
			}
			if senderBound(ev.Type) && r.sig.checkSender(KindEvent, from, ev.Node, ev.Epoch) != nil {
				continue
			}
			if ev.Node == r.self.ID && ev.Epoch == r.self.Epoch {
				continue // delivered locally when it happened
			}
			if ev.Type == EventNodeDown {
				r.forget(ev.Node, ev.Epoch)
			}
			r.bus.publish(ev)
		}
	}
}

// setInbox adds the node's inbox to the subscription or takes it out. A
// failed command needs no retry: go-redis subscribes to the channels last
// asked for whenever it (re)connects.
func (r *Redis) setInbox(ctx context.Context, on bool) {
	r.psMu.Lock()
	defer r.psMu.Unlock()
	if r.inboxOn == on {
		return
	}
	r.inboxOn = on
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	var err error
	if on {
		err = r.ps.Subscribe(ctx, r.keys.inbox(r.self.ID))
	} else {
		err = r.ps.Unsubscribe(ctx, r.keys.inbox(r.self.ID))
	}
	if err != nil {
		r.log.Debug().Err(err).Bool("subscribe", on).Msg("inbox subscription change deferred to the reconnect")
	}
}
