package focus

import (
	"slices"
	"time"
)

// ttlCache is a map whose entries expire and whose size is capped. The
// discovery caches are keyed by server names that anyone can choose (an
// unauthenticated /get_token names any matrix_server_name), so without a cap
// each new name would add an entry for good. Caching only saves a fetch: an
// entry that does not fit is simply fetched again next time. Callers hold
// their own lock.
type ttlCache[K comparable, V any] struct {
	max int
	m   map[K]ttlEntry[V]
}

type ttlEntry[V any] struct {
	val     V
	expires time.Time
}

func newTTLCache[K comparable, V any](max int) *ttlCache[K, V] {
	return &ttlCache[K, V]{max: max, m: make(map[K]ttlEntry[V])}
}

// get returns the value of k unless it is missing or expired at now.
func (c *ttlCache[K, V]) get(k K, now time.Time) (V, bool) {
	e, ok := c.m[k]
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.val, true
}

// put stores v under k until expires, making room first if the cache is full.
func (c *ttlCache[K, V]) put(k K, v V, expires, now time.Time) {
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		c.makeRoom(now)
	}
	c.m[k] = ttlEntry[V]{val: v, expires: expires}
}

// makeRoom drops the expired entries and then, oldest (expiring first)
// first, down to three quarters of the cap: a full cache sees one sort per
// quarter of its size in new keys, not a scan per key, however fast a client
// invents server names.
func (c *ttlCache[K, V]) makeRoom(now time.Time) {
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
		}
	}
	keep := min(c.max-1, c.max*3/4)
	if len(c.m) <= keep {
		return
	}
	type aged struct {
		k       K
		expires time.Time
	}
	all := make([]aged, 0, len(c.m))
	for k, e := range c.m {
		all = append(all, aged{k, e.expires})
	}
	slices.SortFunc(all, func(a, b aged) int { return a.expires.Compare(b.expires) })
	for _, a := range all[:len(all)-keep] {
		delete(c.m, a.k)
	}
}

func (c *ttlCache[K, V]) len() int { return len(c.m) }
