package meetings

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// maxSleep bounds one wait of the reminder loop, so a clock that jumps (a
// suspended VM) is noticed within it.
const maxSleep = 5 * time.Minute

// purgeEvery is how often Run deletes the meetings past their retention.
const purgeEvery = time.Hour

// Run posts reminders until ctx ends. At each wake-up it sends every
// reminder that is due and whose occurrence has not ended yet, exactly
// once: the claim is written to the database before the message is sent (a
// crash between the two loses that reminder rather than doubling it; a
// failed send removes the claim so the next round retries). After a
// restart the same rule sends a reminder missed during downtime once,
// if its occurrence is still running or ahead.
//
// It also deletes the meetings past their retention, at start and then
// every purgeEvery.
func (s *Service) Run(ctx context.Context) error {
	var nextPurge time.Time
	for {
		if now := s.clock.Now(); !now.Before(nextPurge) {
			if err := s.purge(ctx); err != nil {
				s.log.Warn().Err(err).Msg("Failed to delete old meetings")
			}
			nextPurge = now.Add(purgeEvery)
		}
		next, err := s.remind(ctx)
		if err != nil {
			s.log.Warn().Err(err).Msg("Failed to send reminders")
			next = s.clock.Now().Add(time.Minute)
		}
		wait := next.Sub(s.clock.Now())
		if wait > maxSleep {
			wait = maxSleep
		}
		if wait < 0 {
			wait = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.clock.After(wait):
		case <-s.wake:
		}
	}
}

// maxNamed caps the people a reminder names (m.mentions and pills): a
// homeserver refuses events over 64 KiB, and naming every one of a
// thousand invitees makes one of about 260 KB. Beyond it the reminder also
// mentions the room (@room), which reaches the people it does not name.
const maxNamed = 50

// remind sends the due reminders and returns when the next one is due. A
// reminder that fails is logged and the others are still sent (meetings are
// read in id order, so returning early would starve every later one); the
// error returned then only makes Run retry the failed ones a minute later.
func (s *Service) remind(ctx context.Context) (time.Time, error) {
	now := s.clock.Now()
	next := now.Add(maxSleep)
	ms, err := s.store.active(ctx, now)
	if err != nil {
		return next, err
	}
	before := s.cfg.ReminderBefore
	failed := 0
	for _, m := range ms {
		if err := ctx.Err(); err != nil {
			return next, err
		}
		// The occurrences running now or starting within the next wait.
		occ, err := m.Schedule.Between(now, now.Add(before+maxSleep))
		if err != nil {
			continue
		}
		for _, o := range occ {
			due := o.Start.Add(-before)
			if due.After(now) {
				if due.Before(next) {
					next = due
				}
				continue
			}
			if err := s.sendReminder(ctx, m, o, now); err != nil {
				failed++
				s.log.Warn().Err(err).Str("meeting_id", m.ID).Time("occurrence", o.Start).Msg("Failed to send a reminder")
			}
		}
	}
	if failed > 0 {
		return next, fmt.Errorf("%d reminder(s) failed", failed)
	}
	return next, nil
}

// sendReminder posts the reminder of occurrence o of m (as remind read it)
// unless the meeting, read again under its lock, no longer has it: a
// cancel or move that returned before is seen, one that comes after waits
// for the post.
func (s *Service) sendReminder(ctx context.Context, m *Meeting, o Occurrence, now time.Time) error {
	unlock := s.meetings.lock(m.ID)
	defer unlock()
	m, err := s.store.get(ctx, m.ID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if m.Cancelled {
		return nil
	}
	occ, err := m.Schedule.Between(o.Start, o.End)
	if err != nil || !slices.ContainsFunc(occ, func(c Occurrence) bool { return c.Start.Equal(o.Start) }) {
		return nil
	}
	claimed, err := s.store.claimReminder(ctx, m.ID, o.Start, now)
	if err != nil || !claimed {
		return err
	}
	late := now.Sub(o.Start.Add(-s.cfg.ReminderBefore)) > time.Minute
	content := s.reminderContent(m, o, now)
	if err := s.mx.SendMessage(ctx, m.RoomID, content); err != nil {
		s.metrics.reminders.WithLabelValues("error").Inc()
		if uerr := s.store.unclaimReminder(context.WithoutCancel(ctx), m.ID, o.Start); uerr != nil {
			s.log.Error().Err(uerr).Str("meeting_id", m.ID).Msg("Failed to release a reminder claim; that reminder is lost")
		}
		return fmt.Errorf("failed to post reminder in %s: %w", m.RoomID, err)
	}
	result := "sent"
	if late {
		result = "late"
	}
	s.metrics.reminders.WithLabelValues(result).Inc()
	s.log.Info().Str("room_id", m.RoomID).Str("meeting_id", m.ID).Time("occurrence", o.Start).Bool("late", late).Msg("Reminder sent")
	return nil
}

// reminderContent mentions the participants (m.mentions and HTML pills)
// and gives the join link. The bot rings nobody: the first client to join
// the call rings, as Element Call does.
func (s *Service) reminderContent(m *Meeting, o Occurrence, now time.Time) map[string]any {
	named, more := reminderPeople(m)
	loc, _ := m.Schedule.location()
	when := "now"
	if d := o.Start.Sub(now); d > 30*time.Second {
		when = "in " + roundMinutes(d)
	} else if d < -30*time.Second {
		when = "since " + o.Start.In(loc).Format("15:04")
	}
	names, pills := strings.Join(named, " "), joinPills(named)
	if more > 0 {
		rest := fmt.Sprintf(" and %d more: @room", more)
		names, pills = names+rest, pills+rest
	}
	link := s.CallLink(m)
	text := fmt.Sprintf("⏰ %s starts %s (%s %s). Join the call: %s\n%s",
		m.Title, when, o.Start.In(loc).Format("15:04"), loc, link, names)
	htmlText := fmt.Sprintf("⏰ <b>%s</b> starts %s (%s %s). <a href=\"%s\">Join the call</a><br>%s",
		escape(m.Title), when, o.Start.In(loc).Format("15:04"), loc, escape(link), pills)
	c := noticeContent(text, htmlText)
	mentions := map[string]any{"user_ids": named}
	if more > 0 {
		mentions["room"] = true // reaches those not named
	}
	c["m.mentions"] = mentions
	c["de.gxconf.reminder"] = map[string]any{"meeting_id": m.ID, "occurrence": o.Start.UnixMilli()}
	return c
}

// reminderPeople returns the people a reminder names — the organiser first,
// at most maxNamed — and how many more there are.
func reminderPeople(m *Meeting) (named []string, more int) {
	people := append([]string{m.Organiser}, m.Participants...)
	if len(people) <= maxNamed {
		return people, 0
	}
	return people[:maxNamed], len(people) - maxNamed
}

func roundMinutes(d time.Duration) string {
	min := int((d + 30*time.Second) / time.Minute)
	if min == 1 {
		return "in 1 minute"[3:]
	}
	return fmt.Sprintf("%d minutes", min)
}
