package appservice

import "context"

// ParticipantRemover removes a Matrix user's participants from the SFU. The
// focus implements it from the tokens it handed out.
type ParticipantRemover interface {
	RemoveUser(ctx context.Context, roomID, userID, reason string) (int, error)
}

// StatusReporter adds lines about a room to the bot's "!conf status" answer
// (for example the room's access policy); it may be nil.
type StatusReporter interface {
	RoomStatus(ctx context.Context, roomID string) []string
}
