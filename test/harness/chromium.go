package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// DefaultChromium is Debian's chromium package, which scripts/deps.sh installs.
const DefaultChromium = "/usr/bin/chromium"

// ChromiumPath is the browser the tests drive: $GXTEST_CHROMIUM or Debian's.
func ChromiumPath() string {
	if p := os.Getenv("GXTEST_CHROMIUM"); p != "" {
		return p
	}
	return DefaultChromium
}

// The size of every page's viewport, in CSS pixels.
const (
	viewportWidth  = 1280
	viewportHeight = 800
)

// BrowserOptions configure a headless Chromium.
type BrowserOptions struct {
	// ExecPath defaults to ChromiumPath().
	ExecPath string
	// UserDataDir is a fresh profile directory; it must exist.
	UserDataDir string
}

// Browser is one headless Chromium process. Pages opened with NewPage live in
// browser contexts of their own (separate cookies and storage, like two
// people on two machines) and share the process.
type Browser struct {
	cancelAlloc   context.CancelFunc
	ctx           context.Context // the browser's first chromedp context
	cancelBrowser context.CancelFunc
	stderr        *lineBuffer

	mu    sync.Mutex
	pages []*Page
}

// StartBrowser starts Chromium headless, with fake camera and microphone
// (Chromium's test pattern and beep) granted without a prompt, and nothing
// that reaches out to the network by itself.
func StartBrowser(ctx context.Context, opts BrowserOptions) (*Browser, error) {
	if opts.ExecPath == "" {
		opts.ExecPath = ChromiumPath()
	}
	if _, err := exec.LookPath(opts.ExecPath); err != nil {
		return nil, fmt.Errorf("chromium not found at %s (scripts/deps.sh installs Debian's chromium; GXTEST_CHROMIUM overrides the path): %w", opts.ExecPath, err)
	}
	if opts.UserDataDir == "" {
		return nil, errors.New("harness: BrowserOptions.UserDataDir is required")
	}
	b := &Browser{stderr: newLineBuffer(200)}
	allocOpts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(opts.ExecPath),
		chromedp.UserDataDir(opts.UserDataDir),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.WindowSize(viewportWidth, viewportHeight),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider"),
		// Two call pages share the machine: neither may be throttled as a background tab.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.CombinedOutput(b.stderr),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), allocOpts...)
	b.cancelAlloc = cancelAlloc
	b.ctx, b.cancelBrowser = chromedp.NewContext(allocCtx)
	// The first Run starts the browser; it lives as long as b.ctx, not ctx.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(b.ctx) }()
	select {
	case err := <-started:
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("start chromium: %w\n%s", err, b.stderr.String())
		}
	case <-ctx.Done():
		b.Close()
		return nil, ctx.Err()
	}
	return b, nil
}

// NewPage opens a tab in a new browser context. name labels its console lines.
func (b *Browser) NewPage(name string) (*Page, error) {
	p := &Page{Name: name, console: newLineBuffer(1500), started: time.Now()}
	p.ctx, p.cancel = chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext(), chromedp.WithListener(p.onEvent))
	// A tab in a new browser context does not inherit --window-size: give it
	// the same viewport, so that a call's tiles are on screen (livekit-client's
	// adaptive stream pauses video that is not).
	if err := chromedp.Do(p.ctx, chromedp.EmulateViewport(viewportWidth, viewportHeight)); err != nil {
		p.cancel()
		return nil, fmt.Errorf("open page %s: %w", name, err)
	}
	b.mu.Lock()
	b.pages = append(b.pages, p)
	b.mu.Unlock()
	return p, nil
}

// Close closes every page and ends the browser process.
func (b *Browser) Close() {
	b.mu.Lock()
	pages := b.pages
	b.pages = nil
	b.mu.Unlock()
	for _, p := range pages {
		p.cancel()
	}
	if b.cancelBrowser != nil {
		b.cancelBrowser()
	}
	b.cancelAlloc()
}

// Log returns Chromium's own output and every page's console, for failure messages.
func (b *Browser) Log() string {
	var s strings.Builder
	b.mu.Lock()
	pages := append([]*Page(nil), b.pages...)
	b.mu.Unlock()
	for _, p := range pages {
		fmt.Fprintf(&s, "== console of %s\n%s", p.Name, p.Console())
	}
	fmt.Fprintf(&s, "== chromium stderr\n%s", b.stderr.String())
	return s.String()
}

// Page is one tab.
type Page struct {
	Name    string
	ctx     context.Context
	cancel  context.CancelFunc
	console *lineBuffer
	started time.Time
}

// Navigate loads url and waits for the load event.
func (p *Page) Navigate(ctx context.Context, url string) error {
	return p.run(ctx, func(c context.Context) error { return chromedp.Do(c, chromedp.Navigate(url)) })
}

// Eval evaluates a JavaScript expression, awaiting it if it is a promise,
// and decodes its JSON value into out (which may be nil).
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	return p.run(ctx, func(c context.Context) error {
		raw, err := chromedp.Run(c, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise, chromedp.EvalAsValue))
		if err != nil {
			var ex *chromedp.ExceptionError
			if errors.As(err, &ex) {
				return fmt.Errorf("%s: %s", p.Name, exceptionText(ex.ExceptionDetails))
			}
			return fmt.Errorf("%s: evaluate: %w", p.Name, err)
		}
		if out == nil || len(raw) == 0 {
			return nil
		}
		return json.Unmarshal(raw, out)
	})
}

// Screenshot returns a PNG of the page as it is shown (the viewport).
func (p *Page) Screenshot(ctx context.Context) ([]byte, error) {
	var png []byte
	err := p.run(ctx, func(c context.Context) error {
		var err error
		png, err = chromedp.Run(c, chromedp.CaptureScreenshot())
		return err
	})
	return png, err
}

// Console returns the page's console messages, exceptions and browser log
// entries (network errors), oldest first; only the newest few thousand are kept.
func (p *Page) Console() string { return p.console.String() }

// run runs f with a context that is a child of the page's chromedp context
// and ends with ctx.
func (p *Page) run(ctx context.Context, f func(context.Context) error) error {
	c, cancel := context.WithCancel(p.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	err := f(c)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%s: %w (%v)", p.Name, ctx.Err(), err)
	}
	return err
}

// onEvent runs on chromedp's reader goroutine: it only formats and stores.
func (p *Page) onEvent(ev any) {
	at := time.Since(p.started).Seconds()
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		parts := make([]string, 0, len(e.Args))
		for _, a := range e.Args {
			parts = append(parts, remoteText(a))
		}
		p.console.add(fmt.Sprintf("%7.3fs %s: %s", at, e.Type, strings.Join(parts, " ")))
	case *runtime.EventExceptionThrown:
		p.console.add(fmt.Sprintf("%7.3fs exception: %s", at, exceptionText(e.ExceptionDetails)))
	case *cdplog.EventEntryAdded:
		p.console.add(fmt.Sprintf("%7.3fs browser %s: %s %s", at, e.Entry.Level, e.Entry.Text, e.Entry.URL))
	}
}

func remoteText(a *runtime.RemoteObject) string {
	if a.Type == runtime.RemoteObjectTypeString {
		var s string
		if json.Unmarshal(a.Value, &s) == nil {
			return s
		}
	}
	if len(a.Value) > 0 {
		return string(a.Value)
	}
	if a.Description != "" {
		return a.Description
	}
	return string(a.Type)
}

func exceptionText(d *runtime.ExceptionDetails) string {
	if d == nil {
		return "exception"
	}
	if d.Exception != nil && d.Exception.Description != "" {
		return d.Exception.Description
	}
	return d.Text
}

// lineBuffer keeps the last n lines written to it; it is an io.Writer for
// Chromium's own output too.
type lineBuffer struct {
	mu      sync.Mutex
	n       int
	lines   []string
	dropped int
	partial string
}

func newLineBuffer(n int) *lineBuffer { return &lineBuffer{n: n} }

const maxLine = 4000

func (b *lineBuffer) add(line string) {
	if len(line) > maxLine {
		line = line[:maxLine] + "…"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
	if len(b.lines) > b.n {
		b.dropped += len(b.lines) - b.n
		b.lines = append([]string(nil), b.lines[len(b.lines)-b.n:]...)
	}
}

func (b *lineBuffer) Write(data []byte) (int, error) {
	b.mu.Lock()
	text := b.partial + string(data)
	b.partial = ""
	b.mu.Unlock()
	lines := strings.Split(text, "\n")
	for _, l := range lines[:len(lines)-1] {
		b.add(l)
	}
	b.mu.Lock()
	b.partial = lines[len(lines)-1]
	b.mu.Unlock()
	return len(data), nil
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var s strings.Builder
	if b.dropped > 0 {
		fmt.Fprintf(&s, "(%d earlier lines dropped)\n", b.dropped)
	}
	for _, l := range b.lines {
		s.WriteString(l)
		s.WriteByte('\n')
	}
	if b.partial != "" {
		s.WriteString(b.partial + "\n")
	}
	return s.String()
}
