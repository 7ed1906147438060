package credentials

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDefaultConfigValidates(t *testing.T) {
	c := DefaultConfig()
	require.NoError(t, c.Validate())
}

func TestConfigValidateCollectsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.Federations = []FederationConfig{
		{ID: "a", TrustedIssuers: []TrustedIssuer{{DID: "did:example:x", StatusProfile: "lsb"}}, Formats: []string{"mso_mdoc"}},
		{ID: "a", HomeserverDomains: []string{"bad/host"}},
	}
	c.OID4VP.PublicBaseURL = "http://focus.example.org"
	c.OID4VP.NonceTTL = time.Second
	c.Levels.Kritis.HolderBinding = false
	c.Levels.Public.AttestationTTL = 48 * time.Hour
	c.AtRestKey = "not base64!"
	err := c.Validate()
	require.Error(t, err)
	msg := err.Error()
	for _, want := range []string{
		"federations[0].trusted_issuers[0].did:",
		"federations[0].trusted_issuers[0].types:",
		"federations[0].trusted_issuers[0].status_profile:",
		"federations[0].formats[0]:",
		"federations[1].id: duplicate",
		"federations[1].homeserver_domains[0]:",
		"federations[1].trusted_issuers:",
		"oid4vp.public_base_url: must use https",
		"oid4vp.nonce_ttl:",
		"levels.kritis.holder_binding: cannot be disabled",
		"levels.public.attestation_ttl:",
		"at_rest_key:",
	} {
		require.Contains(t, msg, want)
	}
	require.Len(t, strings.Split(msg, "\n"), 12)
}

func TestConfigRequiresKeyAndURLWithFederations(t *testing.T) {
	c := DefaultConfig()
	c.Federations = []FederationConfig{{ID: "f", TrustedIssuers: []TrustedIssuer{{DID: "did:web:issuer.example", Types: []string{"T"}}}}}
	err := c.Validate()
	require.ErrorContains(t, err, "oid4vp.public_base_url: must be set")
	require.ErrorContains(t, err, "at_rest_key: must be set")
	c.OID4VP.PublicBaseURL = "https://focus.example.org"
	c.AtRestKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	require.NoError(t, c.Validate())
	// Tightening a level is fine.
	c.Levels.Public.AttestationTTL = time.Hour
	c.Levels.Public.HolderBinding = true
	require.NoError(t, c.Validate())
}
