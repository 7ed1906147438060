package focus

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// OpenIDToken is the token a client got from its homeserver's
// /openid/request_token. ExpiresIn is ignored: Dendrite sends an absolute time.
type OpenIDToken struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int64  `json:"expires_in"`
}

// Member is the MatrixRTC membership a /get_token request is for.
type Member struct {
	ID              string `json:"id"`
	ClaimedUserID   string `json:"claimed_user_id"`
	ClaimedDeviceID string `json:"claimed_device_id"`
}

// TokenRequest is the body of POST /get_token (MSC4195, as lk-jwt-service).
// Unknown fields are accepted for forward compatibility.
type TokenRequest struct {
	RoomID        string      `json:"room_id"`
	SlotID        string      `json:"slot_id"`
	OpenIDToken   OpenIDToken `json:"openid_token"`
	Member        Member      `json:"member"`
	DelayID       string      `json:"delay_id,omitempty"`
	DelayTimeout  int64       `json:"delay_timeout,omitempty"`
	DelayCSAPIURL string      `json:"delay_cs_api_url,omitempty"`
}

// LegacyTokenRequest is the body of the deprecated POST /sfu/get.
type LegacyTokenRequest struct {
	Room          string      `json:"room"`
	OpenIDToken   OpenIDToken `json:"openid_token"`
	DeviceID      string      `json:"device_id"`
	DelayID       string      `json:"delay_id,omitempty"`
	DelayTimeout  int64       `json:"delay_timeout,omitempty"`
	DelayCSAPIURL string      `json:"delay_cs_api_url,omitempty"`
}

// TokenResponse is the answer of both token endpoints.
type TokenResponse struct {
	URL string `json:"url"`
	JWT string `json:"jwt"`
}

// errNotJSON is lk-jwt-service's answer to a body that does not decode.
var errNotJSON = &Error{Status: http.StatusBadRequest, Code: codeNotJSON, Message: "Error reading request"}

// delayFields reports whether any and all delayed-leave fields are present.
// delay_cs_api_url does not count: it is ignored (lk-jwt-service#188).
func delayFields(id string, timeout int64) (anySet, allSet bool) {
	return id != "" || timeout > 0, id != "" && timeout > 0
}

// decodeBody decodes a request body as lk-jwt-service does (unknown members
// are ignored), except that a member named twice, or spelled differently
// from the field's name (encoding/json would take "Room_ID" for
// "room_id"), is refused: a proxy or log reading the body by exact name
// would otherwise see another room or user than the focus.
func decodeBody(body []byte, v any) error {
	err := strictjson.Unmarshal(body, v)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, strictjson.ErrDuplicateName), errors.Is(err, strictjson.ErrSpelling):
		return badJSON("The request body is ambiguous: " + err.Error())
	}
	return errNotJSON
}

// DecodeTokenRequest parses and validates a /get_token body. The returned error
// is an *Error ready for the wire.
func DecodeTokenRequest(body []byte) (*TokenRequest, error) {
	var req TokenRequest
	if err := decodeBody(body, &req); err != nil {
		return nil, err
	}
	return &req, req.Validate()
}

// Validate checks the fields lk-jwt-service requires, naming what is missing.
func (r *TokenRequest) Validate() error {
	switch {
	case r.RoomID == "" || r.SlotID == "":
		return badJSON("The request body is missing `room_id` or `slot_id`")
	case r.Member.ID == "" || r.Member.ClaimedUserID == "" || r.Member.ClaimedDeviceID == "":
		return badJSON("The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`")
	case r.OpenIDToken.AccessToken == "" || r.OpenIDToken.MatrixServerName == "":
		return badJSON("The request body `openid_token` is missing a `access_token` or `matrix_server_name`")
	}
	if err := r.checkText(); err != nil {
		return err
	}
	if anySet, allSet := delayFields(r.DelayID, r.DelayTimeout); anySet && !allSet {
		return badJSON("The request body is missing `delay_id` or `delay_timeout`")
	}
	return nil
}

// checkText refuses identifiers that are not bounded printable text, before
// anything is stored: PostgreSQL text cannot hold NUL (a grant with it was a
// 500), and logs and the audit trail should not carry control characters.
func (r *TokenRequest) checkText() error {
	return printableFields(
		field{"room_id", r.RoomID}, field{"slot_id", r.SlotID}, field{"member.id", r.Member.ID},
		field{"member.claimed_user_id", r.Member.ClaimedUserID},
		field{"member.claimed_device_id", r.Member.ClaimedDeviceID},
	)
}

// DecodeLegacyTokenRequest parses and validates a /sfu/get body.
func DecodeLegacyTokenRequest(body []byte) (*LegacyTokenRequest, error) {
	var req LegacyTokenRequest
	if err := decodeBody(body, &req); err != nil {
		return nil, err
	}
	return &req, req.Validate()
}

// Validate checks the fields lk-jwt-service requires. device_id is not
// required there either; without it the identity is "@user:server:".
func (r *LegacyTokenRequest) Validate() error {
	switch {
	case r.Room == "":
		return badJSON("Missing room parameter")
	case r.OpenIDToken.AccessToken == "" || r.OpenIDToken.MatrixServerName == "":
		return badJSON("Missing OpenID token parameters")
	case !printable(r.Room, maxField):
		return badJSON(fmt.Sprintf("`room` must be at most %d bytes of printable text", maxField))
	case !printable(r.DeviceID, maxDeviceID):
		// It becomes part of the LiveKit identity, which the cluster
		// directory (names ≤ 512 bytes, no control characters) must hold:
		// with a user ID of at most maxField bytes, 255+1+128.
		return badJSON(fmt.Sprintf("`device_id` must be at most %d bytes of printable text", maxDeviceID))
	case strings.Contains(r.DeviceID, ":"):
		// The identity "<user_id>:<device_id>" must name one user and
		// device: with a colon in the unverified device ID, @a:b.c with
		// device 8448:X would get the identity of @a:b.c:8448 with device
		// X and, as a duplicate identity, drop them from the call and
		// take their place. Homeservers generate device IDs without colons
		// (Synapse: ten capital letters, Dendrite: unpadded URL-safe
		// base64); lk-jwt-service takes any.
		return badJSON("`device_id` must not contain ':'")
	}
	if anySet, allSet := delayFields(r.DelayID, r.DelayTimeout); anySet && !allSet {
		return badJSON("The request body is missing `delay_id` or `delay_timeout`")
	}
	return nil
}

// maxDeviceID bounds a legacy request's device_id (Matrix device IDs are
// short; homeservers generate ten letters).
const maxDeviceID = 128

// maxField bounds the other identifiers of a request: Matrix room and user
// IDs are at most 255 bytes (Client-Server API, "Identifier Grammar"), and
// slot and member IDs are short in practice.
const maxField = 255

// field is a request field by its name in the body, for error messages.
type field struct{ name, value string }

// printableFields refuses the first field that is not printable text of at
// most maxField bytes, naming it.
func printableFields(fields ...field) error {
	for _, f := range fields {
		if !printable(f.value, maxField) {
			return badJSON(fmt.Sprintf("`%s` must be at most %d bytes of printable text", f.name, maxField))
		}
	}
	return nil
}

// printable tells whether s is valid UTF-8 of at most max bytes without
// control characters (the empty string included).
func printable(s string, max int) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// DecodeDelayedLeaveRequest parses and validates a /delegate_delayed_leave
// body: a /get_token body whose delay_id and delay_timeout are mandatory
// (with lk-jwt-service's wording of the errors).
func DecodeDelayedLeaveRequest(body []byte) (*TokenRequest, error) {
	var r TokenRequest
	if err := decodeBody(body, &r); err != nil {
		return nil, err
	}
	switch {
	case r.RoomID == "" || r.SlotID == "":
		return &r, badJSON("The request body is missing `room_id` or `slot_id`")
	case r.Member.ID == "" || r.Member.ClaimedUserID == "" || r.Member.ClaimedDeviceID == "":
		return &r, badJSON("The request body `member` is missing `id`, `claimed_user_id` or `claimed_device_id`")
	case r.OpenIDToken.AccessToken == "" || r.OpenIDToken.MatrixServerName == "":
		return &r, badJSON("The request body `openid_token` is missing `access_token` or `matrix_server_name`")
	case r.DelayID == "" || r.DelayTimeout <= 0:
		return &r, badJSON("The request body is missing `delay_id` or `delay_timeout`")
	}
	return &r, r.checkText()
}

// checkDelay applies the focus's bounds to a delegation's fields (beyond
// lk-jwt-service, which takes any positive timeout and any delay ID): the
// timeout within delayed_events.{min,max}_delay_timeout, the delay ID an
// opaque identifier of at most 255 bytes of printable text that is not a dot
// segment.
func checkDelay(cfg DelayedEventsConfig, delayID string, timeoutMs int64) (time.Duration, error) {
	if delayID == "" {
		return 0, nil
	}
	if !printable(delayID, maxField) || delayID == "." || delayID == ".." {
		return 0, badJSON("The request body has an invalid `delay_id`")
	}
	timeout := time.Duration(timeoutMs) * time.Millisecond
	if timeoutMs > int64(cfg.MaxDelayTimeout/time.Millisecond) || timeout < cfg.MinDelayTimeout {
		return 0, badJSON(fmt.Sprintf("`delay_timeout` must be between %d and %d ms",
			cfg.MinDelayTimeout.Milliseconds(), cfg.MaxDelayTimeout.Milliseconds()))
	}
	return timeout, nil
}
