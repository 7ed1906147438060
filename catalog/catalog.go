package catalog

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"golang.org/x/time/rate"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/credentials/statuslist"
	"github.com/gxfs-conf/gxconf/internal/clip"
)

// StatusListLength is the number of entries of the revocation list: the
// W3C minimum of 16 KiB (131,072 entries) for herd privacy.
const StatusListLength = 131072

// Options are the dependencies of a Catalog.
type Options struct {
	Config Config
	DB     *dbutil.Database
	// Audit receives every admin action and booking transition.
	Audit *credentials.AuditLog
	// Directory counts participants; required for enforcement.
	Directory Directory
	// LocalSite is this deployment's site when it runs without cluster
	// placement (then it is the only site calls can use); empty otherwise.
	LocalSite string
	Log       zerolog.Logger
	// Registerer receives the gxconf_catalog_* metrics; nil: none.
	Registerer prometheus.Registerer
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Catalog is the service catalogue, the bookings and their enforcement.
type Catalog struct {
	cfg       Config
	key       *providerKey
	cat       *Catalogue
	didDoc    []byte
	st        *store
	audit     *credentials.AuditLog
	dir       Directory
	localSite string
	log       zerolog.Logger
	now       func() time.Time
	metrics   *metrics
	admin     *adminAuth
	// authAudit budgets the audit rows of refusals before an identity is
	// established (see auditUnauthenticated).
	authAudit *rate.Limiter
	// subjectAudit budgets the audit rows of each identified subject's
	// refusals (see auditRefusal).
	subjectAudit subjectBudget

	// pickIndex draws a status list index (tests); nil: crypto/rand.
	pickIndex func() (int, error)

	// mu serialises this node's booking transitions and admissions. Replicas
	// sharing the database serialise through store.locked: every check that
	// a write depends on (open bookings, a room's binding, a booking's
	// state, sessions, participants admitted, usage) runs in a transaction
	// holding the lock of what it checks; mu only saves those transactions
	// from waiting for each other within a node.
	mu     sync.Mutex
	status struct {
		jwt string
		at  time.Time
	} // cached status list credential
}

// New issues the catalogue and upgrades the catalog tables. The admin API's
// OpenID provider is contacted lazily, at the first admin request.
func New(ctx context.Context, opts Options) (*Catalog, error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.DB == nil || opts.Audit == nil {
		return nil, errors.New("catalog: DB and Audit are required")
	}
	signer, alg, err := loadKey(cfg.SigningKeyFile)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	did, err := DIDWeb(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("catalog: base_url: %w", err)
	}
	key := &providerKey{signer: signer, alg: alg, did: did, kid: did + "#key-1", x5u: cfg.X5U}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	cat, err := buildCatalogue(cfg, key, now())
	if err != nil {
		return nil, err
	}
	doc, err := key.didDocument()
	if err != nil {
		return nil, err
	}
	st, err := newStore(ctx, opts.DB)
	if err != nil {
		return nil, err
	}
	c := &Catalog{
		cfg: cfg, key: key, cat: cat, didDoc: doc, st: st, audit: opts.Audit, dir: opts.Directory,
		localSite: opts.LocalSite, log: opts.Log, now: now, metrics: newMetrics(opts.Registerer),
		authAudit: rate.NewLimiter(unauthenticatedAuditRate, unauthenticatedAuditBurst),
	}
	c.admin, err = newAdminAuth(ctx, cfg.Admin, c)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Catalogue is what gxconf offers (issued at start).
func (c *Catalog) Catalogue() *Catalogue { return c.cat }

// DID is the provider's did:web.
func (c *Catalog) DID() string { return c.key.did }

func (c *Catalog) baseURL() string { return strings.TrimRight(c.cfg.BaseURL, "/") }

// StatusListURL is the revocation list credential's URL.
func (c *Catalog) StatusListURL() string { return c.baseURL() + "/catalog/status/revocation" }

func newBookingID() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "bk_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)), nil
}

// Principal is who acts: an admin (OIDC) or gxconf itself.
type Principal struct {
	// Subject is issuer + "|" + sub for admins, "gxconf" for the system.
	Subject string
	Org     string
	Roles   []string
}

// Book records an order of org's admin. Public and KRITIS bookings are
// fixed offers and become active at once (with their entitlement); VS-NfD
// bookings are invitations that wait for the provider's confirmation.
func (c *Catalog) Book(ctx context.Context, p Principal, org string, req BookingRequest) (*Booking, error) {
	o, ok := c.cfg.Admin.Organisations[org]
	if !ok {
		return nil, fmt.Errorf("%w: unknown organisation %s", ErrInvalid, clip.Quote(org))
	}
	t, ok := c.cat.Tier(req.Tier)
	if !ok {
		return nil, fmt.Errorf("%w: tier %s", ErrNotFound, clip.Quote(req.Tier))
	}
	now := c.now()
	terms := c.cfg.Levels[t.Level].TermsHash
	if err := req.check(t, terms, now); err != nil {
		return nil, err
	}
	id, err := newBookingID()
	if err != nil {
		return nil, err
	}
	orgID := o.ID
	if orgID == "" {
		orgID = c.baseURL() + "/catalog/organisations/" + org
	}
	b := &Booking{
		ID: id, State: StateRequested, Org: org, OrgID: orgID, OrgName: o.LegalName, Principal: p.Subject,
		Snapshot: TierSnapshot{
			Tier: t.ID, TierIRI: t.IRI, Offering: t.Offering, OfferingHash: c.cat.byName[t.OfferingCred].Hash,
			MaxParticipants: t.MaxParticipants, Level: t.Level, ServiceLevel: t.ServiceLevel,
			Availability: t.Availability, MaxConcurrent: t.MaxConcurrent, Sites: t.Sites,
		},
		Unit: req.Unit, ValidFrom: req.ValidFrom.UTC(), ValidUntil: req.ValidUntil.UTC(), TZ: req.TZ,
		SessionsQuota: req.Sessions, MaxConcurrent: req.MaxConcurrent, Sites: req.Sites, Rooms: req.Rooms, Organisers: req.Organisers,
		TermsHash: terms, CreatedAt: now.UTC(),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The organisation's lock makes the count hold across replicas, the
	// rooms' locks the bindings, and the status list's lock the index.
	keys := []string{"org:" + org, "status-index"}
	for _, r := range b.Rooms {
		keys = append(keys, "room:"+r)
	}
	err = c.st.locked(ctx, func(ctx context.Context) error {
		open, err := c.st.countOpen(ctx, org)
		if err != nil {
			return err
		}
		if open >= c.cfg.MaxOpenBookingsPerOrg {
			return fmt.Errorf("%w: organisation %q has %d open bookings, the limit (catalog.max_open_bookings_per_org) is %d; cancel one first",
				ErrInvalid, org, open, c.cfg.MaxOpenBookingsPerOrg)
		}
		// Cancelled bookings leave the open count but keep their row and
		// status list index for good: the rate of new ones is capped too.
		recent, err := c.st.countSince(ctx, org, now.Add(-24*time.Hour))
		if err != nil {
			return err
		}
		if recent >= c.cfg.MaxBookingsPerOrgPerDay {
			return fmt.Errorf("%w: organisation %q made %d bookings in the last 24 hours, the limit (catalog.max_bookings_per_org_per_day) is %d; try again later",
				ErrInvalid, org, recent, c.cfg.MaxBookingsPerOrgPerDay)
		}
		for _, r := range b.Rooms {
			if err := c.mayBind(ctx, r, org); err != nil {
				return err
			}
		}
		if b.StatusIndex, err = c.freeIndex(ctx); err != nil {
			return err
		}
		if t.Level != credentials.LevelVSNfD {
			if err := c.activate(b, "gxconf (fixed offer)", now); err != nil {
				return err
			}
		}
		if err := c.st.insert(ctx, b); err != nil {
			return fmt.Errorf("failed to store booking: %w", err)
		}
		for _, r := range b.Rooms {
			if err := c.st.bind(ctx, Binding{RoomID: r, Booking: b.ID, Meeting: r, BoundAt: now, BoundBy: p.Subject}); err != nil {
				return fmt.Errorf("failed to store booking: %w", err)
			}
		}
		return nil
	}, keys...)
	if err != nil {
		return nil, err
	}
	c.metrics.bookings.WithLabelValues(string(b.State)).Inc()
	return b, nil
}

// freeIndex picks a random unused status list index. The caller holds the
// "status-index" lock until the booking is stored, so that no other replica
// picks the same index meanwhile (the column is unique as well).
func (c *Catalog) freeIndex(ctx context.Context) (int, error) {
	for range 64 {
		i, err := c.drawIndex()
		if err != nil {
			return 0, err
		}
		used, err := c.st.indexUsed(ctx, i)
		if err != nil {
			return 0, err
		}
		if !used {
			return i, nil
		}
	}
	return 0, errors.New("the status list is full")
}

func (c *Catalog) drawIndex() (int, error) {
	if c.pickIndex != nil {
		return c.pickIndex()
	}
	n, err := rand.Int(rand.Reader, big.NewInt(StatusListLength))
	if err != nil {
		return 0, err
	}
	return int(n.Int64()), nil
}

// activate sets b active and issues its entitlement credential.
func (c *Catalog) activate(b *Booking, by string, now time.Time) error {
	b.State, b.ConfirmedAt, b.ConfirmedBy = StateActive, now.UTC(), by
	if b.Entitlement != "" {
		return nil
	}
	jwt, id, err := c.issueEntitlement(b)
	if err != nil {
		return fmt.Errorf("failed to issue the entitlement: %w", err)
	}
	b.Entitlement, b.EntitlementID = jwt, id
	return nil
}

// issueEntitlement signs the vk:Booking credential for the organisation,
// with its revocation status list entry (W3C Bitstring Status List §2.1).
func (c *Catalog) issueEntitlement(b *Booking) (jwt, id string, err error) {
	base := c.baseURL()
	id = base + "/catalog/bookings/" + b.ID + "/entitlement"
	sites := make([]any, len(b.Sites))
	for i, s := range b.Sites {
		sites[i] = s
	}
	subject := map[string]any{
		"id": b.OrgID, "type": "vk:Booking",
		"vk:booking":               map[string]any{"id": base + "/catalog/bookings/" + b.ID},
		"vk:tier":                  map[string]any{"id": b.Snapshot.TierIRI},
		"vk:offering":              map[string]any{"id": b.Snapshot.Offering},
		"vk:maxParticipants":       b.Snapshot.MaxParticipants,
		"vk:confidentialityLevel":  string(b.Snapshot.Level),
		"vk:serviceLevel":          b.Snapshot.ServiceLevel,
		"vk:maxConcurrentSessions": b.MaxConcurrent,
		"vk:site":                  sites,
		"vk:bookingUnit":           b.Unit,
	}
	if b.Unit == UnitSessions {
		subject["vk:sessions"] = b.SessionsQuota
	}
	vc := map[string]any{
		"@context":          []any{ContextVC2, map[string]any{"vk": base + VocabPath}},
		"id":                id,
		"type":              []string{"VerifiableCredential", "vk:BookingCredential"},
		"issuer":            c.key.did,
		"validFrom":         b.ValidFrom.Format(time.RFC3339),
		"validUntil":        b.ValidUntil.Format(time.RFC3339),
		"credentialSubject": subject,
		"credentialStatus": map[string]any{
			"id":                   fmt.Sprintf("%s#%d", c.StatusListURL(), b.StatusIndex),
			"type":                 "BitstringStatusListEntry",
			"statusPurpose":        "revocation",
			"statusListIndex":      fmt.Sprint(b.StatusIndex),
			"statusListCredential": c.StatusListURL(),
		},
	}
	jwt, err = c.key.sign(vc)
	return jwt, id, err
}

// StatusList returns the revocation list credential (VC-JWT), rebuilt when
// a booking was revoked or cancelled since, or after a minute.
func (c *Catalog) StatusList(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.status.jwt != "" && now.Sub(c.status.at) < time.Minute {
		return c.status.jwt, nil
	}
	set, err := c.st.revokedIndexes(ctx)
	if err != nil {
		return "", err
	}
	enc, err := statuslist.Encode(StatusListLength, set, statuslist.ProfileW3C)
	if err != nil {
		return "", err
	}
	vc := map[string]any{
		"@context":  []any{ContextVC2},
		"id":        c.StatusListURL(),
		"type":      []string{"VerifiableCredential", "BitstringStatusListCredential"},
		"issuer":    c.key.did,
		"validFrom": now.UTC().Truncate(time.Second).Format(time.RFC3339),
		// Verifiers refetch after this (W3C Bitstring Status List §2.2 ttl, ms).
		"credentialSubject": map[string]any{
			"id": c.StatusListURL() + "#list", "type": "BitstringStatusList",
			"statusPurpose": "revocation", "encodedList": enc, "ttl": 60000,
		},
	}
	jwt, err := c.key.sign(vc)
	if err != nil {
		return "", err
	}
	c.status.jwt, c.status.at = jwt, now
	return jwt, nil
}

// Act applies an action (confirm, suspend, resume, cancel, revoke) to a
// booking and writes the transition to the audit log. Cancel and revoke set
// the entitlement's status bit.
func (c *Catalog) Act(ctx context.Context, p Principal, id, action, reason string) (*Booking, error) {
	tr, ok := transitions[action]
	if !ok || action == "expire" {
		return nil, fmt.Errorf("%w: unknown action %s", ErrInvalid, clip.Quote(action))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var refused error
	// Under the booking's lock: another replica's transition, admission or
	// usage sample cannot interleave between the check and the write.
	b, err := c.withFresh(ctx, id, func(ctx context.Context, b *Booking) error {
		if !contains(tr.from, b.State) {
			refused = fmt.Errorf("%w: cannot %s a booking that is %s", ErrState, action, b.State)
			return nil // the expiry stands
		}
		now := c.now().UTC()
		switch tr.to {
		case StateActive:
			if action == "confirm" {
				if err := c.activate(b, p.Subject, now); err != nil {
					return err
				}
			}
			b.State = StateActive
		case StateSuspended:
			b.State, b.SuspendedAt = StateSuspended, now
		default:
			b.State, b.EndedAt, b.EndedBy, b.EndReason = tr.to, now, p.Subject, reason
		}
		return c.st.update(ctx, b)
	}, "booking:"+id)
	if err != nil {
		return nil, err
	}
	if refused != nil {
		return nil, refused
	}
	if b.State == StateRevoked || b.State == StateCancelled {
		c.status.jwt = "" // the list changed
	}
	c.metrics.bookings.WithLabelValues(string(b.State)).Inc()
	return b, nil
}

func contains(states []State, s State) bool {
	for _, x := range states {
		if x == s {
			return true
		}
	}
	return false
}

// expired tells whether b is past its end (plus grace) but not ended yet.
func (c *Catalog) expired(b *Booking) bool {
	return !b.State.Terminal() && c.now().After(b.ValidUntil.Add(c.cfg.Grace))
}

// markExpired moves b to expired when its window has passed, in the
// caller's transaction, which holds b's lock; the caller audits it
// (auditExpiry) once the transaction committed.
func (c *Catalog) markExpired(ctx context.Context, b *Booking) (bool, error) {
	if !c.expired(b) {
		return false, nil
	}
	setExpired(b, c.now())
	return true, c.st.update(ctx, b)
}

// withFresh runs fn on booking id, read fresh and marked expired when its
// window has passed (markExpired), in one transaction holding the locks of
// keys (the booking's among them), and audits that expiry once the
// transaction committed. Caller holds c.mu.
func (c *Catalog) withFresh(ctx context.Context, id string, fn func(ctx context.Context, b *Booking) error, keys ...string) (*Booking, error) {
	var (
		b          *Booking
		expiredNow bool
	)
	err := c.st.locked(ctx, func(ctx context.Context) error {
		var err error
		if b, err = c.st.get(ctx, id); err != nil {
			return err
		}
		if expiredNow, err = c.markExpired(ctx, b); err != nil {
			return err
		}
		return fn(ctx, b)
	}, keys...)
	if err != nil {
		return nil, err
	}
	if expiredNow {
		c.auditExpiry(ctx, b)
	}
	return b, nil
}

func setExpired(b *Booking, now time.Time) {
	b.State, b.EndedAt, b.EndedBy, b.EndReason = StateExpired, now.UTC(), "gxconf", "the booking's window ended"
}

func (c *Catalog) auditExpiry(ctx context.Context, b *Booking) {
	if err := c.audit.Append(ctx, credentials.AuditEntry{Decision: "catalog:expire", UserID: "gxconf", RoomID: b.ID,
		Level: b.Snapshot.Level, Reason: "window ended " + b.ValidUntil.Format(time.RFC3339)}); err != nil {
		c.log.Warn().Err(err).Str("booking", b.ID).Msg("Failed to audit an expiry")
	}
}

// refresh returns b, expired when its window has passed. The expiry is
// written under the booking's lock from a fresh read, so that it cannot
// undo another replica's transition or usage written since b was read.
func (c *Catalog) refresh(ctx context.Context, b *Booking) *Booking {
	if !c.expired(b) {
		return b
	}
	var cur *Booking
	var did bool
	err := c.st.locked(ctx, func(ctx context.Context) error {
		var err error
		if cur, err = c.st.get(ctx, b.ID); err != nil {
			return err
		}
		did, err = c.markExpired(ctx, cur)
		return err
	}, "booking:"+b.ID)
	if err != nil {
		c.log.Warn().Err(err).Str("booking", b.ID).Msg("Failed to mark a booking expired")
		setExpired(b, c.now())
		return b
	}
	if did {
		c.auditExpiry(ctx, cur)
	}
	return cur
}

// Get returns a booking (expired when its window has passed).
func (c *Catalog) Get(ctx context.Context, id string) (*Booking, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := c.st.get(ctx, id)
	if err != nil {
		return nil, err
	}
	return c.refresh(ctx, b), nil
}

// List returns org's bookings, or all for org "".
func (c *Catalog) List(ctx context.Context, org string) ([]*Booking, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	bs, err := c.st.list(ctx, org)
	if err != nil {
		return nil, err
	}
	for i, b := range bs {
		bs[i] = c.refresh(ctx, b)
	}
	return bs, nil
}

// BindRoom binds a Matrix room to a booking; rooms with the same meeting
// key (e.g. a meeting and its breakouts) count their participants together.
// An empty meeting key is the room itself.
//
// A binding made here counts only once the room accepts it (ConfirmRoom,
// the bot's "!conf bookings accept"): an organisation's admin must not
// restrict or take over rooms they do not control.
func (c *Catalog) BindRoom(ctx context.Context, p Principal, bookingID, roomID, meeting string) error {
	return c.bindRoom(ctx, p, bookingID, roomID, meeting, "")
}

func (c *Catalog) bindRoom(ctx context.Context, p Principal, bookingID, roomID, meeting, confirmedBy string) error {
	if !validRoomID(roomID) {
		return fmt.Errorf("%w: room_id: %s is not a Matrix room ID", ErrInvalid, clip.Quote(roomID))
	}
	if !validMeetingKey(meeting) {
		return fmt.Errorf("%w: meeting: %s is not at most 255 bytes of printable text", ErrInvalid, clip.Quote(meeting))
	}
	if meeting == "" {
		meeting = roomID
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var refused error
	// Under the room's lock, so that two replicas cannot both find the room
	// free and bind it to bookings of two organisations.
	_, err := c.withFresh(ctx, bookingID, func(ctx context.Context, b *Booking) error {
		if b.State.Terminal() {
			refused = fmt.Errorf("%w: the booking is %s", ErrState, b.State)
			return nil // the expiry stands
		}
		if err := c.mayBind(ctx, roomID, b.Org); err != nil {
			return err
		}
		return c.st.bind(ctx, Binding{RoomID: roomID, Booking: bookingID, Meeting: meeting, BoundAt: c.now(), BoundBy: p.Subject, ConfirmedBy: confirmedBy})
	}, "booking:"+bookingID, "room:"+roomID)
	if err != nil {
		return err
	}
	return refused
}

// validMeetingKey accepts at most 255 bytes of printable UTF-8 (spaces
// allowed; no line breaks, control or bidi formatting characters): an
// organisation's admin may bind a room they do not control, and the bot
// quotes the key in that room ("!conf bookings").
func validMeetingKey(m string) bool {
	if len(m) > 255 || !utf8.ValidString(m) {
		return false
	}
	for _, r := range m {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// ConfirmRoom records that the room accepts its binding to bookingID; by is
// the room admin's Matrix ID (the caller checked their power level). bound
// is false when the room is not bound to bookingID.
func (c *Catalog) ConfirmRoom(ctx context.Context, roomID, bookingID, by string) (bound bool, err error) {
	ok, err := c.st.confirm(ctx, roomID, bookingID, by)
	if err != nil || !ok {
		return false, err
	}
	if err := c.audit.Append(ctx, credentials.AuditEntry{Decision: "room:accept-booking", UserID: by, RoomID: roomID, Reason: bookingID}); err != nil {
		c.log.Error().Err(err).Str("room_id", roomID).Msg("Failed to audit a room's acceptance of a booking")
	}
	return true, nil
}

// mayBind refuses to take a room away from another organisation's booking
// that is still in force. The caller holds the room's lock.
func (c *Catalog) mayBind(ctx context.Context, roomID, org string) error {
	cur, ok, err := c.st.binding(ctx, roomID)
	if err != nil || !ok {
		return err
	}
	other, err := c.st.get(ctx, cur.Booking)
	if err != nil {
		return err
	}
	// Not written here: that would need the other booking's lock as well.
	ended := other.State.Terminal() || c.expired(other)
	// An unconfirmed binding is only a claim: it blocks nobody.
	if other.Org != org && !ended && cur.ConfirmedBy != "" {
		return fmt.Errorf("%w: the room %s is bound to another organisation's booking", ErrState, roomID)
	}
	return nil
}

// UnbindRoom removes a room's binding.
func (c *Catalog) UnbindRoom(ctx context.Context, roomID string) error {
	return c.st.unbind(ctx, roomID)
}

// unbindFrom removes the room's binding if it is to bookingID, checked
// and deleted in one transaction under the room's lock: a binding another
// booking made meanwhile (the room taken over from an unconfirmed claim or
// an ended booking) is not removed on this booking's behalf.
func (c *Catalog) unbindFrom(ctx context.Context, bookingID, roomID string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.locked(ctx, func(ctx context.Context) error {
		ok, err := c.st.unbindFrom(ctx, roomID, bookingID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: room_id: %s is not bound to %s", ErrNotFound, clip.Quote(roomID), bookingID)
		}
		return nil
	}, "booking:"+bookingID, "room:"+roomID)
}

// Bindings lists the rooms bound to a booking.
func (c *Catalog) Bindings(ctx context.Context, bookingID string) ([]Binding, error) {
	return c.st.bindings(ctx, bookingID)
}

// RoomBooking returns the booking a room is bound to; ok is false when none.
func (c *Catalog) RoomBooking(ctx context.Context, roomID string) (*Booking, Binding, bool, error) {
	bd, ok, err := c.st.binding(ctx, roomID)
	if err != nil || !ok {
		return nil, Binding{}, false, err
	}
	b, err := c.Get(ctx, bd.Booking)
	if err != nil {
		return nil, Binding{}, false, err
	}
	return b, bd, true, nil
}

// CheckWindow tells the meetings scheduler whether an occurrence [start,
// end) of a meeting with the given number of invitees fits the booking: it
// must lie in the booking's window, the booking must not be ended, and the
// invitees must not exceed the tier. It returns an error wrapping ErrWindow,
// ErrState, ErrInvalid or ErrNotFound with a readable reason.
func (c *Catalog) CheckWindow(ctx context.Context, bookingID string, start, end time.Time, invitees int) error {
	b, err := c.Get(ctx, bookingID)
	if err != nil {
		return err
	}
	return checkWindow(b, start, end, invitees)
}

// checkWindow is CheckWindow on a booking already read.
func checkWindow(b *Booking, start, end time.Time, invitees int) error {
	if b.State.Terminal() {
		return fmt.Errorf("%w: booking %s is %s", ErrState, b.ID, b.State)
	}
	if !end.After(start) {
		return fmt.Errorf("%w: the occurrence ends before it starts", ErrInvalid)
	}
	if start.Before(b.ValidFrom) || end.After(b.ValidUntil) {
		return fmt.Errorf("%w: the occurrence %s–%s lies outside booking %s (%s–%s)", ErrWindow,
			start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), b.ID,
			b.ValidFrom.Format(time.RFC3339), b.ValidUntil.Format(time.RFC3339))
	}
	if invitees > b.Snapshot.MaxParticipants {
		return fmt.Errorf("%w: %d participants exceed booking %s's %d", ErrInvalid, invitees, b.ID, b.Snapshot.MaxParticipants)
	}
	return nil
}

// RoomBookings summarises the room's booking for the bot ("!conf bookings").
func (c *Catalog) RoomBookings(ctx context.Context, roomID string) (string, error) {
	b, bd, ok, err := c.RoomBooking(ctx, roomID)
	if err != nil {
		return "", err
	}
	if !ok {
		if c.cfg.RequireBooking {
			return "This room is bound to no service booking, so calls cannot start here. An organisation admin can book a tier at " + c.baseURL() + "/catalog/admin/ and bind this room.", nil
		}
		return "This room is bound to no service booking; calls here are not limited by one.", nil
	}
	var sb strings.Builder
	if bd.ConfirmedBy == "" {
		fmt.Fprintf(&sb, "This room was bound to booking %s of %s by its admin; it does not count until a room admin sends \"!conf bookings accept %s\".\n", b.ID, b.OrgName, b.ID)
	}
	fmt.Fprintf(&sb, "Booking %s of %s: tier %s (%s, up to %d participants, service level %s), %s.\n",
		b.ID, b.OrgName, b.Snapshot.Tier, levelLabel(b.Snapshot.Level), b.Snapshot.MaxParticipants, b.Snapshot.ServiceLevel, b.State)
	fmt.Fprintf(&sb, "• valid %s – %s (%s)", b.ValidFrom.Format(time.RFC3339), b.ValidUntil.Format(time.RFC3339), b.TZ)
	if b.Unit == UnitSessions {
		fmt.Fprintf(&sb, ", %d of %d sessions used", b.Usage.Sessions, b.SessionsQuota)
	}
	fmt.Fprintf(&sb, "\n• up to %d concurrent session(s) on %s\n", b.MaxConcurrent, strings.Join(b.Sites, ", "))
	if bd.Meeting != roomID {
		fmt.Fprintf(&sb, "• counted with meeting %s\n", bd.Meeting)
	}
	fmt.Fprintf(&sb, "• usage: %d session(s), %.1f participant-minutes, peak %d participants, peak %d concurrent session(s)",
		b.Usage.Sessions, b.Usage.ParticipantMinutes, b.Usage.PeakParticipants, b.Usage.PeakSessions)
	return sb.String(), nil
}

// BindMeetingRoom is BindRoom for the meetings scheduler, with basic types
// only so that it can declare the interface without importing catalog: by
// is the organiser's Matrix ID, which the booking must list, meeting the
// key its breakouts share.
// The scheduler created the room, so the binding counts at once.
func (c *Catalog) BindMeetingRoom(ctx context.Context, bookingID, roomID, meeting, by string) error {
	b, err := c.Get(ctx, bookingID)
	if err != nil {
		return err
	}
	if !slices.Contains(b.Organisers, by) {
		return fmt.Errorf("%w: booking %s does not list %s as an organiser", ErrForbidden, b.ID, by)
	}
	return c.bindRoom(ctx, Principal{Subject: "meetings:" + by}, bookingID, roomID, meeting, "meetings:"+by)
}

// CheckMeeting tells the meetings scheduler whether organiser may schedule
// a meeting of level with participants (organiser included) and the given
// occurrences under bookingID: the booking lists the organiser, is not
// ended, is booked for at least the level, and every occurrence fits its
// window and tier (CheckWindow). Errors name the reason.
func (c *Catalog) CheckMeeting(ctx context.Context, bookingID, organiser string, level credentials.Level, participants int, occurrences [][2]time.Time) error {
	b, err := c.Get(ctx, bookingID)
	if err != nil {
		return err
	}
	if !slices.Contains(b.Organisers, organiser) {
		return fmt.Errorf("%w: booking %s does not list %s as an organiser", ErrForbidden, b.ID, organiser)
	}
	if level.Rank() > b.Snapshot.Level.Rank() {
		return fmt.Errorf("%w: booking %s is for level %s, the meeting is %s", ErrInvalid, b.ID, b.Snapshot.Level, level)
	}
	for _, o := range occurrences {
		if err := checkWindow(b, o[0], o[1], participants); err != nil {
			return err
		}
	}
	return nil
}

// RequiresBooking tells whether calls run only in rooms bound to a booking
// (catalog.require_booking).
func (c *Catalog) RequiresBooking() bool { return c.cfg.RequireBooking }
