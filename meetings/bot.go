package meetings

import (
	"context"
	"fmt"
	"html"
	"strings"
	"time"
)

// Bot answers "!conf meeting …" commands; the appservice hands it the text
// after the verb.
type Bot struct {
	svc    *Service
	prefix string
}

// Bot returns the command handler; prefix is the bot's command prefix
// ("!conf"), used in the help text.
func (s *Service) Bot(prefix string) *Bot { return &Bot{svc: s, prefix: prefix} }

// HelpSummary is the line "!conf help" shows.
func (b *Bot) HelpSummary() string {
	return b.prefix + " meeting create|show|update|cancel|list — schedule calls with invites and reminders (" + b.prefix + " help meeting)"
}

// Help is "!conf help meeting".
func (b *Bot) Help() string {
	p := b.prefix + " meeting"
	return strings.Join([]string{
		"Meetings: I create a room for the call, invite everyone (the invite says when), send each a calendar file here in our chat and remind the room " + b.svc.cfg.ReminderBefore.String() + " before each occurrence.",
		"• " + p + " create <title> start=\"2026-03-23 10:00\" [duration=1h | end=11:00] [repeat=weekly count=10 | until=2026-12-31 | rrule=FREQ=WEEKLY;BYDAY=MO] [except=2026-03-30] [tz=Europe/Berlin] [level=public|kritis|vs-nfd] [servers=a.org,b.org] [max=50] @bob:example.org @carol:example.org",
		"• " + p + " show <id> — what, when, who",
		"• " + p + " update <id> start=\"2026-03-24 11:00\" | title=… | invite=@dave:example.org | uninvite=… | level=…",
		"• " + p + " cancel <id> [2026-03-30] — one occurrence, or the whole meeting",
		"• " + p + " list — the meetings you organise or are invited to",
		"• " + p + " tz Europe/Berlin — your time zone (default " + b.svc.cfg.DefaultTimezone + ")",
		"• " + p + " feed — a private calendar (webcal) address with all your meetings, sent to our direct chat once; `feed reset` makes a new one (the old one stops working)",
		"In a meeting room the <id> may be left out. Times are in your time zone unless tz= says otherwise. repeat is daily, weekdays, weekly, biweekly, monthly or yearly; a series without count or until ends after " + fmt.Sprintf("%.0f days", b.svc.cfg.MaxSeriesSpan.Hours()/24) + ".",
	}, "\n")
}

// explain is describeError for the bot's reply; an internal failure's
// text goes to the log, with the command, room and sender to find it by.
func (b *Bot) explain(verb, roomID, sender string, err error) string {
	if !isRefusal(err) {
		b.svc.log.Error().Err(err).Str("command", verb).Str("room_id", roomID).Str("user_id", sender).Msg("Meeting command failed")
	}
	return describeError(err)
}

// HandleCommand answers one command; text is what followed "meeting".
func (b *Bot) HandleCommand(ctx context.Context, roomID, sender, text string) (string, string) {
	cmd, err := ParseCommand(text)
	if err != nil {
		return "❌ I did not understand that — " + describeError(err) + "\nSee " + b.prefix + " help meeting", ""
	}
	s := b.svc
	zone, _ := loadZone(s.userZone(ctx, sender))
	target := cmd.Target
	if target == "" {
		target = roomID
	}
	switch cmd.Verb {
	case "help":
		return b.Help(), ""
	case "create":
		res, err := s.Create(ctx, sender, &cmd.Spec)
		if err != nil {
			return "❌ I did not schedule the meeting — " + b.explain(cmd.Verb, roomID, sender, err), ""
		}
		return b.confirm("✅ Scheduled", res, zone), ""
	case "update":
		res, err := s.Update(ctx, sender, target, &cmd.Spec)
		if err != nil {
			return "❌ I did not change the meeting — " + b.explain(cmd.Verb, roomID, sender, err), ""
		}
		if res.Unchanged {
			return "Nothing changed: meeting " + res.Meeting.ID + " already is like that.", ""
		}
		return b.confirm("✅ Updated", res, zone), ""
	case "cancel":
		res, err := s.Cancel(ctx, sender, target, cmd.Occurrence)
		if err != nil {
			return "❌ I did not cancel anything — " + b.explain(cmd.Verb, roomID, sender, err), ""
		}
		if cmd.Occurrence != "" {
			return fmt.Sprintf("✅ Cancelled the occurrence on %s of %q (%s). Everyone got a calendar cancellation.%s",
				cmd.Occurrence, res.Meeting.Title, res.Meeting.ID, warnings(res.Warnings)), ""
		}
		return fmt.Sprintf("✅ Cancelled %q (%s). Everyone got a calendar cancellation.%s", res.Meeting.Title, res.Meeting.ID, warnings(res.Warnings)), ""
	case "show":
		m, err := s.Get(ctx, sender, target)
		if err != nil {
			return "❌ " + b.explain(cmd.Verb, roomID, sender, err), ""
		}
		return b.describe(m, zone), ""
	case "list":
		ms, err := s.List(ctx, sender)
		if err != nil {
			return "❌ " + b.explain(cmd.Verb, roomID, sender, err), ""
		}
		if len(ms) == 0 {
			return "You have no meetings. " + b.prefix + " help meeting says how to schedule one.", ""
		}
		var lines []string
		for i, m := range ms {
			if i == maxListed {
				lines = append(lines, fmt.Sprintf("… and %d more (your calendar feed lists them: %s meeting feed)", len(ms)-i, b.prefix))
				break
			}
			role := "invited"
			if m.Organiser == sender {
				role = "organiser"
			}
			lines = append(lines, fmt.Sprintf("• %s %q — %s (%s)", m.ID, m.Title, m.Schedule.Describe(zone), role))
		}
		return "Your meetings:\n" + strings.Join(lines, "\n"), ""
	case "tz":
		if err := s.SetTimezone(ctx, sender, cmd.Arg); err != nil {
			return "❌ " + b.explain(cmd.Verb, roomID, sender, err), ""
		}
		loc, _ := loadZone(cmd.Arg)
		return fmt.Sprintf("✅ Your time zone is %s (now %s there).", cmd.Arg, s.clock.Now().In(loc).Format("15:04")), ""
	case "feed":
		// Plain "feed" does not replace an address the user has: calendars
		// subscribed to it would stop updating. It cannot be resent either
		// (only its hash is kept), so the user is told to reset.
		if cmd.Arg != "reset" {
			has, err := s.HasFeed(ctx, sender)
			if err != nil {
				return "❌ " + b.explain(cmd.Verb, roomID, sender, err), ""
			}
			if has {
				return "ℹ️ You already have a calendar address, and I cannot send it again (I keep only a fingerprint of it). " +
					"If you lost it, say `" + b.prefix + " meeting feed reset`: I will send you a new one, and the old one stops working.", ""
			}
		}
		u, err := s.FeedURL(ctx, sender)
		if err != nil {
			return "❌ " + b.explain(cmd.Verb, roomID, sender, err), ""
		}
		text := "Your private calendar address (subscribe to it in your calendar app; anyone with it can read your meetings, so keep it to yourself — `" + b.prefix + " meeting feed reset` replaces it):\n" + u
		if err := s.sendPrivately(ctx, sender, roomID, text); err != nil {
			return "❌ I could not send you the address in our direct chat — " + b.explain(cmd.Verb, roomID, sender, err), ""
		}
		if cmd.Arg == "reset" {
			return "✅ Made a new calendar address; the old one no longer works. I sent it to you in our direct chat.", ""
		}
		return "✅ I sent your calendar address to you in our direct chat.", ""
	}
	return b.Help(), ""
}

// maxListed caps the lines of "list": a homeserver refuses events over
// 64 KiB, and a line can take a few hundred bytes.
const maxListed = 50

// sendPrivately posts text in the user's direct chat with the bot (never in
// a shared room: the feed address is a secret).
func (s *Service) sendPrivately(ctx context.Context, user, _ string, text string) error {
	room, err := s.mx.DirectRoom(ctx, user)
	if err != nil {
		return err
	}
	return s.mx.SendSecretMessage(ctx, room, noticeContent(text, ""))
}

func (b *Bot) confirm(head string, res *Result, zone *time.Location) string {
	m := res.Meeting
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s %q (meeting %s): %s", head, m.Title, m.ID, m.Schedule.Describe(zone))
	if len(res.Occurrences) > 1 {
		var next []string
		for _, o := range res.Occurrences {
			next = append(next, o.Start.In(zone).Format("Mon 2 Jan 15:04 MST"))
		}
		fmt.Fprintf(&sb, "\nOccurrences: %s…", strings.Join(next, ", "))
	}
	if res.Capped {
		sb.WriteString("\nThe series had no end, so it ends after " + fmt.Sprintf("%.0f days", b.svc.cfg.MaxSeriesSpan.Hours()/24) + " (give count= or until= to choose).")
	}
	if len(m.Participants) > 0 {
		fmt.Fprintf(&sb, "\nInvited (%d): %s", len(m.Participants), strings.Join(m.Participants, ", "))
	}
	fmt.Fprintf(&sb, "\nLevel %s", m.Policy.Level)
	if len(m.Policy.AllowedHomeservers) > 0 {
		fmt.Fprintf(&sb, ", homeservers %s", strings.Join(m.Policy.AllowedHomeservers, ", "))
	}
	if m.Policy.MaxParticipants > 0 {
		fmt.Fprintf(&sb, ", at most %d people", m.Policy.MaxParticipants)
	}
	fmt.Fprintf(&sb, ". Calendar sequence %d.", m.Sequence)
	fmt.Fprintf(&sb, "\nCall: %s", b.svc.CallLink(m))
	sb.WriteString(warnings(res.Warnings))
	return sb.String()
}

func (b *Bot) describe(m *Meeting, zone *time.Location) string {
	state := ""
	if m.Cancelled {
		state = " — CANCELLED"
	}
	text := fmt.Sprintf("%q (meeting %s)%s\nWhen: %s\nOrganiser: %s\nInvited (%d): %s\nLevel %s. Calendar sequence %d.\nCall: %s",
		m.Title, m.ID, state, m.Schedule.Describe(zone), m.Organiser, len(m.Participants), strings.Join(m.Participants, ", "),
		m.Policy.Level, m.Sequence, b.svc.CallLink(m))
	if m.Description != "" {
		text += "\n" + m.Description
	}
	return text
}

func warnings(w []string) string {
	if len(w) == 0 {
		return ""
	}
	return "\n⚠️ " + strings.Join(w, "\n⚠️ ")
}

func escape(s string) string { return html.EscapeString(s) }
