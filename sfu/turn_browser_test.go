package sfu_test

import (
	"bufio"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// turnPage joins with livekit-client (bundled by the test), publishes the
// fake camera and microphone and reports on the console, which headless
// Chromium writes to stderr, once video packets from the peer arrived:
// their count and the selected candidate pair's local candidate type and
// relay protocol.
const turnPage = `<!doctype html><html><body><script src="lk.js"></script><script>
const p = new URLSearchParams(location.hash.slice(1));
const log = (m) => console.log("TURNPAGE " + m);
(async () => {
  try {
    const room = new LK.Room();
    room.on(LK.RoomEvent.TrackSubscribed, (track) => {
      const el = track.attach(); el.muted = true; document.body.appendChild(el); el.play().catch(() => {});
    });
    const t0 = performance.now();
    await room.connect(p.get("url"), p.get("token"));
    log("connected");
    await room.localParticipant.enableCameraAndMicrophone();
    log("published");
    let polls = 0;
    const poll = async () => {
      const rp = room.remoteParticipants.get(p.get("peer"));
      for (const pub of rp ? rp.trackPublications.values() : []) {
        if (pub.kind !== "video" || !pub.track) continue;
        const st = await pub.track.getRTCStatsReport();
        let frames = 0, packets = 0, pair = null;
        const cands = {};
        st && st.forEach((s) => {
          if (s.type === "inbound-rtp") { frames = s.framesReceived || 0; packets = s.packetsReceived || 0; }
          if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
          if (s.type === "local-candidate") cands[s.id] = s;
        });
        if (++polls % 10 === 0) {
          const ps = [];
          st && st.forEach((s) => { if (s.type === "candidate-pair") ps.push(s.state + "/" + s.nominated + "/" + (cands[s.localCandidateId] || {}).candidateType); });
          log("DBG packets=" + packets + " pairs=" + ps.join(",") + " locals=" + Object.values(cands).map((c) => c.candidateType + ":" + (c.relayProtocol || c.protocol)).join(","));
        }
        // The peer sends the load tool's pattern, not decodable VP8:
        // count what arrived.
        if (packets >= 300 && pair) {
          const lc = cands[pair.localCandidateId] || {};
          log("OK packets=" + packets + " frames_received=" + frames + " local=" + lc.candidateType + " relay_protocol=" + (lc.relayProtocol || "") +
            " first_300_packets_ms=" + Math.round(performance.now() - t0));
          return;
        }
      }
      if (!rp && ++polls % 10 === 0) log("DBG no participant " + p.get("peer") + " of " + [...room.remoteParticipants.keys()]);
      setTimeout(poll, 200);
    };
    poll();
  } catch (e) { log("FAIL " + e); }
})();
</script></body></html>`

// TestTURNTCPOnlyBrowser is TestTURNTCPOnlyClient with headless Chromium
// and livekit-client (web/node_modules) as the restricted client: the page
// is a local file, so the one TCP port carries signalling and media.
// Chromium runs with --ignore-certificate-errors for the test certificate.
func TestTURNTCPOnlyBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		missingPeer(t, "needs chromium (scripts/deps.sh)")
	}
	esbuild := filepath.Join("..", "web", "node_modules", ".bin", "esbuild")
	if _, err := os.Stat(esbuild); err != nil {
		missingPeer(t, "needs web/node_modules (scripts/deps.sh web)")
	}
	verifyNoLeaks(t)
	n := newTCPOnlyNet(t)

	// livekit-client as one script for a file:// page.
	page := filepath.Join(n.dir, "page")
	require.NoError(t, os.MkdirAll(page, 0o755))
	entry := filepath.Join(page, "entry.mjs")
	require.NoError(t, os.WriteFile(entry, []byte(`export * from "livekit-client";`), 0o600))
	webModules, err := filepath.Abs(filepath.Join("..", "web", "node_modules"))
	require.NoError(t, err)
	build := exec.Command(esbuild, entry, "--bundle", "--format=iife", "--global-name=LK", "--outfile="+filepath.Join(page, "lk.js"), "--log-level=warning")
	build.Env = append(os.Environ(), "NODE_PATH="+webModules)
	out, err := build.CombinedOutput()
	require.NoError(t, err, "esbuild: %s", out)
	require.NoError(t, os.WriteFile(filepath.Join(page, "index.html"), []byte(turnPage), 0o644))

	room := "turnb-" + n.tag
	normal := startTURNClient(t, nil, map[string]string{
		"GXCONF_TURN_CHILD_IDENTITY":     "normal",
		"GXCONF_TURN_CHILD_PEER":         "browser",
		"GXCONF_TURN_CHILD_TOKEN":        n.ts.token(t, room, "normal", nil),
		"GXCONF_TURN_CHILD_DISABLE_TURN": "1",
		"GXCONF_TURN_CHILD_PEER_BROWSER": "1",
	}, n.ts.url, n.certFile)

	hash := url.Values{"url": {n.ts.url}, "token": {n.ts.token(t, room, "browser", nil)}, "peer": {"normal"}}.Encode()
	cmd := exec.Command("ip", "netns", "exec", n.ns, chromium, "--headless", "--no-sandbox", "--disable-gpu",
		"--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--disable-background-networking",
		"--ignore-certificate-errors", "--allow-file-access-from-files", "--enable-logging=stderr", "--v=0",
		"--user-data-dir="+filepath.Join(n.dir, "chromium"), "file://"+filepath.Join(page, "index.html")+"#"+hash)
	// Its own process group, so that the cleanup ends the renderers too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	lines := make(chan string, 100)
	var logTail []string
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if i := strings.Index(sc.Text(), `"TURNPAGE `); i >= 0 {
				lines <- strings.SplitN(sc.Text()[i+10:], `"`, 2)[0]
			}
		}
		_ = cmd.Wait()
	}()
	kill := func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	t.Cleanup(func() {
		kill()
		<-exited
	})

	var result string
	deadline := time.After(90 * time.Second)
	for result == "" {
		select {
		case l := <-lines:
			logTail = append(logTail, l)
			if strings.HasPrefix(l, "OK ") {
				result = l
			}
			require.False(t, strings.HasPrefix(l, "FAIL"), "page: %s", l)
		case <-exited:
			t.Fatalf("chromium exited; page said %v", logTail)
		case <-deadline:
			t.Fatalf("no video in the browser in 90s; page said %v", logTail)
		}
	}
	t.Logf("browser: %s", result)
	require.Contains(t, result, "local=relay", "the browser's media came over its relay candidate")
	require.Contains(t, result, "relay_protocol=tls")

	nr := normal.result(t)
	t.Logf("normal client received %s", nr)
	allocs := metricByLabel(t, n.ts, "gxconf_sfu_turn_allocations_total", "transport")
	relayed := metricByLabel(t, n.ts, "gxconf_sfu_turn_relayed_bytes_total", "direction")
	t.Logf("turn: allocations by transport %v, relayed bytes %v", allocs, relayed)
	require.Len(t, allocs, 1)
	require.GreaterOrEqual(t, allocs["tls"], 1.0)
	require.Greater(t, relayed["to_peer"], 20_000.0)
	require.Greater(t, relayed["from_peer"], 20_000.0)
	kill()
	<-exited
	normal.stop(t)
}
