package focus

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// TestWellKnownRedirectHTTPSOnly: the server a token request names cannot
// redirect the focus's well-known fetch to a plain-http URL (here one on
// loopback, standing for a metadata service or an internal page): the
// redirect is refused before anything is sent there.
func TestWellKnownRedirectHTTPSOnly(t *testing.T) {
	var hit atomic.Bool
	internal := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hit.Store(true) }))
	defer internal.Close()
	evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.URL+"/latest/meta-data/", http.StatusFound)
	}))
	defer evil.Close()
	u, err := url.Parse(evil.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(u.Host)
	v := newOpenIDVerifier(OpenIDConfig{Timeout: 2 * time.Second, CacheTTL: time.Minute, DangerouslySkipTLSVerify: true})
	v.wellKnownPort = port
	v.lookupSRV = func(context.Context, string, string, string) (string, []*net.SRV, error) {
		return "", nil, net.ErrClosed
	}
	if _, _, err := v.Verify(context.Background(), OpenIDToken{AccessToken: "x", MatrixServerName: "localhost"}); err == nil {
		t.Fatal("a token of a server that only redirects was accepted")
	}
	if hit.Load() {
		t.Fatal("the focus followed a redirect to a plain-http URL")
	}
}
