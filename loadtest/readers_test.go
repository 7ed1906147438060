package loadtest

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// Wait returns only after the running readers have, and a reader offered
// after Wait has begun is not started.
func TestReadersWaitAndRefuse(t *testing.T) {
	var r Readers
	release := make(chan struct{})
	var finished atomic.Bool
	require.True(t, r.Go(func() {
		<-release
		finished.Store(true)
	}))
	waited := make(chan struct{})
	go func() {
		r.Wait()
		close(waited)
	}()
	close(release)
	<-waited
	require.True(t, finished.Load(), "Wait returned before its reader")

	ran := make(chan struct{}, 1)
	require.False(t, r.Go(func() { ran <- struct{}{} }), "Go after Wait")
	r.Wait() // a second Wait returns at once
	select {
	case <-ran:
		t.Fatal("a reader offered after Wait ran")
	default:
	}
}

// Subscriptions arriving while the client leaves: under -race a bare
// sync.WaitGroup is reported here (an Add from zero unordered with Wait);
// Readers is not. When Wait returns, every reader Go accepted has ended,
// and none is accepted later.
func TestReadersSubscriptionDuringWait(t *testing.T) {
	for range 200 {
		var r Readers
		var accepted, ended atomic.Int64
		var offer sync.WaitGroup
		for range 4 {
			offer.Add(1)
			go func() {
				defer offer.Done()
				if r.Go(func() { ended.Add(1) }) {
					accepted.Add(1)
				}
			}()
		}
		r.Wait()
		endedAtWait := ended.Load()
		offer.Wait()
		require.Equal(t, accepted.Load(), endedAtWait)
		require.Equal(t, endedAtWait, ended.Load())
	}
}
