package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/test/harness"
)

const catalogTerms = "0000000000000000000000000000000000000000000000000000000000000001"

// startCatalogStack runs Hydra (with the login app) and Dendrite + gxconf
// with the catalogue enabled.
func startCatalogStack(t *testing.T) (*harness.Stack, *catalogIdP) {
	t.Helper()
	focusPort, err := harness.FreePort()
	require.NoError(t, err)
	focusURL := fmt.Sprintf("http://127.0.0.1:%d", focusPort)
	idp := startCatalogIdP(t, focusURL)
	s := startStack(t, harness.StackOptions{
		FocusPort: focusPort,
		Config:    map[string]any{"catalog": idp.catalogConfig(t, focusURL)},
	})
	require.Equal(t, focusURL, s.FocusURL)
	return s, idp
}

func bookingRequest(tier string, rooms ...id.RoomID) map[string]any {
	now := time.Now().UTC()
	return map[string]any{
		"tier": tier, "unit": "dateRange", "tz": "Europe/Berlin", "rooms": rooms, "accept_terms": catalogTerms,
		"valid_from": now.Add(-time.Minute).Format(time.RFC3339), "valid_until": now.Add(24 * time.Hour).Format(time.RFC3339),
	}
}

// TestCatalogBookingAndEnforcement: admins log in at a real OpenID
// provider (ORY Hydra; password + TOTP, amr) and book; without MFA or for
// another organisation they are refused; the focus enforces the bookings
// (21st participant, concurrency, sites, VS-NfD confirmation, revocation,
// expiry); the credentials verify and validate with independent npm
// libraries; every admin action is in the audit chain; the bot reports.
func TestCatalogBookingAndEnforcement(t *testing.T) {
	ctx := context.Background()
	s, idp := startCatalogStack(t)
	api := s.FocusURL + "/catalog/admin/api/"

	// --- Admins and MFA.
	alice, status, page := idp.adminSession(t, s.FocusURL, "alice", "alice-pw", true)
	require.Equal(t, http.StatusOK, status, page)
	require.Contains(t, page, "gxconf service bookings")
	code, me := adminCall(t, alice, "", http.MethodGet, api+"me", nil)
	require.Equal(t, http.StatusOK, code, me)
	require.Equal(t, true, me["mfa"])
	require.Equal(t, []any{"pwd", "otp"}, me["amr"])
	require.Equal(t, "land-nrw", me["org"])

	_, status, page = idp.adminSession(t, s.FocusURL, "charlie", "charlie-pw", false)
	require.Equal(t, http.StatusForbidden, status)
	require.Contains(t, page, "did not use multi-factor authentication")
	charlieToken := idp.idToken(t, "charlie", "charlie-pw", false)
	code, out := adminCall(t, nil, charlieToken, http.MethodPost, api+"bookings", bookingRequest("public-20-gold"))
	require.Equal(t, http.StatusForbidden, code, out)
	require.Contains(t, out["error"], "multi-factor authentication is required")

	// The bearer path with MFA works too.
	aliceToken := idp.idToken(t, "alice", "alice-pw", true)
	code, out = adminCall(t, nil, aliceToken, http.MethodGet, api+"bookings", nil)
	require.Equal(t, http.StatusOK, code, out)
	code, out = adminCall(t, nil, aliceToken+"x", http.MethodGet, api+"bookings", nil)
	require.Equal(t, http.StatusUnauthorized, code, out)
	// An ID token the same provider issued to another application is not for gxconf.
	idp.addClient(t, "other-app", "other-app-secret-0123456789abcdef")
	otherToken := idp.idTokenFor(t, "other-app", "other-app-secret-0123456789abcdef", "alice", "alice-pw", true)
	code, out = adminCall(t, nil, otherToken, http.MethodGet, api+"bookings", nil)
	require.Equal(t, http.StatusUnauthorized, code, out)
	require.Contains(t, out["error"], "audience")
	// A session cookie alone does not change state (CSRF).
	req, _ := http.NewRequest(http.MethodPost, api+"bookings", strings.NewReader(`{}`))
	resp, err := alice.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)

	// --- Matrix rooms.
	host := register(t, s, "host")
	newRoom := func(name string) id.RoomID {
		created, err := host.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: name, Invite: []id.UserID{s.BotID}})
		require.NoError(t, err)
		return created.RoomID
	}
	roomR, roomA, roomB, roomV, roomE, roomS := newRoom("R"), newRoom("A"), newRoom("B"), newRoom("V"), newRoom("E"), newRoom("S")
	oid := openID(t, host)
	token := func(room id.RoomID, member string) (int, map[string]any) {
		return postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, host, member, oid))
	}

	// --- A 20-tier meeting refuses the 21st participant.
	code, booked := adminCall(t, alice, "", http.MethodPost, api+"bookings", bookingRequest("public-20-gold", roomR))
	require.Equal(t, http.StatusOK, code, booked)
	require.Equal(t, "active", booked["state"], "public bookings are fixed offers")
	bookingR := booked["id"].(string)
	// Until the room accepts the binding, the booking does not limit it.
	code, out = token(roomR, "before-accept")
	require.Equal(t, http.StatusOK, code, out)
	acceptBooking(t, s, host, roomR, bookingR)
	for i := range 20 {
		code, out := token(roomR, fmt.Sprintf("m%02d", i))
		require.Equal(t, http.StatusOK, code, "participant %d: %v", i+1, out)
	}
	// (The pending "before-accept" token was not counted by the booking.)
	code, out = token(roomR, "m20")
	require.Equal(t, http.StatusForbidden, code, out)
	require.Equal(t, "M_FORBIDDEN", out["errcode"])
	require.Equal(t, "The booking "+bookingR+" (public, up to 20 participants) allows at most 20 participants in this meeting; 20 are already in the call.", out["error"])
	code, _ = token(roomR, "m05")
	require.Equal(t, http.StatusOK, code, "a participant's new token is no 21st participant")

	// Another organisation's admin may not touch it.
	mallory, status, _ := idp.adminSession(t, s.FocusURL, "mallory", "mallory-pw", true)
	require.Equal(t, http.StatusOK, status)
	code, out = adminCall(t, mallory, "", http.MethodPost, api+"bookings/"+bookingR+"/cancel", map[string]any{})
	require.Equal(t, http.StatusForbidden, code, out)
	require.Equal(t, `forbidden: you act for "stadt-x", not for "land-nrw"`, out["error"])
	code, out = adminCall(t, mallory, "", http.MethodGet, api+"bookings/"+bookingR, nil)
	require.Equal(t, http.StatusForbidden, code, out)

	// --- Concurrency: bronze allows one session at a time.
	code, booked = adminCall(t, alice, "", http.MethodPost, api+"bookings", bookingRequest("public-50-bronze", roomA, roomB))
	require.Equal(t, http.StatusOK, code, booked)
	acceptBooking(t, s, host, roomA, booked["id"].(string))
	acceptBooking(t, s, host, roomB, booked["id"].(string))
	code, out = token(roomA, "a1")
	require.Equal(t, http.StatusOK, code, out)
	code, out = token(roomB, "b1")
	require.Equal(t, http.StatusForbidden, code, out)
	require.Contains(t, out["error"], "allows 1 concurrent session(s); 1 are running now")

	// --- Sites: a booking for a site this deployment does not run at.
	req2 := bookingRequest("public-100-gold", roomS)
	req2["sites"] = []string{"de-ber-1"}
	code, booked = adminCall(t, alice, "", http.MethodPost, api+"bookings", req2)
	require.Equal(t, http.StatusOK, code, booked)
	acceptBooking(t, s, host, roomS, booked["id"].(string))
	code, out = token(roomS, "s1")
	require.Equal(t, http.StatusForbidden, code, out)
	require.Contains(t, out["error"], "is for the sites de-ber-1 only; this deployment runs at default")
	req2["sites"] = []string{"de-muc-9"}
	code, out = adminCall(t, alice, "", http.MethodPost, api+"bookings", req2)
	require.Equal(t, http.StatusBadRequest, code, out)
	require.Contains(t, out["error"], `site "de-muc-9" is not offered`)

	// --- VS-NfD is unusable until the provider confirms.
	code, booked = adminCall(t, alice, "", http.MethodPost, api+"bookings", bookingRequest("vs-nfd-20-gold", roomV))
	require.Equal(t, http.StatusOK, code, booked)
	require.Equal(t, "requested", booked["state"])
	bookingV := booked["id"].(string)
	acceptBooking(t, s, host, roomV, bookingV)
	code, out = token(roomV, "v1")
	require.Equal(t, http.StatusForbidden, code, out)
	require.Contains(t, out["error"], "awaits the provider's confirmation")
	code, out = adminCall(t, alice, "", http.MethodPost, api+"bookings/"+bookingV+"/confirm", map[string]any{})
	require.Equal(t, http.StatusForbidden, code, out)
	require.Contains(t, out["error"], "only the provider may confirm")
	bob, status, _ := idp.adminSession(t, s.FocusURL, "bob", "bob-pw", true)
	require.Equal(t, http.StatusOK, status)
	code, out = adminCall(t, bob, "", http.MethodPost, api+"bookings/"+bookingV+"/confirm", map[string]any{})
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, "active", out["state"])
	code, out = token(roomV, "v1")
	require.Equal(t, http.StatusOK, code, out)

	// --- A revoked booking stops new tokens; its status bit is set.
	code, out = adminCall(t, bob, "", http.MethodPost, api+"bookings/"+bookingR+"/revoke", map[string]any{"reason": "test"})
	require.Equal(t, http.StatusOK, code, out)
	code, out = token(roomR, "m00")
	require.Equal(t, http.StatusForbidden, code, out)
	require.Equal(t, "The booking "+bookingR+" (public, up to 20 participants) was revoked by the provider.", out["error"])

	// --- An expired booking stops new tokens.
	reqE := bookingRequest("public-20-silver", roomE)
	reqE["valid_until"] = time.Now().Add(10 * time.Second).UTC().Format(time.RFC3339Nano)
	code, out = adminCall(t, alice, "", http.MethodPost, api+"bookings", reqE)
	require.Equal(t, http.StatusOK, code, out)
	acceptBooking(t, s, host, roomE, out["id"].(string))
	code, out = token(roomE, "e1")
	require.Equal(t, http.StatusOK, code, out)
	require.Eventually(t, func() bool {
		code, out := token(roomE, "e2")
		return code == http.StatusForbidden && strings.Contains(fmt.Sprint(out["error"]), "has expired")
	}, 60*time.Second, 250*time.Millisecond)

	// --- Independent verification of everything published.
	dir := t.TempDir()
	fetch := func(path, file string) {
		t.Helper()
		resp, err := http.Get(s.FocusURL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, file), raw, 0o644))
	}
	fetch("/.well-known/did.json", "did.json")
	fetch("/catalog/shapes/conference-tier.ttl", "conference-tier-shape.ttl")
	var cat struct {
		Credentials []struct {
			Name string `json:"name"`
		} `json:"credentials"`
	}
	code, raw := getJSONInto(t, s.FocusURL+"/catalog/", &cat)
	require.Equal(t, http.StatusOK, code, raw)
	require.Len(t, cat.Credentials, 1+3+15+45)
	for _, c := range cat.Credentials {
		fetch("/catalog/credentials/"+c.Name, c.Name+".jwt")
	}
	extra := t.TempDir()
	for _, b := range []string{bookingR, bookingV} {
		code, out := adminCall(t, bob, "", http.MethodGet, api+"bookings/"+b+"/entitlement", nil)
		require.Equal(t, http.StatusOK, code, out)
		require.NoError(t, os.WriteFile(filepath.Join(extra, b+".jwt"), []byte(out["raw"].(string)), 0o644))
	}
	resp, err = http.Get(s.FocusURL + "/catalog/status/revocation")
	require.NoError(t, err)
	statusJWT, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, os.WriteFile(filepath.Join(extra, "status.jwt"), statusJWT, 0o644))
	report := runCatalogCheck(t, dir, filepath.Join(extra, bookingR+".jwt"), filepath.Join(extra, bookingV+".jwt"), filepath.Join(extra, "status.jwt"))
	require.Empty(t, report.Errors)
	require.Equal(t, 64, report.Verified)
	require.Equal(t, map[string]int{"gx:LegalPerson": 1, "gx:TermsAndConditions": 3, "gx:ServiceOffering": 15, "vk:ConferenceTier": 45}, report.Kinds)
	require.True(t, report.SHACL.Conforms, "%+v", report.SHACL.Results)
	require.True(t, report.Mandatory)
	require.False(t, report.Selftest.Tier30Conforms)
	require.False(t, report.Selftest.NoProviderConforms)
	require.False(t, report.Selftest.TamperedVerifies)
	revoked := map[string]bool{}
	for _, e := range report.Extra {
		if e.Revoked != nil {
			revoked[strings.TrimSuffix(e.File, ".jwt")] = *e.Revoked
		}
	}
	require.Equal(t, map[string]bool{bookingR: true, bookingV: false}, revoked, "revocation is the status bit")

	// --- The bot tells the room about its booking; only a room admin accepts one.
	guest := register(t, s, "guest")
	_, err = host.Client.InviteUser(ctx, roomA, &mautrix.ReqInviteUser{UserID: guest.ID})
	require.NoError(t, err)
	_, err = guest.Client.JoinRoomByID(ctx, roomA)
	require.NoError(t, err)
	_, err = guest.Client.SendText(ctx, roomA, "!conf bookings accept "+bookingR)
	require.NoError(t, err)
	waitForMessage(t, host, roomA, s.BotID, "Only a member with the room's highest power level (100) may accept a booking for it; you have 0.")
	_, err = host.Client.SendText(ctx, roomA, "!conf bookings")
	require.NoError(t, err)
	waitForMessage(t, host, roomA, s.BotID, "tier public-50-bronze")

	// --- Every admin action is in the hash-chained audit log.
	outb, err := exec.Command(gxconfBin, "audit", "verify", "-c", s.ConfigPath).CombinedOutput()
	require.NoError(t, err, "%s", outb)
	require.Contains(t, string(outb), "audit log intact")
	counts := auditCounts(t, s)
	require.Equal(t, 5, counts["admin:book"])
	require.Equal(t, 1, counts["admin:confirm"])
	require.Equal(t, 1, counts["admin:revoke"])
	require.GreaterOrEqual(t, counts["admin-denied:book"], 1, "charlie without MFA")
	require.GreaterOrEqual(t, counts["admin-denied:cancel"], 1, "mallory")
	require.GreaterOrEqual(t, counts["admin-denied:login"], 1, "charlie's login")
	require.GreaterOrEqual(t, counts["admin:login"], 3)
	require.Equal(t, 6, counts["room:accept-booking"])
}
