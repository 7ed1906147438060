package focus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tlsHomeserver is a homeserver reachable only through federation discovery.
// httptest's certificate is valid for example.com and 127.0.0.1.
type tlsHomeserver struct {
	srv       *httptest.Server
	mu        sync.Mutex
	hosts     []string // Host headers seen by userinfo
	wellKnown string   // m.server answer; "" → 404
	localpart string   // of the user it answers for; "" → alice
}

func newTLSHomeserver(t *testing.T) *tlsHomeserver {
	hs := &tlsHomeserver{}
	hs.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/matrix/server":
			if hs.wellKnown == "" {
				http.NotFound(w, r)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]string{"m.server": hs.wellKnown})
		case "/_matrix/federation/v1/openid/userinfo":
			hs.mu.Lock()
			hs.hosts = append(hs.hosts, r.Host)
			hs.mu.Unlock()
			if r.URL.Query().Get("access_token") != "good" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			// The user belongs to whatever server name the request was for.
			local := "alice"
			if hs.localpart != "" {
				local = hs.localpart
			}
			_ = json.NewEncoder(w).Encode(map[string]string{"sub": "@" + local + ":" + r.Host})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(hs.srv.Close)
	return hs
}

func (hs *tlsHomeserver) port() string {
	_, port, _ := net.SplitHostPort(hs.srv.Listener.Addr().String())
	return port
}

// verifierFor returns a verifier whose DNS sees every name as 127.0.0.1 and
// that trusts the test server's certificate.
func verifierFor(t *testing.T, hs *tlsHomeserver, srv func(service string) (string, uint16, bool)) (*openIDVerifier, *[]string) {
	v := newOpenIDVerifier(OpenIDConfig{Timeout: 5 * time.Second})
	pool := x509.NewCertPool()
	pool.AddCert(hs.srv.Certificate())
	v.tlsConf = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	var dialed []string
	var mu sync.Mutex
	base := &net.Dialer{Timeout: time.Second}
	v.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, addr)
		mu.Unlock()
		_, port, _ := net.SplitHostPort(addr)
		return base.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}
	v.wellKnownPort = hs.port()
	v.lookupSRV = func(_ context.Context, service, _, name string) (string, []*net.SRV, error) {
		if srv != nil {
			if target, port, ok := srv(service + "/" + name); ok {
				return "", []*net.SRV{{Target: target + ".", Port: port}}, nil
			}
		}
		return "", nil, errors.New("no such record")
	}
	return v, &dialed
}

// A homeserver answers for its own users, within the grammar: a user ID
// over 255 bytes or with control characters (made an identity, it would
// not fit the cluster directory, and no booking would count it) is
// refused, and not quoted whole.
func TestOpenIDUserIDBounded(t *testing.T) {
	ctx := context.Background()
	for name, c := range map[string]struct {
		local string
		ok    bool
	}{
		"longest":  {strings.Repeat("a", 255-len("@:example.com:00000")), true},
		"too long": {strings.Repeat("a", 600), false},
		"control":  {"ali\x1bce", false},
	} {
		t.Run(name, func(t *testing.T) {
			hs := newTLSHomeserver(t)
			hs.localpart = c.local
			v, _ := verifierFor(t, hs, nil)
			server := "example.com:" + hs.port()
			// the longest fits with a five-digit port only
			if c.ok && len("@"+c.local+":"+server) > 255 {
				hs.localpart = c.local[:255-len("@:"+server)]
			}
			user, _, err := v.Verify(ctx, OpenIDToken{AccessToken: "good", MatrixServerName: server})
			if c.ok {
				require.NoError(t, err)
				require.LessOrEqual(t, len(user), 255)
				return
			}
			require.ErrorIs(t, err, ErrUnauthorized)
			require.Contains(t, err.Error(), "is not a user ID of at most 255 bytes")
			require.Less(t, len(err.Error()), 400)
		})
	}
}

func TestOpenIDResolution(t *testing.T) {
	ctx := context.Background()
	t.Run("explicit port", func(t *testing.T) {
		hs := newTLSHomeserver(t)
		// Port given: connect there directly, certificate checked for the host.
		v, dialed := verifierFor(t, hs, nil)
		user, _, err := v.Verify(ctx, OpenIDToken{AccessToken: "good", MatrixServerName: "example.com:" + hs.port()})
		require.NoError(t, err)
		require.Equal(t, "@alice:example.com:"+hs.port(), user.String())
		require.Equal(t, []string{"example.com:" + hs.port()}, *dialed, "no well-known or SRV lookup")
	})
	t.Run("well-known delegation with port", func(t *testing.T) {
		hs := newTLSHomeserver(t)
		hs.wellKnown = "example.com:" + hs.port()
		v, dialed := verifierFor(t, hs, nil)
		// The delegated server answers for its own Host; a user of another
		// server name than the one asked for is refused.
		_, _, err := v.Verify(ctx, OpenIDToken{AccessToken: "good", MatrixServerName: "example.com"})
		require.ErrorIs(t, err, ErrUnauthorized)
		require.Contains(t, err.Error(), "does not belong to example.com")
		require.Contains(t, *dialed, "example.com:"+hs.port())
		require.Equal(t, []string{"example.com:" + hs.port()}, hs.hosts)
	})
	t.Run("SRV _matrix-fed", func(t *testing.T) {
		hs := newTLSHomeserver(t)
		port := hs.port()
		v, dialed := verifierFor(t, hs, func(q string) (string, uint16, bool) {
			if q == "matrix-fed/example.com" {
				p, _ := net.LookupPort("tcp", port)
				return "fed.example.com", uint16(p), true
			}
			return "", 0, false
		})
		user, _, err := v.Verify(ctx, OpenIDToken{AccessToken: "good", MatrixServerName: "example.com"})
		require.NoError(t, err)
		require.Equal(t, "@alice:example.com", user.String())
		require.Contains(t, *dialed, "fed.example.com:"+port)
		require.Equal(t, []string{"example.com"}, hs.hosts, "Host header is the server name, not the SRV target")
	})
	t.Run("fallback to 8448", func(t *testing.T) {
		hs := newTLSHomeserver(t)
		v, dialed := verifierFor(t, hs, nil)
		v.wellKnownPort = "1" // nothing there
		_, _, err := v.Verify(ctx, OpenIDToken{AccessToken: "good", MatrixServerName: "example.com"})
		require.ErrorIs(t, err, ErrUnauthorized) // 8448 is mapped to 127.0.0.1:8448 where nobody listens
		require.Contains(t, *dialed, "example.com:8448")
	})
	t.Run("bad token", func(t *testing.T) {
		hs := newTLSHomeserver(t)
		hs.wellKnown = "example.com:" + hs.port()
		v, _ := verifierFor(t, hs, nil)
		_, _, err := v.Verify(ctx, OpenIDToken{AccessToken: "bad", MatrixServerName: "example.com"})
		require.ErrorIs(t, err, ErrUnauthorized)
		require.NotContains(t, err.Error(), "bad&", "the token is not in the error")
	})
	t.Run("certificate must match", func(t *testing.T) {
		hs := newTLSHomeserver(t)
		hs.wellKnown = "other.test:" + hs.port()
		v, _ := verifierFor(t, hs, nil)
		_, _, err := v.Verify(ctx, OpenIDToken{AccessToken: "good", MatrixServerName: "example.com"})
		require.ErrorIs(t, err, ErrUnauthorized)
		require.Contains(t, err.Error(), "certificate")
	})
}

func TestValidServerName(t *testing.T) {
	for _, ok := range []string{"example.com", "localhost", "localhost:8448", "1.2.3.4", "1.2.3.4:80", "[::1]", "[2001:db8::1]:8448", "a-b.c"} {
		require.NoError(t, validServerName(ok), ok)
	}
	for _, bad := range []string{"", "exa mple.com", "example.com:", "example.com:99999", "[1.2.3.4]", "[::1", "[::]1", "[::1]]", "[[::1]", "[::1]x:80", "a/b", "@x", strings.Repeat("a", 300), "example.com:+1"} {
		require.Error(t, validServerName(bad), bad)
	}
}

func TestTokenExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	exp, ok := tokenExpiry(3600, now)
	require.True(t, ok)
	require.Equal(t, now.Add(time.Hour), exp)
	exp, ok = tokenExpiry(1_800_000_500, now) // Dendrite: absolute time
	require.True(t, ok)
	require.Equal(t, time.Unix(1_800_000_500, 0), exp)
	_, ok = tokenExpiry(0, now)
	require.False(t, ok)
}
