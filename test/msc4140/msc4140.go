// Package msc4140 is a minimal homeserver side of MSC4140 delayed events for
// tests, written from the proposal's text
// (matrix-org/matrix-spec-proposals#4140, proposals/4140-delayed-events-futures.md,
// "Managing scheduled delayed events" and "Unstable prefix"), because Dendrite
// has no delayed events:
//
//   - POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delay_id}/{action}
//     with a JSON object body; action is send, cancel or restart.
//   - restart sets the send time to now + the original delay; send sends at
//     once; cancel cancels. Success is 200 with {}.
//   - An unknown delay_id is 404 M_NOT_FOUND.
//   - A finalised event: the matching action succeeds again (send after sent,
//     cancel after cancelled); a conflicting one is 409 M_UNKNOWN (send or
//     restart after cancelled, cancel after sent). The text lists no outcome
//     for restart after sent; it cannot match, so it is 409 here too.
//   - A scheduled event whose send time has passed is sent by the "homeserver"
//     (the MSC allows up to 30 s of batching; this fake adds none).
//   - Injected failures (Fail) answer instead, e.g. 429 M_LIMIT_EXCEEDED with
//     Retry-After or retry_after_ms, or 5xx.
//
// Authentication: the MSC says the endpoints are authenticated, but
// lk-jwt-service calls them without an access token (the delay ID being the
// capability, the MSC's alternative "delegating delayed event management")
// and Synapse ≥ 1.143 accepts that (element-hq/synapse#19152). This fake
// accepts both and records whether a request carried an Authorization header.
package msc4140

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// Path is the unstable management endpoint prefix.
const Path = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/"

// Outcome of a delayed event.
const (
	Scheduled = ""
	Sent      = "sent"
	Cancelled = "cancelled"
)

// Event is a delayed event as the fake homeserver sees it.
type Event struct {
	Delay   time.Duration
	SendAt  time.Time
	Outcome string
	// SentBy is "action" or "timeout" once sent.
	SentBy   string
	Restarts int
}

// Request is one management request received.
type Request struct {
	DelayID string
	Action  string
	// Status is the answer given.
	Status int
	// Authorized tells whether the request carried an Authorization header.
	Authorized bool
	At         time.Time
}

// Failure is an injected answer.
type Failure struct {
	Status int
	Header http.Header
	Body   any
}

// Server is the fake. The zero value is not usable; use New.
type Server struct {
	mu       sync.Mutex
	now      func() time.Time
	events   map[string]*Event
	requests []Request
	fail     []Failure
	// forget, if set, makes finalised events unknown (404), as Synapse does
	// once an event was sent.
	forget bool
}

// New returns an empty fake homeserver; now may be nil for time.Now.
func New(now func() time.Time) *Server {
	if now == nil {
		now = time.Now
	}
	return &Server{now: now, events: map[string]*Event{}}
}

// ForgetFinalised makes finalised events answer 404, as Synapse does.
func (s *Server) ForgetFinalised() {
	s.mu.Lock()
	s.forget = true
	s.mu.Unlock()
}

// Schedule creates a delayed event, as PUT …/delayed_event/… would.
func (s *Server) Schedule(delayID string, delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events[delayID] = &Event{Delay: delay, SendAt: s.now().Add(delay)}
}

// Fail queues answers given instead of the next requests, in order.
func (s *Server) Fail(f ...Failure) {
	s.mu.Lock()
	s.fail = append(s.fail, f...)
	s.mu.Unlock()
}

// Event returns a copy of the delayed event (after letting due events fire).
func (s *Server) Event(delayID string) (Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.events[delayID]
	if !ok {
		return Event{}, false
	}
	s.fire(e)
	return *e, true
}

// Requests returns the management requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Count counts the received requests of an action answered with status.
func (s *Server) Count(action string, status int) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Action == action && r.Status == status {
			n++
		}
	}
	return n
}

func (s *Server) fire(e *Event) {
	if e.Outcome == Scheduled && !s.now().Before(e.SendAt) {
		e.Outcome, e.SentBy = Sent, "timeout"
	}
}

// ServeHTTP serves the management endpoint; other paths are 404 M_UNRECOGNIZED.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+Path+"{delay_id}/{action}", s.manage)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, nil, matrixError("M_UNRECOGNIZED", "Unrecognized request"))
	})
	mux.ServeHTTP(w, r)
}

func (s *Server) manage(w http.ResponseWriter, r *http.Request) {
	delayID, action := r.PathValue("delay_id"), r.PathValue("action")
	status, header, body := s.answer(r, delayID, action)
	s.mu.Lock()
	s.requests = append(s.requests, Request{
		DelayID: delayID, Action: action, Status: status, Authorized: r.Header.Get("Authorization") != "", At: s.now(),
	})
	s.mu.Unlock()
	writeJSON(w, status, header, body)
}

func (s *Server) answer(r *http.Request, delayID, action string) (int, http.Header, any) {
	var obj map[string]any
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<16)).Decode(&obj); err != nil || obj == nil {
		return http.StatusBadRequest, nil, matrixError("M_NOT_JSON", "Content not JSON object")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.fail) > 0 {
		f := s.fail[0]
		s.fail = s.fail[1:]
		return f.Status, f.Header, f.Body
	}
	if action != "send" && action != "cancel" && action != "restart" {
		return http.StatusBadRequest, nil, matrixError("M_INVALID_PARAM", "Unknown action")
	}
	e, ok := s.events[delayID]
	if ok {
		s.fire(e)
	}
	if !ok || (s.forget && e.Outcome != Scheduled) {
		return http.StatusNotFound, nil, matrixError("M_NOT_FOUND", "Delayed event not found")
	}
	conflict := func() (int, http.Header, any) {
		return http.StatusConflict, nil, matrixError("M_UNKNOWN", "Delayed event already finalised")
	}
	switch {
	case e.Outcome == Scheduled && action == "send":
		e.Outcome, e.SentBy = Sent, "action"
	case e.Outcome == Scheduled && action == "cancel":
		e.Outcome = Cancelled
	case e.Outcome == Scheduled && action == "restart":
		e.SendAt = s.now().Add(e.Delay)
		e.Restarts++
	case e.Outcome == Sent && action == "send", e.Outcome == Cancelled && action == "cancel":
		// Safe retries succeed.
	default:
		return conflict()
	}
	return http.StatusOK, nil, map[string]any{}
}

func matrixError(code, msg string) map[string]any {
	return map[string]any{"errcode": code, "error": msg}
}

func writeJSON(w http.ResponseWriter, status int, header http.Header, body any) {
	for k, v := range header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if body != nil {
		_ = json.NewEncoder(w).Encode(body)
	}
}
