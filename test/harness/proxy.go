package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// DiscoveryPaths are the homeserver paths that announce the MatrixRTC focus.
// Dendrite serves neither (it has no rtc/transports and a fixed well-known
// document), so an operator's reverse proxy routes them to gxconf, as the
// README's nginx example does.
var DiscoveryPaths = []string{
	"/_matrix/client/unstable/org.matrix.msc4143/rtc/transports",
	"/_matrix/client/v1/rtc/transports",
	"/.well-known/matrix/client",
}

// HomeserverProxy is the reverse proxy in front of a homeserver that clients
// use as their homeserver URL: DiscoveryPaths go to gxconf's focus listener,
// everything else to the homeserver.
type HomeserverProxy struct {
	// URL is the homeserver URL as clients see it.
	URL  string
	ln   net.Listener
	srv  *http.Server
	errc chan error
}

// ListenHomeserverProxy reserves the proxy's loopback address, so that its
// URL can go into gxconf's config before gxconf and the homeserver run.
func ListenHomeserverProxy() (*HomeserverProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &HomeserverProxy{URL: "http://" + ln.Addr().String(), ln: ln}, nil
}

// Serve starts proxying to the homeserver and to gxconf's focus listener.
func (p *HomeserverProxy) Serve(homeserverURL, focusURL string) error {
	hs, err := url.Parse(homeserverURL)
	if err != nil {
		return fmt.Errorf("homeserver URL: %w", err)
	}
	focus, err := url.Parse(focusURL)
	if err != nil {
		return fmt.Errorf("focus URL: %w", err)
	}
	mux := http.NewServeMux()
	toFocus := httputil.NewSingleHostReverseProxy(focus)
	for _, path := range DiscoveryPaths {
		mux.Handle(path, toFocus)
	}
	mux.Handle("/", httputil.NewSingleHostReverseProxy(hs))
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	p.errc = make(chan error, 1)
	go func() { p.errc <- p.srv.Serve(p.ln) }()
	return nil
}

// Close stops the proxy and waits for it.
func (p *HomeserverProxy) Close() error {
	if p.srv == nil {
		return p.ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.srv.Shutdown(ctx)
	if serr := <-p.errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
