package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/credentials/statuslist"
)

// verifyJWT checks a VC-JWT against the DID document's key and returns its
// header and payload.
func verifyJWT(t *testing.T, c *Catalog, jwt string) (jose.Header, map[string]any) {
	t.Helper()
	var doc struct {
		ID                 string `json:"id"`
		VerificationMethod []struct {
			ID  string          `json:"id"`
			JWK json.RawMessage `json:"publicKeyJwk"`
		} `json:"verificationMethod"`
	}
	require.NoError(t, json.Unmarshal(c.didDoc, &doc))
	var key jose.JSONWebKey
	require.NoError(t, key.UnmarshalJSON(doc.VerificationMethod[0].JWK))
	jws, err := jose.ParseSigned(jwt, []jose.SignatureAlgorithm{jose.ES256, jose.PS256})
	require.NoError(t, err)
	payload, err := jws.Verify(key.Key)
	require.NoError(t, err)
	h := jws.Signatures[0].Protected
	require.Equal(t, doc.VerificationMethod[0].ID, h.KeyID)
	var vc map[string]any
	require.NoError(t, json.Unmarshal(payload, &vc))
	return h, vc
}

func TestCatalogueIssued(t *testing.T) {
	e := newEnv(t, nil)
	cat := e.c.Catalogue()
	require.Equal(t, "did:web:vc.bund.example", cat.DID)
	require.Len(t, cat.Tiers, 5*3*3)
	// legal person + 3 terms + 15 offerings + 45 tiers
	require.Len(t, cat.Creds, 1+3+15+45)
	tier, ok := cat.Tier("kritis-500-gold")
	require.True(t, ok)
	require.Equal(t, 500, tier.MaxParticipants)
	require.Equal(t, 4, tier.MaxConcurrent)
	require.Equal(t, []string{"de-ber-1"}, tier.Sites)

	so, ok := cat.Credential("offering-kritis-500")
	require.True(t, ok)
	h, vc := verifyJWT(t, e.c, so.JWT)
	require.Equal(t, "vc+jwt", h.ExtraHeaders["typ"])
	require.Equal(t, "vc+ld+json", h.ExtraHeaders["cty"])
	require.Equal(t, "did:web:vc.bund.example", h.ExtraHeaders["iss"])
	require.Equal(t, "did:web:vc.bund.example#key-1", h.KeyID)
	require.Equal(t, "did:web:vc.bund.example", vc["issuer"])
	subj := vc["credentialSubject"].(map[string]any)
	require.Equal(t, "gx:ServiceOffering", subj["type"])
	require.NotNil(t, subj["gx:providedBy"], "2511 mandatory")
	require.NotNil(t, subj["gx:serviceOfferingTermsAndConditions"], "2511 mandatory")
	require.Equal(t, "Rego", subj["gx:servicePolicy"].(map[string]any)["gx:policyLanguage"])

	tc, _ := cat.Credential("tier-kritis-500-gold")
	_, vc = verifyJWT(t, e.c, tc.JWT)
	subj = vc["credentialSubject"].(map[string]any)
	require.Equal(t, "vk:ConferenceTier", subj["type"])
	require.EqualValues(t, 500, subj["vk:maxParticipants"])
	require.Equal(t, map[string]any{"id": "https://vc.bund.example/catalog/offerings/kritis-500"}, subj["vk:offering"])
	require.Contains(t, cat.Shape, "sh:targetClass vk:ConferenceTier")
	require.Contains(t, cat.Shape, "<https://vc.bund.example/catalog/vocab#>")
}

func TestDIDDocumentX5U(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.X5U = "https://vc.bund.example/chain.pem" })
	var doc map[string]any
	require.NoError(t, json.Unmarshal(e.c.didDoc, &doc))
	vm := doc["verificationMethod"].([]any)[0].(map[string]any)
	jwk := vm["publicKeyJwk"].(map[string]any)
	require.Equal(t, "https://vc.bund.example/chain.pem", jwk["x5u"])
	require.Equal(t, "ES256", jwk["alg"])
	require.NotContains(t, jwk, "d", "never the private key")
	require.Equal(t, []any{"did:web:vc.bund.example#key-1"}, doc["assertionMethod"])
}

func TestDIDWeb(t *testing.T) {
	d, err := DIDWeb("https://vc.bund.example:8443/x")
	require.NoError(t, err)
	require.Equal(t, "did:web:vc.bund.example%3A8443", d)
	_, err = DIDWeb("http://vc.bund.example")
	require.Error(t, err)
}

func TestBookingStateMachine(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	provider := Principal{Subject: "https://idp|bob", Roles: []string{"provider"}}

	pub := e.book(t, "public-20-gold", nil)
	require.Equal(t, StateActive, pub.State, "public is a fixed offer")
	require.NotEmpty(t, pub.Entitlement)
	require.Equal(t, "sha256", "sha256")
	require.Len(t, pub.Snapshot.OfferingHash, 64)
	_, vc := verifyJWT(t, e.c, pub.Entitlement)
	st := vc["credentialStatus"].(map[string]any)
	require.Equal(t, "BitstringStatusListEntry", st["type"])
	require.Equal(t, fmt.Sprint(pub.StatusIndex), st["statusListIndex"])
	require.Equal(t, "did:web:land-nrw.example", vc["credentialSubject"].(map[string]any)["id"])

	vs := e.book(t, "vs-nfd-50-silver", nil)
	require.Equal(t, StateRequested, vs.State, "VS-NfD waits for the provider")
	require.Empty(t, vs.Entitlement)
	_, err := e.c.Act(ctx, provider, vs.ID, "resume", "")
	require.ErrorIs(t, err, ErrState)
	vs, err = e.c.Act(ctx, provider, vs.ID, "confirm", "")
	require.NoError(t, err)
	require.Equal(t, StateActive, vs.State)
	require.Equal(t, provider.Subject, vs.ConfirmedBy)
	require.NotEmpty(t, vs.Entitlement)

	vs, err = e.c.Act(ctx, provider, vs.ID, "suspend", "")
	require.NoError(t, err)
	require.Equal(t, StateSuspended, vs.State)
	vs, err = e.c.Act(ctx, provider, vs.ID, "resume", "")
	require.NoError(t, err)
	require.Equal(t, StateActive, vs.State)

	// Revocation is a status bit in the published list.
	list := decodeList(t, e)
	bit, err := list.Status(pub.StatusIndex)
	require.NoError(t, err)
	require.Zero(t, bit)
	pub, err = e.c.Act(ctx, provider, pub.ID, "revoke", "misuse")
	require.NoError(t, err)
	require.Equal(t, StateRevoked, pub.State)
	require.Equal(t, "misuse", pub.EndReason)
	list = decodeList(t, e)
	bit, err = list.Status(pub.StatusIndex)
	require.NoError(t, err)
	require.EqualValues(t, 1, bit)
	bit, _ = list.Status(vs.StatusIndex)
	require.Zero(t, bit)
	_, err = e.c.Act(ctx, orgAdmin, pub.ID, "cancel", "")
	require.ErrorIs(t, err, ErrState, "terminal")

	// Expiry happens by time.
	e.clock.add(31 * 24 * time.Hour)
	vs, err = e.c.Get(ctx, vs.ID)
	require.NoError(t, err)
	require.Equal(t, StateExpired, vs.State)
	n, err := credentials.VerifyAuditChain(ctx, e.db)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the expiry is audited")
}

func decodeList(t *testing.T, e *env) *statuslist.Bitstring {
	t.Helper()
	e.c.status.jwt = "" // no cache
	jwt, err := e.c.StatusList(context.Background())
	require.NoError(t, err)
	_, vc := verifyJWT(t, e.c, jwt)
	subj := vc["credentialSubject"].(map[string]any)
	l, err := statuslist.Decode(subj["encodedList"].(string), statuslist.ProfileW3C, 1, statuslist.Limits{})
	require.NoError(t, err)
	require.Equal(t, StatusListLength, l.Len())
	return l
}

func TestBookingRequestChecks(t *testing.T) {
	e := newEnv(t, nil)
	now := e.clock.now()
	base := BookingRequest{Tier: "kritis-100-bronze", Unit: UnitDateRange, ValidFrom: now, ValidUntil: now.Add(time.Hour), AcceptTerms: testTerms}
	for name, tc := range map[string]struct {
		mutate func(*BookingRequest)
		want   string
	}{
		"site not offered":   {func(r *BookingRequest) { r.Sites = []string{"de-bon-1"} }, `site "de-bon-1" is not offered`},
		"too concurrent":     {func(r *BookingRequest) { r.MaxConcurrent = 2 }, "max_concurrent_sessions must be between 1 and the tier's 1"},
		"terms not accepted": {func(r *BookingRequest) { r.AcceptTerms = "" }, "accept_terms"},
		"window backwards":   {func(r *BookingRequest) { r.ValidUntil = now.Add(-time.Hour) }, "valid_from must be before valid_until"},
		"bad unit":           {func(r *BookingRequest) { r.Unit = "forever" }, "unit must be"},
		"sessions w/o quota": {func(r *BookingRequest) { r.Unit = UnitSessions }, "sessions must be between"},
		"bad room":           {func(r *BookingRequest) { r.Rooms = []string{"#alias:x"} }, "not a Matrix room ID"},
		"bad tz":             {func(r *BookingRequest) { r.TZ = "Mars/Olympus" }, "not an IANA time zone"},
	} {
		t.Run(name, func(t *testing.T) {
			req := base
			tc.mutate(&req)
			_, err := e.c.Book(context.Background(), orgAdmin, "land-nrw", req)
			require.ErrorIs(t, err, ErrInvalid)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := e.c.Book(context.Background(), orgAdmin, "land-nrw", BookingRequest{Tier: "gold-9999"})
	require.ErrorIs(t, err, ErrNotFound)
	_, err = e.c.Book(context.Background(), orgAdmin, "nobody", base)
	require.ErrorIs(t, err, ErrInvalid)
}

func TestCheckWindow(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	b := e.book(t, "public-20-gold", nil)
	in := b.ValidFrom.Add(2 * time.Hour)
	require.NoError(t, e.c.CheckWindow(ctx, b.ID, in, in.Add(time.Hour), 20))
	err := e.c.CheckWindow(ctx, b.ID, b.ValidUntil.Add(-30*time.Minute), b.ValidUntil.Add(30*time.Minute), 5)
	require.ErrorIs(t, err, ErrWindow)
	require.ErrorContains(t, err, "lies outside booking "+b.ID)
	require.ErrorIs(t, e.c.CheckWindow(ctx, b.ID, in, in.Add(time.Hour), 21), ErrInvalid)
	require.ErrorIs(t, e.c.CheckWindow(ctx, "bk_nope", in, in.Add(time.Hour), 1), ErrNotFound)
	_, err = e.c.Act(ctx, orgAdmin, b.ID, "cancel", "")
	require.NoError(t, err)
	require.ErrorIs(t, e.c.CheckWindow(ctx, b.ID, in, in.Add(time.Hour), 1), ErrState)
}

// TestCheckMeeting: a meeting may run under a booking only if the booking
// lists its organiser, covers its level and participants, and every
// occurrence lies in its window; a booking request's organisers must be
// Matrix user IDs.
func TestCheckMeeting(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	b := e.book(t, "public-20-gold", func(r *BookingRequest) { r.Organisers = []string{"@org:x"} })
	in := b.ValidFrom.Add(2 * time.Hour)
	occ := [][2]time.Time{{in, in.Add(time.Hour)}, {in.Add(24 * time.Hour), in.Add(25 * time.Hour)}}
	require.NoError(t, e.c.CheckMeeting(ctx, b.ID, "@org:x", credentials.LevelPublic, 20, occ))
	err := e.c.CheckMeeting(ctx, b.ID, "@mallory:x", credentials.LevelPublic, 2, occ)
	require.ErrorIs(t, err, ErrForbidden)
	require.ErrorContains(t, err, "does not list @mallory:x as an organiser")
	err = e.c.CheckMeeting(ctx, b.ID, "@org:x", credentials.LevelKritis, 2, occ)
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "is for level public, the meeting is kritis")
	require.ErrorIs(t, e.c.CheckMeeting(ctx, b.ID, "@org:x", credentials.LevelPublic, 21, occ), ErrInvalid)
	late := append(occ, [2]time.Time{b.ValidUntil, b.ValidUntil.Add(time.Hour)})
	require.ErrorIs(t, e.c.CheckMeeting(ctx, b.ID, "@org:x", credentials.LevelPublic, 2, late), ErrWindow)

	_, err = e.c.Book(ctx, Principal{Subject: "m"}, "stadt-x", BookingRequest{Tier: "public-20-gold", Unit: UnitDateRange,
		ValidFrom: e.clock.now(), ValidUntil: e.clock.now().Add(time.Hour), AcceptTerms: testTerms, Organisers: []string{"org"}})
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, `organisers: "org" is not a Matrix user ID`)
	for _, bad := range []string{"@a<img src=x>:x", "@Alice:x", "@a:x y", "@:x", "@a:"} {
		_, err = e.c.Book(ctx, Principal{Subject: "m"}, "stadt-x", BookingRequest{Tier: "public-20-gold", Unit: UnitDateRange,
			ValidFrom: e.clock.now(), ValidUntil: e.clock.now().Add(time.Hour), AcceptTerms: testTerms, Organisers: []string{bad}})
		require.ErrorIs(t, err, ErrInvalid, bad)
	}
}

func TestMFAProven(t *testing.T) {
	for _, tc := range []struct {
		amr      []string
		acr      string
		accepted []string
		want     bool
	}{
		{[]string{"pwd", "otp"}, "", nil, true},
		{[]string{"mfa"}, "", nil, true},
		{[]string{"pwd"}, "", nil, false},
		{[]string{"otp"}, "", nil, false},
		{[]string{"pwd", "pin"}, "", nil, false}, // two knowledge factors are one kind
		{[]string{"hwk", "fpt"}, "", nil, true},
		{nil, "", nil, false},
		{[]string{"pwd", "otp"}, "urn:low", []string{"urn:mfa"}, false}, // a configured acr decides
		{nil, "urn:mfa", []string{"urn:mfa"}, true},
	} {
		require.Equal(t, tc.want, mfaProven(tc.amr, tc.acr, tc.accepted), "%v %q %v", tc.amr, tc.acr, tc.accepted)
	}
}

func TestAdminPolicy(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	a := e.c.admin
	b := &Booking{Org: "land-nrw", Snapshot: TierSnapshot{Level: credentials.LevelVSNfD}, State: StateRequested}
	orgMFA := &Admin{Principal: Principal{Subject: "s", Org: "land-nrw", Roles: []string{"booking-admin"}}, MFA: true}
	orgNoMFA := &Admin{Principal: Principal{Subject: "s", Org: "land-nrw", Roles: []string{"booking-admin"}}, MFA: false}
	otherOrg := &Admin{Principal: Principal{Subject: "s", Org: "stadt-x", Roles: []string{"booking-admin"}}, MFA: true}
	unknownOrg := &Admin{Principal: Principal{Subject: "s", Org: "evil", Roles: []string{"booking-admin"}}, MFA: true}
	provider := &Admin{Principal: Principal{Subject: "p", Roles: []string{"provider"}}, MFA: true}
	for _, tc := range []struct {
		ad     *Admin
		action string
		want   bool
		reason string
	}{
		{orgMFA, "book", true, ""},
		{orgMFA, "cancel", true, ""},
		{orgMFA, "confirm", false, "only the provider"},
		{orgNoMFA, "book", false, "multi-factor authentication is required"},
		{otherOrg, "cancel", false, `you act for "stadt-x", not for "land-nrw"`},
		{unknownOrg, "book", false, "no booking admin of a known organisation"},
		{provider, "confirm", true, ""},
		{provider, "revoke", true, ""},
		{&Admin{Principal: Principal{Roles: []string{"provider"}}}, "confirm", false, "multi-factor"},
	} {
		ok, reason, err := a.decide(ctx, tc.ad, tc.action, "", b)
		require.NoError(t, err)
		require.Equal(t, tc.want, ok, "%+v %s", tc.ad, tc.action)
		require.True(t, strings.Contains(reason, tc.reason), "reason %q", reason)
	}
}

func TestExport(t *testing.T) {
	cfg := testConfig(t)
	dir := t.TempDir()
	files, err := Export(cfg, dir, time.Now())
	require.NoError(t, err)
	require.Len(t, files, 1+64)
	require.Equal(t, ExportFile{File: "conference-tier-shape.ttl", Method: "POST", Path: "/schemas", ContentType: "text/turtle", Kind: "shape"}, files[0])
	for _, f := range files[1:] {
		require.Equal(t, "/assets", f.Path)
		require.Equal(t, "application/vc+jwt", f.ContentType)
		raw, err := os.ReadFile(filepath.Join(dir, f.File))
		require.NoError(t, err)
		require.Len(t, strings.Split(string(raw), "."), 3, "a compact JWS")
	}
	for _, name := range []string{"did.json", "manifest.json", "upload.sh"} {
		require.FileExists(t, filepath.Join(dir, name))
	}
}

func TestBindMeetingRoom(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	b := e.book(t, "public-20-gold", func(r *BookingRequest) { r.Organisers = []string{"@org:x"} })
	// Only an organiser the booking lists may bind a meeting to it.
	require.ErrorIs(t, e.c.BindMeetingRoom(ctx, b.ID, "!m:x", "", "@mallory:x"), ErrForbidden)
	require.NoError(t, e.c.BindMeetingRoom(ctx, b.ID, "!m:x", "", "@org:x"))
	require.NoError(t, e.c.BindMeetingRoom(ctx, b.ID, "!breakout:x", "!m:x", "@org:x"))
	bs, err := e.c.Bindings(ctx, b.ID)
	require.NoError(t, err)
	require.Len(t, bs, 2)
	require.Equal(t, "meetings:@org:x", bs[0].BoundBy)
	require.ErrorIs(t, e.c.BindMeetingRoom(ctx, b.ID, "not-a-room", "", "@org:x"), ErrInvalid)
	// Another organisation's booking cannot take the room.
	other, err := e.c.Book(ctx, Principal{Subject: "m"}, "stadt-x", BookingRequest{Tier: "public-20-gold", Unit: UnitDateRange,
		ValidFrom: e.clock.now(), ValidUntil: e.clock.now().Add(time.Hour), AcceptTerms: testTerms, Organisers: []string{"@mallory:x"}})
	require.NoError(t, err)
	require.ErrorIs(t, e.c.BindMeetingRoom(ctx, other.ID, "!m:x", "", "@mallory:x"), ErrState)
}

// TestMaxOpenBookingsPerOrg: an organisation's bookings that are not
// expired, cancelled or revoked are capped; the refusal names the limit, a
// cancelled booking frees its place, and other organisations are not
// affected. The limit is validated.
func TestMaxOpenBookingsPerOrg(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, func(c *Config) { c.MaxOpenBookingsPerOrg = 2 })
	now := e.clock.now()
	req := BookingRequest{Tier: "public-20-gold", Unit: UnitDateRange, ValidFrom: now, ValidUntil: now.Add(time.Hour), AcceptTerms: testTerms}
	first := e.book(t, "public-20-gold", nil)
	e.book(t, "vs-nfd-50-silver", nil) // requested counts, too
	_, err := e.c.Book(ctx, orgAdmin, "land-nrw", req)
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "max_open_bookings_per_org")
	require.ErrorContains(t, err, "2")

	other := Principal{Subject: "https://idp|x", Org: "stadt-x", Roles: []string{"booking-admin"}}
	_, err = e.c.Book(ctx, other, "stadt-x", req)
	require.NoError(t, err, "the cap is per organisation")

	_, err = e.c.Act(ctx, orgAdmin, first.ID, "cancel", "")
	require.NoError(t, err)
	_, err = e.c.Book(ctx, orgAdmin, "land-nrw", req)
	require.NoError(t, err, "a cancelled booking no longer counts")

	cfg := testConfig(t)
	require.Equal(t, 1000, DefaultConfig().MaxOpenBookingsPerOrg)
	cfg.MaxOpenBookingsPerOrg = 0
	require.ErrorContains(t, cfg.Validate(), "max_open_bookings_per_org")
}

// TestMaxBookingsPerOrgPerDay: booking and cancelling in a loop stays
// within max_open_bookings_per_org, but every booking keeps its row and
// its revocation status list index for good; an organisation's bookings
// of the last 24 hours are capped, cancelled ones included, so that one
// organisation cannot exhaust the list for all.
func TestMaxBookingsPerOrgPerDay(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, func(c *Config) { c.MaxBookingsPerOrgPerDay = 3 })
	req := func() BookingRequest {
		now := e.clock.now()
		return BookingRequest{Tier: "public-20-gold", Unit: UnitDateRange, ValidFrom: now, ValidUntil: now.Add(time.Hour), AcceptTerms: testTerms}
	}
	for range 3 {
		b, err := e.c.Book(ctx, orgAdmin, "land-nrw", req())
		require.NoError(t, err)
		_, err = e.c.Act(ctx, orgAdmin, b.ID, "cancel", "")
		require.NoError(t, err)
		e.clock.add(time.Hour)
	}
	_, err := e.c.Book(ctx, orgAdmin, "land-nrw", req())
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "max_bookings_per_org_per_day")
	all, err := e.c.List(ctx, "land-nrw")
	require.NoError(t, err)
	require.Len(t, all, 3, "the refused booking was not stored")

	other := Principal{Subject: "https://idp|x", Org: "stadt-x", Roles: []string{"booking-admin"}}
	_, err = e.c.Book(ctx, other, "stadt-x", req())
	require.NoError(t, err, "the cap is per organisation")

	e.clock.add(22 * time.Hour) // the first booking is now older than 24 hours
	_, err = e.c.Book(ctx, orgAdmin, "land-nrw", req())
	require.NoError(t, err, "the window is the last 24 hours")
	_, err = e.c.Book(ctx, orgAdmin, "land-nrw", req())
	require.ErrorContains(t, err, "max_bookings_per_org_per_day")

	require.Equal(t, 100, DefaultConfig().MaxBookingsPerOrgPerDay)
	cfg := testConfig(t)
	cfg.MaxBookingsPerOrgPerDay = 0
	require.ErrorContains(t, cfg.Validate(), "max_bookings_per_org_per_day")
}
