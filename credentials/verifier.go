package credentials

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/gxfs-conf/gxconf/credentials/did"
)

// Attestation is what gxconf keeps after verifying one credential: who, which
// federation, issuer and type, only the claims policy needs, and until when.
type Attestation struct {
	ID          string         `json:"id"`
	UserID      string         `json:"user_id"`
	RoomID      string         `json:"room_id"`
	Federation  string         `json:"federation"`
	Issuer      string         `json:"issuer"`
	Type        string         `json:"type"`
	Format      string         `json:"format"`
	HolderBound bool           `json:"holder_bound"`
	Level       Level          `json:"level"`
	Claims      map[string]any `json:"claims"`
	// CredentialHash is the hex SHA-256 of the presented credential.
	CredentialHash string      `json:"credential_hash"`
	Status         []StatusRef `json:"status,omitempty"`
	VerifiedAt     time.Time   `json:"verified_at"`
	// ExpiresAt is min(credential validity, verification time + level TTL).
	ExpiresAt     time.Time `json:"expires_at"`
	InvalidatedAt time.Time `json:"invalidated_at,omitzero"`
	InvalidReason string    `json:"invalid_reason,omitempty"`
}

// Verifier is the credentials service: OID4VP endpoints, attestations,
// access decisions, the re-check loop and the audit log. Create it with
// [New]; it is safe for concurrent use.
type Verifier struct {
	*Checker
	cfg      Config
	log      zerolog.Logger
	opts     *options
	store    *store
	audit    *auditLog
	engine   *Engine
	key      crypto.Signer
	clientID string
	keyID    string
}

// New builds the verifier, runs the package's migrations on db (version
// table credentials_version) and compiles the access policy. cfg must have
// passed Validate.
func New(ctx context.Context, cfg Config, db *dbutil.Database, log zerolog.Logger, opts ...Option) (*Verifier, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	var atRest []byte
	if cfg.AtRestKey != "" {
		if atRest, err = base64.StdEncoding.DecodeString(cfg.AtRestKey); err != nil || len(atRest) != 32 {
			return nil, errors.New("at_rest_key must be base64 of 32 bytes")
		}
	} else if o.sealer == nil {
		return nil, errors.New("at_rest_key is required")
	}
	st, err := newStore(db, atRest, o.sealer)
	if err != nil {
		return nil, err
	}
	if err := st.upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade credentials tables: %w", err)
	}
	engine, err := NewEngine(ctx, cfg.PolicyFile)
	if err != nil {
		return nil, err
	}
	key, err := loadSigningKey(cfg.OID4VP.SigningKeyFile)
	if err != nil {
		return nil, err
	}
	jwkDID, err := did.JWKDID(key.Public())
	if err != nil {
		return nil, err
	}
	clientID := cfg.OID4VP.ClientID
	if clientID == "" {
		clientID = jwkDID
	}
	v := &Verifier{
		Checker:  newChecker(cfg, log, o),
		cfg:      cfg,
		log:      log,
		opts:     o,
		store:    st,
		audit:    &auditLog{db: st.db, ship: o.auditShip, log: log},
		engine:   engine,
		key:      key,
		clientID: clientID,
		keyID:    jwkDID + "#0",
	}
	return v, nil
}

// ClientID is the verifier's OID4VP client_id (the audience of presentations).
func (v *Verifier) ClientID() string { return v.clientID }

func loadSigningKey(path string) (crypto.Signer, error) {
	if path == "" {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read request signing key: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, errors.New("request signing key file is not PEM")
	}
	var k any
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to parse request signing key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("request signing key is not a signing key")
	}
	if _, err := algForKey(s); err != nil {
		return nil, fmt.Errorf("request signing key: %w (use P-256 or Ed25519)", err)
	}
	return s, nil
}

func randomID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// LevelDefaults returns the configured requirements of a level.
func (v *Verifier) LevelDefaults(l Level) LevelDefaults { return v.cfg.level(l) }

// effectivePolicy applies level defaults to a room's policy (nil: public,
// no requirements). Rooms may tighten but never loosen.
func (v *Verifier) effectivePolicy(p *AccessPolicy) AccessPolicy {
	var eff AccessPolicy
	if p != nil {
		eff = *p
		eff.RequiredCredentials = slices.Clone(p.RequiredCredentials)
	}
	if eff.Level.Rank() < 0 {
		eff.Level = LevelPublic
	}
	for _, t := range v.cfg.level(eff.Level).RequiredCredentialTypes {
		if !slices.ContainsFunc(eff.RequiredCredentials, func(r CredentialRequirement) bool { return r.Type == t }) {
			eff.RequiredCredentials = append(eff.RequiredCredentials, CredentialRequirement{Type: t})
		}
	}
	return eff
}

// ValidatePolicyChange checks a de.gxconf.access change like [ValidateChange]
// and additionally refuses vs-nfd unless the deployment is an approved
// environment (levels.vs_nfd_approved_environment).
func (v *Verifier) ValidatePolicyChange(old, next *AccessPolicy, senderPower, topPower int64) error {
	if err := ValidateChange(old, next, senderPower, topPower); err != nil {
		return err
	}
	if next.Level == LevelVSNfD && !v.cfg.Levels.VSNfDApprovedEnvironment {
		return fmt.Errorf("%w: this deployment is not an approved VS-NfD environment", ErrPolicyChangeForbidden)
	}
	for i, r := range next.RequiredCredentials {
		if r.Federation != "" && !slices.ContainsFunc(v.cfg.Federations, func(f FederationConfig) bool { return f.ID == r.Federation }) {
			return fmt.Errorf("%w: required_credentials[%d].federation: unknown federation %q", ErrInvalidPolicy, i, r.Federation)
		}
	}
	return nil
}

// Attestations returns the user's attestations that are currently valid
// (not expired, not revoked), regardless of room. Use [Verifier.Authorize] for
// decisions: it also applies the room level's TTL.
func (v *Verifier) Attestations(ctx context.Context, userID string) ([]Attestation, error) {
	return v.store.validAttestations(ctx, userID, v.now())
}

// AttestationsFor returns the user's attestations usable in a room at the
// given level now: valid, verified within the level's attestation TTL, and
// verified at that level or a higher one. An attestation of a lower level
// does not count: its credential's status was checked against that level's
// (longer) status-list max age, and a public one outlives an unreachable
// status list; the user is asked to present again at the room's level.
func (v *Verifier) AttestationsFor(ctx context.Context, userID string, level Level) ([]Attestation, error) {
	all, err := v.Attestations(ctx, userID)
	if err != nil {
		return nil, err
	}
	now := v.now()
	ttl := v.cfg.level(level).AttestationTTL
	server := serverOf(userID)
	out := all[:0]
	for _, a := range all {
		if a.Level.Rank() >= level.Rank() && now.Before(a.VerifiedAt.Add(ttl)) && v.federationCovers(a.Federation, server) {
			out = append(out, a)
		}
	}
	return out, nil
}

// federationCovers tells whether the configured federation id speaks for
// users of server; an attestation stored while its federation covered the
// user's homeserver counts only as long as it still does.
func (v *Verifier) federationCovers(id, server string) bool {
	for _, f := range v.cfg.Federations {
		if f.ID == id {
			return f.covers(server)
		}
	}
	return true
}

// AttestationsForRoom is AttestationsFor at the level of the room's policy
// (looked up through WithRoomPolicy; public when there is none).
func (v *Verifier) AttestationsForRoom(ctx context.Context, userID, roomID string) ([]Attestation, error) {
	var pol *AccessPolicy
	if v.opts.roomPolicy != nil {
		p, err := v.opts.roomPolicy(ctx, roomID)
		if err != nil {
			return nil, fmt.Errorf("failed to look up room policy: %w", err)
		}
		pol = p
	}
	return v.AttestationsFor(ctx, userID, v.effectivePolicy(pol).Level)
}

// AccessRequest asks whether a user may get a call token for a room.
type AccessRequest struct {
	UserID string
	// Policy is the room's de.gxconf.access content; nil means none (public).
	Policy *AccessPolicy
	Room   RoomFacts
}

// Authorize decides a token request: it loads the user's attestations usable
// at the room's level, re-checks their status first when the level demands
// it (vs-nfd), evaluates the Rego policy, appends the decision to the audit
// log and returns it. Decision.ExpiresAt bounds the token's lifetime.
func (v *Verifier) Authorize(ctx context.Context, r AccessRequest) (Decision, error) {
	pol := v.effectivePolicy(r.Policy)
	lvl := v.cfg.level(pol.Level)
	now := v.now()
	atts, err := v.AttestationsFor(ctx, r.UserID, pol.Level)
	if err != nil {
		return Decision{}, fmt.Errorf("failed to load attestations: %w", err)
	}
	if lvl.ReverifyEveryToken {
		kept := atts[:0]
		for _, a := range atts {
			if err := v.recheckOne(ctx, a, lvl.StatusMaxAge); err != nil {
				continue // recheckOne invalidated and reported it
			}
			kept = append(kept, a)
		}
		atts = kept
	}
	d, err := v.engine.Decide(ctx, DecisionInput{
		UserID: r.UserID, Room: r.Room, Policy: pol, LevelDefaults: lvl, Attestations: atts, Now: now,
	})
	if err != nil {
		return Decision{}, err
	}
	// Tokens never outlive the attestations that satisfied the policy.
	for _, a := range atts {
		if !slices.ContainsFunc(pol.RequiredCredentials, func(req CredentialRequirement) bool { return req.Type == a.Type }) {
			continue
		}
		exp := a.ExpiresAt
		if t := a.VerifiedAt.Add(lvl.AttestationTTL); t.Before(exp) {
			exp = t
		}
		if d.ExpiresAt.IsZero() || exp.Before(d.ExpiresAt) {
			d.ExpiresAt = exp
		}
		d.CredentialHashes = append(d.CredentialHashes, a.CredentialHash)
	}
	decision := "deny"
	if d.Allow {
		decision = "allow"
	}
	if err := v.audit.append(ctx, AuditEntry{
		Time: now, Decision: decision, UserID: r.UserID, RoomID: r.Room.ID, Level: pol.Level,
		CredentialHash: strings.Join(d.CredentialHashes, ","), Reason: strings.Join(d.Reasons, "; "),
	}); err != nil {
		// An unaudited decision must not grant access.
		return Decision{}, fmt.Errorf("failed to append audit entry: %w", err)
	}
	return d, nil
}

// AuditLog is the verifier's audit log, for entries of other components.
func (v *Verifier) AuditLog() *AuditLog { return &AuditLog{l: v.audit} }
