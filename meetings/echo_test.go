package meetings

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
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

// TestBotKeepsInternalFailuresOutOfTheRoom: a failure that is not the
// user's — the homeserver unreachable, another server's long answer — is
// not repeated into the room: the bot's reply said "something went wrong
// on my side (<error>)" with the error's whole text (internal addresses,
// a proxy's page), and an invite's warning quoted the homeserver's
// transport error. A homeserver's Matrix refusal is still named, clipped.
func TestBotKeepsInternalFailuresOutOfTheRoom(t *testing.T) {
	env := newTestService(t)
	ctx := context.Background()
	bot := env.svc.Bot("!conf")
	internal := `failed to POST /_matrix/client/v3/createRoom: Post "http://10.20.30.40:8008/_matrix/client/v3/createRoom": dial tcp 10.20.30.40:8008: connect: connection refused`
	env.mx.createErr = mautrix.HTTPError{Message: "failed to POST /_matrix/client/v3/createRoom", WrappedError: errors.New(internal)}
	reply, _ := bot.HandleCommand(ctx, "!dm", alice, `create Lage start="2026-03-23 10:00"`)
	require.Contains(t, reply, "I did not schedule the meeting")
	require.Contains(t, reply, internalFailure)
	require.NotContains(t, reply, "10.20.30.40")

	const carol = "@carol:other.test"
	env.mx.createErr = nil
	long := strings.Repeat("x", 4<<10)
	env.mx.inviteErr = map[string]error{
		bob: mautrix.HTTPError{
			Request:   &http.Request{Method: http.MethodPost},
			Response:  &http.Response{StatusCode: http.StatusForbidden},
			RespError: &mautrix.RespError{ErrCode: "M_FORBIDDEN", Err: "remote server refused the invite: " + long},
		},
		carol: mautrix.HTTPError{Message: "failed to POST invite", WrappedError: errors.New(internal)},
	}
	reply, _ = bot.HandleCommand(ctx, "!dm", alice, `create Lage start="2026-03-23 10:00" `+bob+" "+carol)
	require.Contains(t, reply, "Scheduled")
	require.Contains(t, reply, "could not invite "+bob+": M_FORBIDDEN: remote server refused the invite: xxx")
	require.Contains(t, reply, "could not invite "+carol+": the homeserver did not answer")
	require.NotContains(t, reply, "10.20.30.40")
	require.Less(t, len(reply), 2048, "the remote server's text is clipped")

	// The calendar file's upload likewise: its warning went to the room
	// and the API answer with the transport error's whole text.
	env.mx.inviteErr = nil
	env.mx.uploadErr = mautrix.HTTPError{Message: "failed to upload media", WrappedError: errors.New(internal)}
	reply, _ = bot.HandleCommand(ctx, "!dm", alice, `create Lage start="2026-03-23 10:00" `+bob)
	require.Contains(t, reply, "Scheduled")
	require.Contains(t, reply, "could not upload the calendar file: the homeserver did not answer")
	require.NotContains(t, reply, "10.20.30.40")
}
