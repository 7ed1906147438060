package catalog

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// providerKey is the provider's signing key and its did:web identity.
type providerKey struct {
	signer crypto.Signer
	alg    jose.SignatureAlgorithm
	did    string
	kid    string // the verification method's full DID URL
	x5u    string
}

// loadKey reads a PEM private key: EC P-256 (ES256) or RSA ≥ 2048 bits (PS256).
func loadKey(path string) (crypto.Signer, jose.SignatureAlgorithm, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("failed to read the signing key: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, "", errors.New("the signing key file holds no PEM block")
	}
	var key any
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, "", fmt.Errorf("failed to parse the signing key: %w", err)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, "", errors.New("the signing key must be EC P-256 or RSA")
		}
		return k, jose.ES256, nil
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, "", errors.New("an RSA signing key must have at least 2048 bits")
		}
		return k, jose.PS256, nil
	}
	return nil, "", errors.New("the signing key must be EC P-256 or RSA")
}

// DIDWeb derives the did:web of an https base URL's host (did:web method
// spec §3.1: the port's colon is percent-encoded); its document is served
// at /.well-known/did.json.
func DIDWeb(baseURL string) (string, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("not an https URL: %q", baseURL)
	}
	return "did:web:" + strings.ReplaceAll(u.Host, ":", "%3A"), nil
}

// didDocument is the provider's DID document: one JsonWebKey2020 method
// for assertions, with the X.509 chain URL when configured.
func (k *providerKey) didDocument() ([]byte, error) {
	jwk := jose.JSONWebKey{Key: k.signer.Public(), Algorithm: string(k.alg)}
	raw, err := jwk.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var pub map[string]any
	if err := json.Unmarshal(raw, &pub); err != nil {
		return nil, err
	}
	if k.x5u != "" {
		pub["x5u"] = k.x5u
	}
	doc := map[string]any{
		"@context": []string{"https://www.w3.org/ns/did/v1", "https://w3id.org/security/suites/jws-2020/v1"},
		"id":       k.did,
		"verificationMethod": []any{map[string]any{
			"id": k.kid, "type": "JsonWebKey2020", "controller": k.did, "publicKeyJwk": pub,
		}},
		"assertionMethod": []string{k.kid},
		"authentication":  []string{k.kid},
	}
	return json.MarshalIndent(doc, "", "  ")
}

// sign secures a VC as a VC-JWT (VC-JOSE-COSE §3.1.1; Gaia-X ICAM 24.07):
// typ vc+jwt, cty vc+ld+json, kid the full verification method, iss the DID.
func (k *providerKey) sign(vc map[string]any) (string, error) {
	payload, err := json.Marshal(vc)
	if err != nil {
		return "", err
	}
	opts := (&jose.SignerOptions{}).WithType("vc+jwt").WithContentType("vc+ld+json").WithHeader("iss", k.did)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.signer, KeyID: k.kid}}, opts)
	if err != nil {
		return "", err
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}
