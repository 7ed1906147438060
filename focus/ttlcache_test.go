package focus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A full cache drops its expired entries, then the ones expiring first down
// to three quarters of its cap; replacing a key never evicts another.
func TestTTLCacheEviction(t *testing.T) {
	now := time.Now()
	c := newTTLCache[string, int](4)
	for i, k := range []string{"a", "b", "c", "d"} {
		c.put(k, i, now.Add(time.Duration(i+1)*time.Minute), now)
	}
	c.put("b", 10, now.Add(5*time.Minute), now)
	require.Equal(t, 4, c.len(), "replacing b evicted nothing")

	c.put("e", 4, now.Add(6*time.Minute), now)
	require.Equal(t, 4, c.len())
	_, ok := c.get("a", now)
	require.False(t, ok, "a expired first, so it went")
	for _, k := range []string{"b", "c", "d", "e"} {
		_, ok = c.get(k, now)
		require.True(t, ok, k)
	}

	later := now.Add(3*time.Minute + time.Second) // c has expired, d not
	c.put("f", 5, later.Add(time.Hour), later)
	require.Equal(t, 4, c.len(), "the expired c made room")
	for _, k := range []string{"b", "d", "e", "f"} {
		_, ok = c.get(k, later)
		require.True(t, ok, k)
	}
}

// Every unauthenticated /get_token may name a new matrix_server_name; the
// well-known cache must not keep them all, and must still cache new hosts.
func TestWellKnownCacheBounded(t *testing.T) {
	hs := newTLSHomeserver(t)
	hs.wellKnown = "example.com:" + hs.port()
	v, _ := verifierFor(t, hs, nil)
	dial := v.dial
	v.dial = func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("refused") }
	for i := range 2 * maxDiscoveryCache {
		_, _, err := v.Verify(context.Background(), OpenIDToken{AccessToken: "x", MatrixServerName: fmt.Sprintf("h%d.attacker.example", i)})
		require.ErrorIs(t, err, ErrUnauthorized)
	}
	require.LessOrEqual(t, v.wellKnown.len(), maxDiscoveryCache)

	v.dial = dial
	require.Equal(t, hs.wellKnown, v.fetchWellKnown(context.Background(), "example.com"))
	got, ok := v.wellKnown.get("example.com", time.Now())
	require.True(t, ok, "a full cache still takes new hosts")
	require.Equal(t, hs.wellKnown, got)
	require.LessOrEqual(t, v.wellKnown.len(), maxDiscoveryCache)
}
