package credentials

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/gxfs-conf/gxconf/credentials/did"
	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// sdJWT is a parsed SD-JWT (RFC 9901 / draft-ietf-oauth-selective-disclosure-jwt §4):
// <issuer-signed JWT>~<disclosure>~…~<KB-JWT or empty>.
type sdJWT struct {
	IssuerJWT   string
	Disclosures []string
	KBJWT       string
}

func splitSDJWT(s string) (*sdJWT, error) {
	parts := strings.Split(s, "~")
	if len(parts) < 2 {
		return nil, fmt.Errorf("%w: SD-JWT without separator", ErrMalformed)
	}
	if len(parts) > 258 {
		return nil, fmt.Errorf("%w: more than 256 disclosures", ErrTooLarge)
	}
	out := &sdJWT{IssuerJWT: parts[0], KBJWT: parts[len(parts)-1]}
	for _, d := range parts[1 : len(parts)-1] {
		if d == "" {
			return nil, fmt.Errorf("%w: empty disclosure", ErrBadDisclosure)
		}
		out.Disclosures = append(out.Disclosures, d)
	}
	return out, nil
}

// disclosure is a decoded disclosure: [salt, name, value] or [salt, value].
type disclosure struct {
	name    string
	value   any
	isArray bool
	used    bool
}

func sdDigest(s string) string {
	h := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// verifySDJWTPresentation verifies an SD-JWT VC presentation: issuer
// signature, disclosures, and the key-binding JWT carrying nonce and
// audience (SD-JWT VC draft §3, SD-JWT §4.3).
func (c *Checker) verifySDJWTPresentation(ctx context.Context, token string, p PresentationParams) (*VerifiedPresentation, error) {
	sd, err := splitSDJWT(token)
	if err != nil {
		return nil, err
	}
	j, err := parseCompactJWS(sd.IssuerJWT)
	if err != nil {
		return nil, err
	}
	format := strings.ToLower(j.Header.Typ)
	if format != FormatVCSDJWT && format != FormatDCSDJWT {
		return nil, fmt.Errorf("%w: SD-JWT typ %q", ErrUnsupportedFormat, j.Header.Typ)
	}
	payload, err := decodeJSONObject(j.Payload)
	if err != nil {
		return nil, err
	}
	iss, _ := payload["iss"].(string)
	if !strings.HasPrefix(iss, "did:") {
		return nil, fmt.Errorf("%w: SD-JWT iss %q is not a DID", ErrDIDResolution, iss)
	}
	if !c.inTrustRegistry(iss) {
		return nil, fmt.Errorf("%w: %s (not contacted)", errNotInRegistry, iss)
	}
	issuer, key, err := c.jwtKey(ctx, j.Header, iss, did.AssertionMethod)
	if err != nil {
		return nil, err
	}
	if err := verifyJWSSignature(j.Header.Alg, key, j.SigningInput, j.Signature); err != nil {
		return nil, err
	}
	if alg, ok := payload["_sd_alg"]; ok && alg != "sha-256" {
		return nil, fmt.Errorf("%w: _sd_alg %v", ErrBadDisclosure, alg)
	}

	discs := make(map[string]*disclosure, len(sd.Disclosures))
	for _, d := range sd.Disclosures {
		raw, err := base64.RawURLEncoding.DecodeString(d)
		if err != nil {
			return nil, fmt.Errorf("%w: disclosure is not base64url", ErrBadDisclosure)
		}
		v, err := decodeJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("disclosure: %w", err)
		}
		arr, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("%w: disclosure is not a JSON array", ErrBadDisclosure)
		}
		dd := &disclosure{}
		switch len(arr) {
		case 3:
			name, ok := arr[1].(string)
			if !ok || name == "_sd" || name == "..." {
				return nil, fmt.Errorf("%w: invalid disclosed claim name", ErrBadDisclosure)
			}
			dd.name, dd.value = name, arr[2]
		case 2:
			dd.isArray, dd.value = true, arr[1]
		default:
			return nil, fmt.Errorf("%w: disclosure has %d elements", ErrBadDisclosure, len(arr))
		}
		if _, ok := arr[0].(string); !ok {
			return nil, fmt.Errorf("%w: disclosure salt is not a string", ErrBadDisclosure)
		}
		dg := sdDigest(d)
		if _, dup := discs[dg]; dup {
			return nil, fmt.Errorf("%w: duplicate disclosure", ErrBadDisclosure)
		}
		discs[dg] = dd
	}
	seen := map[string]bool{}
	expanded, err := expandSD(payload, discs, seen, 0)
	if err != nil {
		return nil, err
	}
	for _, dd := range discs {
		if !dd.used {
			// A tampered disclosure hashes to a digest the issuer never signed.
			return nil, fmt.Errorf("%w: disclosure not referenced by the issuer-signed JWT", ErrBadDisclosure)
		}
	}
	claims := expanded.(map[string]any)

	// Key binding (SD-JWT §4.3): mandatory here, because it carries the
	// verifier's nonce and audience.
	if sd.KBJWT == "" {
		return nil, fmt.Errorf("%w: SD-JWT presented without KB-JWT", ErrMissingKeyBinding)
	}
	cnf, _ := payload["cnf"].(map[string]any)
	jwkRaw, ok := cnf["jwk"]
	if !ok {
		return nil, fmt.Errorf("%w: SD-JWT has no cnf.jwk", ErrHolderBinding)
	}
	jwkBytes, _ := json.Marshal(jwkRaw)
	var holderJWK jose.JSONWebKey
	if err := holderJWK.UnmarshalJSON(jwkBytes); err != nil {
		return nil, fmt.Errorf("%w: cnf.jwk: %v", ErrHolderBinding, err)
	}
	holderKey, err := jwkPublicKey(&holderJWK)
	if err != nil {
		return nil, err
	}
	kb, err := parseCompactJWS(sd.KBJWT)
	if err != nil {
		return nil, fmt.Errorf("key binding: %w", err)
	}
	if kb.Header.Typ != "kb+jwt" {
		return nil, fmt.Errorf("%w: KB-JWT typ %q", ErrHolderBinding, kb.Header.Typ)
	}
	if err := verifyJWSSignature(kb.Header.Alg, holderKey, kb.SigningInput, kb.Signature); err != nil {
		return nil, fmt.Errorf("key binding: %w", err)
	}
	kbp, err := decodeJSONObject(kb.Payload)
	if err != nil {
		return nil, err
	}
	presented := token[:len(token)-len(sd.KBJWT)]
	if h, _ := kbp["sd_hash"].(string); h != sdDigest(presented) {
		return nil, fmt.Errorf("%w: KB-JWT sd_hash does not match the presented SD-JWT", ErrBadDisclosure)
	}
	if nonce, _ := kbp["nonce"].(string); nonce != p.Nonce {
		return nil, fmt.Errorf("%w: KB-JWT nonce does not match", ErrWrongNonce)
	}
	if aud, _ := kbp["aud"].(string); !p.audience(aud) {
		return nil, fmt.Errorf("%w: KB-JWT aud %q", ErrWrongAudience, aud)
	}
	iat, ok, err := numericDate(kbp, "iat")
	if err != nil || !ok {
		return nil, fmt.Errorf("%w: KB-JWT iat missing", ErrHolderBinding)
	}
	now := c.now()
	if iat.After(now.Add(time.Minute)) || iat.Before(now.Add(-10*time.Minute)) {
		return nil, fmt.Errorf("%w: KB-JWT iat outside the acceptance window", ErrHolderBinding)
	}

	vct, _ := claims["vct"].(string)
	if vct == "" {
		return nil, fmt.Errorf("%w: SD-JWT VC without vct", ErrMalformed)
	}
	vc := VerifiedCredential{
		Format: format, Issuer: issuer, Types: []string{vct}, HolderBound: true,
		Hash: credentialHash([]byte(sd.IssuerJWT)), Alg: j.Header.Alg, Claims: map[string]any{},
	}
	vc.Subject, _ = claims["sub"].(string)
	if vc.Subject != "" {
		// The subject identifier is informational here: binding is cnf.
		vc.Subject = ""
	}
	if t, ok, err := numericDate(claims, "nbf"); err != nil {
		return nil, err
	} else if ok {
		vc.ValidFrom = t
	}
	if t, ok, err := numericDate(claims, "exp"); err != nil {
		return nil, err
	} else if ok {
		vc.ValidUntil = t
	}
	if st, ok := claims["status"]; ok {
		ref, err := tokenStatusRef(st)
		if err != nil {
			return nil, err
		}
		vc.Status = []StatusRef{ref}
	}
	for k, v := range claims {
		switch k {
		case "iss", "iat", "nbf", "exp", "cnf", "vct", "vct#integrity", "status", "sub", "_sd_alg":
		default:
			vc.Claims[k] = v
		}
	}
	thumb, err := jwkThumbprint(holderKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHolderBinding, err)
	}
	holder, err := did.JWKDID(holderKey)
	if err != nil {
		holder = "jkt:" + thumb
	}
	return &VerifiedPresentation{Format: format, Holder: holder, Credentials: []VerifiedCredential{vc}}, nil
}

// expandSD replaces _sd digests and {"...": digest} array elements by their
// disclosed values, recursively (SD-JWT §7.1 step 3).
func expandSD(v any, discs map[string]*disclosure, seen map[string]bool, depth int) (any, error) {
	if depth > strictjson.MaxDepth {
		return nil, fmt.Errorf("%w: nesting too deep", ErrMalformed)
	}
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			if k == "_sd" || k == "_sd_alg" {
				continue
			}
			x, err := expandSD(e, discs, seen, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = x
		}
		if sdList, ok := t["_sd"]; ok {
			arr, ok := sdList.([]any)
			if !ok {
				return nil, fmt.Errorf("%w: _sd is not an array", ErrBadDisclosure)
			}
			for _, e := range arr {
				dg, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("%w: _sd entry is not a string", ErrBadDisclosure)
				}
				if seen[dg] {
					return nil, fmt.Errorf("%w: digest appears twice", ErrBadDisclosure)
				}
				seen[dg] = true
				d, ok := discs[dg]
				if !ok {
					continue // decoy or undisclosed
				}
				if d.isArray {
					return nil, fmt.Errorf("%w: array disclosure used for an object claim", ErrBadDisclosure)
				}
				if _, exists := out[d.name]; exists {
					return nil, fmt.Errorf("%w: disclosed claim %q already present", ErrBadDisclosure, d.name)
				}
				d.used = true
				x, err := expandSD(d.value, discs, seen, depth+1)
				if err != nil {
					return nil, err
				}
				out[d.name] = x
			}
		}
		return out, nil
	case []any:
		out := make([]any, 0, len(t))
		for _, e := range t {
			if m, ok := e.(map[string]any); ok && len(m) == 1 {
				if dg, ok := m["..."].(string); ok {
					if seen[dg] {
						return nil, fmt.Errorf("%w: digest appears twice", ErrBadDisclosure)
					}
					seen[dg] = true
					d, ok := discs[dg]
					if !ok {
						continue
					}
					if !d.isArray {
						return nil, fmt.Errorf("%w: object disclosure used for an array element", ErrBadDisclosure)
					}
					d.used = true
					x, err := expandSD(d.value, discs, seen, depth+1)
					if err != nil {
						return nil, err
					}
					out = append(out, x)
					continue
				}
			}
			x, err := expandSD(e, discs, seen, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, x)
		}
		return out, nil
	}
	return v, nil
}
