package sfu

import (
	"bytes"
	"fmt"
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

// The server's factory hands out one logger per scope, which still names
// its scope and keeps the factory's quiet levels; past maxPionScopes scopes it
// makes loggers without keeping them.
func TestPionLoggerPerScope(t *testing.T) {
	var buf bytes.Buffer
	f := newPionLoggerFactory(zerolog.New(&buf).Level(zerolog.InfoLevel), true)
	ice := f.NewLogger("ice")
	require.Same(t, ice, f.NewLogger("ice"))
	require.NotSame(t, ice, f.NewLogger("dtls"))
	f.NewLogger("dtls").Warn("quiet")
	require.Empty(t, buf.String(), "quiet factory lowers Warn to Debug")
	f.NewLogger("sctp").Info("x")
	f2 := newPionLoggerFactory(zerolog.New(&buf), false)
	f2.NewLogger("sctp").Error("loud")
	require.Contains(t, buf.String(), `"pion_scope":"sctp"`)
	require.Contains(t, buf.String(), `"detail":"loud"`)
	for i := 0; i < 2*maxPionScopes; i++ {
		f.NewLogger(fmt.Sprint("scope", i))
	}
	require.Len(t, f.scopes.log, maxPionScopes)
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
