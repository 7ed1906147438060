package credentials

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func newAuditStore(t *testing.T) (*auditLog, *store) {
	t.Helper()
	db := newTestDB(t)
	st, err := newStore(db, make([]byte, 32))
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

// TestOpenAuditLog: another component's entries join the same chain.
func TestOpenAuditLog(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	a, err := OpenAuditLog(ctx, db)
	require.NoError(t, err)
	require.NoError(t, a.Append(ctx, AuditEntry{Decision: "admin:book", UserID: "admin-sub", RoomID: "bk_1", Reason: `{"tier":"public-20-gold"}`}))
	require.NoError(t, a.Append(ctx, AuditEntry{Decision: "admin:cancel", UserID: "admin-sub", RoomID: "bk_1"}))
	n, err := VerifyAuditChain(ctx, db)
	require.NoError(t, err)
	require.Equal(t, 2, n)
}
