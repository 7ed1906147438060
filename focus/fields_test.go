package focus

import (
	"context"
	"net/http"
	"strings"
	"testing"

	_ "github.com/lib/pq"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"

	testharness "github.com/gxfs-conf/gxconf/test/harness"
)

// badFieldCase is a request to one of the token endpoints with one field
// that is not bounded printable text.
type badFieldCase struct {
	name, path, field string
	body              map[string]any
}

// badFieldCases covers every identifier of /get_token, /sfu/get and
// /delegate_delayed_leave with a NUL (which PostgreSQL text cannot hold),
// another control character and an overlong value.
func badFieldCases() []badFieldCase {
	var cases []badFieldCase
	bad := map[string]string{"NUL": "X\x00", "newline": "X\nY", "DEL": "X\x7f", "overlong": strings.Repeat("x", 256)}
	for _, path := range []string{"/get_token", "/delegate_delayed_leave"} {
		for _, f := range []string{"room_id", "slot_id", "member.id", "member.claimed_user_id", "member.claimed_device_id", "delay_id"} {
			for kind, v := range bad {
				b := tokenBody("tok-alice", "local.test", "@alice:local.test")
				b["delay_id"], b["delay_timeout"] = "syd_1", 5000
				if m, ok := strings.CutPrefix(f, "member."); ok {
					b["member"].(map[string]any)[m] = v
				} else {
					b[f] = v
				}
				cases = append(cases, badFieldCase{name: path + " " + f + " " + kind, path: path, field: f, body: b})
			}
		}
	}
	for _, f := range []string{"room", "device_id", "delay_id"} {
		for kind, v := range bad {
			b := map[string]any{
				"room":         "!room:local.test",
				"openid_token": map[string]any{"access_token": "tok-alice", "matrix_server_name": "local.test"},
				"device_id":    "DEV1", "delay_id": "syd_1", "delay_timeout": 5000,
			}
			b[f] = v
			cases = append(cases, badFieldCase{name: "/sfu/get " + f + " " + kind, path: "/sfu/get", field: f, body: b})
		}
	}
	return cases
}

// checkBadFieldsRefused posts every bad-field case to h and requires 400
// M_BAD_JSON naming the field, decided before the OpenID lookup, and no
// grant or delegation left behind.
func checkBadFieldsRefused(t *testing.T, h *harness) {
	t.Helper()
	h.hs.issue("tok-alice", "@alice:local.test")
	for _, tc := range badFieldCases() {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := h.post(t, tc.path, tc.body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, out)
			require.Equal(t, "M_BAD_JSON", out["errcode"])
			require.Contains(t, out["error"], "`"+tc.field+"`", "names the field")
		})
	}
	require.Zero(t, h.hs.lookups.Load(), "refused before the OpenID token is looked up")
	require.Empty(t, h.rooms.created)
	var grants, delegations int
	db := h.svc.grants.db
	require.NoError(t, db.QueryRow(context.Background(), "SELECT COUNT(*) FROM focus_grant").Scan(&grants))
	require.NoError(t, db.QueryRow(context.Background(), "SELECT COUNT(*) FROM focus_delayed_leave").Scan(&delegations))
	require.Zero(t, grants)
	require.Zero(t, delegations)
}

// Identifiers with control characters or beyond 255 bytes are refused with
// 400 M_BAD_JSON naming the field, on all three token endpoints, before
// anything is looked up or stored.
func TestTokenEndpointsRefuseUnprintableFields(t *testing.T) {
	checkBadFieldsRefused(t, newHarness(t, nil))
}

// On PostgreSQL, whose text columns cannot hold NUL, the same requests are
// 400, not 500: the grant used to be stored before any field was checked.
func TestTokenEndpointsRefuseUnprintableFieldsOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg, err := testharness.StartPostgres(context.Background())
	require.NoError(t, err, "PostgreSQL (scripts/deps.sh installs it)")
	t.Cleanup(pg.Stop)
	h := newHarnessOpts(t, nil, func(o *Options) {
		db, err := dbutil.NewWithDialect(pg.URI, "postgres")
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		o.DB = db
	})
	checkBadFieldsRefused(t, h)
	// A well-formed request still gets its token there.
	resp, out := h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
}
