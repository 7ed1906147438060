package meetings

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/gxfs-conf/gxconf/credentials"
)

// Options are the dependencies of a Service.
type Options struct {
	Config Config
	DB     *dbutil.Database
	Matrix Matrix
	// BotID is the bot's user ID; LocalServer the homeserver's server_name.
	BotID       string
	LocalServer string
	// PublicURL is the base of the feed and API URLs when Config.PublicURL
	// is empty (the focus's public URL).
	PublicURL string
	// Policies checks a new room's access policy (nil: the rules that need
	// no deployment knowledge).
	Policies PolicyValidator
	// Bookings is the booking hook (nil: no bookings).
	Bookings BookingChecker
	// Auth checks HTTP API callers (nil: the API answers 401).
	Auth       Authenticator
	Clock      Clock
	Log        zerolog.Logger
	Registerer prometheus.Registerer
}

// Service schedules meetings.
type Service struct {
	cfg       Config
	store     *store
	mx        Matrix
	botID     string
	server    string
	publicURL string
	policies  PolicyValidator
	bookings  BookingChecker
	auth      Authenticator
	clock     Clock
	log       zerolog.Logger
	metrics   *metrics

	// mu serialises changes to meetings.
	mu sync.Mutex
	// meetings orders each meeting's changes and reminders (lock.go).
	meetings meetingLocks
	// creates limits each organiser's creates (ratelimit.go).
	creates createBuckets
	// wake tells the reminder loop that meetings changed.
	wake chan struct{}
	// feedLimits bound a feed (tests lower them).
	feedLimits feedLimits
	// unreadable are the IDs of stored meetings left out of feeds and
	// lists, each logged once (noteUnreadable).
	unreadableMu sync.Mutex
	unreadable   map[string]bool
}

// New builds the service and upgrades its tables.
func New(ctx context.Context, opts Options) (*Service, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.DB == nil || opts.Matrix == nil || opts.BotID == "" || opts.LocalServer == "" {
		return nil, errors.New("meetings: DB, Matrix, BotID and LocalServer are required")
	}
	st, err := newStore(ctx, opts.DB)
	if err != nil {
		return nil, err
	}
	clock := opts.Clock
	if clock == nil {
		clock = realClock{}
	}
	pub := strings.TrimRight(opts.Config.PublicURL, "/")
	if pub == "" {
		pub = strings.TrimRight(opts.PublicURL, "/")
	}
	s := &Service{
		cfg: opts.Config, store: st, mx: opts.Matrix, botID: opts.BotID, server: opts.LocalServer,
		publicURL: pub, policies: opts.Policies, bookings: opts.Bookings, auth: opts.Auth, clock: clock,
		log:        opts.Log.With().Str("component", "meetings").Logger(),
		metrics:    newMetrics(opts.Registerer),
		wake:       make(chan struct{}, 1),
		feedLimits: defaultFeedLimits,
		unreadable: map[string]bool{},
		creates:    createBuckets{rate: opts.Config.CreateRate},
	}
	st.unreadable = s.noteUnreadable
	return s, nil
}

// maxNotedUnreadable bounds the IDs noteUnreadable remembers.
const maxNotedUnreadable = 10000

// noteUnreadable logs, once per meeting, that a stored meeting cannot be
// read or rendered and is left out of the feeds and lists; the rest of
// them is served.
func (s *Service) noteUnreadable(id string, err error) {
	s.unreadableMu.Lock()
	seen := s.unreadable[id]
	if !seen && len(s.unreadable) < maxNotedUnreadable {
		s.unreadable[id] = true
	}
	s.unreadableMu.Unlock()
	if seen {
		return
	}
	s.metrics.unreadable.Inc()
	s.log.Error().Err(err).Str("meeting_id", id).Msg("Stored meeting cannot be read; left out of feeds and lists")
}

// Result is the answer to a create or update.
type Result struct {
	Meeting *Meeting
	// Occurrences are the first few occurrences (for the confirmation).
	Occurrences []Occurrence
	// Capped says an open-ended rule was given an UNTIL.
	Capped bool
	// Changed says SEQUENCE rose (a real change); Unchanged that nothing did.
	Changed, Unchanged bool
	// Warnings are invites or files that could not be delivered.
	Warnings []string
}

// CallLink is the meeting's call link.
func (s *Service) CallLink(m *Meeting) string {
	return strings.NewReplacer("{room_id}", m.RoomID, "{server}", s.server).Replace(s.cfg.CallLink)
}

// userZone is the organiser's time zone.
func (s *Service) userZone(ctx context.Context, userID string) string {
	if tz, _, err := s.store.user(ctx, userID); err == nil && tz != "" {
		return tz
	}
	return s.cfg.DefaultTimezone
}

// Create schedules a new meeting for organiser: it checks everything first,
// then creates the room with its state, invites, and sends the calendar
// files. A failure while creating the room rolls the room back (the bot
// leaves it) and stores nothing.
func (s *Service) Create(ctx context.Context, organiser string, spec *Spec) (*Result, error) {
	if !validUserID(organiser) {
		return nil, invalid("organiser", "%q is not a Matrix user ID", organiser)
	}
	if organiser == s.botID {
		return nil, fmt.Errorf("%w: the bot does not organise meetings", ErrForbidden)
	}
	if !s.mayOrganise(organiser) {
		return nil, fmt.Errorf("%w: only users of %s may schedule meetings here", ErrForbidden, strings.Join(s.organiserServers(), ", "))
	}
	// The request is checked before the lock: expanding a rule takes a
	// while, ~100 ms for one that never matches (the recurrence library
	// looks for an occurrence up to the year 9999), and must not stall
	// everyone else's changes.
	m := &Meeting{Organiser: organiser}
	occ, capped, err := spec.apply(m, s.userZone(ctx, organiser), &s.cfg, s.server)
	if err != nil {
		return nil, err
	}
	// A refused or failed create gives its token back: only meetings
	// made count.
	if ok, wait := s.creates.take(organiser, s.clock.Now()); !ok {
		r := s.cfg.CreateRate
		return nil, rateLimited("organiser", "an organiser may create %d meetings at once and then one every %s (meetings.create_rate); try again in %s",
			r.Burst, r.Every, wait.Round(time.Second))
	}
	made := false
	defer func() {
		if !made {
			s.creates.give(organiser)
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	n, err := s.store.countActive(ctx, organiser, now)
	if err != nil {
		return nil, err
	}
	if n >= s.cfg.MaxMeetingsPerOrganiser {
		return nil, refused("organiser", "you have %d active meetings and an organiser may have at most %d (meetings.max_meetings_per_organiser); cancel one first", n, s.cfg.MaxMeetingsPerOrganiser)
	}
	if err := s.checkPolicy(ctx, nil, m, occ); err != nil {
		return nil, err
	}
	m.ID = newID()
	m.UID = m.ID + "@" + s.server + ".gxconf"
	m.CreatedAt, m.UpdatedAt = now, now
	roomID, err := s.mx.CreateRoom(ctx, s.roomRequest(m))
	if err != nil {
		s.metrics.ops.WithLabelValues("create", "error").Inc()
		return nil, fmt.Errorf("failed to create the meeting room: %w", err)
	}
	m.RoomID = roomID
	if s.bookings != nil && m.BookingRef != "" {
		if err := s.bookings.BindRoom(ctx, m.BookingRef, roomID, m.ID, organiser); err != nil {
			s.rollback(ctx, m)
			return nil, refused("booking", "%v", err)
		}
	}
	if err := s.store.put(ctx, m); err != nil {
		s.rollback(ctx, m)
		return nil, err
	}
	made = true
	res := &Result{Meeting: m, Occurrences: first(occ, 5), Capped: capped, Changed: true}
	// The organiser is invited too (as Nordeck's bot does): the room is
	// invite-only, and they need it for the call, "!conf bookings" and
	// updates in place.
	if err := s.mx.Invite(ctx, roomID, organiser, s.organiserReason(m)); err != nil {
		res.Warnings = append(res.Warnings, s.warning(err, "could not invite you (%s)", organiser))
	}
	for _, p := range m.Participants {
		if err := s.mx.Invite(ctx, roomID, p, s.inviteReason(m)); err != nil {
			res.Warnings = append(res.Warnings, s.warning(err, "could not invite %s", p))
		}
	}
	res.Warnings = append(res.Warnings, s.sendFiles(ctx, m, m.Participants, MethodRequest, time.Time{})...)
	s.metrics.ops.WithLabelValues("create", "ok").Inc()
	s.log.Info().Str("room_id", roomID).Str("meeting_id", m.ID).Str("user_id", organiser).Int("participants", len(m.Participants)).Msg("Meeting created")
	s.poke()
	return res, nil
}

func (s *Service) organiserServers() []string {
	if len(s.cfg.OrganiserHomeservers) == 0 {
		return []string{s.server}
	}
	return s.cfg.OrganiserHomeservers
}

// mayOrganise: users of other homeservers could otherwise make the bot
// invite and message people in its name.
func (s *Service) mayOrganise(user string) bool {
	for _, srv := range s.organiserServers() {
		if srv == "*" || srv == serverOf(user) {
			return true
		}
	}
	return false
}

// rollback undoes a half-created room: the bot leaves it, so nobody is left
// in it (the invites were not sent yet).
func (s *Service) rollback(ctx context.Context, m *Meeting) {
	if err := s.mx.Leave(ctx, m.RoomID); err != nil {
		s.log.Warn().Err(err).Str("room_id", m.RoomID).Msg("Failed to leave a half-created meeting room")
	}
}

// checkPolicy runs the deployment's policy rules and the booking hook.
func (s *Service) checkPolicy(ctx context.Context, old, m *Meeting, occ []Occurrence) error {
	var oldPol *credentials.AccessPolicy
	if old != nil {
		oldPol = &old.Policy
	}
	if s.policies != nil {
		// The bot holds the room's top power level.
		if err := s.policies.ValidatePolicyChange(oldPol, &m.Policy, 100, 100); err != nil {
			return refused("level", "%v", err)
		}
	}
	if s.bookings != nil {
		ref, err := s.bookings.CheckMeeting(ctx, BookingRequest{Organiser: m.Organiser, Level: m.Policy.Level,
			Participants: len(m.Participants) + 1, Occurrences: occ, BookingRef: m.BookingRef})
		if err != nil {
			return refused("booking", "%v", err)
		}
		m.BookingRef = ref
	}
	return nil
}

// lookup finds a meeting and checks that user organises it.
func (s *Service) lookup(ctx context.Context, user, idOrRoom string, mustOrganise bool) (*Meeting, error) {
	m, err := s.store.get(ctx, strings.TrimSpace(idOrRoom))
	if err != nil {
		return nil, err
	}
	if m.Organiser != user && !slices.Contains(m.Participants, user) {
		// Outsiders learn nothing, not even that it exists or who
		// organises it: the same answer as for a meeting that does not.
		return nil, ErrNotFound
	}
	if mustOrganise && m.Organiser != user {
		return nil, fmt.Errorf("%w: only the organiser %s may change meeting %s", ErrForbidden, m.Organiser, m.ID)
	}
	return m, nil
}

// Get returns a meeting its organiser or a participant asks for.
func (s *Service) Get(ctx context.Context, user, idOrRoom string) (*Meeting, error) {
	return s.lookup(ctx, user, idOrRoom, false)
}

// List returns the meetings user organises or is invited to and that are
// not cancelled, at most meetings.max_feed_meetings of them, running and
// next ones first, then the recently ended (see Config.Retention).
func (s *Service) List(ctx context.Context, user string) ([]*Meeting, error) {
	ms, err := s.store.ofUser(ctx, user, s.listing(false))
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(ms, func(m *Meeting) bool {
		if _, _, _, err := meetingSpan(m); err != nil {
			s.noteUnreadable(m.ID, err)
			return true
		}
		return false
	}), nil
}

// listing is what feeds (withCancelled) and lists show now.
func (s *Service) listing(withCancelled bool) listing {
	now := s.clock.Now()
	return listing{now: now, endedAfter: now.Add(-s.cfg.Retention.Ended), cancelledAfter: now.Add(-s.cfg.Retention.Cancelled),
		withCancelled: withCancelled, limit: s.cfg.MaxFeedMeetings}
}

// purge deletes the meetings past their retention (data minimisation).
func (s *Service) purge(ctx context.Context) error {
	now := s.clock.Now()
	ended, cancelled, err := s.store.purge(ctx, now.Add(-s.cfg.Retention.Ended), now.Add(-s.cfg.Retention.Cancelled))
	if err != nil {
		return err
	}
	s.metrics.purged.WithLabelValues("ended").Add(float64(ended))
	s.metrics.purged.WithLabelValues("cancelled").Add(float64(cancelled))
	if ended+cancelled > 0 {
		s.log.Info().Int64("ended", ended).Int64("cancelled", cancelled).
			Msg("Deleted meetings past their retention (meetings.retention)")
	}
	return nil
}

// Update changes a meeting; only its organiser may.
func (s *Service) Update(ctx context.Context, user, idOrRoom string, spec *Spec) (*Result, error) {
	if spec.empty() {
		return nil, invalid("update", "say what to change, e.g. start=\"2026-03-24 11:00\" or title=…")
	}
	// A first check before the lock, as in Create: a rule that never
	// matches is refused without stalling everyone else. What passes is
	// checked again under the lock, on the meeting as it is then (a valid
	// rule expands quickly: it reaches its COUNT or UNTIL).
	pre, err := s.lookup(ctx, user, idOrRoom, true)
	if err != nil {
		return nil, err
	}
	if _, _, _, err := s.applyUpdate(ctx, user, pre, spec); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.lookup(ctx, user, idOrRoom, true)
	if err != nil {
		return nil, err
	}
	unlock := s.meetings.lock(old.ID)
	defer unlock()
	m, occ, capped, err := s.applyUpdate(ctx, user, old, spec)
	if err != nil {
		return nil, err
	}
	if m.BookingRef != old.BookingRef && spec.Booking != nil {
		// The room's binding is the catalogue's record; moving it to
		// another booking is a new meeting.
		return nil, invalid("booking", "a meeting's booking is set when it is created (cancel it and create it again under the other booking)")
	}
	if err := s.checkPolicy(ctx, old, &m, occ); err != nil {
		return nil, err
	}
	res := &Result{Meeting: &m, Occurrences: first(occ, 5), Capped: capped}
	real := m.calendarFingerprint() != old.calendarFingerprint()
	added, removed := diff(old.Participants, m.Participants)
	policyChanged := !samePolicy(&old.Policy, &m.Policy)
	if !real && len(added) == 0 && len(removed) == 0 && !policyChanged {
		res.Unchanged = true
		return res, nil
	}
	if real {
		m.Sequence++
		res.Changed = true
	}
	m.UpdatedAt = s.clock.Now()
	// Room state first: if the homeserver refuses, nothing is stored.
	if policyChanged {
		if err := s.mx.SendState(ctx, m.RoomID, credentials.AccessEventType, "", m.Policy); err != nil {
			return nil, fmt.Errorf("failed to update the room's access policy: %w", err)
		}
	}
	if real {
		if err := s.mx.SendState(ctx, m.RoomID, MetadataEventType, "", s.metadata(&m)); err != nil {
			return nil, fmt.Errorf("failed to update the meeting's schedule in the room: %w", err)
		}
		if old.Title != m.Title {
			_ = s.mx.SendState(ctx, m.RoomID, "m.room.name", "", map[string]any{"name": m.Title})
		}
		_ = s.mx.SendState(ctx, m.RoomID, "m.room.topic", "", map[string]any{"topic": s.topic(&m)})
	}
	if err := s.store.put(ctx, &m); err != nil {
		return nil, err
	}
	unlock()
	for _, p := range added {
		if err := s.mx.Invite(ctx, m.RoomID, p, s.inviteReason(&m)); err != nil {
			res.Warnings = append(res.Warnings, s.warning(err, "could not invite %s", p))
		}
	}
	for _, p := range removed {
		if err := s.mx.Kick(ctx, m.RoomID, p, "removed from the meeting by "+user); err != nil {
			res.Warnings = append(res.Warnings, s.warning(err, "could not remove %s", p))
		}
	}
	res.Warnings = append(res.Warnings, s.refreshInvites(ctx, old, &m, added)...)
	// Files: everyone gets the new version after a real change, new
	// invitees always, removed ones a CANCEL.
	to := added
	if real {
		to = m.Participants
	}
	res.Warnings = append(res.Warnings, s.sendFiles(ctx, &m, to, MethodRequest, time.Time{})...)
	res.Warnings = append(res.Warnings, s.sendFiles(ctx, &m, removed, MethodCancel, time.Time{})...)
	if real {
		_ = s.mx.SendMessage(ctx, m.RoomID, noticeContent("The meeting changed: "+m.Title+" — "+m.Schedule.Describe(nil), ""))
	}
	s.metrics.ops.WithLabelValues("update", "ok").Inc()
	s.log.Info().Str("room_id", m.RoomID).Str("meeting_id", m.ID).Int("sequence", m.Sequence).Msg("Meeting updated")
	s.poke()
	return res, nil
}

// applyUpdate is a copy of old with spec applied.
func (s *Service) applyUpdate(ctx context.Context, user string, old *Meeting, spec *Spec) (m Meeting, occ []Occurrence, capped bool, err error) {
	if old.Cancelled {
		return m, nil, false, invalid("meeting", "%s is cancelled", old.ID)
	}
	m = *old
	// The stored span is old's: the files of the update take the new
	// schedule's own (their VTIMEZONE covers its years).
	m.first, m.last = time.Time{}, time.Time{}
	m.Participants = slices.Clone(old.Participants)
	m.Schedule.ExDates = slices.Clone(old.Schedule.ExDates)
	occ, capped, err = spec.apply(&m, s.userZone(ctx, user), &s.cfg, s.server)
	return m, occ, capped, err
}

// Cancel cancels one occurrence (a date, or a local date-time) or, when
// occurrence is empty, the whole meeting; only its organiser may.
func (s *Service) Cancel(ctx context.Context, user, idOrRoom, occurrence string) (*Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.lookup(ctx, user, idOrRoom, true)
	if err != nil {
		return nil, err
	}
	unlock := s.meetings.lock(old.ID)
	defer unlock()
	if old.Cancelled {
		return nil, invalid("meeting", "%s is already cancelled", old.ID)
	}
	m := *old
	m.Schedule.ExDates = slices.Clone(old.Schedule.ExDates)
	m.Sequence++
	m.UpdatedAt = s.clock.Now()
	res := &Result{Meeting: &m, Changed: true}
	var which time.Time
	if strings.TrimSpace(occurrence) != "" {
		if m.Schedule.RRule == "" {
			return nil, invalid("occurrence", "%s is a single meeting; cancel it without a date", m.ID)
		}
		ex, err := m.Schedule.resolveExDate("occurrence", occurrence, s.cfg.limits())
		if err != nil {
			return nil, err
		}
		if slices.Contains(m.Schedule.ExDates, ex) {
			return nil, invalid("occurrence", "%s is already cancelled", occurrence)
		}
		m.Schedule.ExDates = append(m.Schedule.ExDates, ex)
		slices.Sort(m.Schedule.ExDates)
		m.Schedule.Overrides = slices.DeleteFunc(slices.Clone(m.Schedule.Overrides), func(o Override) bool { return o.RecurrenceID == ex })
		occ, err := m.Schedule.Occurrences(s.cfg.MaxOccurrences)
		if err != nil {
			return nil, err
		}
		if len(occ) == 0 {
			return nil, invalid("occurrence", "that is the last occurrence; cancel the whole meeting instead")
		}
		loc, _ := m.Schedule.location()
		which, _ = time.ParseInLocation(localLayout, ex, loc)
		if err := s.mx.SendState(ctx, m.RoomID, MetadataEventType, "", s.metadata(&m)); err != nil {
			return nil, fmt.Errorf("failed to update the meeting's schedule in the room: %w", err)
		}
		_ = s.mx.SendMessage(ctx, m.RoomID, noticeContent(fmt.Sprintf("The meeting on %s is cancelled.", which.Format("Mon 2 Jan 2006, 15:04")), ""))
	} else {
		m.Cancelled = true
		md := s.metadata(&m)
		if err := s.mx.SendState(ctx, m.RoomID, MetadataEventType, "", md); err != nil {
			return nil, fmt.Errorf("failed to mark the meeting cancelled in the room: %w", err)
		}
		_ = s.mx.SendState(ctx, m.RoomID, "m.room.topic", "", map[string]any{"topic": "Cancelled: " + s.topic(&m)})
		_ = s.mx.SendMessage(ctx, m.RoomID, noticeContent("This meeting is cancelled by "+user+".", ""))
	}
	if err := s.store.put(ctx, &m); err != nil {
		return nil, err
	}
	unlock()
	res.Warnings = s.refreshInvites(ctx, old, &m, nil)
	res.Warnings = append(res.Warnings, s.sendFiles(ctx, &m, m.Participants, MethodCancel, which)...)
	s.metrics.ops.WithLabelValues("cancel", "ok").Inc()
	s.log.Info().Str("room_id", m.RoomID).Str("meeting_id", m.ID).Bool("series", which.IsZero()).Msg("Meeting cancelled")
	s.poke()
	return res, nil
}

// refreshInvites rewrites the invite reason of everyone still invited (not
// joined, not declined) when the reason changed, as Nordeck's bot does: an
// invite cannot be edited, but a new invite event for an invited user
// replaces it, and Element shows its reason. Those in skip were just
// invited with the new reason. People who declined or left are not invited
// again. It returns what could not be updated.
func (s *Service) refreshInvites(ctx context.Context, old, m *Meeting, skip []string) []string {
	if s.inviteReason(old) == s.inviteReason(m) {
		return nil
	}
	members, err := s.mx.Memberships(ctx, m.RoomID)
	if err != nil {
		return []string{s.warning(err, "could not update the pending invitations")}
	}
	var failed []string
	for _, p := range append([]string{m.Organiser}, m.Participants...) {
		if members[p] != "invite" || slices.Contains(skip, p) {
			continue
		}
		reason := s.inviteReason(m)
		if p == m.Organiser {
			reason = s.organiserReason(m)
		}
		if err := s.mx.RefreshInvite(ctx, m.RoomID, p, reason); err != nil {
			failed = append(failed, s.warning(err, "could not update the invitation of %s", p))
			s.metrics.ops.WithLabelValues("refresh_invite", "error").Inc()
			continue
		}
		s.metrics.ops.WithLabelValues("refresh_invite", "ok").Inc()
	}
	return failed
}

// mayKeepSettings refuses per-user settings (time zone, feed) to users who
// may not organise: each makes a meet_user row, and the feed a direct chat,
// which anyone the bot shares a room with — on any homeserver — could
// otherwise have it make in bulk.
func (s *Service) mayKeepSettings(user string) error {
	if !s.mayOrganise(user) {
		return fmt.Errorf("%w: only users of %s may set a time zone or get a calendar feed here", ErrForbidden, strings.Join(s.organiserServers(), ", "))
	}
	return nil
}

// SetTimezone sets the zone a user's meetings and confirmations use.
func (s *Service) SetTimezone(ctx context.Context, user, tz string) error {
	if err := s.mayKeepSettings(user); err != nil {
		return err
	}
	if _, err := loadZone(tz); err != nil {
		return err
	}
	return s.store.setTimezone(ctx, user, tz)
}

// HasFeed tells whether the user has a feed address. It cannot be shown
// again: only its token's hash is stored.
func (s *Service) HasFeed(ctx context.Context, user string) (bool, error) {
	if err := s.mayKeepSettings(user); err != nil {
		return false, err
	}
	_, hash, err := s.store.user(ctx, user)
	return hash != "", err
}

// FeedURL makes a new token for the user's private webcal URL; a previous
// URL stops working. Only the token's hash is stored, so the URL is shown
// when it is made.
func (s *Service) FeedURL(ctx context.Context, user string) (string, error) {
	if err := s.mayKeepSettings(user); err != nil {
		return "", err
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	token := strings.ToLower(strings.TrimRight(base32.StdEncoding.EncodeToString(buf), "="))
	if err := s.store.setFeedHash(ctx, user, hashToken(token)); err != nil {
		return "", fmt.Errorf("failed to store feed token: %w", err)
	}
	return s.publicURL + FeedPath + token + ".ics", nil
}

// Feed renders the calendar of the user whose feed token this is; "" when
// the token is unknown.
func (s *Service) Feed(ctx context.Context, token string) ([]byte, bool, error) {
	if len(token) < 20 || len(token) > 128 {
		return nil, false, nil
	}
	user, err := s.store.feedUser(ctx, hashToken(token))
	if err != nil || user == "" {
		return nil, false, err
	}
	ms, err := s.store.ofUser(ctx, user, s.listing(true))
	if err != nil {
		return nil, false, err
	}
	f, err := renderFeed(user, ms, s.CallLink, s.clock.Now(), s.feedLimits)
	if err != nil {
		return nil, false, err
	}
	for _, id := range sortedKeys(f.unreadable) {
		s.noteUnreadable(id, f.unreadable[id])
	}
	if f.cut > 0 {
		s.metrics.feedsCut.Inc()
		s.log.Warn().Str("user_id", user).Int("listed", f.listed).Int("left_out", f.cut).Int("limit_bytes", s.feedLimits.bytes).
			Msg("Feed cut to its size limit")
	}
	return f.body, true, nil
}

func hashToken(t string) string {
	h := sha256.Sum256([]byte(t))
	return hex.EncodeToString(h[:])
}

func newID() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return strings.ToLower(base32.StdEncoding.EncodeToString(b))
}

func first(occ []Occurrence, n int) []Occurrence {
	if len(occ) > n {
		return occ[:n]
	}
	return occ
}

// diff returns what next has that prev lacks, and the reverse.
func diff(prev, next []string) (added, removed []string) {
	for _, p := range next {
		if !slices.Contains(prev, p) {
			added = append(added, p)
		}
	}
	for _, p := range prev {
		if !slices.Contains(next, p) {
			removed = append(removed, p)
		}
	}
	return added, removed
}

func samePolicy(a, b *credentials.AccessPolicy) bool {
	return fmt.Sprintf("%+v", *a) == fmt.Sprintf("%+v", *b)
}

// poke wakes the reminder loop.
func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
