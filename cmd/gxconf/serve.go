package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	mxas "maunium.net/go/mautrix/appservice"

	"github.com/gxfs-conf/gxconf/appservice"
	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/store"
)

func cmdServe(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("c", "config.yaml", "config file")
	regPath := fs.String("r", "registration.yaml", "appservice registration file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		return err
	}
	reg, err := mxas.LoadRegistration(*regPath)
	if err != nil {
		return fmt.Errorf("failed to read registration %s: %w", *regPath, err)
	}
	log := cfg.Logging.NewLogger(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serve(log.WithContext(ctx), cfg, reg, log)
}

// membersLate lets the focus ask the appservice, which is built after it.
type membersLate struct{ as *appservice.Appservice }

func (m *membersLate) IsJoined(ctx context.Context, roomID, userID string) (bool, error) {
	return m.as.IsJoined(ctx, roomID, userID)
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
	if focusCfg.SFU.URL == "" {
		return errors.New("focus.sfu.url: must be set (the embedded SFU is not part of this build yet)")
	}
	twirpURL := focusCfg.SFU.TwirpURL
	if twirpURL == "" {
		twirpURL = focusCfg.SFU.URL
	}
	rooms, err := focus.NewTwirpRoomService(twirpURL, focusCfg.SFU.APIKey, focusCfg.SFU.APISecret, nil)
	if err != nil {
		return fmt.Errorf("focus.sfu: %w", err)
	}
	members := &membersLate{}
	focusSvc, err := focus.New(ctx, focus.Options{
		Config:      focusCfg,
		LocalDomain: cfg.Homeserver.Domain,
		DB:          db,
		Rooms:       rooms,
		Members:     members,
		Log:         log.With().Str("component", "focus").Logger(),
		Registerer:  registry,
	})
	if err != nil {
		return err
	}
	as, err := appservice.New(ctx, appservice.Options{
		Config:           cfg.Appservice,
		Registration:     reg,
		HomeserverDomain: cfg.Homeserver.Domain,
		HomeserverURL:    cfg.Homeserver.Address,
		DB:               db,
		Remover:          focusSvc,
		FocusURL:         focusCfg.ServiceURL(),
		Log:              log,
		Registerer:       registry,
	})
	if err != nil {
		return err
	}
	members.as = as

	metricsHandler := promhttp.HandlerFor(registry, promhttp.HandlerOpts{Registry: registry})
	runners := []func(context.Context) error{focusSvc.Run, as.Run}
	if cfg.Metrics.Enabled {
		if cfg.Metrics.Listen == "" {
			focusSvc.Handle("/metrics", metricsHandler)
		} else {
			runners = append(runners, func(ctx context.Context) error {
				return serveHTTP(ctx, cfg.Metrics.Listen, metricsHandler)
			})
		}
	}
	err = runAll(ctx, runners...)
	log.Info().Msg("gxconf stopped")
	return err
}

// runAll runs every component until ctx ends or one returns; then it cancels
// the rest and waits for all of them.
func runAll(ctx context.Context, runners ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(runners))
	for i, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r(ctx)
			cancel()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// serveHTTP runs a small HTTP server (metrics) until ctx ends.
func serveHTTP(ctx context.Context, addr string, h http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
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
