package catalog

import "errors"

// Sentinel errors; the admin API maps them to HTTP statuses.
var (
	// ErrNotFound: no such booking or tier.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: a booking request breaks the tier's terms or is malformed.
	ErrInvalid = errors.New("invalid request")
	// ErrState: the transition is not allowed from the booking's state.
	ErrState = errors.New("not allowed in the booking's state")
	// ErrWindow: a meeting occurrence lies outside the booking's window.
	ErrWindow = errors.New("outside the booking's window")
	// ErrForbidden: the admin policy refused the action.
	ErrForbidden = errors.New("forbidden")
	// ErrUnauthenticated: no valid ID token or session, or no MFA.
	ErrUnauthenticated = errors.New("unauthenticated")
)

// hiddenCause is a refusal whose cause — a library's error, the identity
// provider's answer — is for the log (the error's whole text), not for
// the browser: publicReason says only the refusal.
type hiddenCause struct {
	refusal error // wraps one of the sentinels
	cause   error
}

func (e *hiddenCause) Error() string   { return e.refusal.Error() + ": " + e.cause.Error() }
func (e *hiddenCause) Unwrap() []error { return []error{e.refusal, e.cause} }
