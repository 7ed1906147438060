package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/store"
)

// TestAuditShipAndVerify: admin actions (key rotations) are written to the
// database and shipped to audit.file; `gxconf audit verify` accepts the
// database and the file together, and refuses an edited, a removed and a
// reordered line, naming file and line.
func TestAuditShipAndVerify(t *testing.T) {
	dir, legacy := keysSetup(t, 2)
	path := writeKeysConfig(t, dir, legacy, map[string][]byte{"k1": randKey(t)}, "k1")
	shipped := filepath.Join(dir, "audit.jsonl")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("audit: {ship: file, file: " + shipped + "}\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	for i := 0; i < 4; i++ {
		runOK(t, "keys", "rotate", "-c", path)
	}
	raw, err := os.ReadFile(shipped)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	require.Len(t, lines, 4)
	require.Contains(t, lines[0], `"decision":"admin"`)
	require.Contains(t, lines[0], "keys rotate: credentials_attestation.claims: 2 row(s) re-encrypted with key k1")
	fi, err := os.Stat(shipped)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	out := runOK(t, "audit", "verify", "-c", path, "-file", shipped)
	require.Contains(t, out, "shipped audit log intact: 4 entries, seq 1 to 4")
	require.Contains(t, out, "audit log intact: 4 entries")
	require.Contains(t, out, "every shipped entry is the database's row")

	verifyFile := func(content []string) string {
		t.Helper()
		p := filepath.Join(t.TempDir(), "audit.jsonl")
		require.NoError(t, os.WriteFile(p, []byte(strings.Join(content, "\n")+"\n"), 0o600))
		var out, errOut bytes.Buffer
		require.Equal(t, 1, run([]string{"audit", "verify", "-file", p}, &out, &errOut))
		return strings.ReplaceAll(errOut.String(), p, "audit.jsonl")
	}
	edited := append([]string(nil), lines...)
	require.Contains(t, edited[1], `"user_id":"operator"`)
	edited[1] = strings.Replace(edited[1], `"user_id":"operator"`, `"user_id":"mallory"`, 1)
	require.Contains(t, verifyFile(edited), "the audit log was tampered with: audit chain broken: audit.jsonl:2: seq 2 was modified")
	removed := []string{lines[0], lines[2], lines[3]}
	require.Contains(t, verifyFile(removed), "audit.jsonl:2: seq 3 follows seq 1 (audit.jsonl:1): seq 2 to 2 missing")
	reordered := []string{lines[0], lines[2], lines[1], lines[3]}
	require.Contains(t, verifyFile(reordered), "audit.jsonl:3: seq 2 comes after seq 3 (lines reordered or repeated)")

	// A file that verifies on its own but is not this database's log.
	other, _ := keysSetup(t, 0)
	otherCfg := writeKeysConfig(t, other, nil, map[string][]byte{"k9": randKey(t)}, "k9")
	runOK(t, "keys", "rotate", "-c", otherCfg)
	var o, e bytes.Buffer
	require.Equal(t, 1, run([]string{"audit", "verify", "-c", otherCfg, "-file", shipped}, &o, &e))
	require.Contains(t, e.String(), "shipped seq 1 is not the database's row 1")
}

// TestAuditVerifyAnchor: verify prints the last entry as SEQ:HASH; with
// that record, removing the newest entries (which the keyless chain alone
// cannot show) exits 1, and after the oldest rows were archived -archived
// continues the chain from the last archived row.
func TestAuditVerifyAnchor(t *testing.T) {
	dir, legacy := keysSetup(t, 1)
	path := writeKeysConfig(t, dir, legacy, map[string][]byte{"k1": randKey(t)}, "k1")
	for i := 0; i < 3; i++ {
		runOK(t, "keys", "rotate", "-c", path)
	}
	anchorOf := func(out string) string {
		t.Helper()
		const prefix = "last entry (record it elsewhere; check later with -anchor): "
		i := strings.Index(out, prefix)
		require.GreaterOrEqual(t, i, 0, out)
		return strings.TrimSpace(strings.SplitN(out[i+len(prefix):], "\n", 2)[0])
	}
	out := runOK(t, "audit", "verify", "-c", path)
	head := anchorOf(out)
	require.True(t, strings.HasPrefix(head, "3:"), head)
	out = runOK(t, "audit", "verify", "-c", path, "-anchor", head)
	require.Contains(t, out, "every anchor is the database's row")
	require.Equal(t, head, anchorOf(out))

	ctx := context.Background()
	cfg, err := config.Load(path, nil)
	require.NoError(t, err)
	db, err := store.Open(ctx, cfg.Database, zerolog.Nop())
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(ctx, `DROP TRIGGER credentials_audit_no_delete`)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `DELETE FROM credentials_audit WHERE seq = 3`)
	require.NoError(t, err)

	out = runOK(t, "audit", "verify", "-c", path)
	require.Contains(t, out, "audit log intact: 2 entries", "the chain alone cannot tell")
	var o, e bytes.Buffer
	require.Equal(t, 1, run([]string{"audit", "verify", "-c", path, "-anchor", head}, &o, &e))
	require.Contains(t, e.String(), "the audit log was tampered with: audit chain broken: anchor "+head+": the log ends at seq 2 (the newest entries were removed)")

	// Archive seq 1 (its anchor recorded), delete it: verify continues
	// from it with -archived and refuses without.
	h1, err := credentials.AuditHashAt(ctx, db, 1)
	require.NoError(t, err)
	h2, err := credentials.AuditHashAt(ctx, db, 2)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `DELETE FROM credentials_audit WHERE seq = 1`)
	require.NoError(t, err)
	o.Reset()
	e.Reset()
	require.Equal(t, 1, run([]string{"audit", "verify", "-c", path}, &o, &e))
	require.Contains(t, e.String(), "row 1 has seq 2")
	out = runOK(t, "audit", "verify", "-c", path, "-archived", "1:"+h1)
	require.Contains(t, out, "audit log intact: 1 entries")
	require.Equal(t, "2:"+h2, anchorOf(out))

	o.Reset()
	e.Reset()
	require.Equal(t, 2, run([]string{"audit", "verify", "-c", path, "-anchor", "3"}, &o, &e))
	require.Contains(t, e.String(), "-anchor: anchor \"3\": must be SEQ:HASH")
}
