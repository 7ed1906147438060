package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/rs/zerolog"

	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/store"
)

// errAuditTampered makes `gxconf audit verify` exit non-zero.
var errAuditTampered = errors.New("the audit log was tampered with")

// cmdAudit runs `gxconf audit verify`: it re-computes the hash chain of the
// access-decision audit log and reports the first row that does not fit.
func cmdAudit(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return &usageError{"usage: gxconf audit verify -c config.yaml"}
	}
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	cfgPath := fs.String("c", "config.yaml", "config file")
	if err := parseArgs(fs, args[1:]); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		return err
	}
	ctx := context.Background()
	db, err := store.Open(ctx, cfg.Database, zerolog.Nop())
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := credentials.VerifyAuditChain(ctx, db)
	if err != nil {
		if errors.Is(err, credentials.ErrAuditTampered) {
			return fmt.Errorf("%w: %v", errAuditTampered, err)
		}
		return err
	}
	fmt.Fprintf(stdout, "audit log intact: %d decision(s), hash chain verified\n", rows)
	return nil
}
