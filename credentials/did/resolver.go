package did

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configure a [Resolver].
type Options struct {
	// Timeout bounds one did:web fetch (connect, TLS, headers and body).
	Timeout time.Duration
	// MaxDocumentBytes bounds the size of a did:web document.
	MaxDocumentBytes int64
	// CacheTTL is how long resolved did:web documents are reused.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached documents.
	CacheSize int
	// AllowPrivateAddresses permits loopback and private targets. Dev/test only.
	AllowPrivateAddresses bool
	// RootCAs replaces the system roots (tests use a self-signed loopback CA).
	RootCAs *x509.CertPool
}

func (o *Options) setDefaults() {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.MaxDocumentBytes <= 0 {
		o.MaxDocumentBytes = 64 << 10
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = 10 * time.Minute
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 1024
	}
}

// Resolver resolves did:key, did:jwk and did:web. It is safe for concurrent use.
type Resolver struct {
	opts   Options
	client *http.Client
	now    func() time.Time

	mu    sync.Mutex
	cache map[string]cacheEntry
}

type cacheEntry struct {
	doc     *Document
	expires time.Time
}

// NewResolver returns a resolver; zero options take safe defaults.
func NewResolver(opts Options) *Resolver {
	opts.setDefaults()
	return &Resolver{
		opts:   opts,
		client: NewGuardedClient(opts.Timeout, opts.AllowPrivateAddresses, opts.RootCAs),
		now:    time.Now,
		cache:  make(map[string]cacheEntry),
	}
}

// Resolve returns the DID document of d (a DID without fragment).
func (r *Resolver) Resolve(ctx context.Context, d string) (*Document, error) {
	if len(d) > 4096 {
		return nil, fmt.Errorf("%w: DID too long", ErrResolution)
	}
	switch MethodName(d) {
	case "key":
		return resolveKey(d)
	case "jwk":
		return resolveJWK(d)
	case "web":
		return r.resolveWeb(ctx, d)
	case "":
		return nil, fmt.Errorf("%w: %q is not a DID", ErrResolution, d)
	}
	return nil, fmt.Errorf("%w: %w: %s", ErrResolution, ErrUnsupportedMethod, MethodName(d))
}

// ResolveKey resolves a DID URL to the verification method it names and its
// public key, requiring that the method is listed under rel.
func (r *Resolver) ResolveKey(ctx context.Context, didURL string, rel Relationship) (*VerificationMethod, crypto.PublicKey, error) {
	d, frag := Split(didURL)
	doc, err := r.Resolve(ctx, d)
	if err != nil {
		return nil, nil, err
	}
	var vm *VerificationMethod
	if frag == "" {
		// A bare DID is acceptable only when it has exactly one such key.
		ms := doc.Methods(rel)
		if len(ms) != 1 {
			return nil, nil, fmt.Errorf("%w: %s has %d %s keys and no key id was given", ErrNoKey, d, len(ms), rel)
		}
		vm = ms[0]
	} else if vm, err = doc.Method(didURL, rel); err != nil {
		return nil, nil, err
	}
	key, err := vm.PublicKey()
	if err != nil {
		return nil, nil, err
	}
	return vm, key, nil
}

// WebURL maps a did:web to the HTTPS URL of its document (did:web spec §3.2.1).
func WebURL(d string) (string, error) {
	rest := strings.TrimPrefix(d, "did:web:")
	if rest == d || rest == "" {
		return "", fmt.Errorf("%w: malformed did:web", ErrResolution)
	}
	parts := strings.Split(rest, ":")
	host, err := url.PathUnescape(parts[0])
	if err != nil || host == "" || strings.ContainsAny(host, "/?#@") {
		return "", fmt.Errorf("%w: malformed did:web host", ErrResolution)
	}
	path := "/.well-known"
	if len(parts) > 1 {
		segs := make([]string, 0, len(parts)-1)
		for _, p := range parts[1:] {
			s, err := url.PathUnescape(p)
			if err != nil || s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/?#") {
				return "", fmt.Errorf("%w: malformed did:web path", ErrResolution)
			}
			segs = append(segs, s)
		}
		path = "/" + strings.Join(segs, "/")
	}
	u := &url.URL{Scheme: "https", Host: host, Path: path + "/did.json"}
	if _, err := url.Parse(u.String()); err != nil {
		return "", fmt.Errorf("%w: malformed did:web: %v", ErrResolution, err)
	}
	return u.String(), nil
}

func (r *Resolver) resolveWeb(ctx context.Context, d string) (*Document, error) {
	now := r.now()
	r.mu.Lock()
	if e, ok := r.cache[d]; ok && now.Before(e.expires) {
		r.mu.Unlock()
		return e.doc, nil
	}
	r.mu.Unlock()

	u, err := WebURL(d)
	if err != nil {
		return nil, err
	}
	body, err := Fetch(ctx, r.client, u, r.opts.MaxDocumentBytes, "application/did+json, application/json")
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrResolution, d, err)
	}
	doc, err := ParseDocument(body, d)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if len(r.cache) >= r.opts.CacheSize {
		for k, e := range r.cache {
			if len(r.cache) < r.opts.CacheSize && now.Before(e.expires) {
				break
			}
			delete(r.cache, k)
		}
	}
	r.cache[d] = cacheEntry{doc: doc, expires: now.Add(r.opts.CacheTTL)}
	r.mu.Unlock()
	return doc, nil
}

// ErrTooLarge is returned by [Fetch] when a body exceeds its limit.
var ErrTooLarge = errors.New("response too large")

// Fetch GETs u with the guarded client, refusing non-2xx answers and bodies
// larger than maxBytes.
func Fetch(ctx context.Context, client *http.Client, u string, maxBytes int64, accept string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("GET %s: HTTP %d", u, resp.StatusCode)
	}
	if resp.ContentLength > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, resp.ContentLength, maxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > maxBytes {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, maxBytes)
	}
	return body, nil
}

// NewGuardedClient returns an HTTPS-only client whose dialer refuses
// non-public addresses after DNS resolution, so that a name re-bound to a
// private address between checks is still refused. Environment proxies are
// ignored because a proxy would bypass the check.
func NewGuardedClient(timeout time.Duration, allowPrivate bool, roots *x509.CertPool) *http.Client {
	dialer := &net.Dialer{
		Timeout: timeout,
		Control: func(_, address string, _ syscall.RawConn) error {
			if allowPrivate {
				return nil
			}
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: unparsable address %q", ErrPrivateAddress, address)
			}
			if !IsPublic(ap.Addr()) {
				return fmt.Errorf("%w: %s", ErrPrivateAddress, ap.Addr())
			}
			return nil
		},
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "https" {
				return fmt.Errorf("refusing redirect to %s", req.URL.Scheme)
			}
			return nil
		},
	}
}

var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("2002::/16"),
}

// IsPublic reports whether a is a globally routable unicast address.
func IsPublic(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsUnspecified() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsMulticast() ||
		a.IsInterfaceLocalMulticast() || !a.IsGlobalUnicast() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}
