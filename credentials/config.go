package credentials

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Config is the `credentials` section of gxconf's configuration. The caller
// decodes YAML strictly on top of [DefaultConfig] and calls [Config.Validate].
type Config struct {
	// Federations are the trust registries, one per federation.
	Federations []FederationConfig `yaml:"federations"`
	// OID4VP configures the verifier endpoints.
	OID4VP OID4VPConfig `yaml:"oid4vp"`
	// DIDResolution bounds did:web fetching (and status-list fetching).
	DIDResolution DIDResolutionConfig `yaml:"did_resolution"`
	// StatusList bounds status-list fetching and decoding.
	StatusList StatusListConfig `yaml:"status_list"`
	// Levels may tighten the built-in level defaults, never loosen them.
	Levels LevelsConfig `yaml:"levels"`
	// PolicyFile replaces the embedded default Rego policy when set.
	PolicyFile string `yaml:"policy_file"`
	// AtRestKey is a base64 (standard) 32-byte AES-256 key that encrypts
	// stored claims. Use the _FILE env override for it.
	AtRestKey string `yaml:"at_rest_key"`
	// MaxInputBytes bounds one wallet response (vp_token + submission).
	MaxInputBytes int `yaml:"max_input_bytes"`
	// RecheckInterval is how often stored attestations are re-checked.
	RecheckInterval time.Duration `yaml:"recheck_interval"`
	// RetainClaims lists claim paths (dot-separated, relative to
	// credentialSubject) kept in every attestation besides those a room's
	// policy names.
	RetainClaims []string `yaml:"retain_claims"`
}

// FederationConfig is the trust registry of one federation.
type FederationConfig struct {
	ID                string          `yaml:"id"`
	HomeserverDomains []string        `yaml:"homeserver_domains"`
	TrustedIssuers    []TrustedIssuer `yaml:"trusted_issuers"`
	// TrustAnchors make issuers trusted through a chain: an issuer is trusted
	// for Types if the presentation also carries a ParticipantType credential
	// issued by the anchor whose subject is that issuer.
	TrustAnchors []TrustAnchor `yaml:"trust_anchors"`
	Formats      []string      `yaml:"formats"`
	Algs         []string      `yaml:"algs"`
	DIDMethods   []string      `yaml:"did_methods"`
}

// covers tells whether the federation speaks for users of homeserver: it
// lists the homeserver, or lists none (every homeserver).
func (f FederationConfig) covers(homeserver string) bool {
	return len(f.HomeserverDomains) == 0 || slices.Contains(f.HomeserverDomains, homeserver)
}

// TrustedIssuer is a statically trusted issuer.
type TrustedIssuer struct {
	DID   string   `yaml:"did"`
	Types []string `yaml:"types"`
	// StatusProfile is "w3c" (default) or "xfsc-compat".
	StatusProfile string `yaml:"status_profile"`
}

// TrustAnchor is a federation trust anchor that vouches for issuers.
type TrustAnchor struct {
	DID             string   `yaml:"did"`
	ParticipantType string   `yaml:"participant_type"`
	Types           []string `yaml:"types"`
	StatusProfile   string   `yaml:"status_profile"`
}

// OID4VPConfig configures the OpenID for Verifiable Presentations verifier.
type OID4VPConfig struct {
	// PublicBaseURL is the externally reachable URL under which the handler
	// is mounted, e.g. https://focus.example.org (the handler serves /oid4vp/…).
	PublicBaseURL string `yaml:"public_base_url"`
	// ClientID defaults to the did:jwk of the request-signing key.
	ClientID string `yaml:"client_id"`
	// SigningKeyFile is a PEM (PKCS#8 or SEC1) P-256 or Ed25519 private key
	// that signs request objects. Empty: an ephemeral key per process.
	SigningKeyFile string `yaml:"signing_key_file"`
	// NonceTTL is how long a presentation request (and its nonce) lives.
	NonceTTL time.Duration `yaml:"nonce_ttl"`
}

// DIDResolutionConfig bounds DID resolution.
type DIDResolutionConfig struct {
	Timeout          time.Duration `yaml:"timeout"`
	MaxDocumentBytes int64         `yaml:"max_document_bytes"`
	CacheTTL         time.Duration `yaml:"cache_ttl"`
	// AllowPrivateAddressesForTesting lets did:web and status lists point at
	// loopback/private addresses. Never enable in production.
	AllowPrivateAddressesForTesting bool `yaml:"allow_private_addresses_for_testing"`
}

// StatusListConfig bounds status-list handling.
type StatusListConfig struct {
	MaxCredentialBytes   int64         `yaml:"max_credential_bytes"`
	MaxDecompressedBytes int64         `yaml:"max_decompressed_bytes"`
	FetchTimeout         time.Duration `yaml:"fetch_timeout"`
}

// LevelsConfig holds the per-level defaults.
type LevelsConfig struct {
	Public LevelDefaults `yaml:"public"`
	Kritis LevelDefaults `yaml:"kritis"`
	VSNfD  LevelDefaults `yaml:"vs_nfd"`
	// VSNfDApprovedEnvironment must be true before vs-nfd rooms are allowed.
	VSNfDApprovedEnvironment bool `yaml:"vs_nfd_approved_environment"`
}

// LevelDefaults are the requirements of a confidentiality level.
type LevelDefaults struct {
	AttestationTTL          time.Duration `yaml:"attestation_ttl"`
	StatusMaxAge            time.Duration `yaml:"status_max_age"`
	HolderBinding           bool          `yaml:"holder_binding"`
	RequireE2EE             bool          `yaml:"require_e2ee"`
	RequireAllowedServers   bool          `yaml:"require_allowed_servers"`
	ReverifyEveryToken      bool          `yaml:"reverify_every_token"`
	RequireNeedToKnow       bool          `yaml:"require_need_to_know"`
	RequireApprovedSite     bool          `yaml:"require_approved_site"`
	RequiredCredentialTypes []string      `yaml:"required_credential_types"`
}

// Built-in level floors from DESIGN.md; configuration may only tighten them.
var builtinLevels = map[Level]LevelDefaults{
	LevelPublic: {AttestationTTL: 24 * time.Hour, StatusMaxAge: 24 * time.Hour},
	LevelKritis: {AttestationTTL: time.Hour, StatusMaxAge: time.Hour, HolderBinding: true,
		RequireE2EE: true, RequireAllowedServers: true},
	LevelVSNfD: {AttestationTTL: 15 * time.Minute, StatusMaxAge: 15 * time.Minute, HolderBinding: true,
		RequireE2EE: true, RequireAllowedServers: true, ReverifyEveryToken: true,
		RequireNeedToKnow: true, RequireApprovedSite: true, RequiredCredentialTypes: []string{"VSNfDVerpflichtung"}},
}

// Formats gxconf can verify.
var supportedFormats = []string{
	FormatLDPVC, FormatJWTVCJSON, FormatVCJWT, FormatVCLDJWT, FormatVCSDJWT, FormatDCSDJWT,
}

var supportedAlgs = []string{"EdDSA", "ES256", "ES384", "RS256", "PS256"}

var supportedDIDMethods = []string{"key", "jwk", "web"}

// DefaultConfig returns the defaults; federations are empty.
func DefaultConfig() Config {
	return Config{
		OID4VP: OID4VPConfig{NonceTTL: 5 * time.Minute},
		DIDResolution: DIDResolutionConfig{
			Timeout:          5 * time.Second,
			MaxDocumentBytes: 64 << 10,
			CacheTTL:         10 * time.Minute,
		},
		StatusList: StatusListConfig{
			MaxCredentialBytes:   4 << 20,
			MaxDecompressedBytes: 16 << 20,
			FetchTimeout:         5 * time.Second,
		},
		Levels: LevelsConfig{
			Public: builtinLevels[LevelPublic],
			Kritis: builtinLevels[LevelKritis],
			VSNfD:  cloneLevel(builtinLevels[LevelVSNfD]),
		},
		MaxInputBytes:   256 << 10,
		RecheckInterval: 5 * time.Minute,
	}
}

func cloneLevel(l LevelDefaults) LevelDefaults {
	l.RequiredCredentialTypes = slices.Clone(l.RequiredCredentialTypes)
	return l
}

// level returns the configured defaults of l.
func (c *Config) level(l Level) LevelDefaults {
	switch l {
	case LevelKritis:
		return c.Levels.Kritis
	case LevelVSNfD:
		return c.Levels.VSNfD
	}
	return c.Levels.Public
}

// Validate reports every problem, each as "dotted.key: problem" relative to
// the section.
func (c *Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	ids := map[string]bool{}
	for i, f := range c.Federations {
		p := fmt.Sprintf("federations[%d]", i)
		if f.ID == "" {
			add(p+".id", "must not be empty")
		} else if ids[f.ID] {
			add(p+".id", "duplicate federation %q", f.ID)
		}
		ids[f.ID] = true
		for j, d := range f.HomeserverDomains {
			if d == "" || strings.ContainsAny(d, "/ @") {
				add(fmt.Sprintf("%s.homeserver_domains[%d]", p, j), "%q is not a server name", d)
			}
		}
		if len(f.TrustedIssuers) == 0 && len(f.TrustAnchors) == 0 {
			add(p+".trusted_issuers", "at least one trusted issuer or trust anchor is required")
		}
		for j, ti := range f.TrustedIssuers {
			q := fmt.Sprintf("%s.trusted_issuers[%d]", p, j)
			checkDID(add, q+".did", ti.DID)
			if len(ti.Types) == 0 {
				add(q+".types", "at least one credential type is required")
			}
			checkProfile(add, q+".status_profile", ti.StatusProfile)
		}
		for j, ta := range f.TrustAnchors {
			q := fmt.Sprintf("%s.trust_anchors[%d]", p, j)
			checkDID(add, q+".did", ta.DID)
			if ta.ParticipantType == "" {
				add(q+".participant_type", "must not be empty")
			}
			if len(ta.Types) == 0 {
				add(q+".types", "at least one credential type is required")
			}
			checkProfile(add, q+".status_profile", ta.StatusProfile)
		}
		checkSubset(add, p+".formats", f.Formats, supportedFormats)
		checkSubset(add, p+".algs", f.Algs, supportedAlgs)
		checkSubset(add, p+".did_methods", f.DIDMethods, supportedDIDMethods)
	}

	o := c.OID4VP
	if o.PublicBaseURL == "" {
		if len(c.Federations) > 0 {
			add("oid4vp.public_base_url", "must be set when federations are configured")
		}
	} else if u, err := url.Parse(o.PublicBaseURL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		add("oid4vp.public_base_url", "%q is not an absolute http(s) URL", o.PublicBaseURL)
	} else if u.Scheme != "https" && !c.DIDResolution.AllowPrivateAddressesForTesting {
		add("oid4vp.public_base_url", "must use https (plain http only with did_resolution.allow_private_addresses_for_testing)")
	}
	if isPlaceholder(o.ClientID) {
		add("oid4vp.client_id", "placeholder value %q", o.ClientID)
	}
	if o.NonceTTL < 30*time.Second || o.NonceTTL > 30*time.Minute {
		add("oid4vp.nonce_ttl", "must be between 30s and 30m, got %s", o.NonceTTL)
	}

	d := c.DIDResolution
	if d.Timeout <= 0 || d.Timeout > time.Minute {
		add("did_resolution.timeout", "must be in (0, 1m], got %s", d.Timeout)
	}
	if d.MaxDocumentBytes < 1<<10 || d.MaxDocumentBytes > 1<<20 {
		add("did_resolution.max_document_bytes", "must be between 1 KiB and 1 MiB, got %d", d.MaxDocumentBytes)
	}
	if d.CacheTTL < 0 {
		add("did_resolution.cache_ttl", "must not be negative")
	}

	s := c.StatusList
	if s.MaxCredentialBytes < 1<<10 || s.MaxCredentialBytes > 64<<20 {
		add("status_list.max_credential_bytes", "must be between 1 KiB and 64 MiB, got %d", s.MaxCredentialBytes)
	}
	if s.MaxDecompressedBytes < 16<<10 || s.MaxDecompressedBytes > 64<<20 {
		add("status_list.max_decompressed_bytes", "must be between 16 KiB and 64 MiB, got %d", s.MaxDecompressedBytes)
	}
	if s.FetchTimeout <= 0 || s.FetchTimeout > time.Minute {
		add("status_list.fetch_timeout", "must be in (0, 1m], got %s", s.FetchTimeout)
	}

	for _, l := range []struct {
		key string
		lvl Level
		cfg LevelDefaults
	}{{"levels.public", LevelPublic, c.Levels.Public}, {"levels.kritis", LevelKritis, c.Levels.Kritis}, {"levels.vs_nfd", LevelVSNfD, c.Levels.VSNfD}} {
		checkLevel(add, l.key, l.cfg, builtinLevels[l.lvl])
	}

	if c.AtRestKey == "" {
		if len(c.Federations) > 0 {
			add("at_rest_key", "must be set (base64 of 32 random bytes) when federations are configured")
		}
	} else if isPlaceholder(c.AtRestKey) {
		add("at_rest_key", "placeholder value")
	} else if k, err := base64.StdEncoding.DecodeString(c.AtRestKey); err != nil || len(k) != 32 {
		add("at_rest_key", "must be base64 of exactly 32 bytes")
	}
	if c.MaxInputBytes < 4<<10 || c.MaxInputBytes > 8<<20 {
		add("max_input_bytes", "must be between 4 KiB and 8 MiB, got %d", c.MaxInputBytes)
	}
	if c.RecheckInterval < 10*time.Second || c.RecheckInterval > 24*time.Hour {
		add("recheck_interval", "must be between 10s and 24h, got %s", c.RecheckInterval)
	}
	for i, p := range c.RetainClaims {
		if p == "" || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") {
			add(fmt.Sprintf("retain_claims[%d]", i), "%q is not a dotted claim path", p)
		}
	}
	return errors.Join(errs...)
}

func checkDID(add func(string, string, ...any), key, d string) {
	switch {
	case d == "":
		add(key, "must not be empty")
	case isPlaceholder(d):
		add(key, "placeholder value %q", d)
	case !slices.Contains(supportedDIDMethods, didMethod(d)):
		add(key, "%q is not a did:key, did:jwk or did:web", d)
	}
}

func checkProfile(add func(string, string, ...any), key, p string) {
	if p != "" && p != "w3c" && p != "xfsc-compat" {
		add(key, "must be w3c or xfsc-compat, got %q", p)
	}
}

func checkSubset(add func(string, string, ...any), key string, got, allowed []string) {
	for i, g := range got {
		if !slices.Contains(allowed, g) {
			add(fmt.Sprintf("%s[%d]", key, i), "%q is not one of %s", g, strings.Join(allowed, ", "))
		}
	}
}

func checkLevel(add func(string, string, ...any), key string, got, floor LevelDefaults) {
	if got.AttestationTTL <= 0 || got.AttestationTTL > floor.AttestationTTL {
		add(key+".attestation_ttl", "must be in (0, %s], got %s", floor.AttestationTTL, got.AttestationTTL)
	}
	if got.StatusMaxAge <= 0 || got.StatusMaxAge > floor.StatusMaxAge {
		add(key+".status_max_age", "must be in (0, %s], got %s", floor.StatusMaxAge, got.StatusMaxAge)
	}
	for _, b := range []struct {
		name      string
		got, base bool
	}{
		{"holder_binding", got.HolderBinding, floor.HolderBinding},
		{"require_e2ee", got.RequireE2EE, floor.RequireE2EE},
		{"require_allowed_servers", got.RequireAllowedServers, floor.RequireAllowedServers},
		{"reverify_every_token", got.ReverifyEveryToken, floor.ReverifyEveryToken},
		{"require_need_to_know", got.RequireNeedToKnow, floor.RequireNeedToKnow},
		{"require_approved_site", got.RequireApprovedSite, floor.RequireApprovedSite},
	} {
		if b.base && !b.got {
			add(key+"."+b.name, "cannot be disabled (levels may only be tightened)")
		}
	}
}

func isPlaceholder(s string) bool {
	l := strings.ToLower(s)
	return strings.Contains(l, "changeme") || strings.Contains(l, "change_me") || strings.Contains(l, "example.invalid") || strings.Contains(l, "<")
}

func didMethod(d string) string {
	parts := strings.SplitN(d, ":", 3)
	if len(parts) < 3 || parts[0] != "did" {
		return ""
	}
	return parts[1]
}
