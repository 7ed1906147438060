package sfu

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/utils/guid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// serverVersion is what JoinResponse reports. livekit-client turns on
// features by version (RPC >= 1.8.0, SVC simulcast > 1.13.6); 1.9.0 gets
// the former and not the latter.
const serverVersion = "1.9.0"

// serverProtocol is the signalling protocol version this server speaks.
const serverProtocol = 16

// Server is the embedded SFU. Its zero value is not usable; call New.
//
// Concurrency: s.mu guards rooms and closed. Every goroutine the server
// starts is counted in s.wg, which Run waits for after shutdown.
type Server struct {
	cfg     Config
	log     zerolog.Logger
	metrics *metrics
	nodeID  string

	pubAPI *apiRecipe
	subAPI *apiRecipe
	single *apiRecipe // single peer connections (/rtc/v1)
	socks  *mediaSockets
	// batchConn is the UDP mux socket for the direct path's sendmmsg (nil without it).
	batchConn *RawUDP
	// gso: the kernel segments UDP sends (UDP_SEGMENT); gsoOff is set when
	// it refused one at run time.
	gso    bool
	gsoOff gsoSwitch
	// directRecv: publishers' RTP on the mux socket is taken where the
	// socket is read (fastrecv.go); recvAddrs maps their source addresses.
	directRecv bool
	recvAddrs  addrTable[*pubRecv]
	// readers counts the media sockets' readers (each with a shared send
	// batch, readHooks); set before the server starts.
	readers int
	// rtcpAddrs maps connections' source addresses to the guards that
	// bound what their RTCP makes pion keep (rtcpguard.go).
	rtcpAddrs addrTable[*rtcpGuard]

	mu     sync.Mutex
	rooms  map[string]*Room
	closed bool
	wg     sync.WaitGroup
	done   chan struct{}

	ready    chan struct{}
	httpAddr net.Addr

	svc *roomService
	// load turns byte counters into bitrates for Load.
	load loadMeter
	// hooks are set before Run (SetRoomHooks).
	hooks RoomHooks
	// fwd, when set (before Run), makes the Twirp RoomService cluster-wide.
	fwd Forwarder
	// draining refuses joins and fails /healthz (Drain).
	draining atomic.Bool
	// grants, when set (before Run), is asked about every token.
	grants GrantChecker
	// peering admits peered deployments' subscribers (SetPeering, before Run).
	peering Peering
	// tls, when set, serves the signalling listener with TLS (SetTLSConfig).
	tls *tls.Config
	// turn is the embedded TURN server (nil unless turn.enabled).
	turn *turnServer
}

// New validates cfg, opens the media sockets and prepares the server. The
// HTTP listener is opened by Run.
func New(cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid sfu config: %w", err)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("failed to register sfu metrics: %w", err)
	}
	nodeID := cfg.NodeID
	if nodeID == "" {
		nodeID = guid.New("ND_")
	}
	log = log.With().Str("node_id", nodeID).Logger()
	lf := newPionLoggerFactory(log, false)
	se, socks, err := newSettingEngine(&cfg, lf)
	if err != nil {
		return nil, err
	}
	fb := newFeedbackClock(feedbackInterval)
	pubAPI, err := newPublisherAPI(se, fb)
	if err != nil {
		_ = socks.close()
		return nil, fmt.Errorf("failed to build publisher api: %w", err)
	}
	subAPI, err := newSubscriberAPI(se)
	if err != nil {
		_ = socks.close()
		return nil, fmt.Errorf("failed to build subscriber api: %w", err)
	}
	singleAPI, err := newSinglePCAPI(se, fb)
	if err != nil {
		_ = socks.close()
		return nil, fmt.Errorf("failed to build single peer connection api: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		log:     log,
		metrics: m,
		nodeID:  nodeID,
		pubAPI:  pubAPI,
		subAPI:  subAPI,
		single:  singleAPI,
		socks:   socks,
		rooms:   map[string]*Room{},
		done:    make(chan struct{}),
		ready:   make(chan struct{}),
	}
	if socks.udp != nil && cfg.RTC.DirectSend {
		s.batchConn = socks.raw
		s.gso = cfg.RTC.GSO && gsoSupported(socks.udp)
		s.gsoOff.gauge = m.gso
		if s.gso {
			m.gso.Set(1)
		}
		if cfg.RTC.DirectReceive {
			s.directRecv = true
			socks.raw.SetReadHooks(s.readHooks)
		}
		log.Info().Bool("segmentation_offload", s.gso).Bool("direct_receive", s.directRecv).Msg("Direct send path on the UDP mux socket")
	}
	s.svc = &roomService{s: s}
	if cfg.TURN.Enabled {
		ext := ""
		if cfg.RTC.UseExternalIP && cfg.TURN.RelayIP == "" {
			if ext, err = discoverExternalIP(cfg.RTC.STUNServers); err != nil {
				_ = socks.close()
				return nil, fmt.Errorf("failed to discover external ip for turn (rtc.use_external_ip): %w", err)
			}
		}
		if s.turn, err = newTURNServer(&cfg, ext, log.With().Str("component", "turn").Logger(), reg, s.hasIdentity, socks.ports); err != nil {
			_ = socks.close()
			return nil, err
		}
	}
	return s, nil
}

// hasIdentity tells whether identity is a participant of a room on this node.
func (s *Server) hasIdentity(identity string) bool {
	for _, r := range s.listRooms() {
		if r.participant(identity) != nil {
			return true
		}
	}
	return false
}

// RoomService returns the in-process, trusted RoomService: no grant checks.
// Errors are *twirp.Error values with LiveKit's codes (not_found, ...).
func (s *Server) RoomService() livekit.RoomService { return s.svc }

// Ready is closed once Run listens for HTTP.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// URL returns the WebSocket URL clients should use: rtc.public_url when
// set, else derived from the HTTP listen address (actual port once Run
// listens) and path_prefix.
func (s *Server) URL() string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	addr := s.cfg.Listen
	select {
	case <-s.ready:
		addr = s.httpAddr.String()
	default:
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
		if s.cfg.RTC.NodeIP != "" {
			host = s.cfg.RTC.NodeIP
		}
	}
	scheme := "ws://"
	if s.tls != nil {
		scheme = "wss://"
	}
	return scheme + net.JoinHostPort(host, port) + s.cfg.PathPrefix
}

// clientConfiguration is the ClientConfiguration of JoinResponse and
// ReconnectResponse: resume is on unless sfu.resume_window is 0 (then
// clients always rejoin).
func (s *Server) clientConfiguration() *livekit.ClientConfiguration {
	resume := livekit.ClientConfigSetting_ENABLED
	if s.cfg.ResumeWindow <= 0 {
		resume = livekit.ClientConfigSetting_DISABLED
	}
	return &livekit.ClientConfiguration{ResumeConnection: resume}
}

func (s *Server) serverInfo() *livekit.ServerInfo {
	return &livekit.ServerInfo{
		Edition:  livekit.ServerInfo_Standard,
		Version:  serverVersion,
		Protocol: serverProtocol,
		Region:   s.cfg.Region,
		NodeId:   s.nodeID,
	}
}

// SetTLSConfig makes Run serve signalling and Twirp over TLS; call it before Run.
func (s *Server) SetTLSConfig(c *tls.Config) { s.tls = c }

// Run serves HTTP on cfg.Listen and owns the media sockets. When ctx is
// cancelled it sends every participant Leave{SERVER_SHUTDOWN}, closes all
// connections and sockets, waits for every goroutine and returns.
func (s *Server) Run(ctx context.Context) error {
	fail := func(err error) error {
		_ = s.shutdown()
		s.wg.Wait()
		_ = s.socks.close()
		if s.turn != nil {
			_ = s.turn.close()
		}
		return err
	}
	l, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fail(fmt.Errorf("failed to listen on %s: %w", s.cfg.Listen, err))
	}
	s.httpAddr = l.Addr()
	if s.tls != nil {
		l = tls.NewListener(l, s.tls)
	}
	var dm *demuxListener
	if s.turn != nil {
		if s.cfg.TURN.TLSOnSignalPort {
			if s.tls == nil {
				_ = l.Close()
				return fail(errors.New("sfu.turn.tls_on_signal_port needs TLS on the signalling listener (tls.cert_file)"))
			}
			dm = newDemuxListener(l)
			l = dm.http
			s.turn.signalLn = dm.turn
		}
		if err := s.turn.start(s.tls); err != nil {
			_ = l.Close()
			if dm != nil {
				dm.wait()
			}
			return fail(fmt.Errorf("sfu.%w", err))
		}
	}
	close(s.ready)
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// No ReadTimeout: signal sockets are long-lived hijacked requests.
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 32 << 10,
		ErrorLog:       nil,
	}
	s.log.Info().Str("addr", l.Addr().String()).Int("udp_port", s.cfg.RTC.UDPPort).Msg("sfu listening")
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			runErr = fmt.Errorf("sfu http server failed: %w", err)
		}
	}
	// Leave the participants first, while their sockets are still open.
	err = s.shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	if runErr == nil {
		<-errc
	}
	if s.turn != nil {
		_ = s.turn.close()
	}
	if dm != nil {
		dm.close()
		dm.wait()
	}
	s.wg.Wait()
	if cerr := s.socks.close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	s.log.Info().Msg("sfu stopped")
	return errors.Join(runErr, err)
}

// shutdown closes every room (telling clients SERVER_SHUTDOWN) and refuses
// new work. It does not wait.
func (s *Server) shutdown() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	rooms := make([]*Room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	for _, r := range rooms {
		r.close(livekit.DisconnectReason_SERVER_SHUTDOWN)
	}
	// Writers flush the queued leaves, then close.
	close(s.done)
	return nil
}

// goAdd starts f as a goroutine owned by the server, unless shutting down.
func (s *Server) goAdd(f func()) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// enter counts the calling goroutine (an HTTP handler) as owned by the
// server; the returned func must be called when it ends.
func (s *Server) enter() (func(), bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	s.wg.Add(1)
	return s.wg.Done, true
}

// Handler serves signalling and the Twirp API under path_prefix.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	p := s.cfg.PathPrefix
	// /healthz also without the prefix: one probe path for every node.
	mux.HandleFunc("/healthz", s.handleHealthz)
	if p != "" {
		mux.HandleFunc(p+"/healthz", s.handleHealthz)
	}
	mux.HandleFunc(p+"/rtc", s.handleRTC)
	mux.HandleFunc(p+"/rtc/validate", s.handleValidate)
	mux.HandleFunc(p+"/rtc/v1", s.handleV1)
	mux.HandleFunc(p+"/rtc/v1/validate", s.handleValidate)
	tw := s.twirpHandler()
	mux.Handle(p+"/twirp/", tw)
	return mux
}

func setCORS(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
}

// getRoom returns the room or nil.
func (s *Server) getRoom(name string) *Room {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rooms[name]
}

// getOrCreateRoom returns the named room, creating it with opts when
// missing. created tells whether it was new.
func (s *Server) getOrCreateRoom(name string, opts roomOptions, create bool) (r *Room, created bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false, ErrServerClosed
	}
	if r := s.rooms[name]; r != nil {
		return r, false, nil
	}
	if !create {
		return nil, false, ErrRoomNotFound
	}
	r = newRoom(s, name, opts)
	s.rooms[name] = r
	s.metrics.rooms.Inc()
	if s.hooks.Opened != nil {
		s.hooks.Opened(name)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r.worker()
	}()
	return r, true, nil
}

func (s *Server) removeRoom(r *Room) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rooms[r.name] == r {
		delete(s.rooms, r.name)
		s.metrics.rooms.Dec()
		if s.hooks.Closed != nil {
			s.hooks.Closed(r.name)
		}
	}
}

func (s *Server) listRooms() []*Room {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Room, 0, len(s.rooms))
	for _, r := range s.rooms {
		out = append(out, r)
	}
	return out
}

// iceServers are the ICE servers for a participant's JoinResponse: the
// configured STUN/TURN servers and the embedded TURN server with a
// credential for identity.
func (s *Server) iceServers(identity string) []*livekit.ICEServer {
	var out []*livekit.ICEServer
	if s.turn != nil {
		out = append(out, s.turn.iceServers(identity, s.signalPort())...)
	}
	if len(s.cfg.RTC.STUNServers) > 0 {
		urls := make([]string, 0, len(s.cfg.RTC.STUNServers))
		for _, u := range s.cfg.RTC.STUNServers {
			if !strings.HasPrefix(u, "stun:") {
				u = "stun:" + u
			}
			urls = append(urls, u)
		}
		out = append(out, &livekit.ICEServer{Urls: urls})
	}
	for _, t := range s.cfg.RTC.TURNServers {
		out = append(out, &livekit.ICEServer{Urls: t.URLs, Username: t.Username, Credential: t.Credential})
	}
	return out
}

// signalPort is the port clients reach signalling on: public_url's (443
// for wss:// without one), else the listener's.
func (s *Server) signalPort() int {
	if s.cfg.PublicURL != "" {
		if u, err := url.Parse(s.cfg.PublicURL); err == nil {
			if p, err := strconv.Atoi(u.Port()); err == nil {
				return p
			}
			if u.Scheme == "wss" {
				return 443
			}
			return 80
		}
	}
	select {
	case <-s.ready:
		if a, ok := s.httpAddr.(*net.TCPAddr); ok {
			return a.Port
		}
	default:
	}
	return 0
}

// initBatch readies a read loop's send batch for the direct path.
func (s *Server) initBatch(b *sendBatch) {
	b.out, b.errors = newMmsgWriter(s.batchConn), s.metrics.sendErrors
	b.msgsOut, b.calls = s.metrics.sendMsgs, s.metrics.sendCalls
	b.gso, b.off = s.gso, &s.gsoOff
}
