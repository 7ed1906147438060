package credentials

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/gxfs-conf/gxconf/credentials/did"
)

// verifyLDPPresentation verifies an ldp_vp: the holder's proof
// (authentication, challenge = nonce, domain = audience) and each embedded
// credential (VC DM 1.1 §4.10, Data Integrity §2.1).
func (c *Checker) verifyLDPPresentation(ctx context.Context, raw []byte, p PresentationParams) (*VerifiedPresentation, error) {
	m, err := decodeJSONObject(raw)
	if err != nil {
		return nil, err
	}
	ctxs, err := contextList(m["@context"])
	if err != nil {
		return nil, err
	}
	if len(ctxs) == 0 {
		return nil, fmt.Errorf("%w: empty @context", ErrMalformed)
	}
	if first, _ := ctxs[0].(string); first != ContextCredentialsV1 && first != ContextCredentialsV2 {
		return nil, fmt.Errorf("%w: first @context must be the VC context", ErrMalformed)
	}
	types, err := stringOrList(m["type"])
	if err != nil || !slices.Contains(types, "VerifiablePresentation") {
		return nil, fmt.Errorf("%w: type must include VerifiablePresentation", ErrMalformed)
	}
	if _, ok := m["proof"]; !ok {
		return nil, fmt.Errorf("%w: presentation has no proof", ErrHolderBinding)
	}
	// The embedded credentials are checked one by one below.
	unsigned := make(map[string]any, len(m))
	for k, v := range m {
		if k != "proof" && k != "verifiableCredential" {
			unsigned[k] = v
		}
	}
	if err := checkCompactForm(unsigned); err != nil {
		return nil, fmt.Errorf("presentation: %w", err)
	}
	// Pre-scan contexts of the whole presentation so an unknown context is
	// reported as such rather than as a signature failure.
	if err := checkContexts(m, 0); err != nil {
		return nil, err
	}
	// A stated holder must own the proof key; checked before resolving it.
	stated := ""
	switch h := m["holder"].(type) {
	case string:
		stated = h
	case map[string]any:
		stated, _ = h["id"].(string)
	}
	proof, holder, err := c.verifyLDProof(ctx, m, did.Authentication, stated, nil)
	if err != nil {
		return nil, fmt.Errorf("presentation proof: %w", err)
	}
	if proof.Challenge != p.Nonce {
		return nil, fmt.Errorf("%w: presentation challenge does not match", ErrWrongNonce)
	}
	if !p.audience(proof.Domain) {
		return nil, fmt.Errorf("%w: presentation domain %q", ErrWrongAudience, proof.Domain)
	}
	if h, ok := m["holder"]; ok {
		hs, _ := h.(string)
		if hm, isMap := h.(map[string]any); isMap {
			hs, _ = hm["id"].(string)
		}
		if hs != holder {
			return nil, fmt.Errorf("%w: holder %q did not sign the presentation", ErrHolderBinding, hs)
		}
	}
	creds, err := c.verifyEmbeddedCredentials(ctx, m["verifiableCredential"], holder)
	if err != nil {
		return nil, err
	}
	return &VerifiedPresentation{Format: FormatLDPVP, Holder: holder, Credentials: creds}, nil
}

// verifyLDPCredential verifies an ldp_vc's issuer proof (assertionMethod).
// mayContact, when not nil, is asked before the issuer's DID is resolved.
func (c *Checker) verifyLDPCredential(ctx context.Context, m map[string]any, mayContact func(issuer string) error) (*VerifiedCredential, error) {
	unsigned := make(map[string]any, len(m))
	for k, v := range m {
		if k != "proof" {
			unsigned[k] = v
		}
	}
	// Only the compacted form is read (see ldpform.go): what
	// parseW3CCredential reads below is then what the proof covers.
	if err := checkCompactForm(unsigned); err != nil {
		return nil, err
	}
	w, err := parseW3CCredential(m, true)
	if err != nil {
		return nil, err
	}
	if _, ok := m["proof"]; !ok {
		return nil, fmt.Errorf("%w: credential has no proof", ErrBadSignature)
	}
	if mayContact != nil {
		if err := mayContact(w.Issuer); err != nil {
			return nil, err
		}
	}
	proof, controller, err := c.verifyLDProof(ctx, m, did.AssertionMethod, w.Issuer, nil)
	if err != nil {
		return nil, fmt.Errorf("credential proof: %w", err)
	}
	if controller != w.Issuer {
		return nil, fmt.Errorf("%w: proof key %s does not belong to issuer %s", ErrBadSignature, proof.VerificationMethod, w.Issuer)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	claims := make(map[string]any, len(w.Subject))
	for k, v := range w.Subject {
		if k != "id" {
			claims[k] = v
		}
	}
	return &VerifiedCredential{
		Format:     FormatLDPVC,
		ID:         w.ID,
		Issuer:     w.Issuer,
		Types:      w.Types,
		Subject:    w.SubjectID,
		Claims:     claims,
		ValidFrom:  w.ValidFrom,
		ValidUntil: w.ValidUntil,
		Status:     w.Status,
		Hash:       credentialHash(raw),
		Alg:        proof.Alg,
	}, nil
}
