package credentials

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func newAuditStore(t *testing.T) (*auditLog, *store) {
	t.Helper()
	db := newTestDB(t)
	st, err := newStore(db, make([]byte, 32), nil)
	require.NoError(t, err)
	require.NoError(t, st.upgrade(context.Background()))
	return &auditLog{db: st.db}, st
}

func TestAuditChainDetectsTampering(t *testing.T) {
	ctx := context.Background()
	log, st := newAuditStore(t)
	for i, d := range []string{"allow", "deny", "verified", "revoke", "allow"} {
		require.NoError(t, log.append(ctx, AuditEntry{Time: time.Now(), Decision: d, UserID: "@a:b", RoomID: "!r:b",
			Level: LevelKritis, CredentialHash: "h", Reason: string(rune('a' + i))}))
	}
	n, err := VerifyAuditChain(ctx, st.db)
	require.NoError(t, err)
	require.Equal(t, 5, n)

	// The table refuses updates and deletes outright …
	_, err = st.db.Exec(ctx, `UPDATE credentials_audit SET decision = 'allow' WHERE seq = 2`)
	require.ErrorContains(t, err, "append-only")
	_, err = st.db.Exec(ctx, `DELETE FROM credentials_audit WHERE seq = 2`)
	require.ErrorContains(t, err, "append-only")

	// … and someone who drops the guards is still caught by the chain.
	_, err = st.db.Exec(ctx, `DROP TRIGGER credentials_audit_no_update`)
	require.NoError(t, err)
	_, err = st.db.Exec(ctx, `DROP TRIGGER credentials_audit_no_delete`)
	require.NoError(t, err)

	_, err = st.db.Exec(ctx, `UPDATE credentials_audit SET decision = 'allow' WHERE seq = 2`)
	require.NoError(t, err)
	n, err = VerifyAuditChain(ctx, st.db)
	require.ErrorIs(t, err, ErrAuditTampered)
	require.ErrorContains(t, err, "row 2 was modified")
	require.Equal(t, 2, n)
	_, err = st.db.Exec(ctx, `UPDATE credentials_audit SET decision = 'deny' WHERE seq = 2`)
	require.NoError(t, err)
	_, err = VerifyAuditChain(ctx, st.db)
	require.NoError(t, err)

	// Recomputing the modified row's own hash breaks the link of the next.
	var e AuditEntry
	var ts int64
	var level string
	require.NoError(t, st.db.QueryRow(ctx, `SELECT seq, ts, decision, user_id, room_id, level, credential_hash, reason, prev_hash
		FROM credentials_audit WHERE seq = 3`).Scan(&e.Seq, &ts, &e.Decision, &e.UserID, &e.RoomID, &level, &e.CredentialHash, &e.Reason, &e.PrevHash))
	e.Time, e.Level, e.Decision = time.UnixMilli(ts), Level(level), "allow"
	_, err = st.db.Exec(ctx, `UPDATE credentials_audit SET decision = $1, hash = $2 WHERE seq = 3`, e.Decision, auditHash(&e))
	require.NoError(t, err)
	_, err = VerifyAuditChain(ctx, st.db)
	require.ErrorContains(t, err, "row 4 does not link to row 3")

	_, err = st.db.Exec(ctx, `DELETE FROM credentials_audit WHERE seq = 3`)
	require.NoError(t, err)
	_, err = VerifyAuditChain(ctx, st.db)
	require.ErrorContains(t, err, "rows missing or reordered")
}

func TestClaimsEncryptedAtRest(t *testing.T) {
	ctx := context.Background()
	_, st := newAuditStore(t)
	a := &Attestation{ID: "att1", UserID: "@a:b", RoomID: "!r", Federation: "f", Issuer: "did:key:z", Type: "T",
		Format: FormatLDPVC, Level: LevelPublic, Claims: map[string]any{"sector": "geheim-energie"},
		CredentialHash: "h", VerifiedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	require.NoError(t, st.insertAttestation(ctx, a))
	var raw []byte
	require.NoError(t, st.db.QueryRow(ctx, `SELECT claims FROM credentials_attestation WHERE id = 'att1'`).Scan(&raw))
	require.NotContains(t, string(raw), "geheim")
	got, err := st.validAttestations(ctx, "@a:b", time.Now())
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "geheim-energie", got[0].Claims["sector"])

	// A row moved to another id does not decrypt (id is associated data).
	_, err = st.db.Exec(ctx, `UPDATE credentials_attestation SET id = 'att2' WHERE id = 'att1'`)
	require.NoError(t, err)
	_, err = st.validAttestations(ctx, "@a:b", time.Now())
	require.ErrorContains(t, err, "failed to decrypt")
}

// shippedLog appends n entries to a fresh audit log that ships to a buffer
// and returns the shipped lines.
func shippedLog(t *testing.T, n int) ([]string, *store) {
	t.Helper()
	ctx := context.Background()
	log, st := newAuditStore(t)
	var buf bytes.Buffer
	log.ship = &buf
	for i := 0; i < n; i++ {
		d := []string{"allow", "deny", AuditRemove, AuditPolicyChanged, AuditAdmin}[i%5]
		require.NoError(t, log.append(ctx, AuditEntry{Time: time.Now(), Decision: d, UserID: "@a:b", RoomID: "!r:b",
			Level: LevelKritis, Reason: fmt.Sprintf("entry %d", i+1)}))
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, n)
	return lines, st
}

func verifyLines(lines ...[]string) ([]AuditEntry, error) {
	var srcs []AuditSource
	for i, l := range lines {
		srcs = append(srcs, AuditSource{Name: fmt.Sprintf("node%d.jsonl", i), R: strings.NewReader(strings.Join(l, "\n") + "\n")})
	}
	return VerifyAuditFiles(srcs...)
}

// TestShippedAuditLog: every committed entry is shipped as a JSON line that
// verifies on its own and matches the database; an edited, a removed, a
// reordered, a repeated or a forged line is refused with the line named.
func TestShippedAuditLog(t *testing.T) {
	lines, st := shippedLog(t, 6)
	var first map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.Equal(t, "gxconf", first["audit"])
	require.EqualValues(t, 1, first["seq"])
	require.Equal(t, "allow", first["decision"])

	entries, err := verifyLines(lines)
	require.NoError(t, err)
	require.Len(t, entries, 6)
	for _, e := range entries {
		h, err := AuditHashAt(context.Background(), st.db, e.Seq)
		require.NoError(t, err)
		require.Equal(t, h, e.Hash, "the shipped line is the database row")
	}

	edit := func(i int, from, to string) []string {
		out := append([]string(nil), lines...)
		require.Contains(t, out[i], from)
		out[i] = strings.Replace(out[i], from, to, 1)
		return out
	}
	// An edited line: its hash no longer fits.
	_, err = verifyLines(edit(2, `"decision":"remove"`, `"decision":"allow"`))
	require.ErrorIs(t, err, ErrAuditTampered)
	require.ErrorContains(t, err, "node0.jsonl:3: seq 3 was modified")

	// An edited line with its hash recomputed: the next line does not link.
	e3, err := ParseAuditLine([]byte(lines[2]))
	require.NoError(t, err)
	e3.Decision = "allow"
	e3.Hash = auditHash(&e3)
	forged, _ := json.Marshal(auditLineOf(e3))
	relinked := append([]string(nil), lines...)
	relinked[2] = string(forged)
	_, err = verifyLines(relinked)
	require.ErrorContains(t, err, "node0.jsonl:4: seq 4 does not link to seq 3 (node0.jsonl:3)")

	// A removed line.
	removed := append(append([]string(nil), lines[:3]...), lines[4:]...)
	_, err = verifyLines(removed)
	require.ErrorIs(t, err, ErrAuditTampered)
	require.ErrorContains(t, err, "node0.jsonl:4: seq 5 follows seq 3 (node0.jsonl:3): seq 4 to 4 missing")

	// Reordered lines.
	reordered := append([]string(nil), lines...)
	reordered[3], reordered[4] = reordered[4], reordered[3]
	_, err = verifyLines(reordered)
	require.ErrorContains(t, err, "node0.jsonl:5: seq 4 comes after seq 5 (lines reordered or repeated)")

	// A repeated line, a line that is not an entry, an unknown field.
	_, err = verifyLines(append(append([]string(nil), lines...), lines[5]))
	require.ErrorContains(t, err, "node0.jsonl:7: seq 6 comes after seq 6")
	_, err = verifyLines(append(append([]string(nil), lines[:2]...), `{"level":"info","message":"hello"}`))
	require.ErrorContains(t, err, "node0.jsonl:3: not an audit line")
	_, err = verifyLines(edit(0, `"audit":"gxconf",`, `"audit":"gxconf","extra":1,`))
	require.ErrorContains(t, err, "node0.jsonl:1: not an audit line")

	// The first line of a chain that starts at seq 1 must link to genesis.
	e1, err := ParseAuditLine([]byte(lines[0]))
	require.NoError(t, err)
	e1.PrevHash = strings.Repeat("1", 64)
	e1.Hash = auditHash(&e1)
	bad1, _ := json.Marshal(auditLineOf(e1))
	_, err = verifyLines(append([]string{string(bad1)}, lines[1:]...))
	require.ErrorContains(t, err, "node0.jsonl:1: seq 1 does not start the chain")

	// A cluster: two nodes ship interleaved parts of one chain; together they
	// verify, and a file whose part differs from the other's is refused.
	a := []string{lines[0], lines[2], lines[3]}
	b := []string{lines[1], lines[4], lines[5]}
	entries, err = verifyLines(a, b)
	require.NoError(t, err)
	require.Len(t, entries, 6)
	_, err = verifyLines(a, []string{lines[1], lines[5]})
	require.ErrorContains(t, err, "node1.jsonl:2: seq 6 follows seq 4 (node0.jsonl:3): seq 5 to 5 missing")
	// A rotated file that starts later verifies from its first entry.
	entries, err = verifyLines(lines[3:])
	require.NoError(t, err)
	require.EqualValues(t, 4, entries[0].Seq)
}

func TestAuditConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  AuditConfig
		want string
	}{
		{AuditConfig{}, ""},
		{AuditConfig{Ship: "stdout"}, ""},
		{AuditConfig{Ship: "file", File: "/var/log/gxconf-audit.jsonl"}, ""},
		{AuditConfig{Ship: "file"}, "file: must be set with ship: file"},
		{AuditConfig{Ship: "stdout", File: "/x"}, "file: needs ship: file"},
		{AuditConfig{Ship: "syslog"}, "ship: must be empty, stdout or file"},
	} {
		err := c.cfg.Validate()
		if c.want == "" {
			require.NoError(t, err)
		} else {
			require.ErrorContains(t, err, c.want)
		}
	}
}

func FuzzParseAuditLine(f *testing.F) {
	e := AuditEntry{Seq: 1, Time: time.UnixMilli(1700000000123), Decision: "allow", UserID: "@a:b", RoomID: "!r", PrevHash: genesisHash}
	e.Hash = auditHash(&e)
	good, _ := json.Marshal(auditLineOf(e))
	f.Add(good)
	f.Add([]byte(`{"audit":"gxconf"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := ParseAuditLine(line)
		if err != nil {
			return
		}
		// Accepted lines re-marshal to a line that parses to the same entry.
		again, err := json.Marshal(auditLineOf(e))
		if err != nil {
			t.Fatal(err)
		}
		e2, err := ParseAuditLine(again)
		if err != nil || auditHash(&e2) != auditHash(&e) {
			t.Fatalf("re-marshalled line differs: %v", err)
		}
	})
}

// TestOpenAuditLog: another component's entries join the same chain.
func TestOpenAuditLog(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	a, err := OpenAuditLog(ctx, db, nil, zerolog.Nop())
	require.NoError(t, err)
	require.NoError(t, a.Append(ctx, AuditEntry{Decision: "admin:book", UserID: "admin-sub", RoomID: "bk_1", Reason: `{"tier":"public-20-gold"}`}))
	require.NoError(t, a.Append(ctx, AuditEntry{Decision: "admin:cancel", UserID: "admin-sub", RoomID: "bk_1"}))
	n, err := VerifyAuditChain(ctx, db)
	require.NoError(t, err)
	require.Equal(t, 2, n)
}

// TestAuditReasonBounded: a reason carrying outside text (a status list's
// fetch error, a wallet's answer) is kept to maxAuditReason bytes of
// printable text in the never-pruned log, and the chain still verifies.
func TestAuditReasonBounded(t *testing.T) {
	ctx := context.Background()
	log, st := newAuditStore(t)
	long := "status list fetch failed: " + strings.Repeat("x\x00", 50_000)
	require.NoError(t, log.append(ctx, AuditEntry{Time: time.Now(), Decision: "revoke", UserID: "@a:b", RoomID: "!r:b",
		Level: LevelKritis, Reason: long}))
	var reason string
	require.NoError(t, st.db.QueryRow(ctx, `SELECT reason FROM credentials_audit WHERE seq = 1`).Scan(&reason))
	require.LessOrEqual(t, len(reason), maxAuditReason+len("…"))
	require.True(t, strings.HasPrefix(reason, "status list fetch failed: x"))
	require.NotContains(t, reason, "\x00")
	n, err := VerifyAuditChain(ctx, st.db)
	require.NoError(t, err)
	require.Equal(t, 1, n)
}
