package sfu_test

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBrowserInterop runs livekit-client in two headless Chromium
// instances against the SFU: they connect (falling back from /rtc/v1 to
// /rtc), publish the fake camera with simulcast, decode each other's real
// VP8 and exchange data with a server-sdk-go participant.
//
// Opt-in: SFU_BROWSER_TEST names a directory holding livekit-client's UMD
// build (npm install livekit-client@2.23.0; node_modules/livekit-client/dist),
// and chromium must be on PATH.
func TestBrowserInterop(t *testing.T) {
	dir := os.Getenv("SFU_BROWSER_TEST")
	if dir == "" {
		t.Skip("set SFU_BROWSER_TEST to livekit-client's dist directory to run")
	}
	lkjs, err := os.ReadFile(filepath.Join(dir, "livekit-client.umd.js"))
	require.NoError(t, err)
	page, err := os.ReadFile("testdata/browser/index.html")
	require.NoError(t, err)
	chromium, err := exec.LookPath("chromium")
	require.NoError(t, err)
	verifyNoLeaks(t)
	ts := startServer(t, func(c *sfuConfig) { c.PathPrefix = "/livekit/sfu" })
	gop := ts.join(t, "web", "gopher", nil)

	var mu sync.Mutex
	reports := map[string][]string{}
	mux := http.NewServeMux()
	mux.HandleFunc("/lk.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = w.Write(lkjs)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("/report", func(_ http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		id := r.URL.Query().Get("id")
		reports[id] = append(reports[id], string(b))
		mu.Unlock()
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/report" {
			// The page does not know its id; take it from the referer.
			if ref, err := url.Parse(r.Referer()); err == nil {
				q := r.URL.Query()
				q.Set("id", ref.Query().Get("id"))
				r.URL.RawQuery = q.Encode()
			}
		}
		mux.ServeHTTP(w, r)
	})}
	go func() { _ = hs.Serve(l) }()
	t.Cleanup(func() { _ = hs.Close() })

	for _, id := range []string{"browser1", "browser2"} {
		u := "http://" + l.Addr().String() + "/?id=" + id + "&url=" + url.QueryEscape(ts.url) + "&token=" + url.QueryEscape(ts.token(t, "web", id, nil))
		cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
			"--disable-background-networking", "--remote-debugging-port=0", "--user-data-dir="+t.TempDir(), u)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	decoded := func(id string) int {
		mu.Lock()
		defer mu.Unlock()
		best := 0
		for _, r := range reports[id] {
			if n, ok := strings.CutPrefix(r, "decoded "); ok {
				v, _ := strconv.Atoi(n)
				best = max(best, v)
			}
		}
		return best
	}
	has := func(id, prefix string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range reports[id] {
			if strings.HasPrefix(r, prefix) {
				return true
			}
		}
		return false
	}
	require.Eventually(t, func() bool { return decoded("browser1") > 30 && decoded("browser2") > 30 }, 60*time.Second, 200*time.Millisecond, "reports: %v", reports)
	require.True(t, has("browser1", "connected "+ts.url+"/rtc"), "fell back to /rtc")
	require.Eventually(t, func() bool {
		v := gop.stream("browser1/video")
		return v != nil && v.Packets.Load() > 50 && len(gop.dataFrom("browser2")) > 0
	}, 30*time.Second, 200*time.Millisecond)
}
