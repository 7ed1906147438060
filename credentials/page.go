package credentials

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"

	"github.com/skip2/go-qrcode"
)

// qrSVG renders content as a QR code in SVG (one path, 4-module quiet zone).
func qrSVG(content string) (template.HTML, error) {
	q, err := qrcode.New(content, qrcode.Medium)
	if err != nil {
		return "", err
	}
	q.DisableBorder = true
	bm := q.Bitmap()
	n := len(bm)
	const quiet = 4
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="320" height="320" shape-rendering="crispEdges" role="img" aria-label="QR code">`, n+2*quiet, n+2*quiet)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#fff"/><path fill="#000" d="`)
	for y, row := range bm {
		for x, on := range row {
			if on {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x+quiet, y+quiet)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return template.HTML(b.String()), nil //nolint:gosec // generated from booleans only
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="de"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{if eq .State "pending"}}<meta http-equiv="refresh" content="5">{{end}}
<title>gxconf – Nachweis vorlegen / present a credential</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em;color:#222}
.qr{margin:1em 0}a.btn{display:inline-block;padding:.6em 1em;background:#0b5;color:#fff;text-decoration:none;border-radius:4px}
code{word-break:break-all}</style></head>
<body>
<h1>Nachweis vorlegen</h1>
<p>Für den Raum <code>{{.RoomID}}</code> ({{.Level}}) wird ein Nachweis benötigt.
Scannen Sie den Code mit Ihrer Wallet oder öffnen Sie den Link auf diesem Gerät.</p>
<p lang="en">The room requires a verifiable credential. Scan the code with your wallet or open the link on this device.</p>
{{if eq .State "pending"}}
<div class="qr">{{.QR}}</div>
<p><a class="btn" href="{{.Link}}">In Wallet öffnen / open in wallet</a></p>
<h2>Wallet nach OID4VP 1.0 / OID4VP 1.0 wallet</h2>
<p>Kennt Ihre Wallet nur OID4VP 1.0 (DCQL), nutzen Sie diesen Code. / If your wallet speaks OID4VP 1.0 (DCQL) only, use this code.</p>
<div class="qr">{{.DCQLQR}}</div>
<p><a class="btn" href="{{.DCQLLink}}">In Wallet öffnen (OID4VP 1.0) / open in wallet (OID4VP 1.0)</a></p>
<p>Beide Codes gelten für dieselbe Anfrage, nur einmal. / Both codes are the same request, usable once.
Gültig bis / valid until {{.Expires}}.</p>
{{else if eq .State "verified"}}<p><strong>Nachweis geprüft. / Credential verified.</strong> Sie können dem Anruf jetzt beitreten.</p>
{{else if eq .State "refused"}}<p><strong>Nachweis abgelehnt / refused:</strong> {{.Result}}</p>
{{else}}<p>Diese Anfrage ist abgelaufen. / This request has expired.</p>{{end}}
</body></html>`))

func (v *Verifier) servePage(w http.ResponseWriter, r *http.Request) {
	sr, err := v.store.getRequest(r.Context(), r.PathValue("id"))
	if errors.Is(err, ErrUnknownRequest) {
		http.Error(w, "unknown request", http.StatusNotFound)
		return
	} else if err != nil {
		v.log.Error().Err(err).Msg("Failed to look up presentation request")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	pr := v.publicRequest(sr)
	state := requestState(sr, v.now())
	var qr, dcqlQR template.HTML
	if state == "pending" {
		if qr, err = qrSVG(pr.Link); err == nil {
			dcqlQR, err = qrSVG(pr.DCQLLink)
		}
		if err != nil {
			http.Error(w, "failed to render QR code", http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	w.Header().Set("X-Frame-Options", "DENY")
	_ = pageTemplate.Execute(w, map[string]any{
		"RoomID": sr.RoomID, "Level": sr.Level, "State": state, "QR": qr, "Link": template.URL(pr.Link), //nolint:gosec // our own openid4vp URL
		"DCQLQR": dcqlQR, "DCQLLink": template.URL(pr.DCQLLink), //nolint:gosec // our own openid4vp URL
		"Expires": sr.ExpiresAt.UTC().Format("2006-01-02 15:04 UTC"), "Result": sr.Result,
	})
}
