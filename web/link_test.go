package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// chromium is the browser the end-to-end tests use (GXTEST_CHROMIUM
// overrides the path). Like them, the test needs it and the built page
// (make test installs and builds both); only -short skips it.
func chromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts Chromium")
	}
	if !Built() {
		t.Fatal("the self-test page is not built: make web")
	}
	path := os.Getenv("GXTEST_CHROMIUM")
	if path == "" {
		path = "chromium"
	}
	path, err := exec.LookPath(path)
	if err != nil {
		t.Fatalf("no Chromium (scripts/deps.sh installs it): %v", err)
	}
	return path
}

// homeserverLog is a homeserver that records what it is asked and refuses
// every login.
type homeserverLog struct {
	mu    sync.Mutex
	paths []string
}

func (h *homeserverLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.paths = append(h.paths, r.Method+" "+r.URL.Path)
	h.mu.Unlock()
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Access-Control-Allow-Headers", "*")
	w.Header().Set("Access-Control-Allow-Methods", "GET, POST, PUT, OPTIONS")
	if r.Method == http.MethodOptions {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusForbidden)
	_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"no"}`))
}

func (h *homeserverLog) asked(req string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.paths, req)
}

// TestSelfTestLinkNeedsAClick: a link to the self-test page with call
// parameters (a homeserver, an account, a room of someone else's) opens
// the login form filled in from it, and the call starts only when the
// person presses Join — it would send their camera and microphone to that
// homeserver's call service, and a browser that remembers the page's camera
// permission asks nothing. Only an automated browser (navigator.webdriver,
// as the end-to-end tests drive the page) starts at once.
func TestSelfTestLinkNeedsAClick(t *testing.T) {
	exe := chromium(t)
	mux := http.NewServeMux()
	mux.Handle("/selftest/", http.StripPrefix("/selftest", Handler()))
	site := httptest.NewServer(mux)
	defer site.Close()

	for _, tc := range []struct {
		name      string
		automated bool
	}{
		{"person", false},
		{"automation", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := &homeserverLog{}
			evil := httptest.NewServer(hs)
			defer evil.Close()
			opts := []chromedp.ExecAllocatorOption{
				chromedp.ExecPath(exe), chromedp.UserDataDir(t.TempDir()),
				chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
				// Camera and microphone allowed without asking, as for a
				// person who let the page use them before.
				chromedp.Flag("use-fake-device-for-media-stream", true),
				chromedp.Flag("use-fake-ui-for-media-stream", true),
			}
			if !tc.automated {
				// A person's browser: navigator.webdriver is false.
				opts = append(opts, chromedp.Flag("disable-blink-features", "AutomationControlled"))
			}
			alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
			defer cancelAlloc()
			ctx, cancel := chromedp.NewContext(alloc)
			defer cancel()
			ctx, cancelTimeout := context.WithTimeout(ctx, time.Minute)
			defer cancelTimeout()

			link := site.URL + "/selftest/?" + url.Values{
				"hs": {evil.URL}, "user": {"@mallory:evil.example"}, "password": {"pw"},
				"room": {"!trap:evil.example"}, "e2ee": {"1"},
			}.Encode()
			_, err := chromedp.Run(ctx, chromedp.Navigate(link))
			require.NoError(t, err)
			webdriver, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`navigator.webdriver`))
			require.NoError(t, err)
			require.Equal(t, tc.automated, webdriver)
			login := "POST /_matrix/client/v3/login"
			if tc.automated {
				require.Eventually(t, func() bool { return hs.asked(login) }, 30*time.Second, 50*time.Millisecond)
				return
			}

			type pageView struct {
				Phase      string `json:"phase"`
				FormShown  bool   `json:"formShown"`
				HS         string `json:"hs"`
				User       string `json:"user"`
				Room       string `json:"room"`
				E2EE       bool   `json:"e2ee"`
				NoticeText string `json:"notice"`
			}
			page, err := chromedp.Run(ctx, chromedp.Evaluate[pageView](`(() => {
				const f = document.getElementById("login"), n = document.getElementById("link-notice");
				return {phase: window.gxconf.state.phase, formShown: !f.hidden,
					hs: f.elements.namedItem("hs").value, user: f.elements.namedItem("user").value,
					room: f.elements.namedItem("room").value, e2ee: f.elements.namedItem("e2ee").checked,
					notice: n && !n.hidden ? n.textContent : ""};
			})()`))
			require.NoError(t, err)
			require.Equal(t, "idle", page.Phase, "the call started from the link alone")
			require.True(t, page.FormShown)
			require.Equal(t, evil.URL, page.HS)
			require.Equal(t, "@mallory:evil.example", page.User)
			require.Equal(t, "!trap:evil.example", page.Room)
			require.True(t, page.E2EE)
			require.Contains(t, page.NoticeText, "camera and microphone")
			require.False(t, hs.asked(login), "the page logged in to the link's homeserver without a click")

			// Join, pressed by the person, starts the call with the link's parameters.
			_, err = chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("login").requestSubmit()`))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return hs.asked(login) }, 30*time.Second, 50*time.Millisecond)
		})
	}
}
