package credentials

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// offlineChecker never reaches the network: did:web resolution and status
// fetches time out almost at once and refuse non-public addresses.
func offlineChecker(t testing.TB) *Checker {
	cfg := DefaultConfig()
	cfg.DIDResolution.Timeout = 10 * time.Millisecond
	cfg.StatusList.FetchTimeout = 10 * time.Millisecond
	cfg.Federations = []FederationConfig{{ID: "f", TrustedIssuers: []TrustedIssuer{
		{DID: "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", Types: []string{"EmployeeCredential"}}}}}
	c, err := NewChecker(cfg, zerolog.Nop())
	require.NoError(t, err)
	return c
}

func b64j(v any) string {
	raw, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func FuzzVerifyPresentation(f *testing.F) {
	holder := "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
	f.Add(`{"@context":["https://www.w3.org/2018/credentials/v1"],"type":["VerifiablePresentation"],"verifiableCredential":[{"@context":["https://www.w3.org/2018/credentials/v1",{"@vocab":"urn:x#"}],"type":["VerifiableCredential","EmployeeCredential"],"issuer":"` + holder + `","issuanceDate":"2026-01-01T00:00:00Z","credentialSubject":{"id":"` + holder + `","sector":"energie"},"proof":{"type":"Ed25519Signature2020","proofPurpose":"assertionMethod","verificationMethod":"` + holder + `#z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp","proofValue":"z3FXQ"}}],"proof":{"type":"Ed25519Signature2020","proofPurpose":"authentication","verificationMethod":"` + holder + `","challenge":"n","domain":"d","proofValue":"z1"}}`)
	f.Add(b64j(map[string]any{"alg": "EdDSA", "kid": holder}) + "." + b64j(map[string]any{"iss": holder, "aud": "d", "nonce": "n",
		"vp": map[string]any{"type": []string{"VerifiablePresentation"}, "verifiableCredential": []string{"a.b.c"}}}) + ".c2ln")
	f.Add(b64j(map[string]any{"alg": "ES256", "typ": "dc+sd-jwt", "kid": holder + "#0"}) + "." +
		b64j(map[string]any{"iss": holder, "vct": "EmployeeCredential", "_sd": []string{"abc"}}) + ".c2ln~" + b64j([]any{"salt", "sector", "energie"}) + "~")
	f.Add(b64j(map[string]any{"alg": "none"}) + "." + b64j(map[string]any{"vp": map[string]any{}}) + ".")
	f.Add(`["a.b.c", {"@context":"x"}]`)
	// Refusals of issue 8: respellings, duplicates, nesting, inline contexts.
	f.Add(`{"@context":["https://www.w3.org/2018/credentials/v1"],"type":"VerifiablePresentation","type":"VerifiablePresentation","proof":{}}`)
	f.Add(`{"@context":["https://www.w3.org/2018/credentials/v1",{"VerifiablePresentation":"urn:x"}],"type":"VerifiablePresentation","proof":{}}`)
	f.Add(`{"@context":["https://www.w3.org/2018/credentials/v1"],"@type":"VerifiablePresentation","https://www.w3.org/2018/credentials#holder":{"@id":"did:key:z"},"proof":{}}`)
	f.Add(`{"@context":["https://www.w3.org/2018/credentials/v1"],"type":"VerifiablePresentation","verifiableCredential":{"@context":["https://www.w3.org/2018/credentials/v1","https://www.w3.org/ns/credentials/undefined-terms/v2"],"type":["VerifiableCredential","EmployeeCredential"],"issuer":"` + holder + `","https://www.w3.org/2018/credentials#expirationDate":{"@value":"2020-01-01T00:00:00Z","@type":"http://www.w3.org/2001/XMLSchema#dateTime"},"credentialSubject":{"@id":"did:key:z","sector":{"@value":"energie"}},"proof":{"type":"Ed25519Signature2020","proofPurpose":"assertionMethod","verificationMethod":"` + holder + `","expires":"2020-01-01T00:00:00Z","proofValue":"z1"}},"proof":{"type":"Ed25519Signature2020","proofPurpose":"authentication","verificationMethod":"` + holder + `","challenge":"n","domain":"d","proofValue":"z1"}}`)
	f.Add(b64j(map[string]any{"alg": "EdDSA", "kid": holder}) + "." + b64j(map[string]any{"iss": holder, "aud": "d", "nonce": "n", "exp": "soon",
		"vp": map[string]any{"type": []string{"VerifiablePresentation"}}}) + ".c2ln")
	f.Add(`eyJhbGciOiJFZERTQSIsImFsZyI6Im5vbmUifQ.eyJhIjoxLCJhIjoyfQ.c2ln`) // {"alg":"EdDSA","alg":"none"}.{"a":1,"a":2}
	f.Add(strings.Repeat(`[`, 40) + strings.Repeat(`]`, 40))
	// The other proof suites: VC 2.0 presentations (json-gold's graph
	// container work-around, presentationGraphs) with DataIntegrityProof,
	// a credential by reference, and Ed25519Signature2018.
	f.Add(`{"@context":["https://www.w3.org/ns/credentials/v2"],"type":"VerifiablePresentation","holder":"` + holder + `","verifiableCredential":[{"@context":["https://www.w3.org/ns/credentials/v2","https://www.w3.org/ns/credentials/undefined-terms/v2"],"type":["VerifiableCredential","EmployeeCredential"],"issuer":"` + holder + `","validFrom":"2026-01-01T00:00:00Z","credentialSubject":{"id":"` + holder + `","sector":"energie"},"proof":{"type":"DataIntegrityProof","cryptosuite":"ecdsa-rdfc-2019","proofPurpose":"assertionMethod","verificationMethod":"` + holder + `#z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp","proofValue":"z3FXQ"}},"urn:uuid:1"],"proof":{"type":"DataIntegrityProof","cryptosuite":"eddsa-rdfc-2022","proofPurpose":"authentication","verificationMethod":"` + holder + `#z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp","challenge":"n","domain":"d","proofValue":"z1"}}`)
	f.Add(`{"@context":["https://www.w3.org/ns/credentials/v2"],"type":"VerifiablePresentation","verifiableCredential":"urn:uuid:1","proof":{"type":"DataIntegrityProof","cryptosuite":"bbs-2023","@context":["https://www.w3.org/ns/credentials/v2"],"proofPurpose":"authentication","verificationMethod":"` + holder + `","proofValue":"u1"}}`)
	f.Add(`{"@context":["https://www.w3.org/2018/credentials/v1"],"type":"VerifiablePresentation","proof":{"type":"Ed25519Signature2018","proofPurpose":"authentication","verificationMethod":"` + holder + `","challenge":"n","domain":"d","jws":"eyJhbGciOiJFUzI1NiIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il19..c2ln"}}`)
	c := offlineChecker(f)
	f.Fuzz(func(t *testing.T, token string) {
		vp, err := c.VerifyPresentation(context.Background(), []byte(token), PresentationParams{Nonce: "n", Audience: "d", Level: LevelPublic})
		if err != nil {
			require.NotEqual(t, "", ReasonCode(err))
			return
		}
		// Accepted presentations (not expected offline) must re-marshal.
		_, err = json.Marshal(vp)
		require.NoError(t, err)
	})
}

func FuzzParseCredential(f *testing.F) {
	f.Add(`{"@context":["https://www.w3.org/2018/credentials/v1"],"type":["VerifiableCredential","T"],"issuer":{"id":"did:web:a"},"issuanceDate":"2026-01-01T00:00:00Z","expirationDate":"2027-01-01T00:00:00Z","credentialSubject":{"id":"did:key:z","a":{"b":1}},"credentialStatus":{"type":"BitstringStatusListEntry","statusPurpose":"revocation","statusListIndex":"7","statusListCredential":"https://s.example/l"}}`)
	f.Add(`{"@context":"https://www.w3.org/ns/credentials/v2","type":"VerifiableCredential","issuer":"did:key:z","validFrom":"2026-01-01T00:00:00.5+01:00","credentialSubject":[{"x":true}],"credentialStatus":[{"type":"StatusList2021Entry","statusPurpose":"suspension","statusListIndex":3,"statusListCredential":"https://s.example/l","statusSize":2}]}`)
	f.Fuzz(func(t *testing.T, data string) {
		m, err := decodeJSONObject([]byte(data))
		if err != nil {
			return
		}
		w, err := parseW3CCredential(m, true)
		if err != nil {
			return
		}
		_ = checkValidity(w.ValidFrom, w.ValidUntil, time.Now())
		_ = checkContexts(m, 0)
		again, err := json.Marshal(m)
		require.NoError(t, err)
		m2, err := decodeJSONObject(again)
		require.NoError(t, err)
		w2, err := parseW3CCredential(m2, true)
		require.NoError(t, err)
		require.Equal(t, w.Issuer, w2.Issuer)
		require.Equal(t, w.Types, w2.Types)
		require.Equal(t, w.SubjectID, w2.SubjectID)
		require.Equal(t, w.Status, w2.Status)
		require.True(t, w.ValidFrom.Equal(w2.ValidFrom) && w.ValidUntil.Equal(w2.ValidUntil))
	})
}

// FuzzCheckCompactForm: the JSON-LD compact-form check never panics, and a
// document it accepts is accepted again after a JSON round trip.
func FuzzCheckCompactForm(f *testing.F) {
	f.Add(`{"@context":["https://www.w3.org/2018/credentials/v1","https://www.w3.org/ns/credentials/undefined-terms/v2"],"type":["VerifiableCredential","EmployeeCredential"],"issuer":"did:key:z","issuanceDate":"2026-01-01T00:00:00Z","credentialSubject":{"id":"did:key:y","sector":"energie"},"credentialStatus":{"id":"https://s.example/l#3","type":"BitstringStatusListEntry","statusPurpose":"revocation","statusListIndex":"3","statusListCredential":"https://s.example/l"}}`)
	f.Add(`{"@context":"https://www.w3.org/ns/credentials/v2","type":"VerifiableCredential","issuer":{"id":"did:key:z","name":"x"},"validFrom":"2026-01-01T00:00:00Z","credentialSubject":[{"id":"did:key:y"}]}`)
	f.Add(`{"@context":["https://www.w3.org/2018/credentials/v1",{"@vocab":"urn:x#"}],"type":["VerifiableCredential"],"credentialSubject":{"a":1}}`)
	f.Add(`{"@context":["https://www.w3.org/2018/credentials/v1"],"type":["VerifiableCredential"],"https://www.w3.org/2018/credentials#credentialStatus":{"@id":"urn:s"}}`)
	f.Add(`{"@context":["https://www.w3.org/2018/credentials/v1","https://www.w3.org/ns/credentials/undefined-terms/v2"],"type":["VerifiableCredential"],"credentialSubject":{"@id":"did:key:y","sector":{"@value":"energie"}}}`)
	f.Add(`{"@context":["https://www.w3.org/2018/credentials/v1","https://w3id.org/security/suites/ed25519-2020/v1"],"type":"Ed25519Signature2020","created":"2026-01-01T00:00:00Z","expires":"2026-02-01T00:00:00Z","proofPurpose":"assertionMethod","verificationMethod":"did:key:z#z","challenge":"n","domain":"d"}`)
	f.Fuzz(func(t *testing.T, data string) {
		m, err := decodeJSONObject([]byte(data))
		if err != nil {
			return
		}
		if err := checkCompactForm(m); err != nil {
			require.NotEqual(t, "internal", ReasonCode(err))
			return
		}
		again, err := json.Marshal(m)
		require.NoError(t, err)
		m2, err := decodeJSONObject(again)
		require.NoError(t, err)
		require.NoError(t, checkCompactForm(m2))
	})
}

func FuzzExpandSD(f *testing.F) {
	d1 := b64j([]any{"s1", "sector", "energie"})
	d2 := b64j([]any{"s2", "DE"})
	f.Add(`{"_sd":["`+sdDigest(d1)+`"],"n":[{"...":"`+sdDigest(d2)+`"},1]}`, d1+"~"+d2)
	f.Add(`{"_sd":"x"}`, "")
	f.Fuzz(func(t *testing.T, payload, disclosures string) {
		m, err := decodeJSONObject([]byte(payload))
		if err != nil {
			return
		}
		discs := map[string]*disclosure{}
		for _, d := range strings.Split(disclosures, "~") {
			raw, err := base64.RawURLEncoding.DecodeString(d)
			if err != nil {
				continue
			}
			var arr []any
			if json.Unmarshal(raw, &arr) != nil {
				continue
			}
			dd := &disclosure{}
			switch len(arr) {
			case 3:
				name, ok := arr[1].(string)
				if !ok {
					continue
				}
				dd.name, dd.value = name, arr[2]
			case 2:
				dd.isArray, dd.value = true, arr[1]
			default:
				continue
			}
			discs[sdDigest(d)] = dd
		}
		out, err := expandSD(m, discs, map[string]bool{}, 0)
		if err != nil {
			return
		}
		raw, err := json.Marshal(out)
		require.NoError(t, err)
		require.NotContains(t, string(raw), `"_sd"`)
	})
}

func FuzzParseAccessPolicy(f *testing.F) {
	f.Add(`{"level":"kritis","required_credentials":[{"federation":"oev","type":"EmployeeCredential","claims":{"org.sector":{"in":["energie"]}}}],"allowed_homeservers":["bund.example"],"max_participants":50}`)
	f.Add(`{"level":"vs-nfd","required_credentials":[{"type":"T","claims":{"a":{"eq":true}}}],"allowed_homeservers":["a"],"need_to_know":["@a:b"]}`)
	f.Add(`{"level":"public"}`)
	f.Fuzz(func(t *testing.T, data string) {
		p, err := ParseAccessPolicy([]byte(data))
		if err != nil {
			return
		}
		again, err := json.Marshal(p)
		require.NoError(t, err)
		p2, err := ParseAccessPolicy(again)
		require.NoError(t, err)
		require.True(t, reflect.DeepEqual(p.asInput(), p2.asInput()))
	})
}

// FuzzTokenStatusRef: an SD-JWT VC's status claim, as the issuer signed it
// (any JSON), gives a reference with an https URL and a non-negative index
// or an error, never a panic.
func FuzzTokenStatusRef(f *testing.F) {
	f.Add(`{"status_list":{"idx":3,"uri":"https://issuer.example/lists/1"}}`)
	f.Add(`{"status_list":{"idx":-1,"uri":"https://issuer.example/lists/1"}}`)
	f.Add(`{"status_list":{"idx":1e300,"uri":"https://x"}}`)
	f.Add(`{"status_list":{"idx":0.5,"uri":"https://x"}}`)
	f.Add(`{"status_list":{"idx":0,"uri":"http://x"},"identifiers_list":{}}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, s string) {
		v, err := decodeJSON([]byte(s))
		if err != nil {
			return
		}
		ref, err := tokenStatusRef(v)
		if err != nil {
			return
		}
		require.Equal(t, TokenStatusList, ref.Type)
		require.GreaterOrEqual(t, ref.Index, 0)
		u, err := url.Parse(ref.ListURL)
		require.NoError(t, err)
		require.Equal(t, "https", u.Scheme, ref.ListURL)
	})
}
