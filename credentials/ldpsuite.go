package credentials

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"strings"

	"github.com/gxfs-conf/gxconf/credentials/did"
)

// The Linked Data proofs gxconf verifies on ldp_vc and ldp_vp documents.
// All of them sign H(c14n(proof options)) || H(c14n(document)) with URDNA2015
// (RDFC-1.0) canonicalization; they differ in how the signature is written
// and which keys and hashes they take:
//
//   - Ed25519Signature2018 (XFSC notarization, Aries-era wallets) and
//     JsonWebSignature2020 (Gaia-X, XFSC TSA): a detached JWS with an
//     unencoded payload in "jws"; 2018 only with EdDSA.
//   - Ed25519Signature2020 and DataIntegrityProof with cryptosuite
//     eddsa-rdfc-2022 (VC Data Integrity EdDSA Cryptosuites v1.0): an Ed25519
//     signature as base58btc multibase in "proofValue".
//   - DataIntegrityProof with cryptosuite ecdsa-rdfc-2019 (VC Data Integrity
//     ECDSA Cryptosuites v1.0): an ECDSA signature (r || s) in "proofValue",
//     with SHA-256 on P-256 keys and SHA-384 on P-384 keys — both for H and
//     for the signature.
//
// Other cryptosuites (the JCS ones, BBS, ecdsa-sd-2023) are refused as an
// unsupported format before anything is canonicalized.
var (
	ldProofTypes   = []string{"Ed25519Signature2018", "Ed25519Signature2020", "JsonWebSignature2020", "DataIntegrityProof"}
	ldCryptosuites = []string{"eddsa-rdfc-2022", "ecdsa-rdfc-2019"}
)

// ldSuite is one of the proof kinds above.
type ldSuite int

const (
	suiteEd25519Signature2018 ldSuite = iota + 1
	suiteEd25519Signature2020
	suiteJsonWebSignature2020
	suiteEdDSARDFC2022
	suiteECDSARDFC2019
)

func (s ldSuite) String() string {
	switch s {
	case suiteEd25519Signature2018:
		return "Ed25519Signature2018"
	case suiteEd25519Signature2020:
		return "Ed25519Signature2020"
	case suiteJsonWebSignature2020:
		return "JsonWebSignature2020"
	case suiteEdDSARDFC2022:
		return "DataIntegrityProof eddsa-rdfc-2022"
	case suiteECDSARDFC2019:
		return "DataIntegrityProof ecdsa-rdfc-2019"
	}
	return "unknown proof"
}

// proofSuiteOf says which suite signed p, or why gxconf does not verify it.
func proofSuiteOf(p *ldProof) (ldSuite, error) {
	if p.Cryptosuite != "" && p.Type != "DataIntegrityProof" {
		return 0, fmt.Errorf("%w: proof of type %q names a cryptosuite", ErrMalformed, p.Type)
	}
	switch p.Type {
	case "Ed25519Signature2018":
		return suiteEd25519Signature2018, nil
	case "Ed25519Signature2020":
		return suiteEd25519Signature2020, nil
	case "JsonWebSignature2020":
		return suiteJsonWebSignature2020, nil
	case "DataIntegrityProof":
		switch p.Cryptosuite {
		case "eddsa-rdfc-2022":
			return suiteEdDSARDFC2022, nil
		case "ecdsa-rdfc-2019":
			return suiteECDSARDFC2019, nil
		case "":
			return 0, fmt.Errorf("%w: DataIntegrityProof without a cryptosuite", ErrMalformed)
		}
		return 0, fmt.Errorf("%w: DataIntegrityProof cryptosuite %q (supported: %s)", ErrUnsupportedFormat, p.Cryptosuite, strings.Join(ldCryptosuites, ", "))
	}
	return 0, fmt.Errorf("%w: proof type %q", ErrUnsupportedFormat, p.Type)
}

// verify checks p's signature by key (the verification method vmID) over
// the canonical proof options and document and returns the JWS algorithm
// name of what it checked (for the federation's allowed algorithms, which
// allowed enforces before the signature is checked).
func (s ldSuite) verify(p *ldProof, vmID string, key crypto.PublicKey, optsC14n, docC14n string, allowed func(alg string) error) (string, error) {
	switch s {
	case suiteEd25519Signature2018, suiteJsonWebSignature2020:
		jws, _ := p.raw["jws"].(string)
		check := allowed
		if s == suiteEd25519Signature2018 {
			check = func(alg string) error {
				if alg != "EdDSA" {
					return fmt.Errorf("%w: Ed25519Signature2018 with JWS alg %q", ErrAlgNotAllowed, alg)
				}
				if allowed != nil {
					return allowed(alg)
				}
				return nil
			}
		}
		alg, err := verifyDetachedJWS(jws, key, verifyData(sha256Sum, optsC14n, docC14n), check)
		if err != nil {
			return "", fmt.Errorf("%s by %s: %w", s, vmID, err)
		}
		return alg, nil
	case suiteEd25519Signature2020, suiteEdDSARDFC2022:
		return s.verifyProofValue(p, vmID, key, "EdDSA", sha256Sum, optsC14n, docC14n, allowed)
	case suiteECDSARDFC2019:
		k, ok := key.(*ecdsa.PublicKey)
		if !ok {
			return "", fmt.Errorf("%w: %s needs a P-256 or P-384 key, %s is %T", ErrAlgNotAllowed, s, vmID, key)
		}
		switch k.Curve.Params().Name {
		case "P-256":
			return s.verifyProofValue(p, vmID, key, "ES256", sha256Sum, optsC14n, docC14n, allowed)
		case "P-384":
			return s.verifyProofValue(p, vmID, key, "ES384", sha384Sum, optsC14n, docC14n, allowed)
		}
		return "", fmt.Errorf("%w: %s needs a P-256 or P-384 key, %s is on %s", ErrAlgNotAllowed, s, vmID, k.Curve.Params().Name)
	}
	return "", fmt.Errorf("%w: proof type %q", ErrUnsupportedFormat, p.Type)
}

// verifyProofValue checks a base58btc multibase proofValue: alg's
// signature (which hashes its input as the JWS algorithm does) over
// h(options) || h(document).
func (s ldSuite) verifyProofValue(p *ldProof, vmID string, key crypto.PublicKey, alg string, h func([]byte) []byte, optsC14n, docC14n string, allowed func(string) error) (string, error) {
	pv, _ := p.raw["proofValue"].(string)
	sig, err := did.DecodeMultibase(pv)
	if err != nil || !strings.HasPrefix(pv, "z") {
		return "", fmt.Errorf("%w: %s: proofValue is not base58btc multibase", ErrBadSignature, s)
	}
	if allowed != nil {
		if err := allowed(alg); err != nil {
			return "", err
		}
	}
	if err := verifyJWSSignature(alg, key, verifyData(h, optsC14n, docC14n), sig); err != nil {
		return "", fmt.Errorf("%s by %s: %w", s, vmID, err)
	}
	return alg, nil
}

func verifyData(h func([]byte) []byte, optsC14n, docC14n string) []byte {
	return append(h([]byte(optsC14n)), h([]byte(docC14n))...)
}

func sha256Sum(b []byte) []byte { d := sha256.Sum256(b); return d[:] }

func sha384Sum(b []byte) []byte { d := sha512.Sum384(b); return d[:] }
