package focus

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestErrorsQuoteAtMostAPrefix: a request whose member names are refused
// (named twice, or twice up to case) is answered naming them by a short
// prefix, not with the names themselves: 60 KB names in a 64 KB body
// made a 120 KB error answer (and log line).
func TestErrorsQuoteAtMostAPrefix(t *testing.T) {
	h := newHarness(t, nil)
	long := strings.Repeat("k", 30<<10)
	for name, body := range map[string]string{
		"duplicate":         `{"` + long + `": 1, "` + long + `": 2}`,
		"duplicate by case": `{"` + long + `": 1, "` + strings.ToUpper(long) + `": 2}`,
	} {
		for _, path := range []string{"/get_token", "/sfu/get", "/delegate_delayed_leave"} {
			t.Run(name+" "+path, func(t *testing.T) {
				resp, err := http.Post(h.srv.URL+path, "application/json", bytes.NewReader([]byte(body)))
				require.NoError(t, err)
				raw, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(raw))
				require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
				require.Contains(t, string(raw), "M_BAD_JSON")
				require.Contains(t, string(raw), "kkkk", "the names are quoted by a prefix")
				require.Less(t, len(raw), 512, "answer of %d bytes: %.200s", len(raw), raw)
			})
		}
	}
}
