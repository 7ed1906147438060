package focus

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A token request that names a member twice or spells it differently is
// refused with M_BAD_JSON naming the member: a proxy or log that reads the
// body by exact name would otherwise see another room than the focus.
func TestDecodeRefusesAmbiguousBodies(t *testing.T) {
	const good = `{"room_id":"!r:x","slot_id":"m.call#ROOM","openid_token":{"access_token":"a","matrix_server_name":"x"},` +
		`"member":{"id":"m","claimed_user_id":"@u:x","claimed_device_id":"D"},"delay_id":"d","delay_timeout":5,"unknown":1}`
	for _, decode := range []func([]byte) (*TokenRequest, error){DecodeTokenRequest, DecodeDelayedLeaveRequest} {
		req, err := decode([]byte(good))
		require.NoError(t, err)
		require.Equal(t, "!r:x", req.RoomID)
		for _, bad := range []struct{ body, names string }{
			{strings.Replace(good, `"room_id":"!r:x"`, `"room_id":"!r:x","Room_ID":"!other:x"`, 1), "Room_ID"},
			{strings.Replace(good, `"room_id":"!r:x"`, `"room_id":"!r:x","room_id":"!other:x"`, 1), "room_id"},
			{strings.Replace(good, `"room_id"`, `"ROOM_ID"`, 1), "ROOM_ID"},
			{strings.Replace(good, `"claimed_user_id"`, `"claimed_u\u017fer_id"`, 1), "claimed_u\u017fer_id"},
		} {
			_, err := decode([]byte(bad.body))
			var e *Error
			require.ErrorAs(t, err, &e, bad.body)
			require.Equal(t, 400, e.Status)
			require.Equal(t, codeBadJSON, e.Code)
			require.Contains(t, e.Message, bad.names)
		}
	}
	legacy := `{"room":"!r:x","openid_token":{"access_token":"a","matrix_server_name":"x"},"device_id":"D"}`
	_, err := DecodeLegacyTokenRequest([]byte(legacy))
	require.NoError(t, err)
	_, err = DecodeLegacyTokenRequest([]byte(strings.Replace(legacy, `"room"`, `"Room"`, 1)))
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, codeBadJSON, e.Code)
	// device_id becomes part of the identity the cluster directory holds:
	// bounded and printable, and without the colon that ends the user ID.
	for _, dev := range []string{strings.Repeat("D", 129), `D\u0001`, `D\u007f`, "8448:D", ":"} {
		_, err = DecodeLegacyTokenRequest([]byte(strings.Replace(legacy, `"device_id":"D"`, `"device_id":"`+dev+`"`, 1)))
		require.ErrorAs(t, err, &e, dev)
		require.Equal(t, codeBadJSON, e.Code)
		require.Contains(t, e.Message, "`device_id`")
	}
	_, err = DecodeLegacyTokenRequest([]byte(strings.Replace(legacy, `"device_id":"D"`, `"device_id":"`+strings.Repeat("D", 128)+`"`, 1)))
	require.NoError(t, err)
	_, err = DecodeTokenRequest([]byte(`{"room_id":`))
	require.ErrorAs(t, err, &e)
	require.Equal(t, codeNotJSON, e.Code)
}

// Identifiers are bounded printable text: 255 bytes and non-ASCII letters
// pass, a control character or a 256th byte is refused naming the field.
func TestDecodeBoundsIdentifiers(t *testing.T) {
	body := func(room string) []byte {
		return []byte(`{"room_id":"` + room + `","slot_id":"m.call#ROOM","openid_token":{"access_token":"a","matrix_server_name":"x"},` +
			`"member":{"id":"m","claimed_user_id":"@u:x","claimed_device_id":"D"}}`)
	}
	for _, room := range []string{strings.Repeat("r", 255), "!räum:x"} {
		_, err := DecodeTokenRequest(body(room))
		require.NoError(t, err, room)
	}
	for _, room := range []string{strings.Repeat("r", 256), `!r\u0000:x`, `!r\t:x`} {
		_, err := DecodeTokenRequest(body(room))
		var e *Error
		require.ErrorAs(t, err, &e, room)
		require.Equal(t, codeBadJSON, e.Code)
		require.Contains(t, e.Message, "`room_id`")
	}
}
