package credentials

import (
	"context"
	"encoding/json"
	"io"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestResponseErrorsQuoteAtMostAPrefix: a wallet response refused for
// text it sent (a repeated parameter's name, a presentation_submission's
// definition_id or format, a DCQL query id) is answered and audited with
// at most a short prefix of that text; 200 KB of it came back whole in
// error_description and went into the audit log's reason.
func TestResponseErrorsQuoteAtMostAPrefix(t *testing.T) {
	e := newTestEnv(t, nil, nil, nil)
	e.rooms[kritisRoom] = kritisPolicy()
	ctx := context.Background()
	long := strings.Repeat("q", 200<<10)
	sub := func(defID, format string) string {
		raw, _ := json.Marshal(map[string]any{"id": "s", "definition_id": defID,
			"descriptor_map": []map[string]any{{"id": "x", "format": format, "path": "$"}}})
		return string(raw)
	}
	cases := []struct {
		name string
		form url.Values
		code string
	}{
		{"repeated parameter", url.Values{"vp_token": {"x"}, long[:100<<10]: {"a", "b"}}, "malformed"},
		{"definition_id", url.Values{"vp_token": {"x"}, "presentation_submission": {sub(long, "ldp_vp")}}, "submission_mismatch"},
		{"format", url.Values{"vp_token": {"x"}, "presentation_submission": {sub("", long)}}, ""},
		{"DCQL query id", url.Values{"vp_token": {`{"` + long + `":["x"]}`}}, "submission_mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := e.request(t, newUser(), kritisRoom)
			if tc.name == "format" {
				// the definition the verifier asked for, so the format is looked at
				sr, err := e.v.store.getRequest(ctx, req.ID)
				require.NoError(t, err)
				tc.form.Set("presentation_submission", sub(sr.ID, long))
			}
			resp, err := e.client().PostForm(e.srv.URL+MountPath+"response/"+req.ID, tc.form)
			require.NoError(t, err)
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			require.Less(t, len(raw), 1024, "answer of %d bytes: %.300s", len(raw), raw)
			if tc.code != "" {
				require.Equal(t, tc.code, errorCode(t, string(raw)), "%.300s", raw)
			}
			require.Contains(t, string(raw), "qqqq", "the text is quoted by a prefix")
		})
	}
	var longest int
	require.NoError(t, e.db.QueryRow(ctx, `SELECT COALESCE(MAX(LENGTH(reason)), 0) FROM credentials_audit`).Scan(&longest))
	require.Less(t, longest, 1024, "audit reasons are bounded")
}
