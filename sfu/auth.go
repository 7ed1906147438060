package sfu

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/livekit/protocol/auth"
)

// GrantChecker tells whether an access token may still be used: the issuer
// of the tokens (gxconf's focus) revokes them when their holder leaves or is
// removed. The SFU asks at every join and reconnect (/rtc, /rtc/validate)
// and before every refresh_token. Errors refuse; they never contain tokens.
type GrantChecker interface {
	// CheckGrant checks a token for identity in room. tokenID is its JWT ID
	// (jti), empty for tokens without one; issuedAt is its iat (whole
	// seconds). It returns when the grant was issued, to the millisecond
	// where the checker knows it, else issuedAt.
	CheckGrant(ctx context.Context, tokenID, room, identity string, issuedAt time.Time) (time.Time, error)
	// RenewGrant checks the grant of a token with an ID before a refreshed
	// token with the same ID is handed out, and returns the expiry that
	// token may have: until or, if the grant ends earlier, the grant's end.
	RenewGrant(ctx context.Context, tokenID, room, identity string, until time.Time) (time.Time, error)
}

// SetGrantChecker makes the server ask c about every token; call it before Run.
// Without one, only RemoveParticipant (in memory) revokes tokens.
func (s *Server) SetGrantChecker(c GrantChecker) { s.grants = c }

// tokenFromRequest takes the JWT from "Authorization: Bearer" or, failing
// that, the access_token query parameter, as livekit-server does.
func tokenFromRequest(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return r.URL.Query().Get("access_token")
}

// verifyToken checks an HS256 LiveKit access token against the configured
// keys and returns its grants. The error never contains the token.
func (s *Server) verifyToken(raw string) (*auth.ClaimGrants, error) {
	t, err := s.verifyTokenDetails(raw)
	if err != nil {
		return nil, err
	}
	if t.peer != "" {
		// A peer's tokens only join; the RoomService is this deployment's.
		return nil, fmt.Errorf("%w: a peer token", ErrInvalidToken)
	}
	return t.grants, nil
}

// verifiedToken is a checked access token: its grants, the key that signed
// it, its ID and how long it was valid for (refreshed tokens get as long).
type verifiedToken struct {
	grants   *auth.ClaimGrants
	apiKey   string
	id       string // jti; refreshed tokens keep it
	lifetime time.Duration
	issuedAt time.Time
	// grantIssued is when the token's grant was issued, to the millisecond,
	// when the GrantChecker knows it (tokens with an ID); else zero.
	grantIssued time.Time
	// peer is the deployment whose peer key signed the token; empty for
	// this node's own keys.
	peer string
}

func (s *Server) verifyTokenDetails(raw string) (*verifiedToken, error) {
	if raw == "" {
		return nil, fmt.Errorf("%w: no token", ErrInvalidToken)
	}
	v, err := auth.ParseAPIToken(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed", ErrInvalidToken)
	}
	secret, ok := s.lookupSecret(v.APIKey())
	peerSecret, peer, isPeer := s.peerSecret(v.APIKey())
	if isPeer {
		secret, ok = peerSecret, true
	}
	if !ok {
		return nil, fmt.Errorf("%w: unknown api key", ErrInvalidToken)
	}
	claims, grants, err := v.Verify(secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if isPeer {
		if err := checkPeerGrants(peer, grants); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
		}
	} else if grants.Video != nil && IsPeerRoom(grants.Video.Room) {
		// The peer decides who sees its room, not this deployment's keys.
		return nil, fmt.Errorf("%w: only the peer's tokens join a peer room", ErrInvalidToken)
	}
	t := &verifiedToken{grants: grants, apiKey: v.APIKey(), id: claims.ID, peer: peer}
	switch {
	case claims.IssuedAt != nil:
		t.issuedAt = claims.IssuedAt.Time
	case claims.NotBefore != nil:
		t.issuedAt = claims.NotBefore.Time
	}
	if claims.ExpiresAt != nil && !t.issuedAt.IsZero() {
		t.lifetime = claims.ExpiresAt.Sub(t.issuedAt)
	}
	return t, nil
}

// refreshToken mints a token for a connected participant with its current
// grants and the ID of its original token, signed by the key of that token
// and valid until expires, so a client that reconnects later is not refused
// for an expired token (and its grant can still be checked and revoked).
func (s *Server) refreshToken(tok *verifiedToken, video *auth.VideoGrant, expires time.Time) (string, error) {
	secret, ok := s.lookupSecret(tok.apiKey)
	if tok.peer != "" {
		secret, _, ok = s.peerSecret(tok.apiKey)
	}
	if !ok {
		return "", fmt.Errorf("%w: the key %q is no longer configured", ErrInvalidToken, tok.apiKey)
	}
	return signToken(tok.apiKey, secret, tok.id, tok.grants, video, time.Now(), expires)
}

// tokenClaims is the payload of a LiveKit access token, as
// github.com/livekit/protocol/auth writes it, plus the JWT ID (jti), which
// auth.AccessToken cannot set.
type tokenClaims struct {
	jwt.RegisteredClaims
	auth.ClaimGrants
}

// signToken signs an HS256 access token for grants' identity with video as
// its room grant, issued at now and valid until expires.
func signToken(apiKey, secret, id string, grants *auth.ClaimGrants, video *auth.VideoGrant, now, expires time.Time) (string, error) {
	c := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    apiKey,
			Subject:   grants.Identity,
			ID:        id,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(expires),
		},
		ClaimGrants: auth.ClaimGrants{
			Identity:   grants.Identity,
			Name:       grants.Name,
			Metadata:   grants.Metadata,
			Attributes: grants.Attributes,
			Video:      video,
		},
	}
	c.ClaimGrants.SetParticipantKind(grants.GetParticipantKind())
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
}

// lookupSecret compares the key in constant time against every configured
// key so timing does not tell which keys exist.
func (s *Server) lookupSecret(key string) (string, bool) {
	var secret string
	found := false
	for k, v := range s.cfg.Keys {
		if subtle.ConstantTimeCompare([]byte(k), []byte(key)) == 1 {
			secret, found = v, true
		}
	}
	return secret, found
}
