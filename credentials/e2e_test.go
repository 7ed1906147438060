package credentials

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	kritisRoom = "!kritis:bund.example"
	publicRoom = "!public:bund.example"
)

func kritisPolicy() *AccessPolicy {
	return &AccessPolicy{
		Level: LevelKritis,
		RequiredCredentials: []CredentialRequirement{{
			Federation: "oev", Type: "EmployeeCredential",
			Claims: map[string]ClaimConstraint{"sector": {In: []any{"energie", "wasser"}}},
		}},
		AllowedHomeservers: []string{"bund.example"},
	}
}

var userSeq atomic.Int64

func newUser() string { return fmt.Sprintf("@user%d:bund.example", userSeq.Add(1)) }

// shared sets up one harness, its status lists and one verifier for the
// end-to-end tests (starting Node once keeps the suite fast).
func sharedEnv(t *testing.T) *testEnv {
	t.Helper()
	e := newTestEnv(t, nil, nil, nil)
	e.rooms[kritisRoom] = kritisPolicy()
	for _, l := range []map[string]any{
		{"name": "bsl-r0", "issuer": "w3c", "kind": "bitstring", "revoked": []int{0}},
		{"name": "bsl-r7", "issuer": "w3c", "kind": "bitstring", "revoked": []int{7}},
		{"name": "sl-r0", "issuer": "w3c", "kind": "sl2021", "revoked": []int{0}},
		{"name": "sl-r7", "issuer": "w3c", "kind": "sl2021", "revoked": []int{7}},
		{"name": "xfsc-r0", "issuer": "xfsc", "kind": "xfsc", "revoked": []int{0}},
		{"name": "xfsc-r7", "issuer": "xfsc", "kind": "xfsc", "revoked": []int{7}},
		{"name": "web-r0", "issuer": "web", "kind": "bitstring", "revoked": []int{0}},
		{"name": "bomb", "issuer": "w3c", "kind": "bomb"},
		// Lists signed with DataIntegrityProof (ecdsa-rdfc-2019, eddsa-rdfc-2022).
		{"name": "p256-r0", "issuer": "p256", "kind": "bitstring", "revoked": []int{0}},
		{"name": "eddsa-r0", "issuer": "eddsa", "kind": "bitstring", "revoked": []int{0}},
	} {
		e.h.call(t, "list", l, nil)
	}
	return e
}

func (e *testEnv) request(t testing.TB, user, room string) *Request {
	t.Helper()
	req, err := e.v.CreateRequest(context.Background(), user, room, "call")
	require.NoError(t, err)
	return req
}

func (e *testEnv) authorize(t *testing.T, user, room string) Decision {
	t.Helper()
	d, err := e.v.Authorize(context.Background(), AccessRequest{
		UserID: user, Policy: e.rooms[room],
		Room: RoomFacts{ID: room, E2EE: true, SiteApproved: true, Participants: 1},
	})
	require.NoError(t, err)
	return d
}

func TestHarnessEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := sharedEnv(t)
	ctx := context.Background()

	t.Run("formats", func(t *testing.T) {
		for _, tc := range []struct {
			name, format, issuer, present string
			status                        map[string]any
			issueExtra, presentExtra      map[string]any
		}{
			{"ldp_vc Ed25519Signature2020 + BitstringStatusList", "ldp_vc", "w3c", "ldp_vp", map[string]any{"list": "bsl-r0", "index": 1}, nil, nil},
			{"ldp_vc JsonWebSignature2020 did:web", "ldp_vc", "web", "ldp_vp", nil, nil, nil},
			{"ldp_vc StatusList2021", "ldp_vc", "w3c", "ldp_vp", map[string]any{"list": "sl-r0", "index": 2}, nil, nil},
			{"ldp_vc xfsc-compat status", "ldp_vc", "xfsc", "ldp_vp", map[string]any{"list": "xfsc-r0", "index": 3}, nil, nil},
			{"jwt_vc_json", "jwt_vc_json", "web", "jwt_vp_json", map[string]any{"list": "web-r0", "index": 4}, nil, nil},
			{"vc+jwt", "vc+jwt", "web", "jwt_vp_json", nil, nil, nil},
			{"vc+ld+json+jwt", "vc+ld+json+jwt", "web", "jwt_vp_json", nil, nil, nil},
			{"vc+sd-jwt", "vc+sd-jwt", "web", "sd-jwt", nil, nil, nil},
			{"dc+sd-jwt", "dc+sd-jwt", "web", "sd-jwt", nil, nil, nil},
			// Linked Data proofs of other wallets and issuers: XFSC's
			// notarization service signs Ed25519Signature2018; VC Data
			// Integrity 1.0 issuers sign DataIntegrityProof, on VC 2.0 and on
			// VC 1.1 documents (with the data-integrity context), and so may
			// the holder's wallet sign the presentation.
			{"ldp_vc Ed25519Signature2018", "ldp_vc", "ed2018", "ldp_vp", nil, nil, nil},
			{"ldp_vc VC 2.0 eddsa-rdfc-2022 + BitstringStatusList, ldp_vp eddsa-rdfc-2022", "ldp_vc", "eddsa", "ldp_vp",
				map[string]any{"list": "eddsa-r0", "index": 1}, map[string]any{"vc2": true}, map[string]any{"vpSuite": "eddsa-rdfc-2022"}},
			{"ldp_vc VC 2.0 ecdsa-rdfc-2019 P-256 + BitstringStatusList", "ldp_vc", "p256", "ldp_vp",
				map[string]any{"list": "p256-r0", "index": 2}, map[string]any{"vc2": true}, nil},
			{"ldp_vc VC 1.1 ecdsa-rdfc-2019 P-384", "ldp_vc", "p384", "ldp_vp", nil, nil, nil},
			{"ldp_vc VC 2.0 Ed25519Signature2020 in a VC 2.0 ldp_vp", "ldp_vc", "w3c", "ldp_vp", nil, map[string]any{"vc2": true}, nil},
			// did-jwt-vc (Veramo's JWT layer) on both sides: no kid header.
			{"jwt_vc_json and jwt_vp_json by did-jwt-vc", "jwt_vc_json", "w3c", "jwt_vp_json",
				map[string]any{"list": "bsl-r0", "index": 5}, map[string]any{"lib": "did-jwt-vc"}, map[string]any{"lib": "did-jwt-vc"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				user := newUser()
				d := e.authorize(t, user, kritisRoom)
				require.False(t, d.Allow)
				require.Contains(t, strings.Join(d.Reasons, ";"), "missing credential EmployeeCredential")
				require.Len(t, d.Missing, 1)

				req := e.request(t, user, kritisRoom)
				require.Equal(t, LevelKritis, req.Level)
				args := map[string]any{"format": tc.format, "issuer": tc.issuer}
				if tc.status != nil {
					args["status"] = tc.status
				}
				for k, v := range tc.issueExtra {
					args[k] = v
				}
				cred := e.h.issue(t, args)
				r := e.h.present(t, req.Link, cred, tc.present, tc.presentExtra)
				require.Equal(t, http.StatusOK, r.Status, r.Body)

				atts, err := e.v.Attestations(ctx, user)
				require.NoError(t, err)
				require.Len(t, atts, 1)
				a := atts[0]
				require.Equal(t, "oev", a.Federation)
				require.Equal(t, e.h.info.Issuers[tc.issuer], a.Issuer)
				require.Equal(t, "EmployeeCredential", a.Type)
				require.True(t, a.HolderBound)
				// Only the claims the policy reads plus retain_claims are kept.
				require.Equal(t, map[string]any{"sector": "energie", "memberOf": "org-a"}, a.Claims)
				require.WithinDuration(t, e.clock().Add(time.Hour), a.ExpiresAt, time.Minute)
				require.Len(t, a.CredentialHash, 64)

				forRoom, err := e.v.AttestationsForRoom(ctx, user, kritisRoom)
				require.NoError(t, err)
				require.Len(t, forRoom, 1)

				d = e.authorize(t, user, kritisRoom)
				require.True(t, d.Allow, d.Reasons)
				require.False(t, d.ExpiresAt.IsZero())
				require.False(t, d.ExpiresAt.After(a.ExpiresAt))
			})
		}
		e.mu.Lock()
		n := len(e.attested)
		e.mu.Unlock()
		require.Equal(t, 15, n)
	})

	t.Run("negative", func(t *testing.T) {
		hour := time.Hour.Milliseconds()
		nowMs := time.Now().UnixMilli()
		for _, tc := range []struct {
			name    string
			issue   map[string]any
			present string
			extra   map[string]any
			want    string
		}{
			{"wrong nonce ldp_vp", map[string]any{"format": "ldp_vc"}, "ldp_vp", map[string]any{"nonce": "not-the-nonce"}, "wrong_nonce"},
			{"wrong nonce jwt_vp_json", map[string]any{"format": "jwt_vc_json", "issuer": "web"}, "jwt_vp_json", map[string]any{"nonce": "not-the-nonce"}, "wrong_nonce"},
			{"wrong nonce sd-jwt", map[string]any{"format": "dc+sd-jwt", "issuer": "web"}, "sd-jwt", map[string]any{"nonce": "not-the-nonce"}, "wrong_nonce"},
			{"wrong audience ldp_vp", map[string]any{"format": "ldp_vc"}, "ldp_vp", map[string]any{"aud": "did:example:evil"}, "wrong_audience"},
			{"wrong audience jwt_vp_json", map[string]any{"format": "vc+jwt", "issuer": "web"}, "jwt_vp_json", map[string]any{"aud": "did:example:evil"}, "wrong_audience"},
			{"wrong audience sd-jwt", map[string]any{"format": "vc+sd-jwt", "issuer": "web"}, "sd-jwt", map[string]any{"aud": "did:example:evil"}, "wrong_audience"},
			{"expired", map[string]any{"format": "ldp_vc", "validFrom": nowMs - 3*hour, "validUntil": nowMs - hour}, "ldp_vp", nil, "expired"},
			{"expired vc+jwt", map[string]any{"format": "vc+jwt", "issuer": "web", "validFrom": nowMs - 3*hour, "validUntil": nowMs - hour}, "jwt_vp_json", nil, "expired"},
			{"not yet valid", map[string]any{"format": "ldp_vc", "validFrom": nowMs + hour}, "ldp_vp", nil, "not_yet_valid"},
			{"not yet valid sd-jwt", map[string]any{"format": "dc+sd-jwt", "issuer": "web", "validFrom": nowMs + hour}, "sd-jwt", nil, "not_yet_valid"},
			{"revoked index 0 w3c bitstring", map[string]any{"format": "ldp_vc", "status": map[string]any{"list": "bsl-r0", "index": 0}}, "ldp_vp", nil, "revoked"},
			{"revoked index 7 w3c bitstring", map[string]any{"format": "ldp_vc", "status": map[string]any{"list": "bsl-r7", "index": 7}}, "ldp_vp", nil, "revoked"},
			{"revoked index 0 w3c StatusList2021", map[string]any{"format": "ldp_vc", "status": map[string]any{"list": "sl-r0", "index": 0}}, "ldp_vp", nil, "revoked"},
			{"revoked index 7 w3c StatusList2021", map[string]any{"format": "ldp_vc", "status": map[string]any{"list": "sl-r7", "index": 7}}, "ldp_vp", nil, "revoked"},
			{"revoked index 0 xfsc-compat", map[string]any{"format": "ldp_vc", "issuer": "xfsc", "status": map[string]any{"list": "xfsc-r0", "index": 0}}, "ldp_vp", nil, "revoked"},
			{"revoked index 7 xfsc-compat", map[string]any{"format": "ldp_vc", "issuer": "xfsc", "status": map[string]any{"list": "xfsc-r7", "index": 7}}, "ldp_vp", nil, "revoked"},
			{"revoked index 0 DataIntegrityProof list", map[string]any{"format": "ldp_vc", "issuer": "p256", "vc2": true, "status": map[string]any{"list": "p256-r0", "index": 0}}, "ldp_vp", nil, "revoked"},
			{"revoked index 0 did-jwt-vc", map[string]any{"format": "jwt_vc_json", "issuer": "w3c", "lib": "did-jwt-vc", "status": map[string]any{"list": "bsl-r0", "index": 0}}, "jwt_vp_json", map[string]any{"lib": "did-jwt-vc"}, "revoked"},
			{"revoked index 0 jwt_vc_json", map[string]any{"format": "jwt_vc_json", "issuer": "web", "status": map[string]any{"list": "web-r0", "index": 0}}, "jwt_vp_json", nil, "revoked"},
			{"bearer credential at kritis", map[string]any{"format": "ldp_vc", "subject": "none"}, "ldp_vp", nil, "holder_binding"},
			{"credential of someone else", map[string]any{"format": "ldp_vc", "subject": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"}, "ldp_vp", nil, "holder_binding"},
			{"untrusted issuer", map[string]any{"format": "ldp_vc", "issuer": "untrusted"}, "ldp_vp", nil, "untrusted_issuer"},
			{"issuer trusted for another type", map[string]any{"format": "ldp_vc", "type": "DoctorCredential"}, "ldp_vp", nil, "issuer_not_trusted_for_type"},
			{"tampered claim ldp_vc", map[string]any{"format": "ldp_vc"}, "ldp_vp", map[string]any{"tamper": map[string]any{"path": "credentialSubject.sector", "value": "wasser"}}, "bad_signature"},
			{"tampered claim jwt_vc_json", map[string]any{"format": "jwt_vc_json", "issuer": "web"}, "jwt_vp_json", map[string]any{"tamper": map[string]any{"path": "vc.credentialSubject.sector", "value": "wasser"}}, "bad_signature"},
			{"tampered disclosure", map[string]any{"format": "dc+sd-jwt", "issuer": "web"}, "sd-jwt", map[string]any{"tamperDisclosure": "wasser"}, "bad_disclosure"},
			{"missing key binding", map[string]any{"format": "vc+sd-jwt", "issuer": "web"}, "sd-jwt", map[string]any{"noKB": true}, "missing_key_binding"},
			{"alg none jwt_vc_json", map[string]any{"format": "jwt_vc_json", "issuer": "web", "alg": "none"}, "jwt_vp_json", nil, "alg_not_allowed"},
			{"alg none vc+jwt", map[string]any{"format": "vc+jwt", "issuer": "web", "alg": "none"}, "jwt_vp_json", nil, "alg_not_allowed"},
			{"unknown JSON-LD context", map[string]any{"format": "ldp_vc", "unknownContext": true}, "ldp_vp", nil, "unknown_context"},
			{"oversized input", map[string]any{"format": "ldp_vc"}, "ldp_vp", map[string]any{"pad": 300000}, "too_large"},
			{"compressed-bomb status list", map[string]any{"format": "ldp_vc", "status": map[string]any{"list": "bomb", "index": 5}}, "ldp_vp", nil, "status_list_too_large"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				user := newUser()
				req := e.request(t, user, kritisRoom)
				cred := e.h.issue(t, tc.issue)
				r := e.h.present(t, req.Link, cred, tc.present, tc.extra)
				require.NotEqual(t, http.StatusOK, r.Status, r.Body)
				require.Equal(t, tc.want, errorCode(t, r.Body), r.Body)
				atts, err := e.v.Attestations(ctx, user)
				require.NoError(t, err)
				require.Empty(t, atts)
				d := e.authorize(t, user, kritisRoom)
				require.False(t, d.Allow, "no token after a refused presentation")
			})
		}
	})

	t.Run("bit order neighbours are not revoked", func(t *testing.T) {
		// With the wrong bit order, the bit of index 0 reads as index 7 and
		// vice versa; these must pass.
		for _, tc := range []struct {
			list, issuer string
			index        int
		}{
			{"bsl-r0", "w3c", 7}, {"bsl-r7", "w3c", 0}, {"sl-r0", "w3c", 7}, {"sl-r7", "w3c", 0},
			{"xfsc-r0", "xfsc", 7}, {"xfsc-r7", "xfsc", 0},
		} {
			user := newUser()
			req := e.request(t, user, kritisRoom)
			cred := e.h.issue(t, map[string]any{"format": "ldp_vc", "issuer": tc.issuer, "status": map[string]any{"list": tc.list, "index": tc.index}})
			r := e.h.present(t, req.Link, cred, "ldp_vp", nil)
			require.Equal(t, http.StatusOK, r.Status, "%s index %d: %s", tc.list, tc.index, r.Body)
		}
	})

	t.Run("issuer chain via trust anchor", func(t *testing.T) {
		untrusted := e.h.info.Issuers["untrusted"]
		participant := e.h.issue(t, map[string]any{"format": "ldp_vc", "issuer": "w3c", "type": "ParticipantCredential",
			"subject": untrusted, "claims": map[string]any{"legalName": "Stadtwerke Test"}})
		user := newUser()
		r := e.h.present(t, e.request(t, user, kritisRoom).Link, e.h.issue(t, map[string]any{"format": "ldp_vc", "issuer": "untrusted"}),
			"ldp_vp", map[string]any{"extraCredentials": []json.RawMessage{participant}})
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		atts, err := e.v.Attestations(ctx, user)
		require.NoError(t, err)
		require.Len(t, atts, 1, "the participant credential itself is no attestation")
		require.Equal(t, untrusted, atts[0].Issuer)
		require.Equal(t, "oev", atts[0].Federation)
		require.True(t, e.authorize(t, user, kritisRoom).Allow)

		// A participant credential from an issuer that is not an anchor does not help.
		fake := e.h.issue(t, map[string]any{"format": "ldp_vc", "issuer": "xfsc", "type": "ParticipantCredential", "subject": untrusted})
		r = e.h.present(t, e.request(t, newUser(), kritisRoom).Link, e.h.issue(t, map[string]any{"format": "ldp_vc", "issuer": "untrusted"}),
			"ldp_vp", map[string]any{"extraCredentials": []json.RawMessage{fake}})
		require.Equal(t, "untrusted_issuer", errorCode(t, r.Body), r.Body)
	})

	t.Run("replayed response", func(t *testing.T) {
		user := newUser()
		req := e.request(t, user, kritisRoom)
		r := e.h.present(t, req.Link, e.h.issue(t, map[string]any{"format": "ldp_vc"}), "ldp_vp", nil)
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		status, body := e.post(t, r.ResponseURI, r.Form)
		require.Equal(t, http.StatusGone, status)
		require.Equal(t, "replayed", errorCode(t, body))
		// Also a response to a refused request cannot be retried.
		req2 := e.request(t, user, kritisRoom)
		r2 := e.h.present(t, req2.Link, e.h.issue(t, map[string]any{"format": "ldp_vc"}), "ldp_vp", map[string]any{"nonce": "x"})
		require.Equal(t, "wrong_nonce", errorCode(t, r2.Body))
		status, body = e.post(t, r2.ResponseURI, r2.Form)
		require.Equal(t, http.StatusGone, status)
		require.Equal(t, "replayed", errorCode(t, body))
	})

	t.Run("a POST that is no response leaves the request answerable", func(t *testing.T) {
		user := newUser()
		req := e.request(t, user, kritisRoom)
		r := e.h.present(t, req.Link, e.h.issue(t, map[string]any{"format": "ldp_vc"}), "ldp_vp", map[string]any{"dryRun": true})
		good := url.Values{}
		for k, v := range r.Form {
			good.Set(k, v)
		}
		with := func(edit func(url.Values)) string {
			f := url.Values{}
			for k, v := range good {
				f[k] = append([]string(nil), v...)
			}
			edit(f)
			return f.Encode()
		}
		const form = "application/x-www-form-urlencoded"
		for _, tc := range []struct{ name, contentType, body string }{
			{"JSON body", "application/json", `{"vp_token":"x","state":"` + req.ID + `"}`},
			{"form as text/plain", "text/plain", good.Encode()},
			{"no content type", "", good.Encode()},
			{"no vp_token", form, with(func(f url.Values) { f.Del("vp_token") })},
			{"empty vp_token", form, with(func(f url.Values) { f.Set("vp_token", "") })},
			{"a wallet's error response", form, url.Values{"error": {"access_denied"}, "state": {req.ID}}.Encode()},
			{"vp_token twice", form, with(func(f url.Values) { f.Add("vp_token", "x") })},
			{"state twice", form, with(func(f url.Values) { f.Add("state", "other") })},
			{"presentation_submission twice", form, with(func(f url.Values) { f.Add("presentation_submission", "{}") })},
		} {
			t.Run(tc.name, func(t *testing.T) {
				hr, err := http.NewRequest(http.MethodPost, r.ResponseURI, strings.NewReader(tc.body))
				require.NoError(t, err)
				if tc.contentType != "" {
					hr.Header.Set("Content-Type", tc.contentType)
				}
				resp, err := e.client().Do(hr)
				require.NoError(t, err)
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(b))
				require.Contains(t, string(b), `"error":"invalid_request"`)
				require.Equal(t, "malformed", errorCode(t, string(b)))
				unused, err := e.v.RequestUnused(ctx, req.ID)
				require.NoError(t, err)
				require.True(t, unused, "the request is not used up")
			})
		}
		status, _ := e.get(t, req.RequestURI)
		require.Equal(t, http.StatusOK, status)
		// The wallet's genuine answer still counts, once.
		status, body := e.post(t, r.ResponseURI, r.Form)
		require.Equal(t, http.StatusOK, status, body)
		require.True(t, e.authorize(t, user, kritisRoom).Allow)
		unused, err := e.v.RequestUnused(ctx, req.ID)
		require.NoError(t, err)
		require.False(t, unused)
		status, _ = e.post(t, r.ResponseURI, r.Form)
		require.Equal(t, http.StatusGone, status)
	})

	t.Run("request unused until answered or expired", func(t *testing.T) {
		unused, err := e.v.RequestUnused(ctx, "unknown")
		require.NoError(t, err)
		require.False(t, unused)
		req := e.request(t, newUser(), kritisRoom)
		unused, err = e.v.RequestUnused(ctx, req.ID)
		require.NoError(t, err)
		require.True(t, unused)
		e.advance(6 * time.Minute)
		defer e.advance(-6 * time.Minute)
		unused, err = e.v.RequestUnused(ctx, req.ID)
		require.NoError(t, err)
		require.False(t, unused, "expired")
	})

	t.Run("page and request object", func(t *testing.T) {
		req := e.request(t, newUser(), kritisRoom)
		require.True(t, strings.HasPrefix(req.Link, "openid4vp://?"))
		status, body := e.get(t, req.PageURL)
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, 2, strings.Count(body, "<svg"), "a QR code for each link")
		// Both links are on the page; a wallet of OID4VP 1.0 answers the
		// DCQL one as the page gives it.
		var hrefs []string
		for _, m := range regexp.MustCompile(`href="(openid4vp://[^"]+)"`).FindAllStringSubmatch(body, -1) {
			hrefs = append(hrefs, html.UnescapeString(m[1]))
		}
		require.Equal(t, []string{req.Link, req.DCQLLink}, hrefs)
		user := newUser()
		dreq := e.request(t, user, kritisRoom)
		_, dbody := e.get(t, dreq.PageURL)
		dcql := html.UnescapeString(regexp.MustCompile(`href="(openid4vp://[^"]+query%3Ddcql[^"]*)"`).FindStringSubmatch(dbody)[1])
		r := e.h.present(t, dcql, e.h.issue(t, map[string]any{"format": "dc+sd-jwt", "issuer": "web"}), "sd-jwt", map[string]any{"wallet": "openid4vp"})
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		require.Equal(t, 100, r.Wallet.Version)
		require.True(t, e.authorize(t, user, kritisRoom).Allow)
		status, body = e.get(t, req.RequestURI)
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, 2, strings.Count(body, "."))
		status, _ = e.get(t, e.srv.URL+MountPath+"request/unknown")
		require.Equal(t, http.StatusNotFound, status)
	})

	t.Run("DCQL", func(t *testing.T) {
		for _, tc := range []struct{ format, issuer, present string }{
			{"ldp_vc", "w3c", "ldp_vp"}, {"vc+jwt", "web", "jwt_vp_json"}, {"jwt_vc_json", "web", "jwt_vp_json"}, {"dc+sd-jwt", "web", "sd-jwt"},
		} {
			user := newUser()
			req := e.request(t, user, kritisRoom)
			r := e.h.present(t, req.DCQLLink, e.h.issue(t, map[string]any{"format": tc.format, "issuer": tc.issuer}), tc.present, nil)
			require.Equal(t, http.StatusOK, r.Status, "%s: %s", tc.format, r.Body)
			require.True(t, e.authorize(t, user, kritisRoom).Allow)
		}
		// The DCQL link shares the nonce: answering both links is a replay.
		user := newUser()
		req := e.request(t, user, kritisRoom)
		r := e.h.present(t, req.DCQLLink, e.h.issue(t, map[string]any{"format": "ldp_vc"}), "ldp_vp", nil)
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		err := e.h.tryCall("present", map[string]any{"link": req.Link, "credential": e.h.issue(t, map[string]any{"format": "ldp_vc"}), "format": "ldp_vp"}, nil)
		require.ErrorContains(t, err, "request_uri answered 410")
		// A DCQL answer for an unknown query id is refused.
		req = e.request(t, newUser(), kritisRoom)
		r = e.h.present(t, req.DCQLLink, e.h.issue(t, map[string]any{"format": "ldp_vc"}), "ldp_vp", map[string]any{"dryRun": true})
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal([]byte(r.Form["vp_token"]), &m))
		for _, v := range m {
			r.Form["vp_token"] = string(must(json.Marshal(map[string]json.RawMessage{"nope": v})))
		}
		status, body := e.post(t, r.ResponseURI, r.Form)
		require.Equal(t, http.StatusBadRequest, status)
		require.Equal(t, "submission_mismatch", errorCode(t, body))
	})

	t.Run("bearer credential accepted at public level", func(t *testing.T) {
		user := newUser()
		r := e.h.present(t, e.request(t, user, publicRoom).Link, e.h.issue(t, map[string]any{"format": "ldp_vc", "subject": "none"}), "ldp_vp", nil)
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		atts, err := e.v.Attestations(ctx, user)
		require.NoError(t, err)
		require.Len(t, atts, 1)
		require.False(t, atts[0].HolderBound)
		require.Equal(t, LevelPublic, atts[0].Level)
		require.False(t, e.authorize(t, user, kritisRoom).Allow, "not usable at kritis")
	})

	t.Run("expired request", func(t *testing.T) {
		req := e.request(t, newUser(), kritisRoom)
		r := e.h.present(t, req.Link, e.h.issue(t, map[string]any{"format": "ldp_vc"}), "ldp_vp", map[string]any{"dryRun": true})
		e.advance(6 * time.Minute)
		defer e.advance(-6 * time.Minute)
		err := e.h.tryCall("present", map[string]any{"link": req.Link, "credential": json.RawMessage(`{}`), "format": "ldp_vp"}, nil)
		require.ErrorContains(t, err, "request_uri answered 410")
		status, body := e.post(t, r.ResponseURI, r.Form)
		require.Equal(t, http.StatusGone, status)
		require.Equal(t, "request_expired", errorCode(t, body))
		status, body = e.get(t, req.PageURL)
		require.Equal(t, http.StatusOK, status)
		require.Contains(t, body, "abgelaufen")
	})

	t.Run("audit chain", func(t *testing.T) {
		n, err := VerifyAuditChain(ctx, e.db)
		require.NoError(t, err)
		require.Greater(t, n, 40)
	})
}

func (e *testEnv) client() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.tls.Pool}}, Timeout: 10 * time.Second}
}

func (e *testEnv) post(t *testing.T, u string, form map[string]string) (int, string) {
	t.Helper()
	vals := url.Values{}
	for k, v := range form {
		vals.Set(k, v)
	}
	resp, err := e.client().PostForm(u, vals)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *testEnv) get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := e.client().Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDIDWebPrivateAddress runs without the dev option: a did:web issuer on
// loopback is refused at dial time.
func TestDIDWebPrivateAddress(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := newTestEnv(t, nil, nil, func(c *Config) { c.DIDResolution.AllowPrivateAddressesForTesting = false })
	user := newUser()
	req := e.request(t, user, publicRoom)
	r := e.h.present(t, req.Link, e.h.issue(t, map[string]any{"format": "vc+jwt", "issuer": "web"}), "jwt_vp_json", nil)
	require.Equal(t, "private_address", errorCode(t, r.Body), r.Body)
}

// TestRecheckRevokesAndExpires drives the re-check loop: a credential
// revoked after verification and one whose validity ends are invalidated
// and reported.
func TestRecheckRevokesAndExpires(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := newTestEnv(t, nil, nil, func(c *Config) {
		c.Levels.Kritis.StatusMaxAge = time.Minute
		c.RecheckInterval = 10 * time.Second
	})
	e.rooms[kritisRoom] = kritisPolicy()
	ctx := context.Background()
	e.h.call(t, "list", map[string]any{"name": "live", "issuer": "w3c", "kind": "bitstring", "revoked": []int{}}, nil)

	revokee, expiree := newUser(), newUser()
	r := e.h.present(t, e.request(t, revokee, kritisRoom).Link,
		e.h.issue(t, map[string]any{"format": "ldp_vc", "status": map[string]any{"list": "live", "index": 3}}), "ldp_vp", nil)
	require.Equal(t, http.StatusOK, r.Status, r.Body)
	r = e.h.present(t, e.request(t, expiree, kritisRoom).Link,
		e.h.issue(t, map[string]any{"format": "vc+jwt", "issuer": "web", "validUntil": time.Now().Add(5 * time.Minute).UnixMilli()}), "jwt_vp_json", nil)
	require.Equal(t, http.StatusOK, r.Status, r.Body)
	require.True(t, e.authorize(t, revokee, kritisRoom).Allow)
	require.True(t, e.authorize(t, expiree, kritisRoom).Allow)

	require.NoError(t, e.v.RecheckNow(ctx))
	require.Empty(t, e.invalid)

	e.h.call(t, "list", map[string]any{"name": "live", "issuer": "w3c", "kind": "bitstring", "revoked": []int{3}}, nil)
	e.advance(10 * time.Minute) // past the status max age and the second credential's validity

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.v.Run(runCtx) }()
	require.Eventually(t, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.invalid) == 2
	}, 20*time.Second, 50*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	byUser := map[string]error{}
	for _, inv := range e.invalid {
		byUser[inv.a.UserID] = inv.reason
	}
	require.ErrorIs(t, byUser[revokee], ErrRevoked)
	require.ErrorIs(t, byUser[expiree], ErrExpired)
	require.False(t, e.authorize(t, revokee, kritisRoom).Allow)
	require.False(t, e.authorize(t, expiree, kritisRoom).Allow)

	n, err := VerifyAuditChain(ctx, e.db)
	require.NoError(t, err)
	require.Equal(t, 8, n) // 2 verified, 2 allow, 2 invalidated, 2 deny
}

func TestReasonCodeUnwrapsWrapped(t *testing.T) {
	err := fmt.Errorf("outer: %w", fmt.Errorf("%w: detail", ErrWrongNonce))
	require.Equal(t, "wrong_nonce", ReasonCode(err))
	require.Equal(t, "internal", ReasonCode(errors.New("x")))
}

// TestVSNfDReverifiesBeforeEveryToken: at vs-nfd, Authorize re-checks the
// status list (max age tightened to a minute here) before deciding.
func TestVSNfDReverifiesBeforeEveryToken(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := newTestEnv(t, nil, nil, func(c *Config) {
		c.Levels.VSNfD.StatusMaxAge = time.Minute
		c.Levels.VSNfDApprovedEnvironment = true
	})
	const room = "!vsnfd:bund.example"
	user := newUser()
	pol := &AccessPolicy{Level: LevelVSNfD, RequiredCredentials: kritisPolicy().RequiredCredentials,
		AllowedHomeservers: []string{"bund.example"}, NeedToKnow: []string{user}}
	require.NoError(t, e.v.ValidatePolicyChange(kritisPolicy(), pol, 50, 100))
	e.rooms[room] = pol
	e.h.call(t, "list", map[string]any{"name": "vs", "issuer": "web", "kind": "bitstring"}, nil)

	req := e.request(t, user, room)
	require.Equal(t, LevelVSNfD, req.Level)
	emp := e.h.issue(t, map[string]any{"format": "ldp_vc", "issuer": "web", "status": map[string]any{"list": "vs", "index": 1}})
	oath := e.h.issue(t, map[string]any{"format": "ldp_vc", "issuer": "web", "type": "VSNfDVerpflichtung", "claims": map[string]any{"sworn": true}})
	// The request asks for both types; a presentation with only one is refused.
	r := e.h.present(t, req.Link, emp, "ldp_vp", nil)
	require.Equal(t, "no_credential", errorCode(t, r.Body), r.Body)
	r = e.h.present(t, e.request(t, user, room).Link, emp, "ldp_vp", map[string]any{"extraCredentials": []json.RawMessage{oath}})
	require.Equal(t, http.StatusOK, r.Status, r.Body)

	d := e.authorize(t, user, room)
	require.True(t, d.Allow, d.Reasons)
	require.WithinDuration(t, e.clock().Add(15*time.Minute), d.ExpiresAt, time.Minute)
	other := newUser()
	require.False(t, e.authorize(t, other, room).Allow, "not on the need-to-know list")

	e.h.call(t, "list", map[string]any{"name": "vs", "issuer": "web", "kind": "bitstring", "revoked": []int{1}}, nil)
	require.True(t, e.authorize(t, user, room).Allow, "cached list is still fresh")
	e.advance(2 * time.Minute)
	d = e.authorize(t, user, room)
	require.False(t, d.Allow)
	e.mu.Lock()
	defer e.mu.Unlock()
	require.Len(t, e.invalid, 1)
	require.ErrorIs(t, e.invalid[0].reason, ErrRevoked)

	// vs-nfd needs an approved environment.
	e.v.cfg.Levels.VSNfDApprovedEnvironment = false
	require.ErrorIs(t, e.v.ValidatePolicyChange(kritisPolicy(), pol, 100, 100), ErrPolicyChangeForbidden)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestFederationCoversHomeservers: a federation's issuers vouch only for
// users of the homeservers it lists (homeserver_domains). A credential of
// its issuer presented by a user of another homeserver is refused with
// its own reason, and an attestation stored while the federation still
// covered the user's homeserver stops counting once it no longer does.
func TestFederationCoversHomeservers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := newTestEnv(t, nil, nil, nil)
	e.rooms[publicRoom] = &AccessPolicy{Level: LevelPublic,
		RequiredCredentials: []CredentialRequirement{{Federation: "oev", Type: "EmployeeCredential"}}}

	// A user of a homeserver "oev" does not list: refused, nothing stored.
	foreign := "@bob:other.example"
	r := e.h.present(t, e.request(t, foreign, publicRoom).Link, e.h.issue(t, map[string]any{"format": "ldp_vc"}), "ldp_vp", nil)
	require.Equal(t, http.StatusBadRequest, r.Status, r.Body)
	require.Equal(t, "homeserver_not_in_federation", errorCode(t, r.Body))
	require.False(t, e.authorize(t, foreign, publicRoom).Allow)

	// The same credential for a covered user is accepted …
	local := newUser()
	r = e.h.present(t, e.request(t, local, publicRoom).Link, e.h.issue(t, map[string]any{"format": "ldp_vc"}), "ldp_vp", nil)
	require.Equal(t, http.StatusOK, r.Status, r.Body)
	require.True(t, e.authorize(t, local, publicRoom).Allow)
	// … until the federation stops speaking for the user's homeserver.
	e.v.cfg.Federations[0].HomeserverDomains = []string{"other.example"}
	require.False(t, e.authorize(t, local, publicRoom).Allow, "a stored attestation outlives its federation's coverage")
}
