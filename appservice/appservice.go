package appservice

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	mxas "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/gxfs-conf/gxconf/internal/clip"
)

// Options are the dependencies of an Appservice.
type Options struct {
	Config       Config
	Registration *mxas.Registration
	// HomeserverDomain is the server_name; HomeserverURL its client-server API.
	HomeserverDomain string
	HomeserverURL    string
	DB               *dbutil.Database
	// Remover removes SFU participants of users who leave or are banned.
	Remover ParticipantRemover
	// Policies validates access policy changes; nil applies only the rules
	// that need no deployment knowledge (credentials.ValidateChange).
	Policies PolicyValidator
	// Audit, when set, records access policy changes (admin actions) in the
	// audit log.
	Audit Auditor
	// FocusURL is the livekit_service_url shown by "!conf status".
	FocusURL string
	// Bookings answers "!conf bookings"; nil: no catalogue.
	Bookings   BookingInfo
	Log        zerolog.Logger
	Registerer prometheus.Registerer
}

// Appservice is gxconf's Matrix application service.
type Appservice struct {
	cfg       Config
	reg       *mxas.Registration
	mx        *mxas.AppService
	state     *sqlstatestore.SQLStateStore
	store     *store
	remover   ParticipantRemover
	validator PolicyValidator
	audit     Auditor
	bookings  BookingInfo
	focus     string
	botID     id.UserID
	log       zerolog.Logger
	metrics   *metrics
	jobs      chan job
	now       func() time.Time
	// commands are the verbs other packages answer (AddCommand).
	commands map[string]CommandHandler

	dmMu sync.Mutex

	// memberChanged is closed and replaced at every membership change.
	memberMu      sync.Mutex
	memberChanged chan struct{}

	// txnBusy holds the transactions being processed, each with a channel
	// closed when it is done (handleTransaction).
	txnMu   sync.Mutex
	txnBusy map[string]chan struct{}

	// unauthLogs bounds the log lines of requests refused for their
	// hs_token (each is still counted): anyone reaching the listener can
	// send them.
	unauthLogs *zerolog.BurstSampler
}

// unauthLogBurst is how many requests refused for their hs_token are
// logged a minute.
const unauthLogBurst = 20

// job is a side effect of a transaction, run in order by the worker.
type job struct {
	name string
	run  func(ctx context.Context) error
}

const jobQueueSize = 1024

// effects are the side effects of one transaction's events. They are queued
// only once the transaction is recorded as processed: a transaction answered
// 500 is retried by the homeserver with the same events, which must not
// answer a bot command or greet a room once per delivery.
type effects []job

func (fx *effects) add(j job) { *fx = append(*fx, j) }

// New builds the appservice and upgrades its tables (its own and mautrix's
// state store).
func New(ctx context.Context, opts Options) (*Appservice, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.Registration == nil || opts.DB == nil || opts.Remover == nil {
		return nil, errors.New("appservice: Registration, DB and Remover are required")
	}
	if err := CheckRegistration(opts.Registration, opts.Config); err != nil {
		return nil, fmt.Errorf("registration: %w", err)
	}
	log := opts.Log.With().Str("component", "appservice").Logger()
	st, err := newStore(ctx, opts.DB)
	if err != nil {
		return nil, err
	}
	state := sqlstatestore.NewSQLStateStore(opts.DB, dbutil.ZeroLogger(log), false)
	if err := state.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade Matrix state store: %w", err)
	}
	mx, err := mxas.CreateFull(mxas.CreateOpts{
		Registration:     opts.Registration,
		HomeserverDomain: opts.HomeserverDomain,
		HomeserverURL:    opts.HomeserverURL,
		StateStore:       state,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to set up Matrix client: %w", err)
	}
	mx.Log = log
	mx.HTTPClient.Timeout = 30 * time.Second
	validator := opts.Policies
	if validator == nil {
		validator = plainValidator{}
	}
	a := &Appservice{
		validator: validator,
		audit:     opts.Audit,
		cfg:       opts.Config,
		reg:       opts.Registration,
		mx:        mx,
		state:     state,
		store:     st,
		remover:   opts.Remover,
		bookings:  opts.Bookings,
		focus:     opts.FocusURL,
		botID:     id.NewUserID(opts.Registration.SenderLocalpart, opts.HomeserverDomain),
		log:       log,
		metrics:   newMetrics(opts.Registerer),
		jobs:      make(chan job, jobQueueSize),
		now:       time.Now,

		memberChanged: make(chan struct{}),
		txnBusy:       map[string]chan struct{}{},
		unauthLogs:    &zerolog.BurstSampler{Burst: unauthLogBurst, Period: time.Minute},
	}
	return a, nil
}

// BotID is the bot's Matrix user ID.
func (a *Appservice) BotID() id.UserID { return a.botID }

// Bot is the Matrix client acting as the bot (for other packages' wiring, such
// as sending a user the credential request).
func (a *Appservice) Bot() *mautrix.Client { return a.mx.BotClient() }

// Handler serves the appservice API the homeserver calls.
func (a *Appservice) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, prefix := range []string{"/_matrix/app/v1", "/_matrix/app/unstable", ""} {
		mux.HandleFunc("PUT "+prefix+"/transactions/{txnID}", a.handleTransaction)
		mux.HandleFunc("GET "+prefix+"/users/{userID}", a.handleUserQuery)
		mux.HandleFunc("GET "+prefix+"/rooms/{roomAlias}", a.handleAliasQuery)
	}
	mux.HandleFunc("POST /_matrix/app/v1/ping", a.handlePing)
	mux.HandleFunc("GET /_matrix/mau/live", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, struct{}{}) })
	return unrecognized(mux)
}

// unrecognized answers what mux has no route for as the Application Service
// API requires: 404, or 405 for a known path with another method, each with
// {"errcode":"M_UNRECOGNIZED"} instead of net/http's plain text.
func unrecognized(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// Let the mux's own fallback decide between 404, 405 and a redirect
		// to the canonical path, then answer in JSON.
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusNotFound:
			writeMatrixError(w, http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request")
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", rec.header.Get("Allow"))
			writeMatrixError(w, http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Unrecognized request")
		default:
			mux.ServeHTTP(w, r)
		}
	})
}

// statusRecorder keeps the status and headers a fallback handler writes.
type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return len(b), nil
}
func (r *statusRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

// authorized checks the homeserver's hs_token in constant time. Homeservers
// send it as "Authorization: Bearer" (Application Service API v1.4+,
// MSC2832), older ones as ?access_token=, and Synapse with legacy
// authorization both. The scheme is case-insensitive (RFC 9110 §11.1); an
// empty bearer value counts as absent (old Conduit sent "Bearer " next to the
// query token). When several tokens are given, every one must match:
// "Application services should ensure both match if both are provided"
// (https://spec.matrix.org/v1.14/application-service-api/#authorization).
func (a *Appservice) authorized(w http.ResponseWriter, r *http.Request) bool {
	var tokens []string
	for _, h := range r.Header.Values("Authorization") {
		if token, ok := bearerToken(h); ok {
			tokens = append(tokens, token)
		}
	}
	for _, token := range r.URL.Query()["access_token"] {
		if token != "" {
			tokens = append(tokens, token)
		}
	}
	if len(tokens) == 0 {
		a.refuseUnauthorized(r, "missing")
		writeMatrixError(w, http.StatusUnauthorized, "M_MISSING_TOKEN", "Missing access token")
		return false
	}
	match := 1
	for _, token := range tokens {
		match &= subtle.ConstantTimeCompare([]byte(token), []byte(a.reg.ServerToken))
	}
	if match != 1 {
		a.refuseUnauthorized(r, "invalid")
		writeMatrixError(w, http.StatusForbidden, "M_FORBIDDEN", "Invalid access token")
		return false
	}
	return true
}

// refuseUnauthorized counts and logs a request refused for its hs_token
// (missing or invalid; the token itself is never logged; at most
// unauthLogBurst lines a minute): a homeserver with an outdated
// registration, or someone else probing the listener.
func (a *Appservice) refuseUnauthorized(r *http.Request, why string) {
	a.metrics.unauthorized.WithLabelValues(why).Inc()
	log := a.log.Sample(a.unauthLogs)
	log.Warn().Str("reason", why).Str("method", r.Method).Str("path", r.URL.Path).Str("remote", r.RemoteAddr).
		Msg("Refused a request without a valid hs_token")
}

// bearerToken returns the token of an Authorization header value with the
// Bearer scheme, in any case; ok is false for another scheme or no token.
func bearerToken(h string) (token string, ok bool) {
	scheme, token, found := strings.Cut(strings.TrimSpace(h), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func (a *Appservice) handleTransaction(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(w, r) {
		a.metrics.transactions.WithLabelValues("unauthorized").Inc()
		return
	}
	ctx := r.Context()
	txnID := txnKey(r.PathValue("txnID"))
	log := a.log.With().Str("txn_id", txnID).Logger()
	// A homeserver that gave up waiting sends the transaction again while
	// the first delivery may still be processed: the second waits for the
	// first and then finds it done, so no command runs twice.
	done, ok := a.claimTxn(ctx, txnID)
	if !ok {
		writeMatrixError(w, http.StatusServiceUnavailable, "M_UNKNOWN", "Transaction is being processed")
		return
	}
	defer done()
	seen, err := a.store.seenTxn(ctx, txnID)
	if err != nil {
		log.Error().Err(err).Msg("Failed to check transaction")
		writeMatrixError(w, http.StatusInternalServerError, "M_UNKNOWN", "Database error")
		return
	}
	if seen {
		a.metrics.transactions.WithLabelValues("duplicate").Inc()
		log.Debug().Msg("Ignoring duplicate transaction")
		writeJSON(w, http.StatusOK, struct{}{})
		return
	}
	if h := testHookTxnNew; h != nil {
		h(txnID)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxTransactionBytes))
	if tooLarge, ok := errors.AsType[*http.MaxBytesError](err); ok {
		a.metrics.transactions.WithLabelValues("too_large").Inc()
		log.Warn().Int64("limit", tooLarge.Limit).Msg("Refused a transaction larger than appservice.max_transaction_bytes")
		writeMatrixError(w, http.StatusRequestEntityTooLarge, "M_TOO_LARGE",
			fmt.Sprintf("Transaction larger than %d bytes (appservice.max_transaction_bytes)", tooLarge.Limit))
		return
	}
	if err != nil {
		// The body broke off (the homeserver gave up, a timeout): not a
		// transaction too large; the homeserver sends it again.
		a.metrics.transactions.WithLabelValues("read_error").Inc()
		log.Warn().Err(err).Msg("Failed to read a transaction")
		writeMatrixError(w, http.StatusBadRequest, "M_UNKNOWN", "Failed to read the transaction body")
		return
	}
	txn, err := DecodeTransaction(body)
	if err != nil {
		a.metrics.transactions.WithLabelValues("bad_json").Inc()
		log.Warn().Err(err).Msg("Refused malformed transaction")
		writeMatrixError(w, http.StatusBadRequest, "M_NOT_JSON", "Malformed transaction: "+clip.Text(err.Error(), maxTxnErrorText))
		return
	}
	ctx = log.WithContext(context.WithoutCancel(ctx))
	var fx effects
	for _, evt := range txn.Events {
		if err := a.processEvent(ctx, evt, &fx); err != nil {
			evtLog := log.With().Str("room_id", evt.RoomID.String()).Str("event_id", evt.ID.String()).Logger()
			if a.ignoreUnstorable(evtLog, evt, err) {
				continue
			}
			// An unavailable store must not be acknowledged: the
			// homeserver retries.
			a.metrics.transactions.WithLabelValues("error").Inc()
			log.Error().Err(err).Str("event_id", evt.ID.String()).Msg("Failed to process event")
			writeMatrixError(w, http.StatusInternalServerError, "M_UNKNOWN", "Failed to process transaction")
			return
		}
	}
	if err := a.store.markTxn(ctx, txnID, a.now()); err != nil {
		log.Error().Err(err).Msg("Failed to record transaction")
		writeMatrixError(w, http.StatusInternalServerError, "M_UNKNOWN", "Database error")
		return
	}
	for _, j := range fx {
		a.enqueue(ctx, j)
	}
	a.metrics.transactions.WithLabelValues("ok").Inc()
	log.Debug().Int("events", len(txn.Events)).Msg("Processed transaction")
	writeJSON(w, http.StatusOK, struct{}{})
}

// txnKey is the key a transaction ID is recorded under: the ID itself, or,
// for one a database column cannot hold (a NUL, invalid UTF-8: a 500 on
// PostgreSQL for every delivery) or longer than maxTxnIDBytes, a digest of
// it. The spec leaves the ID's form to the homeserver; only one holding the
// hs_token can send it.
func txnKey(txnID string) string {
	if len(txnID) <= maxTxnIDBytes && utf8.ValidString(txnID) && !strings.ContainsRune(txnID, 0) {
		return txnID
	}
	sum := sha256.Sum256([]byte(txnID))
	return "sha256:" + hex.EncodeToString(sum[:])
}

const maxTxnIDBytes = 255

// maxTxnErrorText bounds the decoding error quoted in a malformed
// transaction's refusal.
const maxTxnErrorText = 200

// claimTxn waits until no other request processes txnID and claims it;
// done releases it. ok is false when ctx ended first.
func (a *Appservice) claimTxn(ctx context.Context, txnID string) (done func(), ok bool) {
	for {
		a.txnMu.Lock()
		busy, taken := a.txnBusy[txnID]
		if !taken {
			ch := make(chan struct{})
			a.txnBusy[txnID] = ch
			a.txnMu.Unlock()
			return func() {
				a.txnMu.Lock()
				delete(a.txnBusy, txnID)
				a.txnMu.Unlock()
				close(ch)
			}, true
		}
		a.txnMu.Unlock()
		if h := testHookTxnWaiting; h != nil {
			h(txnID)
		}
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, false
		}
	}
}

// Test hooks: testHookTxnNew runs once a request found its transaction not
// yet processed; testHookTxnWaiting when a request waits for another.
var testHookTxnNew, testHookTxnWaiting func(txnID string)

// handleUserQuery says the bot exists (registering it if needed); other users
// in the namespace do not.
func (a *Appservice) handleUserQuery(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(w, r) {
		return
	}
	if id.UserID(r.PathValue("userID")) == a.botID {
		if err := a.mx.BotIntent().EnsureRegistered(r.Context()); err != nil {
			a.log.Warn().Err(err).Msg("Failed to register bot on user query")
		}
		writeJSON(w, http.StatusOK, struct{}{})
		return
	}
	writeMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "No such user")
}

// handleAliasQuery: gxconf owns no aliases.
func (a *Appservice) handleAliasQuery(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(w, r) {
		return
	}
	writeMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "No such room alias")
}

func (a *Appservice) handlePing(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// Run serves the appservice API on the configured address and runs the worker
// until ctx ends.
func (a *Appservice) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", a.cfg.Listen, err)
	}
	return a.Serve(ctx, ln)
}

// Serve is Run on an existing listener.
func (a *Appservice) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	a.log.Info().Str("address", ln.Addr().String()).Str("bot", a.botID.String()).Msg("Appservice listening")
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		a.work(ctx)
	}()
	a.enqueue(ctx, job{name: "bot_setup", run: a.setupBot})
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			<-workerDone
			return fmt.Errorf("appservice server failed: %w", err)
		case now := <-tick.C:
			if err := a.store.purgeTxns(ctx, now.Add(-7*24*time.Hour)); err != nil {
				a.log.Warn().Err(err).Msg("Failed to purge old transaction IDs")
			}
		case <-ctx.Done():
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := srv.Shutdown(shutdownCtx)
			<-errc
			<-workerDone
			if err != nil {
				return fmt.Errorf("appservice shutdown: %w", err)
			}
			return nil
		}
	}
}

// enqueue hands a side effect to the worker; it waits when the queue is full
// (back pressure to the homeserver) unless ctx ends.
func (a *Appservice) enqueue(ctx context.Context, j job) {
	select {
	case a.jobs <- j:
	case <-ctx.Done():
	}
}

// work runs jobs in order until ctx ends. A failed job is logged, not retried:
// the next event about the same room will try again.
func (a *Appservice) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-a.jobs:
			jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := j.run(a.log.WithContext(jctx))
			cancel()
			result := "ok"
			if err != nil {
				result = "error"
				a.log.Warn().Err(err).Str("job", j.name).Msg("Appservice job failed")
			}
			a.metrics.jobs.WithLabelValues(j.name, result).Inc()
		}
	}
}

// setupBot registers the bot (homeservers usually create it from the
// registration already) and sets its display name. The homeserver may still
// be starting, so it retries a few times.
func (a *Appservice) setupBot(ctx context.Context) error {
	intent := a.mx.BotIntent()
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		if err = intent.EnsureRegistered(ctx); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 500 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("failed to register bot: %w", err)
	}
	if a.cfg.Bot.Displayname != "" {
		if err := intent.SetDisplayName(ctx, a.cfg.Bot.Displayname); err != nil {
			return fmt.Errorf("failed to set bot display name: %w", err)
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeMatrixError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"errcode": code, "error": msg})
}
