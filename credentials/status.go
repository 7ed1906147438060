package credentials

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gxfs-conf/gxconf/credentials/did"
	"github.com/gxfs-conf/gxconf/credentials/statuslist"
)

// statusCache fetches, verifies, decodes and caches status-list credentials.
// An entry is reused while younger than the level's maximum age.
type statusCache struct {
	c      *Checker
	client *http.Client

	mu      sync.Mutex
	entries map[statusKey]*statusEntry
}

type statusKey struct {
	url     string
	profile string
	size    int
}

type statusEntry struct {
	bits      *statuslist.Bitstring
	issuer    string
	purpose   string
	fetchedAt time.Time
	// ttl, if not zero, is how long the list may be used (a Token Status
	// List's ttl); the level's maximum age still applies.
	ttl time.Duration
	// expires, if not zero, is the list's own end of validity.
	expires time.Time
}

func newStatusCache(c *Checker, client *http.Client) *statusCache {
	return &statusCache{c: c, client: client, entries: map[statusKey]*statusEntry{}}
}

// check verifies every status entry of vc against its list; profile is the
// issuer's status profile. Any set bit refuses the credential.
func (s *statusCache) check(ctx context.Context, vc *VerifiedCredential, profile string, maxAge time.Duration) error {
	for _, ref := range vc.Status {
		if ref.Profile == "" {
			ref.Profile = profileOr(profile)
		}
		e, err := s.get(ctx, ref, vc.Issuer, maxAge)
		if err != nil {
			return err
		}
		if e.issuer != vc.Issuer {
			return fmt.Errorf("%w: list issued by %s, credential by %s", ErrStatusListInvalid, e.issuer, vc.Issuer)
		}
		if e.purpose != ref.Purpose {
			return fmt.Errorf("%w: list purpose %q, entry purpose %q", ErrStatusListInvalid, e.purpose, ref.Purpose)
		}
		v, err := e.bits.Status(ref.Index)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrStatusListInvalid, err)
		}
		if v != 0 && ref.Type == TokenStatusList {
			return fmt.Errorf("%w: status %d (%s) at index %d of %s", ErrRevoked, v, tokenStatusName(v), ref.Index, ref.ListURL)
		}
		if v != 0 {
			return fmt.Errorf("%w: %s at index %d of %s", ErrRevoked, ref.Purpose, ref.Index, ref.ListURL)
		}
	}
	return nil
}

func (s *statusCache) get(ctx context.Context, ref StatusRef, issuer string, maxAge time.Duration) (*statusEntry, error) {
	key := statusKey{url: ref.ListURL, profile: ref.Profile, size: ref.Size}
	now := s.c.now()
	s.mu.Lock()
	e, ok := s.entries[key]
	s.mu.Unlock()
	if ok && now.Sub(e.fetchedAt) <= maxAge && (e.ttl == 0 || now.Sub(e.fetchedAt) <= e.ttl) &&
		(e.expires.IsZero() || now.Before(e.expires)) {
		return e, nil
	}
	e, err := s.fetch(ctx, ref, issuer)
	if err != nil {
		return nil, err
	}
	e.fetchedAt = now
	s.mu.Lock()
	if len(s.entries) > 4096 {
		clear(s.entries)
	}
	s.entries[key] = e
	s.mu.Unlock()
	return e, nil
}

// listErr reports a problem with a status list as one: the inner reason (an
// expired list, a bad signature, a malformed document) is detail only, so
// that ReasonCode says status_list_invalid and not, for example, "expired",
// which would blame the user's credential.
func listErr(err error) error {
	if errors.Is(err, statuslist.ErrTooLarge) {
		return fmt.Errorf("%w: %w: %v", ErrStatusListInvalid, statuslist.ErrTooLarge, err)
	}
	return fmt.Errorf("%w: %v", ErrStatusListInvalid, err)
}

// fetchBody gets a status list's document: an oversized one is an invalid
// list, one that cannot be fetched (or only from a private address) an
// unavailable one.
func (s *statusCache) fetchBody(ctx context.Context, u, accept string) ([]byte, error) {
	body, err := did.Fetch(ctx, s.client, u, s.c.cfg.StatusList.MaxCredentialBytes, accept)
	if err != nil {
		switch {
		case errors.Is(err, did.ErrTooLarge):
			return nil, fmt.Errorf("%w: %w: %v", ErrStatusListInvalid, statuslist.ErrTooLarge, err)
		case errors.Is(err, did.ErrPrivateAddress):
			return nil, fmt.Errorf("%w: %w", ErrStatusUnavailable, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrStatusUnavailable, err)
	}
	return body, nil
}

// fetch gets, verifies and decodes the list; issuer is the issuer of the
// credential that refers to it, the only DID the list may be issued by (and
// so the only one resolved while verifying it).
func (s *statusCache) fetch(ctx context.Context, ref StatusRef, issuer string) (*statusEntry, error) {
	if ref.Type == TokenStatusList {
		return s.fetchToken(ctx, ref, issuer)
	}
	cfg := s.c.cfg.StatusList
	body, err := s.fetchBody(ctx, ref.ListURL, "application/vc+ld+json, application/vc+jwt, application/vc, application/json")
	if err != nil {
		return nil, err
	}
	sameIssuer := func(iss string) error {
		if iss != issuer {
			return fmt.Errorf("list issued by %s, credential by %s", iss, issuer)
		}
		return nil
	}
	body = bytes.TrimSpace(body)
	var vc *VerifiedCredential
	if len(body) > 0 && body[0] == '{' {
		m, err := decodeJSONObject(body)
		if err != nil {
			return nil, listErr(err)
		}
		if vc, err = s.c.verifyLDPCredential(ctx, m, sameIssuer); err != nil {
			return nil, listErr(err)
		}
	} else if vc, err = s.c.verifyJWTCredential(ctx, string(body), sameIssuer); err != nil {
		return nil, listErr(err)
	}
	subject := vc.Claims
	if !slices.Contains(vc.Types, "BitstringStatusListCredential") && !slices.Contains(vc.Types, "StatusList2021Credential") {
		return nil, fmt.Errorf("%w: %v is not a status list credential", ErrStatusListInvalid, vc.Types)
	}
	if err := checkValidity(vc.ValidFrom, vc.ValidUntil, s.c.now()); err != nil {
		return nil, listErr(fmt.Errorf("status list credential: %w", err))
	}
	typ, _ := subject["type"].(string)
	if typ != "BitstringStatusList" && typ != "StatusList2021" {
		return nil, fmt.Errorf("%w: credentialSubject.type %q", ErrStatusListInvalid, typ)
	}
	purpose, _ := subject["statusPurpose"].(string)
	encoded, _ := subject["encodedList"].(string)
	bits, err := statuslist.Decode(encoded, statuslist.Profile(ref.Profile), ref.Size, statuslist.Limits{
		MaxEncoded: int(cfg.MaxCredentialBytes), MaxDecompressed: cfg.MaxDecompressedBytes,
	})
	if err != nil {
		return nil, listErr(err)
	}
	return &statusEntry{bits: bits, issuer: vc.Issuer, purpose: purpose}, nil
}

// TokenStatusList is the StatusRef type of an SD-JWT VC's status claim
// (IETF Token Status List, draft-ietf-oauth-status-list).
const TokenStatusList = "TokenStatusList"

// tokenStatusRef reads an SD-JWT VC's status claim: {"status_list": {"idx":
// N, "uri": "https://…"}}. Any other status mechanism, alone or beside it,
// is refused: a revocation gxconf cannot check is not assumed absent.
func tokenStatusRef(v any) (StatusRef, error) {
	st, ok := v.(map[string]any)
	sl, hasList := st["status_list"].(map[string]any)
	if !ok || !hasList || len(st) != 1 {
		return StatusRef{}, fmt.Errorf("%w: status must hold exactly one status_list (IETF Token Status List)", ErrStatusUnavailable)
	}
	idx, isNum := sl["idx"].(float64)
	uri, _ := sl["uri"].(string)
	if !isNum || idx < 0 || idx != float64(int64(idx)) || idx > 1<<40 {
		return StatusRef{}, fmt.Errorf("%w: status_list.idx must be a non-negative integer", ErrMalformed)
	}
	if u, err := url.Parse(uri); err != nil || u.Scheme != "https" || u.Host == "" {
		return StatusRef{}, fmt.Errorf("%w: status_list.uri %q is not an https URL", ErrMalformed, uri)
	}
	return StatusRef{Type: TokenStatusList, ListURL: uri, Index: int(idx), Profile: string(statuslist.ProfileToken)}, nil
}

// fetchToken gets and verifies a Status List Token (JWT, typ
// statuslist+jwt): signed by the credential's issuer, sub the URI it was
// fetched from, iat present, not past exp; its list decoded under the same
// limits as W3C lists. Any value other than 0 (VALID) refuses the
// credential: 1 is INVALID, 2 SUSPENDED, the rest application-specific.
func (s *statusCache) fetchToken(ctx context.Context, ref StatusRef, issuer string) (*statusEntry, error) {
	cfg := s.c.cfg.StatusList
	body, err := s.fetchBody(ctx, ref.ListURL, "application/statuslist+jwt")
	if err != nil {
		return nil, err
	}
	j, err := parseCompactJWS(string(bytes.TrimSpace(body)))
	if err != nil {
		return nil, listErr(err)
	}
	if typ := strings.ToLower(j.Header.Typ); typ != "statuslist+jwt" && typ != "application/statuslist+jwt" {
		return nil, listErr(fmt.Errorf("status list token typ %q, want statuslist+jwt", j.Header.Typ))
	}
	if err := checkAlgName(j.Header.Alg); err != nil {
		return nil, listErr(err)
	}
	payload, err := decodeJSONObject(j.Payload)
	if err != nil {
		return nil, listErr(err)
	}
	if iss, has := payload["iss"]; has && iss != issuer {
		return nil, listErr(fmt.Errorf("list issued by %v, credential by %s", iss, issuer))
	}
	signer, key, err := s.c.jwtKey(ctx, j.Header, issuer, did.AssertionMethod)
	if err != nil {
		return nil, listErr(err)
	}
	if err := verifyJWSSignature(j.Header.Alg, key, j.SigningInput, j.Signature); err != nil {
		return nil, listErr(err)
	}
	if sub, _ := payload["sub"].(string); sub != ref.ListURL {
		return nil, listErr(fmt.Errorf("status list token sub %q, fetched from %s", sub, ref.ListURL))
	}
	now := s.c.now()
	iat, hasIat, err := numericDate(payload, "iat")
	if err != nil || !hasIat {
		return nil, listErr(fmt.Errorf("status list token without iat"))
	}
	exp, hasExp, err := numericDate(payload, "exp")
	if err != nil {
		return nil, listErr(err)
	}
	if err := checkValidity(iat, exp, now); err != nil {
		return nil, listErr(fmt.Errorf("status list token: %w", err))
	}
	var ttl time.Duration
	if v, has := payload["ttl"]; has {
		f, isNum := v.(float64)
		if !isNum || f <= 0 || f > 1e9 {
			return nil, listErr(fmt.Errorf("status list token ttl %v", v))
		}
		ttl = time.Duration(f) * time.Second
	}
	sl, _ := payload["status_list"].(map[string]any)
	bitsF, _ := sl["bits"].(float64)
	lst, _ := sl["lst"].(string)
	if bitsF != float64(int(bitsF)) {
		return nil, listErr(fmt.Errorf("status_list.bits %v", bitsF))
	}
	bits, err := statuslist.DecodeToken(lst, int(bitsF), statuslist.Limits{
		MaxEncoded: int(cfg.MaxCredentialBytes), MaxDecompressed: cfg.MaxDecompressedBytes,
	})
	if err != nil {
		return nil, listErr(err)
	}
	e := &statusEntry{bits: bits, issuer: signer, ttl: ttl}
	if hasExp {
		e.expires = exp
	}
	return e, nil
}

// tokenStatusName names a Token Status List value.
func tokenStatusName(v uint) string {
	switch v {
	case 1:
		return "invalid"
	case 2:
		return "suspended"
	}
	return "application-specific"
}
