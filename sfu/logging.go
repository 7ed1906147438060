package sfu

import (
	"fmt"
	"sync"

	"github.com/pion/logging"
	"github.com/rs/zerolog"
)

// pionLoggerFactory routes pion's logs into zerolog. Pion's levels are
// chatty (Info logs every candidate pair, Warn every packet that arrives
// during teardown), so each is lowered one step: Error becomes Warn, Warn
// Info, Info Debug, Debug and Trace become Trace.
type pionLoggerFactory struct {
	log zerolog.Logger
	// quiet lowers Error and Warn to Debug as well: pion/turn reports every
	// client that drops its connection, or fails to authenticate (with the
	// username), as an error; the TURN metrics count what matters.
	quiet bool
	// scopes, when set (newPionLoggerFactory), shares one logger per scope:
	// pion asks for a dozen per peer connection, each a zerolog context of
	// its own (~13 KB per participant), and they would all be the same.
	scopes *pionScopes
}

// pionScopes is the loggers a factory made, by scope. Pion's scopes are a
// fixed set of names in its code; past maxPionScopes a logger is made
// afresh rather than kept.
type pionScopes struct {
	mu  sync.Mutex
	log map[string]logging.LeveledLogger
}

const maxPionScopes = 64

func newPionLoggerFactory(log zerolog.Logger, quiet bool) pionLoggerFactory {
	return pionLoggerFactory{log: log, quiet: quiet, scopes: &pionScopes{log: map[string]logging.LeveledLogger{}}}
}

// NewLogger names pion's scope under its own key: the logger it extends
// already carries "component" (the SFU's), and zerolog would write a second
// "component" key instead of replacing the first.
func (f pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	if f.scopes == nil {
		return f.newLogger(scope)
	}
	f.scopes.mu.Lock()
	defer f.scopes.mu.Unlock()
	if l, ok := f.scopes.log[scope]; ok {
		return l
	}
	l := f.newLogger(scope)
	if len(f.scopes.log) < maxPionScopes {
		f.scopes.log[scope] = l
	}
	return l
}

func (f pionLoggerFactory) newLogger(scope string) logging.LeveledLogger {
	return &pionLogger{log: f.log.With().Str("pion_scope", scope).Logger(), quiet: f.quiet}
}

type pionLogger struct {
	log   zerolog.Logger
	quiet bool
}

func (l pionLogger) emit(e *zerolog.Event, msg string) {
	e.Str("detail", msg).Msg("pion")
}

func (l pionLogger) Trace(msg string) { l.emit(l.log.Trace(), msg) }
func (l pionLogger) Tracef(format string, args ...any) {
	if e := l.log.Trace(); e.Enabled() {
		l.emit(e, fmt.Sprintf(format, args...))
	}
}
func (l pionLogger) Debug(msg string) { l.emit(l.log.Trace(), msg) }
func (l pionLogger) Debugf(format string, args ...any) {
	if e := l.log.Trace(); e.Enabled() {
		l.emit(e, fmt.Sprintf(format, args...))
	}
}
func (l pionLogger) Info(msg string) { l.emit(l.log.Debug(), msg) }
func (l pionLogger) Infof(format string, args ...any) {
	if e := l.log.Debug(); e.Enabled() {
		l.emit(e, fmt.Sprintf(format, args...))
	}
}
func (l pionLogger) Warn(msg string) { l.emit(l.warnEvent(), msg) }
func (l pionLogger) Warnf(format string, args ...any) {
	if e := l.warnEvent(); e.Enabled() {
		l.emit(e, fmt.Sprintf(format, args...))
	}
}
func (l pionLogger) Error(msg string) { l.emit(l.errorEvent(), msg) }
func (l pionLogger) Errorf(format string, args ...any) {
	if e := l.errorEvent(); e.Enabled() {
		l.emit(e, fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) warnEvent() *zerolog.Event {
	if l.quiet {
		return l.log.Debug()
	}
	return l.log.Info()
}

func (l pionLogger) errorEvent() *zerolog.Event {
	if l.quiet {
		return l.log.Debug()
	}
	return l.log.Warn()
}
