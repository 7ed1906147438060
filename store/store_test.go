package store

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
)

func TestOpenClaimsTheDatabase(t *testing.T) {
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.URI = "file:" + filepath.Join(t.TempDir(), "gxconf.db") + "?_txlock=immediate"
	require.NoError(t, cfg.Validate())
	db, err := Open(ctx, cfg, zerolog.Nop())
	require.NoError(t, err)
	var journal string
	require.NoError(t, db.QueryRow(ctx, "PRAGMA journal_mode").Scan(&journal))
	require.Equal(t, "wal", journal)
	require.NoError(t, db.Close())

	// Opening again is fine; a database another program claimed is refused.
	db, err = Open(ctx, cfg, zerolog.Nop())
	require.NoError(t, err)
	_, err = db.Exec(ctx, "UPDATE database_owner SET owner='mautrix-whatsapp'")
	require.NoError(t, err)
	require.NoError(t, db.Close())
	_, err = Open(ctx, cfg, zerolog.Nop())
	require.ErrorIs(t, err, dbutil.ErrNotOwned)
}

func TestConfigValidate(t *testing.T) {
	cfg := Config{Type: "sqlite", URI: "", MaxOpenConns: 0, MaxIdleConns: -1}
	err := cfg.Validate()
	for _, key := range []string{"type:", "uri:", "max_open_conns:", "max_idle_conns:"} {
		require.ErrorContains(t, err, key)
	}
	pg := Config{Type: "postgres", URI: "file:x", MaxOpenConns: 1}
	require.ErrorContains(t, pg.Validate(), "uri: a postgres uri starts with postgres://")
}

// A PostgreSQL URI that is not a valid URL — typically a password with an
// unencoded '%' — is refused by its key, never quoted: url.Parse's error
// (and lib/pq's, when connecting) holds the whole URI with the password.
func TestInvalidURIIsNotEchoed(t *testing.T) {
	const password = "s3cr%et-pw"
	cfg := DefaultConfig()
	cfg.Type = "postgres"
	cfg.URI = "postgres://gxconf:" + password + "@127.0.0.1:1/gxconf"
	t.Run("validate", func(t *testing.T) {
		err := cfg.Validate()
		require.ErrorContains(t, err, "uri: not a valid URL")
		require.NotContains(t, err.Error(), "s3cr")
	})
	t.Run("open", func(t *testing.T) {
		_, err := Open(context.Background(), cfg, zerolog.Nop())
		require.Error(t, err)
		require.NotContains(t, err.Error(), "s3cr")
		require.ErrorContains(t, err, "uri: not a valid URL")
	})
}
