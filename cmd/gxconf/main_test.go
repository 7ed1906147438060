package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	mxas "maunium.net/go/mautrix/appservice"

	"github.com/gxfs-conf/gxconf/appservice"
	"github.com/gxfs-conf/gxconf/config"
)

func writeConfig(t *testing.T, domain string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(p, []byte("homeserver: {domain: "+domain+", address: 'http://127.0.0.1:8008'}\n"), 0o600))
	return p
}

func TestGenerateRegistration(t *testing.T) {
	cfg := writeConfig(t, "bund.test")
	reg := filepath.Join(filepath.Dir(cfg), "registration.yaml")
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"generate-registration", "-c", cfg, "-r", reg}, &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "Wrote "+reg)

	info, err := os.Stat(reg)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "the registration holds both tokens")
	r, err := mxas.LoadRegistration(reg)
	require.NoError(t, err)
	require.Len(t, r.AppToken, 64)
	require.Len(t, r.ServerToken, 64)
	require.NotEqual(t, r.AppToken, r.ServerToken)
	require.Equal(t, "gxconf", r.SenderLocalpart)
	require.Equal(t, "http://127.0.0.1:29333", r.URL)
	require.True(t, r.Namespaces.UserIDs[0].Exclusive)
	require.Equal(t, `^@gxconf:bund\.test$`, r.Namespaces.UserIDs[0].Regex)
	require.False(t, r.Namespaces.RoomIDs[0].Exclusive)
	require.NoError(t, appservice.CheckRegistration(r, config.Default().Appservice))

	// A second run refuses to rotate the tokens unless asked to.
	errOut.Reset()
	require.Equal(t, 1, run([]string{"generate-registration", "-c", cfg, "-r", reg}, &out, &errOut))
	require.Contains(t, errOut.String(), "exists; pass -force")
	require.Equal(t, 0, run([]string{"generate-registration", "-c", cfg, "-r", reg, "-force"}, &out, &errOut))
	r2, err := mxas.LoadRegistration(reg)
	require.NoError(t, err)
	require.NotEqual(t, r.AppToken, r2.AppToken)
}

// -force over an existing file that others may read (the committed
// template is 0644) replaces it: the new tokens were written into that file
// and only then made 0600, so a reader who had opened it got them.
func TestGenerateRegistrationReplacesReadableFile(t *testing.T) {
	cfg := writeConfig(t, "bund.test")
	reg := filepath.Join(filepath.Dir(cfg), "registration.yaml")
	template, err := os.ReadFile("../../registration.yaml")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(reg, template, 0o644))
	reader, err := os.Open(reg) // another user, while the file was 0644
	require.NoError(t, err)
	defer reader.Close()

	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"generate-registration", "-c", cfg, "-r", reg, "-force"}, &out, &errOut), errOut.String())
	r, err := mxas.LoadRegistration(reg)
	require.NoError(t, err)
	info, err := os.Stat(reg)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	seen, err := io.ReadAll(reader)
	require.NoError(t, err)
	require.NotContains(t, string(seen), r.AppToken)
	require.NotContains(t, string(seen), r.ServerToken)
	entries, err := os.ReadDir(filepath.Dir(reg))
	require.NoError(t, err)
	for _, e := range entries {
		require.False(t, strings.HasPrefix(e.Name(), ".registration.yaml."), "temporary file left: %s", e.Name())
	}
}

func TestGenerateRegistrationRefusesPlaceholders(t *testing.T) {
	cfg := writeConfig(t, "example.org")
	var out, errOut bytes.Buffer
	require.Equal(t, 1, run([]string{"generate-registration", "-c", cfg, "-r", filepath.Join(t.TempDir(), "r.yaml")}, &out, &errOut))
	require.Contains(t, errOut.String(), "homeserver.domain")
	require.Contains(t, errOut.String(), "placeholder")
}

// The committed template documents the format but cannot be used.
func TestTemplateRegistrationIsRefused(t *testing.T) {
	r, err := mxas.LoadRegistration("../../registration.yaml")
	require.NoError(t, err)
	err = appservice.CheckRegistration(r, config.Default().Appservice)
	require.ErrorContains(t, err, "as_token: still the template placeholder")
	require.ErrorContains(t, err, "hs_token: still the template placeholder")

	cfg := writeConfig(t, "bund.test")
	var out, errOut bytes.Buffer
	code := run([]string{"serve", "-c", cfg, "-r", "../../registration.yaml"}, &out, &errOut)
	require.Equal(t, 1, code)
	require.Contains(t, errOut.String(), "template placeholder")
}

func TestCommandLine(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"version"}, &out, &errOut))
	require.True(t, strings.HasPrefix(out.String(), "gxconf "))
	require.Equal(t, 2, run(nil, &out, &errOut))
	require.Equal(t, 2, run([]string{"frobnicate"}, &out, &errOut))
	require.Contains(t, errOut.String(), `unknown command "frobnicate"`)
	errOut.Reset()
	require.Equal(t, 2, run([]string{"serve", "extra"}, &out, &errOut))
	errOut.Reset()
	require.Equal(t, 1, run([]string{"serve", "-c", "/does/not/exist.yaml"}, &out, &errOut))
	require.Contains(t, errOut.String(), "failed to read config")
}
