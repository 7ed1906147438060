package credentials

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOID4VPWalletLibrary: a second wallet, the OpenID Foundation's OID4VP
// library (@openid4vc/openid4vp, as Credo-based wallets use it), reads both
// of gxconf's request links — Presentation Exchange and DCQL — verifies the
// signed request, builds and posts the response; gxconf accepts it for each
// presentation format. The DCQL link is an OID4VP 1.0 request (prefixed
// client identifier, vp_formats_supported), the other one a draft's.
func TestOID4VPWalletLibrary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := newTestEnv(t, nil, nil, nil)
	e.rooms[kritisRoom] = kritisPolicy()
	for _, link := range []string{"pe", "dcql"} {
		for _, tc := range []struct{ name, format, issuer, present string }{
			{"ldp_vp", "ldp_vc", "w3c", "ldp_vp"},
			{"jwt_vp_json", "jwt_vc_json", "web", "jwt_vp_json"},
			{"dc+sd-jwt", "dc+sd-jwt", "web", "sd-jwt"},
		} {
			t.Run(link+"/"+tc.name, func(t *testing.T) {
				user := newUser()
				req := e.request(t, user, kritisRoom)
				l := req.Link
				if link == "dcql" {
					l = req.DCQLLink
				}
				cred := e.h.issue(t, map[string]any{"format": tc.format, "issuer": tc.issuer})
				r := e.h.present(t, l, cred, tc.present, map[string]any{"wallet": "openid4vp"})
				require.NotNil(t, r.Wallet)
				t.Logf("wallet read the %s request as: %+v", link, *r.Wallet)
				require.Equal(t, http.StatusOK, r.Status, r.Body)
				require.Equal(t, link == "dcql", r.Wallet.DCQL)
				require.Equal(t, "decentralized_identifier", r.Wallet.Prefix)
				if link == "dcql" {
					// OID4VP 1.0 final (the library's 100): the prefixed client
					// identifier, which the presentation names as audience.
					require.Equal(t, 100, r.Wallet.Version)
					require.Equal(t, "decentralized_identifier:"+e.v.clientID, r.Wallet.Effective)
				} else {
					require.Less(t, r.Wallet.Version, 100, "the Presentation Exchange link is a draft request")
					require.Equal(t, e.v.clientID, r.Wallet.Effective)
				}
				require.True(t, e.authorize(t, user, kritisRoom).Allow)
			})
		}
	}
}

// TestOID4VPAudienceSpellings: a presentation must name this verifier, in
// either spelling of its client identifier (OID4VP 1.0's prefixed DID or
// the drafts' bare DID), whichever link the wallet answered; any other
// audience is refused.
func TestOID4VPAudienceSpellings(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := newTestEnv(t, nil, nil, nil)
	e.rooms[kritisRoom] = kritisPolicy()
	bare, prefixed := e.v.clientID, "decentralized_identifier:"+e.v.clientID
	other := "decentralized_identifier:did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
	for _, link := range []string{"pe", "dcql"} {
		for _, tc := range []struct {
			name, aud string
			ok        bool
		}{{"bare DID", bare, true}, {"prefixed DID", prefixed, true}, {"another verifier", other, false}, {"prefix alone", "decentralized_identifier:", false}} {
			for _, f := range []struct{ format, issuer, present string }{
				{"ldp_vc", "w3c", "ldp_vp"}, {"jwt_vc_json", "web", "jwt_vp_json"}, {"dc+sd-jwt", "web", "sd-jwt"},
			} {
				t.Run(link+"/"+tc.name+"/"+f.present, func(t *testing.T) {
					user := newUser()
					req := e.request(t, user, kritisRoom)
					l := req.Link
					if link == "dcql" {
						l = req.DCQLLink
					}
					r := e.h.present(t, l, e.h.issue(t, map[string]any{"format": f.format, "issuer": f.issuer}), f.present,
						map[string]any{"aud": tc.aud})
					if tc.ok {
						require.Equal(t, http.StatusOK, r.Status, r.Body)
						return
					}
					require.Equal(t, "wrong_audience", errorCode(t, r.Body), r.Body)
					require.False(t, e.authorize(t, user, kritisRoom).Allow)
				})
			}
		}
	}
}
