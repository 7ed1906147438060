// Package web serves gxconf's browser call client: matrix-js-sdk and
// livekit-client bundled by esbuild from the npm project in this directory
// (`make web` builds it into dist/, which is embedded here). gxconf mounts it
// at /selftest/ on the focus listener, where an operator logs in with a
// homeserver account and makes a test call; the end-to-end tests drive the
// same page in headless Chromium.
//
// It must not import any other gxconf package.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed all:dist
var dist embed.FS

// Built reports whether the bundle was built into this binary (rather than
// only the placeholder committed in dist/).
func Built() bool {
	_, err := fs.Stat(dist, "dist/index.html")
	return err == nil
}

// Handler serves the call page and its assets, relative to where it is
// mounted (strip the mount prefix first). Without a built bundle it answers
// every request with a page saying how to build it.
func Handler() http.Handler {
	if !Built() {
		return http.HandlerFunc(notBuilt)
	}
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // "dist" is a valid path by construction
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// The page takes passwords: never framed, and only its own scripts run.
		// It talks to any homeserver, focus and SFU the user names (connect-src);
		// the Rust crypto is WebAssembly, the E2EE worker a same-origin module.
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

const contentSecurityPolicy = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; " +
	"connect-src * ws: wss:; media-src 'self' blob: mediastream:; img-src 'self' data: blob:; " +
	"style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

const notBuiltPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gxconf self-test: not built</title></head>
<body style="font-family: system-ui, sans-serif; margin: 2rem">
<h1>gxconf call self-test: not built</h1>
<p>This gxconf binary was built without the browser call client.
Run <code>make web</code> (it runs <code>npm ci</code> and esbuild in <code>web/</code>),
then rebuild gxconf (<code>make build</code>).</p>
</body></html>
`

func notBuilt(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(notBuiltPage))
}
