package meetings

import (
	"errors"
	"fmt"
)

// Sentinel errors; every refusal wraps one of them, so the HTTP edge picks
// the status and the bot says the message.
var (
	// ErrInvalid: the request names a wrong part (field: value: why).
	ErrInvalid = errors.New("invalid request")
	// ErrForbidden: the user may not do this (not the organiser).
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound: no such meeting.
	ErrNotFound = errors.New("no such meeting")
	// ErrPolicy: the meeting's level or size does not allow the request.
	ErrPolicy = errors.New("refused by the room policy")
	// ErrUnauthorized: the HTTP caller's token was missing or not accepted.
	ErrUnauthorized = errors.New("unauthorized")
)

// fieldError names the wrong part of a request.
type fieldError struct {
	kind  error
	field string
	msg   string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }
func (e *fieldError) Unwrap() error { return e.kind }

func invalid(field, format string, args ...any) error {
	return &fieldError{kind: ErrInvalid, field: field, msg: fmt.Sprintf(format, args...)}
}

func refused(field, format string, args ...any) error {
	return &fieldError{kind: ErrPolicy, field: field, msg: fmt.Sprintf(format, args...)}
}
