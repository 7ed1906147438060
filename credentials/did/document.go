// Package did resolves the DID methods gxconf accepts (did:key, did:jwk,
// did:web) into DID documents and public keys.
//
// did:web documents are fetched over HTTPS only, with a time-out, a size
// limit and a cache, through a dialer that refuses private and loopback
// addresses after DNS resolution (defeating DNS rebinding); a dev/test
// option lifts both restrictions. It imports no other gxconf package
// except credentials/internal/strictjson, the shared strict JSON decoder.
package did

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// Errors returned by resolution.
var (
	// ErrResolution wraps every resolution failure.
	ErrResolution = errors.New("DID resolution failed")
	// ErrPrivateAddress is returned when did:web (or any guarded fetch)
	// would connect to a loopback, private or otherwise non-public address.
	ErrPrivateAddress = errors.New("refusing to connect to a non-public address")
	// ErrUnsupportedMethod is returned for DID methods other than key, jwk, web.
	ErrUnsupportedMethod = errors.New("unsupported DID method")
	// ErrNoKey is returned when a DID URL names no usable verification method.
	ErrNoKey = errors.New("verification method not found")
)

// Relationship is a verification relationship of a DID document (DID Core §5.3).
type Relationship string

// Verification relationships used by gxconf.
const (
	AssertionMethod Relationship = "assertionMethod"
	Authentication  Relationship = "authentication"
)

// VerificationMethod is one entry of a DID document's verificationMethod
// (DID Core §5.2). Only the key encodings gxconf uses are modelled.
type VerificationMethod struct {
	ID                 string           `json:"id"`
	Type               string           `json:"type"`
	Controller         string           `json:"controller"`
	PublicKeyJwk       *jose.JSONWebKey `json:"publicKeyJwk,omitempty"`
	PublicKeyMultibase string           `json:"publicKeyMultibase,omitempty"`
	PublicKeyBase58    string           `json:"publicKeyBase58,omitempty"`
}

// PublicKey returns the method's key as ed25519.PublicKey, *ecdsa.PublicKey or *rsa.PublicKey.
func (vm *VerificationMethod) PublicKey() (crypto.PublicKey, error) {
	switch {
	case vm.PublicKeyJwk != nil:
		if !vm.PublicKeyJwk.IsPublic() {
			return nil, fmt.Errorf("%w: %s carries a private key", ErrNoKey, vm.ID)
		}
		switch k := vm.PublicKeyJwk.Key.(type) {
		case ed25519.PublicKey, *ecdsa.PublicKey, *rsa.PublicKey:
			return k, nil
		default:
			return nil, fmt.Errorf("%w: %s has unsupported key type %T", ErrNoKey, vm.ID, k)
		}
	case vm.PublicKeyMultibase != "":
		return decodeMultikey(vm.PublicKeyMultibase)
	case vm.PublicKeyBase58 != "":
		raw, err := decodeBase58(vm.PublicKeyBase58)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: %s has an invalid base58 key", ErrNoKey, vm.ID)
		}
		return ed25519.PublicKey(raw), nil
	}
	return nil, fmt.Errorf("%w: %s has no public key", ErrNoKey, vm.ID)
}

// Document is a DID document (DID Core §4), reduced to what verification needs.
// Relationship entries may be references (strings) or embedded methods.
type Document struct {
	Context            any                  `json:"@context,omitempty"`
	ID                 string               `json:"id"`
	Controller         any                  `json:"controller,omitempty"`
	VerificationMethod []VerificationMethod `json:"verificationMethod,omitempty"`
	Authentication     []json.RawMessage    `json:"authentication,omitempty"`
	AssertionMethod    []json.RawMessage    `json:"assertionMethod,omitempty"`
}

// ParseDocument strictly parses a DID document and checks that its id is
// expected (when expected is non-empty) and that every verification method
// belongs to it.
func ParseDocument(data []byte, expected string) (*Document, error) {
	var doc Document
	// Strict: a member twice (or in two letter cases, which encoding/json
	// would merge into one field) or nesting deeper than strictjson.MaxDepth
	// is refused, as everywhere untrusted JSON enters package credentials.
	if err := strictjson.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: invalid DID document: %v", ErrResolution, err)
	}
	if doc.ID == "" || !strings.HasPrefix(doc.ID, "did:") {
		return nil, fmt.Errorf("%w: DID document has no valid id", ErrResolution)
	}
	if expected != "" && doc.ID != expected {
		return nil, fmt.Errorf("%w: DID document id %q does not match %q", ErrResolution, doc.ID, expected)
	}
	for i := range doc.VerificationMethod {
		vm := &doc.VerificationMethod[i]
		vm.ID = absoluteID(doc.ID, vm.ID)
		if !strings.HasPrefix(vm.ID, doc.ID+"#") {
			return nil, fmt.Errorf("%w: verification method %q is outside the document", ErrResolution, vm.ID)
		}
	}
	for _, rel := range [][]json.RawMessage{doc.Authentication, doc.AssertionMethod} {
		for _, raw := range rel {
			if _, err := doc.relEntry(raw); err != nil {
				return nil, err
			}
		}
	}
	return &doc, nil
}

func absoluteID(docID, id string) string {
	if strings.HasPrefix(id, "#") {
		return docID + id
	}
	return id
}

func (d *Document) relEntry(raw json.RawMessage) (*VerificationMethod, error) {
	var ref string
	if err := json.Unmarshal(raw, &ref); err == nil {
		ref = absoluteID(d.ID, ref)
		for i := range d.VerificationMethod {
			if d.VerificationMethod[i].ID == ref {
				return &d.VerificationMethod[i], nil
			}
		}
		return nil, fmt.Errorf("%w: relationship references unknown method %q", ErrResolution, ref)
	}
	var vm VerificationMethod
	if err := json.Unmarshal(raw, &vm); err != nil {
		return nil, fmt.Errorf("%w: invalid embedded verification method: %v", ErrResolution, err)
	}
	vm.ID = absoluteID(d.ID, vm.ID)
	if !strings.HasPrefix(vm.ID, d.ID+"#") {
		return nil, fmt.Errorf("%w: verification method %q is outside the document", ErrResolution, vm.ID)
	}
	return &vm, nil
}

// Method returns the verification method with the given id (absolute DID URL
// or fragment) if the document lists it under rel.
func (d *Document) Method(id string, rel Relationship) (*VerificationMethod, error) {
	id = absoluteID(d.ID, id)
	var entries []json.RawMessage
	switch rel {
	case AssertionMethod:
		entries = d.AssertionMethod
	case Authentication:
		entries = d.Authentication
	default:
		return nil, fmt.Errorf("%w: unknown relationship %q", ErrNoKey, rel)
	}
	for _, raw := range entries {
		vm, err := d.relEntry(raw)
		if err != nil {
			return nil, err
		}
		if vm.ID == id {
			return vm, nil
		}
	}
	return nil, fmt.Errorf("%w: %s is not an %s of %s", ErrNoKey, id, rel, d.ID)
}

// Methods returns every verification method listed under rel.
func (d *Document) Methods(rel Relationship) []*VerificationMethod {
	var entries []json.RawMessage
	switch rel {
	case AssertionMethod:
		entries = d.AssertionMethod
	case Authentication:
		entries = d.Authentication
	}
	var out []*VerificationMethod
	for _, raw := range entries {
		if vm, err := d.relEntry(raw); err == nil {
			out = append(out, vm)
		}
	}
	return out
}

// Split separates a DID URL into the DID and its fragment (without '#').
func Split(didURL string) (string, string) {
	d, frag, _ := strings.Cut(didURL, "#")
	return d, frag
}

// MethodName returns the method of a DID ("key" for "did:key:z…"), or "".
func MethodName(d string) string {
	parts := strings.SplitN(d, ":", 3)
	if len(parts) < 3 || parts[0] != "did" {
		return ""
	}
	return parts[1]
}
