package sfu

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/livekit/protocol/auth"
)

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
	return t.grants, nil
}

// verifiedToken is a checked access token: its grants, the key that signed
// it and how long it was valid for (refreshed tokens get as long).
type verifiedToken struct {
	grants   *auth.ClaimGrants
	apiKey   string
	lifetime time.Duration
	issuedAt time.Time
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
	if !ok {
		return nil, fmt.Errorf("%w: unknown api key", ErrInvalidToken)
	}
	claims, grants, err := v.Verify(secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	t := &verifiedToken{grants: grants, apiKey: v.APIKey()}
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
// grants, signed by the key of its original token and valid as long as that
// was, so a client that reconnects later is not refused for an expired token.
func (s *Server) refreshToken(apiKey string, lifetime time.Duration, grants *auth.ClaimGrants, video *auth.VideoGrant) (string, error) {
	secret, ok := s.lookupSecret(apiKey)
	if !ok {
		return "", fmt.Errorf("%w: the key %q is no longer configured", ErrInvalidToken, apiKey)
	}
	at := auth.NewAccessToken(apiKey, secret).
		SetIdentity(grants.Identity).
		SetName(grants.Name).
		SetMetadata(grants.Metadata).
		SetAttributes(grants.Attributes).
		SetKind(grants.GetParticipantKind()).
		SetVideoGrant(video).
		SetValidFor(lifetime)
	return at.ToJWT()
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
