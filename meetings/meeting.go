package meetings

import (
	"time"

	"github.com/gxfs-conf/gxconf/credentials"
)

// Meeting is one scheduled call or series and its room.
type Meeting struct {
	// ID is the short handle organisers type ("k7q2m9xa").
	ID     string `json:"id"`
	RoomID string `json:"room_id"`
	// Organiser is the Matrix user who scheduled it; only they may change it.
	Organiser   string   `json:"organiser"`
	Title       string   `json:"title"`
	Description string   `json:"description,omitempty"`
	Schedule    Schedule `json:"schedule"`
	// Participants are the invitees (the organiser is not listed).
	Participants []string                 `json:"participants"`
	Policy       credentials.AccessPolicy `json:"policy"`
	// UID is the iCalendar UID, stable for the meeting's life.
	UID string `json:"uid"`
	// Sequence is the iCalendar SEQUENCE: it rises only when the schedule,
	// title or description change, or when occurrences are cancelled.
	Sequence  int  `json:"sequence"`
	Cancelled bool `json:"cancelled"`
	// BookingRef is what the BookingChecker returned ("" without bookings).
	BookingRef string    `json:"booking_ref,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`

	// first and last are the stored span (see span), zero when the meeting
	// was not read from the store.
	first, last time.Time
}

// calendarFingerprint is what makes a change "real" for SEQUENCE.
func (m *Meeting) calendarFingerprint() string {
	s := m.Schedule
	fp := m.Title + "\x00" + m.Description + "\x00" + s.TimeZone + "\x00" + s.Start + "\x00" + s.Duration.String() + "\x00" + s.RRule
	for _, e := range s.ExDates {
		fp += "\x00" + e
	}
	for _, o := range s.Overrides {
		fp += "\x00" + o.RecurrenceID + ">" + o.Start + "/" + o.Duration.String()
	}
	return fp
}

// maxStoredOccurrences is the most occurrences a stored series can have
// (the upper bound of meetings.max_occurrences).
const maxStoredOccurrences = 10000

// neverEnds is the end of a meeting whose last occurrence is unknown: a
// schedule that cannot be expanded in full is kept (and counts as active)
// rather than taken for over and purged.
var neverEnds = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

// span is when the first occurrence starts and when the last one ends (the
// latest end: a moved occurrence may last longer). The store keeps both,
// so feeds, lists, the organiser cap and the purge need no expansion.
func (m *Meeting) span() (first, last time.Time) {
	first, _ = m.Schedule.StartTime()
	occ, err := m.Schedule.Occurrences(maxStoredOccurrences)
	if err != nil || len(occ) == 0 || len(occ) > maxStoredOccurrences {
		return first, neverEnds
	}
	first, last = occ[0].Start, occ[0].End
	for _, o := range occ {
		if o.End.After(last) {
			last = o.End
		}
	}
	return first, last
}
