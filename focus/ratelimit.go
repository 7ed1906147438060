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

// clientIP is the peer address or, when the peer is a trusted proxy, the
// address that proxy saw: X-Forwarded-For is walked from its right-most entry
// leftwards past every trusted proxy, and the first untrusted address is the
// client (as nginx's real_ip_recursive does). All field lines of the header
// are one comma-separated list (RFC 9110 §5.3): a proxy such as HAProxy
// ("option forwardfor") appends its own line after the one the client sent,
// so reading only the first line would let the client choose its address.
func clientIP(r *http.Request, trusted []*net.IPNet) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr := net.ParseIP(host)
	if addr == nil || len(trusted) == 0 {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0 && isTrustedProxy(addr, trusted); i-- {
		hop := strings.TrimSpace(hops[i])
		if hop == "" {
			continue // no header, or an empty list element ("a,,b")
		}
		prev := net.ParseIP(hop)
		if prev == nil {
			// A trusted proxy reported something that is not an address: keep
			// the last address we could vouch for.
			break
		}
		addr = prev
	}
	return addr.String()
}

func isTrustedProxy(ip net.IP, trusted []*net.IPNet) bool {
	for _, n := range trusted {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}
