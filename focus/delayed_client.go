package focus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// delayedEventsPath is MSC4140's unstable management endpoint
// (POST …/delayed_events/{delay_id}/{action}), the one lk-jwt-service and
// Synapse use.
const delayedEventsPath = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/"

// Delayed-event management actions (MSC4140 "Managing scheduled delayed events").
const (
	actionRestart = "restart"
	actionSend    = "send"
)

// csAPI finds users' Client-Server APIs and manages delayed events there.
type csAPI struct {
	cfg    DelayedEventsConfig
	openid *openIDVerifier // its transport (TLS options) and well-known fetching
	client *http.Client
	now    func() time.Time

	mu sync.Mutex
	// cache maps a server name to its Client-Server API base URL.
	cache *ttlCache[string, string]
}

func newCSAPI(cfg DelayedEventsConfig, v *openIDVerifier) *csAPI {
	return &csAPI{
		cfg:    cfg,
		openid: v,
		client: &http.Client{
			Transport: v.plain.Transport,
			Timeout:   cfg.RequestTimeout,
			// A redirect would replay the POST elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now:   time.Now,
		cache: newTTLCache[string, string](maxDiscoveryCache),
	}
}

// resolve returns the Client-Server API base URL of a homeserver: the
// configured override, else the cached or freshly discovered
// m.homeserver.base_url of https://<server>/.well-known/matrix/client. The
// client's delay_cs_api_url is never used: a client could point the focus
// anywhere (lk-jwt-service#188).
func (c *csAPI) resolve(ctx context.Context, server string) (string, error) {
	if base, ok := c.cfg.CSAPIURLOverrides[server]; ok {
		return strings.TrimRight(base, "/"), nil
	}
	now := c.now()
	c.mu.Lock()
	base, ok := c.cache.get(server, now)
	c.mu.Unlock()
	if ok {
		return base, nil
	}
	if err := validServerName(server); err != nil {
		return "", fmt.Errorf("bad server name %q: %w", server, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	base, err := c.openid.clientWellKnown(ctx, server)
	if err != nil {
		return "", err
	}
	if c.cfg.DiscoveryCacheTTL > 0 {
		c.mu.Lock()
		c.cache.put(server, base, now.Add(c.cfg.DiscoveryCacheTTL), now)
		c.mu.Unlock()
	}
	return base, nil
}

// clientWellKnown reads m.homeserver.base_url from the server's
// /.well-known/matrix/client (Client-Server API "Well-known URIs").
func (v *openIDVerifier) clientWellKnown(ctx context.Context, server string) (string, error) {
	// As mautrix.DiscoverClientAPI (lk-jwt-service's): the server name,
	// port included, is the host.
	addr := server
	if host, port := splitServerName(server); port == "" && v.wellKnownPort != "443" {
		addr = net.JoinHostPort(strings.Trim(host, "[]"), v.wellKnownPort)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/.well-known/matrix/client", nil)
	if err != nil {
		return "", err
	}
	resp, err := v.plain.Do(req)
	if err != nil {
		return "", fmt.Errorf("failed to fetch the client well-known document of %s: %w", server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("client well-known document of %s: status %d", server, resp.StatusCode)
	}
	var doc struct {
		Homeserver struct {
			BaseURL string `json:"base_url"`
		} `json:"m.homeserver"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxWellKnownBytes)).Decode(&doc); err != nil {
		return "", fmt.Errorf("client well-known document of %s is not JSON: %w", server, err)
	}
	// https only, as limitRedirects allows: the document is the requester's
	// homeserver's, and an http base_url would let it aim the focus's POSTs
	// at any plain-http address (a cloud metadata service, an internal admin
	// port), with no certificate to check, for as long as the delegation
	// runs. A homeserver served over plain http needs cs_api_url_overrides.
	u, err := url.Parse(doc.Homeserver.BaseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("client well-known document of %s has no usable m.homeserver.base_url (an https URL)", server)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// actionURL is base + the management path with delayID as one escaped path
// segment: the delay ID comes from the client and must not reach another path.
func actionURL(base, delayID, action string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("bad Client-Server API URL: %w", err)
	}
	prefix := strings.TrimRight(u.Path, "/") + delayedEventsPath
	rawPrefix := strings.TrimRight(u.EscapedPath(), "/") + delayedEventsPath
	u.Path = prefix + delayID + "/" + action
	u.RawPath = rawPrefix + url.PathEscape(delayID) + "/" + action
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// do POSTs {} to the delayed event's action endpoint, without an access
// token (the delay ID is the capability, as with lk-jwt-service). It returns
// nil on success, which for send includes 404 (already sent or cancelled);
// an error matching errDelayedEventGone when there is nothing left to do
// (404 on restart, 409 on either); any other error is worth retrying, after
// retryAfter if the homeserver asked for it (429).
func (c *csAPI) do(ctx context.Context, base, delayID, action string) (status int, retryAfter time.Duration, err error) {
	target, err := actionURL(base, delayID, action)
	if err != nil {
		return 0, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader([]byte("{}")))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		// The URL carries the delay ID, a capability: report only the cause.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return 0, 0, fmt.Errorf("%s request failed: %w", action, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	status = resp.StatusCode
	switch {
	case status == http.StatusOK || status == http.StatusNoContent:
		return status, 0, nil
	case status == http.StatusNotFound && action == actionSend:
		return status, 0, nil
	case status == http.StatusNotFound, status == http.StatusConflict:
		return status, 0, fmt.Errorf("%s: status %d: %w", action, status, errDelayedEventGone)
	case status == http.StatusTooManyRequests:
		return status, retryAfterOf(resp.Header, body, c.now()), fmt.Errorf("%s: rate limited (429)", action)
	default:
		return status, 0, fmt.Errorf("%s: status %d", action, status)
	}
}

// retryAfterOf reads a 429's Retry-After header (seconds or HTTP date) or,
// failing that, the body's retry_after_ms (Client-Server API "Rate limiting").
func retryAfterOf(h http.Header, body []byte, now time.Time) time.Duration {
	if v := h.Get("Retry-After"); v != "" {
		if secs, err := strconv.Atoi(v); err == nil {
			return max(0, time.Duration(secs)*time.Second)
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(0, t.Sub(now))
		}
	}
	var e struct {
		RetryAfterMs int64 `json:"retry_after_ms"`
	}
	if json.Unmarshal(body, &e) == nil && e.RetryAfterMs > 0 {
		return time.Duration(e.RetryAfterMs) * time.Millisecond
	}
	return 0
}

// waiter waits d or until ctx ends; tests replace it to observe the waits.
type waiter func(ctx context.Context, d time.Duration) error

func realWait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retry calls attempt until it succeeds, fails with errDelayedEventGone, or
// the next try would start after deadline; between tries it waits an
// exponential backoff (×1.5 from RetryInitialInterval up to
// RetryMaxInterval, ±50 % jitter), as lk-jwt-service does, or the
// homeserver's retry hint (429) when that is longer than the backoff's
// current interval. A hint never shortens the wait: the homeserver is the
// user's, and one answering 429 with retry_after_ms 1 would otherwise have
// the focus retry in a tight loop for as long as the delayed event lives (up
// to max_delay_timeout). It returns the last error.
func retry(ctx context.Context, cfg DelayedEventsConfig, now func() time.Time, wait waiter, deadline time.Time,
	attempt func(ctx context.Context) (time.Duration, error)) error {
	interval := cfg.RetryInitialInterval
	for {
		hint, err := attempt(ctx)
		if err == nil || errors.Is(err, errDelayedEventGone) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var d time.Duration
		if hint > 0 {
			d = max(hint, interval)
		} else {
			d = time.Duration(float64(interval) * (0.5 + rand.Float64())) //nolint:gosec // jitter
		}
		interval = min(cfg.RetryMaxInterval, time.Duration(float64(interval)*1.5))
		if now().Add(d).After(deadline) {
			return fmt.Errorf("gave up before the delayed event's deadline: %w", err)
		}
		if werr := wait(ctx, d); werr != nil {
			return werr
		}
	}
}
