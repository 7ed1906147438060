package appservice

import (
	"context"

	"github.com/gxfs-conf/gxconf/credentials"
)

// ParticipantRemover removes a Matrix user's participants from the SFU. The
// focus implements it from the tokens it handed out.
type ParticipantRemover interface {
	RemoveUser(ctx context.Context, roomID, userID, reason string) (int, error)
}

// Auditor appends to the audit log; the credentials verifier implements it.
type Auditor interface {
	Audit(ctx context.Context, e credentials.AuditEntry) error
}

// BookingInfo describes a room's service booking for "!conf bookings" (the
// catalog implements it, wired in cmd).
type BookingInfo interface {
	// RoomBookings is a plain-text summary of the room's booking and usage.
	RoomBookings(ctx context.Context, roomID string) (string, error)
	// ConfirmRoom records that a room admin accepted the room's binding to
	// a booking (made by an organisation's admin in the catalogue); bound
	// is false when the room is not bound to that booking. An error is
	// the operator's (the store), not the user's.
	ConfirmRoom(ctx context.Context, roomID, bookingID, userID string) (bound bool, err error)
}
