package focus

import (
	"encoding/json"
	"net/http"
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
func delayFields(id string, timeout int64, csURL string) (anySet, allSet bool) {
	return id != "" || timeout > 0 || csURL != "", id != "" && timeout > 0
}

// DecodeTokenRequest parses and validates a /get_token body. The returned error
// is an *Error ready for the wire.
func DecodeTokenRequest(body []byte) (*TokenRequest, error) {
	var req TokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errNotJSON
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
	if anySet, allSet := delayFields(r.DelayID, r.DelayTimeout, r.DelayCSAPIURL); anySet && !allSet {
		return badJSON("The request body is missing `delay_id` or `delay_timeout`")
	}
	return nil
}

// DecodeLegacyTokenRequest parses and validates a /sfu/get body.
func DecodeLegacyTokenRequest(body []byte) (*LegacyTokenRequest, error) {
	var req LegacyTokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errNotJSON
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
	}
	if anySet, allSet := delayFields(r.DelayID, r.DelayTimeout, r.DelayCSAPIURL); anySet && !allSet {
		return badJSON("The request body is missing `delay_id` or `delay_timeout`")
	}
	return nil
}

// DecodeDelayedLeaveRequest parses and validates a /delegate_delayed_leave
// body: a /get_token body whose delay_id and delay_timeout are mandatory.
func DecodeDelayedLeaveRequest(body []byte) (*TokenRequest, error) {
	req, err := DecodeTokenRequest(body)
	if err != nil {
		return req, err
	}
	if req.DelayID == "" || req.DelayTimeout <= 0 {
		return req, badJSON("The request body is missing `delay_id` or `delay_timeout`")
	}
	return req, nil
}
