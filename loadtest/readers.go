package loadtest

import "sync"

// Readers runs a client's track readers and waits for them when the client
// leaves. The SDK calls OnTrackSubscribed on its own goroutines, and it may
// do so while the client disconnects: a bare sync.WaitGroup then has an Add
// from zero that nothing orders before Wait, which the race detector reports
// (and which may start a reader Wait no longer counts). Readers takes both
// under one lock, and once Wait has begun Go starts nothing.
//
// The zero value is ready; a Readers must not be copied after first use.
type Readers struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// Go runs f on a new goroutine unless Wait has begun, and reports whether
// it did.
func (r *Readers) Go(f func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
	return true
}

// Wait refuses new readers and waits until the running ones have returned.
// It may be called more than once.
func (r *Readers) Wait() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.wg.Wait()
}
