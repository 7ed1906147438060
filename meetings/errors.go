package meetings

import (
	"errors"
	"fmt"

	"github.com/gxfs-conf/gxconf/internal/clip"
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
	// ErrRateLimited: the user did this too often; try again later.
	ErrRateLimited = errors.New("rate limited")
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
	return &fieldError{kind: ErrInvalid, field: field, msg: fieldMsg(format, args)}
}

func rateLimited(field, format string, args ...any) error {
	return &fieldError{kind: ErrRateLimited, field: field, msg: fieldMsg(format, args)}
}

func refused(field, format string, args ...any) error {
	return &fieldError{kind: ErrPolicy, field: field, msg: fieldMsg(format, args)}
}

// Bounds of what a fieldError quotes: the values (often the request's
// own text) and the whole message, which the HTTP API and the bot send
// back and logs keep.
const (
	maxQuotedValue = clip.QuoteMax
	maxFieldMsg    = 400
)

// fieldMsg formats a fieldError's message with every string argument cut
// to a short printable prefix and every error argument's text bounded: a
// 1 MB value is named by its first bytes, not echoed.
func fieldMsg(format string, args []any) string {
	for i, a := range args {
		switch v := a.(type) {
		case string:
			args[i] = clip.Text(v, maxQuotedValue)
		case error:
			args[i] = clip.Text(v.Error(), maxFieldMsg/2)
		}
	}
	return clip.Text(fmt.Sprintf(format, args...), maxFieldMsg)
}
