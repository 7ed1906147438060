package credentials

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/gxfs-conf/gxconf/credentials/did"
	"github.com/gxfs-conf/gxconf/credentials/statuslist"
)

// Checker verifies presentations and credentials against the configured
// trust registries. It holds no per-request state and is safe for concurrent
// use; it owns the DID cache and the status-list cache.
type Checker struct {
	cfg      Config
	log      zerolog.Logger
	now      func() time.Time
	resolver *did.Resolver
	status   *statusCache
}

// PresentationParams are the expectations a presentation is checked against.
type PresentationParams struct {
	// Nonce is the request's nonce (VP challenge, JWT/KB-JWT nonce).
	Nonce string
	// Audience is the verifier's client_id (VP domain, JWT aud).
	Audience string
	// AltAudience, if not empty, is the same client identifier spelled as
	// the other OID4VP generation spells it (1.0's
	// "decentralized_identifier:did:…" and the drafts' bare DID); a
	// presentation may name either.
	AltAudience string
	// Level selects holder-binding and status-freshness requirements.
	Level Level
	// Homeserver is the presenting user's server name: only federations
	// whose homeserver_domains list it (or list none) vouch for their
	// credentials. Empty: no federation is restricted (tests of the
	// checker alone).
	Homeserver string
}

// audience tells whether aud names this verifier (Audience or AltAudience).
func (p PresentationParams) audience(aud string) bool {
	return aud == p.Audience || (p.AltAudience != "" && aud == p.AltAudience)
}

// VerifiedPresentation is the outcome of a successful verification.
type VerifiedPresentation struct {
	Format string
	// Holder is the DID (or did:jwk) that signed the presentation.
	Holder      string
	Credentials []VerifiedCredential
}

// NewChecker builds a checker from a validated configuration.
func NewChecker(cfg Config, log zerolog.Logger, opts ...Option) (*Checker, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	return newChecker(cfg, log, o), nil
}

func newChecker(cfg Config, log zerolog.Logger, o *options) *Checker {
	d := cfg.DIDResolution
	c := &Checker{
		cfg: cfg,
		log: log,
		now: o.now,
		resolver: did.NewResolver(did.Options{
			Timeout:               d.Timeout,
			MaxDocumentBytes:      d.MaxDocumentBytes,
			CacheTTL:              d.CacheTTL,
			AllowPrivateAddresses: d.AllowPrivateAddressesForTesting,
			RootCAs:               o.rootCAs,
		}),
	}
	c.status = newStatusCache(c, did.NewGuardedClient(cfg.StatusList.FetchTimeout, d.AllowPrivateAddressesForTesting, o.rootCAs))
	return c
}

// resolveKey resolves a DID URL for the given relationship, mapping failures
// to the package's sentinels.
func (c *Checker) resolveKey(ctx context.Context, didURL string, rel did.Relationship) (*did.VerificationMethod, crypto.PublicKey, error) {
	vm, key, err := c.resolver.ResolveKey(ctx, didURL, rel)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrDIDResolution, err)
	}
	return vm, key, nil
}

// VerifyPresentation verifies a vp_token (ldp_vp JSON, jwt_vp_json JWT,
// SD-JWT VC with key binding, or a JSON array of these) completely: proofs,
// nonce and audience, issuer trust, holder binding, validity and status.
func (c *Checker) VerifyPresentation(ctx context.Context, vpToken []byte, p PresentationParams) (*VerifiedPresentation, error) {
	return c.verifyPresentation(ctx, vpToken, p, true)
}

func (c *Checker) verifyPresentation(ctx context.Context, vpToken []byte, p PresentationParams, allowList bool) (*VerifiedPresentation, error) {
	if len(vpToken) > c.cfg.MaxInputBytes {
		return nil, fmt.Errorf("%w: vp_token has %d bytes, limit %d", ErrTooLarge, len(vpToken), c.cfg.MaxInputBytes)
	}
	tok := bytes.TrimSpace(vpToken)
	if len(tok) == 0 {
		return nil, fmt.Errorf("%w: empty vp_token", ErrMalformed)
	}
	if tok[0] == '[' {
		if !allowList {
			return nil, fmt.Errorf("%w: nested vp_token arrays", ErrMalformed)
		}
		v, err := decodeJSON(tok)
		if err != nil {
			return nil, fmt.Errorf("vp_token array: %w", err)
		}
		list, _ := v.([]any)
		if len(list) == 0 || len(list) > 8 {
			return nil, fmt.Errorf("%w: vp_token array", ErrMalformed)
		}
		out := &VerifiedPresentation{Format: "multiple"}
		for _, e := range list {
			var one []byte
			if s, ok := e.(string); ok {
				one = []byte(s)
			} else if one, err = json.Marshal(e); err != nil {
				return nil, fmt.Errorf("%w: vp_token array: %v", ErrMalformed, err)
			}
			vp, err := c.verifyPresentation(ctx, one, p, false)
			if err != nil {
				return nil, err
			}
			if out.Holder == "" {
				out.Holder = vp.Holder
			} else if out.Holder != vp.Holder {
				return nil, fmt.Errorf("%w: presentations by different holders", ErrHolderBinding)
			}
			out.Credentials = append(out.Credentials, vp.Credentials...)
		}
		return out, nil
	}

	var (
		vp  *VerifiedPresentation
		err error
	)
	switch {
	case tok[0] == '{':
		vp, err = c.verifyLDPPresentation(ctx, tok, p)
	case bytes.IndexByte(tok, '~') >= 0:
		vp, err = c.verifySDJWTPresentation(ctx, string(tok), p)
	case bytes.Count(tok, []byte{'.'}) == 2:
		vp, err = c.verifyJWTPresentation(ctx, string(tok), p)
	default:
		return nil, fmt.Errorf("%w: vp_token is neither JSON, JWT nor SD-JWT", ErrUnsupportedFormat)
	}
	if err != nil {
		return nil, err
	}
	if len(vp.Credentials) == 0 {
		return nil, ErrNoCredential
	}
	if err := c.finish(ctx, vp, p); err != nil {
		return nil, err
	}
	return vp, nil
}

// finish applies trust (including trust-anchor chains), holder-binding
// requirements and status checks to every credential, in that order, and
// drops the supporting participant credentials from the result.
func (c *Checker) finish(ctx context.Context, vp *VerifiedPresentation, p PresentationParams) error {
	now := c.now()
	lvl := c.cfg.level(p.Level)
	// Chain: anchor-issued participant credentials make their subjects trusted issuers.
	chained := map[string][]chainGrant{}
	var primary []int
	for i := range vp.Credentials {
		vc := &vp.Credentials[i]
		if g, ok := c.anchorGrant(vc); ok {
			if err := checkValidity(vc.ValidFrom, vc.ValidUntil, now); err != nil {
				return fmt.Errorf("participant credential of %s: %w", vc.Subject, err)
			}
			if err := c.status.check(ctx, vc, g.profile, lvl.StatusMaxAge); err != nil {
				return fmt.Errorf("participant credential of %s: %w", vc.Subject, err)
			}
			chained[vc.Subject] = append(chained[vc.Subject], g)
			continue
		}
		primary = append(primary, i)
	}
	var out []VerifiedCredential
	for _, i := range primary {
		vc := vp.Credentials[i]
		profile, err := c.trust(&vc, chained, p.Homeserver)
		if err != nil {
			return err
		}
		if err := checkValidity(vc.ValidFrom, vc.ValidUntil, now); err != nil {
			return err
		}
		if vc.Subject != "" && !vc.HolderBound {
			return fmt.Errorf("%w: credential subject %s is not the presenter %s", ErrHolderBinding, vc.Subject, vp.Holder)
		}
		if lvl.HolderBinding && !vc.HolderBound {
			return fmt.Errorf("%w: level %s requires the credential subject to be the presenter", ErrHolderBinding, p.Level)
		}
		for j := range vc.Status {
			vc.Status[j].Profile = profile
		}
		if err := c.status.check(ctx, &vc, profile, lvl.StatusMaxAge); err != nil {
			return err
		}
		out = append(out, vc)
	}
	if len(out) == 0 {
		return ErrNoCredential
	}
	vp.Credentials = out
	return nil
}

type chainGrant struct {
	federation string
	types      []string
	profile    string
}

// anchorGrant reports whether vc is a participant credential issued by a
// configured trust anchor to a DID subject.
func (c *Checker) anchorGrant(vc *VerifiedCredential) (chainGrant, bool) {
	for _, f := range c.cfg.Federations {
		for _, a := range f.TrustAnchors {
			if vc.Issuer == a.DID && slices.Contains(vc.Types, a.ParticipantType) && vc.Subject != "" && vc.Subject != vc.Issuer {
				return chainGrant{federation: f.ID, types: a.Types, profile: profileOr(a.StatusProfile)}, true
			}
		}
	}
	return chainGrant{}, false
}

func profileOr(p string) string {
	if p == "" {
		return string(statuslist.ProfileW3C)
	}
	return p
}

// trust finds the federation that trusts vc's issuer for one of its types
// and sets vc.Federation; it returns the issuer's status profile. The most
// precise refusal wins: format, algorithm, DID method, then issuer/type.
func (c *Checker) trust(vc *VerifiedCredential, chained map[string][]chainGrant, homeserver string) (string, error) {
	issuerKnown := false
	var lastErr, notCovered error
	for _, f := range c.cfg.Federations {
		if homeserver != "" && !f.covers(homeserver) {
			// The federation does not speak for this user's homeserver: its
			// issuers' credentials mean nothing for them here.
			if c.issuerIn(f, vc.Issuer, chained) {
				notCovered = fmt.Errorf("%w: %s is trusted in federation %s, which does not cover homeserver %s", ErrHomeserverNotCovered, vc.Issuer, f.ID, homeserver)
			}
			continue
		}
		if len(f.Formats) > 0 && !slices.Contains(f.Formats, vc.Format) {
			lastErr = fmt.Errorf("%w: %s in federation %s", ErrFormatNotAccepted, vc.Format, f.ID)
			continue
		}
		if len(f.Algs) > 0 && !slices.Contains(f.Algs, vc.Alg) {
			lastErr = fmt.Errorf("%w: %s in federation %s", ErrAlgNotAllowed, vc.Alg, f.ID)
			continue
		}
		if len(f.DIDMethods) > 0 && !slices.Contains(f.DIDMethods, did.MethodName(vc.Issuer)) {
			lastErr = fmt.Errorf("%w: %s in federation %s", ErrDIDMethodNotAccepted, did.MethodName(vc.Issuer), f.ID)
			continue
		}
		for _, ti := range f.TrustedIssuers {
			if ti.DID != vc.Issuer {
				continue
			}
			issuerKnown = true
			if typesIntersect(ti.Types, vc.Types) {
				vc.Federation = f.ID
				return profileOr(ti.StatusProfile), nil
			}
		}
		for _, g := range chained[vc.Issuer] {
			if g.federation != f.ID {
				continue
			}
			issuerKnown = true
			if typesIntersect(g.types, vc.Types) {
				vc.Federation = f.ID
				return g.profile, nil
			}
		}
	}
	switch {
	case issuerKnown:
		return "", fmt.Errorf("%w: %s is not trusted for %v", ErrIssuerNotTrustedType, vc.Issuer, vc.Types)
	case notCovered != nil:
		return "", notCovered
	case lastErr != nil && len(c.cfg.Federations) == 1:
		return "", lastErr
	}
	return "", fmt.Errorf("%w: %s", ErrUntrustedIssuer, vc.Issuer)
}

// issuerIn tells whether federation f trusts issuer at all (statically or
// through one of its anchors).
func (c *Checker) issuerIn(f FederationConfig, issuer string, chained map[string][]chainGrant) bool {
	if slices.ContainsFunc(f.TrustedIssuers, func(ti TrustedIssuer) bool { return ti.DID == issuer }) {
		return true
	}
	return slices.ContainsFunc(chained[issuer], func(g chainGrant) bool { return g.federation == f.ID })
}

func typesIntersect(trusted, have []string) bool {
	for _, t := range have {
		if t != "VerifiableCredential" && slices.Contains(trusted, t) {
			return true
		}
	}
	return false
}
