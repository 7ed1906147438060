package credentials

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// AccessEventType is the room state event holding a room's access policy
// (state key "").
const AccessEventType = "de.gxconf.access"

// Level is a confidentiality level.
type Level string

// Confidentiality levels, in increasing order of protection.
const (
	LevelPublic Level = "public"
	LevelKritis Level = "kritis"
	LevelVSNfD  Level = "vs-nfd"
)

// Rank orders levels (public 0, kritis 1, vs-nfd 2; unknown -1).
func (l Level) Rank() int {
	switch l {
	case LevelPublic:
		return 0
	case LevelKritis:
		return 1
	case LevelVSNfD:
		return 2
	}
	return -1
}

// AccessPolicy is the content of a de.gxconf.access state event.
type AccessPolicy struct {
	Level               Level                   `json:"level"`
	RequiredCredentials []CredentialRequirement `json:"required_credentials,omitempty"`
	AllowedHomeservers  []string                `json:"allowed_homeservers,omitempty"`
	MaxParticipants     int                     `json:"max_participants,omitempty"`
	NeedToKnow          []string                `json:"need_to_know,omitempty"`
}

// CredentialRequirement demands an attestation of Type from Federation (empty:
// any configured federation) whose claims satisfy every constraint.
type CredentialRequirement struct {
	Federation string                     `json:"federation,omitempty"`
	Type       string                     `json:"type"`
	Claims     map[string]ClaimConstraint `json:"claims,omitempty"`
}

// ClaimConstraint constrains one claim (dotted path below credentialSubject):
// exactly one of Eq or In.
type ClaimConstraint struct {
	Eq any   `json:"eq,omitempty"`
	In []any `json:"in,omitempty"`
}

// ParseAccessPolicy strictly parses and validates state event content.
func ParseAccessPolicy(content []byte) (*AccessPolicy, error) {
	if len(content) > 64<<10 {
		return nil, fmt.Errorf("%w: content larger than 64 KiB", ErrInvalidPolicy)
	}
	var p AccessPolicy
	if err := unmarshalStrict(content, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks the policy on its own (level-independent configuration is
// checked by [Verifier.ValidatePolicyChange]). All problems are reported.
func (p *AccessPolicy) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidPolicy, key, fmt.Sprintf(format, args...)))
	}
	if p.Level.Rank() < 0 {
		add("level", "must be public, kritis or vs-nfd, got %q", p.Level)
	}
	if p.Level.Rank() >= LevelKritis.Rank() && len(p.AllowedHomeservers) == 0 {
		add("allowed_homeservers", "required at level %s", p.Level)
	}
	if p.Level == LevelVSNfD && len(p.NeedToKnow) == 0 {
		add("need_to_know", "required at level vs-nfd")
	}
	if p.Level.Rank() >= LevelKritis.Rank() && len(p.RequiredCredentials) == 0 {
		add("required_credentials", "at least one is required at level %s", p.Level)
	}
	for i, s := range p.AllowedHomeservers {
		if s == "" || strings.ContainsAny(s, "/@ ") {
			add(fmt.Sprintf("allowed_homeservers[%d]", i), "%q is not a server name", s)
		}
	}
	for i, u := range p.NeedToKnow {
		if !validUserID(u) {
			add(fmt.Sprintf("need_to_know[%d]", i), "%q is not a Matrix user ID", u)
		}
	}
	if p.MaxParticipants < 0 || p.MaxParticipants > 100000 {
		add("max_participants", "must be between 0 (no limit) and 100000")
	}
	if len(p.RequiredCredentials) > 16 {
		add("required_credentials", "at most 16 entries")
	}
	for i, r := range p.RequiredCredentials {
		k := fmt.Sprintf("required_credentials[%d]", i)
		if r.Type == "" {
			add(k+".type", "must not be empty")
		}
		for path, cc := range r.Claims {
			ck := k + ".claims." + path
			if path == "" || strings.HasPrefix(path, ".") || strings.HasSuffix(path, ".") || strings.Contains(path, "..") {
				add(ck, "invalid claim path")
			}
			if (cc.Eq == nil) == (len(cc.In) == 0) {
				add(ck, "exactly one of eq or in is required")
			}
		}
	}
	return errors.Join(errs...)
}

func validUserID(u string) bool {
	local, server, ok := strings.Cut(strings.TrimPrefix(u, "@"), ":")
	return ok && strings.HasPrefix(u, "@") && local != "" && server != "" && !strings.ContainsAny(u, " /")
}

// ValidateChange checks a policy change sent by a user with senderPower in a
// room whose highest power level is topPower. old is nil when the room had
// no policy (which counts as public). Lowering the level needs the top power
// level; raising it is free.
func ValidateChange(old, next *AccessPolicy, senderPower, topPower int64) error {
	if next == nil {
		return fmt.Errorf("%w: policy removed", ErrInvalidPolicy)
	}
	if err := next.Validate(); err != nil {
		return err
	}
	oldLevel := LevelPublic
	if old != nil {
		oldLevel = old.Level
	}
	if next.Level.Rank() < oldLevel.Rank() && senderPower < topPower {
		return fmt.Errorf("%w: lowering the level from %s to %s needs power level %d, sender has %d",
			ErrPolicyChangeForbidden, oldLevel, next.Level, topPower, senderPower)
	}
	return nil
}

// claimPaths returns the claim paths a policy reads, sorted and unique.
func (p *AccessPolicy) claimPaths() []string {
	var out []string
	for _, r := range p.RequiredCredentials {
		for path := range r.Claims {
			out = append(out, path)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// asInput returns the policy in its JSON wire form for Rego input.
func (p AccessPolicy) asInput() map[string]any {
	raw, _ := json.Marshal(p)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return m
}
