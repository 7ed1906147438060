package plan

import (
	"errors"
	"strings"
)

// ErrCalibration wraps every problem of a calibration file.
var ErrCalibration = errors.New("invalid calibration")

// ErrInput wraps every problem of a planner input.
var ErrInput = errors.New("invalid input")

// fieldErrors collects problems, each named by its field, so one run
// reports all of them (as config validation does).
type fieldErrors struct {
	kind error
	msgs []string
}

func (f *fieldErrors) add(field, msg string) { f.msgs = append(f.msgs, field+": "+msg) }

func (f *fieldErrors) err() error {
	if len(f.msgs) == 0 {
		return nil
	}
	return &ValidationError{kind: f.kind, Problems: f.msgs}
}

// ValidationError lists every problem found, each prefixed by the field it
// concerns (e.g. "remote_share: must be between 0 and 1, got 1.5").
type ValidationError struct {
	kind     error
	Problems []string
}

func (e *ValidationError) Error() string {
	return e.kind.Error() + ": " + strings.Join(e.Problems, "; ")
}

func (e *ValidationError) Unwrap() error { return e.kind }
