package meetings

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func utc(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		panic(err)
	}
	return t
}

func specOf(kv map[string]string) *Spec {
	var s Spec
	for k, v := range kv {
		v := v
		switch k {
		case "title":
			s.Title = &v
		case "start":
			s.Start = &v
		case "tz":
			s.TimeZone = &v
		case "rrule":
			s.RRule = &v
		case "duration":
			s.Duration = &v
		case "end":
			s.End = &v
		}
	}
	return &s
}

func applySpec(t *testing.T, s *Spec) (*Meeting, []Occurrence, bool, error) {
	t.Helper()
	cfg := DefaultConfig()
	m := &Meeting{Organiser: "@alice:hs.test"}
	occ, capped, err := s.apply(m, "Europe/Berlin", &cfg, "hs.test")
	return m, occ, capped, err
}

// A weekly series at 10:00 Berlin time stays at 10:00 local across both DST
// switches (last Sunday of March and of October), so its UTC time moves.
func TestScheduleAcrossDST(t *testing.T) {
	m, occ, _, err := applySpec(t, specOf(map[string]string{"title": "Lage", "start": "2026-03-23 10:00", "rrule": "FREQ=WEEKLY;COUNT=3"}))
	require.NoError(t, err)
	require.Equal(t, "Europe/Berlin", m.Schedule.TimeZone)
	require.Equal(t, []time.Time{utc("2026-03-23 09:00"), utc("2026-03-30 08:00"), utc("2026-04-06 08:00")},
		[]time.Time{occ[0].Start.UTC(), occ[1].Start.UTC(), occ[2].Start.UTC()})

	_, occ, _, err = applySpec(t, specOf(map[string]string{"title": "Lage", "start": "2026-10-19 10:00", "rrule": "FREQ=WEEKLY;COUNT=2"}))
	require.NoError(t, err)
	require.Equal(t, utc("2026-10-19 08:00"), occ[0].Start.UTC())
	require.Equal(t, utc("2026-10-26 09:00"), occ[1].Start.UTC())

	// An excluded date is left out; the rest keep their local time.
	s := specOf(map[string]string{"title": "Lage", "start": "2026-03-23 10:00", "rrule": "FREQ=WEEKLY;COUNT=3"})
	s.Except = []string{"2026-03-30"}
	m, occ, _, err = applySpec(t, s)
	require.NoError(t, err)
	require.Equal(t, []string{"20260330T100000"}, m.Schedule.ExDates)
	require.Len(t, occ, 2)
	require.Equal(t, utc("2026-04-06 08:00"), occ[1].Start.UTC())
}

func TestScheduleRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec *Spec
		want string
	}{
		{"impossible date", specOf(map[string]string{"title": "x", "start": "2026-02-30 10:00"}), `start: "2026-02-30" is not a date: February 2026 has 28 days`},
		{"no month 13", specOf(map[string]string{"title": "x", "start": "2026-13-01 10:00"}), "there is no month 13"},
		{"garbage start", specOf(map[string]string{"title": "x", "start": "tomorrow"}), "start: \"tomorrow\" is not a date and time"},
		{"skipped hour", specOf(map[string]string{"title": "x", "start": "2026-03-29 02:30"}), "2026-03-29 02:30 does not exist in Europe/Berlin"},
		{"repeated hour", specOf(map[string]string{"title": "x", "start": "2026-10-25 02:30"}), "happens twice in Europe/Berlin"},
		{"unknown zone", specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "tz": "Mars/Olympus_Mons"}), `timezone: unknown time zone "Mars/Olympus_Mons"`},
		{"zone path", specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "tz": "../../etc/passwd"}), "timezone:"},
		{"secondly", specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "rrule": "FREQ=SECONDLY"}), "rrule: FREQ=SECONDLY repeats more than daily"},
		{"byhour explosion", specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "rrule": "FREQ=DAILY;BYHOUR=1,2,3"}), "BYHOUR"},
		{"huge count", specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "rrule": "FREQ=DAILY;COUNT=1000000"}), "COUNT=1000000 is more than the 1000"},
		{"far until", specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "rrule": "FREQ=DAILY;UNTIL=21000101T000000Z"}), "more than 1000 occurrences"},
		{"count past the years", specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "rrule": "FREQ=YEARLY;INTERVAL=10;COUNT=800"}), "rrule: the series runs past the year 2199"},
		{"count beyond the library", specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "rrule": "FREQ=YEARLY;INTERVAL=1000;COUNT=8"}), "rrule: the series runs past the year 2199"},
		{"until past the years", specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "rrule": "FREQ=YEARLY;INTERVAL=300;UNTIL=99991231T000000Z"}), "rrule: the series runs past the year 2199"},
		{"not a rule", specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "rrule": "EVERY TUESDAY"}), "rrule: \"EVERY TUESDAY\" is not an RFC 5545 RRULE"},
		{"end before start", specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "end": "09:00"}), "end: 2026-03-23 09:00 is not after the start"},
		{"too long", specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "duration": "48h"}), "duration: 48h0m0s is longer than"},
		{"control character in title", specOf(map[string]string{"title": "Lage\x00\x1b[2J", "start": "2026-03-23 10:00"}), "title: must be one line of at most 255 characters, without control characters"},
		{"line break in title", specOf(map[string]string{"title": "Lage\r\nATTENDEE:mailto:eve@evil.example", "start": "2026-03-23 10:00"}), "title: must be one line"},
		{"no title", specOf(map[string]string{"start": "2026-03-23 10:00"}), "title: a meeting needs a title"},
		{"no start", specOf(map[string]string{"title": "x"}), "start: a meeting needs a start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := applySpec(t, tc.spec)
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrInvalid), err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("control characters in description and invitees", func(t *testing.T) {
		s := specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00"})
		s.Description = ptr("Agenda:\n\t1. Lage\x0b\x00")
		_, _, _, err := applySpec(t, s)
		require.ErrorContains(t, err, "description: contains control characters")
		s.Description = ptr("Agenda:\r\n\t1. Lage")
		m, _, _, err := applySpec(t, s)
		require.NoError(t, err, "line ends and tabs are text")
		require.Equal(t, "Agenda:\n\t1. Lage", m.Description)
		for _, u := range []string{"@a\x00b:hs.test", "@a\x0bb:hs.test", "@a\x7fb:hs.test", "@a\u0085b:hs.test"} {
			s := specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00"})
			s.Invite = []string{u}
			_, _, _, err := applySpec(t, s)
			require.ErrorContains(t, err, "is not a Matrix user ID", "%q", u)
		}
	})
	t.Run("except that is no occurrence", func(t *testing.T) {
		s := specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "rrule": "FREQ=WEEKLY;COUNT=3"})
		s.Except = []string{"2026-03-31"}
		_, _, _, err := applySpec(t, s)
		require.ErrorContains(t, err, "except: the series has no occurrence on Tue 2026-03-31")
	})
}

// A rule without end is capped (an UNTIL max_series_span after the start),
// not expanded forever.
func TestOpenEndedRuleIsCapped(t *testing.T) {
	m, occ, capped, err := applySpec(t, specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "rrule": "FREQ=WEEKLY"}))
	require.NoError(t, err)
	require.True(t, capped)
	require.Contains(t, m.Schedule.RRule, "UNTIL=2028")
	require.Len(t, occ, 105)
	_, _, capped, err = applySpec(t, specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00", "rrule": "FREQ=DAILY"}))
	require.NoError(t, err, "two years of daily meetings stay under max_occurrences")
	require.True(t, capped)
}

func TestRepeatWords(t *testing.T) {
	s := specOf(map[string]string{"title": "x", "start": "2026-03-23 10:00"})
	s.Repeat, s.Until = ptr("weekdays"), ptr("2026-03-27")
	m, occ, _, err := applySpec(t, s)
	require.NoError(t, err)
	require.Len(t, occ, 5)
	require.True(t, strings.HasPrefix(m.Schedule.RRule, "FREQ=WEEKLY;UNTIL=20260327T225959Z;BYDAY=MO,TU,WE,TH,FR"), m.Schedule.RRule)
	require.Contains(t, m.Schedule.Describe(nil), "Mon 23 Mar 2026, 10:00–11:00 (Europe/Berlin); repeats every week on MO,TU,WE,TH,FR, until 27 Mar 2026")
	s.Count = ptr(3)
	_, _, _, err = applySpec(t, s)
	require.ErrorContains(t, err, "until: give either count or until")
}
