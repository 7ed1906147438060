package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
	"github.com/twitchtv/twirp"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/test/harness"
)

// testSFU is the SFU behind the browser tests' focus.
type testSFU struct {
	// URL is the ws(s):// URL the focus hands to clients; empty means the
	// embedded SFU.
	URL, Key, Secret string
}

// browserTestSFU reads GXTEST_SFU_URL, _KEY and _SECRET: a LiveKit-
// compatible server started outside the test (gxconf's drop-in mode in front
// of a stock server, used while developing the client against a reference).
// Unset — always in CI — the stack uses gxconf's embedded SFU, whose Twirp
// API then answers the participant checks.
func browserTestSFU() testSFU {
	return testSFU{
		URL:    os.Getenv("GXTEST_SFU_URL"),
		Key:    os.Getenv("GXTEST_SFU_KEY"),
		Secret: os.Getenv("GXTEST_SFU_SECRET"),
	}
}

func (s testSFU) String() string {
	if s.URL == "" {
		return "gxconf's embedded SFU"
	}
	return "the external SFU at " + s.URL + " (GXTEST_SFU_URL; the names avoid the GXCONF_ prefix, which gxconf reads as config overrides)"
}

// config is the gxconf config overlay for this SFU.
func (s testSFU) config() map[string]any {
	if s.URL == "" {
		return map[string]any{}
	}
	return map[string]any{"focus": map[string]any{
		"sfu": map[string]any{"url": s.URL, "api_key": s.Key, "api_secret": s.Secret},
	}}
}

// participants lists the identities in a LiveKit room, asking the SFU's
// Twirp RoomService as an operator would.
func (s testSFU) participants(t *testing.T, lkRoom string) []string {
	t.Helper()
	require.NotEmpty(t, s.Key, "the SFU's API key is needed to list participants")
	rs, ctx := s.roomService(t, lkRoom)
	resp, err := rs.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: lkRoom})
	require.NoError(t, err)
	var ids []string
	for _, p := range resp.Participants {
		ids = append(ids, p.Identity)
	}
	return ids
}

// roomService is a Twirp RoomService client of the SFU with a roomAdmin
// token for lkRoom in the returned context.
func (s testSFU) roomService(t *testing.T, lkRoom string) (livekit.RoomService, context.Context) {
	t.Helper()
	base := strings.Replace(strings.Replace(s.URL, "ws://", "http://", 1), "wss://", "https://", 1)
	jwt, err := auth.NewAccessToken(s.Key, s.Secret).SetVideoGrant(&auth.VideoGrant{RoomAdmin: true, Room: lkRoom}).SetValidFor(time.Minute).ToJWT()
	require.NoError(t, err)
	h := http.Header{}
	h.Set("Authorization", "Bearer "+jwt)
	ctx, err := twirp.WithHTTPRequestHeaders(context.Background(), h)
	require.NoError(t, err)
	return livekit.NewRoomServiceProtobufClient(base, http.DefaultClient), ctx
}

// performRpc calls method of identity's client through the SFU's Twirp
// RoomService, as an operator's backend would.
func (s testSFU) performRpc(t *testing.T, lkRoom, identity, method, payload string) (string, error) {
	t.Helper()
	rs, ctx := s.roomService(t, lkRoom)
	resp, err := rs.PerformRpc(ctx, &livekit.PerformRpcRequest{
		Room: lkRoom, DestinationIdentity: identity, Method: method, Payload: payload, ResponseTimeoutMs: 10000,
	})
	return resp.GetPayload(), err
}

// browserEnv is Dendrite + gxconf + the operator's reverse proxy + one
// headless Chromium, for one test.
type browserEnv struct {
	t       *testing.T
	stack   *harness.Stack
	proxy   *harness.HomeserverProxy
	browser *harness.Browser
	sfu     testSFU

	mu     sync.Mutex
	joined []*participant
}

func startBrowserEnv(t *testing.T) *browserEnv {
	t.Helper()
	sfu := browserTestSFU()
	t.Logf("SFU: %s", sfu)
	return startBrowserEnvWith(t, sfu, harness.StackOptions{Config: sfu.config()})
}

// startBrowserEnvWith starts the environment on a stack with opts, whose
// config gets the focus's discovery settings; sfu is the SFU that opts
// configure (zero: the embedded one).
func startBrowserEnvWith(t *testing.T, sfu testSFU, opts harness.StackOptions) *browserEnv {
	t.Helper()
	proxy, err := harness.ListenHomeserverProxy()
	require.NoError(t, err)
	if opts.Config == nil {
		opts.Config = map[string]any{}
	}
	mergeInto(opts.Config, map[string]any{"focus": map[string]any{
		// The proxy serves gxconf's whole well-known document.
		"discovery": map[string]any{"homeserver_base_url": proxy.URL},
	}})
	s := startStack(t, opts)
	if sfu.URL == "" {
		// The embedded SFU: its Twirp API answers the participant checks.
		sfu = testSFU{URL: s.SFUURL, Key: s.SFUKey, Secret: s.SFUSecret}
	}
	require.NoError(t, proxy.Serve(s.Dendrite.URL, s.FocusURL))
	e := &browserEnv{t: t, stack: s, proxy: proxy, sfu: sfu}

	resp, err := http.Get(s.FocusURL + "/selftest/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "gxconf serves no built self-test page at /selftest/: run `make web` before the tests")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.browser, err = harness.StartBrowser(ctx, harness.BrowserOptions{UserDataDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("browser log:\n%s", e.browser.Log())
		}
		e.browser.Close()
		require.NoError(t, proxy.Close())
	})
	return e
}

func mergeInto(dst, src map[string]any) {
	for k, v := range src {
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				mergeInto(dv, sv)
				continue
			}
		}
		dst[k] = v
	}
}

// diagnose logs what every page sends and receives, and whether it is
// visible (adaptive stream pauses video that is not), to explain a failure.
func (e *browserEnv) diagnose(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	joined := append([]*participant(nil), e.joined...)
	e.mu.Unlock()
	for _, p := range joined {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var diag any
		err := p.page.Eval(ctx, `(async () => ({
			visibility: window.gxconf.visibility(),
			state: window.gxconf.state,
			inbound: await window.gxconf.stats().catch(e => String(e)),
			outbound: await window.gxconf.outboundStats().catch(e => String(e)),
		}))()`, &diag)
		cancel()
		b, _ := json.MarshalIndent(diag, "", "  ")
		t.Logf("diagnostics of %s (err %v):\n%s", p.name, err, b)
	}
}

// callOptions are the page's query parameters beyond the account and room.
type callOptions struct {
	E2EE      bool
	JWT       string // auto | legacy
	Discovery string // auto | well-known
	Mode      string // compatibility (multi-SFU, the page's default) | legacy
	Probe     bool
	// FrameMetadata: the page appends frame metadata to its video as
	// packet trailers and reads the others' (livekit-client's frameMetadata).
	FrameMetadata bool
	// Homeserver is the homeserver URL the page uses, and with it the focus
	// its discovery finds (default: the env's proxy, i.e. its stack's focus);
	// Page serves the call page (default: the env's gxconf).
	Homeserver, Page string
}

// participant is one person in a browser tab running gxconf's call page.
// Its methods take the (sub)test they fail.
type participant struct {
	name string
	user *harness.User
	page *harness.Page
	env  *browserEnv
}

// captureHeight keeps two encoders and decoders per browser affordable on
// the test machine; simulcast still has two layers (180p, 360p).
const captureHeight = 360

// join opens the call page for u, which logs in and joins the call in room.
func (e *browserEnv) join(name string, u *harness.User, room id.RoomID, o callOptions) *participant {
	e.t.Helper()
	page, err := e.browser.NewPage(name)
	require.NoError(e.t, err)
	hs, pageBase := e.proxy.URL, e.stack.FocusURL
	if o.Homeserver != "" {
		hs = o.Homeserver
	}
	if o.Page != "" {
		pageBase = o.Page
	}
	q := url.Values{
		"hs": {hs}, "user": {u.ID.String()}, "password": {u.Password}, "room": {room.String()},
		"video": {fmt.Sprint(captureHeight)},
	}
	if o.E2EE {
		q.Set("e2ee", "1")
	}
	if o.JWT != "" {
		q.Set("jwt", o.JWT)
	}
	if o.Discovery != "" {
		q.Set("discovery", o.Discovery)
	}
	if o.Mode != "" {
		q.Set("mode", o.Mode)
	}
	if o.Probe {
		q.Set("probe", "1")
	}
	if o.FrameMetadata {
		q.Set("fm", "1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(e.t, page.Navigate(ctx, pageBase+"/selftest/?"+q.Encode()))
	p := &participant{name: name, user: u, page: page, env: e}
	e.mu.Lock()
	e.joined = append(e.joined, p)
	e.mu.Unlock()
	return p
}

// joinViaForm opens the self-test page as an operator does, without
// parameters, and logs in through its form (default options).
func (e *browserEnv) joinViaForm(t *testing.T, name string, u *harness.User, room id.RoomID) *participant {
	t.Helper()
	page, err := e.browser.NewPage(name)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, page.Navigate(ctx, e.stack.FocusURL+"/selftest/"))
	p := &participant{name: name, user: u, page: page, env: e}
	e.mu.Lock()
	e.joined = append(e.joined, p)
	e.mu.Unlock()
	require.NoError(t, page.Eval(ctx, `(() => { const f = document.getElementById("login");
		if (f.hidden || f.getBoundingClientRect().height === 0) throw new Error("the login form is not shown"); })()`, nil))
	p.screenshot(t, "selftest-login.png")
	require.NoError(t, page.Eval(ctx, fmt.Sprintf(`(() => { const f = document.getElementById("login");
		const set = (k, v) => { f.elements.namedItem(k).value = v; };
		set("hs", %s); set("user", %s); set("password", %s); set("room", %s);
		f.requestSubmit(); })()`, js(e.proxy.URL), js(u.ID.String()), js(u.Password), js(room.String())), nil))
	return p
}

// pageState mirrors window.gxconf.state (web/src/state.ts).
type pageState struct {
	Phase    string `json:"phase"`
	UserID   string `json:"userId"`
	DeviceID string `json:"deviceId"`
	RoomID   string `json:"roomId"`
	MemberID string `json:"memberId"`
	Focus    *struct {
		ServiceURL string `json:"serviceUrl"`
		Via        string `json:"via"`
	} `json:"focus"`
	TokenAttempts []tokenAttempt `json:"tokenAttempts"`
	SFU           *struct {
		URL      string `json:"url"`
		LKRoom   string `json:"lkRoom"`
		Identity string `json:"identity"`
		Endpoint string `json:"endpoint"`
	} `json:"sfu"`
	SFUConnectAttempts int                                  `json:"sfuConnectAttempts"`
	ConnectionState    string                               `json:"connectionState"`
	Mode               string                               `json:"mode"`
	Connections        []connectionInfo                     `json:"connections"`
	ClosedConnections  []connectionInfo                     `json:"closedConnections"`
	RTCTransports      map[string]string                    `json:"rtcTransports"`
	E2EE               bool                                 `json:"e2ee"`
	E2EEActive         bool                                 `json:"e2eeActive"`
	Local              map[string]bool                      `json:"local"`
	Remote             map[string]remoteSideState           `json:"remote"`
	Departed           []string                             `json:"departed"`
	RTCMembers         []string                             `json:"rtcMembers"`
	DataMessages       []struct{ From, Topic, Text string } `json:"dataMessages"`
	DataTrackFrames    []struct{ From, Track, Text string } `json:"dataTrackFrames"`
	MediaKeys          []string                             `json:"mediaKeys"`
	EncryptionErrors   []string                             `json:"encryptionErrors"`
	Errors             []string                             `json:"errors"`
}

type tokenAttempt struct {
	Endpoint string `json:"endpoint"`
	Status   int    `json:"status"`
	Errcode  string `json:"errcode"`
}

// connectionInfo mirrors ConnectionInfo (web/src/state.ts): one LiveKit connection.
type connectionInfo struct {
	ServiceURL    string         `json:"serviceUrl"`
	Own           bool           `json:"own"`
	URL           string         `json:"url"`
	LKRoom        string         `json:"lkRoom"`
	Identity      string         `json:"identity"`
	Endpoint      string         `json:"endpoint"`
	State         string         `json:"state"`
	TokenAttempts []tokenAttempt `json:"tokenAttempts"`
	Published     int            `json:"published"`
}

type remoteSideState struct {
	Identity   string `json:"identity"`
	ServiceURL string `json:"serviceUrl"`
	Encrypted  bool   `json:"encrypted"`
	Tracks     map[string]struct {
		Kind       string `json:"kind"`
		Source     string `json:"source"`
		Muted      bool   `json:"muted"`
		Subscribed bool   `json:"subscribed"`
		Encrypted  bool   `json:"encrypted"`
	} `json:"tracks"`
}

// inbound mirrors InboundStats (web/src/call.ts).
type inbound struct {
	Identity        string  `json:"identity"`
	ServiceURL      string  `json:"serviceUrl"`
	Kind            string  `json:"kind"`
	Source          string  `json:"source"`
	FramesDecoded   int64   `json:"framesDecoded"`
	FrameWidth      int     `json:"frameWidth"`
	FrameHeight     int     `json:"frameHeight"`
	BytesReceived   int64   `json:"bytesReceived"`
	PacketsReceived int64   `json:"packetsReceived"`
	ElementWidth    float64 `json:"elementWidth"`
	ElementHeight   float64 `json:"elementHeight"`
	VideoWidth      int     `json:"videoWidth"`
	VideoHeight     int     `json:"videoHeight"`
}

// await waits, inside the page, until the JavaScript condition on the call
// state s holds, and returns the state.
func (p *participant) await(t *testing.T, cond string, timeout time.Duration) pageState {
	t.Helper()
	var st pageState
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	err := p.page.Eval(ctx, fmt.Sprintf("window.gxconf.until((s) => (%s), %d)", cond, timeout.Milliseconds()), &st)
	if err != nil {
		p.env.diagnose(t)
	}
	require.NoError(t, err, "%s: waiting for %s", p.name, cond)
	return st
}

// state returns the call state now.
func (p *participant) state(t *testing.T) pageState {
	t.Helper()
	return p.await(t, "true", time.Second)
}

// awaitStats waits until the JavaScript condition on the inbound stats st
// (an array of InboundStats) holds.
func (p *participant) awaitStats(t *testing.T, cond string, timeout time.Duration) []inbound {
	t.Helper()
	var st []inbound
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	err := p.page.Eval(ctx, fmt.Sprintf("window.gxconf.untilStats((st) => (%s), %d)", cond, timeout.Milliseconds()), &st)
	if err != nil {
		p.env.diagnose(t)
	}
	require.NoError(t, err, "%s: waiting for stats %s", p.name, cond)
	return st
}

// do runs a window.gxconf action, e.g. `sendData("hi")`.
func (p *participant) do(t *testing.T, call string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.page.Eval(ctx, "window.gxconf."+call, nil), "%s: %s", p.name, call)
}

// doString runs a window.gxconf action that resolves to a string.
func (p *participant) doString(t *testing.T, call string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out string
	require.NoError(t, p.page.Eval(ctx, "window.gxconf."+call, &out), "%s: %s", p.name, call)
	return out
}

// requireLargeRpc has from call to's gxconf.echo (to is toID in the call,
// toUser its Matrix user) with a payload over livekit-client's 15 KiB limit
// for a callee that does not take RPC over data streams: livekit-client
// checks the callee's client_protocol in the info the SFU sends, and the
// callee the caller's to answer as large.
func requireLargeRpc(t *testing.T, from *participant, toID, toUser string) {
	t.Helper()
	payload := strings.Repeat("Guten Tag ", 2_000)
	got := from.doString(t, fmt.Sprintf("performRpc(%s, %s, %s)", js(toID), js("gxconf.echo"), js(payload)))
	require.Equal(t, "echo from "+toUser+": "+payload, got)
}

// requireTextStreams has from send a short and a 20 kB text stream
// (livekit-client's sendText) and to (which sees from as fromID) read both:
// with every recipient's client_protocol 2 in the infos the SFU sends,
// livekit-client sends the short one inline in one packet and, where the
// recipients advertise deflate-raw, compresses the long one.
func requireTextStreams(t *testing.T, from, to *participant, fromID string) {
	t.Helper()
	short := "Guten Tag " + time.Now().Format(time.RFC3339Nano)
	long := strings.Repeat(short+" ", 20_000/(len(short)+1))
	for _, text := range []string{short, long} {
		from.do(t, fmt.Sprintf("sendText(%s)", js(text)))
		to.await(t, fmt.Sprintf(`s.dataMessages.some(m => m.topic === "gxconf-text" && m.from === %s && m.text === %s)`, js(fromID), js(text)), mediaTimeout)
	}
}

// requireFrameMetadata proves that viewer's livekit-client reads the frame
// metadata identity's livekit-client appends to its video (packet trailers,
// callOptions.FrameMetadata): the SFU announced the trailers in the
// TrackInfo and forwarded them to a client that says it reads them. The
// user timestamp is the publisher's clock when it sent the frame: the same
// machine's, so within a minute of the viewer's.
func requireFrameMetadata(t *testing.T, viewer *participant, identity string) {
	t.Helper()
	viewer.await(t, fmt.Sprintf(`(m => m && m.frames >= 10 && m.frameId > 0 && Math.abs(m.userTimestampMs - Date.now()) < 60000)(s.frameMetadata[%s])`, js(identity)), mediaTimeout)
}

// requireDataTrackFlows has from publish a data track named name, to
// (which sees from as fromID) subscribe to it and decode a frame from sent
// after that, and from unpublish it again.
func requireDataTrackFlows(t *testing.T, from, to *participant, fromID, name string) {
	t.Helper()
	sid := from.doString(t, fmt.Sprintf("publishDataTrack(%s)", js(name)))
	require.True(t, strings.HasPrefix(sid, "DTR_"), "data track sid %q", sid)
	to.do(t, fmt.Sprintf("subscribeDataTrack(%s, %s)", js(fromID), js(name)))
	msg := name + " " + time.Now().Format(time.RFC3339Nano)
	from.do(t, fmt.Sprintf("pushDataTrackEvery(%s, %s)", js(name), js(msg)))
	to.await(t, fmt.Sprintf(`s.dataTrackFrames.some(f => f.from === %s && f.track === %s && f.text === %s)`, js(fromID), js(name), js(msg)), mediaTimeout)
	from.do(t, fmt.Sprintf("unpublishDataTrack(%s)", js(name)))
	require.Empty(t, from.state(t).Errors)
}

// screenshot writes a PNG of the page to test/output/<file>.
func (p *participant) screenshot(t *testing.T, file string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	png, err := p.page.Screenshot(ctx)
	require.NoError(t, err)
	root, err := harness.RepoRoot()
	require.NoError(t, err)
	dir := filepath.Join(root, "test", "output")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	path := filepath.Join(dir, file)
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot of %s: %s", p.name, path)
	return path
}

// js quotes a string as a JavaScript literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
