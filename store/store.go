package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	// Registers the "sqlite3-fk-wal" driver (mattn/go-sqlite3 with foreign keys and WAL).
	_ "go.mau.fi/util/dbutil/litestream"
	// Registers the "postgres" driver.
	_ "github.com/lib/pq"
)

// Owner is recorded in the database so that two programs never share one by accident.
const Owner = "gxconf"

// Config is the `database:` section.
type Config struct {
	// Type is sqlite3-fk-wal (SQLite, default) or postgres.
	Type string `yaml:"type"`
	// URI is the connection string: a SQLite file URI or a PostgreSQL URL.
	URI string `yaml:"uri"`
	// MaxOpenConns limits the pool; SQLite works best with few writers.
	MaxOpenConns int `yaml:"max_open_conns"`
	// MaxIdleConns keeps connections around between requests.
	MaxIdleConns int `yaml:"max_idle_conns"`
}

// DefaultConfig is a SQLite file next to the working directory.
func DefaultConfig() Config {
	return Config{
		Type:         "sqlite3-fk-wal",
		URI:          "file:gxconf.db?_txlock=immediate",
		MaxOpenConns: 5,
		MaxIdleConns: 2,
	}
}

// Validate reports every problem, each named by its key within the section.
func (c *Config) Validate() error {
	var errs []error
	switch c.Type {
	case "sqlite3-fk-wal", "postgres":
	case "sqlite3", "sqlite":
		errs = append(errs, fmt.Errorf("type: %q lacks foreign keys and WAL; use sqlite3-fk-wal", c.Type))
	default:
		errs = append(errs, fmt.Errorf("type: must be sqlite3-fk-wal or postgres, got %q", c.Type))
	}
	if c.URI == "" {
		errs = append(errs, errors.New("uri: must be set"))
	} else if c.Type == "postgres" && !strings.HasPrefix(c.URI, "postgres://") && !strings.HasPrefix(c.URI, "postgresql://") {
		errs = append(errs, errors.New("uri: a postgres uri starts with postgres:// or postgresql://"))
	}
	if c.MaxOpenConns < 1 {
		errs = append(errs, fmt.Errorf("max_open_conns: must be at least 1, got %d", c.MaxOpenConns))
	}
	if c.MaxIdleConns < 0 {
		errs = append(errs, fmt.Errorf("max_idle_conns: must not be negative, got %d", c.MaxIdleConns))
	}
	return errors.Join(errs...)
}

// Open connects to the database and claims it for gxconf. Callers build their
// own children with Database.Child and run their upgrades.
func Open(ctx context.Context, cfg Config, log zerolog.Logger) (*dbutil.Database, error) {
	db, err := dbutil.NewFromConfig(Owner, dbutil.Config{PoolConfig: dbutil.PoolConfig{
		Type:         cfg.Type,
		URI:          cfg.URI,
		MaxOpenConns: cfg.MaxOpenConns,
		MaxIdleConns: cfg.MaxIdleConns,
	}}, dbutil.ZeroLogger(log.With().Str("component", "database").Logger()))
	if err != nil {
		return nil, fmt.Errorf("failed to open database: %w", err)
	}
	// The root database has no tables of its own; Upgrade records the owner and
	// refuses a database that belongs to another program.
	if err := db.Upgrade(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("failed to claim database: %w", err)
	}
	return db, nil
}
