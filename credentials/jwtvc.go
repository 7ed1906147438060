package credentials

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gxfs-conf/gxconf/credentials/did"
	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// jwtKey resolves the signing key of a JWT issued by iss: the kid header
// (absolute DID URL or fragment relative to iss), else iss's only key.
func (c *Checker) jwtKey(ctx context.Context, h jwsHeader, iss string, rel did.Relationship) (string, crypto.PublicKey, error) {
	kid := h.Kid
	switch {
	case kid == "":
		kid = iss
	case strings.HasPrefix(kid, "#"):
		kid = iss + kid
	case !strings.HasPrefix(kid, "did:"):
		return "", nil, fmt.Errorf("%w: kid %q is not a DID URL", ErrDIDResolution, kid)
	}
	// Before resolving: a kid on another DID would make gxconf fetch a
	// document it has no reason to trust.
	if d, _ := did.Split(kid); iss != "" && d != iss {
		return "", nil, fmt.Errorf("%w: key %s does not belong to %s", ErrBadSignature, kid, iss)
	}
	vm, key, err := c.resolveKey(ctx, kid, rel)
	if err != nil {
		return "", nil, err
	}
	controller, _ := did.Split(vm.ID)
	if iss != "" && controller != iss {
		return "", nil, fmt.Errorf("%w: key %s does not belong to %s", ErrBadSignature, vm.ID, iss)
	}
	return controller, key, nil
}

func numericDate(m map[string]any, k string) (time.Time, bool, error) {
	v, ok := m[k]
	if !ok {
		return time.Time{}, false, nil
	}
	f, ok := v.(float64)
	if !ok || f < 0 || f > 1e11 {
		return time.Time{}, false, fmt.Errorf("%w: %s must be a NumericDate", ErrMalformed, k)
	}
	return time.Unix(int64(f), 0), true, nil
}

// verifyJWTCredential verifies a VC secured as a JWT: VC-JWT 1.1
// (jwt_vc_json, `vc` claim, VC DM 1.1 §6.3.1) or VC DM 2.0 JOSE
// (typ vc+jwt / vc+ld+json+jwt, the payload is the credential; VC-JOSE-COSE §3.1.1).
// mayContact, when not nil, is asked before the issuer's DID is resolved.
func (c *Checker) verifyJWTCredential(ctx context.Context, token string, mayContact func(issuer string) error) (*VerifiedCredential, error) {
	if len(token) > c.cfg.MaxInputBytes {
		return nil, fmt.Errorf("%w: credential JWT", ErrTooLarge)
	}
	j, err := parseCompactJWS(token)
	if err != nil {
		return nil, err
	}
	payload, err := decodeJSONObject(j.Payload)
	if err != nil {
		return nil, err
	}
	format := FormatJWTVCJSON
	var vcObj map[string]any
	switch strings.ToLower(j.Header.Typ) {
	case "vc+jwt", "application/vc+jwt":
		format, vcObj = FormatVCJWT, payload
	case "vc+ld+json+jwt", "application/vc+ld+json+jwt":
		format, vcObj = FormatVCLDJWT, payload
	case "", "jwt":
		inner, ok := payload["vc"].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: JWT has no vc claim", ErrUnsupportedFormat)
		}
		vcObj = inner
	default:
		return nil, fmt.Errorf("%w: JWT typ %q", ErrUnsupportedFormat, j.Header.Typ)
	}
	w, err := parseW3CCredential(copyWithRegistered(vcObj, payload, format), format != FormatJWTVCJSON)
	if err != nil {
		return nil, err
	}
	iss := w.Issuer
	if s, ok := payload["iss"].(string); ok && s != iss {
		return nil, fmt.Errorf("%w: iss %q differs from issuer %q", ErrMalformed, s, iss)
	}
	// The registered claims and the data-model fields they mirror must agree
	// (VC DM 1.1 §6.3.1): otherwise which one is "the" subject or id depends
	// on who reads the token.
	for claim, field := range map[string]string{"iss": w.Issuer, "sub": w.SubjectID, "jti": w.ID} {
		v, ok := payload[claim]
		if !ok {
			continue
		}
		if s, isString := v.(string); !isString || (field != "" && s != field) {
			return nil, fmt.Errorf("%w: JWT %s does not match the credential", ErrMalformed, claim)
		}
	}
	// The JWT's own nbf and exp always bound the validity, whatever the
	// data-model dates say (RFC 7519 §4.1.4–5; VC-JOSE-COSE §3.1.1).
	validFrom, validUntil := w.ValidFrom, w.ValidUntil
	if nbf, ok, err := numericDate(payload, "nbf"); err != nil {
		return nil, err
	} else if ok && (validFrom.IsZero() || nbf.After(validFrom)) {
		validFrom = nbf
	}
	if exp, ok, err := numericDate(payload, "exp"); err != nil {
		return nil, err
	} else if ok && (validUntil.IsZero() || exp.Before(validUntil)) {
		validUntil = exp
	}
	if mayContact != nil {
		if err := mayContact(iss); err != nil {
			return nil, err
		}
	}
	controller, key, err := c.jwtKey(ctx, j.Header, iss, did.AssertionMethod)
	if err != nil {
		return nil, err
	}
	if err := verifyJWSSignature(j.Header.Alg, key, j.SigningInput, j.Signature); err != nil {
		return nil, err
	}
	claims := make(map[string]any, len(w.Subject))
	for k, v := range w.Subject {
		if k != "id" {
			claims[k] = v
		}
	}
	return &VerifiedCredential{
		Format: format, ID: w.ID, Issuer: controller, Types: w.Types, Subject: w.SubjectID,
		Claims: claims, ValidFrom: validFrom, ValidUntil: validUntil, Status: w.Status,
		Hash: credentialHash([]byte(token)), Alg: j.Header.Alg,
	}, nil
}

// copyWithRegistered maps the JWT registered claims of a VC-JWT 1.1 onto the
// credential (VC DM 1.1 §6.3.1: iss→issuer, sub→credentialSubject.id,
// jti→id). nbf and exp are not copied: verifyJWTCredential intersects them
// with the data-model dates for every JWT format.
func copyWithRegistered(vcObj, payload map[string]any, format string) map[string]any {
	out := make(map[string]any, len(vcObj)+4)
	for k, v := range vcObj {
		out[k] = v
	}
	if format == FormatJWTVCJSON {
		if iss, ok := payload["iss"].(string); ok {
			if _, has := out["issuer"]; !has {
				out["issuer"] = iss
			}
		}
		if jti, ok := payload["jti"].(string); ok {
			if _, has := out["id"]; !has {
				out["id"] = jti
			}
		}
		if sub, ok := payload["sub"].(string); ok {
			if cs, isMap := out["credentialSubject"].(map[string]any); isMap {
				if _, has := cs["id"]; !has {
					cs2 := make(map[string]any, len(cs)+1)
					for k, v := range cs {
						cs2[k] = v
					}
					cs2["id"] = sub
					out["credentialSubject"] = cs2
				}
			}
		}
	}
	return out
}

// verifyJWTPresentation verifies a jwt_vp_json presentation (VC DM 1.1
// §6.3.1 / OID4VP Appendix A.1.1): holder signature, aud = client_id,
// nonce, then each credential.
func (c *Checker) verifyJWTPresentation(ctx context.Context, token string, p PresentationParams) (*VerifiedPresentation, error) {
	j, err := parseCompactJWS(token)
	if err != nil {
		return nil, err
	}
	payload, err := decodeJSONObject(j.Payload)
	if err != nil {
		return nil, err
	}
	vpObj, ok := payload["vp"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: JWT has no vp claim", ErrUnsupportedFormat)
	}
	iss, _ := payload["iss"].(string)
	if iss == "" {
		if h, ok := vpObj["holder"].(string); ok {
			iss = h
		}
	}
	if iss == "" && strings.HasPrefix(j.Header.Kid, "did:") {
		iss, _ = did.Split(j.Header.Kid)
	}
	holder, key, err := c.jwtKey(ctx, j.Header, iss, did.Authentication)
	if err != nil {
		return nil, fmt.Errorf("presentation: %w", err)
	}
	if err := verifyJWSSignature(j.Header.Alg, key, j.SigningInput, j.Signature); err != nil {
		return nil, fmt.Errorf("presentation: %w", err)
	}
	if nonce, _ := payload["nonce"].(string); nonce != p.Nonce {
		return nil, fmt.Errorf("%w: presentation nonce does not match", ErrWrongNonce)
	}
	if !audienceMatches(payload["aud"], p) {
		return nil, fmt.Errorf("%w: presentation aud %v", ErrWrongAudience, payload["aud"])
	}
	now := c.now()
	if exp, ok, err := numericDate(payload, "exp"); err != nil {
		return nil, err
	} else if ok && !now.Before(exp.Add(30*time.Second)) {
		return nil, fmt.Errorf("%w: presentation JWT expired", ErrExpired)
	}
	if nbf, ok, err := numericDate(payload, "nbf"); err != nil {
		return nil, err
	} else if ok && now.Add(30*time.Second).Before(nbf) {
		return nil, fmt.Errorf("%w: presentation JWT not yet valid", ErrNotYetValid)
	}
	types, err := stringOrList(vpObj["type"])
	if err != nil || !slices.Contains(types, "VerifiablePresentation") {
		return nil, fmt.Errorf("%w: vp.type must include VerifiablePresentation", ErrMalformed)
	}
	creds, err := c.verifyEmbeddedCredentials(ctx, vpObj["verifiableCredential"], holder)
	if err != nil {
		return nil, err
	}
	return &VerifiedPresentation{Format: FormatJWTVPJSON, Holder: holder, Credentials: creds}, nil
}

// verifyEmbeddedCredentials verifies the verifiableCredential entries of a
// presentation (ldp_vc objects or VC-JWT strings, at most 8) and marks those
// whose subject is the presentation's holder as holder-bound.
//
// No issuer's DID is resolved unless the issuer is in a trust registry (as a
// trusted issuer or trust anchor) or is the subject of a participant
// credential, issued by an anchor, that verified in the first pass.
func (c *Checker) verifyEmbeddedCredentials(ctx context.Context, raw any, holder string) ([]VerifiedCredential, error) {
	var entries []any
	switch v := raw.(type) {
	case []any:
		entries = v
	case string, map[string]any:
		entries = []any{v}
	case nil:
	default:
		return nil, fmt.Errorf("%w: verifiableCredential", ErrMalformed)
	}
	if len(entries) == 0 {
		return nil, ErrNoCredential
	}
	if len(entries) > 8 {
		return nil, fmt.Errorf("%w: more than 8 credentials", ErrTooLarge)
	}
	vouched := map[string]bool{}
	gate := func(secondPass bool) func(string) error {
		return func(iss string) error {
			if c.inTrustRegistry(iss) || (secondPass && vouched[iss]) {
				return nil
			}
			return fmt.Errorf("%w: %s (not contacted)", errNotInRegistry, iss)
		}
	}
	verify := func(e any, mayContact func(string) error) (*VerifiedCredential, error) {
		switch t := e.(type) {
		case string:
			return c.verifyJWTCredential(ctx, t, mayContact)
		case map[string]any:
			return c.verifyLDPCredential(ctx, t, mayContact)
		}
		return nil, fmt.Errorf("%w: verifiableCredential entry", ErrMalformed)
	}
	out := make([]*VerifiedCredential, len(entries))
	var deferred []int
	for i, e := range entries {
		vc, err := verify(e, gate(false))
		if errors.Is(err, errNotInRegistry) {
			deferred = append(deferred, i)
			continue
		}
		if err != nil {
			return nil, err
		}
		if _, ok := c.anchorGrant(vc); ok && checkValidity(vc.ValidFrom, vc.ValidUntil, c.now()) == nil {
			vouched[vc.Subject] = true
		}
		out[i] = vc
	}
	for _, i := range deferred {
		vc, err := verify(entries[i], gate(true))
		if err != nil {
			return nil, err
		}
		out[i] = vc
	}
	creds := make([]VerifiedCredential, 0, len(entries))
	for _, vc := range out {
		vc.HolderBound = vc.Subject != "" && vc.Subject == holder
		creds = append(creds, *vc)
	}
	return creds, nil
}

// errNotInRegistry refuses an issuer before any contact with it; it wraps
// ErrUntrustedIssuer.
var errNotInRegistry = fmt.Errorf("%w: not in any federation's trust registry", ErrUntrustedIssuer)

// inTrustRegistry reports whether d is a configured trusted issuer or trust
// anchor of some federation: only such DIDs are resolved directly.
func (c *Checker) inTrustRegistry(d string) bool {
	for _, f := range c.cfg.Federations {
		for _, ti := range f.TrustedIssuers {
			if ti.DID == d {
				return true
			}
		}
		for _, a := range f.TrustAnchors {
			if a.DID == d {
				return true
			}
		}
	}
	return false
}

func audienceMatches(aud any, p PresentationParams) bool {
	switch a := aud.(type) {
	case string:
		return p.audience(a)
	case []any:
		if len(a) != 1 {
			return false
		}
		s, ok := a[0].(string)
		return ok && p.audience(s)
	}
	return false
}

// unmarshalStrict is json.Unmarshal refusing unknown, duplicate and
// re-spelled members and trailing data.
func unmarshalStrict(data []byte, v any) error {
	return strictjson.UnmarshalKnown(data, v)
}
