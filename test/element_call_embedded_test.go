package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twitchtv/twirp"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// Element Call embedded — the build Element Web and BundesMessenger Web put
// in an iframe (npm @element-hq/element-call-embedded, pinned in
// test/ecembed/package.json) — hosted as Element Web hosts it: a host page
// (test/ecembed) logs in with matrix-js-sdk and drives the widget through
// matrix-widget-api's ClientWidgetApi. Element Call finds gxconf through the
// host's homeserver (rtc/transports, routed to gxconf by the operator's
// proxy), gets its OpenID token through the widget API, and its media keys
// travel as Olm-encrypted to-device messages the host encrypts and decrypts.

// ecHost is one person's browser tab with the widget host.
type ecHost struct {
	name string
	page *harness.Page
}

// ecHostState mirrors HostState (test/ecembed/src/host.ts).
type ecHostState struct {
	Phase               string         `json:"phase"`
	UserID              string         `json:"userId"`
	DeviceID            string         `json:"deviceId"`
	WidgetURL           string         `json:"widgetUrl"`
	Capabilities        []string       `json:"capabilities"`
	WidgetReady         bool           `json:"widgetReady"`
	Joined              bool           `json:"joined"`
	HungUp              bool           `json:"hungUp"`
	Closed              bool           `json:"closed"`
	Requests            map[string]int `json:"requests"`
	Failures            []string       `json:"failures"`
	ToDeviceIn          map[string]int `json:"toDeviceIn"`
	ToDeviceInEncrypted int            `json:"toDeviceInEncrypted"`
	CallMembers         []string       `json:"callMembers"`
	Errors              []string       `json:"errors"`
}

// ecMedia mirrors Media (test/ecembed/src/host.ts): what Element Call's
// frame shows and receives.
type ecMedia struct {
	RemoteVideos []struct {
		VideoWidth  int     `json:"videoWidth"`
		VideoHeight int     `json:"videoHeight"`
		CurrentTime float64 `json:"currentTime"`
		Paused      bool    `json:"paused"`
		TotalFrames int64   `json:"totalFrames"`
		Width       float64 `json:"width"`
		Height      float64 `json:"height"`
	} `json:"remoteVideos"`
	LocalVideos         int `json:"localVideos"`
	RemoteAudioElements int `json:"remoteAudioElements"`
	Inbound             []struct {
		Kind                 string  `json:"kind"`
		PacketsReceived      int64   `json:"packetsReceived"`
		BytesReceived        int64   `json:"bytesReceived"`
		FramesDecoded        int64   `json:"framesDecoded"`
		FrameWidth           int     `json:"frameWidth"`
		FrameHeight          int     `json:"frameHeight"`
		TotalAudioEnergy     float64 `json:"totalAudioEnergy"`
		TotalSamplesReceived int64   `json:"totalSamplesReceived"`
	} `json:"inbound"`
}

// ecEmbeddedDist is the Element Call build from the npm package.
func ecEmbeddedDist(t *testing.T) string {
	t.Helper()
	root, err := harness.RepoRoot()
	require.NoError(t, err)
	dist := filepath.Join(root, "test", "ecembed", "node_modules", "@element-hq", "element-call-embedded", "dist")
	_, err = os.Stat(filepath.Join(dist, "index.html"))
	require.NoError(t, err, "Element Call embedded is not installed: run scripts/deps.sh (npm ci in test/ecembed)")
	return dist
}

// buildECHost bundles the widget host (esbuild) into a temporary directory.
func buildECHost(t *testing.T) string {
	t.Helper()
	root, err := harness.RepoRoot()
	require.NoError(t, err)
	out := t.TempDir()
	cmd := exec.Command("node", "build.mjs", out)
	cmd.Dir = filepath.Join(root, "test", "ecembed")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "building the widget host (scripts/deps.sh installs its npm packages): %s", b)
	return out
}

// ecHostHandler serves the host page at / and Element Call at /ec/, from
// one origin as Element Web serves its bundled copy (widgets/element-call/).
// Element Call's index.html gets one addition: probe.js, loaded before its
// own scripts, which lets the host page read its WebRTC statistics.
func ecHostHandler(t *testing.T, hostDir, ecDist string) http.Handler {
	t.Helper()
	index, err := os.ReadFile(filepath.Join(ecDist, "index.html"))
	require.NoError(t, err)
	require.Equal(t, 1, bytes.Count(index, []byte("<head>")), "Element Call's index.html: expected one <head>")
	index = bytes.Replace(index, []byte("<head>"), []byte(`<head><script src="/probe.js"></script>`), 1)
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(hostDir)))
	ec := http.StripPrefix("/ec", http.FileServer(http.Dir(ecDist)))
	mux.HandleFunc("/ec/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ec/" || r.URL.Path == "/ec/index.html" {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write(index)
			return
		}
		ec.ServeHTTP(w, r)
	})
	return mux
}

func openECHost(t *testing.T, b *harness.Browser, name, base, hs string, u *harness.User, room id.RoomID) *ecHost {
	t.Helper()
	page, err := b.NewPage(name)
	require.NoError(t, err)
	q := url.Values{"hs": {hs}, "user": {u.ID.String()}, "password": {u.Password}, "room": {room.String()}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, page.Navigate(ctx, base+"/host.html?"+q.Encode()))
	return &ecHost{name: name, page: page}
}

// await waits until the JavaScript condition on the host state s holds.
func (h *ecHost) await(t *testing.T, cond string, timeout time.Duration) ecHostState {
	t.Helper()
	var st ecHostState
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	err := h.page.Eval(ctx, fmt.Sprintf("window.ecHost.until((s) => (%s), %d)", cond, timeout.Milliseconds()), &st)
	require.NoError(t, err, "%s: waiting for %s", h.name, cond)
	return st
}

// awaitMedia waits until the JavaScript condition on Element Call's media m holds.
func (h *ecHost) awaitMedia(t *testing.T, cond string, timeout time.Duration) ecMedia {
	t.Helper()
	var m ecMedia
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	err := h.page.Eval(ctx, fmt.Sprintf("window.ecHost.untilMedia((m) => (%s), %d)", cond, timeout.Milliseconds()), &m)
	require.NoError(t, err, "%s: waiting for media %s", h.name, cond)
	return m
}

func (h *ecHost) eval(t *testing.T, expr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, h.page.Eval(ctx, expr, nil), "%s: %s", h.name, expr)
}

// sfuRoom lists a LiveKit room's participants with their tracks, asking the
// SFU's Twirp RoomService as an operator would (no room yet: none).
func sfuRoom(sfu testSFU, lkRoom string) ([]*livekit.ParticipantInfo, error) {
	base := strings.Replace(strings.Replace(sfu.URL, "ws://", "http://", 1), "wss://", "https://", 1)
	jwt, err := auth.NewAccessToken(sfu.Key, sfu.Secret).SetVideoGrant(&auth.VideoGrant{RoomAdmin: true, Room: lkRoom}).SetValidFor(time.Minute).ToJWT()
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+jwt)
	ctx, err := twirp.WithHTTPRequestHeaders(context.Background(), h)
	if err != nil {
		return nil, err
	}
	resp, err := livekit.NewRoomServiceProtobufClient(base, http.DefaultClient).ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: lkRoom})
	var te twirp.Error
	if errors.As(err, &te) && te.Code() == twirp.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return resp.Participants, nil
}

// publishes says whether p publishes an unmuted camera and microphone track,
// both with the given frame encryption.
func publishes(p *livekit.ParticipantInfo, enc livekit.Encryption_Type) bool {
	var video, audio bool
	for _, tr := range p.Tracks {
		if tr.Muted || tr.Encryption != enc {
			continue
		}
		switch {
		case tr.Type == livekit.TrackType_VIDEO && tr.Source == livekit.TrackSource_CAMERA:
			video = true
		case tr.Type == livekit.TrackType_AUDIO && tr.Source == livekit.TrackSource_MICROPHONE:
			audio = true
		}
	}
	return video && audio
}

func identities(ps []*livekit.ParticipantInfo) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Identity)
	}
	sort.Strings(out)
	return out
}

func describeTracks(ps []*livekit.ParticipantInfo) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%s:", p.Identity)
		for _, tr := range p.Tracks {
			fmt.Fprintf(&b, " %s/%s muted=%v enc=%s %dx%d", tr.Type, tr.Source, tr.Muted, tr.Encryption, tr.Width, tr.Height)
		}
		b.WriteString("; ")
	}
	return b.String()
}

// The JavaScript conditions on Element Call's media m: a remote <video>
// playing decoded frames, and remote audio arriving with sound in it (the
// fake microphone's beep; undecryptable frames would be dropped, leaving
// silence).
const (
	ecVideoPlays = `m.remoteVideos.some(v => v.videoWidth > 0 && v.videoHeight > 0 && !v.paused && v.totalFrames > 0 && v.width > 0) &&
		m.inbound.some(r => r.kind === "video" && r.framesDecoded > 0)`
	ecAudioArrives = `m.inbound.some(r => r.kind === "audio" && r.packetsReceived > 0 && r.totalAudioEnergy > 0)`
)

func maxFrames(m ecMedia) (frames int64, at float64) {
	for _, v := range m.RemoteVideos {
		if v.TotalFrames > frames {
			frames, at = v.TotalFrames, v.CurrentTime
		}
	}
	return
}

func audioIn(m ecMedia) (energy float64, samples int64) {
	for _, r := range m.Inbound {
		if r.Kind == "audio" {
			energy += r.TotalAudioEnergy
			samples += r.TotalSamplesReceived
		}
	}
	return
}

// requireSeesAndHears proves that h's Element Call shows a remote video
// that keeps playing and receives remote audio that keeps coming.
func requireSeesAndHears(t *testing.T, h *ecHost) {
	t.Helper()
	first := h.awaitMedia(t, ecVideoPlays+" && "+ecAudioArrives, mediaTimeout)
	frames, at := maxFrames(first)
	energy, samples := audioIn(first)
	// Rising, not merely non-zero: about a second later, more frames shown
	// further into the stream, and more audio with more sound in it.
	later := h.awaitMedia(t, fmt.Sprintf(`m.remoteVideos.some(v => v.totalFrames >= %d && v.currentTime > %g) &&
		(a => a.e > %g && a.n > %d)(m.inbound.filter(r => r.kind === "audio").reduce((a, r) => ({e: a.e + r.totalAudioEnergy, n: a.n + r.totalSamplesReceived}), {e: 0, n: 0}))`,
		frames+25, at, energy, samples), mediaTimeout)
	lf, lat := maxFrames(later)
	le, ls := audioIn(later)
	v := later.RemoteVideos[0]
	t.Logf("%s: Element Call plays a remote video of %dx%d in a %.0fx%.0f tile, %d→%d frames (%.1f→%.1f s); audio %d→%d samples, energy %.3g→%.3g; %d <audio> elements play remote tracks",
		h.name, v.VideoWidth, v.VideoHeight, v.Width, v.Height, frames, lf, at, lat, samples, ls, energy, le, later.RemoteAudioElements)
}

func TestElementCallEmbedded(t *testing.T) {
	start := time.Now()
	ecDist := ecEmbeddedDist(t)
	hostDir := buildECHost(t)

	sfu := browserTestSFU()
	t.Logf("SFU: %s", sfu)
	proxy, err := harness.ListenHomeserverProxy()
	require.NoError(t, err)
	cfg := sfu.config()
	mergeInto(cfg, map[string]any{"focus": map[string]any{
		"discovery": map[string]any{"homeserver_base_url": proxy.URL},
	}})
	s := startStack(t, harness.StackOptions{Config: cfg})
	if sfu.URL == "" {
		sfu = testSFU{URL: s.SFUURL, Key: s.SFUKey, Secret: s.SFUSecret}
	}
	require.NoError(t, proxy.Serve(s.Dendrite.URL, s.FocusURL))
	t.Cleanup(func() { require.NoError(t, proxy.Close()) })

	srv := httptest.NewServer(ecHostHandler(t, hostDir, ecDist))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	browser, err := harness.StartBrowser(ctx, harness.BrowserOptions{UserDataDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("browser log:\n%s", browser.Log())
		}
		browser.Close()
	})

	alice, bob := register(t, s, "alice"), register(t, s, "bob")
	room := createCallRoom(t, s, alice, true, bob)
	lkRoom := focus.LiveKitRoomAlias(room.String(), "m.call#ROOM")

	// Alice starts the call; Bob joins once she is in it: her call.member
	// state event is in the room, so that his host asks Element Call to join
	// an existing call, as Element Web does.
	inCall := func(u *harness.User) string {
		return fmt.Sprintf(`s.joined && s.callMembers.some(m => m.startsWith(%s))`, js(u.ID.String()+"|"))
	}
	a := openECHost(t, browser, "alice", srv.URL, proxy.URL, alice, room)
	as := a.await(t, inCall(alice), joinTimeout)
	b := openECHost(t, browser, "bob", srv.URL, proxy.URL, bob, room)
	bs := b.await(t, inCall(bob), joinTimeout)
	t.Logf("both joined %s after the test started", time.Since(start).Round(time.Millisecond))
	t.Logf("widget URL (alice): %s", as.WidgetURL)
	t.Logf("capabilities Element Call asked for: %v", as.Capabilities)

	t.Run("Element Call gets the focus and an OpenID token through the host", func(t *testing.T) {
		require.Contains(t, as.WidgetURL, "intent=start_call")
		require.Contains(t, bs.WidgetURL, "intent=join_existing")
		for _, h := range []*ecHost{a, b} {
			st := h.await(t, `s.widgetReady && s.requests["openid"] > 0 && s.requests["rtc transports"] > 0`, mediaTimeout)
			require.Contains(t, st.WidgetURL, "perParticipantE2EE=true", "an encrypted room: Element Web asks for per-participant E2EE")
		}
	})

	t.Run("the SFU has both, each publishing encrypted camera and microphone", func(t *testing.T) {
		var ps []*livekit.ParticipantInfo
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			var err error
			ps, err = sfuRoom(sfu, lkRoom)
			assert.NoError(c, err)
			assert.Len(c, ps, 2, "SFU room %s: %s", lkRoom, describeTracks(ps))
			for _, p := range ps {
				assert.True(c, publishes(p, livekit.Encryption_GCM), "SFU room %s: %s", lkRoom, describeTracks(ps))
			}
		}, mediaTimeout, 200*time.Millisecond)
		require.ElementsMatch(t, []string{alice.ID.String() + ":" + as.DeviceID, bob.ID.String() + ":" + bs.DeviceID}, identities(ps),
			"Element Call publishes under the legacy identity user:device (its membership is a legacy call.member state event)")
		t.Logf("SFU room %s: %s", lkRoom, describeTracks(ps))
	})

	t.Run("media keys arrive Olm-encrypted through the host", func(t *testing.T) {
		for _, h := range []*ecHost{a, b} {
			st := h.await(t, `(s.toDeviceIn["io.element.call.encryption_keys"] ?? 0) > 0 && s.toDeviceInEncrypted > 0`, mediaTimeout)
			t.Logf("%s: to-device in %v, %d encrypted", h.name, st.ToDeviceIn, st.ToDeviceInEncrypted)
		}
	})

	t.Run("each sees and hears the other", func(t *testing.T) {
		requireSeesAndHears(t, a)
		requireSeesAndHears(t, b)
		t.Logf("media flows both ways %s after the test started", time.Since(start).Round(time.Millisecond))
	})

	t.Run("the SFU forwards encrypted frames", func(t *testing.T) {
		ps, err := sfuRoom(sfu, lkRoom)
		require.NoError(t, err)
		requireEncryptedFrames(t, sfu, lkRoom, identities(ps))
	})

	t.Run("both are call members in the room state", func(t *testing.T) {
		want := []string{alice.ID.String() + "|" + as.DeviceID, bob.ID.String() + "|" + bs.DeviceID}
		sort.Strings(want)
		for _, h := range []*ecHost{a, b} {
			h.await(t, fmt.Sprintf(`JSON.stringify(s.callMembers) === %s`, js(mustJSON(want))), mediaTimeout)
		}
	})

	t.Run("bob leaves and alice sees him go", func(t *testing.T) {
		b.eval(t, "window.ecHost.pressEndCall()")
		// Element Call tells its host it hung up or is done (then the host
		// closes it), and leaves the call in the room state.
		st := b.await(t, fmt.Sprintf(`(s.hungUp || s.closed) && !s.callMembers.some(m => m.startsWith(%s))`, js(bob.ID.String()+"|")), mediaTimeout)
		t.Logf("bob's Element Call: im.vector.hangup %v, io.element.close %v", st.HungUp, st.Closed)
		a.await(t, fmt.Sprintf(`JSON.stringify(s.callMembers) === %s`, js(mustJSON([]string{alice.ID.String() + "|" + as.DeviceID}))), mediaTimeout)
		a.awaitMedia(t, `m.remoteVideos.length === 0`, mediaTimeout)
		var ps []*livekit.ParticipantInfo
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			var err error
			ps, err = sfuRoom(sfu, lkRoom)
			assert.NoError(c, err)
			assert.Equal(c, []string{alice.ID.String() + ":" + as.DeviceID}, identities(ps), "SFU room %s: %s", lkRoom, describeTracks(ps))
		}, mediaTimeout, 200*time.Millisecond)
		require.True(t, publishes(ps[0], livekit.Encryption_GCM), "alice still publishes: %s", describeTracks(ps))
	})

	for _, h := range []*ecHost{a, b} {
		st := h.await(t, "true", time.Second)
		require.Empty(t, st.Errors, "%s's host reported errors", h.name)
		t.Logf("%s: host requests %v; failed: %v", h.name, st.Requests, st.Failures)
	}
	t.Logf("Element Call embedded scenario took %s", time.Since(start).Round(time.Millisecond))
}

// frameEnds counts, per publisher, the frames a subscriber receives that end
// in livekit-client's E2EE trailer, and those that do not.
type frameEnds struct {
	mu               sync.Mutex
	encrypted, clear map[string]int
	lastClearSample  map[string]string
}

// livekit-client's GCM frame encryption (e2ee worker, FrameCryptor) ends
// every encrypted frame with the 12-byte IV and a 2-byte trailer: the IV
// length (12) and the key index; before them is the 16-byte GCM tag. The
// first bytes of a frame (Opus TOC byte, VP8 header) stay clear.
const (
	e2eeIVLength = 12
	e2eeMinFrame = 1 + 16 + e2eeIVLength + 2
)

// requireEncryptedFrames subscribes a hidden server-sdk-go participant to
// the call and proves that what the SFU forwards is encrypted: every frame
// of every publisher's audio (one Opus frame per packet) and video (a
// frame's last packet carries the marker bit) ends in the E2EE trailer. An
// unencrypted frame ends that way by chance once in 256.
func requireEncryptedFrames(t *testing.T, sfu testSFU, lkRoom string, publishers []string) {
	t.Helper()
	require.NotEmpty(t, publishers)
	jwt, err := auth.NewAccessToken(sfu.Key, sfu.Secret).SetIdentity("gxconf-test-observer").
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: lkRoom, Hidden: true, CanPublish: ptr(false), CanPublishData: ptr(false), CanSubscribe: ptr(true)}).
		SetValidFor(time.Minute).ToJWT()
	require.NoError(t, err)
	ends := &frameEnds{encrypted: map[string]int{}, clear: map[string]int{}, lastClearSample: map[string]string{}}
	var readers loadtest.Readers
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		key := rp.Identity() + "/" + pub.Kind().String()
		video := track.Kind() == webrtc.RTPCodecTypeVideo
		readers.Go(func() {
			for {
				pkt, _, err := track.ReadRTP()
				if err != nil {
					return
				}
				p := pkt.Payload
				// Audio: every non-empty packet is a frame (empty DTX frames stay
				// unencrypted). Video: the marker bit ends a frame.
				if len(p) == 0 || (video && !pkt.Marker) {
					continue
				}
				ends.mu.Lock()
				if len(p) >= e2eeMinFrame && p[len(p)-2] == e2eeIVLength {
					ends.encrypted[key]++
				} else {
					ends.clear[key]++
					ends.lastClearSample[key] = fmt.Sprintf("%d bytes ending % x", len(p), p[max(0, len(p)-4):])
				}
				ends.mu.Unlock()
			}
		})
	}
	room, err := lksdk.ConnectToRoomWithToken(sfu.URL, jwt, cb, lksdk.WithAutoSubscribe(true))
	require.NoError(t, err)
	defer func() {
		room.Disconnect()
		readers.Wait()
	}()
	const frames = 100
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ends.mu.Lock()
		defer ends.mu.Unlock()
		for _, id := range publishers {
			for _, kind := range []string{"audio", "video"} {
				assert.GreaterOrEqual(c, ends.encrypted[id+"/"+kind], frames, "%s/%s frames ending in the E2EE trailer", id, kind)
			}
		}
	}, mediaTimeout, 100*time.Millisecond)
	ends.mu.Lock()
	defer ends.mu.Unlock()
	require.Empty(t, ends.clear, "frames without the E2EE trailer (last of each: %v)", ends.lastClearSample)
	t.Logf("a hidden subscriber received frames all ending in livekit-client's E2EE trailer: %v", ends.encrypted)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
