package focus

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// keyedLimiter is a token bucket per key (client IP or user ID). Idle buckets
// are dropped by sweep so that the map stays bounded by active clients.
type keyedLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newKeyedLimiter(c RateConfig) *keyedLimiter {
	if c.Rate <= 0 {
		return nil
	}
	return &keyedLimiter{limit: rate.Limit(c.Rate), burst: c.Burst, buckets: make(map[string]*bucket)}
}

// allow takes a token for key; when none is left it returns how long to wait.
func (l *keyedLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep forgets buckets idle for longer than it takes them to refill.
func (l *keyedLimiter) sweep(now time.Time) {
	if l == nil {
		return
	}
	idle := time.Duration(float64(l.burst)/float64(l.limit)*float64(time.Second)) + time.Minute
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, b := range l.buckets {
		if now.Sub(b.seen) > idle {
			delete(l.buckets, k)
		}
	}
}

// clientIP is the peer address, or the last X-Forwarded-For hop when the peer
// is a trusted proxy.
func clientIP(r *http.Request, trusted []*net.IPNet) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer := net.ParseIP(host)
	if peer == nil || len(trusted) == 0 {
		return host
	}
	isTrusted := false
	for _, n := range trusted {
		if n.Contains(peer) {
			isTrusted = true
			break
		}
	}
	if !isTrusted {
		return host
	}
	hops := strings.Split(r.Header.Get("X-Forwarded-For"), ",")
	if last := strings.TrimSpace(hops[len(hops)-1]); net.ParseIP(last) != nil {
		return last
	}
	return host
}
