package meetings

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/emersion/go-ical"
)

// zoneSet collects the VTIMEZONEs (RFC 5545 §3.6.5) of one calendar: for
// each zone, the years its meetings span, a year either side (readers
// look at dates before the first occurrence: alarms, the previous week in
// a view), and one STANDARD or DAYLIGHT observance per transition in those
// years, found with time.Time.ZoneBounds. Only the years of the meetings
// listed are covered, not every year between them: each covered year has
// the observance in force at its start and its own transitions, which is
// all a reader needs for a date in it.
type zoneSet struct {
	// max caps the distinct zones (0: no cap); a meeting in a further zone
	// is written in UTC (see FeedFile).
	max   int
	zones map[string]*zoneBlock
}

type zoneBlock struct {
	loc   *time.Location
	years map[int]bool
	// obs are the observances by onset (Unix seconds): two covered years
	// may share one, the one in force at the start of the later.
	obs map[int64]observed
}

type observed struct {
	c    *ical.Component
	size int // encoded octets
}

func newZoneSet(max int) *zoneSet { return &zoneSet{max: max, zones: map[string]*zoneBlock{}} }

// zoneAdd is what covering a meeting adds to a zoneSet.
type zoneAdd struct {
	name  string
	loc   *time.Location
	years []int
	obs   map[int64]observed
	// size is what it adds to the encoded calendar, in octets.
	size int
}

// plan is what covering [from, to] in loc would add; false when loc is a
// new zone and the set is full.
func (z *zoneSet) plan(loc *time.Location, from, to time.Time) (zoneAdd, bool, error) {
	name := loc.String()
	b := z.zones[name]
	a := zoneAdd{name: name, loc: loc, obs: map[int64]observed{}}
	if b == nil {
		if z.max > 0 && len(z.zones) >= z.max {
			return a, false, nil
		}
		// Zone names need no escaping (loadZone).
		a.size = len("BEGIN:VTIMEZONE\r\nEND:VTIMEZONE\r\n") + len(fold([]byte(ical.PropTimezoneID+":"+name+"\r\n")))
	}
	first := max(from.In(loc).Year()-1, minYear-1)
	last := min(to.In(loc).Year()+1, maxYear+1)
	for y := first; y <= last; y++ {
		if b != nil && b.years[y] {
			continue
		}
		a.years = append(a.years, y)
		obs, err := yearObservances(loc, y)
		if err != nil {
			return a, false, err
		}
		for onset, o := range obs {
			if _, ok := a.obs[onset]; ok {
				continue
			}
			if b != nil {
				if _, ok := b.obs[onset]; ok {
					continue
				}
			}
			a.obs[onset] = o
			a.size += o.size
		}
	}
	return a, true, nil
}

// add records a plan.
func (z *zoneSet) add(a zoneAdd) {
	b := z.zones[a.name]
	if b == nil {
		b = &zoneBlock{loc: a.loc, years: map[int]bool{}, obs: map[int64]observed{}}
		z.zones[a.name] = b
	}
	for _, y := range a.years {
		b.years[y] = true
	}
	for k, o := range a.obs {
		b.obs[k] = o
	}
}

// cover adds the zone of [from, to] unless the set is full of others.
func (z *zoneSet) cover(loc *time.Location, from, to time.Time) (bool, error) {
	a, ok, err := z.plan(loc, from, to)
	if ok {
		z.add(a)
	}
	return ok, err
}

// components are the VTIMEZONEs, by TZID, each with its observances in
// onset order.
func (z *zoneSet) components() []*ical.Component {
	var out []*ical.Component
	for _, name := range sortedKeys(z.zones) {
		b := z.zones[name]
		tz := &ical.Component{Name: ical.CompTimezone, Props: tzidProps(name)}
		keys := make([]int64, 0, len(b.obs))
		for k := range b.obs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			tz.Children = append(tz.Children, b.obs[k].c)
		}
		out = append(out, tz)
	}
	return out
}

func tzidProps(name string) ical.Props {
	p := ical.Props{}
	p.SetText(ical.PropTimezoneID, name)
	return p
}

// yearObservances are the observances a reader needs for dates in year y
// of loc: the one in force at its start and one per transition in it.
func yearObservances(loc *time.Location, y int) (map[int64]observed, error) {
	out := map[int64]observed{}
	add := func(at time.Time, fromOff int) error {
		name, off := at.Zone()
		c := observance(at, fromOff, off, name, at.IsDST())
		b, err := encodeComponent(c)
		out[at.Unix()] = observed{c: c, size: len(b)}
		return err
	}
	t := time.Date(y, 1, 1, 0, 0, 0, 0, loc)
	end := time.Date(y+1, 1, 1, 0, 0, 0, 0, loc)
	// Past the zone's listed transitions Go derives them from its rule
	// and also reports the turn of each UTC year as a bound, where
	// nothing changes (and, there, itself as the next): those are
	// stepped over. The steps are bounded for safety.
	start, _ := t.ZoneBounds()
	for i := 0; i < 8 && !start.IsZero() && sameZone(start.Add(-time.Second), start); i++ {
		start, _ = start.Add(-time.Second).ZoneBounds()
	}
	if start.IsZero() || sameZone(start.Add(-time.Second), start) {
		// In force since before the zone's first transition (UTC, fixed
		// zones): the same onset for every year.
		start = time.Unix(0, 0).In(loc)
	}
	_, before := start.Add(-time.Second).Zone()
	if err := add(start, before); err != nil {
		return nil, err
	}
	for cur, i := t, 0; i < 64; i++ {
		_, next := cur.ZoneBounds()
		if !next.IsZero() && !next.After(cur) {
			_, next = cur.Add(time.Second).ZoneBounds()
		}
		if next.IsZero() || !next.After(cur) || !next.Before(end) {
			break
		}
		if !sameZone(next.Add(-time.Second), next) {
			_, before := next.Add(-time.Second).Zone()
			if err := add(next, before); err != nil {
				return nil, err
			}
		}
		cur = next
	}
	return out, nil
}

// sameZone: a and b have the same abbreviation, offset and DST flag.
func sameZone(a, b time.Time) bool {
	an, ao := a.Zone()
	bn, bo := b.Zone()
	return an == bn && ao == bo && a.IsDST() == b.IsDST()
}

// encodeComponent is the folded encoding of one component, as it appears
// inside a calendar.
func encodeComponent(c *ical.Component) ([]byte, error) {
	var buf bytes.Buffer
	if err := ical.NewEncoder(&buf).Encode(&ical.Calendar{Component: c}); err != nil {
		return nil, fmt.Errorf("failed to encode calendar: %w", err)
	}
	return fold(buf.Bytes()), nil
}
