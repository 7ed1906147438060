package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/internal/clip"
	"github.com/gxfs-conf/gxconf/internal/mxerr"
)

// PolicyValidator checks a change of a room's access policy; the credentials
// verifier implements it (deployment rules such as "vs-nfd needs an approved
// environment" included).
type PolicyValidator interface {
	ValidatePolicyChange(old, next *credentials.AccessPolicy, senderPower, topPower int64) error
}

// plainValidator applies the rules that need no deployment knowledge.
type plainValidator struct{}

func (plainValidator) ValidatePolicyChange(old, next *credentials.AccessPolicy, senderPower, topPower int64) error {
	return credentials.ValidateChange(old, next, senderPower, topPower)
}

var accessEventType = event.Type{Type: credentials.AccessEventType, Class: event.StateEventType}

// ErrPolicyRemovalForbidden refuses removing a policy without the top power level.
var ErrPolicyRemovalForbidden = errors.New("removing the access policy needs the room's highest power level")

// parseStoredPolicy turns stored content into a policy ("" = none).
func parseStoredPolicy(content string) (*credentials.AccessPolicy, error) {
	if content == "" {
		return nil, nil
	}
	return credentials.ParseAccessPolicy([]byte(content))
}

// isEmptyContent reports whether state content is {} (a removed state event).
func isEmptyContent(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return len(bytes.TrimSpace(raw)) == 0 || (json.Unmarshal(raw, &m) == nil && len(m) == 0)
}

// onAccessPolicy validates a de.gxconf.access change against the policy in
// force and the sender's power. A valid change is stored; an invalid one is
// ignored — the previous policy stays in force — and the bot says why and,
// where it may, puts the previous policy back.
func (a *Appservice) onAccessPolicy(ctx context.Context, evt *event.Event, fx *effects) error {
	if evt.GetStateKey() != "" {
		return nil
	}
	log := zerolog.Ctx(ctx)
	roomID := evt.RoomID
	stored, known, err := a.store.roomPolicy(ctx, roomID.String())
	if err != nil {
		return err
	}
	if !known && evt.Unsigned.PrevContent != nil && evt.Unsigned.PrevContent.VeryRaw != nil && !isEmptyContent(evt.Unsigned.PrevContent.VeryRaw) {
		// We missed the earlier state (gxconf was added later): judge the
		// change against the previous content the homeserver reports.
		stored = string(evt.Unsigned.PrevContent.VeryRaw)
	}
	old, err := parseStoredPolicy(stored)
	if err != nil {
		old = nil // a stored policy always parsed; prev_content may not
	}
	raw := evt.Content.VeryRaw
	var next *credentials.AccessPolicy
	var verr error
	if !isEmptyContent(raw) {
		next, verr = credentials.ParseAccessPolicy(raw)
	}
	if verr == nil {
		senderPower, topPower := a.powers(ctx, roomID, evt.Sender)
		switch {
		case next == nil && old != nil && senderPower < topPower:
			verr = fmt.Errorf("%w (%d); %s has %d", ErrPolicyRemovalForbidden, topPower, evt.Sender, senderPower)
		case next != nil:
			verr = a.validator.ValidatePolicyChange(old, next, senderPower, topPower)
		}
	}
	if verr != nil {
		log.Warn().Err(verr).Str("user_id", evt.Sender.String()).Msg("Refused access policy change")
		a.metrics.policyChanges.WithLabelValues("refused").Inc()
		// Audited with the refusal's other effects, once the transaction
		// is recorded: a transaction the homeserver retries (a later event
		// met an unavailable database) is not audited once per delivery.
		level, reason := levelOf(next), evt.ID.String()+": "+verr.Error()
		fx.add(job{name: "policy_refused", run: func(ctx context.Context) error {
			a.auditPolicy(ctx, credentials.AuditPolicyRefused, roomID.String(), evt.Sender.String(), level, reason)
			return a.refusePolicyChange(ctx, roomID, evt.Sender, old, verr)
		}})
		return nil
	}
	content := ""
	if next != nil {
		b, _ := json.Marshal(next)
		content = string(b)
	}
	if content == stored && known {
		return nil // e.g. our own revert, or a redelivery
	}
	if err := a.store.putRoomPolicy(ctx, roomID.String(), content, evt.ID.String(), evt.Sender.String(), a.now()); err != nil {
		return err
	}
	a.auditPolicy(ctx, credentials.AuditPolicyChanged, roomID.String(), evt.Sender.String(), levelOf(next), evt.ID.String()+": "+describePolicy(next))
	a.metrics.policyChanges.WithLabelValues("accepted").Inc()
	log.Info().Str("user_id", evt.Sender.String()).Str("level", string(levelOf(next))).Msg("Access policy changed")
	fx.add(job{name: "policy_notice", run: func(ctx context.Context) error {
		return a.Notice(ctx, roomID.String(), "Access policy of this room: "+describePolicy(next))
	}})
	return nil
}

// refusePolicyChange explains a refused change and restores the policy in
// force if the bot may send the state event.
func (a *Appservice) refusePolicyChange(ctx context.Context, roomID id.RoomID, sender id.UserID, old *credentials.AccessPolicy, reason error) error {
	msg := fmt.Sprintf("I did not accept %s's access policy change: %v. The policy in force stays: %s.", sender, reason, describePolicy(old))
	if err := a.Notice(ctx, roomID.String(), msg); err != nil {
		return err
	}
	var content any = map[string]any{}
	if old != nil {
		content = old
	}
	if _, err := a.mx.BotIntent().SendStateEvent(ctx, roomID, accessEventType, "", content); err != nil {
		zerolog.Ctx(ctx).Debug().Err(err).Msg("Could not restore the access policy in the room state")
	}
	return nil
}

// powers returns the sender's power level and the room's highest one.
func (a *Appservice) powers(ctx context.Context, roomID id.RoomID, sender id.UserID) (senderPower, topPower int64) {
	return powersIn(a.powerLevels(ctx, roomID), sender)
}

// powerLevels returns the room's m.room.power_levels content, from the state
// store or else from the homeserver, with the room's create event (room
// version 12 gives its creators unlimited power, outside the users map); nil
// when neither knows the power levels.
func (a *Appservice) powerLevels(ctx context.Context, roomID id.RoomID) *event.PowerLevelsEventContent {
	pl, err := a.state.GetPowerLevels(ctx, roomID)
	if err != nil || pl == nil {
		// Read raw and decoded as the homeserver reads it
		// (decodePowerLevels), not by the client's StateEvent.
		cli := a.mx.BotClient()
		var raw json.RawMessage
		if _, err := cli.MakeRequest(ctx, http.MethodGet, cli.BuildClientURL("v3", "rooms", roomID, "state", event.StatePowerLevels.Type, ""), nil, &raw); err != nil {
			return nil
		}
		if pl, err = decodePowerLevels(raw); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("The room's power levels from the homeserver do not parse")
			return nil
		}
		if err := a.state.SetPowerLevels(ctx, roomID, pl); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to store the room's power levels")
		}
	}
	if pl.CreateEvent == nil {
		pl.CreateEvent = a.createEvent(ctx, roomID)
	}
	return pl
}

// createEvent returns the room's m.room.create event from the state store or
// the homeserver. If the homeserver gives only its content (no
// ?format=event), the event has no sender: the room's version still counts,
// but nobody is taken for its creator. nil when neither knows it.
func (a *Appservice) createEvent(ctx context.Context, roomID id.RoomID) *event.Event {
	if evt, err := a.state.GetCreate(ctx, roomID); err == nil && evt != nil {
		return evt
	}
	// Homeservers that ignore ?format=event (Dendrite) answer the content:
	// then the event has no type.
	if evt, err := a.mx.BotClient().FullStateEvent(ctx, roomID, event.StateCreate, ""); err == nil && evt != nil && evt.Type.Type == event.StateCreate.Type {
		return evt
	}
	var content event.CreateEventContent
	if err := a.mx.BotClient().StateEvent(ctx, roomID, event.StateCreate, "", &content); err != nil {
		return nil
	}
	evt := &event.Event{Type: event.StateCreate, RoomID: roomID, StateKey: new(""), Content: event.Content{Parsed: &content}}
	if raw, err := json.Marshal(&content); err == nil {
		evt.Content.VeryRaw = raw
		_ = a.state.SetCreate(ctx, evt) // a room's create event never changes
	}
	return evt
}

// creatorsPrivileged reports whether the room's version gives its creators
// unlimited power (v12, MSC4289). A create event without room_version is
// version 1.
func creatorsPrivileged(create *event.Event) bool {
	if create == nil {
		return false
	}
	cc := create.Content.AsCreate()
	return cc.RoomVersion != "" && cc.SupportsCreatorPower()
}

// powersIn returns the sender's power level and the highest one in pl. In a
// room whose version gives creators power (v12, MSC4289), the highest is
// theirs — unlimited, above any level in the users map.
func powersIn(pl *event.PowerLevelsEventContent, sender id.UserID) (senderPower, topPower int64) {
	if pl == nil {
		// No power levels known: only the room's highest level (100) may lower.
		return 0, 100
	}
	top := pl.UsersDefault
	for _, lvl := range pl.Users {
		top = max(top, lvl)
	}
	if creatorsPrivileged(pl.CreateEvent) {
		top = math.MaxInt
	}
	return int64(pl.GetUserLevel(sender)), int64(top)
}

// accessEventLevel is the power level the room demands for sending the
// de.gxconf.access state event (events[type], else state_default). Without
// known power levels it is the spec's state_default, 50.
func accessEventLevel(pl *event.PowerLevelsEventContent) int64 {
	if pl == nil {
		return 50
	}
	return int64(pl.GetEventLevel(accessEventType))
}

// RoomPolicy returns the access policy in force in a room; nil means none
// (membership suffices). Policy events reach gxconf through transactions; a
// room it has no record of is looked up once in the room's full state. If the
// bot cannot read the room's state, the room counts as having no policy (no
// policy event was ever delivered for it), and the log says so. A policy event
// that does not parse is returned as credentials.ErrInvalidPolicy: the room's
// admins wanted a policy, so it must not be treated as none. Any other error
// means the state is unknown for now (homeserver or database unreachable).
func (a *Appservice) RoomPolicy(ctx context.Context, roomID string) (*credentials.AccessPolicy, error) {
	content, known, err := a.store.roomPolicy(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if known {
		return parseStoredPolicy(content)
	}
	raw, found, err := a.fetchPolicyState(ctx, id.RoomID(roomID))
	switch {
	case errors.Is(err, mautrix.MForbidden):
		zerolog.Ctx(ctx).Info().Str("room_id", roomID).
			Msg("The bot cannot read the room's state and no access policy was delivered for it: treating it as having none")
		return nil, nil
	case err != nil:
		return nil, err
	}
	content = ""
	if found && !isEmptyContent(raw) {
		p, perr := credentials.ParseAccessPolicy(raw)
		if perr != nil {
			return nil, &invalidPolicyError{room: roomID, err: perr}
		}
		b, _ := json.Marshal(p)
		content = string(b)
	}
	stored, err := a.store.initRoomPolicy(ctx, roomID, content, a.now())
	if err != nil {
		return nil, err
	}
	return parseStoredPolicy(stored)
}

// invalidPolicyError is a room's access policy event that does not parse:
// the room's own, which its members may be told about.
type invalidPolicyError struct {
	room string
	err  error
}

func (e *invalidPolicyError) Error() string { return "room " + e.room + ": " + e.err.Error() }
func (e *invalidPolicyError) Unwrap() error { return e.err }

// seeTheLog ends a reply about a failure that is the operator's (the
// store, the homeserver's transport), whose text stays in the log.
const seeTheLog = "the operator's log has the details"

// policyTrouble is what a room is told when its access policy cannot be
// read: why its policy event is not valid, or else only that the
// operator's log has the details (logged here).
func policyTrouble(ctx context.Context, err error) string {
	if ip, ok := errors.AsType[*invalidPolicyError](err); ok {
		return "its event is not valid: " + clip.Text(ip.err.Error(), maxPolicyTrouble)
	}
	zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to read a room's access policy")
	return seeTheLog
}

// maxPolicyTrouble bounds the parse error of a room's policy event in a
// reply.
const maxPolicyTrouble = 300

// stateEvent is the part of a state event fetchPolicyState reads.
type stateEvent struct {
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// fetchPolicyState reads the room's full state and picks the access policy
// event by its type and state key. The single-event endpoint
// (GET …/state/{type}/{key}) is not used: it returns bare content, and
// Dendrite 0.13 answers it, for a bot whose invite is still pending, with the
// content of another event (the room's create event).
func (a *Appservice) fetchPolicyState(ctx context.Context, roomID id.RoomID) (json.RawMessage, bool, error) {
	cli := a.mx.BotClient()
	var events []stateEvent
	if _, err := cli.MakeRequest(ctx, http.MethodGet, cli.BuildClientURL("v3", "rooms", roomID, "state"), nil, &events); err != nil {
		return nil, false, fmt.Errorf("failed to read the room's state: %w", err)
	}
	for _, e := range events {
		if e.Type == credentials.AccessEventType && e.StateKey != nil && *e.StateKey == "" {
			return e.Content, true, nil
		}
	}
	return nil, false, nil
}

// RoomEncrypted reports whether the room has m.room.encryption, which makes
// Element Call encrypt the call's media (per-member keys).
func (a *Appservice) RoomEncrypted(ctx context.Context, roomID string) (bool, error) {
	enc, err := a.state.IsEncrypted(ctx, id.RoomID(roomID))
	if err == nil && enc {
		return true, nil
	}
	var content event.EncryptionEventContent
	err = a.mx.BotClient().StateEvent(ctx, id.RoomID(roomID), event.StateEncryption, "", &content)
	switch {
	case err == nil:
		return content.Algorithm != "", nil
	case errors.Is(err, mautrix.MNotFound), errors.Is(err, mautrix.MForbidden):
		return false, nil
	}
	return false, fmt.Errorf("failed to read the room's encryption state: %w", err)
}

// Notice posts a notice in a room if the bot is a member there.
func (a *Appservice) Notice(ctx context.Context, roomID, text string) error {
	if !a.state.IsInRoom(ctx, id.RoomID(roomID), a.botID) {
		return nil
	}
	_, err := a.mx.BotIntent().SendMessageEvent(ctx, id.RoomID(roomID), event.EventMessage, notice(text))
	return err
}

// DirectMessage sends text to a user in the bot's direct chat with them,
// creating the chat (and inviting the user) the first time.
func (a *Appservice) DirectMessage(ctx context.Context, userID, text, html string) error {
	roomID, err := a.DirectRoom(ctx, userID)
	if err != nil {
		return err
	}
	content := notice(text)
	if html != "" {
		content.Format, content.FormattedBody = event.FormatHTML, html
	}
	_, err = a.mx.BotIntent().SendMessageEvent(ctx, id.RoomID(roomID), event.EventMessage, content)
	return err
}

// DirectRoom returns the bot's direct chat with a user, creating it (and
// inviting the user) the first time. Concurrent first calls for one user
// are serialised so only one chat is made.
func (a *Appservice) DirectRoom(ctx context.Context, userID string) (string, error) {
	a.dmMu.Lock()
	defer a.dmMu.Unlock()
	roomID, err := a.store.dmRoom(ctx, userID)
	if err != nil {
		return "", err
	}
	bot := a.mx.BotIntent()
	if roomID == "" {
		resp, err := bot.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset:   "trusted_private_chat",
			IsDirect: true,
			Invite:   []id.UserID{id.UserID(userID)},
			Name:     "gxconf",
			Topic:    "Messages about your calls from " + a.botID.String(),
		})
		if err != nil {
			return "", fmt.Errorf("failed to create direct chat with %s: %w", userID, err)
		}
		roomID = resp.RoomID.String()
		if err := a.store.putDMRoom(ctx, userID, roomID); err != nil {
			return "", err
		}
	}
	return roomID, nil
}

// policyCommand handles "!conf policy [show|set <json>|clear]".
func (a *Appservice) policyCommand(ctx context.Context, roomID id.RoomID, sender id.UserID, args []string) *event.MessageEventContent {
	verb := "show"
	if len(args) > 0 {
		verb = strings.ToLower(args[0])
	}
	current, err := a.RoomPolicy(ctx, roomID.String())
	if err != nil {
		return notice("Sorry, I could not read this room's access policy: " + policyTrouble(ctx, err) + ".")
	}
	switch verb {
	case "show":
		text := "Access policy of this room: " + describePolicy(current)
		if current != nil {
			b, _ := json.Marshal(current)
			text += "\n" + string(b)
		}
		return notice(text)
	case "set", "clear":
		var next *credentials.AccessPolicy
		if verb == "set" {
			raw := strings.TrimSpace(strings.Join(args[1:], " "))
			if raw == "" {
				return notice(fmt.Sprintf("Usage: %s policy set {\"level\":\"kritis\",\"required_credentials\":[{\"type\":\"EmployeeCredential\"}],\"allowed_homeservers\":[\"%s\"]}", a.cfg.CommandPrefix, a.botID.Homeserver()))
			}
			next, err = credentials.ParseAccessPolicy([]byte(raw))
			if err != nil {
				return notice("That policy is not valid: " + err.Error())
			}
		}
		pl := a.powerLevels(ctx, roomID)
		senderPower, topPower := powersIn(pl, sender)
		// The bot sends the state event with its own power, so the sender
		// must hold the power the room demands for sending it themselves.
		if needed := accessEventLevel(pl); senderPower < needed {
			return notice(fmt.Sprintf("I cannot make that change: setting or clearing %s needs power level %d in this room; you have %d.", credentials.AccessEventType, needed, senderPower))
		}
		if next == nil {
			if current != nil && senderPower < topPower {
				err = fmt.Errorf("%w (%d); you have %d", ErrPolicyRemovalForbidden, topPower, senderPower)
			}
		} else {
			err = a.validator.ValidatePolicyChange(current, next, senderPower, topPower)
		}
		if err != nil {
			return notice("I cannot make that change: " + err.Error())
		}
		var content any = map[string]any{}
		if next != nil {
			content = next
		}
		if _, err := a.mx.BotIntent().SendStateEvent(ctx, roomID, accessEventType, "", content); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to send a room's access policy")
			return notice(fmt.Sprintf("I could not set the policy (%s). Give me a power level that may send %s state events, or set it yourself.", mxerr.Says(err), credentials.AccessEventType))
		}
		return nil // the state event's own notice confirms it
	}
	return notice(fmt.Sprintf("Unknown policy command %q. Use: %s policy [show | set <json> | clear]", verb, a.cfg.CommandPrefix))
}

// auditPolicy records a policy change decision (an admin action by sender).
func (a *Appservice) auditPolicy(ctx context.Context, decision, roomID, sender string, level credentials.Level, reason string) {
	if a.audit == nil {
		return
	}
	if err := a.audit.Audit(ctx, credentials.AuditEntry{Decision: decision, UserID: sender, RoomID: roomID, Level: level, Reason: reason}); err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Msg("Failed to audit an access policy change")
	}
}

func levelOf(p *credentials.AccessPolicy) credentials.Level {
	if p == nil {
		return credentials.LevelPublic
	}
	return p.Level
}

// describePolicy is a one-line, human summary of a policy.
func describePolicy(p *credentials.AccessPolicy) string {
	if p == nil {
		return "none — every room member may join calls"
	}
	parts := []string{"level " + string(p.Level)}
	for _, r := range p.RequiredCredentials {
		req := "credential " + r.Type
		if r.Federation != "" {
			req += " from " + r.Federation
		}
		parts = append(parts, req)
	}
	if len(p.AllowedHomeservers) > 0 {
		parts = append(parts, "homeservers "+strings.Join(p.AllowedHomeservers, ", "))
	}
	if p.MaxParticipants > 0 {
		parts = append(parts, fmt.Sprintf("at most %d participants", p.MaxParticipants))
	}
	if len(p.NeedToKnow) > 0 {
		parts = append(parts, fmt.Sprintf("need-to-know list of %d", len(p.NeedToKnow)))
	}
	return strings.Join(parts, "; ")
}

// RoomStatus adds the policy to "!conf status".
func (a *Appservice) policyStatus(ctx context.Context, roomID id.RoomID) string {
	p, err := a.RoomPolicy(ctx, roomID.String())
	if err != nil {
		return "access policy: unreadable (" + policyTrouble(ctx, err) + ")"
	}
	return "access policy: " + describePolicy(p)
}
