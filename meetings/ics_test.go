package meetings

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-ical"
	"github.com/stretchr/testify/require"
)

// observanceStarts lists the DTSTARTs of the STANDARD/DAYLIGHT blocks of
// each VTIMEZONE in an iCalendar file, by TZID.
func observanceStarts(t *testing.T, ics []byte) map[string][]string {
	t.Helper()
	cal, err := ical.NewDecoder(bytes.NewReader(ics)).Decode()
	require.NoError(t, err)
	out := map[string][]string{}
	for _, c := range cal.Children {
		if c.Name != ical.CompTimezone {
			continue
		}
		id, err := c.Props.Text(ical.PropTimezoneID)
		require.NoError(t, err)
		require.NotContains(t, out, id, "one VTIMEZONE per TZID")
		out[id] = []string{}
		for _, o := range c.Children {
			out[id] = append(out[id], o.Props.Get(ical.PropDateTimeStart).Value)
		}
	}
	return out
}

// A feed mixes meetings of different years in one zone. Its one VTIMEZONE
// must cover all of them: made for the first meeting alone (2027), it ended
// in 2028, and a reader gave the July 2030 meeting the offset of the last
// observance, winter time, an hour off.
func TestFeedTimezoneCoversEveryMeeting(t *testing.T) {
	mk := func(id, start string) *Meeting {
		return &Meeting{ID: id, UID: id + "@x", Organiser: "@alice:hs.test", Title: id, RoomID: "!" + id + ":hs.test",
			Schedule: Schedule{TimeZone: "Europe/Berlin", Start: start, Duration: time.Hour}}
	}
	link := func(*Meeting) string { return "https://x/" }
	for _, order := range [][]*Meeting{
		{mk("aaaaaaaa", "20270115T100000"), mk("bbbbbbbb", "20300715T100000")},
		{mk("bbbbbbbb", "20300715T100000"), mk("aaaaaaaa", "20270115T100000")},
	} {
		ics, err := FeedFile("", order, link, time.Unix(0, 0))
		require.NoError(t, err)
		zones := observanceStarts(t, ics)
		require.Len(t, zones, 1)
		// Summer time begins on the last Sunday of March, at 02:00 local.
		require.Contains(t, zones["Europe/Berlin"], "20270328T020000")
		require.Contains(t, zones["Europe/Berlin"], "20300331T020000")
	}
}

// unfold undoes RFC 5545 §3.1 folding.
func unfold(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\r\n "), nil) }

// requireFolded: every content line is at most 75 octets and valid UTF-8
// on its own (a multi-octet character is never cut in two).
func requireFolded(t *testing.T, b []byte) {
	t.Helper()
	require.True(t, bytes.HasSuffix(b, []byte("\r\n")))
	for _, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\r\n")), []byte("\r\n")) {
		require.LessOrEqual(t, len(line), 75, "%q", line)
		require.True(t, utf8.Valid(line), "%q", line)
	}
}

// A long title or description (4000 characters are allowed) was written
// as one content line of thousands of octets; RFC 5545 §3.1 wants lines of
// at most 75 octets, folded, and multi-octet characters kept whole.
func TestCalendarFileFoldsLongLines(t *testing.T) {
	desc := strings.Repeat("Tagesordnung: Überprüfung der Maßnahmen 🗓️, ", 80)
	m := &Meeting{ID: "abcdefgh", UID: "abcdefgh@hs.test.gxconf", RoomID: "!r:hs.test", Organiser: "@alice:hs.test",
		Title: strings.Repeat("ä", 120), Description: strings.TrimSpace(desc),
		Participants: []string{"@" + strings.Repeat("b", 200) + ":hs.test"},
		Schedule:     Schedule{TimeZone: "Europe/Berlin", Start: "20270315T100000", Duration: time.Hour}}
	ics, err := CalendarFile(m, MethodRequest, time.Time{}, "https://x/", time.Unix(0, 0))
	require.NoError(t, err)
	requireFolded(t, ics)
	cal, err := ical.NewDecoder(bytes.NewReader(ics)).Decode()
	require.NoError(t, err)
	ev := cal.Events()[0]
	title, err := ev.Props.Text(ical.PropSummary)
	require.NoError(t, err)
	require.Equal(t, m.Title, title)
	d, err := ev.Props.Text(ical.PropDescription)
	require.NoError(t, err)
	require.Equal(t, m.Description+"\n\nJoin the call: https://x/", d)
}

// FuzzFold: folded output has short, whole-character lines and unfolds to
// the input.
func FuzzFold(f *testing.F) {
	for _, s := range []string{"", "A:b\r\n", strings.Repeat("é", 100) + "\r\n", "X:" + strings.Repeat("🗓️", 40) + "\r\nY:z\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) || strings.Contains(s, "\r\n ") || strings.HasPrefix(s, " ") {
			return
		}
		// Content lines as the encoder writes them: CRLF-terminated, no bare CR/LF.
		if strings.ContainsAny(strings.ReplaceAll(s, "\r\n", ""), "\r\n") || (s != "" && !strings.HasSuffix(s, "\r\n")) {
			return
		}
		out := fold([]byte(s))
		if s != "" {
			requireFolded(t, out)
		}
		require.Equal(t, s, string(unfold(out)))
	})
}

// offsetAt is the UTC offset (seconds) a reader takes from the file's
// VTIMEZONE of tzid for the instant at: that of the latest observance
// whose onset is not after it.
func offsetAt(t *testing.T, cal *ical.Calendar, tzid string, at time.Time) int {
	t.Helper()
	parseOff := func(v string) int {
		sign := 1
		if v[0] == '-' {
			sign = -1
		}
		h, m := int(v[1]-'0')*10+int(v[2]-'0'), int(v[3]-'0')*10+int(v[4]-'0')
		return sign * (h*3600 + m*60)
	}
	best, off := time.Time{}, 0
	for _, c := range cal.Children {
		if c.Name != ical.CompTimezone || prop(t, c, ical.PropTimezoneID) != tzid {
			continue
		}
		for _, o := range c.Children {
			local, err := time.Parse(localLayout, prop(t, o, ical.PropDateTimeStart))
			require.NoError(t, err)
			onset := local.Add(-time.Duration(parseOff(prop(t, o, ical.PropTimezoneOffsetFrom))) * time.Second)
			if !onset.After(at) && (best.IsZero() || onset.After(best)) {
				best, off = onset, parseOff(prop(t, o, ical.PropTimezoneOffsetTo))
			}
		}
	}
	require.False(t, best.IsZero(), "no observance of %s before %s", tzid, at)
	return off
}

// A feed's VTIMEZONEs are bounded: one per zone for at most maxFeedZones
// zones, each covering only the years of its meetings (a year either
// side), not every year between them. 30 zones with a meeting in 2030 and
// one in 2190 each made 30 blocks of ~325 observances; now 20 blocks of a
// few, and the meetings of the other 10 zones are written in UTC. Every
// start still gets its right offset.
func TestFeedZonesAreBounded(t *testing.T) {
	var names []string
	for _, n := range []string{"Europe/Berlin", "Europe/London", "Europe/Paris", "Europe/Helsinki", "Europe/Lisbon",
		"America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Halifax",
		"America/St_Johns", "America/Santiago", "America/Sao_Paulo", "America/Mexico_City", "Australia/Sydney",
		"Australia/Adelaide", "Australia/Perth", "Pacific/Auckland", "Pacific/Chatham", "Asia/Kolkata",
		"Asia/Tokyo", "Asia/Tehran", "Asia/Jerusalem", "Africa/Cairo", "Africa/Casablanca",
		"Atlantic/Azores", "Europe/Dublin", "Asia/Kathmandu", "America/Havana", "UTC"} {
		names = append(names, n)
	}
	var ms []*Meeting
	for i, n := range names {
		for _, start := range []string{"20300715T100000", "21900115T100000"} {
			id := fmt.Sprintf("m%02d%s", i, start[:4])
			ms = append(ms, &Meeting{ID: id, UID: id + "@x", Organiser: "@alice:hs.test", Title: id, RoomID: "!" + id + ":hs.test",
				Schedule: Schedule{TimeZone: n, Start: start, Duration: time.Hour}})
		}
	}
	ics, err := FeedFile("", ms, func(*Meeting) string { return "" }, time.Unix(0, 0))
	require.NoError(t, err)
	cal, err := ical.NewDecoder(bytes.NewReader(ics)).Decode()
	require.NoError(t, err)
	blocks := observanceStarts(t, ics)
	require.Equal(t, maxFeedZones, len(blocks), "zones")
	total := 0
	for _, obs := range blocks {
		total += len(obs)
	}
	// Six years a zone, at most two switches a year and one in force.
	require.LessOrEqual(t, total, maxFeedZones*6*3, "observances")
	require.Less(t, len(ics), 200_000, "octets")
	inUTC := 0
	for _, ev := range cal.Events() {
		m := ms[slices.IndexFunc(ms, func(m *Meeting) bool { return m.UID == prop(t, ev.Component, ical.PropUID) })]
		want, err := m.Schedule.StartTime()
		require.NoError(t, err)
		p := ev.Props.Get(ical.PropDateTimeStart)
		tzid := p.Params.Get(ical.ParamTimezoneID)
		if tzid == "" {
			inUTC++
			require.Equal(t, want.UTC().Format(localLayout)+"Z", p.Value, m.ID)
			continue
		}
		require.Contains(t, blocks, tzid)
		require.Equal(t, want.Format(localLayout), p.Value)
		_, off := want.Zone()
		require.Equal(t, off, offsetAt(t, cal, tzid, want), m.ID)
	}
	require.Equal(t, 2*(len(names)-maxFeedZones), inUTC)
}

// A feed of 500 meetings with 1000 invitees and a long description each
// was ~50 MB (an ATTENDEE line per invitee, in every event). Now an event
// lists the organiser, the feed's user and 50 others, and the file stays
// within its byte budget by leaving out whole meetings from the end; what
// it holds parses.
func TestFeedIsBounded(t *testing.T) {
	const user = "@bob:hs.test"
	var ms []*Meeting
	for i := range 500 {
		id := fmt.Sprintf("m%07d", i)
		m := &Meeting{ID: id, UID: id + "@x", Organiser: "@mallory:evil.test", Title: id, RoomID: "!" + id + ":hs.test",
			Description: strings.Repeat("x", 4000),
			Schedule:    Schedule{TimeZone: "Europe/Berlin", Start: fmt.Sprintf("2027%02d%02dT100000", i%12+1, i%28+1), Duration: time.Hour}}
		for j := range 1000 {
			m.Participants = append(m.Participants, fmt.Sprintf("@fake%04d:evil.test", j))
		}
		m.Participants[700] = user
		ms = append(ms, m)
	}
	f, err := renderFeed(user, ms, func(*Meeting) string { return "https://x/" }, time.Unix(0, 0), defaultFeedLimits)
	require.NoError(t, err)
	require.LessOrEqual(t, len(f.body), defaultFeedLimits.bytes, "octets")
	require.Positive(t, f.cut, "cut")
	require.Equal(t, len(ms), f.listed+f.cut)
	requireFolded(t, f.body)
	cal, err := ical.NewDecoder(bytes.NewReader(f.body)).Decode()
	require.NoError(t, err)
	events := cal.Events()
	require.Len(t, events, f.listed)
	for i, ev := range events {
		require.Equal(t, ms[i].UID, prop(t, ev.Component, ical.PropUID), "the first meetings, in order")
		att := ev.Props.Values(ical.PropAttendee)
		require.Len(t, att, 51)
		require.Equal(t, matrixURI(user), att[0].Value)
		require.Equal(t, matrixURI("@mallory:evil.test"), prop(t, ev.Component, ical.PropOrganizer))
		require.Equal(t, "949 more invitees are not listed here", prop(t, ev.Component, ical.PropComment))
	}

	// A lower budget cuts earlier, and never inside a meeting.
	f, err = renderFeed(user, ms[:3], func(*Meeting) string { return "" }, time.Unix(0, 0), feedLimits{bytes: 12000, attendees: 2})
	require.NoError(t, err)
	require.LessOrEqual(t, len(f.body), 12000)
	require.Equal(t, 3, f.listed+f.cut)
	require.Positive(t, f.cut)
	cal, err = ical.NewDecoder(bytes.NewReader(f.body)).Decode()
	require.NoError(t, err)
	require.Len(t, cal.Events(), f.listed)
}

// An update that moves a meeting to another year sends a file whose
// VTIMEZONE covers the new date. The updated meeting was a copy of the
// stored one with its stored span, so the file covered 2025–2027 only,
// and a reader gave the July 2030 start the offset of the last observance
// there (winter time, an hour off).
func TestUpdateFileCoversTheNewDate(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	res, err := env.svc.Create(ctx, alice, &Spec{Title: ptr("Lage"), Start: ptr("2026-03-23 10:00"), Invite: []string{bob}})
	require.NoError(t, err)
	_, err = env.svc.Update(ctx, alice, res.Meeting.ID, &Spec{Start: ptr("2030-07-15 10:00")})
	require.NoError(t, err)
	files := env.mx.files(bob)
	require.Len(t, files, 2)
	cal, _ := decodeICS(t, files[1])
	require.Equal(t, 2*3600, offsetAt(t, cal, "Europe/Berlin", utc("2030-07-15 08:00")))
}
