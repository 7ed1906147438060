package sfu

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/pion/logging"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// A pion line written through the SFU's logger carries the SFU's component
// key once, and pion's scope under its own key.
func TestPionLogsOneComponentKey(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(&buf).With().Str("component", "sfu").Logger()
	pionLoggerFactory{log: log}.NewLogger("ice").Error("connection failed")
	line := buf.String()
	require.Equal(t, 1, strings.Count(line, `"component"`), line)
	require.Contains(t, line, `"pion_scope":"ice"`)
}

// recordingFactory remembers the scopes pion asked loggers for.
type recordingFactory struct {
	mu     sync.Mutex
	scopes []string
	inner  logging.LoggerFactory
}

func (f *recordingFactory) NewLogger(scope string) logging.LeveledLogger {
	f.mu.Lock()
	f.scopes = append(f.scopes, scope)
	f.mu.Unlock()
	return f.inner.NewLogger(scope)
}

// The publisher's pion interceptors log through the SFU's factory; pion's
// default factory would write plain text to stderr. (NACK and TWCC feedback
// are the SFU's own, feedback.go, and log nothing.)
func TestPublisherInterceptorsUseTheSFULogger(t *testing.T) {
	rec := &recordingFactory{inner: pionLoggerFactory{log: zerolog.Nop()}}
	var se webrtc.SettingEngine
	se.LoggerFactory = rec
	api, err := newPublisherAPI(se, rec, newFeedbackClock(feedbackInterval))
	require.NoError(t, err)
	pc, _, err := api.newPeerConnection(false, nil)
	require.NoError(t, err)
	require.NoError(t, pc.Close())
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, scope := range []string{"receiver_interceptor"} {
		require.Contains(t, rec.scopes, scope)
	}
}
