package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"

	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/store"
)

// errAuditTampered makes `gxconf audit verify` exit non-zero.
var errAuditTampered = errors.New("the audit log was tampered with")

// fileList is a repeatable -file flag.
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

// cmdAudit runs `gxconf audit verify`: it re-computes the hash chain of the
// audit log in the database (-c) and/or of shipped JSON-line files (-file,
// repeatable: a cluster's nodes each ship their own entries of the one
// chain), and, given both, checks that every shipped entry is the
// database's row. It names the first row or line that does not fit. The
// chain has no key: it prints its last entry as an anchor (SEQ:HASH) to
// record outside the deployment, and -anchor checks such a record (which
// finds removed newest entries and a chain recomputed up to there).
// -archived names the last row archived before the oldest were deleted.
func cmdAudit(args []string, stdout io.Writer) error {
	const use = "usage: gxconf audit verify [-c config.yaml [-anchor SEQ:HASH ...] [-archived SEQ:HASH]] [-file audit.jsonl ...]"
	if len(args) == 0 || args[0] != "verify" {
		return &usageError{use}
	}
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	cfgPath := fs.String("c", "", "config file: verify the database's audit log")
	var files fileList
	fs.Var(&files, "file", "shipped audit log (JSON lines); repeat for every node's file")
	var anchorArgs fileList
	fs.Var(&anchorArgs, "anchor", "SEQ:HASH printed by an earlier verify: that row must still be in the database, unchanged; repeatable")
	archivedArg := fs.String("archived", "", "SEQ:HASH of the last row archived and deleted: the rows kept start after it")
	if err := parseArgs(fs, args[1:]); err != nil {
		return err
	}
	var anchors []credentials.AuditAnchor
	for _, a := range anchorArgs {
		anchor, err := credentials.ParseAuditAnchor(a)
		if err != nil {
			return &usageError{"-anchor: " + err.Error()}
		}
		anchors = append(anchors, anchor)
	}
	var archived *credentials.AuditAnchor
	if *archivedArg != "" {
		a, err := credentials.ParseAuditAnchor(*archivedArg)
		if err != nil {
			return &usageError{"-archived: " + err.Error()}
		}
		archived = &a
	}
	if (len(anchors) > 0 || archived != nil) && *cfgPath == "" && len(files) > 0 {
		return &usageError{"-anchor and -archived check the database: give -c"}
	}
	if *cfgPath == "" && len(files) == 0 {
		if _, err := os.Stat("config.yaml"); err != nil {
			return &usageError{use}
		}
		*cfgPath = "config.yaml"
	}
	tampered := func(err error) error {
		if errors.Is(err, credentials.ErrAuditTampered) {
			return fmt.Errorf("%w: %v", errAuditTampered, err)
		}
		return err
	}
	var shipped []credentials.AuditEntry
	if len(files) > 0 {
		var srcs []credentials.AuditSource
		for _, name := range files {
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			defer f.Close()
			srcs = append(srcs, credentials.AuditSource{Name: name, R: f})
		}
		var err error
		if shipped, err = credentials.VerifyAuditFiles(srcs...); err != nil {
			return tampered(err)
		}
		if len(shipped) == 0 {
			fmt.Fprintln(stdout, "shipped audit log: no entries")
		} else {
			fmt.Fprintf(stdout, "shipped audit log intact: %d entries, seq %d to %d, hash chain verified\n",
				len(shipped), shipped[0].Seq, shipped[len(shipped)-1].Seq)
		}
	}
	if *cfgPath == "" {
		return nil
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
	head, err := credentials.VerifyAuditChainAnchored(ctx, db, archived, anchors...)
	if err != nil {
		return tampered(err)
	}
	fmt.Fprintf(stdout, "audit log intact: %d entries, hash chain verified\n", head.Rows)
	if len(anchors) > 0 {
		fmt.Fprintln(stdout, "every anchor is the database's row")
	}
	if head.Last > 0 {
		// Keyless: only this record, kept outside, shows later whether
		// the newest entries were removed or the chain recomputed.
		fmt.Fprintf(stdout, "last entry (record it elsewhere; check later with -anchor): %d:%s\n", head.Last, head.LastHash)
	}
	for _, e := range shipped {
		h, err := credentials.AuditHashAt(ctx, db, e.Seq)
		if err != nil {
			return err
		}
		if h != e.Hash {
			return tampered(fmt.Errorf("%w: shipped seq %d is not the database's row %d", credentials.ErrAuditTampered, e.Seq, e.Seq))
		}
	}
	if len(shipped) > 0 {
		fmt.Fprintln(stdout, "every shipped entry is the database's row")
	}
	return nil
}
