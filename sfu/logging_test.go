package sfu

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

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
