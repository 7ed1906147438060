package credentials

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// jwsHeader is the protected header fields gxconf reads (RFC 7515 §4.1).
type jwsHeader struct {
	Alg  string           `json:"alg"`
	Typ  string           `json:"typ,omitempty"`
	Cty  string           `json:"cty,omitempty"`
	Kid  string           `json:"kid,omitempty"`
	JWK  *jose.JSONWebKey `json:"jwk,omitempty"`
	B64  *bool            `json:"b64,omitempty"`
	Crit []string         `json:"crit,omitempty"`
	X5c  []string         `json:"x5c,omitempty"`
}

// parseJWSHeader decodes a protected header strictly: duplicate member
// names (RFC 7515 §5.2 step 4), names differing only in case from one gxconf
// reads, and over-deep nesting are refused.
func parseJWSHeader(raw []byte) (jwsHeader, error) {
	var h jwsHeader
	if err := strictjson.Unmarshal(raw, &h); err != nil {
		return h, fmt.Errorf("%w: JWS header: %w", ErrMalformed, err)
	}
	return h, nil
}

// compactJWS is a parsed, not yet verified, compact JWS.
type compactJWS struct {
	Header       jwsHeader
	HeaderB64    string
	Payload      []byte
	PayloadB64   string
	Signature    []byte
	SigningInput []byte
}

// parseCompactJWS splits and decodes a compact JWS. It rejects alg "none"
// and unknown critical headers up front.
func parseCompactJWS(token string) (*compactJWS, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: JWS has %d parts", ErrMalformed, len(parts))
	}
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: JWS header: %v", ErrMalformed, err)
	}
	h, err := parseJWSHeader(hdr)
	if err != nil {
		return nil, err
	}
	if err := checkAlgName(h.Alg); err != nil {
		return nil, err
	}
	if len(h.Crit) > 0 {
		return nil, fmt.Errorf("%w: unsupported critical header %v", ErrMalformed, h.Crit)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: JWS payload: %v", ErrMalformed, err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) == 0 {
		return nil, fmt.Errorf("%w: JWS signature missing or not base64url", ErrMalformed)
	}
	return &compactJWS{
		Header: h, HeaderB64: parts[0], Payload: payload, PayloadB64: parts[1], Signature: sig,
		SigningInput: []byte(parts[0] + "." + parts[1]),
	}, nil
}

func checkAlgName(alg string) error {
	if alg == "" || strings.EqualFold(alg, "none") {
		return fmt.Errorf("%w: %q", ErrAlgNotAllowed, alg)
	}
	if !slices.Contains(supportedAlgs, alg) {
		return fmt.Errorf("%w: %q is not supported", ErrAlgNotAllowed, alg)
	}
	return nil
}

// verifyJWSSignature checks sig over input with key for alg, checking that
// the key type fits the algorithm (no alg confusion).
func verifyJWSSignature(alg string, key crypto.PublicKey, input, sig []byte) error {
	bad := fmt.Errorf("%w: %s signature does not verify", ErrBadSignature, alg)
	switch alg {
	case "EdDSA":
		k, ok := key.(ed25519.PublicKey)
		if !ok {
			return fmt.Errorf("%w: EdDSA needs an Ed25519 key, got %T", ErrAlgNotAllowed, key)
		}
		if !ed25519.Verify(k, input, sig) {
			return bad
		}
		return nil
	case "ES256", "ES384":
		k, ok := key.(*ecdsa.PublicKey)
		want := map[string]string{"ES256": "P-256", "ES384": "P-384"}[alg]
		if !ok || k.Curve.Params().Name != want {
			return fmt.Errorf("%w: %s needs a %s key", ErrAlgNotAllowed, alg, want)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return bad
		}
		var digest []byte
		if alg == "ES256" {
			d := sha256.Sum256(input)
			digest = d[:]
		} else {
			d := sha512.Sum384(input)
			digest = d[:]
		}
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(k, digest, r, s) {
			return bad
		}
		return nil
	case "RS256", "PS256":
		k, ok := key.(*rsa.PublicKey)
		if !ok || k.N.BitLen() < 2048 {
			return fmt.Errorf("%w: %s needs an RSA key of at least 2048 bits", ErrAlgNotAllowed, alg)
		}
		d := sha256.Sum256(input)
		var err error
		if alg == "RS256" {
			err = rsa.VerifyPKCS1v15(k, crypto.SHA256, d[:], sig)
		} else {
			err = rsa.VerifyPSS(k, crypto.SHA256, d[:], sig, nil)
		}
		if err != nil {
			return bad
		}
		return nil
	}
	return fmt.Errorf("%w: %q", ErrAlgNotAllowed, alg)
}

// algForKey picks the JWS algorithm for a signing key.
func algForKey(key crypto.Signer) (string, error) {
	switch k := key.Public().(type) {
	case ed25519.PublicKey:
		return "EdDSA", nil
	case *ecdsa.PublicKey:
		if k.Curve.Params().Name == "P-256" {
			return "ES256", nil
		}
	}
	return "", fmt.Errorf("unsupported signing key %T", key.Public())
}

// signCompactJWS signs a JSON payload as a compact JWS with the given header.
func signCompactJWS(key crypto.Signer, header map[string]any, payload any) (string, error) {
	alg, err := algForKey(key)
	if err != nil {
		return "", err
	}
	header["alg"] = alg
	hb, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	pb, err := json.Marshal(payload)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(pb)
	var sig []byte
	switch k := key.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, []byte(input))
	case *ecdsa.PrivateKey:
		d := sha256.Sum256([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
		if err != nil {
			return "", err
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	default:
		return "", fmt.Errorf("unsupported signing key %T", key)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// jwkPublicKey converts a JWK to a public key, refusing private keys.
func jwkPublicKey(j *jose.JSONWebKey) (crypto.PublicKey, error) {
	if j == nil || !j.Valid() || !j.IsPublic() {
		return nil, fmt.Errorf("%w: invalid or private JWK", ErrHolderBinding)
	}
	switch k := j.Key.(type) {
	case ed25519.PublicKey, *ecdsa.PublicKey, *rsa.PublicKey:
		return k, nil
	}
	return nil, fmt.Errorf("%w: unsupported JWK key type", ErrHolderBinding)
}

// jwkThumbprint returns the RFC 7638 thumbprint of a public key (base64url).
func jwkThumbprint(pub crypto.PublicKey) (string, error) {
	j := jose.JSONWebKey{Key: pub}
	tp, err := j.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}
