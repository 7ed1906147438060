package sfu

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// joinParams are what a join or resume request asks for: the query
// parameters of v0 /rtc, or the JoinRequest of /rtc/v1 (and of /rtc with
// join_request, server-sdk-go's single peer connection mode).
type joinParams struct {
	autoSubscribe bool
	// autoSubscribeData: subscribe to every data track without asking
	// (auto_subscribe_data_track; off unless the client asks, as
	// livekit-server)
	autoSubscribeData bool
	reconnect         bool
	sid               string // participant to resume
	protocol          int
	sdk               string
	version           string
	// clientProtocol and capabilities are what the client says it handles
	// beyond the signalling protocol (client_protocol: RPC and data streams
	// over data streams; capabilities: e.g. packet trailers); they go to the
	// others in its ParticipantInfo, as livekit-server sends them.
	clientProtocol int32
	capabilities   []livekit.ClientInfo_Capability
	path           string // pathV0 or pathV1
	// single: one peer connection, the client always offers (v1).
	single         bool
	publisherOffer *livekit.SessionDescription
	addTracks      []*livekit.AddTrackRequest
}

func parseJoinParams(r *http.Request) joinParams {
	q := r.URL.Query() // tolerates the doubled "&&" the Go SDK sends
	p := joinParams{autoSubscribe: true}
	if v := q.Get("auto_subscribe"); v == "0" || v == "false" {
		p.autoSubscribe = false
	}
	if v := q.Get("auto_subscribe_data_track"); v == "1" || v == "true" {
		p.autoSubscribeData = true
	}
	if v := q.Get("reconnect"); v == "1" || v == "true" {
		p.reconnect = true
	}
	p.sid = q.Get("sid")
	p.protocol, _ = strconv.Atoi(q.Get("protocol"))
	p.sdk = q.Get("sdk")
	p.version = q.Get("version")
	if cp, err := strconv.ParseInt(q.Get("client_protocol"), 10, 32); err == nil {
		p.clientProtocol = int32(cp)
	}
	if raw := q.Get("capabilities"); raw != "" {
		var caps []livekit.ClientInfo_Capability
		for name := range strings.SplitSeq(raw, ",") {
			if v, ok := livekit.ClientInfo_Capability_value[strings.TrimSpace(name)]; ok {
				caps = append(caps, livekit.ClientInfo_Capability(v))
			}
		}
		p.capabilities = knownCapabilities(caps)
	}
	return p
}

// maxCapabilities bounds the capabilities a participant's info carries
// (livekit-client 2.23 knows two).
const maxCapabilities = 16

// knownCapabilities returns caps without unknown values and repeats, at
// most maxCapabilities of them: they are sent to every participant with
// each change of this one's info, so a client may not make that list long.
func knownCapabilities(caps []livekit.ClientInfo_Capability) []livekit.ClientInfo_Capability {
	var out []livekit.ClientInfo_Capability
	for _, c := range caps {
		if _, known := livekit.ClientInfo_Capability_name[int32(c)]; !known || c == livekit.ClientInfo_CAP_UNUSED || slices.Contains(out, c) {
			continue
		}
		if out = append(out, c); len(out) == maxCapabilities {
			break
		}
	}
	return out
}

// maxJoinRequest bounds a decoded JoinRequest (it carries an SDP offer and
// add_track requests; a few KiB in practice).
const maxJoinRequest = 1 << 20

// parseJoinRequest decodes the join_request parameter: base64url (with or
// without padding) of a WrappedJoinRequest whose join_request is a
// JoinRequest, gzipped or not.
func parseJoinRequest(raw string) (joinParams, error) {
	b, err := base64.URLEncoding.DecodeString(raw)
	if err != nil {
		b, err = base64.RawURLEncoding.DecodeString(raw)
	}
	if err != nil {
		return joinParams{}, fmt.Errorf("join_request: not base64url: %w", err)
	}
	wrapped := &livekit.WrappedJoinRequest{}
	if err := proto.Unmarshal(b, wrapped); err != nil {
		return joinParams{}, fmt.Errorf("join_request: %w", err)
	}
	inner := wrapped.GetJoinRequest()
	switch wrapped.GetCompression() {
	case livekit.WrappedJoinRequest_NONE:
	case livekit.WrappedJoinRequest_GZIP:
		zr, err := gzip.NewReader(bytes.NewReader(inner))
		if err != nil {
			return joinParams{}, fmt.Errorf("join_request: gzip: %w", err)
		}
		inner, err = io.ReadAll(io.LimitReader(zr, maxJoinRequest+1))
		if err != nil {
			return joinParams{}, fmt.Errorf("join_request: gzip: %w", err)
		}
		if len(inner) > maxJoinRequest {
			return joinParams{}, errors.New("join_request: too large")
		}
	default:
		return joinParams{}, fmt.Errorf("join_request: unknown compression %d", wrapped.GetCompression())
	}
	jr := &livekit.JoinRequest{}
	if err := proto.Unmarshal(inner, jr); err != nil {
		return joinParams{}, fmt.Errorf("join_request: %w", err)
	}
	ci := jr.GetClientInfo()
	p := joinParams{
		autoSubscribe:     jr.GetConnectionSettings().GetAutoSubscribe(),
		autoSubscribeData: jr.GetConnectionSettings().GetAutoSubscribeDataTrack(),
		reconnect:         jr.GetReconnect(),
		sid:               jr.GetParticipantSid(),
		protocol:          int(ci.GetProtocol()),
		sdk:               strings.ToLower(ci.GetSdk().String()),
		version:           ci.GetVersion(),
		clientProtocol:    ci.GetClientProtocol(),
		capabilities:      knownCapabilities(ci.GetCapabilities()),
		single:            true,
		addTracks:         jr.GetAddTrackRequests(),
	}
	if o := jr.GetPublisherOffer(); o.GetSdp() != "" {
		p.publisherOffer = o
	}
	return p, nil
}

// admission is the outcome of checking a join or validate request before
// any WebSocket is opened.
type admission struct {
	token *verifiedToken
	room  *Room
}

// admit runs the checks shared by /rtc, /rtc/v1 and their validate paths
// and returns an HTTP status and message on refusal. A resume (reconnect)
// never creates the room: a session in a room that is gone cannot resume.
func (s *Server) admit(r *http.Request, resume bool) (*admission, int, string) {
	token, err := s.verifyTokenDetails(tokenFromRequest(r))
	if err != nil {
		return nil, http.StatusUnauthorized, err.Error()
	}
	grants := token.grants
	if grants.Video == nil || !grants.Video.RoomJoin {
		return nil, http.StatusUnauthorized, "permission denied: token has no roomJoin grant"
	}
	if grants.Video.Room == "" {
		return nil, http.StatusUnauthorized, "permission denied: token names no room"
	}
	if grants.Identity == "" {
		return nil, http.StatusBadRequest, "token has no identity"
	}
	if s.draining.Load() {
		return nil, http.StatusServiceUnavailable, "this node is draining; connect again to reach another node"
	}
	if token.peer != "" && s.grants == nil {
		// Only the peer can tell whether its grant holds: fail closed.
		return nil, http.StatusUnauthorized, "permission denied: peer tokens need a grant check"
	}
	if s.grants != nil {
		issued, err := s.grants.CheckGrant(r.Context(), token.id, grants.Video.Room, grants.Identity, token.issuedAt)
		if err != nil {
			s.log.Debug().Err(err).Str("lk_room", grants.Video.Room).Str("lk_identity", grants.Identity).Msg("token refused by the grant check")
			return nil, http.StatusForbidden, ErrTokenRevoked.Error()
		}
		if token.id != "" {
			token.grantIssued = issued
		}
	}
	if s.svc.revoked(grants.Video.Room, grants.Identity, token) {
		return nil, http.StatusForbidden, ErrTokenRevoked.Error()
	}
	if resume {
		// The room is looked up by the resume itself; a missing room is
		// answered on the socket with Leave{RECONNECT}.
		return &admission{token: token, room: s.getRoom(grants.Video.Room)}, 0, ""
	}
	// A peer room is created by its first subscriber: the peer's focus
	// cannot create rooms here.
	room, _, err := s.getOrCreateRoom(grants.Video.Room, s.defaultRoomOptions(), s.cfg.Room.AutoCreate || token.peer != "")
	switch {
	case errors.Is(err, ErrRoomNotFound):
		return nil, http.StatusNotFound, ErrRoomNotFound.Error()
	case err != nil:
		return nil, http.StatusServiceUnavailable, err.Error()
	}
	if room.isFull(grants.Identity) {
		return nil, http.StatusForbidden, ErrRoomFull.Error()
	}
	return &admission{token: token, room: room}, 0, ""
}

// handleValidate answers GET /rtc/validate and /rtc/v1/validate: 200
// "success", 401/403 with a reason, 404 only for a missing room; CORS open
// so browsers can read it.
func (s *Server) handleValidate(w http.ResponseWriter, r *http.Request) {
	setCORS(w)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	_, code, msg := s.admit(r, false)
	if code != 0 {
		http.Error(w, msg, code)
		return
	}
	_, _ = w.Write([]byte("success"))
}

// Signal paths, as labelled in metrics and logs.
const (
	pathV0 = "rtc"
	pathV1 = "rtc_v1"
)

// handleRTC serves /rtc: v0 with two peer connections, or one peer
// connection when the request carries a join_request (server-sdk-go's
// WithSinglePeerConnection).
func (s *Server) handleRTC(w http.ResponseWriter, r *http.Request) { s.serveSignal(w, r, pathV0) }

// handleV1 serves /rtc/v1: livekit-client 2.x's single peer connection
// signalling, parameters in join_request.
func (s *Server) handleV1(w http.ResponseWriter, r *http.Request) { s.serveSignal(w, r, pathV1) }

// serveSignal upgrades a signal request to a WebSocket and runs the
// participant's signal loop in the handler goroutine: a new session for a
// join, the existing one for a resume.
func (s *Server) serveSignal(w http.ResponseWriter, r *http.Request, path string) {
	done, ok := s.enter()
	if !ok {
		http.Error(w, ErrServerClosed.Error(), http.StatusServiceUnavailable)
		return
	}
	defer done()
	if r.Header.Get("Upgrade") == "" {
		http.Error(w, "expected a websocket upgrade", http.StatusNotFound)
		return
	}
	params := parseJoinParams(r)
	if raw := r.URL.Query().Get("join_request"); raw != "" {
		jp, err := parseJoinRequest(raw)
		if err != nil {
			s.metrics.joins.WithLabelValues("refused", path).Inc()
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		params = jp
	} else if path == pathV1 {
		params.single = true
	}
	params.path = path
	adm, code, msg := s.admit(r, params.reconnect)
	if code != 0 {
		s.metrics.joins.WithLabelValues("refused", path).Inc()
		s.log.Debug().Int("status", code).Str("reason", msg).Str("path", path).Msg("join refused")
		http.Error(w, msg, code)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // browsers connect from the web app's origin; the token authorises
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		s.log.Debug().Err(err).Msg("websocket upgrade failed")
		return
	}
	ws.SetReadLimit(1 << 20)

	if params.reconnect {
		p := s.resume(adm, params, ws)
		if p == nil {
			// The session is really gone (left, removed, expired, or
			// never here): the client must join again.
			s.metrics.joins.WithLabelValues("reconnect_refused", path).Inc()
			sc := newSignalConn(s, ws)
			if !s.goAdd(sc.writeLoop) {
				_ = ws.Close(websocket.StatusGoingAway, "server shutting down")
				return
			}
			sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Leave{Leave: &livekit.LeaveRequest{
				Reason: livekit.DisconnectReason_STATE_MISMATCH,
				Action: livekit.LeaveRequest_RECONNECT,
			}}})
			sc.close(websocket.StatusNormalClosure, "session gone, join again")
			sc.drainUntilClosed(r.Context(), ws)
			return
		}
		s.metrics.joins.WithLabelValues("resumed", path).Inc()
		s.runSignal(r.Context(), p, ws)
		return
	}

	sc := newSignalConn(s, ws)
	if !s.goAdd(sc.writeLoop) {
		_ = ws.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	p, err := adm.room.join(adm.token, params, sc)
	if err != nil {
		s.metrics.joins.WithLabelValues("refused", path).Inc()
		sc.close(websocket.StatusPolicyViolation, err.Error())
		sc.drainUntilClosed(r.Context(), ws)
		return
	}
	s.metrics.joins.WithLabelValues("joined", path).Inc()
	if adm.token.peer != "" && s.peering.Joined != nil {
		s.peering.Joined(adm.room.name)
	}
	s.runSignal(r.Context(), p, ws)
}

// runSignal reads p's requests from ws until it ends. A leave or a
// malformed request ends the session; a lost socket leaves it waiting for
// a resume (Participant.signalLost), and a socket replaced by a resume
// ends nothing.
func (s *Server) runSignal(ctx context.Context, p *Participant, ws *websocket.Conn) {
	reason, end := p.readLoop(ctx, ws)
	if end {
		p.close(reason, false)
	}
}

// signalConn is a participant's signal channel. It outlives a WebSocket:
// when the socket is lost the session waits for a resume, messages queue
// meanwhile and are replayed on the socket the resume attaches. Writes go
// through the queue, drained by writeLoop, so a slow client never blocks
// room broadcasts. The reader is the participant's readLoop of the
// current socket.
type signalConn struct {
	s    *Server
	json atomic.Bool // reply in protojson once the client spoke text

	mu          sync.Mutex
	ws          *websocket.Conn                    // nil while detached
	lostAt      time.Time                          // when the socket was lost (detached)
	overflow    bool                               // messages were dropped while detached: no resume
	keep        func(*livekit.SignalResponse) bool // replay filter of the last resume
	queue       []*livekit.SignalResponse
	closing     bool
	closeCode   websocket.StatusCode
	closeReason string
	notify      chan struct{}
	closed      chan struct{}
}

// maxDetachedQueue bounds the messages kept for a session whose socket is
// lost; beyond it the session cannot be resumed faithfully and ends.
const maxDetachedQueue = 4096

// maxAttachedQueue bounds the messages waiting for a socket the client
// does not read (a healthy client's queue is near empty; ParticipantUpdates
// are coalesced): beyond it the socket is closed and, as the session lost
// messages, it cannot resume.
const maxAttachedQueue = 16384

func newSignalConn(s *Server, ws *websocket.Conn) *signalConn {
	return &signalConn{s: s, ws: ws, notify: make(chan struct{}, 1), closed: make(chan struct{})}
}

func (c *signalConn) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// send queues a message; it is dropped once the connection is closing.
func (c *signalConn) send(m *livekit.SignalResponse) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if c.ws == nil && len(c.queue) >= maxDetachedQueue {
		c.overflow = true
		c.mu.Unlock()
		return
	}
	if ws := c.ws; ws != nil && len(c.queue) >= maxAttachedQueue {
		first := !c.overflow
		c.overflow = true
		c.mu.Unlock()
		if first {
			c.s.log.Warn().Int("queued", maxAttachedQueue).Msg("closing a signal socket whose client does not read")
			c.s.metrics.unread.Inc()
			_ = ws.CloseNow()
		}
		return
	}
	c.queue = append(c.queue, m)
	c.mu.Unlock()
	c.wake()
}

// close flushes queued messages and then closes with code and reason.
func (c *signalConn) close(code websocket.StatusCode, reason string) {
	c.mu.Lock()
	if !c.closing {
		c.closing = true
		c.closeCode = code
		c.closeReason = reason
	}
	c.mu.Unlock()
	c.wake()
}

// detach forgets ws after it failed, if it is still the current socket,
// and starts the resume window. It reports whether it was current.
func (c *signalConn) detach(ws *websocket.Conn) bool {
	c.mu.Lock()
	current := c.ws == ws && ws != nil
	if current {
		c.ws = nil
		c.lostAt = time.Now()
	}
	c.mu.Unlock()
	if ws != nil {
		_ = ws.CloseNow()
	}
	c.wake()
	return current
}

// attach makes ws the current socket for a resume: first goes out first,
// then the queued messages that keep says are still valid. A socket still
// attached (the client saw it die, the server did not yet) is closed. It
// fails when the session is closing or lost messages.
func (c *signalConn) attach(ws *websocket.Conn, first *livekit.SignalResponse, keep func(*livekit.SignalResponse) bool) bool {
	c.mu.Lock()
	if c.closing || c.overflow {
		c.mu.Unlock()
		return false
	}
	old := c.ws
	c.ws = ws
	c.lostAt = time.Time{}
	c.keep = keep
	c.json.Store(false)
	q := make([]*livekit.SignalResponse, 0, len(c.queue)+1)
	q = append(q, first)
	for _, m := range c.queue {
		if keep(m) {
			q = append(q, m)
		}
	}
	c.queue = q
	c.mu.Unlock()
	if old != nil {
		_ = old.CloseNow()
	}
	c.wake()
	return true
}

// resumeExpired tells whether the socket has been lost for longer than
// window (or messages were lost meanwhile); it then marks the connection
// closing, so no resume can attach after this answer.
func (c *signalConn) resumeExpired(now time.Time, window time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.ws != nil || c.lostAt.IsZero() {
		return false
	}
	if !c.overflow && now.Sub(c.lostAt) < window {
		return false
	}
	c.closing = true
	return true
}

// closeAfterWriteError is how long a socket whose write failed stays open
// for its reader to read what the client sent before it went.
const closeAfterWriteError = time.Second

func (c *signalConn) writeLoop() {
	defer close(c.closed)
	var batch []*livekit.SignalResponse
	for {
		select {
		case <-c.notify:
		case <-c.s.done:
			// Shutdown: rooms queue a leave and close first; give the
			// loop one more round to flush it.
			c.close(websocket.StatusGoingAway, "server shutting down")
		}
		c.mu.Lock()
		ws := c.ws
		if ws == nil && !c.closing {
			c.mu.Unlock() // detached: keep the queue for a resume
			continue
		}
		batch, c.queue = c.queue, batch[:0]
		closing, code, reason := c.closing, c.closeCode, c.closeReason
		c.mu.Unlock()
		if ws == nil {
			clear(batch)
			return // closing while detached: nobody to tell
		}
		failed := false
		for i, m := range batch {
			if err := c.write(ws, m); err != nil {
				if closing {
					_ = ws.CloseNow()
					return
				}
				// The reader may not have read all the client sent before
				// its socket broke: server-sdk-go writes its leave and
				// closes at once, and a reply written meanwhile fails.
				// Closing ws now would drop that leave and keep the
				// session for the resume window. A broken connection ends
				// the reader by itself once it has read what arrived; the
				// timer bounds one that is not broken. (A write timeout
				// has closed ws already.)
				time.AfterFunc(closeAfterWriteError, func() { _ = ws.CloseNow() })
				// Keep what was not sent for a resume; the reader of ws
				// fails too and detaches it (or the session ends).
				c.requeue(ws, batch[i:])
				failed = true
				break
			}
		}
		clear(batch)
		if failed {
			continue
		}
		if closing {
			c.mu.Lock()
			rest, cur := len(c.queue), c.ws
			c.mu.Unlock()
			if rest > 0 && cur == ws {
				continue
			}
			// Close waits up to 5 s for the peer's close frame; the reader
			// is still running and will see it.
			_ = ws.Close(code, reason)
			return
		}
	}
}

// requeue puts messages that could not be written to ws back in front of
// the queue; if a resume replaced ws meanwhile, behind its first message
// (the ReconnectResponse, still unsent: only this loop writes) and
// filtered like the rest of the replay.
func (c *signalConn) requeue(ws *websocket.Conn, ms []*livekit.SignalResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ws == nil || c.ws == ws || len(c.queue) == 0 {
		c.queue = append(append(make([]*livekit.SignalResponse, 0, len(ms)+len(c.queue)), ms...), c.queue...)
		return
	}
	q := make([]*livekit.SignalResponse, 0, len(ms)+len(c.queue))
	q = append(q, c.queue[0])
	for _, m := range ms {
		if c.keep == nil || c.keep(m) {
			q = append(q, m)
		}
	}
	c.queue = append(q, c.queue[1:]...)
}

func (c *signalConn) write(ws *websocket.Conn, m *livekit.SignalResponse) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c.json.Load() {
		b, err := protojson.Marshal(m)
		if err != nil {
			return err
		}
		return ws.Write(ctx, websocket.MessageText, b)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return ws.Write(ctx, websocket.MessageBinary, b)
}

// drainUntilClosed reads (and discards) until ws is closed, so close
// handshakes complete.
func (c *signalConn) drainUntilClosed(ctx context.Context, ws *websocket.Conn) {
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			return
		}
	}
}

// errMalformed marks a signal frame that could not be decoded.
var errMalformed = errors.New("malformed signal request")

// decodeSignalRequest parses one frame: binary protobuf, or protojson for
// text frames. Unknown JSON fields are accepted like unknown proto fields;
// req.Message may be nil.
func decodeSignalRequest(typ websocket.MessageType, data []byte) (*livekit.SignalRequest, error) {
	req := &livekit.SignalRequest{}
	var err error
	if typ == websocket.MessageText {
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, req)
	} else {
		err = proto.Unmarshal(data, req)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformed, err)
	}
	// A request without a known message (an empty frame, or a message type
	// newer than this server) is returned as is and ignored by the handler,
	// as livekit-server does: closing the session for it would break newer
	// clients and a client that sends an empty frame while reconnecting.
	return req, nil
}
