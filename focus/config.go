package focus

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Config is the `focus:` section.
type Config struct {
	// Listen is the address of the focus HTTP API (and /metrics, discovery).
	Listen string `yaml:"listen"`
	// PublicURL is the livekit_service_url clients use to reach this API,
	// as advertised in discovery. Empty derives http://<listen>.
	PublicURL string `yaml:"public_url"`
	// TokenTTL is the validity of minted LiveKit tokens.
	TokenTTL time.Duration `yaml:"token_ttl"`
	// FullAccessHomeservers lists homeservers, besides the local one, whose
	// users may publish. "*" as the sole entry means every homeserver.
	FullAccessHomeservers []string `yaml:"full_access_homeservers"`
	// CanUpdateOwnMetadata grants canUpdateOwnMetadata as lk-jwt-service does.
	CanUpdateOwnMetadata bool `yaml:"can_update_own_metadata"`
	// SFU is the LiveKit server tokens are minted for.
	SFU SFUConfig `yaml:"sfu"`
	// Room are the CreateRoom parameters.
	Room RoomConfig `yaml:"room"`
	// OpenID configures the verification of Matrix OpenID tokens.
	OpenID OpenIDConfig `yaml:"openid"`
	// RateLimit limits token requests per client IP and per user.
	RateLimit RateLimitConfig `yaml:"rate_limit"`
	// MaxBodyBytes caps request bodies.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// GrantRetention is how long a grant is kept after its last token expired,
	// so that the user's participant can be removed when they leave the Matrix
	// room; revoked grants are kept as long.
	GrantRetention time.Duration `yaml:"grant_retention"`
	// Discovery configures the /.well-known/matrix/client fragment.
	Discovery DiscoveryConfig `yaml:"discovery"`
	// DelayedEvents configures delayed-leave delegation (MSC4140).
	DelayedEvents DelayedEventsConfig `yaml:"delayed_events"`
}

// DelayedEventsConfig configures the delegation of MSC4140 delayed leave
// events (delay_id, delay_timeout on /get_token and /sfu/get, and
// /delegate_delayed_leave): while the participant is connected the focus
// restarts the delayed event on the user's homeserver, when they leave it
// sends it.
type DelayedEventsConfig struct {
	// CSAPIURLOverrides maps a server name to the base URL of its
	// Client-Server API, bypassing /.well-known/matrix/client discovery
	// (lk-jwt-service's LIVEKIT_CS_API_URL_OVERRIDES). Discovery takes only
	// an https base_url; a homeserver served over http needs an entry here.
	CSAPIURLOverrides map[string]string `yaml:"cs_api_url_overrides"`
	// DiscoveryCacheTTL is how long a discovered Client-Server API URL is
	// remembered (lk-jwt-service: 4h).
	DiscoveryCacheTTL time.Duration `yaml:"discovery_cache_ttl"`
	// MinDelayTimeout and MaxDelayTimeout bound the delay_timeout clients may
	// ask for; others are refused with 400 M_BAD_JSON.
	MinDelayTimeout time.Duration `yaml:"min_delay_timeout"`
	MaxDelayTimeout time.Duration `yaml:"max_delay_timeout"`
	// PollInterval is how often the SFU is asked whether a delegating
	// participant is still connected.
	PollInterval time.Duration `yaml:"poll_interval"`
	// RequestTimeout bounds one restart or send request (lk-jwt-service: 5s).
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// RetryInitialInterval and RetryMaxInterval shape the exponential backoff
	// (×1.5, ±50 % jitter) of failed restart and send requests
	// (lk-jwt-service: 1s and 60s).
	RetryInitialInterval time.Duration `yaml:"retry_initial_interval"`
	RetryMaxInterval     time.Duration `yaml:"retry_max_interval"`
	// MaxJobs caps the delegations this node runs at once, whoever they are
	// from: each is a goroutine, a database row and an SFU lookup every
	// poll_interval, and the per-user cap alone does not bound them (many
	// users, or one homeserver minting users). Delegations over it are
	// refused as over the per-user cap (delegationRefusedOnTokenEndpoint).
	MaxJobs int `yaml:"max_jobs"`
}

// SFUConfig names the LiveKit server. An empty URL means the embedded SFU.
type SFUConfig struct {
	// URL is the ws(s):// URL handed to clients.
	URL string `yaml:"url"`
	// APIKey and APISecret sign tokens and Twirp calls.
	APIKey    string `yaml:"api_key"`
	APISecret string `yaml:"api_secret"`
	// TwirpURL is where the focus calls RoomService; empty derives it from URL.
	TwirpURL string `yaml:"twirp_url"`
	// ApprovedSite declares that the SFU runs on a site approved for VS-NfD
	// (BSI-approved environment); vs-nfd rooms are refused elsewhere.
	ApprovedSite bool `yaml:"approved_site"`
}

// RoomConfig are the CreateRoom parameters (lk-jwt-service uses 300 s / 20 s).
type RoomConfig struct {
	EmptyTimeout     time.Duration `yaml:"empty_timeout"`
	DepartureTimeout time.Duration `yaml:"departure_timeout"`
}

// OpenIDConfig configures OpenID userinfo lookups.
type OpenIDConfig struct {
	// Timeout bounds one lookup, including server discovery.
	Timeout time.Duration `yaml:"timeout"`
	// CacheTTL is how long a verified token is remembered.
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// ServerOverrides maps a server name to the base URL of its federation API,
	// bypassing discovery (private DNS, tests): {"localhost": "http://127.0.0.1:8008"}.
	ServerOverrides map[string]string `yaml:"server_overrides"`
	// DangerouslySkipTLSVerify disables certificate checks of homeservers.
	// Never in production: it lets anyone on the path impersonate every homeserver.
	DangerouslySkipTLSVerify bool `yaml:"dangerously_skip_tls_verify"`
}

// RateLimitConfig limits requests per client IP (before any lookup) and per
// verified user.
type RateLimitConfig struct {
	PerIP   RateConfig `yaml:"per_ip"`
	PerUser RateConfig `yaml:"per_user"`
	// TrustedProxies are the reverse proxies' networks. When a request comes
	// from one of them, the client IP is the right-most X-Forwarded-For entry
	// (all field lines taken as one list) that is not itself on one of them.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// RateConfig is a token bucket: Rate requests per second, bursts up to Burst.
// A zero Rate disables the limit.
type RateConfig struct {
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// DiscoveryConfig configures the discovery documents.
type DiscoveryConfig struct {
	// HomeserverBaseURL, if set, is added to /.well-known/matrix/client as
	// m.homeserver.base_url, so a proxy can serve the whole document from gxconf.
	HomeserverBaseURL string `yaml:"homeserver_base_url"`
}

// DefaultConfig returns the defaults of the focus section.
func DefaultConfig() Config {
	return Config{
		Listen:                "127.0.0.1:8080",
		TokenTTL:              15 * time.Minute,
		FullAccessHomeservers: []string{},
		CanUpdateOwnMetadata:  true,
		Room:                  RoomConfig{EmptyTimeout: 300 * time.Second, DepartureTimeout: 20 * time.Second},
		OpenID:                OpenIDConfig{Timeout: 10 * time.Second, CacheTTL: time.Minute, ServerOverrides: map[string]string{}},
		RateLimit: RateLimitConfig{
			PerIP:          RateConfig{Rate: 5, Burst: 20},
			PerUser:        RateConfig{Rate: 1, Burst: 10},
			TrustedProxies: []string{},
		},
		MaxBodyBytes:   64 << 10,
		GrantRetention: 24 * time.Hour,
		DelayedEvents: DelayedEventsConfig{
			CSAPIURLOverrides:    map[string]string{},
			DiscoveryCacheTTL:    4 * time.Hour,
			MinDelayTimeout:      time.Second,
			MaxDelayTimeout:      24 * time.Hour,
			PollInterval:         2 * time.Second,
			RequestTimeout:       5 * time.Second,
			RetryInitialInterval: time.Second,
			RetryMaxInterval:     time.Minute,
			MaxJobs:              10000,
		},
	}
}

// Validate reports every problem, each named by its key within the section.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf(key+": "+format, args...))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "must be host:port, got %q", c.Listen)
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("public_url", "must be an http(s) URL, got %q", c.PublicURL)
		}
	}
	if c.TokenTTL < 30*time.Second || c.TokenTTL > 24*time.Hour {
		bad("token_ttl", "must be between 30s and 24h, got %s", c.TokenTTL)
	}
	for i, hs := range c.FullAccessHomeservers {
		if hs == "*" && len(c.FullAccessHomeservers) > 1 {
			bad(fmt.Sprintf("full_access_homeservers[%d]", i), `"*" must be the only entry`)
		} else if hs == "" || strings.ContainsAny(hs, " /@") {
			bad(fmt.Sprintf("full_access_homeservers[%d]", i), "%q is not a server name", hs)
		}
	}
	if c.SFU.URL != "" {
		if u, err := url.Parse(c.SFU.URL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss" && u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("sfu.url", "must be a ws(s):// URL, got %q", c.SFU.URL)
		}
		if c.SFU.APIKey == "" {
			bad("sfu.api_key", "must be set when sfu.url is set")
		}
		if len(c.SFU.APISecret) < 32 {
			bad("sfu.api_secret", "must be at least 32 characters when sfu.url is set")
		}
	}
	if c.SFU.TwirpURL != "" {
		if u, err := url.Parse(c.SFU.TwirpURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("sfu.twirp_url", "must be an http(s) URL, got %q", c.SFU.TwirpURL)
		}
	}
	if c.Room.EmptyTimeout < 0 {
		bad("room.empty_timeout", "must not be negative")
	}
	if c.Room.DepartureTimeout < 0 {
		bad("room.departure_timeout", "must not be negative")
	}
	if c.OpenID.Timeout <= 0 {
		bad("openid.timeout", "must be positive")
	}
	if c.OpenID.CacheTTL < 0 || c.OpenID.CacheTTL > time.Hour {
		bad("openid.cache_ttl", "must be between 0 and 1h, got %s", c.OpenID.CacheTTL)
	}
	for name, base := range c.OpenID.ServerOverrides {
		if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("openid.server_overrides."+name, "must be an http(s) base URL, got %q", base)
		}
	}
	for key, r := range map[string]RateConfig{"rate_limit.per_ip": c.RateLimit.PerIP, "rate_limit.per_user": c.RateLimit.PerUser} {
		if r.Rate < 0 {
			bad(key+".rate", "must not be negative")
		}
		if r.Rate > 0 && r.Burst < 1 {
			bad(key+".burst", "must be at least 1 when rate is set")
		}
	}
	for i, p := range c.RateLimit.TrustedProxies {
		if _, _, err := net.ParseCIDR(p); err != nil {
			bad(fmt.Sprintf("rate_limit.trusted_proxies[%d]", i), "must be a CIDR such as 10.0.0.0/8, got %q", p)
		}
	}
	if c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 1<<20 {
		bad("max_body_bytes", "must be between 1024 and 1048576, got %d", c.MaxBodyBytes)
	}
	if c.GrantRetention < c.TokenTTL {
		bad("grant_retention", "must be at least token_ttl (%s), got %s", c.TokenTTL, c.GrantRetention)
	}
	if c.Discovery.HomeserverBaseURL != "" {
		if u, err := url.Parse(c.Discovery.HomeserverBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("discovery.homeserver_base_url", "must be an http(s) URL, got %q", c.Discovery.HomeserverBaseURL)
		}
	}
	d := c.DelayedEvents
	for name, base := range d.CSAPIURLOverrides {
		if validServerName(name) != nil {
			bad("delayed_events.cs_api_url_overrides."+name, "%q is not a server name", name)
		}
		if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("delayed_events.cs_api_url_overrides."+name, "must be an http(s) base URL, got %q", base)
		}
	}
	if d.DiscoveryCacheTTL < 0 || d.DiscoveryCacheTTL > 24*time.Hour {
		bad("delayed_events.discovery_cache_ttl", "must be between 0 and 24h, got %s", d.DiscoveryCacheTTL)
	}
	if d.MinDelayTimeout < 10*time.Millisecond {
		bad("delayed_events.min_delay_timeout", "must be at least 10ms, got %s", d.MinDelayTimeout)
	}
	if d.MaxDelayTimeout < d.MinDelayTimeout {
		bad("delayed_events.max_delay_timeout", "must be at least min_delay_timeout (%s), got %s", d.MinDelayTimeout, d.MaxDelayTimeout)
	}
	if d.PollInterval < 10*time.Millisecond || d.PollInterval > time.Minute {
		bad("delayed_events.poll_interval", "must be between 10ms and 1m, got %s", d.PollInterval)
	}
	if d.RequestTimeout <= 0 || d.RequestTimeout > time.Minute {
		bad("delayed_events.request_timeout", "must be between 0 and 1m, got %s", d.RequestTimeout)
	}
	if d.RetryInitialInterval <= 0 {
		bad("delayed_events.retry_initial_interval", "must be positive, got %s", d.RetryInitialInterval)
	}
	if d.RetryMaxInterval < d.RetryInitialInterval {
		bad("delayed_events.retry_max_interval", "must be at least retry_initial_interval (%s), got %s", d.RetryInitialInterval, d.RetryMaxInterval)
	}
	if d.MaxJobs < 1 || d.MaxJobs > 1000000 {
		bad("delayed_events.max_jobs", "must be between 1 and 1000000, got %d", d.MaxJobs)
	}
	return errors.Join(errs...)
}

// ServiceURL is the livekit_service_url advertised to clients.
func (c *Config) ServiceURL() string {
	if c.PublicURL != "" {
		return strings.TrimRight(c.PublicURL, "/")
	}
	return "http://" + c.Listen
}
