package focus

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func mustCIDRs(t *testing.T, cidrs ...string) []*net.IPNet {
	t.Helper()
	var out []*net.IPNet
	for _, c := range cidrs {
		_, n, err := net.ParseCIDR(c)
		require.NoError(t, err)
		out = append(out, n)
	}
	return out
}

// clientIP treats every X-Forwarded-For field line as part of one list
// (RFC 9110 §5.3) and walks it from the right past trusted proxies only, so
// nothing the client writes into the header can choose its address.
func TestClientIPFromForwardedFor(t *testing.T) {
	trusted := mustCIDRs(t, "127.0.0.0/8", "10.0.0.0/8")
	for _, tc := range []struct {
		name    string
		remote  string
		xff     []string // one entry per field line
		trusted []*net.IPNet
		want    string
	}{
		{name: "no proxies configured", remote: "192.0.2.1:1", xff: []string{"203.0.113.7"}, want: "192.0.2.1"},
		{name: "untrusted peer", remote: "192.0.2.1:1", xff: []string{"203.0.113.7"}, trusted: trusted, want: "192.0.2.1"},
		{name: "trusted peer without header", remote: "127.0.0.1:1", trusted: trusted, want: "127.0.0.1"},
		{name: "one hop", remote: "127.0.0.1:1", xff: []string{"203.0.113.7"}, trusted: trusted, want: "203.0.113.7"},
		{name: "client entries before the proxy's in one line", remote: "127.0.0.1:1", xff: []string{"6.6.6.6, 203.0.113.7"}, trusted: trusted, want: "203.0.113.7"},
		// HAProxy's "option forwardfor" appends a line of its own after the client's.
		{name: "client line then proxy line", remote: "127.0.0.1:1", xff: []string{"6.6.6.6", "203.0.113.7"}, trusted: trusted, want: "203.0.113.7"},
		{name: "client claims a trusted address", remote: "127.0.0.1:1", xff: []string{"10.0.0.1", "203.0.113.7"}, trusted: trusted, want: "203.0.113.7"},
		{name: "two trusted proxies", remote: "127.0.0.1:1", xff: []string{"6.6.6.6, 203.0.113.7", "10.1.2.3"}, trusted: trusted, want: "203.0.113.7"},
		{name: "empty elements skipped", remote: "127.0.0.1:1", xff: []string{"203.0.113.7,", ""}, trusted: trusted, want: "203.0.113.7"},
		{name: "garbage from the proxy keeps the peer", remote: "127.0.0.1:1", xff: []string{"203.0.113.7, unknown"}, trusted: trusted, want: "127.0.0.1"},
		{name: "garbage left of the client is never reached", remote: "127.0.0.1:1", xff: []string{"junk", "203.0.113.7"}, trusted: trusted, want: "203.0.113.7"},
		{name: "ipv6", remote: "[::1]:1", xff: []string{"2001:db8::7"}, trusted: mustCIDRs(t, "::1/128"), want: "2001:db8::7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/get_token", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			require.Equal(t, tc.want, clientIP(r, tc.trusted))
		})
	}
}

// Behind a proxy that appends its own X-Forwarded-For line, a client that
// sends a different address of its own with each request still shares one
// bucket: on /get_token and on the other APIs wrapped by LimitPerIP.
func TestPerIPLimitIgnoresClientForwardedFor(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.RateLimit.PerIP = RateConfig{Rate: 0.001, Burst: 1}
		c.RateLimit.TrustedProxies = []string{"127.0.0.0/8"}
	})
	wrapped := httptest.NewServer(h.svc.LimitPerIP(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	defer wrapped.Close()
	for _, tc := range []struct{ name, url, realClient string }{
		{"get_token", h.srv.URL + "/get_token", "203.0.113.7"},
		{"meetings", wrapped.URL + "/meetings/v1/meetings", "203.0.113.8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var statuses []int
			for i := 0; i < 4; i++ {
				req, err := http.NewRequest(http.MethodPost, tc.url, nil)
				require.NoError(t, err)
				req.Header.Add("X-Forwarded-For", fmt.Sprintf("10.9.8.%d", i)) // the client's
				req.Header.Add("X-Forwarded-For", tc.realClient)               // the proxy's
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				resp.Body.Close()
				statuses = append(statuses, resp.StatusCode)
			}
			require.NotEqual(t, http.StatusTooManyRequests, statuses[0])
			require.Equal(t, []int{429, 429, 429}, statuses[1:])
		})
	}
}
