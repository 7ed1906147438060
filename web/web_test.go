package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	resp := rec.Result()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

// TestHandler checks whichever build this is: the bundle (after `make web`)
// or the placeholder page.
func TestHandler(t *testing.T) {
	h := Handler()
	if !Built() {
		resp, body := get(t, h, "/")
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		require.Contains(t, body, "make web")
		return
	}
	resp, body := get(t, h, "/")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, "gxconf call self-test")
	require.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"))
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self' 'wasm-unsafe-eval'")
	for path, ctype := range map[string]string{
		"/app.js":                             "text/javascript; charset=utf-8",
		"/e2ee-worker.js":                     "text/javascript; charset=utf-8",
		"/pkg/matrix_sdk_crypto_wasm_bg.wasm": "application/wasm",
	} {
		resp, _ := get(t, h, path)
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.Equal(t, ctype, resp.Header.Get("Content-Type"), path)
	}
}

func TestNotBuiltPage(t *testing.T) {
	resp, body := get(t, http.HandlerFunc(notBuilt), "/anything")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Contains(t, body, "make web")
}
