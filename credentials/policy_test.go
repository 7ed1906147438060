package credentials

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseAccessPolicy(t *testing.T) {
	p, err := ParseAccessPolicy([]byte(`{"level":"kritis","required_credentials":[{"federation":"oev","type":"EmployeeCredential",
		"claims":{"org.sector":{"in":["energie","wasser"]}}}],"allowed_homeservers":["bund.example"],"max_participants":50}`))
	require.NoError(t, err)
	require.Equal(t, LevelKritis, p.Level)
	require.Equal(t, []string{"org.sector"}, p.claimPaths())

	for name, tc := range map[string]struct{ content, want string }{
		"unknown field":       {`{"level":"public","lvl":"x"}`, "unknown field"},
		"unknown level":       {`{"level":"secret"}`, "level: must be public, kritis or vs-nfd"},
		"kritis without list": {`{"level":"kritis","required_credentials":[{"type":"T"}]}`, "allowed_homeservers: required at level kritis"},
		"vs-nfd without ntk": {`{"level":"vs-nfd","required_credentials":[{"type":"T"}],"allowed_homeservers":["a"]}`,
			"need_to_know: required at level vs-nfd"},
		"bad constraint":   {`{"level":"public","required_credentials":[{"type":"T","claims":{"a":{}}}]}`, "exactly one of eq or in"},
		"bad user":         {`{"level":"public","need_to_know":["alice"]}`, "not a Matrix user ID"},
		"negative max":     {`{"level":"public","max_participants":-1}`, "max_participants"},
		"trailing garbage": {`{"level":"public"} {}`, "trailing data"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseAccessPolicy([]byte(tc.content))
			require.ErrorIs(t, err, ErrInvalidPolicy)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestValidateChange(t *testing.T) {
	kritis := kritisPolicy()
	public := &AccessPolicy{Level: LevelPublic}
	vsnfd := &AccessPolicy{Level: LevelVSNfD, RequiredCredentials: kritis.RequiredCredentials,
		AllowedHomeservers: []string{"bund.example"}, NeedToKnow: []string{"@a:bund.example"}}

	require.NoError(t, ValidateChange(nil, kritis, 50, 100), "raising from none is free")
	require.NoError(t, ValidateChange(kritis, vsnfd, 50, 100), "raising is free")
	err := ValidateChange(kritis, public, 50, 100)
	require.ErrorIs(t, err, ErrPolicyChangeForbidden)
	require.ErrorContains(t, err, "lowering the level from kritis to public needs power level 100")
	require.NoError(t, ValidateChange(kritis, public, 100, 100), "top power may lower")
	require.ErrorIs(t, ValidateChange(public, &AccessPolicy{Level: "x"}, 100, 100), ErrInvalidPolicy)
	require.ErrorIs(t, ValidateChange(public, nil, 100, 100), ErrInvalidPolicy)
}

func TestEngineDecidePerLevel(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine(ctx, "")
	require.NoError(t, err)
	cfg := DefaultConfig()
	now := time.Now()
	emp := Attestation{Federation: "oev", Issuer: "did:web:i", Type: "EmployeeCredential", HolderBound: true,
		Claims: map[string]any{"sector": "energie"}, VerifiedAt: now, ExpiresAt: now.Add(time.Hour)}
	unbound := emp
	unbound.HolderBound = false
	wrongSector := emp
	wrongSector.Claims = map[string]any{"sector": "banken"}
	otherFed := emp
	otherFed.Federation = "other"
	oath := Attestation{Federation: "oev", Type: "VSNfDVerpflichtung", HolderBound: true, Claims: map[string]any{}}
	room := RoomFacts{ID: "!r:bund.example", E2EE: true, SiteApproved: true, Participants: 3}
	vs := &AccessPolicy{Level: LevelVSNfD, RequiredCredentials: append(kritisPolicy().RequiredCredentials,
		CredentialRequirement{Federation: "oev", Type: "VSNfDVerpflichtung"}),
		AllowedHomeservers: []string{"bund.example"}, NeedToKnow: []string{"@alice:bund.example"}}

	for _, tc := range []struct {
		name   string
		user   string
		policy AccessPolicy
		room   RoomFacts
		atts   []Attestation
		allow  bool
		reason string
	}{
		{"public without requirements", "@bob:other.example", AccessPolicy{Level: LevelPublic}, room, nil, true, ""},
		{"public with requirement, missing", "@bob:other.example", AccessPolicy{Level: LevelPublic,
			RequiredCredentials: []CredentialRequirement{{Type: "EmployeeCredential"}}}, room, nil, false, "missing credential EmployeeCredential"},
		{"public accepts unbound holder", "@bob:other.example", AccessPolicy{Level: LevelPublic,
			RequiredCredentials: []CredentialRequirement{{Type: "EmployeeCredential"}}}, room, []Attestation{unbound}, true, ""},
		{"kritis allow", "@alice:bund.example", *kritisPolicy(), room, []Attestation{emp}, true, ""},
		{"kritis needs holder binding", "@alice:bund.example", *kritisPolicy(), room, []Attestation{unbound}, false, "missing credential EmployeeCredential from federation oev"},
		{"kritis claim constraint", "@alice:bund.example", *kritisPolicy(), room, []Attestation{wrongSector}, false, "missing credential"},
		{"kritis other federation", "@alice:bund.example", *kritisPolicy(), room, []Attestation{otherFed}, false, "missing credential"},
		{"kritis server not allowed", "@mallory:evil.example", *kritisPolicy(), room, []Attestation{emp}, false, "homeserver evil.example is not allowed"},
		{"kritis needs e2ee", "@alice:bund.example", *kritisPolicy(), RoomFacts{ID: "!r", SiteApproved: true}, []Attestation{emp}, false, "end-to-end encryption"},
		{"max participants", "@alice:bund.example", AccessPolicy{Level: LevelPublic, MaxParticipants: 3}, room, nil, false, "the call is full"},
		{"vs-nfd allow", "@alice:bund.example", *vs, room, []Attestation{emp, oath}, true, ""},
		{"vs-nfd need to know", "@carol:bund.example", *vs, room, []Attestation{emp, oath}, false, "not on the need-to-know list"},
		{"vs-nfd oath missing", "@alice:bund.example", *vs, room, []Attestation{emp}, false, "missing credential VSNfDVerpflichtung"},
		{"vs-nfd approved site", "@alice:bund.example", *vs, RoomFacts{ID: "!r", E2EE: true}, []Attestation{emp, oath}, false, "approved sites"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := e.Decide(ctx, DecisionInput{UserID: tc.user, Room: tc.room, Policy: tc.policy,
				LevelDefaults: cfg.level(tc.policy.Level), Attestations: tc.atts, Now: now})
			require.NoError(t, err)
			require.Equal(t, tc.allow, d.Allow, d.Reasons)
			if tc.reason != "" {
				require.Contains(t, strings.Join(d.Reasons, "; "), tc.reason)
			} else {
				require.Empty(t, d.Reasons)
			}
		})
	}
}

func TestEngineOperatorPolicyFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "p.rego")
	require.NoError(t, os.WriteFile(path, []byte(`package gxconf.access
import rego.v1
decision := {"allow": false, "reasons": ["closed for maintenance"], "missing": []}
`), 0o600))
	e, err := NewEngine(ctx, path)
	require.NoError(t, err)
	d, err := e.Decide(ctx, DecisionInput{UserID: "@a:b", Policy: AccessPolicy{Level: LevelPublic}, Now: time.Now()})
	require.NoError(t, err)
	require.False(t, d.Allow)
	require.Equal(t, []string{"closed for maintenance"}, d.Reasons)

	require.NoError(t, os.WriteFile(path, []byte("package other\nallow := true\n"), 0o600))
	e, err = NewEngine(ctx, path)
	require.NoError(t, err)
	_, err = e.Decide(ctx, DecisionInput{UserID: "@a:b", Now: time.Now()})
	require.ErrorContains(t, err, "no decision", "undefined decision fails closed")

	require.NoError(t, os.WriteFile(path, []byte("package gxconf.access\ndecision := {"), 0o600))
	_, err = NewEngine(ctx, path)
	require.Error(t, err)
}
