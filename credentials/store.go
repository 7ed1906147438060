package credentials

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/util/dbutil"
)

//go:embed sql/*.sql
var rawUpgrades embed.FS

// UpgradeTable holds the package's migrations; its version table is
// VersionTable.
var UpgradeTable = dbutil.BuildUpgradeTable().WithFSPath(rawUpgrades, "sql").Finish()

// VersionTable is the dbutil version table of the credentials tables.
const VersionTable = "credentials_version"

// Sealer encrypts column values at rest, bound to associated data (the
// row's id); package atrest's Keyring implements it with key ids and
// rotation. Without one, claims are sealed with at_rest_key alone.
type Sealer interface {
	Seal(plain, ad []byte) ([]byte, error)
	Open(sealed, ad []byte) ([]byte, error)
}

// EncryptedColumns are the encrypted columns of this package's tables, as
// table, id column (the associated data) and value column, for key rotation.
var EncryptedColumns = [][3]string{{"credentials_attestation", "id", "claims"}}

// store owns the credentials tables.
type store struct {
	db     *dbutil.Database
	aead   cipher.AEAD
	sealer Sealer
}

func newStore(db *dbutil.Database, key []byte, sealer Sealer) (*store, error) {
	s := &store{db: db.Child(VersionTable, UpgradeTable, nil), sealer: sealer}
	if sealer == nil && len(key) > 0 {
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		if s.aead, err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *store) upgrade(ctx context.Context) error {
	return s.db.Upgrade(ctx)
}

// seal encrypts claims with AES-256-GCM; the attestation id is the
// associated data so rows cannot be swapped.
func (s *store) seal(id string, plain []byte) ([]byte, error) {
	if s.sealer != nil {
		return s.sealer.Seal(plain, []byte(id))
	}
	if s.aead == nil {
		return nil, errors.New("no at-rest key configured")
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, plain, []byte(id)), nil
}

func (s *store) open(id string, sealed []byte) ([]byte, error) {
	if s.sealer != nil {
		return s.sealer.Open(sealed, []byte(id))
	}
	if s.aead == nil {
		return nil, errors.New("no at-rest key configured")
	}
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed claims too short")
	}
	return s.aead.Open(nil, sealed[:n], sealed[n:], []byte(id))
}

// storedRequest is a row of credentials_request.
type storedRequest struct {
	ID         string
	Nonce      string
	UserID     string
	RoomID     string
	Purpose    string
	Level      Level
	Types      []string
	ClaimPaths []string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	State      string
	Result     string
}

const requestColumns = `id, nonce, user_id, room_id, purpose, level, types, claim_paths, created_at, expires_at, state, result`

func (s *store) insertRequest(ctx context.Context, r *storedRequest) error {
	types, _ := json.Marshal(r.Types)
	paths, _ := json.Marshal(r.ClaimPaths)
	_, err := s.db.Exec(ctx, `INSERT INTO credentials_request (`+requestColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		r.ID, r.Nonce, r.UserID, r.RoomID, r.Purpose, string(r.Level), string(types), string(paths),
		r.CreatedAt.UnixMilli(), r.ExpiresAt.UnixMilli(), r.State, r.Result)
	return err
}

func (s *store) getRequest(ctx context.Context, id string) (*storedRequest, error) {
	var (
		r                  storedRequest
		level, types, cps  string
		created, expiresAt int64
	)
	err := s.db.QueryRow(ctx, `SELECT `+requestColumns+` FROM credentials_request WHERE id = $1`, id).Scan(
		&r.ID, &r.Nonce, &r.UserID, &r.RoomID, &r.Purpose, &level, &types, &cps, &created, &expiresAt, &r.State, &r.Result)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrUnknownRequest
	} else if err != nil {
		return nil, err
	}
	r.Level = Level(level)
	_ = json.Unmarshal([]byte(types), &r.Types)
	_ = json.Unmarshal([]byte(cps), &r.ClaimPaths)
	r.CreatedAt, r.ExpiresAt = time.UnixMilli(created), time.UnixMilli(expiresAt)
	return &r, nil
}

// claimRequest atomically moves a pending request to "used" so that its
// nonce is consumed exactly once, whatever the verification outcome.
func (s *store) claimRequest(ctx context.Context, id string) error {
	res, err := s.db.Exec(ctx, `UPDATE credentials_request SET state = 'used', result = 'processing' WHERE id = $1 AND state = 'pending'`, id)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("%w: request %s", ErrReplayed, id)
	}
	return nil
}

func (s *store) finishRequest(ctx context.Context, id, result string, attestationIDs []string) error {
	_, err := s.db.Exec(ctx, `UPDATE credentials_request SET result = $2, attestation_ids = $3 WHERE id = $1`,
		id, result, strings.Join(attestationIDs, ","))
	return err
}

func (s *store) deleteExpiredRequests(ctx context.Context, before time.Time) error {
	_, err := s.db.Exec(ctx, `DELETE FROM credentials_request WHERE expires_at < $1`, before.UnixMilli())
	return err
}

const attestationColumns = `id, user_id, room_id, federation, issuer, cred_type, format, holder_bound, level, claims,
	credential_hash, status, verified_at, expires_at, invalidated_at, invalid_reason`

func (s *store) insertAttestation(ctx context.Context, a *Attestation) error {
	claims, err := json.Marshal(a.Claims)
	if err != nil {
		return err
	}
	sealed, err := s.seal(a.ID, claims)
	if err != nil {
		return err
	}
	status, _ := json.Marshal(a.Status)
	_, err = s.db.Exec(ctx, `INSERT INTO credentials_attestation (`+attestationColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 0, '')`,
		a.ID, a.UserID, a.RoomID, a.Federation, a.Issuer, a.Type, a.Format, a.HolderBound, string(a.Level),
		sealed, a.CredentialHash, string(status), a.VerifiedAt.UnixMilli(), a.ExpiresAt.UnixMilli())
	return err
}

func (s *store) scanAttestation(row dbutil.Scannable) (*Attestation, error) {
	var (
		a                                   Attestation
		level, status                       string
		sealed                              []byte
		verifiedAt, expiresAt, invalidation int64
	)
	if err := row.Scan(&a.ID, &a.UserID, &a.RoomID, &a.Federation, &a.Issuer, &a.Type, &a.Format, &a.HolderBound,
		&level, &sealed, &a.CredentialHash, &status, &verifiedAt, &expiresAt, &invalidation, &a.InvalidReason); err != nil {
		return nil, err
	}
	plain, err := s.open(a.ID, sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: failed to decrypt claims of attestation %s: %w", errUnreadableClaims, a.ID, err)
	}
	if err := json.Unmarshal(plain, &a.Claims); err != nil {
		return nil, fmt.Errorf("%w: attestation %s: %w", errUnreadableClaims, a.ID, err)
	}
	_ = json.Unmarshal([]byte(status), &a.Status)
	a.Level = Level(level)
	a.VerifiedAt, a.ExpiresAt = time.UnixMilli(verifiedAt), time.UnixMilli(expiresAt)
	if invalidation != 0 {
		a.InvalidatedAt = time.UnixMilli(invalidation)
	}
	return &a, nil
}

// errUnreadableClaims marks a row whose claims do not decrypt or decode.
var errUnreadableClaims = errors.New("unreadable attestation")

// queryAttestations returns the rows that read; rows whose claims do not
// (errUnreadableClaims, each naming its id) are left out and joined into
// the error, which callers that decide on one user's rows must treat as a
// failure.
func (s *store) queryAttestations(ctx context.Context, where string, args ...any) ([]Attestation, error) {
	rows, err := s.db.Query(ctx, `SELECT `+attestationColumns+` FROM credentials_attestation WHERE `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var (
		out        []Attestation
		unreadable []error
	)
	for rows.Next() {
		a, err := s.scanAttestation(rows)
		if errors.Is(err, errUnreadableClaims) {
			unreadable = append(unreadable, err)
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *a)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, errors.Join(unreadable...)
}

// validAttestations returns a user's attestations that are neither expired
// nor invalidated at now; an unreadable one is an error (decisions must not
// be taken on the rest).
func (s *store) validAttestations(ctx context.Context, userID string, now time.Time) ([]Attestation, error) {
	atts, err := s.queryAttestations(ctx, `user_id = $1 AND invalidated_at = 0 AND expires_at > $2 ORDER BY verified_at`,
		userID, now.UnixMilli())
	if err != nil {
		return nil, err
	}
	return atts, nil
}

// activeAttestations returns every attestation not yet invalidated that
// reads, and an error naming each that does not: the re-check of the
// others must go on (expiry and status need no claims).
func (s *store) activeAttestations(ctx context.Context) ([]Attestation, error) {
	return s.queryAttestations(ctx, `invalidated_at = 0 ORDER BY verified_at`)
}

func (s *store) invalidate(ctx context.Context, id string, at time.Time, reason string) (bool, error) {
	res, err := s.db.Exec(ctx, `UPDATE credentials_attestation SET invalidated_at = $2, invalid_reason = $3
		WHERE id = $1 AND invalidated_at = 0`, id, at.UnixMilli(), reason)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// purgeInvalid deletes attestations invalidated or expired before cutoff
// (claims are not kept longer than needed).
func (s *store) purgeInvalid(ctx context.Context, cutoff time.Time) error {
	_, err := s.db.Exec(ctx, `DELETE FROM credentials_attestation
		WHERE (invalidated_at <> 0 AND invalidated_at < $1) OR expires_at < $1`, cutoff.UnixMilli())
	return err
}
