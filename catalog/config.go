package catalog

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gxfs-conf/gxconf/credentials"
)

// Config is the `catalog:` section.
type Config struct {
	// Enabled serves the catalogue, bookings and admin API and enforces
	// bookings at the focus.
	Enabled bool `yaml:"enabled"`
	// BaseURL is the public https URL the catalogue is reached at; the
	// provider's did:web is derived from its host (and path), and credential
	// IDs are below it.
	BaseURL string `yaml:"base_url"`
	// SigningKeyFile is the provider's private key (PEM, PKCS#8 or SEC 1;
	// EC P-256 signs ES256, RSA signs PS256).
	SigningKeyFile string `yaml:"signing_key_file"`
	// X5U is the URL of the key's X.509 chain (PEM); when set, the DID
	// document's verification method carries it as publicKeyJwk.x5u, as
	// the XFSC catalogue requires.
	X5U string `yaml:"x5u"`
	// Provider is the legal participant offering the service.
	Provider Provider `yaml:"provider"`
	// Tiers are the maximum participants of the offered tiers.
	Tiers []int `yaml:"tiers"`
	// Levels are the offered confidentiality levels with their terms.
	Levels map[credentials.Level]LevelOffer `yaml:"levels"`
	// ServiceLevels are the offered service levels (bronze, silver, gold).
	ServiceLevels map[string]ServiceLevel `yaml:"service_levels"`
	// RequireBooking refuses calls in rooms bound to no booking.
	RequireBooking bool `yaml:"require_booking"`
	// Grace keeps a booking usable this long after its end.
	Grace time.Duration `yaml:"grace"`
	// PendingWindow is how long an admitted participant counts before the
	// cluster directory shows them connected.
	PendingWindow time.Duration `yaml:"pending_window"`
	// UsageInterval is how often usage (participant-minutes, peaks) is sampled.
	UsageInterval time.Duration `yaml:"usage_interval"`
	// SessionIdle closes a session that has had no participant this long
	// (LiveKit's empty_timeout).
	SessionIdle time.Duration `yaml:"session_idle"`
	// MaxOpenBookingsPerOrg caps an organisation's bookings that are not
	// yet expired, cancelled or revoked; Book refuses more.
	MaxOpenBookingsPerOrg int `yaml:"max_open_bookings_per_org"`
	// MaxBookingsPerOrgPerDay caps the bookings an organisation makes in
	// any 24 hours, cancelled ones included: each takes a row that is
	// never deleted and a revocation status list index that is never
	// reused, so booking and cancelling in a loop must not exhaust the
	// list for every organisation.
	MaxBookingsPerOrgPerDay int `yaml:"max_bookings_per_org_per_day"`
	// Admin configures who may use the admin and booking API.
	Admin AdminConfig `yaml:"admin"`
}

// Provider is the gx:LegalPerson offering the service.
type Provider struct {
	LegalName string `yaml:"legal_name"`
	// RegistrationNumberType is vatID, leiCode, EORI, EUID, local or taxID.
	RegistrationNumberType string `yaml:"registration_number_type"`
	RegistrationNumber     string `yaml:"registration_number"`
	// CountryCode (ISO 3166-1 alpha-2) of the legal and headquarters address.
	CountryCode string `yaml:"country_code"`
	// ContactURL is the provider's contact page.
	ContactURL string `yaml:"contact_url"`
}

// LevelOffer is what a confidentiality level is offered with.
type LevelOffer struct {
	// TermsURL and TermsHash (SHA-256 hex of the document) are the level's
	// terms and conditions (gx:serviceOfferingTermsAndConditions).
	TermsURL  string `yaml:"terms_url"`
	TermsHash string `yaml:"terms_hash"`
	// Sites the level may run on (cluster site IDs).
	Sites []string `yaml:"sites"`
	// PolicyURL is where the level's Rego access policy is published
	// (gx:servicePolicy); optional.
	PolicyURL string `yaml:"policy_url"`
}

// ServiceLevel is a service level's availability and session limit.
type ServiceLevel struct {
	// Availability in percent per month, e.g. 99.9.
	Availability float64 `yaml:"availability"`
	// MaxConcurrentSessions is how many sessions of one booking may run at once.
	MaxConcurrentSessions int `yaml:"max_concurrent_sessions"`
}

// AdminConfig is OpenID Connect for the admin API.
type AdminConfig struct {
	// Issuer is the OpenID provider's issuer URL (discovery at
	// /.well-known/openid-configuration).
	Issuer string `yaml:"issuer"`
	// ClientID is the audience of accepted ID tokens and the client of the
	// admin page's login.
	ClientID string `yaml:"client_id"`
	// ClientSecret (or ClientSecretFile) for the page's login (code flow);
	// empty: the page cannot log in, the API still takes bearer ID tokens.
	ClientSecret     string `yaml:"client_secret"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// AcceptedACR, when set, are acr values that prove MFA; otherwise the
	// amr claim must show multi-factor authentication (RFC 8176).
	AcceptedACR []string `yaml:"accepted_acr"`
	// OrgClaim and RolesClaim name the ID-token claims with the admin's
	// organisation and roles.
	OrgClaim   string `yaml:"org_claim"`
	RolesClaim string `yaml:"roles_claim"`
	// PolicyFile is a Rego file replacing the embedded admin policy
	// (package gxconf.catalog.admin, rule decision).
	PolicyFile string `yaml:"policy_file"`
	// Organisations that may book, by the org claim's value.
	Organisations map[string]Organisation `yaml:"organisations"`
	// SessionTTL caps the page's login session.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// RedirectURL is the page login's callback; empty: base_url +
	// /catalog/admin/callback.
	RedirectURL string `yaml:"redirect_url"`
	// DangerouslyAllowHTTPIssuer accepts an http:// issuer (tests only).
	DangerouslyAllowHTTPIssuer bool `yaml:"dangerously_allow_http_issuer"`
}

// Organisation is a customer that books tiers.
type Organisation struct {
	LegalName string `yaml:"legal_name"`
	// ID is the organisation's DID or LegalPerson IRI (the entitlement's subject).
	ID string `yaml:"id"`
}

// DefaultConfig is disabled with the tender's tiers and three service levels.
func DefaultConfig() Config {
	return Config{
		Tiers: []int{20, 50, 100, 500, 1000},
		ServiceLevels: map[string]ServiceLevel{
			"bronze": {Availability: 99.0, MaxConcurrentSessions: 1},
			"silver": {Availability: 99.5, MaxConcurrentSessions: 2},
			"gold":   {Availability: 99.9, MaxConcurrentSessions: 4},
		},
		PendingWindow: 30 * time.Second,
		UsageInterval: 15 * time.Second,
		SessionIdle:   5 * time.Minute,

		MaxOpenBookingsPerOrg:   1000,
		MaxBookingsPerOrgPerDay: 100,
		Admin: AdminConfig{
			OrgClaim: "org", RolesClaim: "roles", SessionTTL: 8 * time.Hour,
		},
	}
}

// AllowedTiers are the tier sizes of the tender (the SHACL shape pins them).
var AllowedTiers = []int{20, 50, 100, 500, 1000}

var (
	sha256Hex  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	simpleName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	regTypes   = []string{"vatID", "leiCode", "EORI", "EUID", "local", "taxID"}
)

// Validate reports every problem, each named by its key within the section.
func (c *Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf(key+": "+format, args...))
	}
	if u, err := url.Parse(c.BaseURL); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		bad("base_url", "must be an https URL without query, got %q", c.BaseURL)
	}
	if c.SigningKeyFile == "" {
		bad("signing_key_file", "must be set")
	}
	if c.X5U != "" {
		if u, err := url.Parse(c.X5U); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("x5u", "must be an https URL, got %q", c.X5U)
		}
	}
	p := c.Provider
	if strings.TrimSpace(p.LegalName) == "" {
		bad("provider.legal_name", "must be set")
	}
	if !slices.Contains(regTypes, p.RegistrationNumberType) {
		bad("provider.registration_number_type", "must be one of %v, got %q", regTypes, p.RegistrationNumberType)
	}
	if strings.TrimSpace(p.RegistrationNumber) == "" {
		bad("provider.registration_number", "must be set")
	}
	if len(p.CountryCode) != 2 || strings.ToUpper(p.CountryCode) != p.CountryCode {
		bad("provider.country_code", "must be an ISO 3166-1 alpha-2 code such as DE, got %q", p.CountryCode)
	}
	if len(c.Tiers) == 0 {
		bad("tiers", "must list at least one tier")
	}
	for i, t := range c.Tiers {
		if !slices.Contains(AllowedTiers, t) {
			bad(fmt.Sprintf("tiers[%d]", i), "must be one of %v, got %d", AllowedTiers, t)
		}
	}
	if len(c.Levels) == 0 {
		bad("levels", "must offer at least one level (public, kritis, vs-nfd)")
	}
	for lv, o := range c.Levels {
		key := "levels." + string(lv)
		if lv.Rank() < 0 {
			bad(key, "unknown level (public, kritis, vs-nfd)")
		}
		if u, err := url.Parse(o.TermsURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad(key+".terms_url", "must be an http(s) URL, got %q", o.TermsURL)
		}
		if !sha256Hex.MatchString(o.TermsHash) {
			bad(key+".terms_hash", "must be the SHA-256 of the terms as 64 lower-case hex digits")
		}
		if len(o.Sites) == 0 {
			bad(key+".sites", "must list at least one site")
		}
		for i, s := range o.Sites {
			if s == "" || strings.ContainsAny(s, " /") {
				bad(fmt.Sprintf("%s.sites[%d]", key, i), "%q is not a site ID", s)
			}
		}
	}
	if len(c.ServiceLevels) == 0 {
		bad("service_levels", "must offer at least one service level")
	}
	for name, sl := range c.ServiceLevels {
		key := "service_levels." + name
		if !slices.Contains([]string{"bronze", "silver", "gold"}, name) {
			bad(key, "must be bronze, silver or gold (the published SHACL shape pins them)")
		}
		if sl.Availability <= 0 || sl.Availability > 100 {
			bad(key+".availability", "must be a percentage in (0, 100], got %v", sl.Availability)
		}
		if sl.MaxConcurrentSessions < 1 {
			bad(key+".max_concurrent_sessions", "must be at least 1, got %d", sl.MaxConcurrentSessions)
		}
	}
	if c.Grace < 0 || c.Grace > 24*time.Hour {
		bad("grace", "must be between 0 and 24h, got %s", c.Grace)
	}
	if c.PendingWindow < time.Second || c.PendingWindow > 10*time.Minute {
		bad("pending_window", "must be between 1s and 10m, got %s", c.PendingWindow)
	}
	if c.UsageInterval < time.Second || c.UsageInterval > time.Hour {
		bad("usage_interval", "must be between 1s and 1h, got %s", c.UsageInterval)
	}
	if c.SessionIdle < time.Second {
		bad("session_idle", "must be at least 1s, got %s", c.SessionIdle)
	}
	if c.MaxOpenBookingsPerOrg < 1 || c.MaxOpenBookingsPerOrg > 1_000_000 {
		bad("max_open_bookings_per_org", "must be between 1 and 1000000, got %d", c.MaxOpenBookingsPerOrg)
	}
	if c.MaxBookingsPerOrgPerDay < 1 || c.MaxBookingsPerOrgPerDay > 10_000 {
		bad("max_bookings_per_org_per_day", "must be between 1 and 10000, got %d", c.MaxBookingsPerOrgPerDay)
	}
	a := c.Admin
	if u, err := url.Parse(a.Issuer); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && a.DangerouslyAllowHTTPIssuer)) {
		bad("admin.issuer", "must be the OpenID provider's https issuer URL, got %q", a.Issuer)
	}
	if a.ClientID == "" {
		bad("admin.client_id", "must be set")
	}
	if a.ClientSecret != "" && a.ClientSecretFile != "" {
		bad("admin.client_secret", "set client_secret or client_secret_file, not both")
	}
	if a.OrgClaim == "" {
		bad("admin.org_claim", "must be set")
	}
	if a.RolesClaim == "" {
		bad("admin.roles_claim", "must be set")
	}
	for name, o := range a.Organisations {
		if !simpleName.MatchString(name) {
			bad("admin.organisations."+name, "must be lower-case letters, digits and '-', starting with a letter")
		}
		if strings.TrimSpace(o.LegalName) == "" {
			bad("admin.organisations."+name+".legal_name", "must be set")
		}
	}
	if a.SessionTTL < time.Minute || a.SessionTTL > 24*time.Hour {
		bad("admin.session_ttl", "must be between 1m and 24h, got %s", a.SessionTTL)
	}
	return errors.Join(errs...)
}
