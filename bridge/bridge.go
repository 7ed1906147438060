package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Errors.
var (
	ErrClosed   = errors.New("bridge is closed")
	ErrTimeout  = errors.New("relay association did not connect in time")
	ErrSelfLink = errors.New("cannot link a node to itself")
)

// Bridge relays rooms of the local SFU to other nodes. Associations are
// created by Link (dialing) or by an authenticated offer on the relay
// address; each is owned by the bridge until Unlink, failure or the end
// of Run.
type Bridge struct {
	cfg Config
	sfu SFU
	log zerolog.Logger
	ln  net.Listener
	ip  net.IP // relay IP for media; nil: any
	// sock is the node's relay socket: UDP on the listener's port, for
	// every association accepted (socket.go).
	sock *relaySocket
	// drops counts relay datagrams dropped on arrival, on all sockets.
	drops dropCounters
	// lossyDropped counts lossy data (_lossy DataPackets, data track
	// packets) not relayed because a control channel was backed up.
	lossyDropped atomic.Uint64
	// backlogFailed counts associations failed because the peer node did
	// not take its control messages (maxControlBacklog).
	backlogFailed atomic.Uint64
	client        *http.Client
	srv           *http.Server
	mux           *http.ServeMux
	// peering is set before Run (SetPeering); zero: no peers.
	peering Peering
	// peerPoke wakes FollowPeers (a participant joined a peer room).
	peerPoke chan struct{}
	// refused counts what peers asked of our rooms and were refused, by
	// peer deployment and kind (under mu).
	refused map[[2]string]uint64
	// unauthLogs bounds the log lines of unauthenticated signalling
	// requests, which anyone on the IX can send (each is still counted).
	unauthLogs *zerolog.BurstSampler

	mu     sync.Mutex
	assocs map[assocKey]*association
	// peerPending counts the peer associations being set up, by key
	// (reservePeerAssociation).
	peerPending map[assocKey]int
	nonces      map[string]time.Time
	closed      bool
	wg          sync.WaitGroup // one per live association, until closed
	// retired keeps the counters of ended associations per peer (Peers).
	retired map[string]*PeerStats
	// rate turns the relay's byte totals into Bitrate.
	rate rateMeter
}

type assocKey struct{ room, peer string }

// unauthLogBurst is how many unauthenticated signalling requests a minute
// are logged.
const unauthLogBurst = 20

// New validates cfg and opens the relay listener (so Addr is known before
// Run).
func New(cfg Config, s SFU, log zerolog.Logger) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on the relay address: %w", err)
	}
	b := &Bridge{
		cfg:         cfg,
		sfu:         s,
		log:         log.With().Str("node_id", cfg.NodeID).Logger(),
		ln:          ln,
		client:      &http.Client{Timeout: cfg.ConnectTimeout},
		assocs:      map[assocKey]*association{},
		peerPending: map[assocKey]int{},
		nonces:      map[string]time.Time{},
		peerPoke:    make(chan struct{}, 1),
		refused:     map[[2]string]uint64{},
		unauthLogs:  &zerolog.BurstSampler{Burst: unauthLogBurst, Period: time.Minute},
	}
	if cfg.TestLinkDelay > 0 {
		b.log.Warn().Dur("delay", cfg.TestLinkDelay).Float64("loss", cfg.TestLinkLoss).Msg("Relay link impaired for tests")
	} else if cfg.TestLinkLoss > 0 {
		b.log.Warn().Float64("loss", cfg.TestLinkLoss).Msg("Relay link impaired for tests")
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsUnspecified() {
		b.ip = ip
	}
	if b.sock, err = newRelaySocket(b.ip, ln.Addr().(*net.TCPAddr).Port, cfg.TestLinkDelay, &b.drops); err != nil {
		ln.Close()
		return nil, err
	}
	b.mux = http.NewServeMux()
	b.mux.HandleFunc(associatePath, b.handleAssociate)
	// The MAC is checked once the body is read: the timeouts keep a
	// client that stops sending from holding a goroutine and a socket,
	// and no handler reads more than maxSignalBody.
	b.srv = &http.Server{
		Handler:           http.MaxBytesHandler(b.mux, maxSignalBody),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       signalReadTimeout,
		IdleTimeout:       signalIdleTimeout,
		MaxHeaderBytes:    maxSignalHeader,
	}
	return b, nil
}

// Addr is the relay address peers dial (host:port).
func (b *Bridge) Addr() string { return b.ln.Addr().String() }

// Run serves relay signalling until ctx ends, then closes every
// association and returns once all its goroutines are done.
func (b *Bridge) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- b.srv.Serve(b.ln) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.srv.Shutdown(sctx)
	if err == nil {
		<-errc
	}
	b.mu.Lock()
	b.closed = true
	all := make([]*association, 0, len(b.assocs))
	for _, a := range b.assocs {
		all = append(all, a)
	}
	b.mu.Unlock()
	for _, a := range all {
		b.drop(a)
	}
	b.wg.Wait()
	b.sock.close()
	b.client.CloseIdleConnections()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Link makes room span this node and peer (at relay address addr). The
// node whose id sorts lower dials and Link returns once the association
// is up; on the other node Link returns at once and the association comes
// in from the peer. Linking a linked pair again is a no-op.
func (b *Bridge) Link(ctx context.Context, room, peer, addr string) error {
	if peer == b.cfg.NodeID {
		return ErrSelfLink
	}
	if b.cfg.NodeID > peer {
		return nil
	}
	return b.dial(ctx, assocKey{room, peer}, nil, func(ctx context.Context, _ *association, offer *signal) (*signal, error) {
		return b.dialSignal(ctx, addr, offer)
	})
}

// dial brings up the association key as the dialling side: it waits for
// one already under way, or creates it, sends its offer through send and
// returns once media can flow. A failed association is dropped.
func (b *Bridge) dial(ctx context.Context, key assocKey, pr *peerRole, send func(context.Context, *association, *signal) (*signal, error)) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	if a := b.assocs[key]; a != nil {
		b.mu.Unlock()
		return a.wait(ctx)
	}
	b.mu.Unlock()
	a, offer, err := b.newAssociation(key.room, key.peer, true, "", pr)
	if err != nil {
		return err
	}
	if err := b.register(a); err != nil {
		a.close()
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
	defer cancel()
	ans, err := send(ctx, a, offer)
	if err != nil {
		b.drop(a)
		return err
	}
	a.startAsync(ans)
	if err := a.wait(ctx); err != nil {
		b.drop(a)
		return err
	}
	return nil
}

// Unlink closes the association of room with peer: the peer's
// participants leave this node's room and this node's stop there.
func (b *Bridge) Unlink(room, peer string) {
	b.mu.Lock()
	a := b.assocs[assocKey{room, peer}]
	b.mu.Unlock()
	if a != nil {
		b.drop(a)
	}
}

// Linked tells whether room has a connected association with peer.
func (b *Bridge) Linked(room, peer string) bool {
	b.mu.Lock()
	a := b.assocs[assocKey{room, peer}]
	b.mu.Unlock()
	return a != nil && a.isOpen()
}

// Stats returns the counters of room's association with peer.
func (b *Bridge) Stats(room, peer string) (LinkStats, bool) {
	b.mu.Lock()
	a := b.assocs[assocKey{room, peer}]
	b.mu.Unlock()
	if a == nil {
		return LinkStats{}, false
	}
	return a.linkStats(), true
}

// accept creates the association of room with peer for an authenticated
// offer and returns our answer; an existing association for the pair is
// replaced (the peer restarted it). pr is set for a peered deployment.
func (b *Bridge) accept(room, peer, nonce string, pr *peerRole) (*association, *signal, error) {
	b.mu.Lock()
	old := b.assocs[assocKey{room, peer}]
	b.mu.Unlock()
	if old != nil {
		b.drop(old)
	}
	a, ans, err := b.newAssociation(room, peer, false, nonce, pr)
	if err != nil {
		return nil, nil, err
	}
	if err := b.register(a); err != nil {
		a.close()
		return nil, nil, err
	}
	return a, ans, nil
}

func (b *Bridge) register(a *association) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	key := assocKey{a.room, a.peer}
	if b.assocs[key] != nil {
		return fmt.Errorf("relay association with %s for this room already exists", a.peer)
	}
	b.assocs[key] = a
	b.wg.Add(1)
	return nil
}

// drop closes a registered association and forgets it.
func (b *Bridge) drop(a *association) {
	b.mu.Lock()
	key := assocKey{a.room, a.peer}
	mine := b.assocs[key] == a
	if mine {
		delete(b.assocs, key)
		// In the same critical section, so Peers never sees the counters
		// go down (the few packets of the closing moments are not counted).
		b.retireLocked(a)
	}
	b.mu.Unlock()
	if !mine {
		return
	}
	a.close()
	b.wg.Done()
}

// fail closes an association from one of its own goroutines.
func (b *Bridge) fail(a *association) {
	b.mu.Lock()
	mine := b.assocs[assocKey{a.room, a.peer}] == a
	if mine {
		b.wg.Add(1) // the closer; the association's own count keeps b.wg > 0
	}
	b.mu.Unlock()
	if !mine {
		return
	}
	go func() {
		defer b.wg.Done()
		b.drop(a)
	}()
}

// unauthLog is the log for unauthenticated signalling requests (at most
// unauthLogBurst lines a minute).
func (b *Bridge) unauthLog() *zerolog.Logger {
	l := b.log.Sample(b.unauthLogs)
	return &l
}
