package meetings

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-ical"
)

// iTIP methods (RFC 5546 §1.4).
const (
	MethodRequest = "REQUEST"
	MethodCancel  = "CANCEL"
	// MethodPublish is a feed's (no scheduling semantics).
	MethodPublish = "PUBLISH"
)

const prodID = "-//gxconf//meetings//EN"

// CalendarFile renders the meeting as an iCalendar object (RFC 5545) with
// the given iTIP method. cancelled, when not zero, is the one occurrence a
// CANCEL withdraws (its RECURRENCE-ID); zero with METHOD:CANCEL withdraws the
// whole series.
func CalendarFile(m *Meeting, method string, cancelled time.Time, callLink string, now time.Time) ([]byte, error) {
	cal := newCalendar(method)
	loc, from, to, err := meetingSpan(m)
	if err != nil {
		return nil, err
	}
	zones := newZoneSet(0)
	if _, err := zones.cover(loc, from, to); err != nil {
		return nil, err
	}
	ev, err := meetingEvent(m, callLink, now, false, m.Participants)
	if err != nil {
		return nil, err
	}
	if method == MethodCancel {
		ev.Props.SetText(ical.PropStatus, "CANCELLED")
		if !cancelled.IsZero() {
			// Only this instance: RFC 5546 §3.2.5, with RECURRENCE-ID.
			ev.Props.Del(ical.PropRecurrenceRule)
			ev.Props.Del(ical.PropExceptionDates)
			rid := ical.NewProp(ical.PropRecurrenceID)
			rid.SetDateTime(cancelled)
			ev.Props.Set(rid)
			setDateTime(ev.Props, ical.PropDateTimeStart, cancelled)
			setDateTime(ev.Props, ical.PropDateTimeEnd, cancelled.Add(m.Schedule.Duration))
		}
	}
	cal.Children = append(zones.components(), ev.Component)
	if method == MethodRequest {
		cal.Children = append(cal.Children, overrideEvents(m, ev, false)...)
	}
	return encode(cal)
}

// overrideEvents are the moved occurrences: copies of the series' VEVENT
// with RECURRENCE-ID and their own DTSTART/DTEND (RFC 5545 §3.8.4.4).
// In UTC when utc is set.
func overrideEvents(m *Meeting, master *ical.Event, utc bool) []*ical.Component {
	loc, err := m.Schedule.location()
	if err != nil {
		return nil
	}
	var out []*ical.Component
	for _, ov := range m.Schedule.Overrides {
		rid, err1 := time.ParseInLocation(localLayout, ov.RecurrenceID, loc)
		st, err2 := time.ParseInLocation(localLayout, ov.Start, loc)
		if err1 != nil || err2 != nil {
			continue
		}
		if utc {
			rid, st = rid.UTC(), st.UTC()
		}
		c := ical.NewComponent(ical.CompEvent)
		for name, props := range master.Props {
			switch name {
			case ical.PropRecurrenceRule, ical.PropExceptionDates, ical.PropDateTimeStart, ical.PropDateTimeEnd:
				continue
			}
			c.Props[name] = append([]ical.Prop(nil), props...)
		}
		r := ical.NewProp(ical.PropRecurrenceID)
		r.SetDateTime(rid)
		c.Props.Set(r)
		setDateTime(c.Props, ical.PropDateTimeStart, st)
		setDateTime(c.Props, ical.PropDateTimeEnd, st.Add(ov.Duration))
		out = append(out, c)
	}
	return out
}

// maxFeedZones caps the VTIMEZONEs of a feed. Each covers the years of
// its zone's meetings, up to two hundred; a feed of meetings in hundreds
// of zones, each far in the future, had tens of MB of them. A meeting in a
// further zone is written in UTC: a single occurrence is exact, a series
// keeps its UTC time of day across daylight saving switches.
const maxFeedZones = 20

// feedLimits bound what one feed request renders.
type feedLimits struct {
	// bytes caps the whole file: the meetings that would not fit are left
	// out, whole, from the first that does not (the feed's order puts the
	// running and next ones first).
	bytes int
	// attendees caps the ATTENDEE lines of an event besides the feed's
	// user: participants are stored even when their invite failed, so
	// a thousand made-up ones cost an organiser nothing.
	attendees int
}

// defaultFeedLimits: 4 MiB holds 500 meetings with 50 attendees and a
// long description each; calendar apps fetch a feed every few minutes.
var defaultFeedLimits = feedLimits{bytes: 4 << 20, attendees: 50}

// feedHeader is what go-ical writes for newCalendar(MethodPublish) with
// X-WR-CALNAME (properties in name order).
const feedHeader = "BEGIN:VCALENDAR\r\nCALSCALE:GREGORIAN\r\nMETHOD:PUBLISH\r\nPRODID:" + prodID +
	"\r\nVERSION:2.0\r\nX-WR-CALNAME:gxconf meetings\r\n"

const feedFooter = "END:VCALENDAR\r\n"

// feed is a rendered feed.
type feed struct {
	body []byte
	// listed meetings are in it; cut were left out for the byte budget.
	listed, cut int
	// unreadable are the meetings left out because their schedule cannot
	// be rendered, by ID.
	unreadable map[string]error
}

// FeedFile renders user's meetings as one calendar (METHOD:PUBLISH), within
// the default limits (see renderFeed).
func FeedFile(user string, ms []*Meeting, callLink func(*Meeting) string, now time.Time) ([]byte, error) {
	f, err := renderFeed(user, ms, callLink, now, defaultFeedLimits)
	if err != nil {
		return nil, err
	}
	return f.body, nil
}

// renderFeed renders user's meetings as one calendar (METHOD:PUBLISH) in
// their order, each meeting whole (its VEVENT, its moved occurrences and
// what its VTIMEZONE grows by) or not at all, within lim.bytes. The zones
// of the first meetings get VTIMEZONEs, at most maxFeedZones of them. An
// event lists the organiser, user, and at most lim.attendees others.
func renderFeed(user string, ms []*Meeting, callLink func(*Meeting) string, now time.Time, lim feedLimits) (*feed, error) {
	zones := newZoneSet(maxFeedZones)
	size := len(feedHeader) + len(feedFooter)
	var events bytes.Buffer
	f := &feed{unreadable: map[string]error{}}
	for i, m := range ms {
		// A meeting whose schedule cannot be rendered (a stored row no
		// longer valid) is left out, not the whole feed.
		loc, from, to, err := meetingSpan(m)
		if err != nil {
			f.unreadable[m.ID] = err
			continue
		}
		zone, inZone, err := zones.plan(loc, from, to)
		if err != nil {
			f.unreadable[m.ID] = err
			continue
		}
		ev, err := meetingEvent(m, callLink(m), now, !inZone, feedAttendees(m, user, lim.attendees))
		if err != nil {
			f.unreadable[m.ID] = err
			continue
		}
		if m.Cancelled {
			ev.Props.SetText(ical.PropStatus, "CANCELLED")
		}
		var chunk []byte
		for _, c := range append([]*ical.Component{ev.Component}, overrideEvents(m, ev, !inZone)...) {
			b, err := encodeComponent(c)
			if err != nil {
				return nil, err
			}
			chunk = append(chunk, b...)
		}
		if len(chunk) == 0 {
			continue // an unreadable one, noted above
		}
		add := len(chunk)
		if inZone {
			add += zone.size
		}
		if size+add > lim.bytes {
			f.cut = len(ms) - i
			break
		}
		size += add
		if inZone {
			zones.add(zone)
		}
		events.Write(chunk)
		f.listed++
	}
	out := make([]byte, 0, size)
	out = append(out, feedHeader...)
	for _, c := range zones.components() {
		b, err := encodeComponent(c)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	out = append(out, events.Bytes()...)
	f.body = append(out, feedFooter...)
	return f, nil
}

// feedAttendees are the participants a feed's event lists: user first
// when invited, then at most n others. A calendar shows the attendees of
// an event; a thousand of them, in every event of a feed, made it tens
// of MB, and the full list is in the meeting's .ics file and room.
func feedAttendees(m *Meeting, user string, n int) []string {
	var out []string
	if slices.Contains(m.Participants, user) {
		out = append(out, user)
	}
	others := 0
	for _, p := range m.Participants {
		if others == n {
			break
		}
		if p != user {
			out = append(out, p)
			others++
		}
	}
	return out
}

func newCalendar(method string) *ical.Calendar {
	cal := ical.NewCalendar()
	cal.Props.SetText(ical.PropVersion, "2.0")
	cal.Props.SetText(ical.PropProductID, prodID)
	cal.Props.SetText(ical.PropCalendarScale, "GREGORIAN")
	cal.Props.SetText(ical.PropMethod, method)
	return cal
}

func encode(cal *ical.Calendar) ([]byte, error) {
	var buf bytes.Buffer
	if err := ical.NewEncoder(&buf).Encode(cal); err != nil {
		return nil, fmt.Errorf("failed to encode calendar: %w", err)
	}
	return fold(buf.Bytes()), nil
}

// setRaw sets a property of its default value type (INTEGER, UTC-OFFSET),
// which SetText would mark VALUE=TEXT.
func setRaw(props ical.Props, name, value string) {
	p := ical.NewProp(name)
	p.Value = value
	props.Set(p)
}

func setDateTime(props ical.Props, name string, t time.Time) {
	p := ical.NewProp(name)
	p.SetDateTime(t)
	props.Set(p)
}

// meetingEvent is the series' VEVENT, in the schedule's zone or, with
// utc, in UTC, with attendees as its ATTENDEEs (a note says how many of
// the participants are left out).
func meetingEvent(m *Meeting, callLink string, now time.Time, utc bool, attendees []string) (*ical.Event, error) {
	start, err := m.Schedule.StartTime()
	if err != nil {
		return nil, err
	}
	loc := start.Location()
	if utc {
		start = start.UTC()
	}
	ev := ical.NewEvent()
	ev.Props.SetText(ical.PropUID, m.UID)
	setDateTime(ev.Props, ical.PropDateTimeStamp, now.UTC())
	setRaw(ev.Props, ical.PropSequence, fmt.Sprint(m.Sequence))
	setDateTime(ev.Props, ical.PropDateTimeStart, start)
	setDateTime(ev.Props, ical.PropDateTimeEnd, start.Add(m.Schedule.Duration))
	if m.Schedule.RRule != "" {
		p := ical.NewProp(ical.PropRecurrenceRule)
		p.SetValueType(ical.ValueRecurrence)
		p.Value = m.Schedule.RRule
		ev.Props.Set(p)
		for _, ex := range m.Schedule.ExDates {
			t, err := time.ParseInLocation(localLayout, ex, loc)
			if err != nil {
				return nil, err
			}
			p := ical.NewProp(ical.PropExceptionDates)
			p.SetDateTime(t.In(start.Location()))
			ev.Props.Add(p)
		}
	}
	ev.Props.SetText(ical.PropSummary, m.Title)
	desc := m.Description
	if callLink != "" {
		if desc != "" {
			desc += "\n\n"
		}
		desc += "Join the call: " + callLink
		ev.Props.SetText(ical.PropLocation, callLink)
		if u, err := url.Parse(callLink); err == nil {
			ev.Props.SetURI(ical.PropURL, u)
		}
	}
	if desc != "" {
		ev.Props.SetText(ical.PropDescription, desc)
	}
	org := ical.NewProp(ical.PropOrganizer)
	org.Value = matrixURI(m.Organiser)
	org.Params.Set(ical.ParamCommonName, m.Organiser)
	ev.Props.Set(org)
	if left := len(m.Participants) - len(attendees); left > 0 {
		ev.Props.SetText(ical.PropComment, fmt.Sprintf("%d more invitees are not listed here", left))
	}
	for _, p := range attendees {
		att := ical.NewProp(ical.PropAttendee)
		att.Value = matrixURI(p)
		att.Params.Set(ical.ParamCommonName, p)
		att.Params.Set(ical.ParamRole, "REQ-PARTICIPANT")
		att.Params.Set(ical.ParamParticipationStatus, "NEEDS-ACTION")
		ev.Props.Add(att)
	}
	ev.Props.SetText(ical.PropStatus, "CONFIRMED")
	setDateTime(ev.Props, ical.PropLastModified, m.UpdatedAt.UTC())
	return ev, nil
}

// matrixURI is a user's matrix: URI (RFC 9587... registered as "matrix").
func matrixURI(userID string) string {
	return "matrix:u/" + url.PathEscape(strings.TrimPrefix(userID, "@"))
}

// meetingSpan is m's zone and the first start and latest end of its
// occurrences: the stored span of a meeting read from the store (a feed
// expands no schedule), else its own.
func meetingSpan(m *Meeting) (loc *time.Location, from, to time.Time, err error) {
	if loc, err = m.Schedule.location(); err != nil {
		return nil, from, to, err
	}
	if _, err := m.Schedule.StartTime(); err != nil {
		return nil, from, to, invalid("start", "%q: %v", m.Schedule.Start, err)
	}
	from, to = m.first, m.last
	if !from.IsZero() && to.Equal(neverEnds) {
		return nil, from, to, errUnexpandable
	}
	if from.IsZero() {
		if from, to, err = expandSpan(m); err != nil {
			return nil, from, to, err
		}
	}
	return loc, from, to, nil
}

// errUnexpandable: the stored schedule could not be expanded when it was
// stored (neverEnds); expanding it again on every request would take
// as long again.
var errUnexpandable = errors.New("the stored schedule cannot be expanded")

// expandSpan is the first start and the latest end of m's occurrences.
func expandSpan(m *Meeting) (from, to time.Time, err error) {
	occ, err := m.Schedule.Occurrences(maxStoredOccurrences)
	if err != nil {
		return from, to, err
	}
	if len(occ) == 0 {
		start, _ := m.Schedule.StartTime()
		occ = []Occurrence{{Start: start, End: start}}
	}
	// Overrides keep occ sorted by start; the last to end may be earlier.
	from, to = occ[0].Start, occ[0].End
	for _, o := range occ {
		if o.End.After(to) {
			to = o.End
		}
	}
	return from, to, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// observance is one STANDARD/DAYLIGHT block; DTSTART is the onset in the
// local time of the offset in force before it (RFC 5545 §3.6.5).
func observance(at time.Time, fromOff, toOff int, name string, dst bool) *ical.Component {
	kind := ical.CompTimezoneStandard
	if dst {
		kind = ical.CompTimezoneDaylight
	}
	c := ical.NewComponent(kind)
	p := ical.NewProp(ical.PropDateTimeStart)
	p.SetValueType(ical.ValueDateTime)
	p.Value = at.UTC().Add(time.Duration(fromOff) * time.Second).Format(localLayout)
	c.Props.Set(p)
	setRaw(c.Props, ical.PropTimezoneOffsetFrom, utcOffset(fromOff))
	setRaw(c.Props, ical.PropTimezoneOffsetTo, utcOffset(toOff))
	if name != "" && !strings.HasPrefix(name, "+") && !strings.HasPrefix(name, "-") {
		c.Props.SetText(ical.PropTimezoneName, name)
	}
	return c
}

func utcOffset(sec int) string {
	sign := "+"
	if sec < 0 {
		sign, sec = "-", -sec
	}
	s := fmt.Sprintf("%s%02d%02d", sign, sec/3600, sec%3600/60)
	if sec%60 != 0 {
		s += fmt.Sprintf("%02d", sec%60)
	}
	return s
}

// maxLineOctets is the longest content line RFC 5545 §3.1 wants.
const maxLineOctets = 75

// fold breaks every content line longer than 75 octets (RFC 5545 §3.1):
// a continuation line starts with a space, and a UTF-8 sequence is never
// split between two lines. go-ical writes each property on one line, so a
// 4000-character description was one 4000-octet line.
func fold(b []byte) []byte {
	var out bytes.Buffer
	out.Grow(len(b) + len(b)/(maxLineOctets-1)*3)
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte("\r\n"))
		b = rest
		limit := maxLineOctets
		for len(line) > limit {
			cut := limit
			for cut > 1 && !utf8.RuneStart(line[cut]) {
				cut--
			}
			out.Write(line[:cut])
			out.WriteString("\r\n ")
			line = line[cut:]
			limit = maxLineOctets - 1 // the leading space counts
		}
		out.Write(line)
		out.WriteString("\r\n")
	}
	return out.Bytes()
}
