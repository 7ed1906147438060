package sfu

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"

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
	_, grants, err := v.Verify(secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return grants, nil
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
