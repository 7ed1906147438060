package focus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/rs/zerolog"
)

func (s *Service) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/get_token", s.api("get_token", s.handleGetToken))
	mux.Handle("/sfu/get", s.api("sfu_get", s.handleSFUGet))
	mux.Handle("/delegate_delayed_leave", s.api("delegate_delayed_leave", s.handleDelegate))
	mux.HandleFunc("/healthz", handleHealthz)
	mux.HandleFunc("/.well-known/matrix/client", s.handleWellKnown)
	mux.HandleFunc("/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", s.handleTransports)
	mux.HandleFunc("/_matrix/client/v1/rtc/transports", s.handleTransports)
	return mux
}

// apiFunc processes a decoded request body; its error is rendered by api.
type apiFunc func(ctx context.Context, body []byte) (any, error)

// api wraps a POST endpoint the way lk-jwt-service does (CORS, OPTIONS 200,
// other methods 405) and adds what it lacks: per-IP rate limit, body limit,
// request log and metrics. Errors are rendered here and only here.
func (s *Service) api(endpoint string, fn apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "POST")
		h.Set("Access-Control-Allow-Headers", "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token")
		switch r.Method {
		case http.MethodOptions:
			w.WriteHeader(http.StatusOK)
			return
		case http.MethodPost:
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		start := time.Now()
		ip := clientIP(r, s.trusted)
		log := s.log.With().Str("endpoint", endpoint).Str("client_ip", ip).Logger()
		ctx := withClientIP(log.WithContext(r.Context()), ip)

		result, err := func() (any, error) {
			if ok, wait := s.ipLimit.allow(ip, s.now()); !ok {
				return nil, &Error{Status: http.StatusTooManyRequests, Code: codeLimit, Message: "Too many requests", RetryAfter: wait}
			}
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
			if err != nil {
				var tooLarge *http.MaxBytesError
				if errors.As(err, &tooLarge) {
					return nil, &Error{Status: http.StatusRequestEntityTooLarge, Code: codeTooLarge, Message: "Request body too large"}
				}
				return nil, errNotJSON
			}
			return fn(ctx, body)
		}()
		outcome := "ok"
		status := http.StatusOK
		if err != nil {
			e := toError(err)
			outcome, status = e.Code, e.Status
			writeError(w, e)
		} else {
			w.WriteHeader(http.StatusOK)
			_ = json.NewEncoder(w).Encode(result)
		}
		s.metrics.requests.WithLabelValues(endpoint, outcome).Inc()
		ev := zerolog.Ctx(ctx).Info()
		if status >= 500 {
			ev = zerolog.Ctx(ctx).Error()
		}
		if err != nil {
			// The cause is ours to read; the client only saw the Matrix error.
			ev = ev.AnErr("reason", err)
		}
		ev.Int("status", status).Str("outcome", outcome).Dur("duration", time.Since(start)).Msg("Handled focus request")
	})
}

func writeError(w http.ResponseWriter, e *Error) {
	body := map[string]any{"errcode": e.Code, "error": e.Message}
	if e.RetryAfter > 0 {
		ms := e.RetryAfter.Milliseconds()
		body["retry_after_ms"] = ms
		w.Header().Set("Retry-After", strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10))
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *Service) handleGetToken(ctx context.Context, body []byte) (any, error) {
	req, err := DecodeTokenRequest(body)
	if err != nil {
		return nil, err
	}
	timeout, err := checkDelay(s.cfg.DelayedEvents, req.DelayID, req.DelayTimeout)
	if err != nil {
		return nil, err
	}
	return s.processToken(ctx, tokenInput{
		roomID: req.RoomID, slotID: req.SlotID, openID: req.OpenIDToken,
		claimedUserID: req.Member.ClaimedUserID, deviceID: req.Member.ClaimedDeviceID,
		memberID: req.Member.ID, delayID: req.DelayID, delayTimeout: timeout,
	})
}

func (s *Service) handleSFUGet(ctx context.Context, body []byte) (any, error) {
	req, err := DecodeLegacyTokenRequest(body)
	if err != nil {
		return nil, err
	}
	timeout, err := checkDelay(s.cfg.DelayedEvents, req.DelayID, req.DelayTimeout)
	if err != nil {
		return nil, err
	}
	return s.processToken(ctx, tokenInput{
		roomID: req.Room, slotID: LegacySlotID, openID: req.OpenIDToken,
		deviceID: req.DeviceID, delayID: req.DelayID, delayTimeout: timeout,
	})
}

// handleDelegate takes a delayed leave event (MSC4140) of a participant who
// is, or is about to be, connected, as lk-jwt-service's
// /delegate_delayed_leave does: no token, no room creation, answer {}.
// Beyond lk-jwt-service it checks that the user is joined to the room.
func (s *Service) handleDelegate(ctx context.Context, body []byte) (any, error) {
	req, err := DecodeDelayedLeaveRequest(body)
	if err != nil {
		return nil, err
	}
	timeout, err := checkDelay(s.cfg.DelayedEvents, req.DelayID, req.DelayTimeout)
	if err != nil {
		return nil, err
	}
	user, err := s.verifyOpenID(ctx, req.OpenIDToken)
	if err != nil {
		return nil, err
	}
	if req.Member.ClaimedUserID != user.String() {
		return nil, fmt.Errorf("%w: claimed_user_id %s does not match the token's user", ErrUnauthorized, req.Member.ClaimedUserID)
	}
	lkRoom := LiveKitRoomAlias(req.RoomID, req.SlotID)
	identity := LiveKitIdentity(user.String(), req.Member.ClaimedDeviceID, req.Member.ID)
	zerolog.Ctx(ctx).UpdateContext(func(c zerolog.Context) zerolog.Context {
		return c.Str("user_id", user.String()).Str("room_id", req.RoomID).Str("lk_room", lkRoom).Str("lk_identity", identity)
	})
	if ok, wait := s.userLimit.allow(user.String(), s.now()); !ok {
		return nil, &Error{Status: http.StatusTooManyRequests, Code: codeLimit, Message: "Too many requests", RetryAfter: wait}
	}
	if !s.isFullAccess(req.OpenIDToken.MatrixServerName) {
		return nil, &Error{Status: http.StatusForbidden, Code: codeForbidden, Message: msgDelegationRestricted}
	}
	joined, err := s.members.IsJoined(ctx, req.RoomID, user.String())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMembershipUnknown, err)
	}
	if !joined {
		return nil, ErrNotMember
	}
	if _, err := s.cs.resolve(ctx, req.OpenIDToken.MatrixServerName); err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Code: codeBadJSON, Message: msgUnresolvedCSAPI, Err: err}
	}
	now := s.now()
	if err := s.delegations.add(ctx, &delegation{
		LiveKitRoom: lkRoom, Identity: identity, DelayID: req.DelayID, Timeout: timeout,
		ServerName: req.OpenIDToken.MatrixServerName, RoomID: req.RoomID, UserID: user.String(),
		CreatedAt: now, RestartedAt: now,
	}); err != nil {
		return nil, err
	}
	zerolog.Ctx(ctx).Info().Dur("delay_timeout", timeout).Msg("Took over the delayed leave event")
	return struct{}{}, nil
}

func handleHealthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// transport is the focus as MSC4143/MSC4158 clients expect it.
func (s *Service) transport() map[string]string {
	return map[string]string{"type": "livekit", "livekit_service_url": s.cfg.ServiceURL()}
}

// handleWellKnown serves the fragment of /.well-known/matrix/client that
// announces the focus (org.matrix.msc4143.rtc_foci, MSC4158), for a reverse
// proxy to route there or merge into the homeserver's document.
func (s *Service) handleWellKnown(w http.ResponseWriter, r *http.Request) {
	doc := map[string]any{"org.matrix.msc4143.rtc_foci": []any{s.transport()}}
	if s.cfg.Discovery.HomeserverBaseURL != "" {
		doc["m.homeserver"] = map[string]string{"base_url": s.cfg.Discovery.HomeserverBaseURL}
	}
	writeDiscovery(w, r, doc)
}

// handleTransports serves MSC4519's rtc/transports, as Synapse does when
// matrix_rtc.transports is configured.
func (s *Service) handleTransports(w http.ResponseWriter, r *http.Request) {
	writeDiscovery(w, r, map[string]any{"rtc_transports": []any{s.transport()}})
}

func writeDiscovery(w http.ResponseWriter, r *http.Request, doc any) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Requested-With")
	switch r.Method {
	case http.MethodOptions:
		w.WriteHeader(http.StatusOK)
		return
	case http.MethodGet, http.MethodHead:
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_ = json.NewEncoder(w).Encode(doc)
	}
}

// LimitPerIP applies the focus's per-IP rate limit (focus.rate_limit.per_ip,
// trusting the same proxies) to another API mounted on the focus listener,
// such as the meetings API: 429 with Retry-After when a client sends too much.
func (s *Service) LimitPerIP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, wait := s.ipLimit.allow(clientIP(r, s.trusted), s.now()); !ok {
			w.Header().Set("Content-Type", "application/json")
			writeError(w, &Error{Status: http.StatusTooManyRequests, Code: codeLimit, Message: "Too many requests", RetryAfter: wait})
			return
		}
		h.ServeHTTP(w, r)
	})
}
