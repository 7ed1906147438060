package appservice

import "context"

// ParticipantRemover removes a Matrix user's participants from the SFU. The
// focus implements it from the tokens it handed out.
type ParticipantRemover interface {
	RemoveUser(ctx context.Context, roomID, userID, reason string) (int, error)
}
