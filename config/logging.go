package config

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/rs/zerolog"
)

func parseLevel(s string) (zerolog.Level, error) {
	switch s {
	case "trace", "debug", "info", "warn", "error":
		return zerolog.ParseLevel(s)
	}
	return zerolog.NoLevel, fmt.Errorf("must be one of trace, debug, info, warn, error; got %q", s)
}

// NewLogger builds the process logger described by the logging section.
// Pretty output goes to a console writer; JSON is written as is.
func (l Logging) NewLogger(out io.Writer) zerolog.Logger {
	level, err := parseLevel(l.Level)
	if err != nil {
		level = zerolog.InfoLevel
	}
	if out == nil {
		out = os.Stderr
	}
	if l.Format == "pretty" {
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger()
}

func checkHTTPURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("must be an http or https URL, got %q", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("has no host: %q", raw)
	}
	return nil
}
