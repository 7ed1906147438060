package credentials

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Run re-checks stored attestations every recheck_interval until ctx ends:
// expiry and status lists (fetched again once older than the attestation
// level's max age). Expired or revoked attestations are invalidated, audited
// and reported through WithOnInvalidated. It also deletes stale requests.
// Run returns nil when ctx is cancelled.
func (v *Verifier) Run(ctx context.Context) error {
	t := time.NewTicker(v.cfg.RecheckInterval)
	defer t.Stop()
	for {
		if err := v.RecheckNow(ctx); err != nil && ctx.Err() == nil {
			v.log.Warn().Err(err).Msg("Attestation re-check failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RecheckNow runs one re-check pass.
func (v *Verifier) RecheckNow(ctx context.Context) error {
	now := v.now()
	var errs []error
	if err := v.store.deleteExpiredRequests(ctx, now.Add(-time.Hour)); err != nil {
		errs = append(errs, fmt.Errorf("failed to delete expired requests: %w", err))
	}
	atts, err := v.store.activeAttestations(ctx)
	if errors.Is(err, errUnreadableClaims) {
		// One bad row must not stop the re-check (revocations, expiry,
		// removals from calls) of everyone else's.
		errs = append(errs, fmt.Errorf("failed to load attestations: %w", err))
	} else if err != nil {
		return errors.Join(append(errs, fmt.Errorf("failed to load attestations: %w", err))...)
	}
	for _, a := range atts {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		_ = v.recheckOne(ctx, a, v.cfg.level(a.Level).StatusMaxAge)
	}
	if err := v.store.purgeInvalid(ctx, now.Add(-24*time.Hour)); err != nil {
		errs = append(errs, fmt.Errorf("failed to purge attestations: %w", err))
	}
	return errors.Join(errs...)
}

// recheckOne checks expiry and status of one attestation. When it is no
// longer valid it is invalidated, audited and reported, and the reason is
// returned. A status list that cannot be fetched invalidates attestations
// of kritis and vs-nfd (fail closed) but only logs for public.
func (v *Verifier) recheckOne(ctx context.Context, a Attestation, maxAge time.Duration) error {
	now := v.now()
	var reason error
	if !now.Before(a.ExpiresAt) {
		reason = fmt.Errorf("%w: attestation expired at %s", ErrExpired, a.ExpiresAt.UTC().Format(time.RFC3339))
	} else if len(a.Status) > 0 {
		vc := &VerifiedCredential{Issuer: a.Issuer, Status: a.Status}
		if err := v.status.check(ctx, vc, "", maxAge); err != nil {
			if errors.Is(err, ErrStatusUnavailable) && a.Level == LevelPublic {
				v.log.Warn().Str("user_id", a.UserID).Err(err).Msg("Status list unavailable; keeping public attestation")
				return nil
			}
			reason = err
		}
	}
	if reason == nil {
		return nil
	}
	changed, err := v.store.invalidate(ctx, a.ID, now, ReasonCode(reason))
	if err != nil {
		return fmt.Errorf("failed to invalidate attestation: %w", err)
	}
	if !changed {
		return reason // someone else already handled it
	}
	decision := "expire"
	if errors.Is(reason, ErrRevoked) {
		decision = "revoke"
	}
	if err := v.audit.append(ctx, AuditEntry{Time: now, Decision: decision, UserID: a.UserID, RoomID: a.RoomID,
		Level: a.Level, CredentialHash: a.CredentialHash, Reason: ReasonCode(reason) + ": " + reason.Error()}); err != nil {
		v.log.Error().Err(err).Msg("Failed to audit attestation invalidation")
	}
	a.InvalidatedAt, a.InvalidReason = now, ReasonCode(reason)
	if v.opts.onInvalidated != nil {
		v.opts.onInvalidated(ctx, a, reason)
	}
	return reason
}
