package meetings

import (
	"context"
	"fmt"
	"html"
	"strings"
	"time"

	"github.com/gxfs-conf/gxconf/credentials"
)

// MetadataEventType is the schedule's state event: the shape of Nordeck's
// matrix-meetings (openDesk), so its widget can show gxconf's meetings.
const MetadataEventType = "net.nordeck.meetings.metadata"

// Power levels of a meeting room: everyone may take part in the call
// (MatrixRTC membership state at 0), only the organiser and the bot change
// the room, its schedule and its policy, or invite.
func (s *Service) powerLevels(m *Meeting) map[string]any {
	return map[string]any{
		"users":          map[string]any{s.botID: 100, m.Organiser: 100},
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"invite":         50,
		"kick":           50,
		"ban":            50,
		"redact":         50,
		"events": map[string]any{
			"m.room.name": 50, "m.room.topic": 50, "m.room.avatar": 50,
			"m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.encryption": 100,
			"m.room.tombstone": 100, "m.room.server_acl": 100, "m.room.join_rules": 100,
			MetadataEventType:                100,
			credentials.AccessEventType:      100,
			"org.matrix.msc3401.call.member": 0,
			"org.matrix.msc4143.rtc.slot":    100,
			"org.matrix.msc3401.call":        100,
		},
	}
}

func (s *Service) roomRequest(m *Meeting) RoomRequest {
	return RoomRequest{
		Name:        m.Title,
		Topic:       s.topic(m),
		PowerLevels: s.powerLevels(m),
		InitialState: []StateEvent{
			{Type: "m.room.history_visibility", Content: map[string]any{"history_visibility": "shared"}},
			{Type: "m.room.guest_access", Content: map[string]any{"guest_access": "forbidden"}},
			{Type: credentials.AccessEventType, Content: m.Policy},
			{Type: MetadataEventType, Content: s.metadata(m)},
		},
	}
}

func (s *Service) topic(m *Meeting) string {
	t := m.Schedule.Describe(nil)
	if m.Description != "" {
		t = m.Description + " — " + t
	}
	return t
}

// dateTimeValue is {tzid, value} of the metadata event.
type dateTimeValue struct {
	TZID  string `json:"tzid"`
	Value string `json:"value"`
}

// metadata is the net.nordeck.meetings.metadata content: creator, one
// calendar entry (RFC 5545 subset: floating local times with TZID, RRULE,
// EXDATEs), force_deletion_at (last end + 1 h, absent for open series, as
// Nordeck's) and gxconf's own fields under external_data.
func (s *Service) metadata(m *Meeting) map[string]any {
	start, _ := m.Schedule.StartTime()
	tz := m.Schedule.TimeZone
	entry := map[string]any{
		"uid":     m.UID,
		"dtstart": dateTimeValue{tz, m.Schedule.Start},
		"dtend":   dateTimeValue{tz, start.Add(m.Schedule.Duration).Format(localLayout)},
	}
	if m.Schedule.RRule != "" {
		entry["rrule"] = m.Schedule.RRule
	}
	if len(m.Schedule.ExDates) > 0 {
		ex := make([]dateTimeValue, len(m.Schedule.ExDates))
		for i, e := range m.Schedule.ExDates {
			ex[i] = dateTimeValue{tz, e}
		}
		entry["exdate"] = ex
	}
	ext := map[string]any{
		"de.gxconf.meeting": map[string]any{
			"id": m.ID, "sequence": m.Sequence, "cancelled": m.Cancelled, "level": m.Policy.Level,
		},
	}
	if m.BookingRef != "" {
		ext["de.gxconf.booking"] = m.BookingRef
	}
	calendar := []any{entry}
	for _, ov := range m.Schedule.Overrides {
		st, err := time.ParseInLocation(localLayout, ov.Start, start.Location())
		if err != nil {
			continue
		}
		calendar = append(calendar, map[string]any{
			"uid":          m.UID,
			"dtstart":      dateTimeValue{tz, ov.Start},
			"dtend":        dateTimeValue{tz, st.Add(ov.Duration).Format(localLayout)},
			"recurrenceId": dateTimeValue{tz, ov.RecurrenceID},
		})
	}
	out := map[string]any{"creator": m.Organiser, "calendar": calendar, "external_data": ext}
	if _, end := m.span(); !end.Equal(neverEnds) {
		out["force_deletion_at"] = end.Add(time.Hour).UnixMilli()
	}
	return out
}

// inviteReason is what Element shows on the invite: when, how often, who.
func (s *Service) inviteReason(m *Meeting) string {
	return fmt.Sprintf("%s%s — %s · invited by %s", reasonPrefix(m), m.Title, m.Schedule.Describe(nil), m.Organiser)
}

// organiserReason is inviteReason for the organiser's own invite.
func (s *Service) organiserReason(m *Meeting) string {
	return fmt.Sprintf("%s%s — %s · your meeting", reasonPrefix(m), m.Title, m.Schedule.Describe(nil))
}

func reasonPrefix(m *Meeting) string {
	if m.Cancelled {
		return "❌ Cancelled: "
	}
	return "📅 "
}

// sendFiles uploads the calendar file once and posts it in each user's
// direct chat with the bot; it returns what could not be delivered.
func (s *Service) sendFiles(ctx context.Context, m *Meeting, users []string, method string, occurrence time.Time) []string {
	if len(users) == 0 {
		return nil
	}
	data, err := CalendarFile(m, method, occurrence, s.CallLink(m), s.clock.Now())
	if err != nil {
		s.log.Error().Err(err).Str("meeting_id", m.ID).Msg("Failed to build a calendar file")
		return []string{"could not build the calendar file: " + internalFailure}
	}
	name := fmt.Sprintf("meeting-%s.ics", m.ID)
	mxc, err := s.mx.Upload(ctx, data, "text/calendar; charset=utf-8; method="+method, name)
	if err != nil {
		// As every homeserver failure in a warning: its Matrix error,
		// never the transport error's addresses (the log has it).
		return []string{s.warning(err, "could not upload the calendar file")}
	}
	var caption string
	switch {
	case method == MethodCancel && !occurrence.IsZero():
		caption = fmt.Sprintf("🗓️ Cancelled: %s on %s. Calendar file attached.", m.Title, occurrence.Format("Mon 2 Jan 2006, 15:04 MST"))
	case method == MethodCancel:
		caption = fmt.Sprintf("🗓️ Cancelled: %s. Calendar file attached.", m.Title)
	case m.Sequence > 0:
		caption = fmt.Sprintf("📅 Updated invitation from %s: %s — %s. Join: %s", m.Organiser, m.Title, m.Schedule.Describe(nil), s.CallLink(m))
	default:
		caption = fmt.Sprintf("📅 Invitation from %s: %s — %s. Join: %s", m.Organiser, m.Title, m.Schedule.Describe(nil), s.CallLink(m))
	}
	content := map[string]any{
		"msgtype":    "m.file",
		"body":       caption,
		"filename":   name,
		"url":        mxc,
		"info":       map[string]any{"mimetype": "text/calendar", "size": len(data)},
		"m.mentions": map[string]any{},
		"de.gxconf.meeting": map[string]any{
			"id": m.ID, "uid": m.UID, "method": method, "sequence": m.Sequence,
		},
	}
	var failed []string
	for _, u := range users {
		room, err := s.mx.DirectRoom(ctx, u)
		if err == nil {
			err = s.mx.SendMessage(ctx, room, content)
		}
		if err != nil {
			failed = append(failed, s.warning(err, "could not send the calendar file to %s", u))
			s.metrics.files.WithLabelValues(method, "error").Inc()
			continue
		}
		s.metrics.files.WithLabelValues(method, "ok").Inc()
	}
	return failed
}

// noticeContent is an m.notice, with HTML when given. It mentions nobody
// (an empty m.mentions): a meeting title with "@room" in it must not notify
// the whole room with the bot's power.
func noticeContent(text, htmlText string) map[string]any {
	c := map[string]any{"msgtype": "m.notice", "body": text, "m.mentions": map[string]any{}}
	if htmlText != "" {
		c["format"] = "org.matrix.custom.html"
		c["formatted_body"] = htmlText
	}
	return c
}

// pill is an HTML mention of a user.
func pill(userID string) string {
	return fmt.Sprintf(`<a href="https://matrix.to/#/%s">%s</a>`, html.EscapeString(userID), html.EscapeString(userID))
}

func joinPills(users []string) string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = pill(u)
	}
	return strings.Join(out, ", ")
}
