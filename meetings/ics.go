package meetings

import (
	"bytes"
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
	zones := map[string]bool{}
	ev, err := meetingEvent(m, callLink, now, zones)
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
	cal.Children = append(cal.Children, ev.Component)
	if method == MethodRequest {
		cal.Children = append(cal.Children, overrideEvents(m, ev)...)
	}
	spans := zoneSpans{}
	if err := spans.add(m, zones); err != nil {
		return nil, err
	}
	addZones(cal, spans)
	return encode(cal)
}

// overrideEvents are the moved occurrences: copies of the series' VEVENT
// with RECURRENCE-ID and their own DTSTART/DTEND (RFC 5545 §3.8.4.4).
func overrideEvents(m *Meeting, master *ical.Event) []*ical.Component {
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

// FeedFile renders a user's meetings as one calendar (METHOD:PUBLISH).
func FeedFile(ms []*Meeting, callLink func(*Meeting) string, now time.Time) ([]byte, error) {
	cal := newCalendar(MethodPublish)
	cal.Props.SetText("X-WR-CALNAME", "gxconf meetings")
	// One VTIMEZONE per zone, covering every meeting that uses it.
	spans := zoneSpans{}
	var events []*ical.Component
	for _, m := range ms {
		zones := map[string]bool{}
		ev, err := meetingEvent(m, callLink(m), now, zones)
		if err != nil {
			return nil, err
		}
		if m.Cancelled {
			ev.Props.SetText(ical.PropStatus, "CANCELLED")
		}
		if err := spans.add(m, zones); err != nil {
			return nil, err
		}
		events = append(events, ev.Component)
		events = append(events, overrideEvents(m, ev)...)
	}
	cal.Children = append(cal.Children, events...)
	addZones(cal, spans)
	if len(events) == 0 {
		// go-ical refuses an empty calendar; an empty feed is still valid.
		return []byte("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:" + prodID + "\r\nMETHOD:PUBLISH\r\nX-WR-CALNAME:gxconf meetings\r\nEND:VCALENDAR\r\n"), nil
	}
	return encode(cal)
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

// meetingEvent is the series' VEVENT; zones collects the TZIDs it uses.
func meetingEvent(m *Meeting, callLink string, now time.Time, zones map[string]bool) (*ical.Event, error) {
	start, err := m.Schedule.StartTime()
	if err != nil {
		return nil, err
	}
	ev := ical.NewEvent()
	ev.Props.SetText(ical.PropUID, m.UID)
	setDateTime(ev.Props, ical.PropDateTimeStamp, now.UTC())
	setRaw(ev.Props, ical.PropSequence, fmt.Sprint(m.Sequence))
	setDateTime(ev.Props, ical.PropDateTimeStart, start)
	setDateTime(ev.Props, ical.PropDateTimeEnd, start.Add(m.Schedule.Duration))
	zones[start.Location().String()] = true
	if m.Schedule.RRule != "" {
		p := ical.NewProp(ical.PropRecurrenceRule)
		p.SetValueType(ical.ValueRecurrence)
		p.Value = m.Schedule.RRule
		ev.Props.Set(p)
		for _, ex := range m.Schedule.ExDates {
			t, err := time.ParseInLocation(localLayout, ex, start.Location())
			if err != nil {
				return nil, err
			}
			p := ical.NewProp(ical.PropExceptionDates)
			p.SetDateTime(t)
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
	for _, p := range m.Participants {
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

// zoneSpans is, for each TZID a calendar uses, the period its VTIMEZONE
// must cover: from the first to the last occurrence of every meeting in
// that zone. A feed mixes meetings of different years; a VTIMEZONE made
// for the first of them alone would give a later one the offset of its
// last observance (winter time in July, an hour off).
type zoneSpans map[string][2]time.Time

// add widens the spans of zones to m's occurrences: the stored span of a
// meeting read from the store (a feed expands no schedule), else its own.
func (z zoneSpans) add(m *Meeting, zones map[string]bool) error {
	from, to := m.first, m.last
	if from.IsZero() || to.Equal(neverEnds) {
		var err error
		if from, to, err = expandSpan(m); err != nil {
			return err
		}
	}
	for name := range zones {
		if _, err := loadZone(name); err != nil {
			return err
		}
		sp, ok := z[name]
		if !ok || from.Before(sp[0]) {
			sp[0] = from
		}
		if !ok || to.After(sp[1]) {
			sp[1] = to
		}
		z[name] = sp
	}
	return nil
}

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

// addZones adds a VTIMEZONE for every zone in spans, before the events
// that use them.
func addZones(cal *ical.Calendar, spans zoneSpans) {
	var add []*ical.Component
	for _, name := range sortedKeys(spans) {
		loc, _ := loadZone(name) // checked by zoneSpans.add
		add = append(add, vtimezone(loc, spans[name][0], spans[name][1]))
	}
	cal.Children = append(add, cal.Children...)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// vtimezone describes loc between from and to (RFC 5545 §3.6.5) with one
// STANDARD or DAYLIGHT observance per offset period, each with its exact
// onset, so a reader needs no time zone database of its own.
func vtimezone(loc *time.Location, from, to time.Time) *ical.Component {
	tz := ical.NewComponent(ical.CompTimezone)
	tz.Props.SetText(ical.PropTimezoneID, loc.String())
	// Start a year early: readers may look at dates before the first
	// occurrence (alarms, the previous week in a view).
	t := time.Date(from.In(loc).Year()-1, 1, 1, 0, 0, 0, 0, loc)
	end := time.Date(to.In(loc).Year()+1, 12, 31, 23, 0, 0, 0, loc)
	name, off := t.Zone()
	tz.Children = append(tz.Children, observance(t, off, off, name, t.IsDST()))
	for t.Before(end) {
		next := t.Add(24 * time.Hour)
		if _, o := next.Zone(); o != off {
			// Binary search the second the offset changes.
			lo, hi := t, next
			for hi.Sub(lo) > time.Second {
				mid := lo.Add(hi.Sub(lo) / 2)
				if _, o := mid.Zone(); o == off {
					lo = mid
				} else {
					hi = mid
				}
			}
			n, o := hi.Zone()
			tz.Children = append(tz.Children, observance(hi, off, o, n, hi.IsDST()))
			off = o
		}
		t = next
	}
	return tz
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
