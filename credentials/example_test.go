package credentials

import (
	"bytes"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// TestExampleConfig decodes config.example.yaml strictly on top of the
// defaults, so the example and the code cannot drift.
func TestExampleConfig(t *testing.T) {
	raw, err := os.ReadFile("config.example.yaml")
	require.NoError(t, err)
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&cfg))
	require.NoError(t, cfg.Validate())
	require.Equal(t, "xfsc-compat", cfg.Federations[0].TrustedIssuers[0].StatusProfile)
	require.Equal(t, []string{"VSNfDVerpflichtung"}, cfg.Levels.VSNfD.RequiredCredentialTypes)

	// Every default appears in the example with its default value.
	def := DefaultConfig()
	for _, l := range []*LevelDefaults{&def.Levels.Public, &def.Levels.Kritis, &def.Levels.VSNfD} {
		if l.RequiredCredentialTypes == nil {
			l.RequiredCredentialTypes = []string{}
		}
	}
	require.Equal(t, def.Levels.VSNfD, cfg.Levels.VSNfD)
	require.Equal(t, def.OID4VP.NonceTTL, cfg.OID4VP.NonceTTL)
	require.Equal(t, def.DIDResolution, cfg.DIDResolution)
	require.Equal(t, def.StatusList, cfg.StatusList)
	require.Equal(t, def.Levels.Public, cfg.Levels.Public)
	require.Equal(t, def.Levels.Kritis, cfg.Levels.Kritis)
	require.Equal(t, def.MaxInputBytes, cfg.MaxInputBytes)
	require.Equal(t, def.RecheckInterval, cfg.RecheckInterval)

	bad := DefaultConfig()
	dec = yaml.NewDecoder(bytes.NewReader([]byte("oid4vp:\n  nonce_tll: 5m\n")))
	dec.KnownFields(true)
	require.Error(t, dec.Decode(&bad), "unknown keys are errors")
}
