package focus

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Sentinel errors of the focus. The HTTP edge maps them to Matrix error JSON.
var (
	// ErrUnauthorized: the OpenID token could not be verified or does not match the claimed user.
	ErrUnauthorized = errors.New("the request could not be authorised")
	// ErrNotMember: the user is not joined to the Matrix room.
	ErrNotMember = errors.New("the user is not joined to the room")
	// ErrAccessDenied: the room's access policy refused the user.
	ErrAccessDenied = errors.New("the room's access policy refused the user")
	// ErrMembershipUnknown: membership could not be determined (homeserver unreachable).
	ErrMembershipUnknown = errors.New("unable to verify room membership")
	// ErrRoomStateUnknown: the room's access policy could not be read now
	// (homeserver or database unreachable); the client may ask again.
	ErrRoomStateUnknown = errors.New("unable to read the room's access policy")
	// ErrNoCapacity: no SFU node can take the call now (all full, draining
	// or gone); the client may ask again.
	ErrNoCapacity = errors.New("no SFU node can take the call")
	// ErrEntitlementUnknown: the room's service booking could not be
	// checked now (database unreachable); the client may ask again.
	ErrEntitlementUnknown = errors.New("unable to check the room's service booking")
	// ErrRoomCreate: the SFU refused or failed to create the room.
	ErrRoomCreate = errors.New("unable to create room on SFU")
	// ErrGrantRevoked: the token's grant was revoked (the user left, was
	// removed, or lost their credential).
	ErrGrantRevoked = errors.New("the token's grant was revoked")
	// ErrGrantUnknown: the token names no grant of this focus (or another room or identity).
	ErrGrantUnknown = errors.New("the token names no known grant")
	// ErrGrantExpired: the grant has ended (e.g. the attestation expired).
	ErrGrantExpired = errors.New("the token's grant has ended")

	// errDelayedEventGone: the homeserver no longer has the delayed event
	// scheduled (404 on restart: sent or cancelled; 409: cancelled), or its
	// Client-Server API is unknown, so there is nothing left to restart or send.
	errDelayedEventGone = errors.New("the delayed event is no longer scheduled")
)

// Matrix error codes used on the wire.
const (
	codeNotJSON      = "M_NOT_JSON"
	codeBadJSON      = "M_BAD_JSON"
	codeUnauthorized = "M_UNAUTHORIZED"
	codeForbidden    = "M_FORBIDDEN"
	codeLimit        = "M_LIMIT_EXCEEDED"
	codeTooLarge     = "M_TOO_LARGE"
	codeUnknown      = "M_UNKNOWN"
)

// lk-jwt-service's answers to delegations it cannot take.
const (
	msgDelegationRestricted = "Delegation of delayed events is only supported for full access users"
	msgUnresolvedCSAPI      = "Unable to resolve client-server API"
)

// Error is an error with its HTTP rendering: {"errcode","error"} and a status.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter is set for M_LIMIT_EXCEEDED.
	RetryAfter time.Duration
	// Err is the cause, for logs only; it is never sent to the client.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func badJSON(msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: codeBadJSON, Message: msg}
}

// tooManyDelegations refuses a delegation that would take its user past
// maxDelegationsPerUser; one of theirs must end first.
func tooManyDelegations() *Error {
	return &Error{Status: http.StatusTooManyRequests, Code: codeLimit,
		Message: fmt.Sprintf("Too many delayed leave events delegated by this user (at most %d at a time)", maxDelegationsPerUser)}
}

// delegationsFull refuses a delegation while the node runs
// delayed_events.max_jobs of them; one must end first.
func delegationsFull() *Error {
	return &Error{Status: http.StatusTooManyRequests, Code: codeLimit,
		Message: "Too many delayed leave events delegated to this service; try again later"}
}

// delegationRefusedOnTokenEndpoint answers a delegation over a cap on
// /get_token or /sfu/get with 400 M_BAD_JSON instead of 429: Element Call
// asks again without its delay fields after a 400 M_BAD_JSON (as after
// lk-jwt-service's "Unable to resolve client-server API") and so joins the
// call, keeping its own delayed leave on the homeserver, where a 429 would
// fail /get_token, then /sfu/get, and keep the user out of the call.
// /delegate_delayed_leave keeps the 429.
func delegationRefusedOnTokenEndpoint(err error) error {
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusTooManyRequests && e.Code == codeLimit {
		return &Error{Status: http.StatusBadRequest, Code: codeBadJSON, Message: e.Message + "; ask without delay_id and delay_timeout"}
	}
	return err
}

// toError maps any error of the processing functions to its wire form.
// Unknown errors become 500 without leaking their text.
func toError(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, ErrUnauthorized):
		return &Error{Status: http.StatusUnauthorized, Code: codeUnauthorized, Message: "The request could not be authorised.", Err: err}
	case errors.Is(err, ErrNotMember):
		return &Error{Status: http.StatusForbidden, Code: codeForbidden, Message: "You are not a member of this room.", Err: err}
	case errors.Is(err, ErrAccessDenied):
		var d *DeniedError
		msg := "The room's access policy does not admit you."
		if errors.As(err, &d) && d.Reason != "" {
			msg = d.Reason
		}
		return &Error{Status: http.StatusForbidden, Code: codeForbidden, Message: msg, Err: err}
	case errors.Is(err, ErrMembershipUnknown):
		return &Error{Status: http.StatusServiceUnavailable, Code: codeUnknown, Message: "Unable to verify room membership, try again later.", Err: err}
	case errors.Is(err, ErrRoomStateUnknown):
		return &Error{Status: http.StatusServiceUnavailable, Code: codeUnknown, Message: "Unable to read the room's access policy, try again later.", Err: err}
	case errors.Is(err, ErrEntitlementUnknown):
		return &Error{Status: http.StatusServiceUnavailable, Code: codeUnknown, Message: "Unable to check the room's service booking, try again later.", Err: err}
	case errors.Is(err, ErrNoCapacity):
		return &Error{Status: http.StatusServiceUnavailable, Code: codeUnknown, Message: "No media server can take the call now, try again later.", Err: err}
	case errors.Is(err, ErrRoomCreate):
		return &Error{Status: http.StatusInternalServerError, Code: codeUnknown, Message: "Unable to create room on SFU", Err: err}
	}
	return &Error{Status: http.StatusInternalServerError, Code: codeUnknown, Message: "Internal Server Error", Err: err}
}

// DeniedError carries the policy's reason for a refusal; it matches ErrAccessDenied.
type DeniedError struct {
	Reason string
}

func (d *DeniedError) Error() string { return d.Reason }

func (d *DeniedError) Is(target error) bool { return target == ErrAccessDenied }
