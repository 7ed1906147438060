package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
