package main

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// logEvents hands each log event zerolog writes to the test.
type logEvents chan []byte

func (c logEvents) Write(p []byte) (int, error) {
	c <- append([]byte(nil), p...)
	return len(p), nil
}

// A shutdown that hangs names the component holding it (not the ones that
// stopped), and every component's error is returned.
func TestRunAllNamesComponentsStillStopping(t *testing.T) {
	events := make(logEvents, 16)
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	boom := errors.New("boom")
	done := make(chan error, 1)
	go func() {
		done <- runAll(ctx, zerolog.New(events), 10*time.Millisecond,
			component{"quick", func(ctx context.Context) error { <-ctx.Done(); return nil }},
			component{"stuck", func(ctx context.Context) error {
				<-ctx.Done()
				<-release
				return boom
			}},
		)
	}()
	cancel()
	type event struct {
		Message    string   `json:"message"`
		Components []string `json:"components"`
	}
	next := func() event {
		select {
		case b := <-events:
			var e event
			require.NoError(t, json.Unmarshal(b, &e))
			return e
		case err := <-done:
			t.Fatalf("runAll returned (%v) while a component was still running", err)
		case <-time.After(time.Minute):
			t.Fatal("no log event within a minute")
		}
		return event{}
	}
	require.Equal(t, "Stopping all components", next().Message)
	e := next()
	require.Equal(t, "Still stopping", e.Message)
	require.Equal(t, []string{"stuck"}, e.Components, "only the component still running is named")
	close(release)
	require.ErrorIs(t, <-done, boom)
	// runAll has returned: the rest of its log is buffered.
	var last event
	for len(events) > 0 {
		require.NoError(t, json.Unmarshal(<-events, &last))
	}
	require.Equal(t, "All components stopped", last.Message)
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
