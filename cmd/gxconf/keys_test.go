package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/atrest"
	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/store"
)

func randKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return k
}

// keysSetup writes a config with the legacy at_rest_key and an at_rest key
// directory, and puts n attestations sealed with the legacy key into its
// database (as a gxconf before key ids left them).
func keysSetup(t *testing.T, n int) (dir string, legacy []byte) {
	t.Helper()
	dir = t.TempDir()
	legacy = randKey(t)
	cfg := config.Default()
	cfg.Database.URI = "file:" + filepath.Join(dir, "gxconf.db") + "?_txlock=immediate"
	ctx := context.Background()
	db, err := store.Open(ctx, cfg.Database, zerolog.Nop())
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Child(credentials.VersionTable, credentials.UpgradeTable, nil).Upgrade(ctx))
	old, err := atrest.New(nil, "", legacy)
	require.NoError(t, err)
	now := time.Now()
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("att-%d", i)
		claims, _ := json.Marshal(map[string]any{"role": fmt.Sprintf("officer-%d", i)})
		sealed, err := old.Seal(claims, []byte(id))
		require.NoError(t, err)
		_, err = db.Exec(ctx, `INSERT INTO credentials_attestation (id, user_id, room_id, federation, issuer, cred_type, format,
			holder_bound, level, claims, credential_hash, status, verified_at, expires_at)
			VALUES ($1, '@alice:bund.test', '!r:bund.test', 'bund', 'did:web:issuer.test', 'Officer', 'vc+sd-jwt', true, 'kritis', $2, 'h', 'valid', $3, $4)`,
			id, sealed, now.UnixMilli(), now.Add(time.Hour).UnixMilli())
		require.NoError(t, err)
	}
	return dir, legacy
}

// writeKeysConfig writes config.yaml with the legacy key (when not nil) and a
// key directory holding keys, primary primary.
func writeKeysConfig(t *testing.T, dir string, legacy []byte, keys map[string][]byte, primary string) string {
	t.Helper()
	kdir := filepath.Join(dir, fmt.Sprintf("keys-%d", time.Now().UnixNano()))
	require.NoError(t, os.Mkdir(kdir, 0o700))
	for id, k := range keys {
		require.NoError(t, os.WriteFile(filepath.Join(kdir, id), []byte(base64.StdEncoding.EncodeToString(k)), 0o400))
	}
	raw := fmt.Sprintf("homeserver: {domain: bund.test, address: \"http://127.0.0.1:1\"}\ndatabase: {uri: \"file:%s?_txlock=immediate\"}\nat_rest: {keys_dir: %q, primary: %q}\n",
		filepath.Join(dir, "gxconf.db"), kdir, primary)
	if legacy != nil {
		raw += fmt.Sprintf("credentials: {at_rest_key: %q}\n", base64.StdEncoding.EncodeToString(legacy))
	}
	path := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(raw), 0o600))
	return path
}

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	require.Equal(t, 0, code, "gxconf %s: %s", strings.Join(args, " "), errOut.String())
	return out.String()
}

// attestationClaims reads the user's attestations through a verifier built
// as serve builds it.
func attestationClaims(t *testing.T, path string) ([]string, error) {
	t.Helper()
	cfg, err := config.Load(path, nil)
	require.NoError(t, err)
	ctx := context.Background()
	db, err := store.Open(ctx, cfg.Database, zerolog.Nop())
	require.NoError(t, err)
	defer db.Close()
	v, err := newVerifier(ctx, cfg, db, zerolog.Nop(), &asLate{}, nil, nil)
	if err != nil {
		return nil, err
	}
	atts, err := v.Attestations(ctx, "@alice:bund.test")
	require.NoError(t, err)
	var roles []string
	for _, a := range atts {
		roles = append(roles, fmt.Sprint(a.Claims["role"]))
	}
	return roles, nil
}

// TestKeysRotate: attestations sealed with the legacy at_rest_key move to a
// key with id (k1), then to k2, without loss; the old keys can then leave;
// a missing or wrong key makes serve refuse to start with an error naming
// the key id.
func TestKeysRotate(t *testing.T) {
	dir, legacy := keysSetup(t, 3)
	k1, k2 := randKey(t), randKey(t)
	want := []string{"officer-0", "officer-1", "officer-2"}

	path := writeKeysConfig(t, dir, legacy, map[string][]byte{"k1": k1}, "k1")
	require.Contains(t, runOK(t, "keys", "status", "-c", path), "legacy                   3 row(s)")
	roles, err := attestationClaims(t, path)
	require.NoError(t, err)
	require.ElementsMatch(t, want, roles, "legacy rows read before rotation")
	require.Contains(t, runOK(t, "keys", "rotate", "-c", path), "credentials_attestation.claims: 3 row(s) re-encrypted with key k1")
	require.Contains(t, runOK(t, "keys", "status", "-c", path), "k1                       3 row(s)")

	// k2 becomes primary; k1 still opens; rotate; k1 can go.
	path = writeKeysConfig(t, dir, nil, map[string][]byte{"k1": k1, "k2": k2}, "k2")
	require.Contains(t, runOK(t, "keys", "rotate", "-c", path), "3 row(s) re-encrypted with key k2")
	path = writeKeysConfig(t, dir, nil, map[string][]byte{"k2": k2}, "k2")
	roles, err = attestationClaims(t, path)
	require.NoError(t, err)
	require.ElementsMatch(t, want, roles, "no row lost")

	// k2 removed too early: status names the missing key, serve refuses.
	path = writeKeysConfig(t, dir, nil, map[string][]byte{"k3": randKey(t)}, "k3")
	require.Contains(t, runOK(t, "keys", "status", "-c", path), "k2                       3 row(s) — MISSING")
	_, err = attestationClaims(t, path)
	require.ErrorIs(t, err, atrest.ErrUnknownKey)
	require.ErrorContains(t, err, `key id "k2"`)
	require.ErrorContains(t, err, "restore the key")
	var out, errOut bytes.Buffer
	require.Equal(t, 1, run([]string{"keys", "rotate", "-c", path}, &out, &errOut))
	require.Contains(t, errOut.String(), "every row is still readable")

	// Another key under the name k2: refused as the wrong key.
	path = writeKeysConfig(t, dir, nil, map[string][]byte{"k2": randKey(t)}, "k2")
	_, err = attestationClaims(t, path)
	require.ErrorIs(t, err, atrest.ErrWrongKey)
	require.ErrorContains(t, err, `key id "k2"`)

	// And the right one still reads everything.
	path = writeKeysConfig(t, dir, nil, map[string][]byte{"k2": k2}, "k2")
	roles, err = attestationClaims(t, path)
	require.NoError(t, err)
	require.ElementsMatch(t, want, roles)
}
