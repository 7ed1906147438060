package catalog

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/internal/clip"
)

// State is a booking's state.
type State string

// Booking states (meetings-and-catalogue §5): requested → active →
// suspended / expired / cancelled / revoked.
const (
	StateRequested State = "requested"
	StateActive    State = "active"
	StateSuspended State = "suspended"
	StateExpired   State = "expired"
	StateCancelled State = "cancelled"
	StateRevoked   State = "revoked"
)

// Terminal says no transition leaves the state.
func (s State) Terminal() bool {
	return s == StateExpired || s == StateCancelled || s == StateRevoked
}

// Booking units.
const (
	UnitDateRange = "dateRange"
	UnitSessions  = "sessions"
)

// transitions lists, per action, the states it may start from and where it leads.
var transitions = map[string]struct {
	from []State
	to   State
}{
	"confirm": {[]State{StateRequested}, StateActive},
	"suspend": {[]State{StateActive}, StateSuspended},
	"resume":  {[]State{StateSuspended}, StateActive},
	"cancel":  {[]State{StateRequested, StateActive, StateSuspended}, StateCancelled},
	"revoke":  {[]State{StateRequested, StateActive, StateSuspended}, StateRevoked},
	"expire":  {[]State{StateRequested, StateActive, StateSuspended}, StateExpired},
}

// TierSnapshot is the tier as it was offered when the booking was made.
type TierSnapshot struct {
	Tier            string            `json:"tier"`
	TierIRI         string            `json:"tier_iri"`
	Offering        string            `json:"offering"`
	OfferingHash    string            `json:"offering_hash"`
	MaxParticipants int               `json:"max_participants"`
	Level           credentials.Level `json:"level"`
	ServiceLevel    string            `json:"service_level"`
	Availability    float64           `json:"availability"`
	MaxConcurrent   int               `json:"max_concurrent_sessions"`
	Sites           []string          `json:"sites"`
}

// Usage is what a booking was used for: evidence for audit, billing and SLA.
type Usage struct {
	Sessions           int     `json:"sessions"`
	ParticipantMinutes float64 `json:"participant_minutes"`
	PeakParticipants   int     `json:"peak_participants"`
	PeakSessions       int     `json:"peak_sessions"`
}

// Booking is one organisation's booking of a tier.
type Booking struct {
	ID    string `json:"id"`
	State State  `json:"state"`
	// Org is the organisation's key (admin.organisations); OrgID its DID or IRI.
	Org     string `json:"org"`
	OrgID   string `json:"org_id"`
	OrgName string `json:"org_name"`
	// Principal is the ordering admin (OIDC issuer and subject).
	Principal string       `json:"principal"`
	Snapshot  TierSnapshot `json:"snapshot"`
	// Unit is dateRange or sessions; the window bounds both.
	Unit          string    `json:"unit"`
	ValidFrom     time.Time `json:"valid_from"`
	ValidUntil    time.Time `json:"valid_until"`
	TZ            string    `json:"tz"`
	SessionsQuota int       `json:"sessions_quota,omitempty"`
	MaxConcurrent int       `json:"max_concurrent_sessions"`
	Sites         []string  `json:"sites"`
	// Rooms lists the Matrix rooms the booking was ordered for (bound at once).
	Rooms []string `json:"rooms,omitempty"`
	// Organisers are the Matrix users who may schedule meetings under the
	// booking (package meetings); nobody else can bind a meeting to it.
	Organisers []string `json:"organisers,omitempty"`
	// Terms: what the consumer accepted (T&C hash of the level).
	TermsHash string `json:"terms_hash"`

	CreatedAt   time.Time `json:"created_at"`
	ConfirmedAt time.Time `json:"confirmed_at,omitzero"`
	ConfirmedBy string    `json:"confirmed_by,omitempty"`
	SuspendedAt time.Time `json:"suspended_at,omitzero"`
	EndedAt     time.Time `json:"ended_at,omitzero"`
	EndedBy     string    `json:"ended_by,omitempty"`
	EndReason   string    `json:"end_reason,omitempty"`

	// Entitlement is the vk:Booking credential (VC-JWT), issued on activation.
	EntitlementID string `json:"entitlement_id,omitempty"`
	Entitlement   string `json:"entitlement,omitempty"`
	StatusIndex   int    `json:"status_index"`

	Usage Usage `json:"usage"`
}

// BookingRequest is an admin's order.
type BookingRequest struct {
	Tier          string    `json:"tier"`
	Unit          string    `json:"unit"`
	ValidFrom     time.Time `json:"valid_from"`
	ValidUntil    time.Time `json:"valid_until"`
	TZ            string    `json:"tz"`
	Sessions      int       `json:"sessions"`
	MaxConcurrent int       `json:"max_concurrent_sessions"`
	Sites         []string  `json:"sites"`
	Rooms         []string  `json:"rooms"`
	// Organisers: Matrix user IDs who may schedule meetings under it.
	Organisers []string `json:"organisers"`
	// AcceptTerms must be the level's terms hash: the consumer accepted them.
	AcceptTerms string `json:"accept_terms"`
}

// maxBookingSpan bounds a booking's window.
const maxBookingSpan = 3 * 366 * 24 * time.Hour

// check validates req against the tier: sites ⊆ tier sites, concurrency ≤
// tier, a sane window and unit.
func (req *BookingRequest) check(t *Tier, termsHash string, now time.Time) error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(f, a...)) }
	switch req.Unit {
	case UnitDateRange:
		if req.Sessions != 0 {
			return bad("sessions is only for unit %q", UnitSessions)
		}
	case UnitSessions:
		if req.Sessions < 1 || req.Sessions > 100000 {
			return bad("sessions must be between 1 and 100000")
		}
	default:
		return bad("unit must be %q or %q", UnitDateRange, UnitSessions)
	}
	if req.ValidFrom.IsZero() || req.ValidUntil.IsZero() || !req.ValidUntil.After(req.ValidFrom) {
		return bad("valid_from must be before valid_until")
	}
	if req.ValidUntil.Before(now) {
		return bad("valid_until lies in the past")
	}
	if req.ValidUntil.Sub(req.ValidFrom) > maxBookingSpan {
		return bad("a booking spans at most three years")
	}
	if req.TZ == "" {
		req.TZ = "UTC"
	}
	if _, err := time.LoadLocation(req.TZ); err != nil || len(req.TZ) > 64 {
		return bad("tz %s is not an IANA time zone", clip.Quote(req.TZ))
	}
	if req.MaxConcurrent == 0 {
		req.MaxConcurrent = t.MaxConcurrent
	}
	if req.MaxConcurrent < 1 || req.MaxConcurrent > t.MaxConcurrent {
		return bad("max_concurrent_sessions must be between 1 and the tier's %d", t.MaxConcurrent)
	}
	if len(req.Sites) == 0 {
		req.Sites = slices.Clone(t.Sites)
	}
	for _, s := range req.Sites {
		if !slices.Contains(t.Sites, s) {
			return bad("site %s is not offered for this tier (offered: %s)", clip.Quote(s), strings.Join(t.Sites, ", "))
		}
	}
	if len(req.Rooms) > 100 {
		return bad("at most 100 rooms per booking")
	}
	for _, r := range req.Rooms {
		if !validRoomID(r) {
			return bad("rooms: %s is not a Matrix room ID", clip.Quote(r))
		}
	}
	if len(req.Organisers) > 1000 {
		return bad("at most 1000 organisers per booking")
	}
	for _, u := range req.Organisers {
		if !validUserID(u) {
			return bad("organisers: %s is not a Matrix user ID", clip.Quote(u))
		}
	}
	if req.AcceptTerms != termsHash {
		return bad("accept_terms must be the hash of the level's terms and conditions (%s)", termsHash)
	}
	return nil
}

// validUserID accepts @localpart:server without spaces or control characters.
// validUserID accepts @localpart:server with the Matrix grammar: the
// localpart of lower-case letters, digits and ._=-/+, the server a host
// name or IP literal with an optional port.
func validUserID(u string) bool {
	if len(u) < 4 || len(u) > 255 || u[0] != '@' {
		return false
	}
	local, server, ok := strings.Cut(u[1:], ":")
	if !ok || local == "" || server == "" {
		return false
	}
	for _, c := range local {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune("._=-/+", c)) {
			return false
		}
	}
	for _, c := range server {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c)) {
			return false
		}
	}
	return true
}

// validRoomID accepts !opaque:server without spaces or control characters.
func validRoomID(r string) bool {
	if len(r) < 4 || len(r) > 255 || r[0] != '!' || !strings.Contains(r, ":") {
		return false
	}
	for _, c := range r {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// activeAt tells whether the booking may be used at t, or why not.
func (b *Booking) activeAt(t time.Time, grace time.Duration) (bool, string) {
	name := fmt.Sprintf("The booking %s (%s, up to %d participants)", b.ID, levelLabel(b.Snapshot.Level), b.Snapshot.MaxParticipants)
	switch b.State {
	case StateRequested:
		return false, name + " awaits the provider's confirmation; calls can start once it is confirmed."
	case StateSuspended:
		return false, name + " is suspended by the provider."
	case StateCancelled:
		return false, name + " was cancelled."
	case StateRevoked:
		return false, name + " was revoked by the provider."
	case StateExpired:
		return false, name + " has expired (it ended " + b.ValidUntil.UTC().Format(time.RFC3339) + ")."
	}
	if t.Before(b.ValidFrom) {
		return false, name + " starts only at " + b.ValidFrom.UTC().Format(time.RFC3339) + "."
	}
	if t.After(b.ValidUntil.Add(grace)) {
		return false, name + " has expired (it ended " + b.ValidUntil.UTC().Format(time.RFC3339) + ")."
	}
	return true, ""
}
