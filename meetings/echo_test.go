package meetings

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAPIErrorsQuoteAtMostAPrefix: a refused request is answered naming
// the field and quoting at most a short prefix of what was sent; a
// 900 KB field name or value was echoed whole (answers of up to 1.8 MB).
func TestAPIErrorsQuoteAtMostAPrefix(t *testing.T) {
	env := newTestService(t, func(o *Options) { o.Auth = fakeAuth{} })
	srv := httptest.NewServer(env.svc.Handler())
	defer srv.Close()
	long := strings.Repeat("v", 900<<10)
	valid := `"title":"T","start":"2026-03-23T10:00","duration":"1h","timezone":"Europe/Berlin"`
	cases := []struct{ name, field, body string }{
		{"unknown member", "body", `{` + valid + `,"` + long + `":1}`},
		{"duplicate member", "body", `{` + valid + `,"` + long + `":1,"` + long + `":2}`},
		{"invitee", "participants", `{` + valid + `,"invite":["@` + long + `"]}`},
		{"time zone", "timezone", `{"title":"T","start":"2026-03-23T10:00","duration":"1h","timezone":"` + long + `"}`},
		{"start", "start", `{"title":"T","start":"` + long + `","duration":"1h","timezone":"Europe/Berlin"}`},
		{"start with a date", "start", `{"title":"T","start":"2026-03-23 ` + long + `","duration":"1h","timezone":"Europe/Berlin"}`},
		{"duration", "duration", `{"title":"T","start":"2026-03-23T10:00","duration":"` + long + `","timezone":"Europe/Berlin"}`},
		{"rrule", "rrule", `{` + valid + `,"rrule":"FREQ=WEEKLY;` + long + `"}`},
		{"repeat", "repeat", `{` + valid + `,"repeat":"` + long + `"}`},
		{"until", "until", `{` + valid + `,"repeat":"weekly","until":"` + long + `"}`},
		{"except", "except", `{` + valid + `,"rrule":"FREQ=WEEKLY;COUNT=3","except":["` + long + `"]}`},
		{"level", "level", `{` + valid + `,"level":"` + long + `"}`},
		{"booking", "booking", `{` + valid + `,"booking":"` + long + `"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/meetings/v1/meeting/create", strings.NewReader(tc.body))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer token-alice")
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%.300s", raw)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			require.Less(t, len(raw), 512, "answer of %d bytes: %.300s", len(raw), raw)
			var out map[string]string
			require.NoError(t, json.Unmarshal(raw, &out))
			require.Equal(t, "M_INVALID_PARAM", out["errcode"])
			require.True(t, strings.HasPrefix(out["error"], tc.field+":"), "names the field: %s", out["error"])
		})
	}
	// The bot answers with the same text.
	require.Less(t, len(describeError(invalid("participants", "%q is not a Matrix user ID", long))), 256)
	require.Less(t, len(describeError(fmt.Errorf("wrapped: %w", invalid("rrule", "%v", fmt.Errorf("bad %s", long))))), 512)
}
