package did

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// Multicodec prefixes of the public key types gxconf accepts
// (https://github.com/multiformats/multicodec/blob/master/table.csv).
var (
	codecEd25519 = []byte{0xed, 0x01}
	codecP256    = []byte{0x80, 0x24}
	codecP384    = []byte{0x81, 0x24}
)

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

var base58Index = func() [256]int8 {
	var idx [256]int8
	for i := range idx {
		idx[i] = -1
	}
	for i, c := range base58Alphabet {
		idx[c] = int8(i)
	}
	return idx
}()

// maxBase58Len bounds the work done on attacker-supplied base58 strings.
const maxBase58Len = 256

// decodeBase58 decodes Bitcoin-alphabet base58 (used by multibase 'z').
func decodeBase58(s string) ([]byte, error) {
	if s == "" || len(s) > maxBase58Len {
		return nil, errors.New("invalid base58 length")
	}
	n := new(big.Int)
	radix := big.NewInt(58)
	for i := 0; i < len(s); i++ {
		v := base58Index[s[i]]
		if v < 0 {
			return nil, fmt.Errorf("invalid base58 character %q", s[i])
		}
		n.Mul(n, radix)
		n.Add(n, big.NewInt(int64(v)))
	}
	out := n.Bytes()
	zeros := 0
	for zeros < len(s) && s[zeros] == '1' {
		zeros++
	}
	return append(make([]byte, zeros), out...), nil
}

// EncodeBase58 encodes bytes in Bitcoin-alphabet base58.
func EncodeBase58(b []byte) string {
	n := new(big.Int).SetBytes(b)
	radix := big.NewInt(58)
	mod := new(big.Int)
	var out []byte
	for n.Sign() > 0 {
		n.DivMod(n, radix, mod)
		out = append(out, base58Alphabet[mod.Int64()])
	}
	for _, c := range b {
		if c != 0 {
			break
		}
		out = append(out, '1')
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return string(out)
}

// DecodeMultibase decodes the multibase encodings used for keys and proofs:
// 'z' (base58btc) and 'u' (base64url without padding).
func DecodeMultibase(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("empty multibase value")
	}
	switch s[0] {
	case 'z':
		return decodeBase58(s[1:])
	case 'u':
		return base64.RawURLEncoding.DecodeString(s[1:])
	}
	return nil, fmt.Errorf("unsupported multibase prefix %q", s[0])
}

// decodeMultikey decodes a multibase, multicodec-prefixed public key.
func decodeMultikey(mb string) (crypto.PublicKey, error) {
	raw, err := DecodeMultibase(mb)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoKey, err)
	}
	switch {
	case hasPrefix(raw, codecEd25519):
		k := raw[len(codecEd25519):]
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: Ed25519 key has %d bytes", ErrNoKey, len(k))
		}
		return ed25519.PublicKey(k), nil
	case hasPrefix(raw, codecP256):
		return ecKey(elliptic.P256(), raw[len(codecP256):])
	case hasPrefix(raw, codecP384):
		return ecKey(elliptic.P384(), raw[len(codecP384):])
	}
	return nil, fmt.Errorf("%w: unsupported multicodec key type", ErrNoKey)
}

func ecKey(curve elliptic.Curve, compressed []byte) (crypto.PublicKey, error) {
	x, y := elliptic.UnmarshalCompressed(curve, compressed)
	if x == nil {
		return nil, fmt.Errorf("%w: invalid compressed %s point", ErrNoKey, curve.Params().Name)
	}
	return &ecdsa.PublicKey{Curve: curve, X: x, Y: y}, nil
}

func hasPrefix(b, p []byte) bool {
	return len(b) >= len(p) && string(b[:len(p)]) == string(p)
}

// resolveKey builds the DID document of a did:key (https://w3c-ccg.github.io/did-method-key/).
func resolveKey(d string) (*Document, error) {
	mb := strings.TrimPrefix(d, "did:key:")
	if mb == d || strings.ContainsAny(mb, ":/?#") {
		return nil, fmt.Errorf("%w: malformed did:key", ErrResolution)
	}
	key, err := decodeMultikey(mb)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrResolution, err)
	}
	vmType := "Multikey"
	if _, ok := key.(ed25519.PublicKey); ok {
		vmType = "Ed25519VerificationKey2020"
	}
	vmID := d + "#" + mb
	return singleKeyDocument(d, VerificationMethod{ID: vmID, Type: vmType, Controller: d, PublicKeyMultibase: mb}), nil
}

// resolveJWK builds the DID document of a did:jwk (https://github.com/quartzjer/did-jwk/blob/main/spec.md).
func resolveJWK(d string) (*Document, error) {
	enc := strings.TrimPrefix(d, "did:jwk:")
	if enc == d || strings.ContainsAny(enc, ":/?#") {
		return nil, fmt.Errorf("%w: malformed did:jwk", ErrResolution)
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("%w: did:jwk is not base64url: %v", ErrResolution, err)
	}
	var jwk jose.JSONWebKey
	if _, err := strictjson.DecodeObject(raw); err != nil {
		return nil, fmt.Errorf("%w: did:jwk carries an invalid JWK: %v", ErrResolution, err)
	}
	if err := json.Unmarshal(raw, &jwk); err != nil {
		return nil, fmt.Errorf("%w: did:jwk carries an invalid JWK: %v", ErrResolution, err)
	}
	if !jwk.IsPublic() {
		return nil, fmt.Errorf("%w: did:jwk carries a private key", ErrResolution)
	}
	return singleKeyDocument(d, VerificationMethod{ID: d + "#0", Type: "JsonWebKey2020", Controller: d, PublicKeyJwk: &jwk}), nil
}

func singleKeyDocument(d string, vm VerificationMethod) *Document {
	ref, _ := json.Marshal(vm.ID)
	return &Document{
		ID:                 d,
		VerificationMethod: []VerificationMethod{vm},
		Authentication:     []json.RawMessage{ref},
		AssertionMethod:    []json.RawMessage{ref},
	}
}

// JWKDID returns the did:jwk for a public key.
func JWKDID(pub crypto.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	raw, err := jwk.MarshalJSON()
	if err != nil {
		return "", err
	}
	return "did:jwk:" + base64.RawURLEncoding.EncodeToString(raw), nil
}
