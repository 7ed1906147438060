package cluster

import (
	"github.com/rs/zerolog"
)

// New returns the registry cfg asks for: Redis when redis.address is set,
// otherwise Embedded.
func New(cfg Config, log zerolog.Logger, opts ...Option) (Registry, error) {
	if cfg.Multi() {
		return NewRedis(cfg, log, opts...)
	}
	return NewEmbedded(cfg, log, opts...)
}

// LoadFunc adapts a function to LoadSource.
type LoadFunc func() Load

// Load calls f.
func (f LoadFunc) Load() Load { return f() }
