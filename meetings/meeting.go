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

// lastEnd is when the last occurrence ends (for reminders and the reaper).
func (m *Meeting) lastEnd(max int) time.Time {
	occ, err := m.Schedule.Occurrences(max)
	if err != nil || len(occ) == 0 {
		return time.Time{}
	}
	return occ[len(occ)-1].End
}
