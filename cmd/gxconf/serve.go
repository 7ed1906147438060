package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	mxas "maunium.net/go/mautrix/appservice"

	"github.com/gxfs-conf/gxconf/appservice"
	"github.com/gxfs-conf/gxconf/atrest"
	"github.com/gxfs-conf/gxconf/bridge"
	"github.com/gxfs-conf/gxconf/catalog"
	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/meetings"
	"github.com/gxfs-conf/gxconf/servertls"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/gxfs-conf/gxconf/store"
	"github.com/gxfs-conf/gxconf/web"
)

func cmdServe(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("c", "config.yaml", "config file")
	regPath := fs.String("r", "registration.yaml", "appservice registration file")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		return err
	}
	reg, err := mxas.LoadRegistration(*regPath)
	if err != nil {
		return fmt.Errorf("failed to read registration %s: %w", *regPath, err)
	}
	// Refuse unusable input before touching the database or the network.
	if err := appservice.CheckRegistration(reg, cfg.Appservice); err != nil {
		return fmt.Errorf("registration %s: %w", *regPath, err)
	}
	log := cfg.Logging.NewLogger(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serve(log.WithContext(ctx), cfg, reg, log)
}

// asLate lets the focus and the verifier use the appservice, which is built
// after them (it needs the focus to remove participants).
type asLate struct{ as *appservice.Appservice }

func (m *asLate) IsJoined(ctx context.Context, roomID, userID string) (bool, error) {
	return m.as.IsJoined(ctx, roomID, userID)
}

func (m *asLate) RoomPolicy(ctx context.Context, roomID string) (*credentials.AccessPolicy, error) {
	return m.as.RoomPolicy(ctx, roomID)
}

func (m *asLate) RoomEncrypted(ctx context.Context, roomID string) (bool, error) {
	return m.as.RoomEncrypted(ctx, roomID)
}

func (m *asLate) DirectMessage(ctx context.Context, userID, text, html string) error {
	return m.as.DirectMessage(ctx, userID, text, html)
}

func (m *asLate) Notice(ctx context.Context, roomID, text string) error {
	return m.as.Notice(ctx, roomID, text)
}

// serve wires the components and runs them until ctx ends or one fails.
func serve(ctx context.Context, cfg *config.Config, reg *mxas.Registration, log zerolog.Logger) error {
	log.Info().Str("version", versionString()).Str("homeserver", cfg.Homeserver.Domain).Msg("Starting gxconf")
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	db, err := store.Open(ctx, cfg.Database, log)
	if err != nil {
		return err
	}
	defer db.Close()

	focusCfg := cfg.Focus
	var rooms focus.RoomService
	var runners []component
	var sfuSrv *sfu.Server
	if focusCfg.SFU.URL == "" {
		// The embedded SFU, used in-process: the focus mints tokens with its first key.
		sfuSrv, err = sfu.New(cfg.SFU.Config, log.With().Str("component", "sfu").Logger(), registry)
		if err != nil {
			return fmt.Errorf("sfu: %w", err)
		}
		keys := slices.Sorted(maps.Keys(cfg.SFU.Keys))
		focusCfg.SFU.URL = sfuSrv.URL()
		focusCfg.SFU.APIKey, focusCfg.SFU.APISecret = keys[0], cfg.SFU.Keys[keys[0]]
		rooms = sfuSrv.RoomService()
		runners = append(runners, component{"sfu", sfuSrv.Run})
	} else {
		twirpURL := focusCfg.SFU.TwirpURL
		if twirpURL == "" {
			twirpURL = focusCfg.SFU.URL
		}
		rooms, err = focus.NewTwirpRoomService(twirpURL, focusCfg.SFU.APIKey, focusCfg.SFU.APISecret, nil)
		if err != nil {
			return fmt.Errorf("focus.sfu: %w", err)
		}
		if cfg.SFU.Enabled {
			log.Warn().Str("url", focusCfg.SFU.URL).Msg("focus.sfu.url names another LiveKit server; the embedded SFU is not started")
		}
	}
	var node *clusterNode
	if sfuSrv != nil {
		node, err = newClusterNode(cfg, sfuSrv, registry, log)
		if err != nil {
			return err
		}
	}
	var placer focus.Placer
	var nodeID string
	if node != nil {
		placer, nodeID = node.placer, string(node.reg.Self().ID)
		rooms = node.rooms
		runners = append(runners, node.runners()...)
	}
	late := &asLate{}
	var focusSvc *focus.Service
	ship, closeShip, err := cfg.Audit.OpenShip(os.Stdout)
	if err != nil {
		return err
	}
	defer func() { _ = closeShip() }()
	verifier, err := newVerifier(ctx, cfg, db, log, late, func() *focus.Service { return focusSvc }, ship)
	if err != nil {
		return err
	}
	var cat *catalog.Catalog
	var ent focus.Entitlements
	if cfg.Catalog.Enabled {
		var dir catalog.Directory = roomDirectory{rooms: rooms}
		localSite := string(cfg.Cluster.Site)
		if node != nil {
			// The cluster's directory sees every node; placement keeps
			// calls on the booked sites.
			dir, localSite = node.reg, ""
		}
		cat, err = catalog.New(ctx, catalog.Options{
			Config: cfg.Catalog, DB: db, Audit: verifier.AuditLog(), Directory: dir, LocalSite: localSite,
			Log: log.With().Str("component", "catalog").Logger(), Registerer: registry,
		})
		if err != nil {
			return err
		}
		ent = entitlements{c: cat}
		runners = append(runners, component{"catalog", cat.Run})
	}
	focusLog := log.With().Str("component", "focus").Logger()
	focusSvc, err = focus.New(ctx, focus.Options{
		Config:       focusCfg,
		LocalDomain:  cfg.Homeserver.Domain,
		DB:           db,
		Rooms:        rooms,
		Members:      late,
		Access:       focus.NewCredentialAccess(verifier, late, late, focusCfg.SFU.ApprovedSite, focusLog),
		Entitlements: ent,
		Messenger:    late,
		Placer:       placer,
		NodeID:       nodeID,
		Peering:      focusPeering(cfg.Peering),
		Audit:        verifier,
		Log:          focusLog,
		Registerer:   registry,
	})
	if err != nil {
		return err
	}
	var peers *peering
	if sfuSrv != nil {
		// The embedded SFU asks the focus whether each token's grant still holds.
		sfuSrv.SetGrantChecker(focusSvc)
		var br *bridge.Bridge
		if node != nil {
			br = node.bridge
		}
		peers, err = startPeering(cfg, sfuSrv, br, focusSvc, registry, log.With().Str("component", "bridge").Logger())
		if err != nil {
			return err
		}
		if peers != nil {
			runners = append(runners, peers.runners...)
		}
	}
	focusSvc.Handle(credentials.MountPath, verifier.Handler())
	var bookings appservice.BookingInfo
	if cat != nil {
		h := cat.Handler()
		// The same per-IP limit as the meetings API: the catalogue's admin
		// API and login are reachable without credentials.
		focusSvc.Handle("/catalog/", focusSvc.LimitPerIP(h))
		focusSvc.Handle("/.well-known/did.json", h)
		bookings = cat
	}
	as, err := appservice.New(ctx, appservice.Options{
		Config:           cfg.Appservice,
		Registration:     reg,
		HomeserverDomain: cfg.Homeserver.Domain,
		HomeserverURL:    cfg.Homeserver.Address,
		DB:               db,
		Remover:          auditedRemover{focus: focusSvc, audit: verifier, log: log},
		Audit:            verifier,
		Policies:         verifier,
		FocusURL:         focusCfg.ServiceURL(),
		Bookings:         bookings,
		Log:              log,
		Registerer:       registry,
	})
	if err != nil {
		return err
	}
	late.as = as

	if cfg.Meetings.Enabled {
		var bookings meetings.BookingChecker
		if cat != nil {
			bookings = meetingBookings{cat}
		}
		meet, err := meetings.New(ctx, meetings.Options{
			Bookings:    bookings,
			Config:      cfg.Meetings,
			DB:          db,
			Matrix:      meetings.NewMatrix(as.Bot(), as),
			BotID:       as.BotID().String(),
			LocalServer: cfg.Homeserver.Domain,
			PublicURL:   focusCfg.ServiceURL(),
			Policies:    verifier,
			Auth: &meetings.HomeserverAuth{
				HomeserverURL: cfg.Homeserver.Address,
				OpenIDCheck: func(ctx context.Context, tok meetings.OpenIDToken) (string, error) {
					return focusSvc.VerifyOpenID(ctx, focus.OpenIDToken(tok))
				},
			},
			Log:        log,
			Registerer: registry,
		})
		if err != nil {
			return err
		}
		as.AddCommand("meeting", meet.Bot(cfg.Appservice.CommandPrefix))
		// The API asks the homeserver about every token: rate limited per IP.
		focusSvc.Handle("/meetings/", focusSvc.LimitPerIP(meet.Handler()))
		runners = append(runners, component{"meetings", meet.Run})
	}

	// The operator self-test page: the browser call client the end-to-end tests use.
	focusSvc.Handle("/selftest/", http.StripPrefix("/selftest", web.Handler()))
	if !web.Built() {
		log.Warn().Msg("The self-test page at /selftest/ is not built into this binary (make web)")
	}

	var metricsHandler http.Handler = promhttp.HandlerFor(registry, promhttp.HandlerOpts{Registry: registry})
	if (node != nil || peers != nil || cfg.Metrics.Pprof) && cfg.Metrics.Listen != "" {
		// The cluster's state and the peer links are internal too: on the
		// metrics listener.
		var peerStatus func(context.Context) *cluster.PeeringStatus
		if peers != nil {
			peerStatus = peers.status
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", metricsHandler)
		if node != nil {
			var links func() []cluster.LinkStatus
			if node.bridge != nil {
				links = node.bridge.LinkStatus
			}
			mux.Handle("/cluster/status", statusHandler(node.reg, links, peerStatus))
			mux.Handle("/cluster/drain", node.drainHandler())
		} else if peers != nil {
			mux.Handle("/cluster/status", statusHandler(peers.lone, nil, peerStatus))
		}
		if cfg.Metrics.Pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		metricsHandler = mux
	}
	focusRun, asRun, certs, err := tlsRunners(cfg, log, focusSvc, as, sfuSrv)
	if err != nil {
		return err
	}
	runners = append(runners, component{"focus", focusRun}, component{"appservice", asRun}, component{"credentials", verifier.Run})
	if cfg.Metrics.Enabled {
		if cfg.Metrics.Listen == "" {
			log.Warn().Msg("/metrics is served on the public focus listener (metrics.listen is empty); block it in your reverse proxy")
			focusSvc.Handle("/metrics", metricsHandler)
		} else {
			runners = append(runners, component{"metrics listener", func(ctx context.Context) error {
				tlsCfg := servertls.Config{} // plain HTTP
				if cfg.Metrics.TLS {
					tlsCfg = cfg.TLS
				}
				ln, err := servertls.Listen(cfg.Metrics.Listen, tlsCfg, certs)
				if err != nil {
					return fmt.Errorf("metrics server: failed to listen on %s: %w", cfg.Metrics.Listen, err)
				}
				return serveHTTP(ctx, ln, noPages(metricsHandler))
			}})
		}
	}
	// A cluster node drains before it stops (SIGTERM or `gxconf cluster
	// drain`), so its participants move to other nodes; a lone node stops
	// at once.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var drain <-chan struct{}
		if node != nil {
			drain = node.drainRequested
		}
		select {
		case <-ctx.Done():
		case <-drain:
		case <-runCtx.Done():
			return
		}
		if node != nil {
			how := "SIGTERM/SIGINT (e.g. a rolling restart)"
			if ctx.Err() == nil {
				how = "requested on the metrics listener (gxconf drain)"
			}
			if err := verifier.Audit(runCtx, credentials.AuditEntry{Decision: credentials.AuditAdmin, UserID: "operator",
				Reason: "drain of node " + nodeID + ": " + how}); err != nil {
				log.Error().Err(err).Msg("Failed to audit the drain")
			}
			node.drain(runCtx, sfuSrv, cfg.Cluster.Drain, log)
		}
		stopRun()
	}()
	err = runAll(runCtx, log, stopReport, runners...)
	stopRun()
	wg.Wait()
	log.Info().Msg("gxconf stopped")
	return err
}

// newVerifier builds the credentials verifier. Its callbacks reach the bot
// (direct messages) and the focus (re-checking a user whose credential was
// revoked or expired), which exist by the time they fire.
func newVerifier(ctx context.Context, cfg *config.Config, db *dbutil.Database, log zerolog.Logger, bot *asLate, focusSvc func() *focus.Service, ship io.Writer) (*credentials.Verifier, error) {
	credCfg := cfg.Credentials
	if credCfg.AtRestKey == "" && len(credCfg.Federations) == 0 {
		// No federation, no attestation to encrypt: rooms can still have
		// policies without credentials (servers, need-to-know, size).
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		credCfg.AtRestKey = base64.StdEncoding.EncodeToString(key)
		log.Info().Msg("No credential federations configured: rooms that require credentials cannot be joined")
	}
	credLog := log.With().Str("component", "credentials").Logger()
	opts := []credentials.Option{credentials.WithRoomPolicy(bot.RoomPolicy)}
	if ship != nil {
		opts = append(opts, credentials.WithAuditShipping(ship))
	}
	var keyring *atrest.Keyring
	if cfg.AtRest.Enabled() || cfg.Credentials.AtRestKey != "" {
		var err error
		if keyring, err = atrest.FromConfig(cfg.AtRest, cfg.LegacyAtRestKey()); err != nil {
			return nil, fmt.Errorf("at_rest: %w", err)
		}
		opts = append(opts, credentials.WithSealer(keyring))
	}
	var v *credentials.Verifier
	v, err := credentials.New(ctx, credCfg, db, credLog, append(opts,
		credentials.WithOnAttestation(func(ctx context.Context, a credentials.Attestation) {
			text := fmt.Sprintf("Thank you — your %s from %s is verified until %s. You can join the call now.",
				a.Type, a.Issuer, a.ExpiresAt.UTC().Format(time.RFC3339))
			if err := bot.DirectMessage(ctx, a.UserID, text, ""); err != nil {
				credLog.Warn().Err(err).Str("user_id", a.UserID).Msg("Failed to confirm verification")
			}
		}),
		credentials.WithOnInvalidated(func(ctx context.Context, a credentials.Attestation, reason error) {
			why := fmt.Sprintf("their %s is no longer valid (%s)", a.Type, credentials.ReasonCode(reason))
			rooms, err := focusSvc().RecheckUser(ctx, a.UserID, why)
			if err != nil {
				credLog.Warn().Err(err).Str("user_id", a.UserID).Msg("Failed to re-check a user after their credential became invalid")
			}
			for _, room := range rooms {
				if err := v.Audit(ctx, credentials.AuditEntry{Decision: credentials.AuditRemove, UserID: a.UserID, RoomID: room,
					Level: a.Level, CredentialHash: a.CredentialHash, Reason: why}); err != nil {
					credLog.Error().Err(err).Msg("Failed to audit a removal")
				}
			}
			credLog.Info().Str("user_id", a.UserID).Strs("rooms", rooms).Str("reason", credentials.ReasonCode(reason)).
				Msg("Credential invalidated")
		}),
	)...)
	if err != nil {
		return nil, err
	}
	if keyring != nil {
		// Refuse to start with a missing or wrong key rather than fail on
		// every read of the rows it sealed.
		for _, col := range encryptedColumns() {
			if err := atrest.Check(ctx, db, keyring, col); err != nil {
				return nil, fmt.Errorf("at_rest: %w (restore the key to at_rest.keys_dir, or credentials.at_rest_key for values without key id)", err)
			}
		}
	}
	return v, nil
}

// auditedRemover removes users' participants through the focus and writes
// each removal to the audit log.
type auditedRemover struct {
	focus *focus.Service
	audit *credentials.Verifier
	log   zerolog.Logger
}

func (r auditedRemover) RemoveUser(ctx context.Context, roomID, userID, reason string) (int, error) {
	n, err := r.focus.RemoveUser(ctx, roomID, userID, reason)
	why := fmt.Sprintf("%s; %d participant(s) removed", reason, n)
	if err != nil {
		why += "; incomplete: " + err.Error()
	}
	if aerr := r.audit.Audit(ctx, credentials.AuditEntry{Decision: credentials.AuditRemove, UserID: userID, RoomID: roomID, Reason: why}); aerr != nil {
		r.log.Error().Err(aerr).Str("user_id", userID).Str("room_id", roomID).Msg("Failed to audit a removal")
	}
	return n, err
}

// encryptedColumns are the columns sealed with the at-rest keys.
func encryptedColumns() []atrest.Column {
	var cols []atrest.Column
	for _, c := range credentials.EncryptedColumns {
		cols = append(cols, atrest.Column{Table: c[0], ID: c[1], Value: c[2]})
	}
	return cols
}

// component is one of gxconf's long-lived parts, named for the logs.
type component struct {
	name string
	run  func(context.Context) error
}

// stopReport is how often runAll names the components still stopping.
const stopReport = 5 * time.Second

// runAll runs every component until ctx ends or one returns; then it cancels
// the rest and waits for all of them, logging every report interval which are
// still stopping (a shutdown that overruns Kubernetes' grace period is
// killed; the log says what held it).
func runAll(ctx context.Context, log zerolog.Logger, report time.Duration, runners ...component) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		running = map[string]int{}
	)
	errs := make([]error, len(runners))
	for _, r := range runners {
		running[r.name]++
	}
	for i, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.run(ctx)
			mu.Lock()
			if running[r.name]--; running[r.name] == 0 {
				delete(running, r.name)
			}
			mu.Unlock()
			cancel()
		}()
	}
	all := make(chan struct{})
	go func() {
		wg.Wait()
		close(all)
	}()
	select {
	case <-all:
		return errors.Join(errs...)
	case <-ctx.Done():
	}
	log.Info().Msg("Stopping all components")
	start := time.Now()
	tick := time.NewTicker(report)
	defer tick.Stop()
	for {
		select {
		case <-all:
			log.Info().Dur("duration", time.Since(start)).Msg("All components stopped")
			return errors.Join(errs...)
		case <-tick.C:
			mu.Lock()
			names := slices.Sorted(maps.Keys(running))
			mu.Unlock()
			log.Warn().Dur("duration", time.Since(start)).Strs("components", names).Msg("Still stopping")
		}
	}
}

// serveHTTP runs a small HTTP server (metrics) on ln until ctx ends.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		<-errc
		return err
	}
}

// tlsRunners serves the focus, appservice and embedded SFU listeners with
// native TLS when the tls section names a certificate, and plain HTTP
// otherwise. certs (nil without TLS) is shared with the metrics listener.
func tlsRunners(cfg *config.Config, log zerolog.Logger, focusSvc *focus.Service, as *appservice.Appservice, sfuSrv *sfu.Server) (focusRun, asRun func(context.Context) error, certs *servertls.Certs, err error) {
	if !cfg.TLS.Enabled() {
		return focusSvc.Run, as.Run, nil, nil
	}
	certs, err = servertls.NewCerts(cfg.TLS, log.With().Str("component", "tls").Logger())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tls: %w", err)
	}
	if sfuSrv != nil {
		sfuSrv.SetTLSConfig(servertls.ServerConfig(cfg.TLS, certs))
	}
	serveOn := func(addr string, serve func(context.Context, net.Listener) error) func(context.Context) error {
		return func(ctx context.Context) error {
			ln, err := servertls.Listen(addr, cfg.TLS, certs)
			if err != nil {
				return fmt.Errorf("failed to listen on %s: %w", addr, err)
			}
			return serve(ctx, ln)
		}
	}
	return serveOn(cfg.Focus.Listen, focusSvc.Serve), serveOn(cfg.Appservice.Listen, as.Serve), certs, nil
}

// noPages guards the internal metrics listener, which has no
// authentication, against web pages: a page an operator opens can make
// the browser fetch any address it reaches, and after a DNS rebinding read
// the answer — the cluster's rooms, the participants' identities, the
// metrics, profiles. Requests a page made carry Origin or Sec-Fetch-Site
// (same-origin after a rebinding, cross-site otherwise) and are refused
// with 403; Prometheus, curl and the CLI send neither, and an address the
// operator types into the browser is Sec-Fetch-Site: none.
func noPages(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if site := r.Header.Get("Sec-Fetch-Site"); r.Header.Get("Origin") != "" || (site != "" && site != "none") {
			http.Error(w, "not for web pages", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
