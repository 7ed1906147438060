package cluster

import (
	"mime"
	"net/http"
)

// DrainHandler serves POST /cluster/drain on the internal metrics listener:
// it calls start (which must not block; a second drain is a no-op there) and
// answers 202. `gxconf cluster drain` is its client.
//
// The listener has no authentication, and a drain stops the node, so the
// handler refuses what a web browser sends: any request carrying Origin or
// Sec-Fetch-Site (browsers add one of them to every POST, cross-site or
// DNS-rebound alike; the CLI and curl send neither) with 403, and any body
// type other than application/json (a page may POST a form or text/plain to
// any address without asking, but not JSON) with 415. Otherwise a page
// opened on an operator's machine could drain the nodes it can reach.
func DrainHandler(start func()) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		if r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != "" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			w.WriteHeader(http.StatusUnsupportedMediaType)
			return
		}
		start()
		w.WriteHeader(http.StatusAccepted)
	})
}
