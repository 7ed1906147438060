package focus

import (
	"context"
	"time"

	"github.com/livekit/protocol/livekit"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/credentials"
)

// RoomService is the part of LiveKit's livekit.RoomService the focus uses. The
// embedded SFU implements it in-process; NewTwirpRoomService implements it for
// a stock LiveKit server.
type RoomService interface {
	CreateRoom(ctx context.Context, req *livekit.CreateRoomRequest) (*livekit.Room, error)
	ListParticipants(ctx context.Context, req *livekit.ListParticipantsRequest) (*livekit.ListParticipantsResponse, error)
	// GetParticipant finds one participant; an absent room or participant
	// is a twirp.NotFound error. Delayed-leave jobs poll it.
	GetParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.ParticipantInfo, error)
	RemoveParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error)
}

// Placer chooses the SFU node for a token request: the cluster's placement
// (cluster.Placer implements it).
type Placer interface {
	Place(ctx context.Context, req cluster.PlacementRequest) (cluster.Placement, error)
}

// MembershipChecker tells whether a user is joined to a Matrix room. The
// appservice implements it from its store, asking the homeserver when the store
// does not know.
type MembershipChecker interface {
	IsJoined(ctx context.Context, roomID, userID string) (bool, error)
}

// AccessRequest is what the focus knows about a token request once the user is
// authenticated and known to be a member.
type AccessRequest struct {
	RoomID   string
	UserID   string
	DeviceID string
	// ServerName is the user's homeserver (from the verified OpenID token).
	ServerName string
	// LiveKitRoom and Identity are what the token will grant.
	LiveKitRoom string
	Identity    string
	// Participants counts the others already in the LiveKit room; it asks the
	// SFU, so deciders call it only when they need it.
	Participants func(ctx context.Context) (int, error)
}

// AccessDecision is an allowed request's terms.
type AccessDecision struct {
	// NotAfter caps the token's validity (e.g. the attestation's expiry); zero means no cap.
	NotAfter time.Time
	// MaxParticipants is the room's cap for CreateRoom; 0 means none.
	MaxParticipants uint32
	// DenyPublish forces a subscribe-only token.
	DenyPublish bool
	// Level is the room's confidentiality level (empty: public); it
	// decides which peered deployments may relay the room.
	Level credentials.Level
}

// AccessDecider applies a room's access policy beyond membership (credentials,
// confidentiality level). It returns an error matching ErrAccessDenied (see
// DeniedError) to refuse.
type AccessDecider interface {
	Decide(ctx context.Context, req AccessRequest) (AccessDecision, error)
}

// Messenger tells users and rooms what happened (the appservice's bot).
type Messenger interface {
	DirectMessage(ctx context.Context, userID, text, html string) error
	Notice(ctx context.Context, roomID, text string) error
}

// MembershipOnly admits every member; it is the decider when no credential
// policy is configured.
type MembershipOnly struct{}

// Decide admits the request without further terms.
func (MembershipOnly) Decide(context.Context, AccessRequest) (AccessDecision, error) {
	return AccessDecision{}, nil
}

// Auditor appends to the audit log; the credentials verifier implements it.
type Auditor interface {
	Audit(ctx context.Context, e credentials.AuditEntry) error
}

// EntitlementRequest is a token request the access policy admitted, as the
// service booking check sees it.
type EntitlementRequest struct {
	RoomID     string
	UserID     string
	ServerName string
	// LiveKitRoom and Identity are what the token will grant.
	LiveKitRoom string
	Identity    string
	// Level is the room's confidentiality level from its access policy.
	Level credentials.Level
}

// Entitlement is the booking's answer. A non-empty Refused refuses the
// token with that reason (shown to the user as is).
type Entitlement struct {
	Refused string
	// Booking names the booking the room is bound to (empty: none).
	Booking string
	// MaxParticipants caps the SFU room (second line behind the count the
	// booking check made); 0: no cap.
	MaxParticipants uint32
	// Sites restricts placement to the booked sites; empty: any.
	Sites []cluster.SiteID
	// NotAfter caps the token's validity (the booking's end); zero: none.
	NotAfter time.Time
}

// Entitlements enforces service bookings at token time (the catalog
// implements it, wired in cmd). Admit is called after the access policy
// allowed the request; an error (not a refusal) fails the request with 503.
type Entitlements interface {
	Admit(ctx context.Context, req EntitlementRequest) (Entitlement, error)
}
