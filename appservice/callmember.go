package appservice

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// MatrixRTC event types.
const (
	// TypeCallMember is MSC3401's legacy call membership state event.
	TypeCallMember = "org.matrix.msc3401.call.member"
	// TypeRTCMember is MSC4143's membership (a sticky event, MSC4354).
	TypeRTCMember = "org.matrix.msc4143.rtc.member"
	// legacySlot is the slot the empty call ID "" maps to.
	legacySlot = "m.call#ROOM"
	// stickyMax is MSC4354's longest sticky duration; a membership lapses after it.
	stickyMax = time.Hour
	// maxIDLength bounds IDs taken from event content.
	maxIDLength = 255
)

var errBadCallMember = errors.New("malformed call membership")

// legacyCallContent is the content of an org.matrix.msc3401.call.member event
// (matrix-js-sdk membershipData/session.ts). An empty object means "left".
type legacyCallContent struct {
	Application   string  `json:"application"`
	CallID        *string `json:"call_id"`
	DeviceID      string  `json:"device_id"`
	CreatedTS     int64   `json:"created_ts"`
	Expires       int64   `json:"expires"`
	FociPreferred []struct {
		Type              string `json:"type"`
		LivekitServiceURL string `json:"livekit_service_url"`
	} `json:"foci_preferred"`
}

// rtcMemberContent is the content of an org.matrix.msc4143.rtc.member event
// (MSC4143, matrix-js-sdk v43).
type rtcMemberContent struct {
	SlotID string `json:"slot_id"`
	Member *struct {
		ID              string `json:"id"`
		UserID          string `json:"user_id"`
		DeviceID        string `json:"device_id"`
		ClaimedDeviceID string `json:"claimed_device_id"`
		Membership      string `json:"membership"`
	} `json:"member"`
	StickyKey     string          `json:"sticky_key"`
	MSCStickyKey  string          `json:"msc4354_sticky_key"`
	LeaveReason   string          `json:"leave_reason"`
	Transports    json.RawMessage `json:"transports"`
	FociPreferred []struct {
		LivekitServiceURL string `json:"livekit_service_url"`
	} `json:"foci_preferred"`
}

// ParseCallMember turns a call membership event into a CallMember. leave is
// true when the event ends the membership (empty content, membership "leave").
// The user is always the event's sender; content cannot claim another user.
// A member spelled differently from its field ("Device_ID") is refused: a
// client's JSON reader would not see it, so gxconf must not either.
func ParseCallMember(evtType, sender, roomID string, stateKey *string, originTS int64, content json.RawMessage) (m CallMember, leave bool, err error) {
	m = CallMember{RoomID: roomID, UserID: sender, UpdatedAt: time.UnixMilli(originTS)}
	if len(content) > 64<<10 {
		return m, false, fmt.Errorf("%w: content too large", errBadCallMember)
	}
	switch evtType {
	case TypeCallMember:
		if stateKey == nil {
			return m, false, fmt.Errorf("%w: %s must be a state event", errBadCallMember, evtType)
		}
		m.Kind, m.Key = "msc3401", *stateKey
		if hasControl(m.Key) {
			return m, false, fmt.Errorf("%w: control character in state key", errBadCallMember)
		}
		var c legacyCallContent
		if err := strictjson.Unmarshal(content, &c); err != nil {
			return m, false, fmt.Errorf("%w: %v", errBadCallMember, err)
		}
		if c.Application == "" && c.DeviceID == "" {
			return m, true, nil
		}
		if !plainID(c.DeviceID) {
			return m, false, fmt.Errorf("%w: device_id missing, too long or with control characters", errBadCallMember)
		}
		m.DeviceID = c.DeviceID
		m.SlotID = legacySlot
		if c.CallID != nil && *c.CallID != "" {
			if !plainID(*c.CallID) {
				return m, false, fmt.Errorf("%w: call_id too long or with control characters", errBadCallMember)
			}
			m.SlotID = "m.call#" + *c.CallID
		}
		for _, f := range c.FociPreferred {
			if f.Type == "livekit" && f.LivekitServiceURL != "" && !hasControl(f.LivekitServiceURL) {
				m.FocusURL = f.LivekitServiceURL
				break
			}
		}
		if c.Expires > 0 {
			start := c.CreatedTS
			if start == 0 {
				start = originTS
			}
			m.ExpiresAt = time.UnixMilli(start).Add(time.Duration(c.Expires) * time.Millisecond)
		}
		return m, false, nil
	case TypeRTCMember:
		m.Kind = "msc4143"
		var c rtcMemberContent
		if err := strictjson.Unmarshal(content, &c); err != nil {
			return m, false, fmt.Errorf("%w: %v", errBadCallMember, err)
		}
		// A state event replaces whatever has its state key in the room, as
		// room state does. A sticky event replaces only its own sender's
		// event with that key (MSC4354 keys sticky events by sender), so its
		// key is scoped by the sender: another member sending alice's key
		// must not overwrite or end alice's membership.
		switch {
		case stateKey != nil && *stateKey != "":
			m.Key = *stateKey
		case c.StickyKey != "":
			m.Key = c.StickyKey
		case c.MSCStickyKey != "":
			m.Key = c.MSCStickyKey
		case c.Member != nil && c.Member.ID != "":
			m.Key = c.Member.ID
		default:
			return m, false, fmt.Errorf("%w: no sticky key or member id", errBadCallMember)
		}
		if !plainID(m.Key) {
			return m, false, fmt.Errorf("%w: key too long or with control characters", errBadCallMember)
		}
		if stateKey == nil || *stateKey == "" {
			m.Key = stickyKey(sender, m.Key)
		}
		if c.SlotID == "" || c.Member == nil || c.Member.Membership == "leave" {
			return m, true, nil
		}
		m.SlotID, m.MemberID = c.SlotID, c.Member.ID
		m.DeviceID = c.Member.DeviceID
		if m.DeviceID == "" {
			m.DeviceID = c.Member.ClaimedDeviceID
		}
		if !plainID(m.MemberID) || !plainID(m.DeviceID) || !plainID(m.SlotID) {
			return m, false, fmt.Errorf("%w: member id, device id or slot id missing, too long or with control characters", errBadCallMember)
		}
		for _, f := range c.FociPreferred {
			if f.LivekitServiceURL != "" && !hasControl(f.LivekitServiceURL) {
				m.FocusURL = f.LivekitServiceURL
				break
			}
		}
		m.ExpiresAt = time.UnixMilli(originTS).Add(stickyMax)
		return m, false, nil
	}
	return m, false, fmt.Errorf("%w: unknown type %s", errBadCallMember, evtType)
}

// stickyKey scopes a sticky event's key by its sender. User IDs contain no
// space, so no other sender's key can spell the same.
func stickyKey(sender, key string) string { return sender + " " + key }

// plainID reports whether s can identify something taken from event
// content: not empty, at most maxIDLength bytes and free of control
// characters. No client sends a control character in an ID, and PostgreSQL
// text cannot hold a NUL at all, so storing one would fail the transaction.
func plainID(s string) bool {
	return s != "" && len(s) <= maxIDLength && !hasControl(s)
}

// hasControl reports whether s holds a control character (C0, DEL or C1).
func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}
