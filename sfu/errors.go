package sfu

import "errors"

// Sentinel errors. The Twirp edge maps them to Twirp codes.
var (
	ErrRoomNotFound        = errors.New("requested room does not exist")
	ErrParticipantNotFound = errors.New("participant does not exist")
	ErrTrackNotFound       = errors.New("track does not exist")
	ErrRoomFull            = errors.New("room has reached its participant limit")
	ErrRoomClosed          = errors.New("room is closed")
	ErrInvalidToken        = errors.New("invalid token")
	ErrPermissionDenied    = errors.New("permission denied")
	ErrServerClosed        = errors.New("server is shutting down")
	ErrRemoteUnmute        = errors.New("remote unmute is not enabled")
	// ErrTokenRevoked: the participant was removed after the token was issued.
	ErrTokenRevoked = errors.New("permission denied: the participant was removed from the room after this token was issued; ask for a new token")
)
