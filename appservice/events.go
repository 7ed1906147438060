package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// processEvent applies one event to the store and adds its side effects to fx.
// It returns an error only when the store failed; the caller tells an
// unavailable database from one that refused this event's content
// (contentRefused). Malformed events are ignored: a refused transaction is
// retried by the homeserver for ever and holds up every later event.
func (a *Appservice) processEvent(ctx context.Context, evt *event.Event, fx *effects) error {
	a.metrics.events.WithLabelValues(metricEventType(evt.Type.Type)).Inc()
	log := zerolog.Ctx(ctx).With().Str("room_id", evt.RoomID.String()).Str("event_id", evt.ID.String()).Logger()
	if hasControl(evt.RoomID.String()) || hasControl(evt.Sender.String()) || (evt.StateKey != nil && hasControl(*evt.StateKey)) {
		// No valid room ID, user ID or state key holds one; the values are
		// not logged.
		a.metrics.eventsIgnored.WithLabelValues("malformed").Inc()
		log.Debug().Str("event_type", evt.Type.Type).Msg("Ignoring event with control characters in its room, sender or state key")
		return nil
	}
	err := evt.Content.ParseRaw(evt.Type)
	if evt.Type == event.StateMember {
		// The membership is what the homeserver's auth rules read: the
		// member named exactly "membership". encoding/json would also take
		// "Membership" (the last spelling wins), and it refuses the whole
		// content for a mistyped free-text field ("displayname": 1) — a
		// member could leave with such content and stay joined here, their
		// call participants kept.
		membership, ok := membershipOf(evt.Content.VeryRaw)
		if !ok {
			a.metrics.eventsIgnored.WithLabelValues("malformed").Inc()
			log.Debug().Msg("Ignoring member event without a membership string")
			return nil
		}
		if content, parsed := evt.Content.Parsed.(*event.MemberEventContent); err == nil && parsed {
			content.Membership = membership
		} else {
			log.Debug().AnErr("parse_error", err).Msg("Member event with mistyped fields: keeping only its membership")
			evt.Content.Parsed, err = &event.MemberEventContent{Membership: membership}, nil
		}
	}
	if evt.Type == event.StatePowerLevels {
		var pl *event.PowerLevelsEventContent
		if pl, err = decodePowerLevels(evt.Content.VeryRaw); err == nil {
			evt.Content.Parsed = pl
		}
	}
	if err != nil && !errors.Is(err, event.ErrUnsupportedContentType) {
		a.metrics.eventsIgnored.WithLabelValues("malformed").Inc()
		log.Debug().Err(err).Str("event_type", evt.Type.Type).Msg("Ignoring event with unparseable content")
		return nil
	}
	if content, ok := evt.Content.Parsed.(*event.MemberEventContent); ok {
		if !knownMembership(content.Membership) {
			a.metrics.eventsIgnored.WithLabelValues("malformed").Inc()
			log.Debug().Msg("Ignoring member event with an unknown membership")
			return nil
		}
		// Free text is kept, but without NULs, which PostgreSQL text
		// cannot hold.
		content.Displayname = stripNUL(content.Displayname)
		content.AvatarURL = id.ContentURIString(stripNUL(string(content.AvatarURL)))
	}
	if evt.Type.IsState() {
		if err := a.updateState(ctx, evt); err != nil {
			// State the database refuses is skipped, but what the event
			// means still happens: a leave still removes the user's
			// participants.
			if !a.ignoreUnstorable(log, evt, err) {
				return err
			}
		}
	}
	switch evt.Type.Type {
	case event.StateMember.Type:
		return a.onMember(log.WithContext(ctx), evt, fx)
	case TypeCallMember, TypeRTCMember:
		return a.onCallMember(log.WithContext(ctx), evt)
	case accessEventType.Type:
		if evt.Type.IsState() {
			return a.onAccessPolicy(log.WithContext(ctx), evt, fx)
		}
	case event.EventMessage.Type:
		a.onMessage(log.WithContext(ctx), evt, fx)
	}
	return nil
}

// ignoreUnstorable counts and logs err (log names the event) and reports true when the database
// refused the event's content (contentRefused): retrying cannot store it, so
// the event is skipped rather than its transaction refused. The log carries
// the SQLSTATE, not the message, which may quote the content.
func (a *Appservice) ignoreUnstorable(log zerolog.Logger, evt *event.Event, err error) bool {
	code, ok := contentRefused(err)
	if !ok {
		return false
	}
	a.metrics.eventsIgnored.WithLabelValues("unstorable").Inc()
	log.Warn().Str("event_type", evt.Type.Type).Str("sqlstate", code).
		Msg("Skipping event whose content the database refused")
	return true
}

// membershipOf reads a member event's membership as the homeserver does:
// the string member named exactly "membership" (of duplicates, the last).
func membershipOf(raw json.RawMessage) (event.Membership, bool) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return "", false
	}
	m, present := members["membership"]
	var s string
	if !present || json.Unmarshal(m, &s) != nil {
		return "", false
	}
	return event.Membership(s), true
}

// knownMembership reports whether m is a membership of the Matrix spec (and
// of mautrix's membership enum in PostgreSQL).
func knownMembership(m event.Membership) bool {
	switch m {
	case event.MembershipJoin, event.MembershipLeave, event.MembershipInvite, event.MembershipBan, event.MembershipKnock:
		return true
	}
	return false
}

// stripNUL removes NUL characters from free text.
func stripNUL(s string) string { return strings.ReplaceAll(s, "\x00", "") }

// updateState writes member and power-level state into the state store,
// reporting failures (mautrix.UpdateStateStore only logs them).
func (a *Appservice) updateState(ctx context.Context, evt *event.Event) error {
	var err error
	switch content := evt.Content.Parsed.(type) {
	case *event.MemberEventContent:
		err = a.state.SetMember(ctx, evt.RoomID, id.UserID(evt.GetStateKey()), content)
	case *event.PowerLevelsEventContent:
		err = a.state.SetPowerLevels(ctx, evt.RoomID, content)
	case *event.CreateEventContent:
		err = a.state.SetCreate(ctx, evt)
	case *event.JoinRulesEventContent:
		err = a.state.SetJoinRules(ctx, evt.RoomID, content)
	case *event.EncryptionEventContent:
		err = a.state.SetEncryptionEvent(ctx, evt.RoomID, content)
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to update state store: %w", err)
	}
	return nil
}

// onMember auto-joins the bot on invite and removes the SFU participants of
// users who left, were kicked or were banned.
func (a *Appservice) onMember(ctx context.Context, evt *event.Event, fx *effects) error {
	content, ok := evt.Content.Parsed.(*event.MemberEventContent)
	if !ok {
		return nil
	}
	target := id.UserID(evt.GetStateKey())
	a.notifyMembership() // updateState stored it already
	log := zerolog.Ctx(ctx).With().Str("user_id", target.String()).Str("membership", string(content.Membership)).Logger()
	log.Debug().Msg("Membership changed")
	if target == a.botID {
		if content.Membership == event.MembershipInvite {
			roomID := evt.RoomID
			fx.add(job{name: "bot_join", run: func(ctx context.Context) error { return a.joinAndGreet(ctx, roomID) }})
		}
		return nil
	}
	switch content.Membership {
	case event.MembershipLeave, event.MembershipBan:
		if err := a.store.deleteUserCallMembers(ctx, evt.RoomID.String(), target.String()); err != nil {
			return err
		}
		reason := "left the room"
		switch {
		case content.Membership == event.MembershipBan:
			reason = "banned from the room"
		case evt.Sender != target:
			reason = "removed from the room"
		}
		roomID := evt.RoomID.String()
		fx.add(job{name: "remove_participants", run: func(ctx context.Context) error {
			n, err := a.remover.RemoveUser(ctx, roomID, target.String(), reason)
			if n > 0 {
				zerolog.Ctx(ctx).Info().Str("room_id", roomID).Str("user_id", target.String()).Int("participants", n).
					Str("reason", reason).Msg("Removed user's call participants")
			}
			return err
		}})
	}
	return nil
}

// onCallMember keeps the MatrixRTC call memberships.
func (a *Appservice) onCallMember(ctx context.Context, evt *event.Event) error {
	m, leave, err := ParseCallMember(evt.Type.Type, evt.Sender.String(), evt.RoomID.String(), evt.StateKey, evt.Timestamp, evt.Content.VeryRaw)
	if err != nil {
		a.metrics.eventsIgnored.WithLabelValues("malformed").Inc()
		zerolog.Ctx(ctx).Debug().Err(err).Msg("Ignoring malformed call membership")
		return nil
	}
	if leave {
		return a.store.deleteCallMember(ctx, m.RoomID, m.Kind, m.Key)
	}
	zerolog.Ctx(ctx).Debug().Str("user_id", m.UserID).Str("device_id", m.DeviceID).Str("slot_id", m.SlotID).Msg("Call membership updated")
	return a.store.putCallMember(ctx, m)
}

// onMessage dispatches bot commands from other users.
func (a *Appservice) onMessage(ctx context.Context, evt *event.Event, fx *effects) {
	if evt.Sender == a.botID {
		return
	}
	content, ok := evt.Content.Parsed.(*event.MessageEventContent)
	if !ok || (content.MsgType != event.MsgText && content.MsgType != event.MsgNotice) {
		return
	}
	body := strings.TrimSpace(content.Body)
	fields := strings.Fields(body)
	if len(fields) == 0 || fields[0] != a.cfg.CommandPrefix {
		return
	}
	roomID, sender := evt.RoomID, evt.Sender
	fx.add(job{name: "bot_command", run: func(ctx context.Context) error {
		if !a.state.IsInRoom(ctx, roomID, a.botID) {
			return nil // commands are answered only where the bot is a member
		}
		reply := a.command(ctx, roomID, sender, strings.TrimPrefix(body, fields[0]))
		if reply == nil {
			return nil
		}
		_, err := a.mx.BotIntent().SendMessageEvent(ctx, roomID, event.EventMessage, reply)
		return err
	}})
}

// joinAndGreet accepts an invite and says what the bot does.
func (a *Appservice) joinAndGreet(ctx context.Context, roomID id.RoomID) error {
	if _, err := a.mx.BotIntent().JoinRoomByID(ctx, roomID); err != nil {
		return fmt.Errorf("failed to join %s: %w", roomID, err)
	}
	_, err := a.mx.BotIntent().SendMessageEvent(ctx, roomID, event.EventMessage,
		notice(fmt.Sprintf("gxconf is looking after this room's calls. Type `%s help` for commands.", a.cfg.CommandPrefix)))
	return err
}

// joinGrace is how long IsJoined waits for a join that the homeserver has
// not yet delivered to us, when it cannot tell us itself (the bot is not in
// the room). Element Call asks for a token right after joining by link.
// Three seconds proved too short: a loaded Dendrite with PostgreSQL was seen
// delivering such a join to the appservice after more than 3 s (official CI,
// 6 Dec); a caller who is not a member waits this long for the 403.
const joinGrace = 10 * time.Second

// IsJoined reports whether userID is joined to roomID: from the store when it
// says so, otherwise by asking the homeserver as the bot (a join may not have
// reached us yet). When the homeserver will not tell the bot (it is not in
// the room), IsJoined waits up to joinGrace for the join to arrive.
func (a *Appservice) IsJoined(ctx context.Context, roomID, userID string) (bool, error) {
	deadline := time.NewTimer(joinGrace)
	defer deadline.Stop()
	askedHomeserver := false
	for {
		changed := a.membershipChanged() // before reading, so no update is missed
		membership, err := a.state.GetMembership(ctx, id.RoomID(roomID), id.UserID(userID))
		if err != nil {
			return false, fmt.Errorf("failed to read membership: %w", err)
		}
		if membership == event.MembershipJoin {
			return true, nil
		}
		if !askedHomeserver {
			askedHomeserver = true
			// Read raw, the membership as the homeserver reads it
			// (membershipOf): the client's StateEvent would decode
			// "Membership" too, and store what it decoded.
			cli := a.mx.BotClient()
			var raw json.RawMessage
			_, err = cli.MakeRequest(ctx, http.MethodGet, cli.BuildClientURL("v3", "rooms", roomID, "state", event.StateMember.Type, userID), nil, &raw)
			switch {
			case err == nil:
				// The homeserver knows; its answer goes into the state store.
				m, ok := membershipOf(raw)
				if !ok || !knownMembership(m) {
					return false, fmt.Errorf("the homeserver answered a membership event without a valid membership")
				}
				if err := a.state.SetMembership(ctx, id.RoomID(roomID), id.UserID(userID), m); err != nil {
					zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to store a membership the homeserver reported")
				}
				return m == event.MembershipJoin, nil
			case errors.Is(err, mautrix.MNotFound):
				return false, nil
			case !errors.Is(err, mautrix.MForbidden):
				return false, fmt.Errorf("failed to ask the homeserver for membership: %w", err)
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// membershipChanged returns a channel that is closed at the next membership change.
func (a *Appservice) membershipChanged() <-chan struct{} {
	a.memberMu.Lock()
	defer a.memberMu.Unlock()
	return a.memberChanged
}

// notifyMembership wakes everyone waiting in IsJoined.
func (a *Appservice) notifyMembership() {
	a.memberMu.Lock()
	close(a.memberChanged)
	a.memberChanged = make(chan struct{})
	a.memberMu.Unlock()
}

// metricEventType keeps the label set small.
func metricEventType(t string) string {
	switch t {
	case event.StateMember.Type, event.EventMessage.Type, event.StatePowerLevels.Type, TypeCallMember, TypeRTCMember, accessEventType.Type:
		return t
	}
	return "other"
}
