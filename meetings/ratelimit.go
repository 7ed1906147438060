package meetings

import (
	"sync"
	"time"
)

// createBuckets is a token bucket per organiser for creates: Burst
// tokens, one more every Every. Cancelled meetings do not count toward
// max_meetings_per_organiser, so without it one account could create and
// cancel without end. Kept in memory: a restart refills every bucket.
type createBuckets struct {
	rate CreateRate
	mu   sync.Mutex
	m    map[string]bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxBuckets: beyond it, full buckets (idle organisers) are dropped.
const maxBuckets = 10000

// take spends one of user's tokens at now; when none is left it returns
// false and how long until the next.
func (b *createBuckets) take(user string, now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string]bucket{}
	}
	k, ok := b.m[user]
	if !ok {
		k = bucket{tokens: float64(b.rate.Burst), at: now}
	}
	k = b.refill(k, now)
	if k.tokens < 1 {
		b.m[user] = k
		return false, time.Duration((1 - k.tokens) * float64(b.rate.Every))
	}
	k.tokens--
	b.m[user] = k
	if len(b.m) > maxBuckets {
		for u, o := range b.m {
			if b.refill(o, now).tokens >= float64(b.rate.Burst) {
				delete(b.m, u)
			}
		}
	}
	return true, 0
}

// give returns a token taken for a create that then failed.
func (b *createBuckets) give(user string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if k, ok := b.m[user]; ok {
		k.tokens = min(k.tokens+1, float64(b.rate.Burst))
		b.m[user] = k
	}
}

func (b *createBuckets) refill(k bucket, now time.Time) bucket {
	if d := now.Sub(k.at); d > 0 {
		k.tokens = min(k.tokens+float64(d)/float64(b.rate.Every), float64(b.rate.Burst))
		k.at = now
	}
	return k
}
