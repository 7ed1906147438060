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
