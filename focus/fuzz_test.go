package focus

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// Property: no panic; an accepted request re-marshals and decodes to the same value.
func FuzzDecodeTokenRequest(f *testing.F) {
	f.Add([]byte(`{"room_id":"!r:x","slot_id":"m.call#ROOM","openid_token":{"access_token":"a","matrix_server_name":"x"},"member":{"id":"m","claimed_user_id":"@u:x","claimed_device_id":"D"}}`))
	f.Add([]byte(`{"room_id":"!r:x","slot_id":"s","delay_id":"d","delay_timeout":5,"extra":[1,2]}`))
	f.Add([]byte(`{`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, decode := range []func([]byte) (*TokenRequest, error){DecodeTokenRequest, DecodeDelayedLeaveRequest} {
			req, err := decode(body)
			if err != nil {
				var e *Error
				require.ErrorAs(t, err, &e)
				require.Contains(t, []int{400}, e.Status)
				continue
			}
			again, err := json.Marshal(req)
			require.NoError(t, err)
			req2, err := decode(again)
			require.NoError(t, err)
			require.Equal(t, req, req2)
		}
	})
}

func FuzzDecodeLegacyTokenRequest(f *testing.F) {
	f.Add([]byte(`{"room":"!r:x","device_id":"D","openid_token":{"access_token":"a","matrix_server_name":"x"}}`))
	f.Add([]byte(`{"room":""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeLegacyTokenRequest(body)
		if err != nil {
			var e *Error
			require.ErrorAs(t, err, &e)
			return
		}
		again, err := json.Marshal(req)
		require.NoError(t, err)
		req2, err := DecodeLegacyTokenRequest(again)
		require.NoError(t, err)
		require.Equal(t, req, req2)
	})
}

func FuzzValidServerName(f *testing.F) {
	for _, s := range []string{"example.com", "[::1]:8448", "1.2.3.4", "a:b:c", "["} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if validServerName(s) != nil {
			return
		}
		host, port := splitServerName(s)
		require.NotEmpty(t, host)
		if port != "" {
			require.Equal(t, s, host+":"+port)
		}
	})
}
