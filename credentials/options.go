package credentials

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"time"
)

// Option configures a [Checker] or [Verifier]. Options may fail.
type Option func(*options) error

type options struct {
	rootCAs       *x509.CertPool
	now           func() time.Time
	onAttestation func(context.Context, Attestation)
	onInvalidated func(context.Context, Attestation, error)
	roomPolicy    func(context.Context, string) (*AccessPolicy, error)
	sealer        Sealer
	auditShip     io.Writer
}

// WithAuditShipping writes every audit entry, once committed, to w as one
// JSON line (AuditConfig.OpenShip opens the configured destination).
func WithAuditShipping(w io.Writer) Option {
	return func(o *options) error {
		if w == nil {
			return errors.New("WithAuditShipping: nil writer")
		}
		o.auditShip = w
		return nil
	}
}

// WithSealer encrypts attestation claims with s (key ids, rotation: package
// atrest) instead of at_rest_key alone.
func WithSealer(s Sealer) Option {
	return func(o *options) error {
		if s == nil {
			return errors.New("WithSealer: nil sealer")
		}
		o.sealer = s
		return nil
	}
}

// WithRootCAs replaces the system trust roots for did:web and status-list
// fetches (tests use a self-signed loopback certificate).
func WithRootCAs(pool *x509.CertPool) Option {
	return func(o *options) error {
		if pool == nil {
			return errors.New("WithRootCAs: nil pool")
		}
		o.rootCAs = pool
		return nil
	}
}

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return errors.New("WithClock: nil clock")
		}
		o.now = now
		return nil
	}
}

// WithOnAttestation registers a callback fired after a wallet's presentation
// was verified and its attestation stored. It runs on the request goroutine;
// keep it short.
func WithOnAttestation(fn func(ctx context.Context, a Attestation)) Option {
	return func(o *options) error {
		o.onAttestation = fn
		return nil
	}
}

// WithOnInvalidated registers the callback the re-check loop fires for each
// attestation found expired or revoked; reason wraps ErrExpired, ErrRevoked
// or ErrStatusUnavailable. The integrator removes the user from SFU rooms and
// has the bot say why (use [ReasonCode] and reason.Error()).
func WithOnInvalidated(fn func(ctx context.Context, a Attestation, reason error)) Option {
	return func(o *options) error {
		o.onInvalidated = fn
		return nil
	}
}

// WithRoomPolicy lets CreateRequest look up a room's access policy, so that
// the presentation definition asks for the right credential types and the
// attestation keeps exactly the claims the policy reads.
func WithRoomPolicy(fn func(ctx context.Context, roomID string) (*AccessPolicy, error)) Option {
	return func(o *options) error {
		o.roomPolicy = fn
		return nil
	}
}

func buildOptions(opts []Option) (*options, error) {
	o := &options{now: time.Now}
	var errs []error
	for _, fn := range opts {
		if err := fn(o); err != nil {
			errs = append(errs, err)
		}
	}
	return o, errors.Join(errs...)
}
