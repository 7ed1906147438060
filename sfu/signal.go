package sfu

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// joinParams are the query parameters of a v0 /rtc request.
type joinParams struct {
	autoSubscribe bool
	reconnect     bool
	protocol      int
	sdk           string
	version       string
}

func parseJoinParams(r *http.Request) joinParams {
	q := r.URL.Query() // tolerates the doubled "&&" the Go SDK sends
	p := joinParams{autoSubscribe: true}
	if v := q.Get("auto_subscribe"); v == "0" || v == "false" {
		p.autoSubscribe = false
	}
	if v := q.Get("reconnect"); v == "1" || v == "true" {
		p.reconnect = true
	}
	p.protocol, _ = strconv.Atoi(q.Get("protocol"))
	p.sdk = q.Get("sdk")
	p.version = q.Get("version")
	return p
}

// admission is the outcome of checking a join or validate request before
// any WebSocket is opened.
type admission struct {
	token *verifiedToken
	room  *Room
}

// admit runs the checks shared by /rtc and /rtc/validate and returns an
// HTTP status and message on refusal.
func (s *Server) admit(r *http.Request) (*admission, int, string) {
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
	if r.URL.Query().Get("join_request") != "" {
		return nil, http.StatusBadRequest, "single peer connection mode is not supported"
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

// handleValidate answers GET /rtc/validate: 200 "success", 401/403 with a
// reason, 404 only for a missing room; CORS open so browsers can read it.
func (s *Server) handleValidate(w http.ResponseWriter, r *http.Request) {
	setCORS(w)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	_, code, msg := s.admit(r)
	if code != 0 {
		http.Error(w, msg, code)
		return
	}
	_, _ = w.Write([]byte("success"))
}

// handleRTC upgrades /rtc to a signal WebSocket and runs the participant's
// signal loop in the handler goroutine.
func (s *Server) handleRTC(w http.ResponseWriter, r *http.Request) {
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
	adm, code, msg := s.admit(r)
	if code != 0 {
		s.metrics.joins.WithLabelValues("refused").Inc()
		s.log.Debug().Int("status", code).Str("reason", msg).Msg("join refused")
		http.Error(w, msg, code)
		return
	}
	params := parseJoinParams(r)
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // browsers connect from the web app's origin; the token authorises
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		s.log.Debug().Err(err).Msg("websocket upgrade failed")
		return
	}
	ws.SetReadLimit(1 << 20)
	sc := newSignalConn(s, ws)
	if !s.goAdd(sc.writeLoop) {
		_ = ws.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}

	if params.reconnect {
		// Resume is not implemented (JoinResponse disables it); a client
		// that resumes anyway is told to do a full reconnect.
		s.metrics.joins.WithLabelValues("reconnect_refused").Inc()
		sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Leave{Leave: &livekit.LeaveRequest{
			Reason: livekit.DisconnectReason_STATE_MISMATCH,
			Action: livekit.LeaveRequest_RECONNECT,
		}}})
		sc.close(websocket.StatusNormalClosure, "resume not supported, reconnect")
		sc.drainUntilClosed(r.Context())
		return
	}

	p, err := adm.room.join(adm.token, params, sc)
	if err != nil {
		s.metrics.joins.WithLabelValues("refused").Inc()
		sc.close(websocket.StatusPolicyViolation, err.Error())
		sc.drainUntilClosed(r.Context())
		return
	}
	s.metrics.joins.WithLabelValues("joined").Inc()
	if adm.token.peer != "" && s.peering.Joined != nil {
		s.peering.Joined(adm.room.name)
	}
	reason := p.readLoop(r.Context())
	p.close(reason, false)
}

// signalConn is one signal WebSocket. Writes go through a queue drained by
// writeLoop, so a slow client never blocks room broadcasts. The reader is
// the participant's readLoop.
type signalConn struct {
	s    *Server
	ws   *websocket.Conn
	json atomic.Bool // reply in protojson once the client spoke text

	mu          sync.Mutex
	queue       []*livekit.SignalResponse
	closing     bool
	closeCode   websocket.StatusCode
	closeReason string
	notify      chan struct{}
	closed      chan struct{}
}

func newSignalConn(s *Server, ws *websocket.Conn) *signalConn {
	return &signalConn{s: s, ws: ws, notify: make(chan struct{}, 1), closed: make(chan struct{})}
}

// send queues a message; it is dropped once the connection is closing.
func (c *signalConn) send(m *livekit.SignalResponse) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.queue = append(c.queue, m)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
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
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

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
		batch, c.queue = c.queue, batch[:0]
		closing, code, reason := c.closing, c.closeCode, c.closeReason
		c.mu.Unlock()
		for _, m := range batch {
			if err := c.write(m); err != nil {
				_ = c.ws.CloseNow()
				return
			}
		}
		clear(batch)
		if closing {
			c.mu.Lock()
			rest := len(c.queue)
			c.mu.Unlock()
			if rest > 0 {
				continue
			}
			// Close waits up to 5 s for the peer's close frame; the reader
			// is still running and will see it.
			_ = c.ws.Close(code, reason)
			return
		}
	}
}

func (c *signalConn) write(m *livekit.SignalResponse) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c.json.Load() {
		b, err := protojson.Marshal(m)
		if err != nil {
			return err
		}
		return c.ws.Write(ctx, websocket.MessageText, b)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return c.ws.Write(ctx, websocket.MessageBinary, b)
}

// drainUntilClosed reads (and discards) until the connection is closed, so
// close handshakes complete.
func (c *signalConn) drainUntilClosed(ctx context.Context) {
	for {
		if _, _, err := c.ws.Read(ctx); err != nil {
			return
		}
	}
}

// errMalformed marks a signal frame that could not be decoded.
var errMalformed = errors.New("malformed signal request")

// decodeSignalRequest parses one frame: binary protobuf, or protojson for
// text frames. Unknown JSON fields are accepted like unknown proto fields.
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
	if req.Message == nil {
		return nil, fmt.Errorf("%w: no message", errMalformed)
	}
	return req, nil
}
