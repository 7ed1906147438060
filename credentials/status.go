package credentials

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
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
	if ok && now.Sub(e.fetchedAt) <= maxAge {
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

// fetch gets, verifies and decodes the list; issuer is the issuer of the
// credential that refers to it, the only DID the list may be issued by (and
// so the only one resolved while verifying it).
func (s *statusCache) fetch(ctx context.Context, ref StatusRef, issuer string) (*statusEntry, error) {
	cfg := s.c.cfg.StatusList
	body, err := did.Fetch(ctx, s.client, ref.ListURL, cfg.MaxCredentialBytes,
		"application/vc+ld+json, application/vc+jwt, application/vc, application/json")
	if err != nil {
		switch {
		case errors.Is(err, did.ErrTooLarge):
			return nil, fmt.Errorf("%w: %w: %v", ErrStatusListInvalid, statuslist.ErrTooLarge, err)
		case errors.Is(err, did.ErrPrivateAddress):
			return nil, fmt.Errorf("%w: %w", ErrStatusUnavailable, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrStatusUnavailable, err)
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
