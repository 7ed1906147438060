package test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/test/credharness"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// TestBrowserFederatedCall is issue 10's browser proof: alice@fed-a and
// bob@fed-b (two Dendrites federating over the rig's IX link, each with its
// own gxconf) call each other in one federated, encrypted room, each in
// Chromium with gxconf's call page in Element Call's multi-SFU mode. Each
// page uses its own homeserver, whose operator proxy names its own
// deployment's focus: each publishes there and subscribes, subscribe-only
// as a foreign user, on the other's; media (end-to-end encrypted) and data
// cross. carol@fed-b drops in and out while the room has no policy; then
// the room requires a credential: her page is refused by her own focus and
// by fed-a's; with an attestation from fed-b only, fed-b admits her and
// fed-a still refuses her subscription; once she has presented her
// credential to both she sees and hears alice.
func TestBrowserFederatedCall(t *testing.T) {
	start := time.Now()
	ctx := context.Background()
	if os.Getenv("GXTEST_SFU_URL") != "" {
		t.Log("GXTEST_SFU_URL is ignored: each federation runs gxconf's embedded SFU")
	}
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))

	// The credential harness (issuer and wallet) runs in the root namespace;
	// its "w3c" issuer is a did:key, verified without network.
	tlsc, err := credharness.NewLoopbackTLS(t.TempDir())
	require.NoError(t, err)
	wallet, err := credharness.Start(tlsc, os.Stderr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = wallet.Close() })

	// Each federation's operator proxy in front of its homeserver, in the
	// root namespace where the browser runs. Closed after the browser
	// (cleanups run last to first): the pages long-poll /sync through them.
	proxies := map[string]*harness.HomeserverProxy{}
	perFed := map[string]map[string]any{}
	for _, name := range harness.FederationNames {
		p, err := harness.ListenHomeserverProxy()
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, p.Close()) })
		proxies[name] = p
		perFed[name] = map[string]any{"focus": map[string]any{"discovery": map[string]any{"homeserver_base_url": p.URL}}}
	}
	rig, err := harness.StartFederations(ctx, harness.FederationOptions{
		Bin: gxconfBin, Dir: dir, PerFederation: perFed,
		// Both deployments trust the issuer for users of both homeservers.
		Config: credentialTrust(wallet, harness.FederationServerName("fed-a"), harness.FederationServerName("fed-b")),
	})
	require.NoError(t, err)
	closeOnCleanup(t, rig)
	fa, fb := rig.A, rig.B
	t.Logf("federations up after %s", time.Since(start).Round(time.Millisecond))

	site := func(fed *harness.Federation) callSite {
		p := proxies[fed.Name]
		require.NoError(t, p.Serve(fed.Dendrite.URL, fed.FocusURL))
		return callSite{Name: fed.Name, Homeserver: p.URL, Page: loopbackFront(t, fed.FocusURL), Focus: fed.FocusURL,
			SFU: testSFU{URL: fed.SFUURL, Key: fed.SFUKey, Secret: fed.SFUSecret}}
	}
	siteA, siteB := site(fa), site(fb)
	for _, s := range []callSite{siteA, siteB} {
		resp, err := http.Get(s.Page + "/selftest/")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s's gxconf serves no built self-test page at /selftest/: build web/ before the tests", s.Name)
	}

	bctx, cancel := context.WithTimeout(ctx, time.Minute)
	browser, err := harness.StartBrowser(bctx, harness.BrowserOptions{UserDataDir: t.TempDir()})
	cancel()
	require.NoError(t, err)
	e := &browserEnv{t: t, stack: fa.Stack, proxy: proxies[fa.Name], browser: browser, sfu: siteA.SFU}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("browser log:\n%s", browser.Log())
		}
		browser.Close()
	})

	alice := register(t, fa.Stack, "alice")
	bob := register(t, fb.Stack, "bob")
	carol := register(t, fb.Stack, "carol")
	room := createFederatedCallRoom(t, rig, alice, bob, carol)

	// alice first: her membership is the call's oldest (legacy mode below
	// publishes on the oldest member's focus).
	joined := time.Now()
	a := e.join("alice", alice, room, siteA.options(callOptions{E2EE: true, JWT: "legacy"}))
	as := a.await(t, `s.phase === "in-call" && s.e2eeActive`, joinTimeout)
	t.Logf("alice's page in the call after %s", time.Since(joined).Round(time.Millisecond))
	joined = time.Now()
	b := e.join("bob", bob, room, siteB.options(callOptions{E2EE: true, JWT: "legacy"}))
	bs := b.await(t, `s.phase === "in-call" && s.e2eeActive`, joinTimeout)
	bobInCall := time.Now()
	t.Logf("bob's page in the call after %s", bobInCall.Sub(joined).Round(time.Millisecond))
	aliceID, bobID := as.SFU.Identity, bs.SFU.Identity
	require.Equal(t, alice.ID.String()+":"+as.DeviceID, aliceID)
	require.Equal(t, bob.ID.String()+":"+bs.DeviceID, bobID)

	t.Run("each discovers and publishes on their own deployment", func(t *testing.T) {
		for _, c := range []struct {
			st   pageState
			site callSite
		}{{as, siteA}, {bs, siteB}} {
			require.Equal(t, "compatibility", c.st.Mode)
			require.Equal(t, c.site.Focus, c.st.Focus.ServiceURL, "discovery through %s's homeserver", c.site.Name)
			require.Equal(t, "rtc/transports", c.st.Focus.Via)
			require.Equal(t, c.site.SFU.URL, c.st.SFU.URL)
			require.Equal(t, []tokenAttempt{{Endpoint: "sfu_get", Status: 200}}, c.st.TokenAttempts)
		}
		// Each sees the other's membership naming the other's focus.
		want := fmt.Sprintf(`s.rtcTransports[%s] === %s && s.rtcTransports[%s] === %s`,
			js(alice.ID.String()+"|"+as.DeviceID), js(siteA.Focus), js(bob.ID.String()+"|"+bs.DeviceID), js(siteB.Focus))
		a.await(t, want, mediaTimeout)
		b.await(t, want, mediaTimeout)
	})

	t.Run("each subscribes on the other deployment as a foreign user", func(t *testing.T) {
		ast := requireConnections(t, a, siteA.Focus, siteB.Focus)
		bst := requireConnections(t, b, siteB.Focus, siteA.Focus)
		aliceOnB, bobOnA := connectionTo(t, ast, siteB.Focus), connectionTo(t, bst, siteA.Focus)
		require.Equal(t, siteB.SFU.URL, aliceOnB.URL)
		require.Equal(t, siteA.SFU.URL, bobOnA.URL)
		require.Equal(t, bs.SFU.LKRoom, aliceOnB.LKRoom)
		require.Equal(t, as.SFU.LKRoom, bobOnA.LKRoom)
		// The grants each SFU applies, from the tokens its focus issued:
		// its own user publishes; the foreign user only subscribes.
		for _, c := range []struct {
			sfu                      testSFU
			lkRoom, local, foreigner string
		}{{siteA.SFU, as.SFU.LKRoom, aliceID, bobOnA.Identity}, {siteB.SFU, bs.SFU.LKRoom, bobID, aliceOnB.Identity}} {
			var ps map[string]*livekit.ParticipantInfo
			require.Eventually(t, func() bool {
				ps = sfuParticipants(t, c.sfu, c.lkRoom)
				return len(ps) == 2 && ps[c.local] != nil && len(ps[c.local].Tracks) == 2 && ps[c.foreigner] != nil
			}, mediaTimeout, 100*time.Millisecond, "participants on %s", c.sfu.URL)
			require.True(t, ps[c.local].Permission.GetCanPublish(), "%s publishes on its own deployment", c.local)
			f := ps[c.foreigner]
			require.Empty(t, f.Tracks, "%s publishes on %s", c.foreigner, c.sfu.URL)
			require.False(t, f.Permission.GetCanPublish(), "a foreign user's token is subscribe-only")
			require.False(t, f.Permission.GetCanPublishData())
			require.True(t, f.Permission.GetCanSubscribe())
		}
	})

	t.Run("first frames across the federations", func(t *testing.T) {
		// alice has bob's key for sure: a joiner's client fetches the
		// members' device keys before sending them its key.
		a.awaitStats(t, fmt.Sprintf(`(v => v && v.framesDecoded > 0)(%s)`, videoOf(bobID)), mediaTimeout)
		t.Logf("alice decoded bob's first frame %s after bob's page was in the call", time.Since(bobInCall).Round(time.Millisecond))
		// The other way round, alice's first key may be lost (see below).
		st := b.state(t)
		stats := b.awaitStats(t, "true", time.Second)
		t.Logf("bob then had alice's first media key: %t; frames of hers decoded: %d",
			containsAllStrings(st.MediaKeys, aliceID), findStats(stats, aliceID, "video").FramesDecoded)
	})

	// matrix-js-sdk (43) sends a joiner every member's current media key once
	// and, if the joiner's device is not yet known to the member's crypto,
	// drops it silently yet records it as shared (rust crypto awaits a
	// pending /keys/query only for users with no known device). On one
	// homeserver a new device's keys reach the others before its membership
	// does; across federations the device-list update (an EDU) and the
	// membership (a PDU) race, and alice's first key misses bob's new device
	// in about one run of four. Only a key rotation, which a member leaving
	// causes, sends it again. carol calling in briefly before the room has a
	// policy makes one, and is the policy's baseline: both deployments admit
	// her then.
	t.Run("carol drops in before the room has a policy", func(t *testing.T) {
		c := e.join("carol (before the policy)", carol, room, siteB.options(callOptions{E2EE: true, JWT: "legacy"}))
		c.await(t, `s.phase === "in-call" && s.e2eeActive`, joinTimeout)
		st := requireConnections(t, c, siteB.Focus, siteA.Focus)
		member, identity := js(carol.ID.String()+"|"+st.DeviceID), js(st.SFU.Identity)
		for _, p := range []*participant{a, b} {
			p.await(t, fmt.Sprintf(`s.rtcMembers.includes(%s)`, member), mediaTimeout)
		}
		c.do(t, "leave()")
		for _, p := range []*participant{a, b} {
			p.await(t, fmt.Sprintf(`!s.rtcMembers.includes(%s) && s.rtcMembers.length === 2 && !(%s in s.remote)`, member, identity), mediaTimeout)
		}
	})

	t.Run("each decodes the other's encrypted media across the federations", func(t *testing.T) {
		a.await(t, fmt.Sprintf(`[%s, %s].every(id => s.mediaKeys.includes(id))`, js(aliceID), js(bobID)), mediaTimeout)
		b.await(t, fmt.Sprintf(`[%s, %s].every(id => s.mediaKeys.includes(id))`, js(aliceID), js(bobID)), mediaTimeout)
		views := []struct {
			viewer *participant
			other  string
			on     string
		}{{a, bobID, siteB.Focus}, {b, aliceID, siteA.Focus}}
		for _, c := range views {
			st := c.viewer.await(t, remoteHas(c.other)+fmt.Sprintf(` && Object.values(s.remote[%s].tracks).every(t => t.encrypted)`, js(c.other)), mediaTimeout)
			require.Equal(t, c.on, st.Remote[c.other].ServiceURL)
			require.Len(t, st.Remote, 1, "%s's remote participants: %v", c.viewer.name, st.Remote)
			requireMediaFlows(t, c.viewer, c.other)
			stats := c.viewer.awaitStats(t, "true", time.Second)
			require.Equal(t, c.on, findStats(stats, c.other, "video").ServiceURL)
			require.Equal(t, c.on, findStats(stats, c.other, "audio").ServiceURL)
		}
		a.screenshot(t, "browser-federation-alice.png")
		b.screenshot(t, "browser-federation-bob.png")
	})

	t.Run("data crosses the federations both ways", func(t *testing.T) {
		for _, c := range []struct {
			from, to *participant
			fromID   string
		}{{a, b, aliceID}, {b, a, bobID}} {
			msg := fmt.Sprintf("Grüße von %s %s", c.from.name, time.Now().Format(time.RFC3339Nano))
			c.from.do(t, fmt.Sprintf("sendData(%s)", js(msg)))
			c.to.await(t, fmt.Sprintf(`s.dataMessages.some(m => m.text === %s && m.from === %s && m.topic === "gxconf-test")`, js(msg), js(c.fromID)), mediaTimeout)
		}
	})

	t.Run("the room requires a credential on both deployments", func(t *testing.T) {
		_, err := alice.Client.SendStateEvent(ctx, room, event.Type{Type: "de.gxconf.access", Class: event.StateEventType}, "", map[string]any{
			"level":                "public",
			"required_credentials": []any{map[string]any{"federation": "oev", "type": "EmployeeCredential"}},
		})
		require.NoError(t, err)
		for _, fed := range []*harness.Federation{fa, fb} {
			waitForMessage(t, alice, room, fed.BotID, "Access policy of this room: level public; credential EmployeeCredential from oev")
		}
	})

	const missing = "missing credential EmployeeCredential from federation oev"
	refused := []tokenAttempt{{Endpoint: "sfu_get", Status: http.StatusForbidden, Errcode: "M_FORBIDDEN"}}
	// noCarolOn checks that carol has no session on an SFU.
	noCarolOn := func(t *testing.T, s callSite, lkRoom string) {
		t.Helper()
		for identity := range sfuParticipants(t, s.SFU, lkRoom) {
			require.False(t, strings.HasPrefix(identity, carol.ID.String()), "%s is on %s's SFU", identity, s.Name)
		}
	}

	t.Run("without the credential both deployments refuse carol's page", func(t *testing.T) {
		// Her own focus, as Element Call's multi-SFU mode asks it.
		c := e.join("carol (no credential)", carol, room, siteB.options(callOptions{E2EE: true, JWT: "legacy"}))
		st := c.await(t, `s.phase === "failed"`, joinTimeout)
		require.Equal(t, siteB.Focus, st.Focus.ServiceURL)
		require.Equal(t, refused, st.TokenAttempts, "fed-b's focus refuses carol")
		require.Zero(t, st.SFUConnectAttempts, "carol's page reached an SFU")
		require.Empty(t, st.Remote)
		require.Contains(t, strings.Join(st.Errors, "\n"), missing)
		// fed-a's focus, which her page asks in legacy mode: it publishes on
		// the oldest member's (alice's) focus.
		c = e.join("carol (legacy mode)", carol, room, siteB.options(callOptions{E2EE: true, JWT: "legacy", Mode: "legacy"}))
		st = c.await(t, `s.phase === "failed"`, joinTimeout)
		require.Equal(t, siteB.Focus, st.Focus.ServiceURL, "carol's discovery names her own focus")
		require.Len(t, st.Connections, 1)
		require.Equal(t, siteA.Focus, st.Connections[0].ServiceURL, "legacy mode asks the oldest member's focus")
		require.Equal(t, refused, st.TokenAttempts, "fed-a's focus refuses carol")
		require.Zero(t, st.SFUConnectAttempts, "carol's page reached an SFU")
		require.Empty(t, st.Remote)
		require.Contains(t, strings.Join(st.Errors, "\n"), missing)
		noCarolOn(t, siteA, as.SFU.LKRoom)
		noCarolOn(t, siteB, bs.SFU.LKRoom)
	})

	// present has carol present her credential to fed's verifier, through
	// the link its bot sent her when its focus refused her.
	present := func(t *testing.T, fed *harness.Federation) {
		t.Helper()
		dm, body := waitForDirectMessage(t, carol, fed.BotID, "openid4vp://")
		cred, err := wallet.Issue(map[string]any{"format": "ldp_vc", "issuer": "w3c", "type": "EmployeeCredential"})
		require.NoError(t, err)
		res, err := wallet.Present(openid4vpLink.FindString(body), cred, "ldp_vp", nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.Status, "%s: %s", fed.Name, res.Body)
		waitForMessageIn(t, carol, dm, fed.BotID, "is verified until")
	}

	var c3 *participant
	t.Run("fed-b's attestation admits carol on fed-b only", func(t *testing.T) {
		present(t, fb)
		c3 = e.join("carol (fed-b attested)", carol, room, siteB.options(callOptions{E2EE: true, JWT: "legacy"}))
		st := c3.await(t, fmt.Sprintf(`s.phase === "in-call" && s.connections.some(c => c.serviceUrl === %s && c.state === "failed")`, js(siteA.Focus)), joinTimeout)
		require.Equal(t, []tokenAttempt{{Endpoint: "sfu_get", Status: 200}}, st.TokenAttempts, "fed-b admits carol")
		require.Equal(t, siteB.SFU.URL, st.SFU.URL)
		// Her subscription on alice's deployment, asked as Element Call asks
		// a service it does not publish on (/get_token, then /sfu/get):
		// fed-a verifies for itself.
		onA := connectionTo(t, st, siteA.Focus)
		require.Equal(t, []tokenAttempt{
			{Endpoint: "get_token", Status: http.StatusForbidden, Errcode: "M_FORBIDDEN"},
			{Endpoint: "sfu_get", Status: http.StatusForbidden, Errcode: "M_FORBIDDEN"},
		}, onA.TokenAttempts, "fed-a's focus refuses carol")
		require.Equal(t, 1, st.SFUConnectAttempts, "carol's page connects to her own SFU only")
		require.NotContains(t, st.Remote, aliceID, "carol gets alice's media")
		require.Contains(t, strings.Join(st.Errors, "\n"), missing)
		noCarolOn(t, siteA, as.SFU.LKRoom)
	})

	t.Run("attested on both deployments, carol sees and hears alice", func(t *testing.T) {
		require.NotNil(t, c3, "carol's fed-b-attested page is in the call")
		present(t, fa)
		// Her page does not retry a refused connection: she joins again in a
		// new tab, as after reloading, and then hangs up the old one.
		joined := time.Now()
		c := e.join("carol", carol, room, siteB.options(callOptions{E2EE: true, JWT: "legacy"}))
		cs := c.await(t, `s.phase === "in-call" && s.e2eeActive`, joinTimeout)
		t.Logf("carol's page in the call after %s", time.Since(joined).Round(time.Millisecond))
		carolID := cs.SFU.Identity
		requireConnections(t, c, siteB.Focus, siteA.Focus)
		// The old tab hangs up only now: its leave makes everyone send a new
		// key to all members, which their first keys to the new tab may have
		// missed (see "carol drops in"; carol has older devices, so their
		// crypto does not even await a pending /keys/query).
		st := c.state(t)
		t.Logf("carol's new tab had alice's first media key before the old one hung up: %t", containsAllStrings(st.MediaKeys, aliceID))
		oldTab := c3.state(t).SFU.Identity
		c3.do(t, "leave()")
		a.await(t, fmt.Sprintf(`s.departed.includes(%s)`, js(oldTab)), mediaTimeout)
		c.awaitStats(t, fmt.Sprintf(`(v => v && v.framesDecoded > 0)(%s)`, videoOf(aliceID)), mediaTimeout)
		t.Logf("carol decoded alice's first frame %s after joining", time.Since(joined).Round(time.Millisecond))
		st = c.await(t, remoteHas(aliceID)+" && "+remoteHas(bobID), mediaTimeout)
		require.Equal(t, siteA.Focus, st.Remote[aliceID].ServiceURL)
		requireMediaFlows(t, c, aliceID)
		// alice sees carol on the connection she already had to fed-b.
		st = a.await(t, remoteHas(carolID), mediaTimeout)
		require.Equal(t, siteB.Focus, st.Remote[carolID].ServiceURL)
		c.screenshot(t, "browser-federation-carol.png")

		for _, p := range []*participant{a, b, c} {
			st := p.state(t)
			require.Empty(t, st.Errors, "%s's page reported errors", p.name)
			// Frames ahead of their key (see TestBrowserMultiSFU); any other
			// error is a fault.
			for _, msg := range st.EncryptionErrors {
				require.Contains(t, msg, "MissingKey", "%s's page reported encryption errors", p.name)
			}
			t.Logf("%s: %d encryption errors for frames ahead of their key", p.name, len(st.EncryptionErrors))
		}
	})
	t.Logf("federated browser call took %s", time.Since(start).Round(time.Millisecond))
}

// credentialTrust is both deployments' credentials config: federation "oev"
// of the given homeservers trusts the wallet's "w3c" issuer for
// EmployeeCredential.
func credentialTrust(wallet *credharness.Harness, domains ...string) map[string]any {
	atRest := make([]byte, 32)
	_, _ = rand.Read(atRest)
	return map[string]any{"credentials": map[string]any{
		"federations": []any{map[string]any{
			"id":                 "oev",
			"homeserver_domains": domains,
			"trusted_issuers":    []any{map[string]any{"did": wallet.Info.Issuers["w3c"], "types": []string{"EmployeeCredential"}}},
		}},
		"at_rest_key":    base64.StdEncoding.EncodeToString(atRest),
		"did_resolution": map[string]any{"allow_private_addresses_for_testing": true},
	}}
}

// loopbackFront serves target (a focus, whose gxconf serves the call page at
// /selftest/) on a loopback address of the root namespace, as the
// operator's https site does: the page needs a secure context
// (getUserMedia, WebCrypto, crypto.randomUUID), which Chromium grants to
// https and loopback origins but not to http://10.N.i.10. It is closed when
// t ends, after the browser if started before it.
func loopbackFront(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	require.NoError(t, err)
	srv := httptest.NewServer(httputil.NewSingleHostReverseProxy(u))
	t.Cleanup(srv.Close)
	return srv.URL
}

// createFederatedCallRoom has alice (of fed-a) create an encrypted call room
// that bob and carol (of fed-b) join over federation, with both deployments'
// bots in it; it returns once both gxconfs' appservices have seen every join
// (each focus checks membership in its own store).
func createFederatedCallRoom(t *testing.T, rig *harness.Federations, alice *harness.User, others ...*harness.User) id.RoomID {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	bots := []id.UserID{rig.A.BotID, rig.B.BotID}
	invite := append([]id.UserID(nil), bots...)
	for _, u := range others {
		invite = append(invite, u.ID)
	}
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Name: "Föderierte Videokonferenz", Invite: invite,
		InitialState: []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
		// Members announce themselves in the call (as createCallRoom); the
		// bots may restore a refused access policy.
		PowerLevelOverride: &event.PowerLevelsEventContent{
			Users: map[id.UserID]int{alice.ID: 100, bots[0]: 50, bots[1]: 50},
			Events: map[string]int{
				"m.room.name": 50, "m.room.avatar": 50, "m.room.canonical_alias": 50, "m.room.topic": 50,
				"m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.encryption": 100,
				"m.room.tombstone": 100, "m.room.server_acl": 100,
				"org.matrix.msc3401.call.member": 0, "org.matrix.msc4143.rtc.slot": 100,
			},
		},
	})
	require.NoError(t, err)
	// fed-b's bot learns of its invite only with the first join of a fed-b
	// user (Dendrite v0.13.8 does not pass a federated invite to a room it
	// is not in to its appservices), so that join, fed-b's first, is bob's,
	// into a quiet room.
	beforeFirstRemoteJoin(t, alice, created.RoomID, rig.A.BotID)
	for _, u := range others {
		require.NoError(t, joinRetrying(ctx, u.Client, created.RoomID), "%s cannot join over federation", u.ID)
	}
	members := append(bots, alice.ID)
	for _, u := range others {
		members = append(members, u.ID)
	}
	for _, fed := range []*harness.Federation{rig.A, rig.B} {
		for _, m := range members {
			require.Eventually(t, func() bool { return storeMembership(t, fed.Stack, created.RoomID, m) == "join" },
				60*time.Second, 50*time.Millisecond, "%s's appservice did not record %s's join", fed.Name, m)
		}
	}
	t.Logf("federated room %s created and joined by everyone, as both appservices saw it, in %s", created.RoomID, time.Since(start).Round(time.Millisecond))
	return created.RoomID
}

// sfuParticipants lists lkRoom's participants on sfu by identity, as its
// RoomService reports them to the operator.
func sfuParticipants(t *testing.T, sfu testSFU, lkRoom string) map[string]*livekit.ParticipantInfo {
	t.Helper()
	resp, err := lksdk.NewRoomServiceClient(httpOf(sfu.URL), sfu.Key, sfu.Secret).
		ListParticipants(context.Background(), &livekit.ListParticipantsRequest{Room: lkRoom})
	require.NoError(t, err)
	out := map[string]*livekit.ParticipantInfo{}
	for _, p := range resp.Participants {
		out[p.Identity] = p
	}
	return out
}
