package cluster

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A drain stops the node and its listener has no authentication: only the
// CLI's request (POST, application/json, no browser headers) starts one. A
// web page can make a browser POST a form or text/plain to the internal
// address (cross-site, or same-origin after DNS rebinding) without asking
// first; that must not drain the node.
func TestDrainHandlerRefusesBrowsers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		method  string
		headers map[string]string
		want    int
	}{
		{"cli", http.MethodPost, map[string]string{"Content-Type": "application/json"}, http.StatusAccepted},
		{"json with charset", http.MethodPost, map[string]string{"Content-Type": "application/json; charset=utf-8"}, http.StatusAccepted},
		{"get", http.MethodGet, nil, http.StatusMethodNotAllowed},
		{"no body type", http.MethodPost, nil, http.StatusUnsupportedMediaType},
		{"form", http.MethodPost, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"text/plain", http.MethodPost, map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"cross-site form", http.MethodPost, map[string]string{
			"Content-Type": "text/plain", "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site",
		}, http.StatusForbidden},
		{"rebound page", http.MethodPost, map[string]string{
			"Content-Type": "application/json", "Origin": "http://rebind.example:9464", "Sec-Fetch-Site": "same-origin",
		}, http.StatusForbidden},
		{"origin only", http.MethodPost, map[string]string{"Content-Type": "application/json", "Origin": "null"}, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			drains := 0
			h := DrainHandler(func() { drains++ })
			req := httptest.NewRequest(tc.method, "/cluster/drain", strings.NewReader(""))
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			require.Equal(t, tc.want, rec.Code)
			if tc.want == http.StatusAccepted {
				require.Equal(t, 1, drains)
			} else {
				require.Zero(t, drains, "drain started by a refused request")
			}
		})
	}
}
