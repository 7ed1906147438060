package meetings

import (
	"bytes"
	"testing"
	"time"

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
		ics, err := FeedFile(order, link, time.Unix(0, 0))
		require.NoError(t, err)
		zones := observanceStarts(t, ics)
		require.Len(t, zones, 1)
		// Summer time begins on the last Sunday of March, at 02:00 local.
		require.Contains(t, zones["Europe/Berlin"], "20270328T020000")
		require.Contains(t, zones["Europe/Berlin"], "20300331T020000")
	}
}
