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
