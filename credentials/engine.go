package credentials

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"
)

//go:embed policy/access.rego
var defaultPolicy string

// PolicyQuery is the Rego rule an operator policy must define; it evaluates
// to {allow: bool, reasons: [string], missing: [requirement]}.
const PolicyQuery = "data.gxconf.access.decision"

// Engine evaluates room-access decisions with OPA/Rego. The compiled query
// is immutable, so Decide is safe for concurrent use.
type Engine struct {
	query rego.PreparedEvalQuery
}

// NewEngine compiles the embedded default policy, or the Rego file at
// policyFile when it is set.
func NewEngine(ctx context.Context, policyFile string) (*Engine, error) {
	src, name := defaultPolicy, "gxconf/access.rego"
	if policyFile != "" {
		b, err := os.ReadFile(policyFile)
		if err != nil {
			return nil, fmt.Errorf("failed to read policy file: %w", err)
		}
		src, name = string(b), policyFile
	}
	q, err := rego.New(rego.Query(PolicyQuery), rego.Module(name, src)).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to compile access policy %s: %w", name, err)
	}
	return &Engine{query: q}, nil
}

// RoomFacts are what the caller knows about the room and call.
type RoomFacts struct {
	ID string `json:"id"`
	// Participants is the number already in the call.
	Participants int  `json:"participants"`
	E2EE         bool `json:"e2ee"`
	// SiteApproved is true when the call would run on an approved site.
	SiteApproved bool `json:"site_approved"`
}

// DecisionInput is the Rego input {user, room, policy, attestations, now}.
type DecisionInput struct {
	UserID        string
	Room          RoomFacts
	Policy        AccessPolicy
	LevelDefaults LevelDefaults
	Attestations  []Attestation
	Now           time.Time
}

// Decision is the policy's answer.
type Decision struct {
	Allow   bool                    `json:"allow"`
	Reasons []string                `json:"reasons"`
	Missing []CredentialRequirement `json:"missing"`
	Level   Level                   `json:"level"`
	// ExpiresAt bounds tokens issued on this decision (zero: unbounded by
	// credentials). Set by [Verifier.Authorize].
	ExpiresAt time.Time `json:"expires_at"`
	// CredentialHashes are the attestations' credential hashes considered.
	CredentialHashes []string `json:"credential_hashes,omitempty"`
}

// Decide evaluates the policy. It fails closed: an undefined or malformed
// result is an error.
func (e *Engine) Decide(ctx context.Context, in DecisionInput) (Decision, error) {
	atts := make([]any, 0, len(in.Attestations))
	for _, a := range in.Attestations {
		atts = append(atts, map[string]any{
			"federation":   a.Federation,
			"issuer":       a.Issuer,
			"type":         a.Type,
			"claims":       a.Claims,
			"holder_bound": a.HolderBound,
			"verified_at":  a.VerifiedAt.Unix(),
			"expires_at":   a.ExpiresAt.Unix(),
		})
	}
	ld := map[string]any{
		"holder_binding":          in.LevelDefaults.HolderBinding,
		"require_e2ee":            in.LevelDefaults.RequireE2EE,
		"require_allowed_servers": in.LevelDefaults.RequireAllowedServers,
		"require_need_to_know":    in.LevelDefaults.RequireNeedToKnow,
		"require_approved_site":   in.LevelDefaults.RequireApprovedSite,
		"reverify_every_token":    in.LevelDefaults.ReverifyEveryToken,
	}
	input := map[string]any{
		"user":           map[string]any{"id": in.UserID, "server": serverOf(in.UserID)},
		"room":           in.Room,
		"policy":         in.Policy.asInput(),
		"level_defaults": ld,
		"attestations":   atts,
		"now":            in.Now.Unix(),
	}
	// Round-trip through JSON so Rego sees plain JSON values only.
	raw, err := json.Marshal(input)
	if err != nil {
		return Decision{}, fmt.Errorf("failed to encode policy input: %w", err)
	}
	var plain map[string]any
	if err := json.Unmarshal(raw, &plain); err != nil {
		return Decision{}, err
	}
	rs, err := e.query.Eval(ctx, rego.EvalInput(plain))
	if err != nil {
		return Decision{}, fmt.Errorf("failed to evaluate access policy: %w", err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return Decision{}, fmt.Errorf("access policy returned no decision")
	}
	out, err := json.Marshal(rs[0].Expressions[0].Value)
	if err != nil {
		return Decision{}, err
	}
	var d struct {
		Allow   *bool                   `json:"allow"`
		Reasons []string                `json:"reasons"`
		Missing []CredentialRequirement `json:"missing"`
	}
	if err := json.Unmarshal(out, &d); err != nil || d.Allow == nil {
		return Decision{}, fmt.Errorf("access policy returned a malformed decision")
	}
	if *d.Allow && len(d.Reasons) > 0 {
		return Decision{}, fmt.Errorf("access policy allowed with reasons %v", d.Reasons)
	}
	if !*d.Allow && len(d.Reasons) == 0 {
		d.Reasons = []string{"denied by policy"}
	}
	return Decision{Allow: *d.Allow, Reasons: d.Reasons, Missing: d.Missing, Level: in.Policy.Level}, nil
}

func serverOf(userID string) string {
	for i := 0; i < len(userID); i++ {
		if userID[i] == ':' {
			return userID[i+1:]
		}
	}
	return ""
}
