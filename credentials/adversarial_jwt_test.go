package credentials

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/credentials/did"
)

// The adversarial JWT corpus: tokens are signed here with crypto/ed25519 and
// go-jose over bytes written by hand (so they can hold what a JSON encoder
// would never produce, such as duplicate member names), by keys that the
// test's checker trusts. Nothing here uses gxconf's own signing helpers.

const contextUndefinedTerms = "https://www.w3.org/ns/credentials/undefined-terms/v2"

// edIdentity is an Ed25519 did:key.
type edIdentity struct {
	priv ed25519.PrivateKey
	did  string
	kid  string
}

func newEdIdentity(t testing.TB) edIdentity {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	fp := "z" + did.EncodeBase58(append([]byte{0xed, 0x01}, pub...))
	return edIdentity{priv: priv, did: "did:key:" + fp, kid: "did:key:" + fp + "#" + fp}
}

// sign returns a compact JWS over the literal header and payload JSON.
func (id edIdentity) sign(header, payload string) string {
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(id.priv, []byte(in)))
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	require.NoError(t, err)
	return string(raw)
}

// jwtFixture is a checker trusting one did:key issuer, a holder, and a clock.
type jwtFixture struct {
	c      *Checker
	issuer edIdentity
	holder edIdentity
	now    time.Time
}

func newJWTFixture(t testing.TB, mutate func(*Config)) *jwtFixture {
	t.Helper()
	f := &jwtFixture{issuer: newEdIdentity(t), holder: newEdIdentity(t), now: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	cfg := DefaultConfig()
	cfg.DIDResolution.Timeout = time.Second
	cfg.StatusList.FetchTimeout = time.Second
	cfg.Federations = []FederationConfig{{ID: "f", TrustedIssuers: []TrustedIssuer{
		{DID: f.issuer.did, Types: []string{"EmployeeCredential"}}}}}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := NewChecker(cfg, zerolog.Nop(), WithClock(func() time.Time { return f.now }))
	require.NoError(t, err)
	f.c = c
	return f
}

// v2Credential is a VC DM 2.0 credential for the fixture's holder.
func (f *jwtFixture) v2Credential(issuer string) map[string]any {
	return map[string]any{
		"@context": []any{ContextCredentialsV2}, "type": []any{"VerifiableCredential", "EmployeeCredential"},
		"issuer": issuer, "validFrom": "2026-01-01T00:00:00Z", "validUntil": "2027-01-01T00:00:00Z",
		"credentialSubject": map[string]any{"id": f.holder.did, "sector": "energie"},
	}
}

// present wraps credentials into a jwt_vp_json signed by the holder and
// verifies it at level public.
func (f *jwtFixture) present(t testing.TB, creds ...any) (*VerifiedPresentation, error) {
	t.Helper()
	payload := mustJSON(t, map[string]any{"iss": f.holder.did, "aud": "aud", "nonce": "n",
		"vp": map[string]any{"type": []any{"VerifiablePresentation"}, "verifiableCredential": creds}})
	return f.presentRaw(t, payload)
}

func (f *jwtFixture) presentRaw(t testing.TB, payload string) (*VerifiedPresentation, error) {
	t.Helper()
	vp := f.holder.sign(`{"alg":"EdDSA","typ":"JWT","kid":"`+f.holder.kid+`"}`, payload)
	return f.c.VerifyPresentation(context.Background(), []byte(vp), PresentationParams{Nonce: "n", Audience: "aud", Level: LevelPublic})
}

func TestJWTValidityBoundsAlways(t *testing.T) {
	f := newJWTFixture(t, nil)
	past, future := f.now.Add(-time.Hour).Unix(), f.now.Add(time.Hour).Unix()
	farPast, farFuture := f.now.Add(-90*24*time.Hour).Unix(), f.now.Add(90*24*time.Hour).Unix()
	v1 := func(extra map[string]any) string {
		vc := map[string]any{"@context": []any{ContextCredentialsV1}, "type": []any{"VerifiableCredential", "EmployeeCredential"},
			"credentialSubject": map[string]any{"sector": "energie"}}
		for k, v := range extra {
			vc[k] = v
		}
		return mustJSON(t, vc)
	}
	for _, tc := range []struct {
		name, typ string
		// payload fields besides the credential (2.0) or the vc claim (1.1)
		claims map[string]any
		vc     string // jwt_vc_json only: the vc claim
		want   error
	}{
		{"vc+jwt exp before validUntil", "vc+jwt", map[string]any{"exp": past}, "", ErrExpired},
		{"vc+jwt nbf after validFrom", "vc+jwt", map[string]any{"nbf": future}, "", ErrNotYetValid},
		{"vc+ld+json+jwt exp before validUntil", "vc+ld+json+jwt", map[string]any{"exp": past}, "", ErrExpired},
		{"vc+ld+json+jwt nbf after validFrom", "vc+ld+json+jwt", map[string]any{"nbf": future}, "", ErrNotYetValid},
		{"vc+jwt exp not a NumericDate", "vc+jwt", map[string]any{"exp": "tomorrow"}, "", ErrMalformed},
		{"vc+jwt within exp and nbf", "vc+jwt", map[string]any{"exp": future, "nbf": past}, "", nil},
		{"jwt_vc_json exp with validUntil", "JWT", map[string]any{"exp": past, "nbf": farPast},
			v1(map[string]any{"validFrom": "2026-01-01T00:00:00Z", "validUntil": "2027-01-01T00:00:00Z"}), ErrExpired},
		{"jwt_vc_json nbf with validFrom", "JWT", map[string]any{"nbf": future},
			v1(map[string]any{"validFrom": "2026-01-01T00:00:00Z"}), ErrNotYetValid},
		{"jwt_vc_json exp after expirationDate", "JWT", map[string]any{"exp": farFuture, "nbf": farPast},
			v1(map[string]any{"issuanceDate": "2026-01-01T00:00:00Z", "expirationDate": "2026-05-01T00:00:00Z"}), ErrExpired},
		{"jwt_vc_json nbf before issuanceDate", "JWT", map[string]any{"nbf": farPast},
			v1(map[string]any{"issuanceDate": "2026-07-01T00:00:00Z"}), ErrNotYetValid},
		{"jwt_vc_json exp only", "JWT", map[string]any{"exp": past, "nbf": farPast}, v1(nil), ErrExpired},
		{"jwt_vc_json within", "JWT", map[string]any{"exp": future, "nbf": past}, v1(nil), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var payload map[string]any
			if tc.vc != "" {
				payload = map[string]any{"iss": f.issuer.did, "sub": f.holder.did, "vc": json.RawMessage(tc.vc)}
			} else {
				payload = f.v2Credential(f.issuer.did)
			}
			for k, v := range tc.claims {
				payload[k] = v
			}
			cred := f.issuer.sign(mustJSON(t, map[string]any{"alg": "EdDSA", "typ": tc.typ, "kid": f.issuer.kid}), mustJSON(t, payload))
			vp, err := f.present(t, cred)
			if tc.want == nil {
				require.NoError(t, err)
				require.Len(t, vp.Credentials, 1)
				return
			}
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestJWTRegisteredClaimsAgreeWithCredential(t *testing.T) {
	f := newJWTFixture(t, nil)
	sign := func(typ string, payload map[string]any) string {
		return f.issuer.sign(mustJSON(t, map[string]any{"alg": "EdDSA", "typ": typ, "kid": f.issuer.kid}), mustJSON(t, payload))
	}
	v1 := func(extra map[string]any) map[string]any {
		p := map[string]any{"iss": f.issuer.did, "sub": f.holder.did, "vc": map[string]any{
			"@context": []any{ContextCredentialsV1}, "type": []any{"VerifiableCredential", "EmployeeCredential"},
			"credentialSubject": map[string]any{"id": otherDID, "sector": "energie"}}}
		for k, v := range extra {
			p[k] = v
		}
		return p
	}
	v2 := func(extra map[string]any) map[string]any {
		p := f.v2Credential(f.issuer.did)
		p["id"] = "urn:uuid:1"
		for k, v := range extra {
			p[k] = v
		}
		return p
	}
	for _, tc := range []struct {
		name string
		cred string
	}{
		{"jwt_vc_json sub differs from credentialSubject.id", sign("JWT", v1(nil))},
		{"vc+jwt sub differs from credentialSubject.id", sign("vc+jwt", v2(map[string]any{"sub": otherDID}))},
		{"vc+jwt jti differs from id", sign("vc+jwt", v2(map[string]any{"jti": "urn:uuid:2"}))},
		{"vc+jwt sub not a string", sign("vc+jwt", v2(map[string]any{"sub": 7}))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.present(t, tc.cred)
			require.ErrorIs(t, err, ErrMalformed)
		})
	}
	_, err := f.present(t, sign("vc+jwt", v2(map[string]any{"sub": f.holder.did, "jti": "urn:uuid:1"})))
	require.NoError(t, err, "agreeing registered claims are fine")
}

func TestDuplicateMemberNamesRefused(t *testing.T) {
	f := newJWTFixture(t, nil)
	hdr := `{"alg":"EdDSA","typ":"vc+jwt","kid":"` + f.issuer.kid + `"}`
	credBody := func(subject string) string {
		return `{"@context":["` + ContextCredentialsV2 + `"],"type":["VerifiableCredential","EmployeeCredential"],` +
			`"issuer":"` + f.issuer.did + `","validFrom":"2026-01-01T00:00:00Z","credentialSubject":` + subject + `}`
	}
	good := credBody(`{"id":"` + f.holder.did + `","sector":"energie"}`)
	_, err := f.present(t, f.issuer.sign(hdr, good))
	require.NoError(t, err, "the undoctored credential verifies")

	for _, tc := range []struct {
		name string
		vp   func() (*VerifiedPresentation, error)
	}{
		{"claim twice in a signed VC-JWT payload", func() (*VerifiedPresentation, error) {
			return f.present(t, f.issuer.sign(hdr, credBody(`{"id":"`+f.holder.did+`","sector":"gas","sector":"energie"}`)))
		}},
		{"escaped spelling of a claim name", func() (*VerifiedPresentation, error) {
			return f.present(t, f.issuer.sign(hdr, credBody(`{"id":"`+f.holder.did+`","sector":"gas","\u0073ector":"energie"}`)))
		}},
		{"alg twice in a JOSE header", func() (*VerifiedPresentation, error) {
			return f.present(t, f.issuer.sign(`{"alg":"EdDSA","alg":"ES256","typ":"vc+jwt","kid":"`+f.issuer.kid+`"}`, good))
		}},
		{"kid in two letter cases", func() (*VerifiedPresentation, error) {
			return f.present(t, f.issuer.sign(`{"alg":"EdDSA","typ":"vc+jwt","kid":"`+f.issuer.kid+`","KID":"did:web:evil.example#k"}`, good))
		}},
		{"nonce twice in a VP JWT", func() (*VerifiedPresentation, error) {
			return f.presentRaw(t, `{"iss":"`+f.holder.did+`","aud":"aud","nonce":"other","nonce":"n","vp":{"type":["VerifiablePresentation"],"verifiableCredential":[`+mustJSON(t, f.issuer.sign(hdr, good))+`]}}`)
		}},
		{"duplicate in an ldp_vp", func() (*VerifiedPresentation, error) {
			return f.c.VerifyPresentation(context.Background(), []byte(`{"@context":["`+ContextCredentialsV2+`"],"type":["VerifiablePresentation"],"type":["VerifiablePresentation"],"proof":{}}`),
				PresentationParams{Nonce: "n", Audience: "aud"})
		}},
		{"duplicate in an SD-JWT disclosure", func() (*VerifiedPresentation, error) {
			return f.presentSDJWT(t, `["salt1","org",{"sector":"gas","sector":"energie"}]`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.vp()
			require.ErrorIs(t, err, ErrMalformed)
			require.ErrorContains(t, err, "duplicate")
		})
	}
	t.Run("SD-JWT disclosure without duplicates verifies", func(t *testing.T) {
		vp, err := f.presentSDJWT(t, `["salt1","org",{"sector":"energie"}]`)
		require.NoError(t, err)
		require.Equal(t, map[string]any{"sector": "energie"}, vp.Credentials[0].Claims["org"])
	})
}

// presentSDJWT issues a dc+sd-jwt with one disclosure (given literally) and
// presents it with a KB-JWT signed by a fresh P-256 holder key.
func (f *jwtFixture) presentSDJWT(t testing.TB, disclosureJSON string) (*VerifiedPresentation, error) {
	t.Helper()
	hk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	jwk, err := json.Marshal(jose.JSONWebKey{Key: hk.Public()})
	require.NoError(t, err)
	disc := base64.RawURLEncoding.EncodeToString([]byte(disclosureJSON))
	payload := `{"iss":"` + f.issuer.did + `","vct":"EmployeeCredential","_sd_alg":"sha-256","_sd":["` + sdDigest(disc) + `"],"cnf":{"jwk":` + string(jwk) + `}}`
	issued := f.issuer.sign(`{"alg":"EdDSA","typ":"dc+sd-jwt","kid":"`+f.issuer.kid+`"}`, payload) + "~" + disc + "~"
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: hk}, (&jose.SignerOptions{}).WithType("kb+jwt"))
	require.NoError(t, err)
	kbPayload := mustJSON(t, map[string]any{"iat": f.now.Unix(), "aud": "aud", "nonce": "n", "sd_hash": sdDigest(issued)})
	obj, err := signer.Sign([]byte(kbPayload))
	require.NoError(t, err)
	kb, err := obj.CompactSerialize()
	require.NoError(t, err)
	return f.c.VerifyPresentation(context.Background(), []byte(issued+kb), PresentationParams{Nonce: "n", Audience: "aud", Level: LevelPublic})
}

func TestOneNestingLimitForEveryFormat(t *testing.T) {
	f := newJWTFixture(t, nil)
	deep := func(n int) any {
		var v any = "x"
		for range n {
			v = map[string]any{"a": v}
		}
		return v
	}
	hdr := `{"alg":"EdDSA","typ":"vc+jwt","kid":"` + f.issuer.kid + `"}`
	for _, tc := range []struct {
		name string
		vp   func() (*VerifiedPresentation, error)
	}{
		{"VC-JWT payload", func() (*VerifiedPresentation, error) {
			cred := f.v2Credential(f.issuer.did)
			cred["credentialSubject"].(map[string]any)["deep"] = deep(40)
			return f.present(t, f.issuer.sign(hdr, mustJSON(t, cred)))
		}},
		{"VP JWT payload", func() (*VerifiedPresentation, error) {
			return f.presentRaw(t, mustJSON(t, map[string]any{"iss": f.holder.did, "aud": "aud", "nonce": "n", "x": deep(40),
				"vp": map[string]any{"type": []any{"VerifiablePresentation"}}}))
		}},
		{"JOSE header", func() (*VerifiedPresentation, error) {
			return f.present(t, f.issuer.sign(`{"alg":"EdDSA","typ":"vc+jwt","kid":"`+f.issuer.kid+`","x":`+mustJSON(t, deep(40))+`}`, mustJSON(t, f.v2Credential(f.issuer.did))))
		}},
		{"SD-JWT disclosure", func() (*VerifiedPresentation, error) {
			return f.presentSDJWT(t, `["salt1","org",`+mustJSON(t, deep(40))+`]`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.vp()
			require.ErrorIs(t, err, ErrMalformed)
			require.ErrorContains(t, err, "nesting")
		})
	}
}

// didWebHost is an HTTPS did:web host that counts every request it gets.
type didWebHost struct {
	srv  *httptest.Server
	hits atomic.Int64
	// didHits counts requests for the DID document only.
	didHits atomic.Int64
	did     string
	key     *ecdsa.PrivateKey
	kid     string
	// lists are status-list credentials served under /status/<name>.
	lists map[string]string
}

func newDIDWebHost(t testing.TB, tlsc *loopbackTLS) *didWebHost {
	t.Helper()
	h := &didWebHost{lists: map[string]string{}}
	var err error
	h.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.hits.Add(1)
		if body, ok := h.lists[strings.TrimPrefix(r.URL.Path, "/status/")]; ok {
			_, _ = w.Write([]byte(body))
			return
		}
		if r.URL.Path != "/.well-known/did.json" {
			http.NotFound(w, r)
			return
		}
		h.didHits.Add(1)
		jwk, _ := json.Marshal(jose.JSONWebKey{Key: h.key.Public()})
		_, _ = fmt.Fprintf(w, `{"id":%q,"verificationMethod":[{"id":%q,"type":"JsonWebKey2020","controller":%q,"publicKeyJwk":%s}],"assertionMethod":[%q],"authentication":[%q]}`,
			h.did, h.kid, h.did, jwk, h.kid, h.kid)
	}))
	h.srv.TLS = &tls.Config{Certificates: []tls.Certificate{tlsc.Cert}}
	h.srv.StartTLS()
	t.Cleanup(h.srv.Close)
	u, err := url.Parse(h.srv.URL)
	require.NoError(t, err)
	h.did = "did:web:" + strings.ReplaceAll(u.Host, ":", "%3A")
	h.kid = h.did + "#key-1"
	return h
}

func (h *didWebHost) signJWT(t testing.TB, header, payload string) string {
	t.Helper()
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	d := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, h.key, d[:])
	require.NoError(t, err)
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestNoContactBeforeTrust(t *testing.T) {
	tlsc := newLoopbackTLS(t)
	web := newDIDWebHost(t, tlsc)
	f := &jwtFixture{issuer: newEdIdentity(t), holder: newEdIdentity(t), now: time.Now()}
	cfg := DefaultConfig()
	cfg.DIDResolution.AllowPrivateAddressesForTesting = true
	cfg.Federations = []FederationConfig{{ID: "f", TrustedIssuers: []TrustedIssuer{
		{DID: f.issuer.did, Types: []string{"EmployeeCredential"}}}}}
	// A fresh checker per case: nothing comes from a warm DID cache.
	fresh := func() *Checker {
		c, err := NewChecker(cfg, zerolog.Nop(), WithRootCAs(tlsc.Pool))
		require.NoError(t, err)
		return c
	}

	// The host works: trusting it makes the same credential verify (this
	// also shows that the refusals below are not network failures).
	webCred := web.signJWT(t, `{"alg":"ES256","typ":"vc+jwt","kid":"`+web.kid+`"}`, mustJSON(t, f.v2Credential(web.did)))
	trusting := *f
	cfg2 := cfg
	cfg2.Federations = []FederationConfig{{ID: "f", TrustedIssuers: []TrustedIssuer{{DID: web.did, Types: []string{"EmployeeCredential"}}}}}
	var err error
	trusting.c, err = NewChecker(cfg2, zerolog.Nop(), WithRootCAs(tlsc.Pool))
	require.NoError(t, err)
	_, err = trusting.present(t, webCred)
	require.NoError(t, err)
	require.Positive(t, web.hits.Load())

	ldp := f.v2Credential(web.did)
	ldp["@context"] = []any{ContextCredentialsV2, contextUndefinedTerms}
	ldp["proof"] = map[string]any{"type": "JsonWebSignature2020", "proofPurpose": "assertionMethod", "verificationMethod": web.kid,
		"created": "2026-01-01T00:00:00Z", "jws": "eyJhbGciOiJFUzI1NiJ9..c2ln"}
	// A status list on the untrusted host, issued by the untrusted host,
	// referred to by a trusted issuer's credential.
	listCred := f.v2Credential(web.did)
	listCred["type"] = []any{"VerifiableCredential", "BitstringStatusListCredential"}
	listCred["credentialSubject"] = map[string]any{"id": web.srv.URL + "/status/l#list", "type": "BitstringStatusList",
		"statusPurpose": "revocation", "encodedList": "uH4sIAAAAAAAAA-3BMQEAAADCoPVPbQwfoAAAAAAAAAAAAAAAAAAAAIC3AYbSVKsAQAAA"}
	web.lists["l"] = web.signJWT(t, `{"alg":"ES256","typ":"vc+jwt","kid":"`+web.kid+`"}`, mustJSON(t, listCred))
	withStatus := f.v2Credential(f.issuer.did)
	withStatus["credentialStatus"] = map[string]any{"type": "BitstringStatusListEntry", "statusPurpose": "revocation",
		"statusListIndex": "3", "statusListCredential": web.srv.URL + "/status/l"}

	for _, tc := range []struct {
		name string
		vp   func() (*VerifiedPresentation, error)
		want error
	}{
		{"status list issued by an untrusted did:web", func() (*VerifiedPresentation, error) {
			return f.present(t, f.issuer.sign(`{"alg":"EdDSA","typ":"vc+jwt","kid":"`+f.issuer.kid+`"}`, mustJSON(t, withStatus)))
		}, ErrStatusListInvalid},
		{"VC-JWT by an untrusted did:web", func() (*VerifiedPresentation, error) { return f.present(t, webCred) }, ErrUntrustedIssuer},
		{"ldp_vc by an untrusted did:web", func() (*VerifiedPresentation, error) { return f.present(t, ldp) }, ErrUntrustedIssuer},
		{"SD-JWT by an untrusted did:web", func() (*VerifiedPresentation, error) {
			issued := web.signJWT(t, `{"alg":"ES256","typ":"dc+sd-jwt","kid":"`+web.kid+`"}`, `{"iss":"`+web.did+`","vct":"EmployeeCredential"}`)
			return f.c.VerifyPresentation(context.Background(), []byte(issued+"~"), PresentationParams{Nonce: "n", Audience: "aud"})
		}, ErrUntrustedIssuer},
		{"trusted iss, kid on an untrusted did:web", func() (*VerifiedPresentation, error) {
			return f.present(t, web.signJWT(t, `{"alg":"ES256","typ":"vc+jwt","kid":"`+web.kid+`"}`, mustJSON(t, f.v2Credential(f.issuer.did))))
		}, ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.c = fresh()
			before := web.didHits.Load()
			_, err := tc.vp()
			require.ErrorIs(t, err, tc.want)
			require.Equal(t, before, web.didHits.Load(), "the untrusted DID was resolved")
		})
	}
}
