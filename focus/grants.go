package focus

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/livekit/protocol/auth"
	"go.mau.fi/util/dbutil"
)

//go:embed migrations/*.sql
var migrations embed.FS

// upgradeTable holds the focus's schema migrations.
var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(migrations, "migrations").Finish()

// VersionTable is the focus's own schema version table.
const VersionTable = "focus_version"

// Grant is a LiveKit token handed out for a Matrix user in a room. Every
// token carries its grant's ID as JWT ID (jti); tokens the embedded SFU
// refreshes keep it, so one grant covers a whole call.
type Grant struct {
	TokenID     string
	LiveKitRoom string
	Identity    string
	RoomID      string
	UserID      string
	DeviceID    string
	IssuedAt    time.Time
	// ExpiresAt is the latest expiry of a token with this ID.
	ExpiresAt time.Time
	// NotAfter ends the grant whatever the refreshes (the attestation's
	// expiry); zero means no end but the tokens'.
	NotAfter time.Time
	// RevokedAt is when the grant was revoked; zero while it holds.
	RevokedAt time.Time
	// Peer is the peered deployment whose relay serves the holder (the
	// token is for its URL); empty for our own SFU.
	Peer string
}

// grantStore remembers grants so that participants can be removed later and
// tokens refused once their holder left. Revoked grants are kept until their
// tokens have expired, so a revocation survives restarts.
//
// A grant is reserved (inserted inactive) before the membership check and
// activated after the token is signed, unless it was revoked in between: a
// leave processed at any point after the check revokes it.
type grantStore struct {
	db *dbutil.Database
}

func newGrantStore(ctx context.Context, parent *dbutil.Database) (*grantStore, error) {
	db := parent.Child(VersionTable, upgradeTable, nil)
	if err := db.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade focus tables: %w", err)
	}
	return &grantStore{db: db}, nil
}

// newTokenID returns a random token ID (128 bits).
func newTokenID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("failed to generate a token ID: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// reserve stores g inactive: its token is not handed out yet.
func (s *grantStore) reserve(ctx context.Context, g Grant) error {
	_, err := s.db.Exec(ctx, `
		INSERT INTO focus_grant (token_id, lk_room, identity, room_id, user_id, device_id, issued_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		g.TokenID, g.LiveKitRoom, g.Identity, g.RoomID, g.UserID, g.DeviceID, g.IssuedAt.UnixMilli(), g.ExpiresAt.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to store grant: %w", err)
	}
	return nil
}

// activate makes a reserved grant usable with its final expiry, end and
// peer (empty: our own SFU). It fails with ErrGrantRevoked if the grant was
// revoked since it was reserved.
func (s *grantStore) activate(ctx context.Context, tokenID string, expires, notAfter, now time.Time, peer string) error {
	res, err := s.db.Exec(ctx, `
		UPDATE focus_grant SET activated_at=$2, expires_at=$3, not_after=$4, peer=$5
		WHERE token_id=$1 AND revoked_at=0`,
		tokenID, now.UnixMilli(), expires.UnixMilli(), millis(notAfter), peer)
	if err != nil {
		return fmt.Errorf("failed to activate grant: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("failed to activate grant: %w", err)
	} else if n == 0 {
		return ErrGrantRevoked
	}
	return nil
}

// discard forgets a reserved grant whose token was never handed out.
func (s *grantStore) discard(ctx context.Context, tokenID string) error {
	_, err := s.db.Exec(ctx, "DELETE FROM focus_grant WHERE token_id=$1 AND activated_at=0", tokenID)
	if err != nil {
		return fmt.Errorf("failed to discard grant: %w", err)
	}
	return nil
}

// revokeUser revokes every grant of the user in the Matrix room, reserved or
// active, whether its holder is connected or not, and returns the grants it
// revoked.
func (s *grantStore) revokeUser(ctx context.Context, roomID, userID string, at time.Time) ([]Grant, error) {
	gs, err := s.query(ctx, "UPDATE focus_grant SET revoked_at=$3 WHERE room_id=$1 AND user_id=$2 AND revoked_at=0 RETURNING "+grantColumns,
		roomID, userID, at.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("failed to revoke grants: %w", err)
	}
	return gs, nil
}

const grantColumns = "token_id, lk_room, identity, room_id, user_id, device_id, issued_at, expires_at, not_after, revoked_at, peer"

func (s *grantStore) get(ctx context.Context, tokenID string) (*Grant, bool, error) {
	gs, err := s.query(ctx, "SELECT "+grantColumns+" FROM focus_grant WHERE token_id=$1 AND activated_at<>0", tokenID)
	if err != nil || len(gs) == 0 {
		return nil, false, err
	}
	return &gs[0], true, nil
}

func (s *grantStore) query(ctx context.Context, query string, args ...any) ([]Grant, error) {
	rows, err := s.db.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("failed to query grants: %w", err)
	}
	defer rows.Close()
	var out []Grant
	for rows.Next() {
		var g Grant
		var issued, expires, notAfter, revoked int64
		if err := rows.Scan(&g.TokenID, &g.LiveKitRoom, &g.Identity, &g.RoomID, &g.UserID, &g.DeviceID,
			&issued, &expires, &notAfter, &revoked, &g.Peer); err != nil {
			return nil, fmt.Errorf("failed to scan grant: %w", err)
		}
		g.IssuedAt, g.ExpiresAt = time.UnixMilli(issued), time.UnixMilli(expires)
		g.NotAfter, g.RevokedAt = fromMillis(notAfter), fromMillis(revoked)
		out = append(out, g)
	}
	return out, rows.Err()
}

// roomsForUser returns the newest active grant of each Matrix room the user
// holds active grants in.
func (s *grantStore) roomsForUser(ctx context.Context, userID string) ([]Grant, error) {
	all, err := s.query(ctx, "SELECT "+grantColumns+` FROM focus_grant
		WHERE user_id=$1 AND activated_at<>0 AND revoked_at=0 ORDER BY room_id, issued_at DESC`, userID)
	if err != nil {
		return nil, err
	}
	var out []Grant
	for _, g := range all {
		if len(out) == 0 || out[len(out)-1].RoomID != g.RoomID {
			out = append(out, g)
		}
	}
	return out, nil
}

// peerGranted tells whether an active, unexpired grant for peer exists in
// lkRoom (for identity, unless empty).
func (s *grantStore) peerGranted(ctx context.Context, peer, lkRoom, identity string, now time.Time) (bool, error) {
	q := `SELECT COUNT(*) FROM focus_grant WHERE lk_room=$1 AND peer=$2 AND activated_at<>0 AND revoked_at=0
		AND expires_at>$3 AND (not_after=0 OR not_after>$3)`
	args := []any{lkRoom, peer, now.UnixMilli()}
	if identity != "" {
		q += " AND identity=$4"
		args = append(args, identity)
	}
	var n int
	if err := s.db.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return false, fmt.Errorf("failed to query peer grants: %w", err)
	}
	return n > 0, nil
}

// lastRevocation returns when a grant for identity in lkRoom was last
// revoked, or zero.
func (s *grantStore) lastRevocation(ctx context.Context, lkRoom, identity string) (time.Time, error) {
	var at sql.NullInt64
	err := s.db.QueryRow(ctx, "SELECT MAX(revoked_at) FROM focus_grant WHERE lk_room=$1 AND identity=$2 AND revoked_at<>0",
		lkRoom, identity).Scan(&at)
	if err != nil {
		return time.Time{}, fmt.Errorf("failed to query revocations: %w", err)
	}
	return fromMillis(at.Int64), nil
}

// extend records that a token with the grant's ID is valid until exp.
func (s *grantStore) extend(ctx context.Context, tokenID string, exp time.Time) error {
	_, err := s.db.Exec(ctx, "UPDATE focus_grant SET expires_at=$2 WHERE token_id=$1 AND expires_at<$2", tokenID, exp.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to extend grant: %w", err)
	}
	return nil
}

// purge forgets grants whose tokens all expired before cutoff; revoked ones
// included, since no token can be presented any more.
func (s *grantStore) purge(ctx context.Context, cutoff time.Time) (int64, error) {
	res, err := s.db.Exec(ctx, "DELETE FROM focus_grant WHERE expires_at < $1", cutoff.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("failed to purge grants: %w", err)
	}
	return res.RowsAffected()
}

// signAccessToken signs a LiveKit access token as
// github.com/livekit/protocol/auth.AccessToken.ToJWT does, plus the JWT ID
// (jti), which AccessToken cannot set. livekit-server and the SDKs ignore it;
// the embedded SFU checks it with CheckGrant.
func signAccessToken(apiKey, secret, tokenID, identity string, video *auth.VideoGrant, ttl time.Duration, notAfter time.Time) (string, error) {
	if apiKey == "" || secret == "" {
		return "", auth.ErrKeysMissing
	}
	now := time.Now()
	expires := now.Add(ttl)
	if !notAfter.IsZero() && expires.After(notAfter) {
		// ttl was cut to notAfter a moment ago: the moment since must not
		// carry the token past it (exp counts whole seconds, truncated).
		expires = notAfter
	}
	claims := struct {
		jwt.RegisteredClaims
		auth.ClaimGrants
	}{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    apiKey,
			Subject:   identity,
			ID:        tokenID,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(expires),
		},
		ClaimGrants: auth.ClaimGrants{Identity: identity, Video: video},
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// tokenLeeway is how long after its expiry LiveKit still accepts a token
// (github.com/livekit/protocol/auth verifies with one minute of leeway).
const tokenLeeway = time.Minute

// CheckGrant tells the embedded SFU whether a token may still be used. A token
// with an ID (every token this focus issues) must name an active grant for
// that room and identity that was not revoked and has not ended; it returns
// the grant's issue time to the millisecond. A token without an ID (operator
// tools) is refused if a grant for its identity in the room was revoked in or
// after the second of its iat: JWT times have whole seconds, so a token from
// the second of a revocation may predate it.
func (s *Service) CheckGrant(ctx context.Context, tokenID, lkRoom, identity string, issuedAt time.Time) (time.Time, error) {
	if tokenID == "" {
		revoked, err := s.grants.lastRevocation(ctx, lkRoom, identity)
		if err != nil {
			return time.Time{}, err
		}
		if !revoked.IsZero() && issuedAt.Unix() <= revoked.Unix() {
			return time.Time{}, fmt.Errorf("%w: the identity was removed after the token was issued", ErrGrantRevoked)
		}
		return issuedAt, nil
	}
	g, err := s.activeGrant(ctx, tokenID, lkRoom, identity)
	if err != nil {
		return time.Time{}, err
	}
	return g.IssuedAt, nil
}

// RenewGrant checks a grant like CheckGrant before the embedded SFU refreshes
// a token with its ID, and returns the expiry the refreshed token may have:
// until, capped at one token lifetime (token_ttl) from now and at the grant's
// end. It remembers the expiry so the grant is kept as long as that token can
// be presented. The cap matters because until may come from a peer
// deployment (RenewPeerGrant): a renewal must never keep a grant alive longer
// than a token the focus itself would mint now.
func (s *Service) RenewGrant(ctx context.Context, tokenID, lkRoom, identity string, until time.Time) (time.Time, error) {
	if tokenID == "" {
		return time.Time{}, fmt.Errorf("%w: a token without ID", ErrGrantUnknown)
	}
	g, err := s.activeGrant(ctx, tokenID, lkRoom, identity)
	if err != nil {
		return time.Time{}, err
	}
	now := s.now()
	if limit := now.Add(s.cfg.TokenTTL); until.After(limit) {
		until = limit
	}
	if !g.NotAfter.IsZero() && g.NotAfter.Before(until) {
		until = g.NotAfter
	}
	if !until.After(now) {
		return time.Time{}, ErrGrantExpired
	}
	if err := s.grants.extend(ctx, tokenID, until); err != nil {
		return time.Time{}, err
	}
	return until, nil
}

func (s *Service) activeGrant(ctx context.Context, tokenID, lkRoom, identity string) (*Grant, error) {
	g, ok, err := s.grants.get(ctx, tokenID)
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, ErrGrantUnknown
	case g.LiveKitRoom != lkRoom || g.Identity != identity:
		return nil, fmt.Errorf("%w: issued for another room or identity", ErrGrantUnknown)
	case !g.RevokedAt.IsZero():
		return nil, ErrGrantRevoked
	case !g.NotAfter.IsZero() && !s.now().Before(g.NotAfter):
		return nil, ErrGrantExpired
	}
	return g, nil
}
