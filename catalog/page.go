package catalog

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
)

//go:embed page/admin.html
var adminPage []byte

// pageCSP allows exactly the page's own inline script (by its hash).
var pageCSP = func() string {
	start := bytes.Index(adminPage, []byte("<script>")) + len("<script>")
	end := bytes.Index(adminPage, []byte("</script>"))
	sum := sha256.Sum256(adminPage[start:end])
	return "default-src 'self'; script-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'"
}()

// servePage serves the admin page; its script talks to the admin API with
// the session cookie, so no other script may run in it.
func servePage(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(adminPage)
}
