package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/meetings"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// icalResult is what test/icaljs/expand.mjs (Mozilla's ical.js) reads
// from an .ics file.
type icalResult struct {
	Method     string   `json:"method"`
	VTimezones []string `json:"vtimezones"`
	TZIDs      []string `json:"tzids"`
	// Overrides counts the moved occurrences ical.js related to their series.
	Overrides int `json:"overrides"`
	Events    []struct {
		UID          string `json:"uid"`
		Sequence     int    `json:"sequence"`
		Summary      string `json:"summary"`
		Status       string `json:"status"`
		Location     string `json:"location"`
		URL          string `json:"url"`
		StartZone    string `json:"start_zone"`
		RecurrenceID string `json:"recurrence_id"`
		Occurrences  []struct {
			Start string `json:"start"`
			End   string `json:"end"`
			Local string `json:"local"`
		} `json:"occurrences"`
	} `json:"events"`
}

// readICS has ical.js, an implementation independent of gxconf's Go code,
// read an .ics file and expand its occurrences.
func readICS(t *testing.T, ics []byte) icalResult {
	t.Helper()
	root, err := harness.RepoRoot()
	require.NoError(t, err)
	dir := filepath.Join(root, "test", "icaljs")
	_, err = os.Stat(filepath.Join(dir, "node_modules", "ical.js"))
	require.NoError(t, err, "test/icaljs is not installed: run scripts/deps.sh")
	file := filepath.Join(t.TempDir(), "meeting.ics")
	require.NoError(t, os.WriteFile(file, ics, 0o600))
	out, err := exec.Command("node", filepath.Join(dir, "expand.mjs"), file).Output()
	var stderr string
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = string(ee.Stderr)
	}
	require.NoError(t, err, "ical.js failed on:\n%s\n%s", ics, stderr)
	var res icalResult
	require.NoError(t, json.Unmarshal(out, &res), string(out))
	return res
}

// starts are the UTC starts ical.js found for the first event.
func (r icalResult) starts() []string {
	var out []string
	for _, o := range r.Events[0].Occurrences {
		out = append(out, o.Start)
	}
	return out
}

// expected lists Go's own expansion as ical.js prints it.
func expected(t *testing.T, s meetings.Schedule) []string {
	t.Helper()
	occ, err := s.Occurrences(10000)
	require.NoError(t, err)
	var out []string
	for _, o := range occ {
		out = append(out, o.Start.UTC().Format("2006-01-02T15:04:05.000Z"))
	}
	return out
}

// TestMeetingICSReadByICalJS: the calendar files gxconf writes are read
// back by ical.js to the same occurrences, using only the files' own
// VTIMEZONEs — across both DST switches of Europe/Berlin, with an excluded
// date, and in a zone with other rules.
func TestMeetingICSReadByICalJS(t *testing.T) {
	now := time.Date(2027, 1, 10, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		sched meetings.Schedule
		want  []string // spot checks, UTC
	}{
		{
			name: "weekly across the last Sunday of March, with an EXDATE",
			sched: meetings.Schedule{TimeZone: "Europe/Berlin", Start: "20270315T100000", Duration: time.Hour,
				RRule: "FREQ=WEEKLY;COUNT=6", ExDates: []string{"20270405T100000"}},
			want: []string{"2027-03-15T09:00:00.000Z", "2027-03-22T09:00:00.000Z", "2027-03-29T08:00:00.000Z", "2027-04-12T08:00:00.000Z"},
		},
		{
			name: "weekly across the last Sunday of October",
			sched: meetings.Schedule{TimeZone: "Europe/Berlin", Start: "20271018T100000", Duration: 90 * time.Minute,
				RRule: "FREQ=WEEKLY;UNTIL=20271115T235959Z"},
			want: []string{"2027-10-18T08:00:00.000Z", "2027-10-25T08:00:00.000Z", "2027-11-01T09:00:00.000Z", "2027-11-15T09:00:00.000Z"},
		},
		{
			name: "a year of weekdays, both switches",
			sched: meetings.Schedule{TimeZone: "Europe/Berlin", Start: "20270104T083000", Duration: 15 * time.Minute,
				RRule: "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;UNTIL=20271231T225959Z", ExDates: []string{"20270329T083000", "20271101T083000"}},
		},
		{
			name: "New York, whose switches fall on other dates",
			sched: meetings.Schedule{TimeZone: "America/New_York", Start: "20270301T090000", Duration: time.Hour,
				RRule: "FREQ=WEEKLY;COUNT=4"},
			want: []string{"2027-03-01T14:00:00.000Z", "2027-03-08T14:00:00.000Z", "2027-03-15T13:00:00.000Z"},
		},
		{
			name:  "a single meeting",
			sched: meetings.Schedule{TimeZone: "Asia/Kolkata", Start: "20270601T100000", Duration: time.Hour},
			want:  []string{"2027-06-01T04:30:00.000Z"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &meetings.Meeting{ID: "abcdefgh", RoomID: "!r:localhost", Organiser: "@alice:localhost", Title: "Lage",
				Schedule: tc.sched, Participants: []string{"@bob:localhost"}, UID: "abcdefgh@localhost.gxconf", Sequence: 2, UpdatedAt: now}
			ics, err := meetings.CalendarFile(m, meetings.MethodRequest, time.Time{}, "https://matrix.to/#/!r:localhost", now)
			require.NoError(t, err)
			got := readICS(t, ics)
			require.Equal(t, "REQUEST", got.Method)
			require.Equal(t, got.TZIDs, got.VTimezones, "a VTIMEZONE for every TZID, and no other")
			require.Len(t, got.Events, 1)
			ev := got.Events[0]
			require.Equal(t, tc.sched.TimeZone, ev.StartZone, "ical.js resolved the TZID to the file's VTIMEZONE")
			require.Equal(t, "abcdefgh@localhost.gxconf", ev.UID)
			require.Equal(t, 2, ev.Sequence)
			require.Equal(t, "https://matrix.to/#/!r:localhost", ev.Location)
			require.Equal(t, "https://matrix.to/#/!r:localhost", ev.URL)
			want := expected(t, tc.sched)
			require.Equal(t, want, got.starts(), "ical.js and gxconf agree on every occurrence")
			for _, w := range tc.want {
				require.Contains(t, got.starts(), w)
			}
			for _, ex := range tc.sched.ExDates {
				loc, _ := time.LoadLocation(tc.sched.TimeZone)
				exT, _ := time.ParseInLocation("20060102T150405", ex, loc)
				require.NotContains(t, got.starts(), exT.UTC().Format("2006-01-02T15:04:05.000Z"))
			}
			t.Logf("%d occurrences agree", len(want))
		})
	}

	t.Run("one occurrence moved (RECURRENCE-ID)", func(t *testing.T) {
		sched := meetings.Schedule{TimeZone: "Europe/Berlin", Start: "20270315T100000", Duration: time.Hour, RRule: "FREQ=WEEKLY;COUNT=4",
			Overrides: []meetings.Override{{RecurrenceID: "20270329T100000", Start: "20270330T150000", Duration: 30 * time.Minute}}}
		m := &meetings.Meeting{ID: "abcdefgh", RoomID: "!r:localhost", Organiser: "@alice:localhost", Title: "Lage",
			Schedule: sched, UID: "u@x", Sequence: 1, UpdatedAt: now}
		ics, err := meetings.CalendarFile(m, meetings.MethodRequest, time.Time{}, "https://x/", now)
		require.NoError(t, err)
		got := readICS(t, ics)
		require.Equal(t, 1, got.Overrides)
		require.Len(t, got.Events, 1)
		require.Equal(t, []string{"2027-03-15T09:00:00.000Z", "2027-03-22T09:00:00.000Z", "2027-03-30T13:00:00.000Z", "2027-04-05T08:00:00.000Z"}, got.starts())
		require.Equal(t, "2027-03-30T13:30:00.000Z", got.Events[0].Occurrences[2].End)
		require.Equal(t, expected(t, sched), got.starts())
	})

	t.Run("cancelling one occurrence", func(t *testing.T) {
		sched := meetings.Schedule{TimeZone: "Europe/Berlin", Start: "20270315T100000", Duration: time.Hour, RRule: "FREQ=WEEKLY;COUNT=6"}
		m := &meetings.Meeting{ID: "abcdefgh", RoomID: "!r:localhost", Organiser: "@alice:localhost", Title: "Lage",
			Schedule: sched, UID: "u@x", Sequence: 3, UpdatedAt: now}
		berlin, _ := time.LoadLocation("Europe/Berlin")
		ics, err := meetings.CalendarFile(m, meetings.MethodCancel, time.Date(2027, 3, 29, 10, 0, 0, 0, berlin), "https://x/", now)
		require.NoError(t, err)
		got := readICS(t, ics)
		require.Equal(t, "CANCEL", got.Method)
		require.Equal(t, "2027-03-29T08:00:00.000Z", got.Events[0].RecurrenceID)
		require.Equal(t, "CANCELLED", got.Events[0].Status)
		require.Equal(t, 3, got.Events[0].Sequence)
	})
}
