package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a log sink the components' goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A shutdown that hangs names the component holding it; the others' exit
// does not hide it, and every component's error is returned.
func TestRunAllNamesComponentsStillStopping(t *testing.T) {
	var logs syncBuffer
	log := zerolog.New(&logs)
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	reported := make(chan []string, 1)
	boom := errors.New("boom")
	done := make(chan error, 1)
	go func() {
		done <- runAll(ctx, log, 10*time.Millisecond,
			component{"quick", func(ctx context.Context) error { <-ctx.Done(); return nil }},
			component{"stuck", func(ctx context.Context) error {
				<-ctx.Done()
				<-release
				return boom
			}},
		)
	}()
	cancel()
	go func() {
		// Release the stuck component once the log has named it (or
		// after a minute, to fail rather than hang).
		defer close(release)
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
			for _, line := range bytes.Split([]byte(logs.String()), []byte("\n")) {
				var e struct {
					Message    string   `json:"message"`
					Components []string `json:"components"`
				}
				if json.Unmarshal(line, &e) == nil && e.Message == "Still stopping" {
					reported <- e.Components
					return
				}
			}
			time.Sleep(5 * time.Millisecond) // polling a log buffer
		}
	}()
	err := <-done
	require.ErrorIs(t, err, boom)
	select {
	case names := <-reported:
		require.Equal(t, []string{"stuck"}, names, "only the component still running is named")
	default:
		t.Fatal("runAll returned before naming the stuck component")
	}
	require.Contains(t, logs.String(), "All components stopped")
}

// One component ending stops the others; runAll then returns at once.
func TestRunAllOneEndsAll(t *testing.T) {
	failed := errors.New("listener failed")
	err := runAll(context.Background(), zerolog.Nop(), time.Hour,
		component{"focus", func(ctx context.Context) error { return failed }},
		component{"sfu", func(ctx context.Context) error { <-ctx.Done(); return nil }},
	)
	require.ErrorIs(t, err, failed)
}
