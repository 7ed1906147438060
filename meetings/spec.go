package meetings

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// Spec is what an organiser asks for, from a bot command or the HTTP API.
// Nil fields are left as they are (update) or defaulted (create). Times are
// local to TimeZone (or the organiser's zone).
type Spec struct {
	Title       *string `json:"title,omitempty"`
	Description *string `json:"description,omitempty"`
	// Start is a local date-time: "2026-03-23 10:00" or "2026-03-23T10:00".
	Start *string `json:"start,omitempty"`
	// End (local date-time or time of day) or Duration ("1h30m") give the length.
	End      *string `json:"end,omitempty"`
	Duration *string `json:"duration,omitempty"`
	TimeZone *string `json:"timezone,omitempty"`
	// RRule is an RFC 5545 RRULE value; "" makes a single meeting.
	RRule *string `json:"rrule,omitempty"`
	// Repeat (daily, weekdays, weekly, biweekly, monthly, yearly, none),
	// Count and Until (a local date) build the RRULE for people who do not
	// write RFC 5545; they cannot be combined with RRule.
	Repeat *string `json:"repeat,omitempty"`
	Count  *int    `json:"count,omitempty"`
	Until  *string `json:"until,omitempty"`
	// Occurrence names one occurrence of a series (its date) that Start,
	// End or Duration move (an override, RFC 5545 RECURRENCE-ID).
	Occurrence *string `json:"occurrence,omitempty"`
	// Except are occurrences to leave out (dates, or local date-times).
	Except []string `json:"except,omitempty"`
	// Participants replaces the invitee list; Invite and Uninvite change it.
	Participants *[]string `json:"participants,omitempty"`
	Invite       []string  `json:"invite,omitempty"`
	Uninvite     []string  `json:"uninvite,omitempty"`
	// Level is the confidentiality level (public, kritis, vs-nfd).
	Level              *string   `json:"level,omitempty"`
	AllowedHomeservers *[]string `json:"allowed_homeservers,omitempty"`
	MaxParticipants    *int      `json:"max_participants,omitempty"`
	// Booking names the service booking (package catalog) the meeting runs
	// under; the booking must list the organiser. "" unbinds it.
	Booking *string `json:"booking,omitempty"`
}

// MaxBodyBytes caps an HTTP API request body (10,000 invitees still fit, so
// they are refused by the rule, not by the size).
const MaxBodyBytes = 1 << 20

// DecodeSpec strictly decodes an HTTP API body: unknown fields are refused.
func DecodeSpec(body []byte) (*Spec, error) {
	if len(body) > MaxBodyBytes {
		return nil, invalid("body", "larger than %d bytes", MaxBodyBytes)
	}
	var s Spec
	if err := strictjson.UnmarshalKnown(body, &s); err != nil {
		return nil, invalid("body", "not a meeting request: %v", err)
	}
	return &s, nil
}

func (s *Spec) empty() bool {
	return s.Title == nil && s.Description == nil && s.Start == nil && s.End == nil && s.Duration == nil &&
		s.TimeZone == nil && s.RRule == nil && s.Repeat == nil && s.Count == nil && s.Until == nil && len(s.Except) == 0 && s.Participants == nil && len(s.Invite) == 0 &&
		len(s.Uninvite) == 0 && s.Occurrence == nil && s.Level == nil && s.AllowedHomeservers == nil && s.MaxParticipants == nil && s.Booking == nil
}

// validUserID is a cheap check of a Matrix user ID's shape.
func validUserID(u string) bool {
	if len(u) < 4 || len(u) > 255 || u[0] != '@' {
		return false
	}
	i := strings.IndexByte(u, ':')
	return i > 1 && i < len(u)-1 && !strings.ContainsAny(u, " \"<>") && !strings.ContainsFunc(u, unicode.IsControl)
}

func serverOf(userID string) string {
	if i := strings.IndexByte(userID, ':'); i >= 0 {
		return userID[i+1:]
	}
	return ""
}

// apply writes the spec over m (a copy of the meeting in force, or a new
// one); tzDefault is the organiser's zone. It validates everything that needs
// no homeserver and returns the occurrences and whether an open-ended rule
// was capped.
func (s *Spec) apply(m *Meeting, tzDefault string, cfg *Config, localServer string) (occ []Occurrence, capped bool, err error) {
	lim := cfg.limits()
	creating := m.UID == ""
	if s.Title != nil {
		m.Title = strings.TrimSpace(*s.Title)
	}
	if creating && m.Title == "" {
		return nil, false, invalid("title", "a meeting needs a title")
	}
	// Control characters are not iCalendar TEXT (RFC 5545 §3.3.11): they
	// would reach every invitee's .ics and feed as they are.
	if len(m.Title) > 255 || strings.ContainsFunc(m.Title, func(r rune) bool { return unicode.IsControl(r) && r != '\t' }) {
		return nil, false, invalid("title", "must be one line of at most 255 characters, without control characters")
	}
	if s.Description != nil {
		// Line ends become \n (an iCalendar TEXT escapes only that).
		m.Description = strings.TrimSpace(strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(*s.Description))
		if len(m.Description) > 4000 {
			return nil, false, invalid("description", "longer than 4000 characters")
		}
		if strings.ContainsFunc(m.Description, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }) {
			return nil, false, invalid("description", "contains control characters")
		}
	}

	if s.Occurrence != nil {
		if occ, err = s.moveOccurrence(m, creating, lim); err != nil {
			return nil, false, err
		}
	} else if occ, capped, err = s.applySchedule(m, creating, tzDefault, lim); err != nil {
		return nil, false, err
	}

	// Participants.
	people := slices.Clone(m.Participants)
	if s.Participants != nil {
		people = slices.Clone(*s.Participants)
	}
	people = append(people, s.Invite...)
	if n := len(people); n > cfg.MaxInvitees {
		return nil, false, refused("participants", "%d invitees; a meeting may have at most %d (meetings.max_invitees)", n, cfg.MaxInvitees)
	}
	for _, u := range s.Uninvite {
		if !validUserID(u) {
			return nil, false, invalid("uninvite", "%q is not a Matrix user ID like @bob:example.org", u)
		}
		people = slices.DeleteFunc(people, func(p string) bool { return p == u })
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range people {
		p = strings.TrimSpace(p)
		if !validUserID(p) {
			return nil, false, invalid("participants", "%q is not a Matrix user ID like @bob:example.org", p)
		}
		if seen[p] || p == m.Organiser {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	slices.Sort(out)
	m.Participants = out

	// Policy: level defaults, then what the organiser gave.
	pol := m.Policy
	if pol.Level == "" {
		pol.Level = credentials.LevelPublic
	}
	if s.Level != nil {
		lvl := credentials.Level(strings.ToLower(strings.TrimSpace(*s.Level)))
		if lvl.Rank() < 0 {
			return nil, false, invalid("level", "%q is not a level (public, kritis, vs-nfd)", *s.Level)
		}
		if lvl != pol.Level || creating {
			d := cfg.Levels[lvl]
			pol = credentials.AccessPolicy{Level: lvl, RequiredCredentials: d.RequiredCredentials,
				AllowedHomeservers: slices.Clone(d.AllowedHomeservers), MaxParticipants: d.MaxParticipants}
			if lvl.Rank() >= credentials.LevelKritis.Rank() && len(pol.AllowedHomeservers) == 0 {
				pol.AllowedHomeservers = []string{localServer}
			}
		}
	}
	if s.AllowedHomeservers != nil {
		pol.AllowedHomeservers = slices.Clone(*s.AllowedHomeservers)
	}
	if s.MaxParticipants != nil {
		if *s.MaxParticipants < 0 {
			return nil, false, invalid("max_participants", "must not be negative")
		}
		pol.MaxParticipants = *s.MaxParticipants
	}
	if s.Booking != nil {
		b := strings.TrimSpace(*s.Booking)
		if len(b) > 128 || strings.ContainsFunc(b, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return nil, false, invalid("booking", "%q is not a booking id", *s.Booking)
		}
		m.BookingRef = b
	}
	if pol.Level == credentials.LevelVSNfD {
		// The need-to-know list of a VS-NfD meeting is its participants.
		pol.NeedToKnow = append([]string{m.Organiser}, m.Participants...)
	}
	if err := pol.Validate(); err != nil {
		return nil, false, refused("level", "%v", err)
	}
	if len(pol.AllowedHomeservers) > 0 {
		for _, p := range append([]string{m.Organiser}, m.Participants...) {
			if !slices.Contains(pol.AllowedHomeservers, serverOf(p)) && !slices.Contains(pol.AllowedHomeservers, "*") {
				return nil, false, refused("participants", "%s is on %s, which level %s of this meeting does not allow (allowed: %s)",
					p, serverOf(p), pol.Level, strings.Join(pol.AllowedHomeservers, ", "))
			}
		}
	}
	if pol.MaxParticipants > 0 && len(m.Participants)+1 > pol.MaxParticipants {
		return nil, false, refused("participants", "%d people (with the organiser) but the policy allows at most %d", len(m.Participants)+1, pol.MaxParticipants)
	}
	m.Policy = pol
	return occ, capped, nil
}

// String is a short form for logs (no participant lists).
func (s *Spec) String() string {
	return fmt.Sprintf("spec(title=%v start=%v rrule=%v)", s.Title != nil, s.Start != nil, s.RRule != nil)
}

// rule builds the RRULE from Repeat, Count and Until (or takes RRule); nil
// leaves the rule in force (current) as it is.
func (s *Spec) rule(current string, start time.Time) (*string, error) {
	if s.RRule != nil {
		if s.Repeat != nil || s.Count != nil || s.Until != nil {
			return nil, invalid("rrule", "give either rrule or repeat/count/until, not both")
		}
		return s.RRule, nil
	}
	if s.Repeat == nil && s.Count == nil && s.Until == nil {
		return nil, nil
	}
	if s.Count != nil && s.Until != nil {
		return nil, invalid("until", "give either count or until, not both")
	}
	var parts []string
	if s.Repeat != nil {
		switch r := strings.ToLower(strings.TrimSpace(*s.Repeat)); r {
		case "none", "never", "once", "":
			if s.Count != nil || s.Until != nil {
				return nil, invalid("repeat", "a meeting that does not repeat has no count or until")
			}
			empty := ""
			return &empty, nil
		case "daily":
			parts = []string{"FREQ=DAILY"}
		case "weekdays":
			parts = []string{"FREQ=WEEKLY", "BYDAY=MO,TU,WE,TH,FR"}
		case "weekly":
			parts = []string{"FREQ=WEEKLY"}
		case "biweekly", "fortnightly":
			parts = []string{"FREQ=WEEKLY", "INTERVAL=2"}
		case "monthly":
			parts = []string{"FREQ=MONTHLY"}
		case "yearly":
			parts = []string{"FREQ=YEARLY"}
		default:
			return nil, invalid("repeat", "%q is not one of daily, weekdays, weekly, biweekly, monthly, yearly, none", *s.Repeat)
		}
	} else {
		if current == "" {
			return nil, invalid("repeat", "say how the meeting repeats (repeat=weekly) before giving count or until")
		}
		// Keep the rule, replace its end.
		for _, p := range strings.Split(current, ";") {
			if !strings.HasPrefix(p, "COUNT=") && !strings.HasPrefix(p, "UNTIL=") {
				parts = append(parts, p)
			}
		}
	}
	switch {
	case s.Count != nil:
		if *s.Count < 1 {
			return nil, invalid("count", "must be at least 1, got %d", *s.Count)
		}
		parts = append(parts, fmt.Sprintf("COUNT=%d", *s.Count))
	case s.Until != nil:
		d, err := time.ParseInLocation("2006-01-02", strings.TrimSpace(*s.Until), start.Location())
		if err != nil {
			return nil, invalid("until", "%q is not a date: %s", *s.Until, dateProblem(strings.TrimSpace(*s.Until)))
		}
		// The whole last day counts.
		end := time.Date(d.Year(), d.Month(), d.Day(), 23, 59, 59, 0, start.Location())
		if end.Before(start) {
			return nil, invalid("until", "%s is before the start", *s.Until)
		}
		parts = append(parts, "UNTIL="+end.UTC().Format("20060102T150405Z"))
	}
	r := strings.Join(parts, ";")
	return &r, nil
}

// applySchedule writes the spec's schedule fields over m's schedule.
func (s *Spec) applySchedule(m *Meeting, creating bool, tzDefault string, lim Limits) (occ []Occurrence, capped bool, err error) {
	// Schedule. The zone: given, or the meeting's, or the organiser's.
	sch := m.Schedule
	sch.ExDates = slices.Clone(sch.ExDates)
	tz := sch.TimeZone
	if tz == "" {
		tz = tzDefault
	}
	if s.TimeZone != nil {
		tz = strings.TrimSpace(*s.TimeZone)
	}
	loc, err := loadZone(tz)
	if err != nil {
		return nil, false, err
	}
	var start time.Time
	switch {
	case s.Start != nil:
		if start, err = parseLocal("start", *s.Start, loc); err != nil {
			return nil, false, err
		}
	case creating:
		return nil, false, invalid("start", "a meeting needs a start, like start=\"2026-03-23 10:00\"")
	default:
		// Same wall-clock start in the (maybe new) zone.
		old, err := sch.StartTime()
		if err != nil {
			return nil, false, err
		}
		if start, err = parseLocal("start", old.Format("2006-01-02T15:04:05"), loc); err != nil {
			return nil, false, err
		}
	}
	if tz != sch.TimeZone && sch.TimeZone != "" {
		// They named wall-clock times of the old zone.
		sch.ExDates, sch.Overrides = nil, nil
	}
	dur := sch.Duration
	switch {
	case s.Duration != nil && s.End != nil:
		return nil, false, invalid("end", "give either end or duration, not both")
	case s.Duration != nil:
		if dur, err = time.ParseDuration(strings.TrimSpace(*s.Duration)); err != nil {
			return nil, false, invalid("duration", "%q is not a duration like 1h or 90m", *s.Duration)
		}
	case s.End != nil:
		e := strings.TrimSpace(*s.End)
		var end time.Time
		if len(e) <= 5 { // a time of day on the start's date
			e = start.Format("2006-01-02") + " " + e
		}
		if end, err = parseLocal("end", e, loc); err != nil {
			return nil, false, err
		}
		if !end.After(start) {
			return nil, false, invalid("end", "%s is not after the start %s", end.Format("2006-01-02 15:04"), start.Format("2006-01-02 15:04"))
		}
		dur = end.Sub(start)
	case creating:
		dur = time.Hour
	}
	if dur <= 0 {
		return nil, false, invalid("duration", "must be positive")
	}
	if sch.Start != "" && len(sch.ExDates) > 0 {
		// Moving the series moves its exceptions by the same wall-clock shift.
		oldF, _ := time.Parse(localLayout, sch.Start)
		newF, _ := time.Parse(localLayout, start.Format(localLayout))
		if d := newF.Sub(oldF); d != 0 {
			for i, e := range sch.ExDates {
				if f, err := time.Parse(localLayout, e); err == nil {
					sch.ExDates[i] = f.Add(d).Format(localLayout)
				}
			}
			for i, ov := range sch.Overrides {
				if f, err := time.Parse(localLayout, ov.RecurrenceID); err == nil {
					sch.Overrides[i].RecurrenceID = f.Add(d).Format(localLayout)
				}
			}
		}
	}
	sch.TimeZone, sch.Start, sch.Duration = tz, start.Format(localLayout), dur
	rule, err := s.rule(sch.RRule, start)
	if err != nil {
		return nil, false, err
	}
	if rule != nil {
		if sch.RRule, capped, err = normalizeRRule(*rule, start, lim); err != nil {
			return nil, false, err
		}
		if sch.RRule == "" {
			sch.ExDates = nil
		}
		// Moved occurrences belonged to the old rule.
		sch.Overrides = nil
	}
	for _, ex := range s.Except {
		if sch.RRule == "" {
			return nil, false, invalid("except", "only a repeating meeting has occurrences to leave out")
		}
		v, err := sch.resolveExDate("except", ex, lim)
		if err != nil {
			return nil, false, err
		}
		if !slices.Contains(sch.ExDates, v) {
			sch.ExDates = append(sch.ExDates, v)
		}
	}
	slices.Sort(sch.ExDates)
	if occ, err = sch.Validate(lim); err != nil {
		return nil, false, err
	}
	m.Schedule = sch
	return occ, capped, nil
}

// moveOccurrence moves one occurrence of m's series (start, end or duration).
func (s *Spec) moveOccurrence(m *Meeting, creating bool, lim Limits) ([]Occurrence, error) {
	sch := m.Schedule
	if creating || sch.RRule == "" {
		return nil, invalid("occurrence", "only a repeating meeting has occurrences to move")
	}
	if s.TimeZone != nil || s.RRule != nil || s.Repeat != nil || s.Count != nil || s.Until != nil || len(s.Except) > 0 {
		return nil, invalid("occurrence", "with occurrence= give only the new start, end or duration of that occurrence")
	}
	if s.Start == nil && s.End == nil && s.Duration == nil {
		return nil, invalid("occurrence", "say where it moves: start=, end= or duration=")
	}
	loc, err := sch.location()
	if err != nil {
		return nil, err
	}
	rid, err := sch.resolveExDate("occurrence", *s.Occurrence, lim)
	if err != nil {
		return nil, err
	}
	if slices.Contains(sch.ExDates, rid) {
		return nil, invalid("occurrence", "%s is cancelled", *s.Occurrence)
	}
	start, _ := time.ParseInLocation(localLayout, rid, loc)
	dur := sch.Duration
	idx := slices.IndexFunc(sch.Overrides, func(o Override) bool { return o.RecurrenceID == rid })
	if idx >= 0 {
		start, _ = time.ParseInLocation(localLayout, sch.Overrides[idx].Start, loc)
		dur = sch.Overrides[idx].Duration
	}
	if s.Start != nil {
		if start, err = parseLocal("start", *s.Start, loc); err != nil {
			return nil, err
		}
	}
	switch {
	case s.Duration != nil && s.End != nil:
		return nil, invalid("end", "give either end or duration, not both")
	case s.Duration != nil:
		if dur, err = time.ParseDuration(strings.TrimSpace(*s.Duration)); err != nil {
			return nil, invalid("duration", "%q is not a duration like 1h or 90m", *s.Duration)
		}
	case s.End != nil:
		e := strings.TrimSpace(*s.End)
		if len(e) <= 5 {
			e = start.Format("2006-01-02") + " " + e
		}
		end, err := parseLocal("end", e, loc)
		if err != nil {
			return nil, err
		}
		if !end.After(start) {
			return nil, invalid("end", "%s is not after the start %s", end.Format("2006-01-02 15:04"), start.Format("2006-01-02 15:04"))
		}
		dur = end.Sub(start)
	}
	sch.Overrides = slices.Clone(sch.Overrides)
	if idx >= 0 {
		sch.Overrides = slices.Delete(sch.Overrides, idx, idx+1)
	}
	if start.Format(localLayout) != rid || dur != sch.Duration {
		sch.Overrides = append(sch.Overrides, Override{RecurrenceID: rid, Start: start.Format(localLayout), Duration: dur})
		slices.SortFunc(sch.Overrides, func(a, b Override) int { return strings.Compare(a.RecurrenceID, b.RecurrenceID) })
	}
	occ, err := sch.Validate(lim)
	if err != nil {
		return nil, err
	}
	m.Schedule = sch
	return occ, nil
}
