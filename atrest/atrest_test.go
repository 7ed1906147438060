package atrest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"
)

func key(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return k
}

func TestSealOpen(t *testing.T) {
	k1, k2, legacy := key(t), key(t), key(t)
	old, err := New(map[string][]byte{"k1": k1}, "k1", legacy)
	require.NoError(t, err)
	sealed, err := old.Seal([]byte("claims"), []byte("att-1"))
	require.NoError(t, err)
	require.Equal(t, "k1", KeyID(sealed))
	require.False(t, bytes.Contains(sealed, []byte("claims")))

	// After rotation to k2, values of k1 still open; new ones use k2.
	both, err := New(map[string][]byte{"k1": k1, "k2": k2}, "k2", nil)
	require.NoError(t, err)
	plain, err := both.Open(sealed, []byte("att-1"))
	require.NoError(t, err)
	require.Equal(t, "claims", string(plain))
	s2, err := both.Seal([]byte("claims"), []byte("att-1"))
	require.NoError(t, err)
	require.Equal(t, "k2", KeyID(s2))

	// Legacy values (credentials.at_rest_key, no header) open with the legacy key.
	legacyOnly, err := New(nil, "", legacy)
	require.NoError(t, err)
	ls, err := legacyOnly.Seal([]byte("old"), []byte("att-0"))
	require.NoError(t, err)
	require.Equal(t, LegacyKeyID, KeyID(ls))
	plain, err = old.Open(ls, []byte("att-0"))
	require.NoError(t, err)
	require.Equal(t, "old", string(plain))

	// Refusals, each with a clear error.
	onlyK2, err := New(map[string][]byte{"k2": k2}, "k2", nil)
	require.NoError(t, err)
	_, err = onlyK2.Open(sealed, []byte("att-1"))
	require.ErrorIs(t, err, ErrUnknownKey)
	require.ErrorContains(t, err, `key id "k1" (configured: k2)`)
	_, err = onlyK2.Open(ls, []byte("att-0"))
	require.ErrorIs(t, err, ErrUnknownKey)
	require.ErrorContains(t, err, "credentials.at_rest_key")

	wrong, err := New(map[string][]byte{"k1": k2}, "k1", nil)
	require.NoError(t, err)
	_, err = wrong.Open(sealed, []byte("att-1"))
	require.ErrorIs(t, err, ErrWrongKey, "another key under the same id")
	require.ErrorContains(t, err, `key id "k1"`)

	_, err = both.Open(sealed, []byte("att-2"))
	require.ErrorIs(t, err, ErrWrongKey, "moved to another row")

	// Relabelling a value with another key id does not open.
	relabelled := append(header("k2"), sealed[len(header("k1")):]...)
	_, err = both.Open(relabelled, []byte("att-1"))
	require.ErrorIs(t, err, ErrWrongKey)

	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	_, err = both.Open(flipped, []byte("att-1"))
	require.ErrorIs(t, err, ErrWrongKey)

	_, err = New(map[string][]byte{"k1": k1}, "k9", nil)
	require.ErrorContains(t, err, `primary key "k9" is not configured`)
	_, err = New(map[string][]byte{"legacy": k1}, "legacy", nil)
	require.Error(t, err)
	_, err = New(map[string][]byte{"k1": k1[:16]}, "k1", nil)
	require.Error(t, err, "AES-128 keys are not AES-256 keys")
}

// writeKeys lays out dir as a mounted Kubernetes Secret: the files are
// symlinks into a timestamped directory through ..data.
func writeKeys(t *testing.T, dir string, keys map[string][]byte) {
	t.Helper()
	ts := filepath.Join(dir, "..2026_12_02_10_00_00.1")
	require.NoError(t, os.MkdirAll(ts, 0o755))
	require.NoError(t, os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")))
	for id, k := range keys {
		require.NoError(t, os.WriteFile(filepath.Join(ts, id), []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o400))
		require.NoError(t, os.Symlink(filepath.Join("..data", id), filepath.Join(dir, id)))
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	writeKeys(t, dir, map[string][]byte{"2026-11": key(t), "2026-12": key(t)})
	keys, err := ReadKeys(dir)
	require.NoError(t, err)
	require.Len(t, keys, 2, "the Secret's ..data entries are no keys")

	c := Config{KeysDir: dir}
	require.ErrorContains(t, c.Validate(), "primary: must name the key that seals new values (keys_dir holds 2 keys)")
	c.Primary = "2027-01"
	require.ErrorContains(t, c.Validate(), `primary: "2027-01" is not a key in keys_dir (have 2026-11, 2026-12)`)
	c.Primary = "2026-12"
	require.NoError(t, c.Validate())
	k, err := FromConfig(c, nil)
	require.NoError(t, err)
	require.Equal(t, "2026-12", k.Primary())
	require.True(t, k.Has("2026-11"))

	bad := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bad, "short"), []byte(base64.StdEncoding.EncodeToString(make([]byte, 16))), 0o400))
	require.NoError(t, os.WriteFile(filepath.Join(bad, "bad name"), []byte("x"), 0o400))
	err = (&Config{KeysDir: bad}).Validate()
	require.ErrorContains(t, err, "keys_dir: short: must hold base64 of exactly 32 bytes")
	require.ErrorContains(t, err, "keys_dir: bad name:")
	require.NotContains(t, err.Error(), "AAAA", "no key material in errors")
	require.ErrorContains(t, (&Config{KeysDir: t.TempDir()}).Validate(), "holds no key")
	require.ErrorContains(t, (&Config{KeysDir: filepath.Join(dir, "nope")}).Validate(), "keys_dir:")
	require.ErrorContains(t, (&Config{Primary: "x"}).Validate(), "primary: needs keys_dir")
}

// testTable is an encrypted column like credentials_attestation.claims.
var testTable = Column{Table: "enc_test", ID: "id", Value: "secret"}

func openDB(t *testing.T) *dbutil.Database {
	t.Helper()
	db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "t.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	require.NoError(t, err)
	db.Log = dbutil.ZeroLogger(zerolog.Nop())
	t.Cleanup(func() { _ = db.Close() })
	_, err = db.Exec(context.Background(), "CREATE TABLE enc_test (id TEXT PRIMARY KEY, secret BLOB NOT NULL)")
	require.NoError(t, err)
	return db
}

func fill(t *testing.T, db *dbutil.Database, k *Keyring, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("row-%04d", i)
		v, err := k.Seal([]byte("plain "+id), []byte(id))
		require.NoError(t, err)
		_, err = db.Exec(context.Background(), "INSERT INTO enc_test (id, secret) VALUES ($1, $2)", id, v)
		require.NoError(t, err)
	}
}

// readAll opens every row with k and checks its content.
func readAll(t *testing.T, db *dbutil.Database, k *Keyring) {
	t.Helper()
	ids, vals, err := page(context.Background(), db, Column{Table: "enc_test", ID: "id", Value: "secret"}, "")
	require.NoError(t, err)
	for len(ids) > 0 {
		for i, id := range ids {
			plain, err := k.Open(vals[i], []byte(id))
			require.NoError(t, err, id)
			require.Equal(t, "plain "+id, string(plain))
		}
		ids, vals, err = page(context.Background(), db, testTable, ids[len(ids)-1])
		require.NoError(t, err)
	}
}

func TestRotate(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	legacy, k1, k2 := key(t), key(t), key(t)
	// 150 rows without key id (legacy at_rest_key), 100 under k1.
	l, err := New(nil, "", legacy)
	require.NoError(t, err)
	fill(t, db, l, 150)
	old, err := New(map[string][]byte{"k1": k1}, "k1", legacy)
	require.NoError(t, err)
	for i := 150; i < 250; i++ {
		id := fmt.Sprintf("row-%04d", i)
		v, err := old.Seal([]byte("plain "+id), []byte(id))
		require.NoError(t, err)
		_, err = db.Exec(ctx, "INSERT INTO enc_test (id, secret) VALUES ($1, $2)", id, v)
		require.NoError(t, err)
	}
	use, err := KeyUse(ctx, db, testTable)
	require.NoError(t, err)
	require.Equal(t, map[string]int{LegacyKeyID: 150, "k1": 100}, use)

	kr, err := New(map[string][]byte{"k1": k1, "k2": k2}, "k2", legacy)
	require.NoError(t, err)
	require.NoError(t, Check(ctx, db, kr, testTable))

	// Interrupted after 70 rows: every row still opens, some under k2.
	cctx, cancel := context.WithCancel(ctx)
	n, err := Rotate(cctx, db, kr, testTable, func(done int) {
		if done == 70 {
			cancel()
		}
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 70, n)
	readAll(t, db, kr)
	use, err = KeyUse(ctx, db, testTable)
	require.NoError(t, err)
	require.Equal(t, map[string]int{LegacyKeyID: 80, "k1": 100, "k2": 70}, use)

	// Resumed: everything ends under k2, nothing lost; the old keys can go.
	n, err = Rotate(ctx, db, kr, testTable, nil)
	require.NoError(t, err)
	require.Equal(t, 180, n)
	use, err = KeyUse(ctx, db, testTable)
	require.NoError(t, err)
	require.Equal(t, map[string]int{"k2": 250}, use)
	onlyK2, err := New(map[string][]byte{"k2": k2}, "k2", nil)
	require.NoError(t, err)
	readAll(t, db, onlyK2)
	require.NoError(t, Check(ctx, db, onlyK2, testTable))
	n, err = Rotate(ctx, db, onlyK2, testTable, nil)
	require.NoError(t, err)
	require.Zero(t, n, "nothing left to rotate")
}

func TestRotateRefusesMissingOrWrongKey(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	k1, k2 := key(t), key(t)
	old, err := New(map[string][]byte{"k1": k1}, "k1", nil)
	require.NoError(t, err)
	fill(t, db, old, 5)

	// k1 removed before its rows were rotated: refused, rows untouched.
	missing, err := New(map[string][]byte{"k2": k2}, "k2", nil)
	require.NoError(t, err)
	err = Check(ctx, db, missing, testTable)
	require.ErrorIs(t, err, ErrUnknownKey)
	require.ErrorContains(t, err, `enc_test.secret row row-0000: sealed with a key that is not configured: key id "k1"`)
	_, err = Rotate(ctx, db, missing, testTable, nil)
	require.ErrorIs(t, err, ErrUnknownKey)

	// Another key under the name k1: refused, rows untouched.
	wrong, err := New(map[string][]byte{"k1": key(t), "k2": k2}, "k2", nil)
	require.NoError(t, err)
	require.ErrorIs(t, Check(ctx, db, wrong, testTable), ErrWrongKey)
	_, err = Rotate(ctx, db, wrong, testTable, nil)
	require.ErrorIs(t, err, ErrWrongKey)
	readAll(t, db, old)

	// A concurrent writer wins: a row changed between read and update is
	// not overwritten.
	kr, err := New(map[string][]byte{"k1": k1, "k2": k2}, "k2", nil)
	require.NoError(t, err)
	var written []byte
	n, err := Rotate(ctx, db, kr, testTable, func(done int) {
		if done == 1 {
			written, err = kr.Seal([]byte("plain row-0003"), []byte("row-0003"))
			require.NoError(t, err)
			_, err = db.Exec(ctx, "UPDATE enc_test SET secret = $1 WHERE id = 'row-0003'", written)
			require.NoError(t, err)
		}
	})
	require.NoError(t, err)
	require.Equal(t, 4, n, "row-0003 was rewritten by the writer, not by Rotate")
	var got []byte
	require.NoError(t, db.QueryRow(ctx, "SELECT secret FROM enc_test WHERE id = 'row-0003'").Scan(&got))
	require.Equal(t, written, got, "the writer's value stands")
	readAll(t, db, kr)
}

func FuzzOpen(f *testing.F) {
	k := make([]byte, 32)
	kr, err := New(map[string][]byte{"k1": k}, "k1", k)
	if err != nil {
		f.Fatal(err)
	}
	s, _ := kr.Seal([]byte("x"), []byte("id"))
	f.Add(s)
	f.Add([]byte("GXK1"))
	f.Add([]byte("GXK1\x02k1"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, sealed []byte) {
		plain, err := kr.Open(sealed, []byte("id"))
		if err == nil {
			// Whatever opens re-seals and opens to the same plaintext.
			again, err := kr.Seal(plain, []byte("id"))
			if err != nil {
				t.Fatal(err)
			}
			p2, err := kr.Open(again, []byte("id"))
			if err != nil || !bytes.Equal(p2, plain) {
				t.Fatalf("re-sealed value does not open: %v", err)
			}
		}
		_ = KeyID(sealed)
	})
}
