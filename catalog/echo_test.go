package catalog

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAdminErrorsQuoteAtMostAPrefix: the admin API's refusals name the
// field and quote at most a short prefix of request text; a 60 KB room ID,
// tier, time zone or member name came back whole in the answer.
func TestAdminErrorsQuoteAtMostAPrefix(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	alice := e.session(&Admin{Principal: Principal{Subject: "idp|alice", Org: "land-nrw", Roles: []string{"booking-admin"}}, MFA: true})
	huge := strings.Repeat("A", 60000)
	b := e.book(t, "public-20-gold", nil)
	now := e.clock.now()
	booking := func(change map[string]any) string {
		m := map[string]any{"tier": "public-20-gold", "unit": "dateRange", "valid_from": now, "valid_until": now.Add(time.Hour), "accept_terms": testTerms}
		for k, v := range change {
			m[k] = v
		}
		raw, _ := json.Marshal(m)
		return string(raw)
	}
	bind, _ := json.Marshal(map[string]any{"room_id": "!" + huge})
	unbind, _ := json.Marshal(map[string]any{"room_id": "!" + huge + ":x"})
	cases := []struct{ name, path, body string }{
		{"room to bind", "/catalog/admin/api/bookings/" + b.ID + "/rooms", string(bind)},
		{"room to unbind", "/catalog/admin/api/bookings/" + b.ID + "/unbind", string(unbind)},
		{"tier", "/catalog/admin/api/bookings", booking(map[string]any{"tier": huge})},
		{"time zone", "/catalog/admin/api/bookings", booking(map[string]any{"tz": huge})},
		{"unit", "/catalog/admin/api/bookings", booking(map[string]any{"unit": huge})},
		{"rooms", "/catalog/admin/api/bookings", booking(map[string]any{"rooms": []string{huge}})},
		{"unknown member", "/catalog/admin/api/bookings", booking(map[string]any{huge: 1})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := call(t, srv, alice, true, http.MethodPost, tc.path, tc.body)
			require.NotEqual(t, http.StatusOK, code, "%.200s", out)
			require.Less(t, len(out), 512, "answer of %d bytes: %.300s", len(out), out)
		})
	}
}
