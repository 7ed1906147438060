package credentials

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckCompactForm(t *testing.T) {
	const v1 = `"@context":["https://www.w3.org/2018/credentials/v1","https://www.w3.org/ns/credentials/undefined-terms/v2"]`
	for _, tc := range []struct {
		name, doc string
		want      error
	}{
		{"compacted v1 credential", `{` + v1 + `,"type":["VerifiableCredential","EmployeeCredential"],"issuer":"did:key:z","issuanceDate":"2026-01-01T00:00:00Z","credentialSubject":{"id":"did:key:y","sector":"energie","org":{"name":"a","n":[1,2]}}}`, nil},
		{"one-element arrays either way", `{` + v1 + `,"type":"VerifiableCredential","issuer":{"id":"did:key:z"},"credentialSubject":[{"id":"did:key:y"}]}`, nil},
		{"compacted v2 credential", `{"@context":"https://www.w3.org/ns/credentials/v2","type":"VerifiableCredential","issuer":"did:key:z","validFrom":"2026-01-01T00:00:00Z","validUntil":"2027-01-01T00:00:00Z","credentialSubject":{"id":"did:key:y"}}`, nil},
		{"proof options", `{"@context":["https://www.w3.org/2018/credentials/v1","https://w3id.org/security/suites/ed25519-2020/v1"],"type":"Ed25519Signature2020","created":"2026-01-01T00:00:00Z","expires":"2026-02-01T00:00:00Z","proofPurpose":"assertionMethod","verificationMethod":"did:key:z#z"}`, nil},
		{"context not pinned", `{"@context":["https://www.w3.org/2018/credentials/v1","https://evil.example/ctx"],"type":"VerifiableCredential"}`, ErrUnknownContext},
		{"inline context", `{"@context":["https://www.w3.org/2018/credentials/v1",{"@vocab":"urn:x#"}],"type":"VerifiableCredential"}`, ErrMalformed},
		{"nested context", `{` + v1 + `,"type":"VerifiableCredential","credentialSubject":{"@context":{"sector":"urn:x"},"sector":"a"}}`, ErrMalformed},
		{"absolute IRI key", `{` + v1 + `,"type":"VerifiableCredential","https://www.w3.org/2018/credentials#expirationDate":"2020-01-01T00:00:00Z"}`, ErrMalformed},
		{"compact IRI key", `{` + v1 + `,"type":"VerifiableCredential","cred:expirationDate":"2020-01-01T00:00:00Z"}`, ErrMalformed},
		{"@id", `{` + v1 + `,"type":"VerifiableCredential","credentialSubject":{"@id":"did:key:y"}}`, ErrMalformed},
		{"@type", `{` + v1 + `,"@type":"VerifiableCredential"}`, ErrMalformed},
		{"value object", `{` + v1 + `,"type":"VerifiableCredential","credentialSubject":{"sector":{"@value":"energie"}}}`, ErrMalformed},
		{"node reference as an object", `{` + v1 + `,"type":"VerifiableCredential","issuer":{"id":"did:key:z"},"credentialSubject":{"id":"did:key:y"}}`, nil},
		{"node reference as a string", `{` + v1 + `,"type":"VerifiableCredential","issuer":"did:key:z","credentialSubject":"did:key:y"}`, nil},
		{"node split over two objects", `{` + v1 + `,"type":"VerifiableCredential","credentialStatus":[{"id":"urn:s","type":"BitstringStatusListEntry"},{"id":"urn:s","statusPurpose":"revocation"}]}`, ErrMalformed},
		{"node referenced twice", `{` + v1 + `,"type":"VerifiableCredential","issuer":"did:key:z","credentialSubject":{"id":"did:key:y","knows":{"id":"did:key:z"}}}`, nil},
		{"term that expansion drops", `{"@context":"https://www.w3.org/2018/credentials/v1","type":"VerifiableCredential","sector":"energie"}`, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decodeJSONObject([]byte(tc.doc))
			require.NoError(t, err)
			err = checkCompactForm(m)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
		})
	}
}
