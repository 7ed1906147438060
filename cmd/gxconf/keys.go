package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/gxfs-conf/gxconf/atrest"
	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/store"
)

// cmdKeys runs `gxconf keys status|rotate`: status counts the encrypted rows
// by the key that sealed them (a key may leave the Secret once it seals no
// row); rotate re-encrypts every row to at_rest.primary, row by row, so that
// it can be interrupted and run again.
func cmdKeys(args []string, stdout io.Writer) error {
	const use = "usage: gxconf keys status|rotate -c config.yaml"
	if len(args) == 0 || (args[0] != "status" && args[0] != "rotate") {
		return &usageError{use}
	}
	fs := flag.NewFlagSet("keys "+args[0], flag.ContinueOnError)
	cfgPath := fs.String("c", "config.yaml", "config file")
	if err := parseArgs(fs, args[1:]); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		return err
	}
	keyring, err := atrest.FromConfig(cfg.AtRest, cfg.LegacyAtRestKey())
	if err != nil {
		return fmt.Errorf("at_rest: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	db, err := store.Open(ctx, cfg.Database, zerolog.Nop())
	if err != nil {
		return err
	}
	defer db.Close()
	// The tables exist once serve ran; a fresh database has nothing to do.
	if err := db.Child(credentials.VersionTable, credentials.UpgradeTable, nil).Upgrade(ctx); err != nil {
		return fmt.Errorf("failed to upgrade credentials tables: %w", err)
	}
	ship, closeShip, err := cfg.Audit.OpenShip(stdout)
	if err != nil {
		return err
	}
	defer func() { _ = closeShip() }()
	if args[0] == "status" {
		ship = nil // status changes nothing
	}
	audit, err := credentials.OpenAuditLog(ctx, db, ship, zerolog.Nop())
	if err != nil {
		return err
	}
	for _, col := range encryptedColumns() {
		if args[0] == "status" {
			use, err := atrest.KeyUse(ctx, db, col)
			if err != nil {
				return err
			}
			ids := make([]string, 0, len(use))
			for id := range use {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			fmt.Fprintf(stdout, "%s (primary key %s):\n", col, keyring.Primary())
			if len(ids) == 0 {
				fmt.Fprintln(stdout, "  no rows")
			}
			for _, id := range ids {
				note := ""
				if !keyring.Has(id) {
					note = " — MISSING: these rows cannot be read"
				}
				fmt.Fprintf(stdout, "  %-24s %d row(s)%s\n", id, use[id], note)
			}
			continue
		}
		n, err := atrest.Rotate(ctx, db, keyring, col, nil)
		// An admin action: audited whether it finished or not.
		why := fmt.Sprintf("keys rotate: %s: %d row(s) re-encrypted with key %s", col, n, keyring.Primary())
		if err != nil {
			why += "; stopped: " + err.Error()
		}
		if aerr := audit.Append(context.WithoutCancel(ctx), credentials.AuditEntry{Decision: credentials.AuditAdmin, UserID: "operator", Reason: why}); aerr != nil {
			return fmt.Errorf("failed to audit the rotation: %w", aerr)
		}
		if err != nil {
			return fmt.Errorf("rotation stopped after %d row(s) (every row is still readable; run it again): %w", n, err)
		}
		fmt.Fprintf(stdout, "%s: %d row(s) re-encrypted with key %s\n", col, n, keyring.Primary())
	}
	return nil
}
