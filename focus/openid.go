package focus

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/internal/clip"
)

// openIDVerifier resolves a Matrix OpenID token to its user ID by asking the
// user's homeserver (GET /_matrix/federation/v1/openid/userinfo), finding the
// homeserver by the federation rules of the server-server API ("Resolving
// server names": IP literal or explicit port, /.well-known/matrix/server, SRV
// _matrix-fed._tcp then _matrix._tcp, else port 8448).
type openIDVerifier struct {
	cfg     OpenIDConfig
	tlsConf *tls.Config
	// dial opens TCP connections; tests replace it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// plain fetches well-known documents and overridden base URLs.
	plain *http.Client
	// pinned talks to a resolved destination: it dials the address and checks
	// the certificate name carried in the request's context.
	pinned *http.Client
	// lookupSRV is net.DefaultResolver.LookupSRV; tests replace it.
	lookupSRV func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	// wellKnownPort is 443; tests replace it.
	wellKnownPort string
	now           func() time.Time

	mu     sync.Mutex
	tokens map[[32]byte]tokenEntry
	// wellKnown maps a host to its m.server delegation, "" if none.
	wellKnown *ttlCache[string, string]
}

type tokenEntry struct {
	user    id.UserID
	expires time.Time
}

// destination is where a server name's federation API lives.
type destination struct {
	// base is the URL to request; its host is what the Host header carries.
	base *url.URL
	// dial is the TCP address to connect to; "" means the URL's host.
	dial string
	// certName is the name the TLS certificate must be valid for.
	certName string
}

type destKey struct{}

const (
	maxUserinfoBytes  = 16 << 10
	maxWellKnownBytes = 64 << 10
	maxTokenCache     = 10000
	// maxDiscoveryCache bounds the well-known and Client-Server API caches,
	// which are keyed by client-chosen server names.
	maxDiscoveryCache = 10000
	wellKnownTTL      = time.Hour
)

func newOpenIDVerifier(cfg OpenIDConfig) *openIDVerifier {
	v := &openIDVerifier{
		cfg:           cfg,
		tlsConf:       &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.DangerouslySkipTLSVerify}, //nolint:gosec // explicit, loudly named dev option
		lookupSRV:     net.DefaultResolver.LookupSRV,
		wellKnownPort: "443",
		now:           time.Now,
		tokens:        make(map[[32]byte]tokenEntry),
		wellKnown:     newTTLCache[string, string](maxDiscoveryCache),
	}
	dialer := &net.Dialer{Timeout: cfg.Timeout}
	v.dial = dialer.DialContext
	// Both transports call v.dial and read v.tlsConf late, so tests can swap them.
	plainTransport := &http.Transport{
		Proxy:       http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return v.dial(ctx, network, addr) },
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return v.dialTLS(ctx, network, addr, "")
		},
		TLSHandshakeTimeout: cfg.Timeout,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	pinnedTransport := &http.Transport{
		DisableKeepAlives: true, // a connection belongs to one resolved destination
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if d, ok := ctx.Value(destKey{}).(*destination); ok && d.dial != "" {
				addr = d.dial
			}
			return v.dial(ctx, network, addr)
		},
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			certName := ""
			if d, ok := ctx.Value(destKey{}).(*destination); ok {
				if d.dial != "" {
					addr = d.dial
				}
				certName = d.certName
			}
			return v.dialTLS(ctx, network, addr, certName)
		},
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	v.plain = &http.Client{Transport: plainTransport, Timeout: cfg.Timeout, CheckRedirect: limitRedirects}
	v.pinned = &http.Client{Transport: pinnedTransport, Timeout: cfg.Timeout, CheckRedirect: noRedirect}
	return v
}

// dialTLS connects and checks the certificate for certName (default: the host dialled).
func (v *openIDVerifier) dialTLS(ctx context.Context, network, addr, certName string) (net.Conn, error) {
	raw, err := v.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	conf := v.tlsConf.Clone()
	if certName != "" {
		conf.ServerName = certName
	} else if host, _, err := net.SplitHostPort(addr); err == nil {
		conf.ServerName = host
	}
	conn := tls.Client(raw, conf)
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, err
	}
	return conn, nil
}

// limitRedirects follows at most 3 redirects, and to https only: these
// fetches run for unauthenticated token requests, and a server named by
// the requester could otherwise redirect the focus to a plain-http URL on
// any address (a cloud metadata service, an internal admin page).
func limitRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 3 {
		return errors.New("too many redirects")
	}
	if req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to %s refused: https only", req.URL.Scheme)
	}
	return nil
}

// Verify returns the user the token belongs to and whether the answer came
// from the cache. Any failure — unknown token, unreachable server, a user of
// another server — is ErrUnauthorized, wrapped with the cause for the logs.
func (v *openIDVerifier) Verify(ctx context.Context, tok OpenIDToken) (user id.UserID, cached bool, err error) {
	server := tok.MatrixServerName
	if err := validServerName(server); err != nil {
		return "", false, fmt.Errorf("%w: matrix_server_name: %v", ErrUnauthorized, err)
	}
	key := sha256.Sum256([]byte(server + "\x00" + tok.AccessToken))
	now := v.now()
	v.mu.Lock()
	if e, ok := v.tokens[key]; ok && now.Before(e.expires) {
		v.mu.Unlock()
		return e.user, true, nil
	}
	v.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
	defer cancel()
	user, err = v.lookup(ctx, server, tok.AccessToken)
	if err != nil {
		return "", false, fmt.Errorf("%w: %v", ErrUnauthorized, err)
	}
	if v.cfg.CacheTTL > 0 {
		v.mu.Lock()
		if len(v.tokens) >= maxTokenCache {
			for k, e := range v.tokens {
				if !now.Before(e.expires) {
					delete(v.tokens, k)
				}
			}
			if len(v.tokens) >= maxTokenCache {
				clear(v.tokens)
			}
		}
		expires := now.Add(v.cfg.CacheTTL)
		if tokExp, ok := tokenExpiry(tok.ExpiresIn, now); ok && tokExp.Before(expires) {
			expires = tokExp
		}
		v.tokens[key] = tokenEntry{user: user, expires: expires}
		v.mu.Unlock()
	}
	return user, false, nil
}

func (v *openIDVerifier) lookup(ctx context.Context, server, accessToken string) (id.UserID, error) {
	var client *http.Client
	var dest *destination
	if base, ok := v.cfg.ServerOverrides[server]; ok {
		u, err := url.Parse(strings.TrimRight(base, "/"))
		if err != nil {
			return "", fmt.Errorf("bad override for %s: %w", server, err)
		}
		client, dest = v.plain, &destination{base: u}
	} else {
		d, err := v.resolve(ctx, server)
		if err != nil {
			return "", fmt.Errorf("failed to resolve %s: %w", server, err)
		}
		client, dest = v.pinned, d
		ctx = context.WithValue(ctx, destKey{}, d)
	}
	u := *dest.base
	u.Path += "/_matrix/federation/v1/openid/userinfo"
	u.RawQuery = url.Values{"access_token": {accessToken}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		// The URL carries the access token; report only where we went.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", fmt.Errorf("userinfo request to %s failed: %w", dest.base.Host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUserinfoBytes+1))
	if err != nil {
		return "", fmt.Errorf("failed to read userinfo response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("homeserver %s answered userinfo with %d", server, resp.StatusCode)
	}
	if len(body) > maxUserinfoBytes {
		return "", errors.New("userinfo response too large")
	}
	var info struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return "", fmt.Errorf("userinfo response is not JSON: %w", err)
	}
	user := id.UserID(info.Sub)
	_, userServer, err := user.Parse()
	if err != nil || !printable(info.Sub, maxField) {
		// Matrix user IDs are at most 255 bytes: a longer one (only a
		// hostile homeserver sends it) would make an identity the cluster
		// directory cannot hold, a participant no booking counts.
		return "", fmt.Errorf("userinfo sub %s is not a user ID of at most %d bytes of printable text", clip.Quote(info.Sub), maxField)
	}
	if userServer != server {
		return "", fmt.Errorf("userinfo sub %s does not belong to %s", user, server)
	}
	return user, nil
}

// resolve finds the federation endpoint of a server name.
func (v *openIDVerifier) resolve(ctx context.Context, server string) (*destination, error) {
	host, port := splitServerName(server)
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil || port != "" {
		if port == "" {
			port = "8448"
		}
		return &destination{base: &url.URL{Scheme: "https", Host: server}, dial: net.JoinHostPort(strings.Trim(host, "[]"), port), certName: strings.Trim(host, "[]")}, nil
	}
	if delegated := v.fetchWellKnown(ctx, host); delegated != "" {
		dHost, dPort := splitServerName(delegated)
		if ip := net.ParseIP(strings.Trim(dHost, "[]")); ip != nil || dPort != "" {
			if dPort == "" {
				dPort = "8448"
			}
			return &destination{base: &url.URL{Scheme: "https", Host: delegated}, dial: net.JoinHostPort(strings.Trim(dHost, "[]"), dPort), certName: strings.Trim(dHost, "[]")}, nil
		}
		return v.resolveSRV(ctx, dHost), nil
	}
	return v.resolveSRV(ctx, host), nil
}

// resolveSRV tries _matrix-fed._tcp, then the deprecated _matrix._tcp, then port 8448.
func (v *openIDVerifier) resolveSRV(ctx context.Context, host string) *destination {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, addrs, err := v.lookupSRV(ctx, service, "tcp", host)
		if err == nil && len(addrs) > 0 && addrs[0].Target != "." {
			target := strings.TrimSuffix(addrs[0].Target, ".")
			return &destination{base: &url.URL{Scheme: "https", Host: host}, dial: net.JoinHostPort(target, strconv.Itoa(int(addrs[0].Port))), certName: host}
		}
	}
	return &destination{base: &url.URL{Scheme: "https", Host: host}, dial: net.JoinHostPort(host, "8448"), certName: host}
}

// fetchWellKnown returns the m.server delegation of host, or "" if there is none.
func (v *openIDVerifier) fetchWellKnown(ctx context.Context, host string) string {
	now := v.now()
	v.mu.Lock()
	if server, ok := v.wellKnown.get(host, now); ok {
		v.mu.Unlock()
		return server
	}
	v.mu.Unlock()
	delegated := v.fetchWellKnownUncached(ctx, host)
	v.mu.Lock()
	v.wellKnown.put(host, delegated, now.Add(wellKnownTTL), now)
	v.mu.Unlock()
	return delegated
}

func (v *openIDVerifier) fetchWellKnownUncached(ctx context.Context, host string) string {
	addr := host
	if v.wellKnownPort != "443" {
		addr = net.JoinHostPort(host, v.wellKnownPort)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/.well-known/matrix/server", nil)
	if err != nil {
		return ""
	}
	resp, err := v.plain.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	var doc struct {
		Server string `json:"m.server"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxWellKnownBytes)).Decode(&doc); err != nil {
		return ""
	}
	if validServerName(doc.Server) != nil {
		return ""
	}
	return doc.Server
}

// tokenExpiry interprets an OpenID token's expires_in. The spec says seconds
// from now; Dendrite sends an absolute Unix time, which is told apart by size.
// A cached answer must not outlive the token it vouches for.
func tokenExpiry(expiresIn int64, now time.Time) (time.Time, bool) {
	const tenYears = 10 * 365 * 24 * 3600
	switch {
	case expiresIn <= 0:
		return time.Time{}, false
	case expiresIn < tenYears:
		return now.Add(time.Duration(expiresIn) * time.Second), true
	default:
		return time.Unix(expiresIn, 0), true
	}
}

// splitServerName splits "host[:port]" where host may be a bracketed IPv6 literal.
func splitServerName(s string) (host, port string) {
	if strings.HasPrefix(s, "[") {
		if i := strings.LastIndex(s, "]"); i > 0 {
			host, rest := s[:i+1], s[i+1:]
			return host, strings.TrimPrefix(rest, ":")
		}
		return s, ""
	}
	if i := strings.LastIndex(s, ":"); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// validServerName checks the grammar of the Matrix appendix "Server name":
// a DNS name, IPv4 or bracketed IPv6 literal, with an optional port.
func validServerName(s string) error {
	if s == "" || len(s) > 255 {
		return errors.New("empty or too long")
	}
	host, port := splitServerName(s)
	if strings.HasSuffix(s, ":") {
		return errors.New("empty port")
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 || strings.HasPrefix(port, "+") {
			return fmt.Errorf("bad port %q", port)
		}
	}
	if strings.HasPrefix(host, "[") {
		// Exactly "[" IPv6 "]", then nothing or ":" port: splitServerName
		// takes the last "]", so "[::1]]" or "[::]1" must be caught here.
		inner, ok := strings.CutSuffix(host[1:], "]")
		if ip := net.ParseIP(inner); !ok || ip == nil || ip.To4() != nil {
			return fmt.Errorf("bad IPv6 literal %q", host)
		}
		if rest := s[len(host):]; rest != "" && rest[0] != ':' {
			return fmt.Errorf("%q after the IPv6 literal", rest)
		}
		return nil
	}
	if host == "" {
		return errors.New("empty host")
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("bad character %q in host", r)
		}
	}
	return nil
}
