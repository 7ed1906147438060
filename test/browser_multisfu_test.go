package test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
	"github.com/twitchtv/twirp"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/test/harness"
)

// callSite is where one user of a multi-SFU call comes from: the homeserver
// URL their client uses, whose discovery names Focus, the page serving the
// call client, and the focus's SFU (for the server-side checks). Two sites on
// one Dendrite here; two federations later, with the same helpers.
type callSite struct {
	Name       string
	Homeserver string
	Page       string
	Focus      string
	SFU        testSFU
}

func (c callSite) options(o callOptions) callOptions {
	o.Homeserver, o.Page = c.Homeserver, c.Page
	return o
}

// startSecondFocus starts another gxconf next to s's, on the same Dendrite:
// its own focus, SFU and SQLite database, behind proxy (so that discovery
// through it names this focus), with s's registration. Dendrite sends the
// appservice's transactions to s's gxconf only, so this one learns room
// membership by asking the homeserver as the bot, which must be in the call's
// rooms. It is stopped, and its log printed if t failed, when t ends; the
// caller closes proxy after the browser whose pages use it.
func startSecondFocus(t *testing.T, s *harness.Stack, proxy *harness.HomeserverProxy, name string) callSite {
	t.Helper()
	dir := t.TempDir()
	ports := make([]int, 4)
	for i := range ports {
		var err error
		ports[i], err = harness.FreePort()
		require.NoError(t, err)
	}
	udp, err := harness.FreeUDPPort()
	require.NoError(t, err)
	focusURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	sfu := testSFU{URL: fmt.Sprintf("ws://127.0.0.1:%d", ports[2]), Key: "gxconf-test-" + name, Secret: rand.Text() + rand.Text()}
	cfg := map[string]any{
		"homeserver": map[string]any{"domain": "localhost", "address": s.Dendrite.URL},
		"database":   map[string]any{"uri": "file:" + filepath.Join(dir, "gxconf.db") + "?_txlock=immediate"},
		"appservice": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", ports[0])},
		"focus": map[string]any{
			"listen":    fmt.Sprintf("127.0.0.1:%d", ports[1]),
			"openid":    map[string]any{"server_overrides": map[string]any{"localhost": s.Dendrite.URL}},
			"discovery": map[string]any{"homeserver_base_url": proxy.URL},
			"rate_limit": map[string]any{"per_ip": map[string]any{"rate": 1000, "burst": 1000},
				"per_user": map[string]any{"rate": 1000, "burst": 1000}},
		},
		"sfu": map[string]any{
			"listen": fmt.Sprintf("127.0.0.1:%d", ports[2]),
			"keys":   map[string]any{sfu.Key: sfu.Secret},
			"rtc":    map[string]any{"udp_port": udp, "tcp_port": 0, "node_ip": "127.0.0.1"},
		},
		"metrics": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", ports[3])},
		"logging": map[string]any{"level": "debug"},
	}
	raw, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	cfgPath := filepath.Join(dir, "gxconf.yaml")
	require.NoError(t, os.WriteFile(cfgPath, raw, 0o600))
	proc, err := harness.StartGxconf(context.Background(), gxconfBin, cfgPath, s.RegistrationPath, filepath.Join(dir, "gxconf.log"), focusURL+"/healthz")
	require.NoError(t, err)
	require.NoError(t, proxy.Serve(s.Dendrite.URL, focusURL))
	t.Cleanup(func() {
		err := proc.Stop()
		if t.Failed() || os.Getenv("TEST_SHOW_LOGS") != "" {
			t.Logf("gxconf %s log:\n%s", name, tail(proc.Log(), 20000))
		}
		require.NoError(t, err, "gxconf %s must exit cleanly on SIGTERM", name)
	})
	return callSite{Name: name, Homeserver: proxy.URL, Page: focusURL, Focus: focusURL, SFU: sfu}
}

// requireConnections waits until p publishes on its connection to publish
// and holds one subscribe-only connection to each of subscribe, nothing
// else, all connected; it returns the state.
func requireConnections(t *testing.T, p *participant, publish string, subscribe ...string) pageState {
	t.Helper()
	quoted := make([]string, len(subscribe))
	for i, u := range subscribe {
		quoted[i] = js(u)
	}
	st := p.await(t, fmt.Sprintf(`s.connections.length === %d &&
		s.connections[0].own && s.connections[0].serviceUrl === %s && s.connections[0].state === "connected" && s.connections[0].published >= 2 &&
		[%s].every(u => s.connections.some(c => !c.own && c.serviceUrl === u && c.state === "connected"))`,
		1+len(subscribe), js(publish), strings.Join(quoted, ", ")), joinTimeout)
	for _, c := range st.Connections[1:] {
		// The focus gives same-homeserver users full access everywhere: the
		// client itself publishes on its own connection only.
		require.Zero(t, c.Published, "%s publishes on its connection to %s", p.name, c.ServiceURL)
		require.NotEqual(t, st.SFU.URL, c.URL, "%s's subscribe-only connection goes to its own SFU", p.name)
		require.Equal(t, []tokenAttempt{{Endpoint: "get_token", Status: 200}}, c.TokenAttempts,
			"a service we do not publish on is asked as Element Call asks it: /get_token first")
	}
	return st
}

// connectionTo is p's connection to serviceURL in st.
func connectionTo(t *testing.T, st pageState, serviceURL string) connectionInfo {
	t.Helper()
	for _, c := range st.Connections {
		if c.ServiceURL == serviceURL {
			return c
		}
	}
	require.Failf(t, "no connection", "to %s in %+v", serviceURL, st.Connections)
	return connectionInfo{}
}

// sfuTracks lists the participants of lkRoom on sfu with how many tracks
// each publishes; found is false when the SFU has no such room.
func sfuTracks(t *testing.T, sfu testSFU, lkRoom string) (tracks map[string]int, found bool) {
	t.Helper()
	base := strings.Replace(sfu.URL, "ws://", "http://", 1)
	jwt, err := auth.NewAccessToken(sfu.Key, sfu.Secret).SetVideoGrant(&auth.VideoGrant{RoomAdmin: true, Room: lkRoom}).SetValidFor(time.Minute).ToJWT()
	require.NoError(t, err)
	h := http.Header{}
	h.Set("Authorization", "Bearer "+jwt)
	ctx, err := twirp.WithHTTPRequestHeaders(context.Background(), h)
	require.NoError(t, err)
	resp, err := livekit.NewRoomServiceProtobufClient(base, http.DefaultClient).ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: lkRoom})
	var terr twirp.Error
	if errors.As(err, &terr) && terr.Code() == twirp.NotFound {
		return nil, false
	}
	require.NoError(t, err)
	tracks = map[string]int{}
	for _, p := range resp.Participants {
		tracks[p.Identity] = len(p.Tracks)
	}
	return tracks, true
}

// jsonOf is v as a JavaScript literal.
func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// callMemberContent reads u's org.matrix.msc3401.call.member state event in
// room, sent by matrix-js-sdk for device (state key "_@user:server_DEVICE_m.call").
func callMemberContent(t *testing.T, reader *harness.User, room id.RoomID, u *harness.User, device string) map[string]any {
	t.Helper()
	var content map[string]any
	evType := event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}
	require.NoError(t, reader.Client.StateEvent(context.Background(), room, evType, fmt.Sprintf("_%s_%s_m.call", u.ID, device), &content))
	return content
}

// TestBrowserMultiSFU is a call in Element Call's default MatrixRTC mode
// ("compatibility", multi-SFU) between users of two foci: alice's homeserver
// URL names focus A, bob's focus B (two gxconf processes, each with its
// embedded SFU, on one Dendrite). Each publishes on their own focus's SFU and
// subscribes on the other's through a second, subscribe-only LiveKit
// connection; media is end-to-end encrypted, the keys bound to the
// publishers' identities serve both connections. When bob leaves, alice's
// connection to focus B closes; when carol, also of focus B, joins in legacy
// mode, she publishes on alice's focus, the oldest member's, and nobody uses
// focus B.
func TestBrowserMultiSFU(t *testing.T) {
	start := time.Now()
	if os.Getenv("GXTEST_SFU_URL") != "" {
		t.Log("GXTEST_SFU_URL is ignored: this test runs gxconf's own SFUs on both foci")
	}
	// Closed after the browser (cleanups run last to first): bob's page
	// long-polls /sync through it.
	proxyB, err := harness.ListenHomeserverProxy()
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, proxyB.Close()) })
	e := startBrowserEnvWith(t, testSFU{}, harness.StackOptions{})
	s := e.stack
	siteA := callSite{Name: "a", Homeserver: e.proxy.URL, Page: s.FocusURL, Focus: s.FocusURL, SFU: e.sfu}
	siteB := startSecondFocus(t, s, proxyB, "b")

	alice, bob, carol := register(t, s, "alice"), register(t, s, "bob"), register(t, s, "carol")
	room := createCallRoom(t, s, alice, true, bob, carol)
	// Focus B asks the homeserver about membership as the bot.
	_, err = alice.Client.InviteUser(context.Background(), room, &mautrix.ReqInviteUser{UserID: s.BotID})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return storeMembership(t, s, room, s.BotID) == "join" },
		30*time.Second, 50*time.Millisecond, "the bot did not join")

	// Bob's page comes from focus B's gxconf: each site serves its own client.
	a := e.join("alice", alice, room, siteA.options(callOptions{E2EE: true, JWT: "legacy"}))
	b := e.join("bob", bob, room, siteB.options(callOptions{E2EE: true, JWT: "legacy"}))
	as := a.await(t, `s.phase === "in-call" && s.e2eeActive`, joinTimeout)
	bs := b.await(t, `s.phase === "in-call" && s.e2eeActive`, joinTimeout)
	aliceID, bobID := as.SFU.Identity, bs.SFU.Identity
	require.Equal(t, alice.ID.String()+":"+as.DeviceID, aliceID)
	require.Equal(t, bob.ID.String()+":"+bs.DeviceID, bobID)

	t.Run("transport selection", func(t *testing.T) {
		// The page's pure selection, table-driven (the web client has no
		// test runner of its own).
		for _, c := range []struct {
			members []any
			publish string
			want    []string
		}{
			{[]any{"https://a", "https://b", nil, "https://b", "https://c", "", "https://a"}, "https://a", []string{"https://b", "https://c"}},
			{[]any{"https://a", "https://a"}, "https://a", []string{}},
			{[]any{}, "https://a", []string{}},
			{[]any{"https://b"}, "https://a", []string{"https://b"}},
		} {
			var got []string
			members := jsonOf(t, c.members)
			require.NoError(t, a.page.Eval(context.Background(), fmt.Sprintf(
				`window.gxconf.transports.subscribeServiceUrls(%s.map(u => u ?? undefined), %s)`, members, js(c.publish)), &got))
			require.Equal(t, c.want, got, "members %v, publishing on %s", c.members, c.publish)
		}
		for _, c := range []struct {
			open, wanted    []string
			toOpen, toClose []string
		}{
			{[]string{"https://b", "https://c"}, []string{"https://c", "https://d"}, []string{"https://d"}, []string{"https://b"}},
			{[]string{}, []string{"https://b"}, []string{"https://b"}, []string{}},
			{[]string{"https://b"}, []string{}, []string{}, []string{"https://b"}},
			{[]string{}, []string{}, []string{}, []string{}},
		} {
			var got struct{ Open, Close []string }
			open, wanted := jsonOf(t, c.open), jsonOf(t, c.wanted)
			require.NoError(t, a.page.Eval(context.Background(), fmt.Sprintf(`window.gxconf.transports.planConnections(%s, %s)`, open, wanted), &got))
			require.Equal(t, c.toOpen, got.Open, "open %v, wanted %v", c.open, c.wanted)
			require.Equal(t, c.toClose, got.Close, "open %v, wanted %v", c.open, c.wanted)
		}
	})

	t.Run("each announces and publishes on their own focus", func(t *testing.T) {
		for _, c := range []struct {
			u    *harness.User
			st   pageState
			site callSite
		}{{alice, as, siteA}, {bob, bs, siteB}} {
			require.Equal(t, "compatibility", c.st.Mode, "multi-SFU is the default")
			require.Equal(t, c.site.Focus, c.st.Focus.ServiceURL)
			require.Equal(t, c.site.SFU.URL, c.st.SFU.URL)
			require.Equal(t, []tokenAttempt{{Endpoint: "sfu_get", Status: 200}}, c.st.TokenAttempts)
			// What matrix-js-sdk writes for MembershipManager.join(fociPreferred, multiSfuFocus).
			content := callMemberContent(t, bob, room, c.u, c.st.DeviceID)
			require.Equal(t, map[string]any{"type": "livekit", "focus_selection": "multi_sfu"}, content["focus_active"], "%s's membership", c.u.ID)
			foci, _ := content["foci_preferred"].([]any)
			require.Len(t, foci, 1, "%s's foci_preferred: %v", c.u.ID, content["foci_preferred"])
			require.Equal(t, map[string]any{"type": "livekit", "livekit_service_url": c.site.Focus, "livekit_alias": room.String()}, foci[0])
		}
		want := fmt.Sprintf(`s.rtcTransports[%s] === %s && s.rtcTransports[%s] === %s`,
			js(alice.ID.String()+"|"+as.DeviceID), js(siteA.Focus), js(bob.ID.String()+"|"+bs.DeviceID), js(siteB.Focus))
		a.await(t, want, mediaTimeout)
		b.await(t, want, mediaTimeout)
	})

	// Filled by the next subtest: each one's identity on the other's SFU.
	var aliceOnB, bobOnA connectionInfo
	t.Run("each opens one subscribe-only connection to the other's focus", func(t *testing.T) {
		ast := requireConnections(t, a, siteA.Focus, siteB.Focus)
		bst := requireConnections(t, b, siteB.Focus, siteA.Focus)
		aliceOnB, bobOnA = connectionTo(t, ast, siteB.Focus), connectionTo(t, bst, siteA.Focus)
		require.Equal(t, siteB.SFU.URL, aliceOnB.URL)
		require.Equal(t, siteA.SFU.URL, bobOnA.URL)
		// One LiveKit room per (service, Matrix room): the one the other publishes in.
		require.Equal(t, bs.SFU.LKRoom, aliceOnB.LKRoom)
		require.Equal(t, as.SFU.LKRoom, bobOnA.LKRoom)
		// Each SFU sees its own user publishing camera and microphone and the
		// other's subscriber publishing nothing.
		for _, c := range []struct {
			sfu                    testSFU
			lkRoom, pub, subscribe string
		}{{siteA.SFU, as.SFU.LKRoom, aliceID, bobOnA.Identity}, {siteB.SFU, bs.SFU.LKRoom, bobID, aliceOnB.Identity}} {
			require.Eventually(t, func() bool {
				tracks, _ := sfuTracks(t, c.sfu, c.lkRoom)
				return len(tracks) == 2 && tracks[c.pub] == 2 && tracks[c.subscribe] == 0
			}, mediaTimeout, 100*time.Millisecond, "participants and tracks on %s", c.sfu.URL)
		}
	})

	t.Run("media keys travel through the MatrixRTC session", func(t *testing.T) {
		a.await(t, fmt.Sprintf(`[%s, %s].every(id => s.mediaKeys.includes(id))`, js(aliceID), js(bobID)), mediaTimeout)
		b.await(t, fmt.Sprintf(`[%s, %s].every(id => s.mediaKeys.includes(id))`, js(aliceID), js(bobID)), mediaTimeout)
	})

	t.Run("each decodes the other's encrypted media from the other's SFU", func(t *testing.T) {
		for _, c := range []struct {
			viewer *participant
			other  string
			on     string
		}{{a, bobID, siteB.Focus}, {b, aliceID, siteA.Focus}} {
			st := c.viewer.await(t, remoteHas(c.other)+fmt.Sprintf(` && Object.values(s.remote[%s].tracks).every(t => t.encrypted)`, js(c.other)), mediaTimeout)
			require.Equal(t, c.on, st.Remote[c.other].ServiceURL)
			// The other's subscribe-only presence on our SFU is no participant.
			require.Len(t, st.Remote, 1, "%s's remote participants: %v", c.viewer.name, st.Remote)
			requireMediaFlows(t, c.viewer, c.other)
			stats := c.viewer.awaitStats(t, "true", time.Second)
			require.Equal(t, c.on, findStats(stats, c.other, "video").ServiceURL)
			require.Equal(t, c.on, findStats(stats, c.other, "audio").ServiceURL)
		}
		a.screenshot(t, "browser-multisfu-alice.png")
		b.screenshot(t, "browser-multisfu-bob.png")
	})

	t.Run("a data message from bob reaches alice over focus B's SFU", func(t *testing.T) {
		msg := "Guten Tag from focus B " + time.Now().Format(time.RFC3339Nano)
		b.do(t, fmt.Sprintf("sendData(%s)", js(msg)))
		a.await(t, fmt.Sprintf(`s.dataMessages.some(m => m.text === %s && m.from === %s && m.topic === "gxconf-test")`, js(msg), js(bobID)), mediaTimeout)
	})

	t.Run("bob leaves and alice closes her connection to focus B", func(t *testing.T) {
		b.do(t, "leave()")
		st := a.await(t, fmt.Sprintf(`s.departed.includes(%s) && !(%s in s.remote) && s.rtcMembers.length === 1 &&
			s.connections.length === 1 && s.connections[0].own && s.closedConnections.some(c => c.serviceUrl === %s)`,
			js(bobID), js(bobID), js(siteB.Focus)), mediaTimeout)
		closed := st.ClosedConnections[len(st.ClosedConnections)-1]
		require.Equal(t, siteB.Focus, closed.ServiceURL)
		require.Equal(t, "disconnected", closed.State)
		require.Equal(t, "connected", st.Connections[0].State, "alice's own connection stays")
		// Focus B's SFU no longer has alice's subscriber.
		require.Eventually(t, func() bool {
			tracks, _ := sfuTracks(t, siteB.SFU, bs.SFU.LKRoom)
			_, there := tracks[aliceOnB.Identity]
			return !there
		}, mediaTimeout, 100*time.Millisecond, "alice's subscriber stays on focus B's SFU")
	})

	var cp *participant
	t.Run("carol joins in legacy mode and publishes on the oldest member's focus", func(t *testing.T) {
		cp = e.join("carol", carol, room, siteB.options(callOptions{E2EE: true, JWT: "legacy", Mode: "legacy"}))
		st := cp.await(t, `s.phase === "in-call" && s.e2eeActive`, joinTimeout)
		require.Equal(t, siteB.Focus, st.Focus.ServiceURL, "carol's discovery names focus B")
		carolID := st.SFU.Identity
		// Everyone on alice's focus: one connection each, none subscribe-only.
		requireConnections(t, cp, siteA.Focus)
		requireConnections(t, a, siteA.Focus)
		content := callMemberContent(t, alice, room, carol, st.DeviceID)
		require.Equal(t, map[string]any{"type": "livekit", "focus_selection": "oldest_membership"}, content["focus_active"])
		foci, _ := content["foci_preferred"].([]any)
		require.Len(t, foci, 1, "carol's foci_preferred: %v", content["foci_preferred"])
		require.Equal(t, siteB.Focus, foci[0].(map[string]any)["livekit_service_url"], "carol prefers her own focus")
		for _, c := range []struct {
			viewer *participant
			other  string
		}{{a, carolID}, {cp, aliceID}} {
			st := c.viewer.await(t, remoteHas(c.other)+fmt.Sprintf(` && s.remote[%s].serviceUrl === %s`, js(c.other), js(siteA.Focus)), mediaTimeout)
			require.Len(t, st.Remote, 1)
			requireMediaFlows(t, c.viewer, c.other)
		}
		tracks, _ := sfuTracks(t, siteB.SFU, bs.SFU.LKRoom)
		require.Empty(t, tracks, "focus B's SFU has participants though nobody publishes there")
	})

	for _, p := range []*participant{a, b, cp} {
		st := p.state(t)
		require.Empty(t, st.Errors, "%s's page reported errors", p.name)
		// matrix-js-sdk makes a key once the membership is sent, and again
		// when a member leaves; it reaches the worker, and the others by
		// to-device message, a moment after the first frames (as in Element
		// Call). Decoded frames above prove the keys; any other error is a fault.
		for _, msg := range st.EncryptionErrors {
			require.Contains(t, msg, "MissingKey", "%s's page reported encryption errors", p.name)
		}
		t.Logf("%s: %d encryption errors for frames ahead of their key", p.name, len(st.EncryptionErrors))
	}
	t.Logf("multi-SFU browser call took %s", time.Since(start).Round(time.Millisecond))
}
