package appservice

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/rs/zerolog"

	"github.com/gxfs-conf/gxconf/internal/clip"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// CommandHandler answers the bot commands of one verb that another package
// owns ("!conf meeting …" by package meetings).
type CommandHandler interface {
	// HandleCommand gets the text after the verb, unsplit (it may quote);
	// it returns the reply as plain text and optionally HTML.
	HandleCommand(ctx context.Context, roomID, sender, text string) (string, string)
	// HelpSummary is its line in "!conf help".
	HelpSummary() string
	// Help is "!conf help <verb>".
	Help() string
}

// AddCommand registers the handler of verb. Call it before Run.
func (a *Appservice) AddCommand(verb string, h CommandHandler) {
	if a.commands == nil {
		a.commands = map[string]CommandHandler{}
	}
	a.commands[strings.ToLower(verb)] = h
}

// command answers one bot command; text is what followed the prefix.
// Unknown commands get the help text.
func (a *Appservice) command(ctx context.Context, roomID id.RoomID, sender id.UserID, text string) *event.MessageEventContent {
	args := strings.Fields(text)
	verb := "help"
	if len(args) > 0 {
		verb = strings.ToLower(args[0])
	}
	zerolog.Ctx(ctx).Info().Str("room_id", roomID.String()).Str("user_id", sender.String()).Str("command", verb).Msg("Bot command")
	switch verb {
	case "status":
		return a.statusText(ctx, roomID)
	case "policy":
		return a.policyCommand(ctx, roomID, sender, args[1:])
	case "bookings":
		if len(args) == 3 && strings.ToLower(args[1]) == "accept" {
			return a.acceptBooking(ctx, roomID, sender, args[2])
		}
		return a.bookingsText(ctx, roomID)
	case "help":
		if len(args) > 1 {
			if h, ok := a.commands[strings.ToLower(args[1])]; ok {
				return notice(h.Help())
			}
		}
		return notice(a.helpText())
	}
	if h, ok := a.commands[verb]; ok {
		rest := strings.TrimSpace(text)
		rest = strings.TrimSpace(rest[len(args[0]):])
		body, html := h.HandleCommand(ctx, roomID.String(), sender.String(), rest)
		if body == "" {
			return nil
		}
		c := notice(body)
		if html != "" {
			c.Format, c.FormattedBody = event.FormatHTML, html
		}
		return c
	}
	if len(verb) > 64 {
		verb = verb[:64] + "…"
	}
	return notice(fmt.Sprintf("Unknown command %q.\n\n%s", verb, a.helpText()))
}

func (a *Appservice) helpText() string {
	p := a.cfg.CommandPrefix
	lines := []string{
		"gxconf bot commands:",
		"• " + p + " help — this text",
		"• " + p + " status — who is in this room's call and how calls are set up",
		"• " + p + " policy — show this room's access policy (state event " + accessEventType.Type + ")",
		"• " + p + " policy set <json> — set it, e.g. {\"level\":\"kritis\",\"required_credentials\":[{\"type\":\"EmployeeCredential\"}],\"allowed_homeservers\":[\"" + a.botID.Homeserver() + "\"]}",
		"• " + p + " policy clear — remove it (needs the room's highest power level)",
		"• " + p + " bookings — the service booking this room is bound to and its usage",
		"• " + p + " bookings accept <booking> — let the booking an organisation bound this room to count here (needs the room's highest power level)",
	}
	for _, verb := range slices.Sorted(maps.Keys(a.commands)) {
		lines = append(lines, "• "+a.commands[verb].HelpSummary())
	}
	return strings.Join(lines, "\n")
}

// acceptBooking lets a room admin accept the room's binding to a booking:
// until then an organisation's admin cannot restrict a room they do not control.
func (a *Appservice) acceptBooking(ctx context.Context, roomID id.RoomID, sender id.UserID, bookingID string) *event.MessageEventContent {
	if a.bookings == nil {
		return notice("This deployment has no service catalogue.")
	}
	senderPower, topPower := a.powers(ctx, roomID, sender)
	if senderPower < topPower {
		return notice(fmt.Sprintf("Only a member with the room's highest power level (%d) may accept a booking for it; you have %d.", topPower, senderPower))
	}
	bound, err := a.bookings.ConfirmRoom(ctx, roomID.String(), bookingID, sender.String())
	switch {
	case err != nil:
		zerolog.Ctx(ctx).Warn().Err(err).Str("booking", clip.Quote(bookingID)).Msg("Failed to accept a booking for a room")
		return notice(fmt.Sprintf("Sorry, I could not accept booking %s for this room; %s.", clip.Quote(bookingID), seeTheLog))
	case !bound:
		return notice(fmt.Sprintf("I could not accept booking %s: this room is not bound to it.", clip.Quote(bookingID)))
	}
	return notice(fmt.Sprintf("Accepted: calls in this room now count against booking %s.", bookingID))
}

func (a *Appservice) bookingsText(ctx context.Context, roomID id.RoomID) *event.MessageEventContent {
	if a.bookings == nil {
		return notice("This deployment has no service catalogue; calls are not bound to bookings.")
	}
	text, err := a.bookings.RoomBookings(ctx, roomID.String())
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to read the room's booking")
		return notice("Sorry, I could not read this room's booking.")
	}
	return notice(text)
}

func (a *Appservice) statusText(ctx context.Context, roomID id.RoomID) *event.MessageEventContent {
	members, err := a.store.callMembers(ctx, roomID.String(), a.now())
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to list call members")
		return notice("Sorry, I could not read this room's call state.")
	}
	var b strings.Builder
	b.WriteString("Call status of this room:\n")
	if len(members) == 0 {
		b.WriteString("• nobody is in a call\n")
	} else {
		fmt.Fprintf(&b, "• %d device(s) in a call:\n", len(members))
		for _, m := range members {
			fmt.Fprintf(&b, "  – %s (device %s, slot %s)\n", m.UserID, m.DeviceID, m.SlotID)
		}
	}
	if a.focus != "" {
		fmt.Fprintf(&b, "• focus: %s\n", a.focus)
	}
	b.WriteString("• " + a.policyStatus(ctx, roomID) + "\n")
	return notice(strings.TrimRight(b.String(), "\n"))
}

// notice is the bot's m.notice. It mentions nobody (an empty m.mentions):
// without it, clients and homeservers fall back to reading "@room" in the
// body as a room mention with the bot's power, so whoever got the bot to
// repeat text (a command, a meeting title) could notify everyone.
func notice(text string) *event.MessageEventContent {
	return &event.MessageEventContent{MsgType: event.MsgNotice, Body: text, Mentions: &event.Mentions{}}
}
