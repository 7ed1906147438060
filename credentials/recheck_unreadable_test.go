package credentials

import (
	"context"
	"encoding/base64"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// TestRecheckSurvivesUnreadableClaims: one attestation whose claims no
// longer decrypt (an altered value, a wrong key) does not stop the re-check
// of all the others: an expired attestation is still invalidated, audited
// and reported (so its holder is removed from calls), the pass reports the
// unreadable row by id, and that row is left as it is. The user of the
// unreadable row is refused, not let through.
func TestRecheckSurvivesUnreadableClaims(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	now := time.Now()
	cfg := DefaultConfig()
	cfg.AtRestKey = base64.StdEncoding.EncodeToString(make([]byte, 32))
	var (
		mu      sync.Mutex
		invalid []string
	)
	v, err := New(ctx, cfg, db, zerolog.Nop(), WithClock(func() time.Time { return now }),
		WithOnInvalidated(func(_ context.Context, a Attestation, _ error) {
			mu.Lock()
			defer mu.Unlock()
			invalid = append(invalid, a.ID)
		}))
	require.NoError(t, err)
	for _, a := range []*Attestation{
		{ID: "att-bad", UserID: "@mallory:b", ExpiresAt: now.Add(time.Hour)},
		{ID: "att-old", UserID: "@alice:b", ExpiresAt: now.Add(-time.Minute)},
	} {
		a.RoomID, a.Federation, a.Issuer, a.Type, a.Format, a.Level = "!r:b", "f", "did:key:z", "T", FormatLDPVC, LevelKritis
		a.Claims, a.CredentialHash, a.VerifiedAt = map[string]any{"role": "x"}, "h-"+a.ID, now.Add(-2*time.Hour)
		require.NoError(t, v.store.insertAttestation(ctx, a))
	}
	_, err = db.Exec(ctx, `UPDATE credentials_attestation SET claims = $1 WHERE id = 'att-bad'`, make([]byte, 40))
	require.NoError(t, err)

	err = v.RecheckNow(ctx)
	require.ErrorContains(t, err, "failed to decrypt claims of attestation att-bad")
	mu.Lock()
	require.Equal(t, []string{"att-old"}, invalid)
	mu.Unlock()
	var decision string
	require.NoError(t, db.QueryRow(ctx, `SELECT decision FROM credentials_audit WHERE user_id = '@alice:b'`).Scan(&decision))
	require.Equal(t, "expire", decision)
	var invalidatedAt int64
	require.NoError(t, db.QueryRow(ctx, `SELECT invalidated_at FROM credentials_attestation WHERE id = 'att-bad'`).Scan(&invalidatedAt))
	require.Zero(t, invalidatedAt, "the unreadable row is left as it is")

	_, err = v.Attestations(ctx, "@mallory:b")
	require.ErrorContains(t, err, "failed to decrypt claims of attestation att-bad")
	_, err = v.Authorize(ctx, AccessRequest{UserID: "@mallory:b", Room: RoomFacts{ID: "!r:b"}})
	require.Error(t, err)
}
