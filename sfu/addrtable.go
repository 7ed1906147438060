package sfu

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// addrTable maps source addresses on the mux socket to connections. The
// socket readers look addresses up without a lock; a change copies the
// map under mu. The zero value is an empty table.
type addrTable[T comparable] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[netip.AddrPort]T]
}

// get returns what addr maps to (the zero T if nothing).
func (t *addrTable[T]) get(addr netip.AddrPort) T {
	var v T
	if m := t.m.Load(); m != nil {
		v = (*m)[addr]
	}
	return v
}

// len is the number of mapped addresses.
func (t *addrTable[T]) len() int {
	if m := t.m.Load(); m != nil {
		return len(*m)
	}
	return 0
}

// put maps addr to v; a newer mapping of the same address replaces the
// older one.
func (t *addrTable[T]) put(addr netip.AddrPort, v T) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var old map[netip.AddrPort]T
	if m := t.m.Load(); m != nil {
		old = *m
	}
	next := make(map[netip.AddrPort]T, len(old)+1)
	for a, o := range old {
		next[a] = o
	}
	next[addr] = v
	t.m.Store(&next)
}

// remove drops every address mapped to v.
func (t *addrTable[T]) remove(v T) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.m.Load()
	if m == nil || len(*m) == 0 {
		return
	}
	next := make(map[netip.AddrPort]T, len(*m))
	for a, o := range *m {
		if o != v {
			next[a] = o
		}
	}
	t.m.Store(&next)
}
