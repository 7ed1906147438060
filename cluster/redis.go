package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Redis key and channel schema (prefix P = redis.key_prefix, "gx:" by default;
// every value is JSON as written by codec.go):
//
//	P node:<id>            STRING  node record, SET PX liveness_ttl every heartbeat
//	                               (never over a record of a newer epoch of the same id)
//	P nodes                SET     ids of registered nodes (to find expired records;
//	                               members that are not node IDs are removed)
//	P node:<id>:rooms      SET     rooms where the node has entries (for reaping)
//	P room:<room>:nodes    HASH    node id   -> room entry (node hosts the room)
//	P room:<room>:parts    HASH    identity  -> participant entry (owner node inside)
//	P room:<room>:tracks   HASH    track sid -> track entry (owner node inside)
//	P events               Pub/Sub event (node_up/down, room_*, participant_*, track_*)
//	P node:<id>:msg        Pub/Sub messages to the node (NodeBus), JSON {from, epoch, topic, payload}
//
// With cluster.message_key_file every event and message is published inside
// a signed envelope {body, node, epoch, at, id, mac} (sign.go).
//
// A node writes only entries it owns and deletes only entries whose "node"
// is itself (scripts check it, so a participant that moved to another node
// is not deleted by its old node, and a participant entry is not overwritten
// by an older session, by joined_at, of another node). A node whose record expired is reaped by
// whichever node notices first: its entries are deleted atomically only
// while its record is still absent, and their removal is published. Keys
// outside KEYS are touched by the scripts, so this needs a standalone Redis
// (or Sentinel), not Redis Cluster.

// keyspace builds keys and channel names.
type keyspace struct{ p string }

func (k keyspace) node(id NodeID) string      { return k.p + "node:" + string(id) }
func (k keyspace) nodes() string              { return k.p + "nodes" }
func (k keyspace) nodeRooms(id NodeID) string { return k.p + "node:" + string(id) + ":rooms" }
func (k keyspace) roomNodes(r RoomName) string {
	return k.p + "room:" + string(r) + ":nodes"
}
func (k keyspace) roomParts(r RoomName) string  { return k.p + "room:" + string(r) + ":parts" }
func (k keyspace) roomTracks(r RoomName) string { return k.p + "room:" + string(r) + ":tracks" }
func (k keyspace) events() string               { return k.p + "events" }
func (k keyspace) inbox(id NodeID) string       { return k.p + "node:" + string(id) + ":msg" }

func (k keyspace) hash(e entryKey) string {
	switch e.kind {
	case kindRoom:
		return k.roomNodes(e.room)
	case kindParticipant:
		return k.roomParts(e.room)
	default:
		return k.roomTracks(e.room)
	}
}

// Redis is the multi-node registry. Create it with NewRedis and call Run.
type Redis struct {
	*core
	cfg  Config
	keys keyspace
	// client serves lookups, Send and the Pub/Sub receiver; beat is the
	// loop's own (heartbeats, flushes, reaping, deregistration), so that
	// lookups queued for a connection never hold up a heartbeat and let
	// the node's record expire.
	client *redis.Client
	beat   *redis.Client

	// dirty are owned entries changed since the last flush (under core.mu).
	dirty map[entryKey]struct{}
	// wake asks the loop to flush soon.
	wake chan struct{}
	// view is the other live nodes as of the last heartbeat round.
	view atomic.Pointer[liveView]
	// connected is true while the last Redis round trip worked.
	connected atomic.Bool

	// crashed makes Run skip deregistration (tests simulating kill -9).
	crashed atomic.Bool

	// everRegistered is set after the first successful registration.
	everRegistered atomic.Bool

	// superseded is set while a newer run of this node ID owns the node's
	// record: this process does not write to the registry, nor take the
	// node's messages.
	superseded atomic.Bool

	// ps is the Pub/Sub subscription (events and, unless superseded, the
	// node's inbox); receive reads it. psMu orders the subscription's
	// changes with inboxOn, whether the inbox is in it.
	ps      *redis.PubSub
	psMu    sync.Mutex
	inboxOn bool

	// Owned by the loop goroutine.
	registered  bool
	down        bool // a failure was logged and no success since
	settleUntil time.Time
	// foreignAt is when the heartbeat last reconciled for finding another
	// run's record in place of this one's.
	foreignAt time.Time
	// malformed holds the node records last logged as malformed, by id:
	// each is logged once, not at every heartbeat, and removed once it has
	// stayed the same for liveness_ttl (see dropStuck).
	malformed map[NodeID]badRecord

	// viewMu serialises changes of view and known (the loop's heartbeat
	// rounds and node_down events from the bus).
	viewMu sync.Mutex
	known  map[NodeID]Node
	// sig signs what this node publishes and checks what it receives
	// (cluster.message_key_file).
	sig *signer

	// gone are nodes (by epoch) that announced their departure; a listing
	// read just before it does not bring them back. Only for liveness_ttl:
	// a departing node deletes its record before it announces, so a node
	// still listed after that did not leave (the announcement was forged,
	// e.g. by anyone with write access to Redis), and comes back.
	gone map[NodeID]departure
}

// departure is a node_down announcement: the run and when it arrived.
type departure struct {
	epoch uint64
	at    time.Time
}

// badRecord is a malformed node record, when it was first seen as it is,
// and what was logged about it.
type badRecord struct {
	rec   string
	since time.Time
	why   string
}

// liveView is the other nodes seen alive in one heartbeat round.
type liveView struct {
	nodes []Node
	at    time.Time
}

// NewRedis returns the Redis registry for cfg (redis.address must be set).
// It does not connect; Run does, and keeps retrying while Redis is down.
func NewRedis(cfg Config, log zerolog.Logger, opts ...Option) (*Redis, error) {
	if !cfg.Multi() {
		return nil, errors.New("cluster.redis.address is not set")
	}
	if cfg.SignalURL == "" {
		return nil, errors.New("cluster.signal_url must be set for a multi-node cluster")
	}
	// Set after Validate when derived from the SFU; the other nodes would
	// refuse the record.
	if !validSignalURL(cfg.SignalURL) {
		return nil, errors.New("cluster.signal_url is not a ws(s):// URL with a host, without user info, query or fragment")
	}
	c, err := newCore(cfg, log, opts)
	if err != nil {
		return nil, err
	}
	ro, err := redisOptions(cfg.Redis)
	if err != nil {
		return nil, err
	}
	var key []byte
	if cfg.MessageKeyFile != "" {
		if key, err = loadMessageKey(cfg.MessageKeyFile); err != nil {
			return nil, fmt.Errorf("cluster.message_key_file: %w", err)
		}
	}
	r := &Redis{
		core:   c,
		cfg:    cfg,
		keys:   keyspace{p: cfg.Redis.KeyPrefix},
		client: redis.NewClient(ro),
		beat:   redis.NewClient(beatOptions(ro)),
		dirty:  map[entryKey]struct{}{},
		wake:   make(chan struct{}, 1),
		known:  map[NodeID]Node{},
		gone:   map[NodeID]departure{},
		sig:    newSigner(key, cfg.MessageKeyAcceptUnsigned, c.self.ID, c.self.Epoch, c.opts.now, c.log),
	}
	r.view.Store(&liveView{})
	c.changed = func(k entryKey) {
		r.dirty[k] = struct{}{}
		r.poke()
	}
	c.stateChanged = r.poke
	return r, nil
}

func (r *Redis) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// beatOptions are the loop client's: one command at a time, and a spare.
func beatOptions(ro *redis.Options) *redis.Options {
	o := *ro
	o.PoolSize = 2
	return &o
}

func redisOptions(c RedisConfig) (*redis.Options, error) {
	o := &redis.Options{
		Addr:            c.Address,
		Username:        c.Username,
		DB:              c.DB,
		DialTimeout:     c.DialTimeout,
		ReadTimeout:     c.OpTimeout,
		WriteTimeout:    c.OpTimeout,
		PoolSize:        4,
		MaxRetries:      -1, // the loop retries with backoff; a stuck command must not hold a heartbeat
		DialerRetries:   1,
		DisableIdentity: true,
		// The heartbeat loop and lookups pass deadlines.
		ContextTimeoutEnabled: true,
	}
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("failed to read cluster.redis.password_file: %w", err)
		}
		o.Password = strings.TrimRight(string(b), "\r\n")
	}
	if c.TLS.Enabled {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLS.ServerName}
		if c.TLS.CAFile != "" {
			pem, err := os.ReadFile(c.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("failed to read cluster.redis.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, errors.New("cluster.redis.tls.ca_file holds no PEM certificate")
			}
			tc.RootCAs = pool
		}
		if c.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("failed to load cluster.redis.tls client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		o.TLSConfig = tc
	}
	return o, nil
}

// SigningStats returns the counts of refused publications (and of unsigned
// ones accepted while message_key_accept_unsigned is set).
func (r *Redis) SigningStats() SigningStats { return r.sig.stats() }

// Connected reports whether the last round trip to Redis worked.
func (r *Redis) Connected() bool { return r.connected.Load() }

// Run registers the node, heartbeats, flushes changes and receives events
// until ctx ends; then it deregisters the node (best effort, bounded by
// twice redis.op_timeout), closes every subscription, inbox and the client.
// Redis failures never end it; it returns nil.
func (r *Redis) Run(ctx context.Context) error {
	r.ps = r.client.Subscribe(ctx) // no channel yet: no I/O
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.loop(ctx)
	}()
	go func() {
		defer wg.Done()
		r.receive(ctx)
	}()
	wg.Wait()
	defer r.mail.closeAll()
	defer r.bus.closeAll()
	if !r.crashed.Load() && !r.superseded.Load() && r.everRegistered.Load() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*r.cfg.Redis.OpTimeout)
		err := r.deregister(dctx)
		cancel()
		if err != nil {
			r.log.Warn().Err(err).Msg("failed to deregister from the cluster registry; the record expires by itself")
		}
	}
	// Closing connections Redis already dropped fails; nothing to do about it.
	if err := r.closeClients(); err != nil {
		r.log.Debug().Err(err).Msg("redis client closed with an error")
	}
	return nil
}

func (r *Redis) closeClients() error {
	return errors.Join(r.client.Close(), r.beat.Close())
}

// loop runs heartbeat rounds every heartbeat_interval and flushes changes in
// between; after a failure it retries with backoff (100 ms doubling up to
// heartbeat_interval, jittered).
func (r *Redis) loop(ctx context.Context) {
	interval := r.cfg.HeartbeatInterval
	backoff := time.Duration(0)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
			if !r.registered {
				continue
			}
			if err := r.flush(ctx); err != nil && ctx.Err() == nil {
				r.lost(err)
				backoff = 0
				timer.Reset(0)
			}
			continue
		case <-timer.C:
		}
		next := interval
		if err := r.round(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.lost(err)
			backoff = min(max(2*backoff, 100*time.Millisecond), interval)
			next = backoff/2 + rand.N(backoff/2+1)
		} else {
			backoff = 0
		}
		timer.Reset(next)
	}
}

// lost records that Redis failed; the next successful round reconciles.
func (r *Redis) lost(err error) {
	r.connected.Store(false)
	r.registered = false
	if !r.down {
		r.down = true
		r.log.Warn().Err(err).Msg("cluster registry unreachable; serving from the local view")
	}
}

// round is one heartbeat: write this node's record, read everyone's, reap
// expired nodes, reconcile if needed, flush.
func (r *Redis) round(ctx context.Context) error {
	self := r.Self()
	rec, err := MarshalNode(self)
	if err != nil {
		return fmt.Errorf("failed to encode node record: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	res, err := heartbeatScript.Run(rctx, r.beat,
		[]string{r.keys.node(self.ID), r.keys.nodes()},
		rec, r.cfg.LivenessTTL.Milliseconds(), string(self.ID), r.keys.p+"node:", fmtEpoch(self.Epoch)).StringSlice()
	if err != nil {
		return fmt.Errorf("failed to heartbeat: %w", err)
	}
	if len(res) < 2 || len(res)%2 != 0 {
		return fmt.Errorf("failed to heartbeat: %w: reply of %d items", ErrInvalidRecord, len(res))
	}
	superseded := res[0] == "superseded"
	r.supersede(ctx, superseded, res[1])
	now := r.opts.now()
	// Our record was gone although we were registered: Redis restarted or
	// was flushed, or we were cut off longer than the TTL and got reaped.
	// Or it was another run's (an older run of this node ID registered
	// after a Redis restart, re-publishing its entries and pruning ours);
	// at most once per liveness_ttl, as an older gxconf without this check
	// overwrites the record at every heartbeat.
	reconcile := !superseded && (!r.registered || res[1] == "")
	if !superseded && !reconcile && !r.ownRecord(res[1]) && now.Sub(r.foreignAt) >= r.cfg.LivenessTTL {
		reconcile = true
		r.foreignAt = now
	}
	if reconcile {
		r.settleUntil = now.Add(r.cfg.LivenessTTL + r.cfg.HeartbeatInterval)
	}
	var live []Node
	var dead, invalid []NodeID
	var stuck []badRecord
	var stuckIDs []NodeID
	bad := map[NodeID]badRecord{}
	for i := 2; i+1 < len(res); i += 2 {
		id := NodeID(res[i])
		if id == self.ID {
			continue
		}
		if !ValidNodeID(id) {
			invalid = append(invalid, id)
			continue
		}
		if res[i+1] == "" {
			dead = append(dead, id)
			continue
		}
		n, err := ParseNode([]byte(res[i+1]))
		if err != nil || n.ID != id {
			if err == nil {
				err = fmt.Errorf("%w: record of node %q", ErrInvalidRecord, clip(string(n.ID)))
			}
			b, seen := r.malformed[id]
			// A live node rewrites its record every heartbeat: logged
			// again only for another fault.
			if !seen || b.why != err.Error() {
				r.log.Warn().Err(err).Str("peer_node_id", string(id)).Msg("ignoring malformed node record (logged again when the fault changes)")
				b.why = err.Error()
			}
			if !seen || b.rec != res[i+1] {
				b.rec, b.since = res[i+1], now
			}
			bad[id] = b
			// A heartbeating node rewrites its record (updated_at) every
			// heartbeat_interval, and a record it stopped writing expires
			// within liveness_ttl: one that stayed the same for longer
			// was written without the TTL, and would keep its id listed
			// (and its entries in the directory) for ever.
			if now.Sub(b.since) >= r.cfg.LivenessTTL {
				stuck = append(stuck, b)
				stuckIDs = append(stuckIDs, id)
			}
			continue
		}
		live = append(live, n)
	}
	r.malformed = bad
	r.viewMu.Lock()
	live = r.diff(live, now)
	slices.SortFunc(live, func(a, b Node) int { return strings.Compare(string(a.ID), string(b.ID)) })
	r.view.Store(&liveView{nodes: live, at: now})
	r.viewMu.Unlock()
	r.connected.Store(true)
	if r.down {
		r.down = false
		r.log.Info().Msg("cluster registry reachable again")
	}
	for _, id := range dead {
		if err := r.prune(ctx, id, 0, pruneDead); err != nil {
			return err
		}
	}
	if err := r.dropInvalid(ctx, invalid); err != nil {
		return err
	}
	for i, id := range stuckIDs {
		if err := r.dropStuck(ctx, id, stuck[i].rec); err != nil {
			return err
		}
	}
	if superseded {
		return nil
	}
	if reconcile {
		if err := r.reconcile(ctx); err != nil {
			if errors.Is(err, errNotOwnRecord) {
				// Written over since the heartbeat: the next one tells.
				return nil
			}
			return err
		}
		r.registered = true
		r.everRegistered.Store(true)
		r.log.Info().Int("peers", len(live)).Msg("registered in the cluster")
		return nil
	}
	return r.flush(ctx)
}

// dropInvalid removes members of the nodes set that are not node IDs (no
// node registers one; whoever added it has write access to Redis). Keys
// derived from them are left alone: they may name other nodes' keys.
func (r *Redis) dropInvalid(ctx context.Context, ids []NodeID) error {
	if len(ids) == 0 {
		return nil
	}
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = string(id)
	}
	rctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	if err := r.beat.SRem(rctx, r.keys.nodes(), members...).Err(); err != nil {
		return fmt.Errorf("failed to remove invalid node ids: %w", err)
	}
	for _, id := range ids {
		r.log.Warn().Str("peer_node_id", clip(string(id))).Msg("removed an invalid node id from the cluster registry")
	}
	return nil
}

// dropStuck deletes a malformed node record that outlived liveness_ttl
// unchanged (if it still holds rec); the next heartbeat finds the node
// absent and reaps its entries like those of any expired node.
func (r *Redis) dropStuck(ctx context.Context, id NodeID, rec string) error {
	rctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	n, err := dropRecordScript.Run(rctx, r.beat, []string{r.keys.node(id)}, rec).Int()
	if err != nil {
		return fmt.Errorf("failed to remove malformed record of node %s: %w", id, err)
	}
	delete(r.malformed, id)
	if n == 1 {
		r.log.Warn().Str("peer_node_id", string(id)).Msg("removed a malformed node record that outlived liveness_ttl")
	}
	return nil
}

// clip bounds a string from Redis for a log line.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "…"
}

// ownRecord reports whether rec is this run's node record (by id and epoch
// only: a record this node wrote is never reconciled away for a field the
// strict parser would refuse).
func (r *Redis) ownRecord(rec string) bool {
	var w struct {
		ID    string `json:"id"`
		Epoch string `json:"epoch"`
	}
	return json.Unmarshal([]byte(rec), &w) == nil && w.ID == string(r.self.ID) && w.Epoch == fmtEpoch(r.self.Epoch)
}

// supersede records whether the heartbeat found rec, the node's record, to
// be of a newer run of this node ID (the node was started again while this
// process still runs, or two nodes share a node_id); the heartbeat then
// wrote nothing. The newer run pruned this run's entries when it
// registered; writing on would make the node go down and up at every other
// node at each heartbeat, and deregistering would delete the newer run's
// record and entries. So this process stays out of the registry (keeping
// its view of the others and serving its participants) until the newer
// run's record is gone, and then registers again, reconciling. Meanwhile it
// leaves the node's inbox: Pub/Sub would hand every message for the node to
// both runs, and the older would act on what is meant for the newer. Its
// view and lookups keep leaving out what carries its node ID, the newer
// run's record and entries included (see doc.go): it could not address the
// newer run apart from itself, and its consumers would take those entries
// for its own.
func (r *Redis) supersede(ctx context.Context, superseded bool, rec string) {
	if !superseded {
		if r.superseded.Swap(false) {
			r.setInbox(ctx, true)
			r.log.Info().Msg("the newer run of this node_id left the cluster registry; registering again")
		}
		return
	}
	r.registered = false
	if r.superseded.Swap(true) {
		return
	}
	r.setInbox(ctx, false)
	ev := r.log.Error().Uint64("epoch", r.self.Epoch)
	if n, err := ParseNode([]byte(rec)); err == nil {
		ev = ev.Uint64("newer_epoch", n.Epoch).Str("signal_url", n.SignalURL)
	}
	ev.Msg("a newer run of this node_id is in the cluster registry; this process stays out of it and should be stopped")
}

// diff turns the new listing into node events (under viewMu). While settling after our own
// (re)registration a node missing from the listing is kept (it may not have
// re-registered after a Redis restart yet) instead of being declared down.
func (r *Redis) diff(live []Node, now time.Time) []Node {
	seen := make(map[NodeID]bool, len(live))
	kept := live[:0]
	listed := make(map[NodeID]uint64, len(live))
	for _, n := range live {
		listed[n.ID] = n.Epoch
		if d, ok := r.gone[n.ID]; ok && d.epoch == n.Epoch && now.Sub(d.at) < r.cfg.LivenessTTL {
			continue
		}
		kept = append(kept, n)
		seen[n.ID] = true
		old, ok := r.known[n.ID]
		switch {
		case !ok:
			r.bus.publish(Event{Type: EventNodeUp, Node: n.ID, Epoch: n.Epoch})
		case old.Epoch != n.Epoch:
			r.bus.publish(Event{Type: EventNodeDown, Node: n.ID, Epoch: old.Epoch})
			r.bus.publish(Event{Type: EventNodeUp, Node: n.ID, Epoch: n.Epoch})
		case old.State != n.State || old.SignalURL != n.SignalURL || old.RelayAddr != n.RelayAddr ||
			!slices.Equal(old.MediaAddrs, n.MediaAddrs) || old.Site != n.Site:
			r.bus.publish(Event{Type: EventNodeUpdated, Node: n.ID, Epoch: n.Epoch})
		}
		r.known[n.ID] = n
	}
	live = kept
	for id, d := range r.gone {
		if le, ok := listed[id]; !ok || le != d.epoch || now.Sub(d.at) >= r.cfg.LivenessTTL {
			delete(r.gone, id)
		}
	}
	for id, old := range r.known {
		if seen[id] {
			continue
		}
		if now.Before(r.settleUntil) {
			live = append(live, old)
			continue
		}
		delete(r.known, id)
		r.bus.publish(Event{Type: EventNodeDown, Node: id, Epoch: old.Epoch})
	}
	return live
}

// forget drops a node that announced its departure on the bus, so that it
// leaves the view before its record would have been missed.
func (r *Redis) forget(id NodeID, epoch uint64) {
	r.viewMu.Lock()
	defer r.viewMu.Unlock()
	if old, ok := r.known[id]; !ok || old.Epoch != epoch {
		return
	}
	delete(r.known, id)
	r.gone[id] = departure{epoch: epoch, at: r.opts.now()}
	v := r.view.Load()
	nodes := make([]Node, 0, len(v.nodes))
	for _, n := range v.nodes {
		if n.ID != id {
			nodes = append(nodes, n)
		}
	}
	r.view.Store(&liveView{nodes: nodes, at: v.at})
}

// deregister removes this node's record and entries and announces it.
func (r *Redis) deregister(ctx context.Context) error {
	id := r.self.ID
	mine, err := deregisterScript.Run(ctx, r.beat, []string{r.keys.node(id)}, string(id), fmtEpoch(r.self.Epoch)).Int()
	if err != nil {
		return fmt.Errorf("failed to delete node record: %w", err)
	}
	if mine == 0 {
		// A newer run took over the node ID (see supersede) before this
		// one noticed; its record and entries are not ours to delete.
		return nil
	}
	if err := r.prune(ctx, id, 0, pruneDead); err != nil {
		return err
	}
	return r.publish(ctx, Event{Type: EventNodeDown, Node: id, Epoch: r.self.Epoch})
}

// Send delivers a message to a node's inboxes over Redis Pub/Sub (to this
// node: directly).
func (r *Redis) Send(ctx context.Context, to NodeID, topic string, payload []byte) error {
	local, err := r.checkSend(to, topic, payload)
	if err != nil || local {
		return err
	}
	if !ValidNodeID(to) {
		return fmt.Errorf("node %q: %w", to, ErrNotDelivered)
	}
	b, err := MarshalMessage(Message{From: r.self.ID, FromEpoch: r.self.Epoch, Topic: topic, Payload: payload})
	if err != nil {
		return fmt.Errorf("failed to encode message: %w", err)
	}
	if b, err = r.sig.seal(r.keys.inbox(to), b); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Redis.OpTimeout)
	defer cancel()
	n, err := r.client.Publish(ctx, r.keys.inbox(to), b).Result()
	if err != nil {
		return fmt.Errorf("failed to send to node %s: %w: %w", to, ErrUnavailable, err)
	}
	if n == 0 {
		return fmt.Errorf("node %s: %w", to, ErrNotDelivered)
	}
	return nil
}

func (r *Redis) publish(ctx context.Context, ev Event) error {
	b, err := MarshalEvent(ev)
	if err != nil {
		return fmt.Errorf("failed to encode event: %w", err)
	}
	if b, err = r.sig.seal(r.keys.events(), b); err != nil {
		return err
	}
	if err := r.beat.Publish(ctx, r.keys.events(), b).Err(); err != nil {
		return fmt.Errorf("failed to publish event: %w", err)
	}
	return nil
}

// RedisLogger routes go-redis' own log lines (it has one process-wide
// logger) into zerolog; cmd/gxconf installs it with redis.SetLogger.
type RedisLogger struct{ Log zerolog.Logger }

// Printf logs one go-redis message as a warning.
func (l RedisLogger) Printf(_ context.Context, format string, v ...any) {
	l.Log.Warn().Str("detail", fmt.Sprintf(format, v...)).Msg("redis client")
}
