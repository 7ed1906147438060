package atrest

import "errors"

var (
	// ErrUnknownKey: a value names a key id the keyring does not hold (the
	// key was removed from the Secret before its rows were rotated).
	ErrUnknownKey = errors.New("sealed with a key that is not configured")
	// ErrWrongKey: the value does not authenticate under the key of its id
	// (another key under the same name, or an altered value).
	ErrWrongKey = errors.New("does not decrypt: wrong key for its key id, or the value was altered")
	// ErrMalformed: the value is too short to be a sealed value.
	ErrMalformed = errors.New("not a sealed value")
)
