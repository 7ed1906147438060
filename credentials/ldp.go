package credentials

import (
	"context"
	"crypto"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/piprate/json-gold/ld"

	"github.com/gxfs-conf/gxconf/credentials/did"
	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// Pinned JSON-LD contexts. They are never fetched at run time: a document
// naming any other context URL is refused (ErrUnknownContext).
//
//go:embed contexts/*.jsonld
var contextFS embed.FS

var pinnedContexts = map[string]string{
	ContextCredentialsV1: "contexts/credentials-v1.jsonld",
	ContextCredentialsV2: "contexts/credentials-v2.jsonld",
	"https://www.w3.org/ns/credentials/undefined-terms/v2": "contexts/credentials-undefined-terms-v2.jsonld",
	"https://w3id.org/security/suites/ed25519-2020/v1":     "contexts/ed25519-signature-2020-v1.jsonld",
	"https://w3id.org/security/data-integrity/v2":          "contexts/data-integrity-v2.jsonld",
	"https://w3id.org/security/suites/jws-2020/v1":         "contexts/jws-2020-v1.jsonld",
	"https://w3id.org/vc/status-list/2021/v1":              "contexts/status-list-2021-v1.jsonld",
	"https://www.w3.org/ns/credentials/status/v1":          "contexts/bitstring-status-list-v1.jsonld",
}

// PinnedContextURLs lists the JSON-LD context URLs gxconf accepts.
func PinnedContextURLs() []string {
	out := make([]string, 0, len(pinnedContexts))
	for u := range pinnedContexts {
		out = append(out, u)
	}
	return out
}

// pinnedLoader serves the embedded contexts and refuses everything else.
type pinnedLoader struct{}

func (pinnedLoader) LoadDocument(u string) (*ld.RemoteDocument, error) {
	file, ok := pinnedContexts[u]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownContext, u)
	}
	data, err := contextFS.ReadFile(file)
	if err != nil {
		return nil, err
	}
	// Parsed per load so no two documents ever share mutable context maps.
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	return &ld.RemoteDocument{DocumentURL: u, Document: doc}, nil
}

// checkContexts walks a document and refuses any @context URL that is not
// pinned, before JSON-LD processing starts.
func checkContexts(v any, depth int) error {
	if depth > strictjson.MaxDepth {
		return fmt.Errorf("%w: document nesting too deep", ErrMalformed)
	}
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if k == "@context" {
				if err := checkContextValue(e); err != nil {
					return err
				}
				continue
			}
			if err := checkContexts(e, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range t {
			if err := checkContexts(e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkContextValue(v any) error {
	switch c := v.(type) {
	case string:
		if _, ok := pinnedContexts[c]; !ok {
			return fmt.Errorf("%w: %s", ErrUnknownContext, c)
		}
	case []any:
		for _, e := range c {
			if err := checkContextValue(e); err != nil {
				return err
			}
		}
	case map[string]any:
		// Inline contexts are fine; a nested @import must still be pinned.
		if imp, ok := c["@import"]; ok {
			if err := checkContextValue(imp); err != nil {
				return err
			}
		}
		return checkContexts(c, 1)
	case nil:
	default:
		return fmt.Errorf("%w: invalid @context entry", ErrMalformed)
	}
	return nil
}

// canonicalize returns the URDNA2015 N-Quads of doc using only pinned
// contexts, in safe mode: properties that do not expand to an IRI are an
// error rather than silently dropped (they would otherwise be unsigned).
func canonicalize(doc map[string]any) (string, error) {
	if err := checkContexts(doc, 0); err != nil {
		return "", err
	}
	opts := ld.NewJsonLdOptions("")
	opts.DocumentLoader = pinnedLoader{}
	opts.SafeMode = true
	opts.ProcessingMode = ld.JsonLd_1_1
	opts.Format = ""
	proc := ld.NewJsonLdProcessor()
	ds, err := proc.ToRDF(presentationGraphs(doc), opts)
	if err != nil {
		if errors.Is(err, ErrUnknownContext) {
			return "", err
		}
		return "", fmt.Errorf("%w: JSON-LD: %v", ErrMalformed, err)
	}
	dataset, ok := ds.(*ld.RDFDataset)
	if !ok {
		return "", fmt.Errorf("%w: JSON-LD produced no dataset", ErrMalformed)
	}
	nopts := ld.NewJsonLdOptions("")
	nopts.Algorithm = ld.AlgorithmURDNA2015
	nopts.Format = "application/n-quads"
	out, err := ld.NewJsonLdApi().Normalize(dataset, nopts)
	if err != nil {
		return "", fmt.Errorf("%w: URDNA2015: %v", ErrMalformed, err)
	}
	s, _ := out.(string)
	return s, nil
}

// presentationGraphs works around json-gold (v0.9.1, the newest) expanding
// a term with a @graph container and a scoped context of null: it looks the
// container up in the scoped context, which is empty, instead of the active
// context (the JSON-LD 1.1 expansion algorithm reads the term's container
// mapping from the active context, as jsonld.js does). Of the pinned contexts only the VC 2.0 one has such a
// term, a VerifiablePresentation's verifiableCredential; json-gold put the
// embedded credentials into the presentation's own graph where the
// specification, jsonld.js and so every signer put each into a graph of its
// own, and no VC 2.0 presentation's proof verified. For such a presentation
// this returns a copy whose credentials are already graph objects, which
// json-gold expands to what the container means. doc is not changed; the
// copy is only canonicalized, never read. If json-gold is fixed, the
// graphs nest one level deeper and TestCanonicalPresentationGraphs fails.
func presentationGraphs(doc map[string]any) map[string]any {
	vcs, ok := doc["verifiableCredential"]
	if !ok {
		return doc
	}
	ctxs, err := contextList(doc["@context"])
	if err != nil || len(ctxs) == 0 || ctxs[0] != ContextCredentialsV2 {
		return doc
	}
	if types, err := stringOrList(doc["type"]); err != nil || !slices.Contains(types, "VerifiablePresentation") {
		return doc
	}
	list, isList := vcs.([]any)
	if !isList {
		list = []any{vcs}
	}
	graphs := make([]any, len(list))
	for i, v := range list {
		if id, isRef := v.(string); isRef {
			v = map[string]any{"@id": id} // the container's @type @id
		}
		graphs[i] = map[string]any{"@graph": v}
	}
	out := make(map[string]any, len(doc))
	for k, v := range doc {
		out[k] = v
	}
	out["verifiableCredential"] = graphs
	return out
}

// sameContexts tells whether two @context values name the same contexts in
// the same order (a string and a list of that one string do).
func sameContexts(a, b any) bool {
	la, errA := contextList(a)
	lb, errB := contextList(b)
	return errA == nil && errB == nil && reflect.DeepEqual(la, lb)
}

// ldProof is a Linked Data proof (ldpsuite.go lists the proof types).
type ldProof struct {
	raw                map[string]any
	Type               string
	ProofPurpose       string
	VerificationMethod string
	Challenge          string
	Domain             string
	Created            time.Time
	Expires            time.Time
	// Cryptosuite is a DataIntegrityProof's.
	Cryptosuite string
	// Alg is the JWS algorithm the proof used (EdDSA for Ed25519Signature2020).
	Alg string
}

func parseLDProof(v any) (*ldProof, error) {
	m, ok := v.(map[string]any)
	if !ok {
		if list, isList := v.([]any); isList && len(list) == 1 {
			m, ok = list[0].(map[string]any)
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: exactly one proof object is required", ErrMalformed)
	}
	p := &ldProof{raw: m}
	p.Type, _ = m["type"].(string)
	p.ProofPurpose, _ = m["proofPurpose"].(string)
	p.VerificationMethod, _ = m["verificationMethod"].(string)
	p.Challenge, _ = m["challenge"].(string)
	p.Cryptosuite, _ = m["cryptosuite"].(string)
	switch d := m["domain"].(type) {
	case string:
		p.Domain = d
	case []any:
		if len(d) == 1 {
			p.Domain, _ = d[0].(string)
		}
	}
	if p.VerificationMethod == "" || p.ProofPurpose == "" {
		return nil, fmt.Errorf("%w: proof lacks verificationMethod or proofPurpose", ErrMalformed)
	}
	var err error
	if c, ok := m["created"]; ok {
		if p.Created, err = parseTime("proof.created", c); err != nil {
			return nil, err
		}
	}
	if e, ok := m["expires"]; ok {
		if p.Expires, err = parseTime("proof.expires", e); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// verifyLDProof verifies the proof on doc (VC or VP) and returns the verified
// proof and the controller DID of its key. rel is assertionMethod for
// credentials and authentication for presentations. algs restricts the JWS
// algorithms (nil = any supported).
// signer, when not empty, is the DID the key must belong to; it is checked
// before the key is resolved, so no other DID's document is fetched.
func (c *Checker) verifyLDProof(ctx context.Context, doc map[string]any, rel did.Relationship, signer string, allowed func(alg string) error) (*ldProof, string, error) {
	proof, err := parseLDProof(doc["proof"])
	if err != nil {
		return nil, "", err
	}
	// An unsupported proof is refused before its key is resolved.
	suite, err := proofSuiteOf(proof)
	if err != nil {
		return nil, "", err
	}
	if proof.ProofPurpose != string(rel) {
		return nil, "", fmt.Errorf("%w: proofPurpose %q, want %q", ErrBadSignature, proof.ProofPurpose, rel)
	}
	// Data Integrity §2.1 "expires": a proof past its expiry is not a proof.
	if !proof.Expires.IsZero() && !c.now().Add(-validitySkew).Before(proof.Expires) {
		return nil, "", fmt.Errorf("%w: proof expired at %s", ErrExpired, proof.Expires.UTC().Format(time.RFC3339))
	}
	if signer != "" {
		if d, _ := did.Split(proof.VerificationMethod); d != signer {
			return nil, "", fmt.Errorf("%w: proof key %s does not belong to %s", ErrBadSignature, proof.VerificationMethod, signer)
		}
	}
	vm, key, err := c.resolveKey(ctx, proof.VerificationMethod, rel)
	if err != nil {
		return nil, "", err
	}

	// Verification data: H(c14n(proof options)) || H(c14n(document)), H
	// SHA-256 but for ecdsa-rdfc-2019 on P-384 (VC Data Integrity EdDSA
	// Cryptosuites §3.1 "Ed25519Signature2020" and §3.3 "eddsa-rdfc-2022",
	// ECDSA Cryptosuites §3.3 "ecdsa-rdfc-2019", Linked Data Proofs
	// Ed25519Signature2018 and JsonWebSignature2020 §"Create Verify Data").
	unsigned := make(map[string]any, len(doc))
	for k, v := range doc {
		if k != "proof" {
			unsigned[k] = v
		}
	}
	opts := make(map[string]any, len(proof.raw)+1)
	for k, v := range proof.raw {
		if k != "proofValue" && k != "jws" && k != "signatureValue" {
			opts[k] = v
		}
	}
	opts["@context"] = doc["@context"]
	if pc, has := proof.raw["@context"]; has {
		// Data Integrity's verification lets a proof name the contexts the
		// document was signed under, as a prefix of the document's own. What gxconf
		// reads is the document under all of its contexts, so only the
		// whole list is accepted.
		if proof.Type == "DataIntegrityProof" && !sameContexts(pc, doc["@context"]) {
			return nil, "", fmt.Errorf("%w: the proof's @context differs from the document's", ErrMalformed)
		}
		opts["@context"] = pc
	}
	// The proof options are read from JSON too (purpose, method, challenge,
	// domain, expires): they must be in compacted form like the document.
	if err := checkCompactForm(opts); err != nil {
		return nil, "", fmt.Errorf("proof options: %w", err)
	}
	optsC14n, err := canonicalize(opts)
	if err != nil {
		return nil, "", err
	}
	docC14n, err := canonicalize(unsigned)
	if err != nil {
		return nil, "", err
	}
	if proof.Alg, err = suite.verify(proof, vm.ID, key, optsC14n, docC14n, allowed); err != nil {
		return nil, "", err
	}
	controller, _ := did.Split(vm.ID)
	return proof, controller, nil
}

// verifyDetachedJWS checks the detached JWS of an Ed25519Signature2018 or
// JsonWebSignature2020 proof, with an
// unencoded payload (RFC 7797: b64=false, crit=["b64"]).
func verifyDetachedJWS(jws string, key crypto.PublicKey, payload []byte, allowed func(string) error) (string, error) {
	parts := strings.Split(jws, ".")
	if len(parts) != 3 || parts[1] != "" {
		return "", fmt.Errorf("%w: jws must be a detached compact JWS", ErrBadSignature)
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", fmt.Errorf("%w: jws header: %v", ErrMalformed, err)
	}
	h, err := parseJWSHeader(hb)
	if err != nil {
		return "", err
	}
	if err := checkAlgName(h.Alg); err != nil {
		return "", err
	}
	if allowed != nil {
		if err := allowed(h.Alg); err != nil {
			return "", err
		}
	}
	if h.B64 == nil || *h.B64 || len(h.Crit) != 1 || h.Crit[0] != "b64" {
		return "", fmt.Errorf("%w: a detached JWS proof requires b64=false and crit=[b64]", ErrBadSignature)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", fmt.Errorf("%w: jws signature: %v", ErrMalformed, err)
	}
	input := append([]byte(parts[0]+"."), payload...)
	return h.Alg, verifyJWSSignature(h.Alg, key, input, sig)
}
