package meetings

import (
	"context"
	"time"

	"github.com/gxfs-conf/gxconf/credentials"
)

// Matrix is what meetings needs from the homeserver, acting as the bot.
type Matrix interface {
	// CreateRoom creates a room as the bot.
	CreateRoom(ctx context.Context, req RoomRequest) (roomID string, err error)
	// Invite invites userID with a reason (the text Element shows).
	Invite(ctx context.Context, roomID, userID, reason string) error
	// RefreshInvite sends a new invite membership event with a new reason
	// for userID, who is invited and has not joined: Matrix has no way to
	// edit an invite, so this is how Nordeck's bot updates what Element shows
	// when a meeting changes (invite → invite is allowed by the
	// m.room.member authorisation rules).
	RefreshInvite(ctx context.Context, roomID, userID, reason string) error
	// Memberships returns the membership (invite, join, leave, ban) of each
	// user in the room's state.
	Memberships(ctx context.Context, roomID string) (map[string]string, error)
	// Kick removes userID (an uninvited participant, or everyone at cancel).
	Kick(ctx context.Context, roomID, userID, reason string) error
	// SendState sends a state event as the bot.
	SendState(ctx context.Context, roomID, eventType, stateKey string, content any) error
	// SendMessage sends an m.room.message as the bot.
	SendMessage(ctx context.Context, roomID string, content map[string]any) error
	// SendSecretMessage is SendMessage for content that must not reach the
	// logs (the feed address): the client omits its body when logging.
	SendSecretMessage(ctx context.Context, roomID string, content map[string]any) error
	// Upload stores a file in the media repository and returns its mxc:// URI.
	Upload(ctx context.Context, data []byte, contentType, fileName string) (string, error)
	// DirectRoom is the bot's direct chat with userID, created when needed.
	DirectRoom(ctx context.Context, userID string) (string, error)
	// Leave makes the bot leave a room (rolling back a half-created one).
	Leave(ctx context.Context, roomID string) error
}

// RoomRequest is a room the bot creates for a meeting.
type RoomRequest struct {
	Name, Topic string
	// PowerLevels is the m.room.power_levels content.
	PowerLevels map[string]any
	// InitialState are state events (type, state key "", content).
	InitialState []StateEvent
}

// StateEvent is one initial state event.
type StateEvent struct {
	Type    string
	Content any
}

// PolicyValidator checks a new meeting room's access policy against the
// deployment's rules; the credentials verifier implements it.
type PolicyValidator interface {
	ValidatePolicyChange(old, next *credentials.AccessPolicy, senderPower, topPower int64) error
}

// BookingChecker is the hook for service-tier bookings (package catalog):
// it says whether the organiser holds a booking that covers the meeting
// (level, participants, every occurrence) and returns its reference, which
// the meeting's metadata keeps in external_data["de.gxconf.booking"]. Nil
// means there are no bookings: only the room policy limits a meeting.
type BookingChecker interface {
	CheckMeeting(ctx context.Context, req BookingRequest) (bookingRef string, err error)
	// BindRoom binds the meeting's new room to the booking, so the focus
	// counts its calls against it; called once the room exists.
	BindRoom(ctx context.Context, bookingRef, roomID, meetingID, organiser string) error
}

// BookingRequest is what a booking must cover.
type BookingRequest struct {
	Organiser    string
	Level        credentials.Level
	Participants int // invitees + organiser
	Occurrences  []Occurrence
	// BookingRef is the booking the organiser named (or the meeting's
	// current one on an update); "" for none.
	BookingRef string
}

// Authenticator turns an HTTP caller's credentials into a Matrix user ID.
type Authenticator interface {
	// AccessToken checks a Matrix access token (client-server API whoami).
	AccessToken(ctx context.Context, token string) (string, error)
	// OpenID checks a Matrix OpenID token (federation userinfo).
	OpenID(ctx context.Context, tok OpenIDToken) (string, error)
}

// OpenIDToken is what a client gets from /openid/request_token.
type OpenIDToken struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int64  `json:"expires_in"`
}

// Clock is the time source of the reminders (a fake one in tests).
type Clock interface {
	Now() time.Time
	// After fires once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
