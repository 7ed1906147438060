package meetings

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/teambition/rrule-go"
)

// localLayout is a floating local date-time as RFC 5545 writes it (§3.3.5,
// form 3: with a TZID) and net.nordeck.meetings.metadata stores it.
const localLayout = "20060102T150405"

// Schedule is when a meeting takes place: a first occurrence in a named time
// zone (local wall-clock times, never UTC, so a series keeps 10:00 across the
// DST switch), an optional RRULE and the excluded occurrences.
type Schedule struct {
	// TimeZone is an IANA zone name (Europe/Berlin).
	TimeZone string `json:"timezone"`
	// Start is the first occurrence's local start, localLayout.
	Start string `json:"start"`
	// Duration of each occurrence.
	Duration time.Duration `json:"duration"`
	// RRule is an RFC 5545 RRULE value without "RRULE:" ("" = one occurrence).
	// A rule without COUNT or UNTIL was given an UNTIL when it was accepted.
	RRule string `json:"rrule,omitempty"`
	// ExDates are the local starts (localLayout) of cancelled occurrences.
	ExDates []string `json:"exdates,omitempty"`
	// Overrides move single occurrences (RFC 5545 RECURRENCE-ID).
	Overrides []Override `json:"overrides,omitempty"`
}

// Override moves one occurrence of a series.
type Override struct {
	// RecurrenceID is the occurrence's original local start (localLayout).
	RecurrenceID string `json:"recurrence_id"`
	// Start is its new local start (localLayout), Duration its length.
	Start    string        `json:"start"`
	Duration time.Duration `json:"duration"`
}

// Occurrence is one instance of a meeting.
type Occurrence struct {
	Start, End time.Time
	// RecurrenceID is the original start of a moved occurrence (zero if not moved).
	RecurrenceID time.Time
}

// Limits bound what a schedule may produce.
type Limits struct {
	// MaxOccurrences caps a series (a rule producing more is refused).
	MaxOccurrences int
	// MaxSeriesSpan is how far an open-ended rule runs: it gets an UNTIL
	// that far after its start.
	MaxSeriesSpan time.Duration
	// MaxDuration caps one occurrence.
	MaxDuration time.Duration
}

// location loads the schedule's zone (tzdata is embedded in the binary).
func (s *Schedule) location() (*time.Location, error) {
	return loadZone(s.TimeZone)
}

func loadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" || strings.ContainsAny(name, " \\") || strings.HasPrefix(name, "/") || strings.Contains(name, "..") {
		return nil, invalid("timezone", "%q is not an IANA time zone name (like Europe/Berlin)", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, invalid("timezone", "unknown time zone %q (use an IANA name like Europe/Berlin)", name)
	}
	return loc, nil
}

// StartTime is the first occurrence's start.
func (s *Schedule) StartTime() (time.Time, error) {
	loc, err := s.location()
	if err != nil {
		return time.Time{}, err
	}
	return time.ParseInLocation(localLayout, s.Start, loc)
}

// Meetings take place in these years (the recurrence library also fails
// on years far outside them).
const (
	minYear = 2000
	maxYear = 2199
)

// parseLocal reads a local date-time a person typed: "2026-03-23 10:00",
// "2026-03-23T10:00", "2026-03-23T10:00:00" or localLayout. A time that does
// not exist in loc (the hour skipped when clocks go forward) is refused, as is
// an ambiguous one (the hour repeated when they go back).
func parseLocal(field, value string, loc *time.Location) (time.Time, error) {
	v := strings.TrimSpace(value)
	var t time.Time
	var err error
	for _, layout := range []string{"2006-01-02 15:04", "2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04:05", localLayout} {
		if t, err = time.Parse(layout, v); err == nil {
			break
		}
	}
	if err != nil {
		if _, derr := time.Parse("2006-01-02", firstWord(v)); derr != nil && len(firstWord(v)) == 10 {
			return time.Time{}, invalid(field, "%q is not a date: %s", firstWord(v), dateProblem(firstWord(v)))
		}
		return time.Time{}, invalid(field, "%q is not a date and time like 2026-03-23 10:00", value)
	}
	if t.Year() < minYear || t.Year() > maxYear {
		return time.Time{}, invalid(field, "%s is not between the years %d and %d", v, minYear, maxYear)
	}
	local := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, loc)
	if local.Hour() != t.Hour() || local.Minute() != t.Minute() || local.Day() != t.Day() {
		return time.Time{}, invalid(field, "%s does not exist in %s (the clocks go forward that night)", t.Format("2006-01-02 15:04"), loc)
	}
	// Ambiguous: the same wall-clock time an hour later or earlier is the same.
	for _, d := range []time.Duration{-time.Hour, time.Hour} {
		o := local.Add(d)
		if o.Hour() == t.Hour() && o.Minute() == t.Minute() && o.Day() == t.Day() {
			return time.Time{}, invalid(field, "%s happens twice in %s (the clocks go back that night); pick another time", t.Format("2006-01-02 15:04"), loc)
		}
	}
	return local, nil
}

func firstWord(s string) string {
	if i := strings.IndexAny(s, " T"); i >= 0 {
		return s[:i]
	}
	return s
}

// dateProblem explains why a YYYY-MM-DD string is not a date.
func dateProblem(d string) string {
	var y, m, day int
	if _, err := fmt.Sscanf(d, "%4d-%2d-%2d", &y, &m, &day); err != nil {
		return "write dates as YYYY-MM-DD"
	}
	if m < 1 || m > 12 {
		return fmt.Sprintf("there is no month %d", m)
	}
	last := time.Date(y, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day()
	if day < 1 || day > last {
		return fmt.Sprintf("%s %d has %d days", time.Month(m), y, last)
	}
	return "write dates as YYYY-MM-DD"
}

// normalizeRRule checks an RRULE value and returns it in canonical form;
// open-ended rules get an UNTIL MaxSeriesSpan after start (capped says so).
func normalizeRRule(rule string, start time.Time, lim Limits) (out string, capped bool, err error) {
	rule = strings.TrimPrefix(strings.TrimSpace(rule), "RRULE:")
	if rule == "" {
		return "", false, nil
	}
	if len(rule) > 512 {
		return "", false, invalid("rrule", "longer than 512 characters")
	}
	upper := strings.ToUpper(rule)
	if strings.Contains(upper, "DTSTART") || strings.ContainsAny(rule, "\r\n") {
		return "", false, invalid("rrule", "give only the RRULE value, like FREQ=WEEKLY;COUNT=10")
	}
	opt, err := rrule.StrToROptionInLocation(rule, start.Location())
	if err != nil {
		return "", false, invalid("rrule", "%q is not an RFC 5545 RRULE: %v", rule, err)
	}
	switch opt.Freq {
	case rrule.DAILY, rrule.WEEKLY, rrule.MONTHLY, rrule.YEARLY:
	default:
		return "", false, invalid("rrule", "FREQ=%v repeats more than daily; meetings repeat DAILY, WEEKLY, MONTHLY or YEARLY", opt.Freq)
	}
	if len(opt.Byhour) > 0 || len(opt.Byminute) > 0 || len(opt.Bysecond) > 0 || len(opt.Byeaster) > 0 {
		return "", false, invalid("rrule", "BYHOUR, BYMINUTE, BYSECOND and BYEASTER are not supported; the start time sets the time of day")
	}
	if opt.Interval < 0 || opt.Interval > 1000 {
		return "", false, invalid("rrule", "INTERVAL=%d is out of range", opt.Interval)
	}
	if opt.Count < 0 {
		return "", false, invalid("rrule", "COUNT must be positive")
	}
	if opt.Count > lim.MaxOccurrences {
		return "", false, invalid("rrule", "COUNT=%d is more than the %d occurrences a series may have", opt.Count, lim.MaxOccurrences)
	}
	if !opt.Until.IsZero() && opt.Until.Before(start) {
		return "", false, invalid("rrule", "UNTIL %s is before the first occurrence", opt.Until.In(start.Location()).Format("2006-01-02 15:04"))
	}
	if opt.Count == 0 && opt.Until.IsZero() {
		opt.Until = start.Add(lim.MaxSeriesSpan).UTC()
		capped = true
	} else if !opt.Until.IsZero() {
		opt.Until = opt.Until.UTC()
	}
	opt.Dtstart = time.Time{}
	return opt.RRuleString(), capped, nil
}

// set builds the recurrence set (DTSTART in its zone, so DST is honoured).
func (s *Schedule) set() (*rrule.Set, time.Time, error) {
	start, err := s.StartTime()
	if err != nil {
		return nil, time.Time{}, invalid("start", "%q: %v", s.Start, err)
	}
	set := &rrule.Set{}
	if s.RRule == "" {
		set.RDate(start)
		return set, start, nil
	}
	opt, err := rrule.StrToROptionInLocation(s.RRule, start.Location())
	if err != nil {
		return nil, time.Time{}, invalid("rrule", "%v", err)
	}
	opt.Dtstart = start
	r, err := rrule.NewRRule(*opt)
	if err != nil {
		return nil, time.Time{}, invalid("rrule", "%v", err)
	}
	set.RRule(r)
	for _, ex := range s.ExDates {
		t, err := time.ParseInLocation(localLayout, ex, start.Location())
		if err != nil {
			return nil, time.Time{}, invalid("exdates", "%q: %v", ex, err)
		}
		set.ExDate(t)
	}
	return set, start, nil
}

// Occurrences lists every occurrence, at most max+1 (so a caller can tell
// "too many").
func (s *Schedule) Occurrences(max int) (out []Occurrence, err error) {
	defer recoverRule(&err)
	set, _, err := s.set()
	if err != nil {
		return nil, err
	}
	next := set.Iterator()
	for len(out) <= max {
		t, ok := next()
		if !ok {
			break
		}
		out = append(out, Occurrence{Start: t, End: t.Add(s.Duration)})
	}
	if len(s.Overrides) > 0 {
		loc, _ := s.location()
		for i, o := range out {
			for _, ov := range s.Overrides {
				rid, err1 := time.ParseInLocation(localLayout, ov.RecurrenceID, loc)
				st, err2 := time.ParseInLocation(localLayout, ov.Start, loc)
				if err1 == nil && err2 == nil && rid.Equal(o.Start) {
					out[i] = Occurrence{Start: st, End: st.Add(ov.Duration), RecurrenceID: rid}
				}
			}
		}
		slices.SortStableFunc(out, func(a, b Occurrence) int { return a.Start.Compare(b.Start) })
	}
	return out, nil
}

// Between lists the occurrences that overlap [from, to).
func (s *Schedule) Between(from, to time.Time) (_ []Occurrence, err error) {
	defer recoverRule(&err)
	if len(s.Overrides) > 0 {
		// Moved occurrences may enter or leave any window: filter them all.
		all, err := s.Occurrences(100000)
		if err != nil {
			return nil, err
		}
		var out []Occurrence
		for _, o := range all {
			if o.End.After(from) && o.Start.Before(to) {
				out = append(out, o)
			}
		}
		return out, nil
	}
	set, _, err := s.set()
	if err != nil {
		return nil, err
	}
	var out []Occurrence
	for _, t := range set.Between(from.Add(-s.Duration), to, true) {
		if t.Add(s.Duration).After(from) && t.Before(to) {
			out = append(out, Occurrence{Start: t, End: t.Add(s.Duration)})
		}
	}
	return out, nil
}

// Validate checks the schedule on its own and against the limits.
func (s *Schedule) Validate(lim Limits) ([]Occurrence, error) {
	if _, err := s.location(); err != nil {
		return nil, err
	}
	if s.Duration <= 0 {
		return nil, invalid("duration", "must be positive")
	}
	if s.Duration > lim.MaxDuration {
		return nil, invalid("duration", "%s is longer than the %s a meeting may last", s.Duration, lim.MaxDuration)
	}
	if s.RRule == "" && len(s.ExDates) > 0 {
		return nil, invalid("except", "only a repeating meeting has occurrences to leave out")
	}
	occ, err := s.Occurrences(lim.MaxOccurrences)
	if err != nil {
		return nil, err
	}
	if len(occ) > lim.MaxOccurrences {
		return nil, invalid("rrule", "the series has more than %d occurrences; give it a COUNT or UNTIL", lim.MaxOccurrences)
	}
	if len(occ) == 0 {
		return nil, invalid("rrule", "the series has no occurrence (every one is excluded or the rule matches no day)")
	}
	if s.RRule != "" {
		// Each excluded date must be an occurrence of the rule.
		bare := *s
		bare.ExDates, bare.Overrides = nil, nil
		all, err := bare.Occurrences(lim.MaxOccurrences)
		if err != nil {
			return nil, err
		}
		if err := reachable(s.RRule, all); err != nil {
			return nil, err
		}
		loc, _ := s.location()
		for _, ov := range s.Overrides {
			t, _ := time.ParseInLocation(localLayout, ov.RecurrenceID, loc)
			if !slices.ContainsFunc(all, func(o Occurrence) bool { return o.Start.Equal(t) }) {
				return nil, invalid("occurrence", "%s is not an occurrence of the series", t.Format("2006-01-02 15:04"))
			}
			if slices.Contains(s.ExDates, ov.RecurrenceID) {
				return nil, invalid("occurrence", "%s is cancelled", t.Format("2006-01-02 15:04"))
			}
			if ov.Duration <= 0 || ov.Duration > lim.MaxDuration {
				return nil, invalid("duration", "must be positive and at most %s", lim.MaxDuration)
			}
		}
		for _, ex := range s.ExDates {
			t, _ := time.ParseInLocation(localLayout, ex, loc)
			if !slices.ContainsFunc(all, func(o Occurrence) bool { return o.Start.Equal(t) }) {
				return nil, invalid("except", "%s is not an occurrence of the series", t.Format("2006-01-02 15:04"))
			}
		}
	}
	return occ, nil
}

// reachable refuses a rule that runs past maxYear. The recurrence library
// stops about 292 years after the start (where a time.Duration overflows)
// without saying so, while calendar apps expand the RRULE in full:
// FREQ=YEARLY;INTERVAL=1000;COUNT=8 was one occurrence for gxconf (its
// reminders, the booking check) and eight, up to the year 9027, in every
// invitee's calendar; INTERVAL=10;COUNT=800 made a VTIMEZONE of about 580
// observances in each .ics. all is the rule's expansion without
// exceptions.
func reachable(rule string, all []Occurrence) error {
	opt, err := rrule.StrToROption(rule)
	if err != nil {
		return invalid("rrule", "%v", err)
	}
	runsPast := func() error {
		return invalid("rrule", "the series runs past the year %d", maxYear)
	}
	if !opt.Until.IsZero() && opt.Until.Year() > maxYear {
		return runsPast()
	}
	if opt.Count > 0 && len(all) < opt.Count {
		return runsPast()
	}
	for _, o := range all {
		if o.End.Year() > maxYear {
			return runsPast()
		}
	}
	return nil
}

// resolveExDate turns what a person typed ("2026-03-30" or a date and time)
// into the local start of the occurrence it names.
func (s *Schedule) resolveExDate(field, value string, lim Limits) (string, error) {
	loc, err := s.location()
	if err != nil {
		return "", err
	}
	start, err := s.StartTime()
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(value)
	var day time.Time
	if d, err := time.ParseInLocation("2006-01-02", v, loc); err == nil {
		day = d
	} else if t, err := parseLocal(field, v, loc); err == nil {
		return t.Format(localLayout), nil
	} else {
		if len(v) == 10 {
			return "", invalid(field, "%q is not a date: %s", v, dateProblem(v))
		}
		return "", invalid(field, "%q is not a date like 2026-03-30", value)
	}
	t := time.Date(day.Year(), day.Month(), day.Day(), start.Hour(), start.Minute(), start.Second(), 0, loc)
	bare := *s
	bare.ExDates, bare.Overrides = nil, nil
	all, err := bare.Occurrences(lim.MaxOccurrences)
	if err != nil {
		return "", err
	}
	for _, o := range all {
		if y, m, d := o.Start.Date(); y == day.Year() && m == day.Month() && d == day.Day() {
			return o.Start.Format(localLayout), nil
		}
	}
	return "", invalid(field, "the series has no occurrence on %s", t.Format("Mon 2006-01-02"))
}

// Describe says the schedule in words, in loc (the reader's zone).
func (s *Schedule) Describe(loc *time.Location) string {
	start, err := s.StartTime()
	if err != nil {
		return "(unreadable schedule)"
	}
	if loc == nil {
		loc = start.Location()
	}
	st := start.In(loc)
	end := st.Add(s.Duration)
	text := fmt.Sprintf("%s, %s–%s (%s)", st.Format("Mon 2 Jan 2006"), st.Format("15:04"), end.Format("15:04"), loc)
	if s.RRule != "" {
		text += "; repeats " + describeRule(s.RRule, loc)
	}
	if len(s.ExDates) > 0 {
		var ex []string
		for _, e := range s.ExDates {
			if t, err := time.ParseInLocation(localLayout, e, start.Location()); err == nil {
				ex = append(ex, t.In(loc).Format("2 Jan 2006"))
			}
		}
		text += "; except " + strings.Join(ex, ", ")
	}
	for _, ov := range s.Overrides {
		rid, err1 := time.ParseInLocation(localLayout, ov.RecurrenceID, start.Location())
		st, err2 := time.ParseInLocation(localLayout, ov.Start, start.Location())
		if err1 == nil && err2 == nil {
			text += fmt.Sprintf("; %s moved to %s", rid.In(loc).Format("2 Jan"), st.In(loc).Format("Mon 2 Jan 15:04"))
		}
	}
	return text
}

// describeRule words the usual rules and falls back to the RRULE.
func describeRule(rule string, loc *time.Location) string {
	opt, err := rrule.StrToROption(rule)
	if err != nil {
		return rule
	}
	unit := map[rrule.Frequency]string{rrule.DAILY: "day", rrule.WEEKLY: "week", rrule.MONTHLY: "month", rrule.YEARLY: "year"}[opt.Freq]
	text := "every " + unit
	if opt.Interval > 1 {
		text = fmt.Sprintf("every %d %ss", opt.Interval, unit)
	}
	if len(opt.Byweekday) > 0 {
		var days []string
		for _, d := range opt.Byweekday {
			days = append(days, d.String())
		}
		text += " on " + strings.Join(days, ",")
	}
	switch {
	case opt.Count > 0:
		text += fmt.Sprintf(", %d times", opt.Count)
	case !opt.Until.IsZero():
		text += ", until " + opt.Until.In(loc).Format("2 Jan 2006")
	}
	return text
}

// recoverRule turns a panic of the recurrence library (it has failed on
// odd input) into an error naming the rule.
func recoverRule(err *error) {
	if r := recover(); r != nil {
		*err = invalid("rrule", "the rule cannot be expanded (%v)", r)
	}
}
