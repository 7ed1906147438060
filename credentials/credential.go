package credentials

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// Credential formats (OID4VP format identifiers and JOSE typ values).
const (
	FormatLDPVC     = "ldp_vc"
	FormatLDPVP     = "ldp_vp"
	FormatJWTVCJSON = "jwt_vc_json"
	FormatJWTVPJSON = "jwt_vp_json"
	FormatVCJWT     = "vc+jwt"
	FormatVCLDJWT   = "vc+ld+json+jwt"
	FormatVCSDJWT   = "vc+sd-jwt"
	FormatDCSDJWT   = "dc+sd-jwt"
)

// W3C VC Data Model context URLs (VC DM 1.1 §4.1, VC DM 2.0 §4.3).
const (
	ContextCredentialsV1 = "https://www.w3.org/2018/credentials/v1"
	ContextCredentialsV2 = "https://www.w3.org/ns/credentials/v2"
)

// StatusRef is a credential's status entry, kept for later re-checks.
type StatusRef struct {
	Type    string `json:"type"`
	Purpose string `json:"purpose"`
	ListURL string `json:"list_url"`
	Index   int    `json:"index"`
	Size    int    `json:"size,omitempty"`
	// Profile is the issuer's status profile (w3c or xfsc-compat).
	Profile string `json:"profile,omitempty"`
}

// VerifiedCredential is a credential whose proof, validity and status were
// checked. Trust is evaluated separately and recorded in Federation.
type VerifiedCredential struct {
	Format     string         `json:"format"`
	ID         string         `json:"id,omitempty"`
	Issuer     string         `json:"issuer"`
	Types      []string       `json:"types"`
	Subject    string         `json:"subject,omitempty"`
	Claims     map[string]any `json:"claims"`
	ValidFrom  time.Time      `json:"valid_from"`
	ValidUntil time.Time      `json:"valid_until"`
	Status     []StatusRef    `json:"status,omitempty"`
	// Hash is the hex SHA-256 of the credential as presented.
	Hash string `json:"hash"`
	// HolderBound is true when the presenter proved control of the subject key.
	HolderBound bool   `json:"holder_bound"`
	Federation  string `json:"federation,omitempty"`
	// Alg is the issuer's signature algorithm; Method the issuer's DID method.
	Alg string `json:"alg"`
}

func credentialHash(raw []byte) string {
	h := sha256.Sum256(raw)
	return hex.EncodeToString(h[:])
}

// w3cCredential is the W3C VC JSON shape (1.1 and 2.0) before trust checks.
type w3cCredential struct {
	Context           []any
	Types             []string
	ID                string
	Issuer            string
	ValidFrom         time.Time
	ValidUntil        time.Time
	Subject           map[string]any
	SubjectID         string
	Status            []StatusRef
	CredentialSchemas []any
}

// parseW3CCredential reads the data-model fields of a VC JSON object.
// requireContext is false for VC-JWT 1.1 `vc` claims, which may omit it.
func parseW3CCredential(m map[string]any, requireContext bool) (*w3cCredential, error) {
	c := &w3cCredential{}
	ctx, err := contextList(m["@context"])
	if err != nil {
		if requireContext {
			return nil, err
		}
	} else {
		c.Context = ctx
		if len(ctx) == 0 {
			return nil, fmt.Errorf("%w: empty @context", ErrMalformed)
		}
		first, _ := ctx[0].(string)
		if first != ContextCredentialsV1 && first != ContextCredentialsV2 {
			return nil, fmt.Errorf("%w: first @context must be the VC context, got %v", ErrMalformed, ctx[0])
		}
	}
	if c.Types, err = stringOrList(m["type"]); err != nil || !slices.Contains(c.Types, "VerifiableCredential") {
		return nil, fmt.Errorf("%w: type must include VerifiableCredential", ErrMalformed)
	}
	if id, ok := m["id"]; ok {
		if c.ID, ok = id.(string); !ok {
			return nil, fmt.Errorf("%w: id must be a string", ErrMalformed)
		}
	}
	switch iss := m["issuer"].(type) {
	case string:
		c.Issuer = iss
	case map[string]any:
		c.Issuer, _ = iss["id"].(string)
	}
	if c.Issuer == "" {
		return nil, fmt.Errorf("%w: issuer missing", ErrMalformed)
	}
	for _, k := range []string{"validFrom", "issuanceDate"} {
		if v, ok := m[k]; ok {
			if c.ValidFrom, err = parseTime(k, v); err != nil {
				return nil, err
			}
			break
		}
	}
	for _, k := range []string{"validUntil", "expirationDate"} {
		if v, ok := m[k]; ok {
			if c.ValidUntil, err = parseTime(k, v); err != nil {
				return nil, err
			}
			break
		}
	}
	switch cs := m["credentialSubject"].(type) {
	case map[string]any:
		c.Subject = cs
	case []any:
		if len(cs) != 1 {
			return nil, fmt.Errorf("%w: exactly one credentialSubject is supported", ErrMalformed)
		}
		c.Subject, _ = cs[0].(map[string]any)
	}
	if c.Subject == nil {
		return nil, fmt.Errorf("%w: credentialSubject missing", ErrMalformed)
	}
	if id, ok := c.Subject["id"]; ok {
		if c.SubjectID, ok = id.(string); !ok {
			return nil, fmt.Errorf("%w: credentialSubject.id must be a string", ErrMalformed)
		}
	}
	if c.Status, err = parseStatusEntries(m["credentialStatus"]); err != nil {
		return nil, err
	}
	return c, nil
}

func parseStatusEntries(v any) ([]StatusRef, error) {
	var entries []any
	switch s := v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		entries = []any{s}
	case []any:
		entries = s
	default:
		return nil, fmt.Errorf("%w: credentialStatus must be an object or list", ErrMalformed)
	}
	var out []StatusRef
	for _, e := range entries {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: credentialStatus entry must be an object", ErrMalformed)
		}
		ref := StatusRef{}
		ref.Type, _ = m["type"].(string)
		ref.Purpose, _ = m["statusPurpose"].(string)
		ref.ListURL, _ = m["statusListCredential"].(string)
		switch ref.Type {
		case "BitstringStatusListEntry", "StatusList2021Entry":
		default:
			return nil, fmt.Errorf("%w: unsupported credentialStatus type %q", ErrMalformed, ref.Type)
		}
		idx, err := intField(m["statusListIndex"])
		if err != nil || idx < 0 {
			return nil, fmt.Errorf("%w: statusListIndex invalid", ErrMalformed)
		}
		ref.Index = idx
		if sz, ok := m["statusSize"]; ok {
			if ref.Size, err = intField(sz); err != nil || ref.Size < 1 || ref.Size > 8 {
				return nil, fmt.Errorf("%w: statusSize invalid", ErrMalformed)
			}
		}
		if ref.ListURL == "" || ref.Purpose == "" {
			return nil, fmt.Errorf("%w: credentialStatus lacks statusListCredential or statusPurpose", ErrMalformed)
		}
		if !strings.HasPrefix(ref.ListURL, "https://") {
			return nil, fmt.Errorf("%w: statusListCredential must be an https URL", ErrMalformed)
		}
		out = append(out, ref)
	}
	return out, nil
}

func intField(v any) (int, error) {
	switch x := v.(type) {
	case string:
		return strconv.Atoi(x)
	case float64:
		if x != float64(int(x)) {
			return 0, fmt.Errorf("not an integer")
		}
		return int(x), nil
	case json.Number:
		i, err := x.Int64()
		return int(i), err
	}
	return 0, fmt.Errorf("not an integer")
}

func parseTime(key string, v any) (time.Time, error) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, fmt.Errorf("%w: %s must be a date-time string", ErrMalformed, key)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s: %v", ErrMalformed, key, err)
	}
	return t, nil
}

func contextList(v any) ([]any, error) {
	switch c := v.(type) {
	case string:
		return []any{c}, nil
	case []any:
		return c, nil
	case nil:
		return nil, fmt.Errorf("%w: @context missing", ErrMalformed)
	}
	return nil, fmt.Errorf("%w: @context must be a string or list", ErrMalformed)
}

func stringOrList(v any) ([]string, error) {
	switch t := v.(type) {
	case string:
		return []string{t}, nil
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: expected strings", ErrMalformed)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: expected a string or list of strings", ErrMalformed)
}

// validitySkew is the clock skew allowed on every validity bound.
const validitySkew = 30 * time.Second

// checkValidity enforces the validity window with a small clock skew.
func checkValidity(from, until, now time.Time) error {
	if !from.IsZero() && now.Add(validitySkew).Before(from) {
		return fmt.Errorf("%w: valid from %s", ErrNotYetValid, from.UTC().Format(time.RFC3339))
	}
	if !until.IsZero() && !now.Add(-validitySkew).Before(until) {
		return fmt.Errorf("%w: valid until %s", ErrExpired, until.UTC().Format(time.RFC3339))
	}
	return nil
}

// decodeJSONObject decodes untrusted JSON (a credential, presentation, JWT
// payload or status list) under the package's one set of rules: duplicate
// member names refused, nesting at most strictjson.MaxDepth, nothing after
// the object. Numbers decode as float64.
func decodeJSONObject(data []byte) (map[string]any, error) {
	m, err := strictjson.DecodeObject(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return m, nil
}

// decodeJSON is decodeJSONObject for any JSON value.
func decodeJSON(data []byte) (any, error) {
	v, err := strictjson.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return v, nil
}

// claimAt returns the value at a dotted path inside claims.
func claimAt(claims map[string]any, path string) (any, bool) {
	var cur any = claims
	for _, seg := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// setClaimAt stores v at a dotted path, creating intermediate objects.
func setClaimAt(claims map[string]any, path string, v any) {
	segs := strings.Split(path, ".")
	cur := claims
	for _, seg := range segs[:len(segs)-1] {
		next, ok := cur[seg].(map[string]any)
		if !ok {
			next = map[string]any{}
			cur[seg] = next
		}
		cur = next
	}
	cur[segs[len(segs)-1]] = v
}
