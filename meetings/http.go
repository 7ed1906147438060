package meetings

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// Paths of the HTTP API and the feeds (mounted on the focus listener).
const (
	APIPath  = "/meetings/v1/"
	FeedPath = "/meetings/cal/"
)

// Handler serves the HTTP API and the webcal feeds: mount it at /meetings/.
//
//	POST /meetings/v1/meeting/create   Spec                          → 201 MeetingResponse
//	PUT  /meetings/v1/meeting/update   {"meeting_id", …Spec}         → MeetingResponse
//	POST /meetings/v1/meeting/cancel   {"meeting_id", "occurrence"?} → MeetingResponse
//	GET  /meetings/v1/meeting/{id}                                   → MeetingResponse
//	GET  /meetings/v1/meetings                                       → {"meetings": [...]}
//	POST /meetings/v1/feed                                           → {"url": "…/meetings/cal/<token>.ics"}
//	GET  /meetings/cal/<token>.ics                                   → text/calendar (no other auth)
//
// API calls carry "Authorization: Bearer <Matrix access token>" or
// "Authorization: MX-Identity <base64 of the OpenID token JSON>", as
// Nordeck's meetings API does; an "X-Timezone" header sets the zone of a
// create that names none.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+APIPath+"meeting/create", s.api("create", func(ctx context.Context, user string, r *http.Request, body []byte) (int, any, error) {
		spec, err := DecodeSpec(body)
		if err != nil {
			return 0, nil, err
		}
		if spec.TimeZone == nil && r.Header.Get("X-Timezone") != "" {
			tz := r.Header.Get("X-Timezone")
			spec.TimeZone = &tz
		}
		res, err := s.Create(ctx, user, spec)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusCreated, s.response(res.Meeting, res), nil
	}))
	mux.Handle("PUT "+APIPath+"meeting/update", s.api("update", func(ctx context.Context, user string, _ *http.Request, body []byte) (int, any, error) {
		req, err := DecodeUpdate(body)
		if err != nil {
			return 0, nil, err
		}
		res, err := s.Update(ctx, user, req.MeetingID, &req.Spec)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, s.response(res.Meeting, res), nil
	}))
	mux.Handle("POST "+APIPath+"meeting/cancel", s.api("cancel", func(ctx context.Context, user string, _ *http.Request, body []byte) (int, any, error) {
		var req struct {
			MeetingID  string `json:"meeting_id"`
			Occurrence string `json:"occurrence"`
		}
		if err := decodeStrict(body, &req); err != nil {
			return 0, nil, err
		}
		if req.MeetingID == "" {
			return 0, nil, invalid("meeting_id", "required")
		}
		res, err := s.Cancel(ctx, user, req.MeetingID, req.Occurrence)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, s.response(res.Meeting, res), nil
	}))
	mux.Handle("GET "+APIPath+"meeting/{id}", s.api("show", func(ctx context.Context, user string, r *http.Request, _ []byte) (int, any, error) {
		m, err := s.Get(ctx, user, r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, s.response(m, nil), nil
	}))
	mux.Handle("GET "+APIPath+"meetings", s.api("list", func(ctx context.Context, user string, _ *http.Request, _ []byte) (int, any, error) {
		ms, err := s.List(ctx, user)
		if err != nil {
			return 0, nil, err
		}
		out := make([]MeetingResponse, 0, len(ms))
		for _, m := range ms {
			out = append(out, s.response(m, nil))
		}
		return http.StatusOK, map[string]any{"meetings": out}, nil
	}))
	mux.Handle("POST "+APIPath+"feed", s.api("feed", func(ctx context.Context, user string, r *http.Request, _ []byte) (int, any, error) {
		// The feed address is a lasting secret that outlives the token:
		// it is issued for a Matrix access token only. An OpenID token
		// is handed to whatever call focus a room names, which could
		// replay it here for an hour.
		if scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " "); !strings.EqualFold(scheme, "bearer") {
			return 0, nil, fmt.Errorf("%w: the feed address is issued for a Matrix access token (Authorization: Bearer) only", ErrUnauthorized)
		}
		u, err := s.FeedURL(ctx, user)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]string{"url": u}, nil
	}))
	mux.HandleFunc("GET "+FeedPath+"{file}", s.handleFeed)
	return mux
}

// MeetingResponse is a meeting as the API shows it.
type MeetingResponse struct {
	MeetingID    string   `json:"meeting_id"`
	RoomID       string   `json:"room_id"`
	MeetingURL   string   `json:"meeting_url"`
	Title        string   `json:"title"`
	Description  string   `json:"description,omitempty"`
	Organiser    string   `json:"organiser"`
	Schedule     Schedule `json:"schedule"`
	Summary      string   `json:"summary"`
	Participants []string `json:"participants"`
	Level        string   `json:"level"`
	UID          string   `json:"uid"`
	Sequence     int      `json:"sequence"`
	Cancelled    bool     `json:"cancelled"`
	// Occurrences are the first few starts (RFC 3339), on create and update.
	Occurrences []string `json:"occurrences,omitempty"`
	Capped      bool     `json:"capped,omitempty"`
	Unchanged   bool     `json:"unchanged,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`
}

func (s *Service) response(m *Meeting, res *Result) MeetingResponse {
	out := MeetingResponse{MeetingID: m.ID, RoomID: m.RoomID, MeetingURL: s.CallLink(m), Title: m.Title,
		Description: m.Description, Organiser: m.Organiser, Schedule: m.Schedule, Summary: m.Schedule.Describe(nil),
		Participants: m.Participants, Level: string(m.Policy.Level), UID: m.UID, Sequence: m.Sequence, Cancelled: m.Cancelled}
	if out.Participants == nil {
		out.Participants = []string{}
	}
	if res != nil {
		for _, o := range res.Occurrences {
			out.Occurrences = append(out.Occurrences, o.Start.Format(time.RFC3339))
		}
		out.Capped, out.Unchanged, out.Warnings = res.Capped, res.Unchanged, res.Warnings
	}
	return out
}

// UpdateRequest is the body of PUT …/meeting/update.
type UpdateRequest struct {
	MeetingID string `json:"meeting_id"`
	Spec
}

// DecodeUpdate strictly decodes an update body.
func DecodeUpdate(body []byte) (*UpdateRequest, error) {
	var req UpdateRequest
	if err := decodeStrict(body, &req); err != nil {
		return nil, err
	}
	if req.MeetingID == "" {
		return nil, invalid("meeting_id", "required")
	}
	return &req, nil
}

func decodeStrict(body []byte, v any) error {
	if len(body) > MaxBodyBytes {
		return invalid("body", "larger than %d bytes", MaxBodyBytes)
	}
	if err := strictjson.UnmarshalKnown(body, v); err != nil {
		return invalid("body", "not a valid request: %v", err)
	}
	return nil
}

type apiFunc func(ctx context.Context, user string, r *http.Request, body []byte) (int, any, error)

// api authenticates the caller, reads the body and renders the result or
// the error (the only place errors become HTTP).
func (s *Service) api(endpoint string, fn apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := s.log.WithContext(r.Context())
		user, err := s.authenticate(ctx, r)
		if err != nil {
			s.writeError(w, endpoint, err)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		if err != nil {
			s.writeError(w, endpoint, invalid("body", "larger than %d bytes", MaxBodyBytes))
			return
		}
		status, out, err := fn(ctx, user, r, body)
		if err != nil {
			s.writeError(w, endpoint, err)
			return
		}
		s.metrics.api.WithLabelValues(endpoint, "2xx").Inc()
		writeJSON(w, status, out)
	})
}

// authenticate finds the calling Matrix user.
func (s *Service) authenticate(ctx context.Context, r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if s.auth == nil || h == "" {
		return "", fmt.Errorf("%w: send Authorization: Bearer <Matrix access token> or MX-Identity <OpenID token>", ErrUnauthorized)
	}
	scheme, cred, _ := strings.Cut(h, " ")
	cred = strings.TrimSpace(cred)
	var user string
	var err error
	switch strings.ToLower(scheme) {
	case "bearer":
		user, err = s.auth.AccessToken(ctx, cred)
	case "mx-identity":
		var tok OpenIDToken
		raw, derr := base64.StdEncoding.DecodeString(cred)
		if derr != nil {
			raw, derr = base64.RawURLEncoding.DecodeString(cred)
		}
		if derr != nil || len(raw) > 4096 || json.Unmarshal(raw, &tok) != nil || tok.AccessToken == "" || tok.MatrixServerName == "" {
			return "", fmt.Errorf("%w: MX-Identity must be the base64 of an OpenID token JSON", ErrUnauthorized)
		}
		user, err = s.auth.OpenID(ctx, tok)
	default:
		return "", fmt.Errorf("%w: unknown authorization scheme", ErrUnauthorized)
	}
	if err != nil || !validUserID(user) {
		return "", fmt.Errorf("%w: the token was not accepted", ErrUnauthorized)
	}
	return user, nil
}

func (s *Service) writeError(w http.ResponseWriter, endpoint string, err error) {
	status, code := http.StatusInternalServerError, "M_UNKNOWN"
	msg := "internal error"
	switch {
	case errors.Is(err, ErrUnauthorized):
		status, code, msg = http.StatusUnauthorized, "M_UNKNOWN_TOKEN", err.Error()
	case errors.Is(err, ErrInvalid):
		status, code, msg = http.StatusBadRequest, "M_INVALID_PARAM", describeError(err)
	case errors.Is(err, ErrRateLimited):
		status, code, msg = http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", describeError(err)
	case errors.Is(err, ErrPolicy):
		status, code, msg = http.StatusForbidden, "DE_GXCONF_POLICY", describeError(err)
	case errors.Is(err, ErrForbidden):
		status, code, msg = http.StatusForbidden, "M_FORBIDDEN", err.Error()
	case errors.Is(err, ErrNotFound):
		status, code, msg = http.StatusNotFound, "M_NOT_FOUND", err.Error()
	default:
		s.log.Error().Err(err).Str("endpoint", endpoint).Msg("Meetings API request failed")
	}
	s.metrics.api.WithLabelValues(endpoint, fmt.Sprintf("%dxx", status/100)).Inc()
	writeJSON(w, status, map[string]string{"errcode": code, "error": msg})
}

// handleFeed serves a user's webcal feed; the token in the path is the only
// credential, so an unknown one gets the same 404 as a malformed one.
func (s *Service) handleFeed(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutSuffix(r.PathValue("file"), ".ics")
	if !ok {
		http.NotFound(w, r)
		return
	}
	body, found, err := s.Feed(r.Context(), token)
	switch {
	case err != nil:
		s.log.Error().Err(err).Msg("Failed to render a feed")
		http.Error(w, "internal error", http.StatusInternalServerError)
		s.metrics.api.WithLabelValues("feed_get", "5xx").Inc()
		return
	case !found:
		s.metrics.api.WithLabelValues("feed_get", "4xx").Inc()
		http.NotFound(w, r)
		return
	}
	s.metrics.api.WithLabelValues("feed_get", "2xx").Inc()
	w.Header().Set("Content-Type", "text/calendar; charset=utf-8")
	w.Header().Set("Cache-Control", "private, no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// HomeserverAuth checks access tokens with the homeserver's whoami and
// OpenID tokens with the given function (the focus's federation check).
type HomeserverAuth struct {
	HomeserverURL string
	Client        *http.Client
	OpenIDCheck   func(ctx context.Context, tok OpenIDToken) (string, error)
}

// AccessToken asks the homeserver whose token it is.
func (a *HomeserverAuth) AccessToken(ctx context.Context, token string) (string, error) {
	if token == "" || len(token) > 1024 {
		return "", ErrUnauthorized
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(a.HomeserverURL, "/")+"/_matrix/client/v3/account/whoami", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	cli := a.Client
	if cli == nil {
		cli = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := cli.Do(req)
	if err != nil {
		return "", fmt.Errorf("failed to ask the homeserver: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", ErrUnauthorized
	}
	var out struct {
		UserID string `json:"user_id"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out); err != nil {
		return "", err
	}
	return out.UserID, nil
}

// OpenID checks an OpenID token.
func (a *HomeserverAuth) OpenID(ctx context.Context, tok OpenIDToken) (string, error) {
	if a.OpenIDCheck == nil {
		return "", ErrUnauthorized
	}
	return a.OpenIDCheck(ctx, tok)
}
