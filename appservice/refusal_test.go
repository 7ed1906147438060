package appservice

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/internal/logbuf"
)

// TestUnauthorizedRequestsCountedAndLogged: a request without a valid
// hs_token is refused as before, and now counted
// (gxconf_appservice_unauthorized_requests_total{reason}) and logged
// without the token, on every endpoint: user and alias queries and pings
// were refused without a trace, transactions only counted.
func TestUnauthorizedRequestsCountedAndLogged(t *testing.T) {
	a := newTestAppservice(t, "http://127.0.0.1:1")
	logs := &logbuf.Buffer{}
	a.log = zerolog.New(logs)
	h := a.Handler()
	const wrong = "not-the-hs-token-0123456789abcdef"
	for _, tc := range []struct{ method, path string }{
		{http.MethodPut, "/_matrix/app/v1/transactions/t1"},
		{http.MethodGet, "/_matrix/app/v1/users/@gxconf:hs.test"},
		{http.MethodGet, "/_matrix/app/v1/rooms/%23a:hs.test"},
		{http.MethodPost, "/_matrix/app/v1/ping"},
	} {
		for _, token := range []string{"", wrong} {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(`{"events":[]}`))
			want := http.StatusUnauthorized
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
				want = http.StatusForbidden
			}
			h.ServeHTTP(rec, req)
			require.Equal(t, want, rec.Code, "%s %s", tc.method, tc.path)
		}
	}
	require.Equal(t, 4.0, testutil.ToFloat64(a.metrics.unauthorized.WithLabelValues("missing")))
	require.Equal(t, 4.0, testutil.ToFloat64(a.metrics.unauthorized.WithLabelValues("invalid")))
	out := logs.String()
	require.Equal(t, 8, strings.Count(out, "Refused a request without a valid hs_token"), out)
	require.Contains(t, out, "/_matrix/app/v1/ping")
	require.NotContains(t, out, wrong, "the token is never logged")
}

// TestUnauthorizedRefusalLogsBounded: each request refused for its
// hs_token is counted, but at most unauthLogBurst a minute are logged,
// so whoever reaches the listener cannot flood the log.
func TestUnauthorizedRefusalLogsBounded(t *testing.T) {
	a := newTestAppservice(t, "http://127.0.0.1:1")
	logs := &logbuf.Buffer{}
	a.log = zerolog.New(logs)
	h := a.Handler()
	const n = 2*unauthLogBurst + 5
	for range n {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/_matrix/app/v1/ping", strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer nope")
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusForbidden, rec.Code)
	}
	require.Equal(t, float64(n), testutil.ToFloat64(a.metrics.unauthorized.WithLabelValues("invalid")))
	require.Equal(t, unauthLogBurst, strings.Count(logs.String(), "Refused a request without a valid hs_token"))
}

// brokenBody ends with an error, as a body that broke off.
type brokenBody struct{ r io.Reader }

func (b brokenBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, errors.New("connection reset")
	}
	return n, err
}

// TestTransactionBodyRefusals: a body beyond max_transaction_bytes is
// refused 413 M_TOO_LARGE naming the limit and its setting, and logged; a
// body that broke off is not "too large" (it was answered and counted as
// one): 400, result "read_error".
func TestTransactionBodyRefusals(t *testing.T) {
	a := newTestAppservice(t, "http://127.0.0.1:1")
	logs := &logbuf.Buffer{}
	a.log = zerolog.New(logs)
	h := a.Handler()
	put := func(body io.Reader) (int, map[string]string) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/t1", body)
		req.Header.Set("Authorization", "Bearer "+a.reg.ServerToken)
		h.ServeHTTP(rec, req)
		var out map[string]string
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out), rec.Body.String())
		return rec.Code, out
	}
	huge := `{"events":[],"pad":"` + strings.Repeat("x", int(a.cfg.MaxTransactionBytes)) + `"}`
	code, out := put(strings.NewReader(huge))
	require.Equal(t, http.StatusRequestEntityTooLarge, code)
	require.Equal(t, "M_TOO_LARGE", out["errcode"])
	require.Contains(t, out["error"], "max_transaction_bytes")
	require.Equal(t, 1.0, testutil.ToFloat64(a.metrics.transactions.WithLabelValues("too_large")))
	require.Contains(t, logs.String(), "Refused a transaction larger than appservice.max_transaction_bytes")

	code, out = put(brokenBody{strings.NewReader(`{"events":[`)})
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "M_UNKNOWN", out["errcode"])
	require.Equal(t, 1.0, testutil.ToFloat64(a.metrics.transactions.WithLabelValues("too_large")), "not too large")
	require.Equal(t, 1.0, testutil.ToFloat64(a.metrics.transactions.WithLabelValues("read_error")))

	// Neither was recorded as processed: the homeserver's retry is processed.
	require.Equal(t, http.StatusOK, putTransaction(t, a, "t1"))
	require.Equal(t, 1.0, testutil.ToFloat64(a.metrics.transactions.WithLabelValues("ok")))
}

// TestMalformedTransactionRefusalNamesTheProblem: a transaction body that
// is not one is refused 400 M_NOT_JSON as before, the error now saying
// what is wrong (it said only "Malformed transaction").
func TestMalformedTransactionRefusalNamesTheProblem(t *testing.T) {
	a := newTestAppservice(t, "http://127.0.0.1:1")
	h := a.Handler()
	for body, says := range map[string]string{
		`{"events":{}}`:    "events",
		`{"events":[`:      "unexpected end of JSON input",
		`{"pdus":[1,2,3]}`: "events: missing",
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/t1", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+a.reg.ServerToken)
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusBadRequest, rec.Code, body)
		var out map[string]string
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
		require.Equal(t, "M_NOT_JSON", out["errcode"])
		require.Contains(t, out["error"], says, body)
	}
}
