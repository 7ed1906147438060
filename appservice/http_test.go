package appservice

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// Unknown routes and unsupported methods are answered as the Application
// Service API requires: 404 / 405 with {"errcode":"M_UNRECOGNIZED"} JSON.
func TestUnrecognizedRequests(t *testing.T) {
	h := (&Appservice{metrics: newMetrics(prometheus.NewRegistry())}).Handler()
	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/_matrix/app/v1/nothing-here", http.StatusNotFound, ""},
		{http.MethodGet, "/", http.StatusNotFound, ""},
		{http.MethodPost, "/_matrix/app/v1/transactions/t1", http.StatusMethodNotAllowed, "PUT"},
		{http.MethodDelete, "/_matrix/app/v1/users/@a:b", http.StatusMethodNotAllowed, "GET, HEAD"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader("{}")))
			require.Equal(t, tc.status, rec.Code)
			require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			var body map[string]string
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), rec.Body.String())
			require.Equal(t, "M_UNRECOGNIZED", body["errcode"])
			if tc.allow != "" {
				require.Equal(t, tc.allow, rec.Header().Get("Allow"))
			}
		})
	}
	// Known routes still reach their handlers (here: no token → 401).
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/t1", strings.NewReader("{}")))
	require.Equal(t, http.StatusUnauthorized, rec.Code)
}
