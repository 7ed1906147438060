package focus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twitchtv/twirp"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/credentials"
)

// Options are the dependencies of a Service.
type Options struct {
	Config Config
	// LocalDomain is the homeserver's server_name; its users may always publish.
	LocalDomain string
	DB          *dbutil.Database
	Rooms       RoomService
	Members     MembershipChecker
	// Access is the room access policy; nil admits every member.
	Access AccessDecider
	// Entitlements enforces service bookings after Access; nil: none.
	Entitlements Entitlements
	// Messenger tells rooms and users when participants are removed; optional.
	Messenger Messenger
	// Placer chooses the SFU node and URL per request (the cluster); nil
	// hands out Config.SFU.URL and creates every room on Rooms.
	Placer Placer
	// NodeID is this node's cluster ID: rooms placed here are created on
	// Rooms; a room placed on another node is created by that node at join.
	NodeID string
	// Peering routes users of peered deployments to their deployment's
	// relay of our rooms; nil: none.
	Peering *Peering
	// Audit, when set, records the token requests refused before the
	// access policy is asked (not a member of the room); the policy's own
	// decisions are audited by the credentials verifier.
	Audit      Auditor
	Log        zerolog.Logger
	Registerer prometheus.Registerer
}

// Service is the MatrixRTC focus.
type Service struct {
	cfg         Config
	localDomain string
	log         zerolog.Logger
	openid      *openIDVerifier
	rooms       RoomService
	members     MembershipChecker
	access      AccessDecider
	entitle     Entitlements
	msg         Messenger
	placer      Placer
	nodeID      string
	peering     *Peering
	audit       Auditor
	grants      *grantStore
	cs          *csAPI
	delegations *delegator
	ipLimit     *keyedLimiter
	userLimit   *keyedLimiter
	trusted     []*net.IPNet
	metrics     *metrics
	mux         *http.ServeMux
	now         func() time.Time
	// afterMembershipCheck, for tests, runs between the membership check
	// and the grant's activation.
	afterMembershipCheck func()
}

// New builds the focus and upgrades its tables.
func New(ctx context.Context, opts Options) (*Service, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.Config.SFU.URL == "" || opts.Config.SFU.APIKey == "" || opts.Config.SFU.APISecret == "" {
		return nil, errors.New("focus: sfu url, api_key and api_secret must be known")
	}
	if opts.DB == nil || opts.Rooms == nil || opts.Members == nil {
		return nil, errors.New("focus: DB, Rooms and Members are required")
	}
	grants, err := newGrantStore(ctx, opts.DB)
	if err != nil {
		return nil, err
	}
	access := opts.Access
	if access == nil {
		access = MembershipOnly{}
	}
	var trusted []*net.IPNet
	for _, p := range opts.Config.RateLimit.TrustedProxies {
		_, n, _ := net.ParseCIDR(p) // validated
		trusted = append(trusted, n)
	}
	openid := newOpenIDVerifier(opts.Config.OpenID)
	cs := newCSAPI(opts.Config.DelayedEvents, openid)
	m := newMetrics(opts.Registerer)
	s := &Service{
		cfg:         opts.Config,
		localDomain: opts.LocalDomain,
		log:         opts.Log,
		openid:      openid,
		cs:          cs,
		delegations: newDelegator(opts.Config.DelayedEvents, &delegationStore{db: grants.db, node: opts.NodeID}, opts.Rooms, cs, m, opts.Log),
		rooms:       opts.Rooms,
		members:     opts.Members,
		access:      access,
		audit:       opts.Audit,
		entitle:     opts.Entitlements,
		msg:         opts.Messenger,
		placer:      opts.Placer,
		nodeID:      opts.NodeID,
		peering:     opts.Peering,
		grants:      grants,
		ipLimit:     newKeyedLimiter(opts.Config.RateLimit.PerIP),
		userLimit:   newKeyedLimiter(opts.Config.RateLimit.PerUser),
		trusted:     trusted,
		metrics:     m,
		now:         time.Now,
	}
	if opts.Config.OpenID.DangerouslySkipTLSVerify {
		s.log.Warn().Msg("TLS certificates of homeservers are NOT verified (focus.openid.dangerously_skip_tls_verify); never run this in production")
	}
	s.mux = s.routes()
	return s, nil
}

// tokenInput is what both token endpoints have in common once decoded.
type tokenInput struct {
	roomID        string
	slotID        string
	openID        OpenIDToken
	claimedUserID string // empty for /sfu/get
	deviceID      string
	memberID      string // empty for /sfu/get: legacy identity
	// delayID and delayTimeout hand over the user's delayed leave event
	// (MSC4140); empty when the client does not delegate.
	delayID      string
	delayTimeout time.Duration
}

// processToken turns a validated request into a LiveKit token, or an error
// that toError renders.
func (s *Service) processToken(ctx context.Context, in tokenInput) (*TokenResponse, error) {
	log := zerolog.Ctx(ctx)
	user, err := s.verifyOpenID(ctx, in.openID)
	if err != nil {
		return nil, err
	}
	if in.claimedUserID != "" && in.claimedUserID != user.String() {
		return nil, fmt.Errorf("%w: claimed_user_id %s does not match the token's user", ErrUnauthorized, in.claimedUserID)
	}
	log.UpdateContext(func(c zerolog.Context) zerolog.Context {
		return c.Str("user_id", user.String()).Str("room_id", in.roomID)
	})
	if ok, wait := s.userLimit.allow(user.String(), s.now()); !ok {
		return nil, &Error{Status: http.StatusTooManyRequests, Code: codeLimit, Message: "Too many requests", RetryAfter: wait}
	}
	if in.delayID != "" {
		// As lk-jwt-service: only full-access users may delegate, and the
		// Client-Server API must be known before anything is created.
		if !s.isFullAccess(in.openID.MatrixServerName) {
			return nil, badJSON(msgDelegationRestricted)
		}
		if _, err := s.cs.resolve(ctx, in.openID.MatrixServerName); err != nil {
			return nil, &Error{Status: http.StatusBadRequest, Code: codeBadJSON, Message: msgUnresolvedCSAPI, Err: err}
		}
	}

	lkRoom := LiveKitRoomAlias(in.roomID, in.slotID)
	identity := LegacyLiveKitIdentity(user.String(), in.deviceID)
	if in.memberID != "" {
		identity = LiveKitIdentity(user.String(), in.deviceID, in.memberID)
	}
	log.UpdateContext(func(c zerolog.Context) zerolog.Context {
		return c.Str("lk_room", lkRoom).Str("lk_identity", identity)
	})
	// The grant is stored before the membership check, so a leave processed
	// at any time after the check revokes it; it is activated only if that
	// did not happen by the time the token is signed.
	tokenID, err := newTokenID()
	if err != nil {
		return nil, err
	}
	now := s.now()
	if err := s.grants.reserve(ctx, Grant{
		TokenID: tokenID, LiveKitRoom: lkRoom, Identity: identity, RoomID: in.roomID, UserID: user.String(),
		DeviceID: in.deviceID, IssuedAt: now, ExpiresAt: now.Add(s.cfg.TokenTTL),
	}); err != nil {
		// Without the grant the user could not be removed on leave: refuse.
		return nil, err
	}
	handedOut := false
	defer func() {
		if !handedOut {
			if err := s.grants.discard(context.WithoutCancel(ctx), tokenID); err != nil {
				log.Warn().Err(err).Msg("Failed to discard an unused grant")
			}
		}
	}()

	joined, err := s.members.IsJoined(ctx, in.roomID, user.String())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMembershipUnknown, err)
	}
	if !joined {
		if s.audit != nil {
			if err := s.audit.Audit(ctx, credentials.AuditEntry{Decision: "deny", UserID: user.String(), RoomID: in.roomID,
				Reason: "not a member of the room"}); err != nil {
				// An unaudited refusal still refuses.
				log.Error().Err(err).Msg("Failed to audit a refused token request")
			}
		}
		return nil, ErrNotMember
	}
	if s.afterMembershipCheck != nil {
		s.afterMembershipCheck()
	}
	decision, err := s.access.Decide(ctx, AccessRequest{
		RoomID: in.roomID, UserID: user.String(), DeviceID: in.deviceID,
		ServerName: in.openID.MatrixServerName, LiveKitRoom: lkRoom, Identity: identity,
		Participants: func(ctx context.Context) (int, error) { return s.countOthers(ctx, lkRoom, identity) },
	})
	if err != nil {
		return nil, err
	}
	var sites []cluster.SiteID
	if s.entitle != nil {
		ent, err := s.entitle.Admit(ctx, EntitlementRequest{
			RoomID: in.roomID, UserID: user.String(), ServerName: in.openID.MatrixServerName,
			LiveKitRoom: lkRoom, Identity: identity, Level: decision.Level,
		})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrEntitlementUnknown, err)
		}
		if ent.Refused != "" {
			return nil, &DeniedError{Reason: ent.Refused}
		}
		decision = applyEntitlement(decision, ent)
		sites = ent.Sites
	}
	canPublish := s.isFullAccess(in.openID.MatrixServerName) && !decision.DenyPublish

	// A user of a peered deployment that may relay this room subscribes on
	// that deployment's relay; everyone else on our SFU.
	// A booking restricted to sites keeps the room on them: no peered relay.
	var peer *PeerRoute
	if len(sites) == 0 {
		peer = s.peerRoute(in.openID.MatrixServerName, decision.Level, canPublish)
	}
	var url string
	local := false
	if peer != nil {
		url = peer.URL
	} else if url, local, err = s.place(ctx, lkRoom, in.openID.MatrixServerName, sites); err != nil {
		return nil, err
	}
	if local {
		_, err = s.rooms.CreateRoom(ctx, &livekit.CreateRoomRequest{
			Name:             lkRoom,
			EmptyTimeout:     uint32(s.cfg.Room.EmptyTimeout / time.Second),
			DepartureTimeout: uint32(s.cfg.Room.DepartureTimeout / time.Second),
			MaxParticipants:  decision.MaxParticipants,
		})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRoomCreate, err)
		}
	}

	ttl := s.cfg.TokenTTL
	if !decision.NotAfter.IsZero() {
		if capped := decision.NotAfter.Sub(now); capped < ttl {
			ttl = capped
		}
		if ttl <= 0 {
			return nil, &DeniedError{Reason: "Your credential has expired; verify it again."}
		}
	}
	var jwt, peerName string
	if peer != nil {
		peerName = peer.Name
		jwt, err = mintPeer(peer, tokenID, lkRoom, identity, ttl, decision.NotAfter)
	} else {
		jwt, err = s.mint(tokenID, lkRoom, identity, canPublish, ttl, decision.NotAfter)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to sign token: %w", err)
	}
	if in.delayID != "" {
		if err := s.delegations.add(ctx, &delegation{
			LiveKitRoom: lkRoom, Identity: identity, DelayID: in.delayID, Timeout: in.delayTimeout,
			ServerName: in.openID.MatrixServerName, RoomID: in.roomID, UserID: user.String(),
			CreatedAt: now, RestartedAt: now,
		}); err != nil {
			return nil, delegationRefusedOnTokenEndpoint(err)
		}
	}
	if err := s.grants.activate(ctx, tokenID, now.Add(ttl), decision.NotAfter, s.now(), peerName); err != nil {
		if errors.Is(err, ErrGrantRevoked) {
			// Removed meanwhile: the leave must go too.
			s.delegations.sendNow(context.WithoutCancel(ctx), in.roomID, user.String())
			return nil, fmt.Errorf("%w: removed while the token was being issued", ErrNotMember)
		}
		return nil, err
	}
	handedOut = true
	s.metrics.tokens.WithLabelValues(fmt.Sprint(canPublish)).Inc()
	log.Info().Bool("can_publish", canPublish).Dur("ttl", ttl).Bool("delayed_leave", in.delayID != "").Str("peer", peerName).Msg("Issued LiveKit token")
	return &TokenResponse{URL: url, JWT: jwt}, nil
}

// applyEntitlement tightens the access decision by the booking's terms.
func applyEntitlement(d AccessDecision, e Entitlement) AccessDecision {
	if e.MaxParticipants > 0 && (d.MaxParticipants == 0 || e.MaxParticipants < d.MaxParticipants) {
		d.MaxParticipants = e.MaxParticipants
	}
	if !e.NotAfter.IsZero() && (d.NotAfter.IsZero() || e.NotAfter.Before(d.NotAfter)) {
		d.NotAfter = e.NotAfter
	}
	return d
}

func (s *Service) verifyOpenID(ctx context.Context, tok OpenIDToken) (id.UserID, error) {
	start := time.Now()
	user, cached, err := s.openid.Verify(ctx, tok)
	switch {
	case cached:
		s.metrics.openIDCached.Inc()
	case err != nil:
		s.metrics.openIDLatency.WithLabelValues("error").Observe(time.Since(start).Seconds())
	default:
		s.metrics.openIDLatency.WithLabelValues("ok").Observe(time.Since(start).Seconds())
	}
	return user, err
}

// isFullAccess: the local homeserver, a configured one, or everyone with "*".
func (s *Service) isFullAccess(server string) bool {
	if server == s.localDomain {
		return true
	}
	list := s.cfg.FullAccessHomeservers
	if len(list) == 1 && list[0] == "*" {
		return true
	}
	return slices.Contains(list, server)
}

// mint signs a LiveKit access token with the grants lk-jwt-service gives and
// the grant's ID as JWT ID.
func (s *Service) mint(tokenID, lkRoom, identity string, canPublish bool, ttl time.Duration, notAfter time.Time) (string, error) {
	yes := true
	// canPublishData is explicit: LiveKit versions disagree on what a missing
	// one means. Subscribe-only (remote) users send no data either.
	grant := &auth.VideoGrant{
		RoomJoin:       true,
		Room:           lkRoom,
		CanPublish:     &canPublish,
		CanPublishData: &canPublish,
		CanSubscribe:   &yes,
	}
	if s.cfg.CanUpdateOwnMetadata {
		grant.CanUpdateOwnMetadata = &yes
	}
	return signAccessToken(s.cfg.SFU.APIKey, s.cfg.SFU.APISecret, tokenID, identity, grant, ttl, notAfter)
}

// countOthers counts the participants of a LiveKit room other than identity
// (a rejoining client replaces its old session). A missing room has none.
func (s *Service) countOthers(ctx context.Context, lkRoom, identity string) (int, error) {
	resp, err := s.rooms.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: lkRoom})
	var terr twirp.Error
	if errors.As(err, &terr) && terr.Code() == twirp.NotFound {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range resp.Participants {
		if p.Identity != identity {
			n++
		}
	}
	return n, nil
}

// RecheckUser decides again, for every room the user holds tokens for,
// whether they may still be there (e.g. after their credential was revoked or
// expired) and removes their participants where they may not; the room and
// the user are told why. It returns the rooms they were removed from.
func (s *Service) RecheckUser(ctx context.Context, userID, why string) ([]string, error) {
	rooms, err := s.grants.roomsForUser(ctx, userID)
	if err != nil {
		return nil, err
	}
	var removedFrom []string
	var errs []error
	for _, g := range rooms {
		_, err := s.access.Decide(ctx, AccessRequest{
			RoomID: g.RoomID, UserID: userID, DeviceID: g.DeviceID, ServerName: serverOf(userID),
			LiveKitRoom: g.LiveKitRoom, Identity: g.Identity,
			Participants: func(ctx context.Context) (int, error) { return s.countOthers(ctx, g.LiveKitRoom, g.Identity) },
		})
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrAccessDenied) {
			errs = append(errs, err)
			continue
		}
		n, err := s.RemoveUser(ctx, g.RoomID, userID, why)
		if err != nil {
			errs = append(errs, err)
		}
		if n == 0 {
			continue
		}
		removedFrom = append(removedFrom, g.RoomID)
		if s.msg != nil {
			if err := s.msg.Notice(ctx, g.RoomID, fmt.Sprintf("%s was removed from the call: %s.", userID, why)); err != nil {
				errs = append(errs, err)
			}
			if err := s.msg.DirectMessage(ctx, userID, fmt.Sprintf("You were removed from the call in %s: %s.", g.RoomID, why), ""); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return removedFrom, errors.Join(errs...)
}

func serverOf(userID string) string {
	_, server, _ := id.UserID(userID).Parse()
	return server
}

// RemoveUser revokes every grant the user holds in the Matrix room, e.g.
// because they left or were banned, so none of the tokens issued for them
// admits them any more, connected or not; then it removes the participants of
// those grants from the SFU. It returns how many participants were removed;
// participants that are already gone count as done.
func (s *Service) RemoveUser(ctx context.Context, roomID, userID, reason string) (int, error) {
	grants, err := s.grants.revokeUser(ctx, roomID, userID, s.now())
	if err != nil {
		return 0, err
	}
	if len(grants) > 0 {
		s.log.Info().Str("room_id", roomID).Str("user_id", userID).Int("count", len(grants)).Str("reason", reason).
			Msg("Revoked the user's grants")
	}
	// Their call membership must go as well: have their delegated delayed
	// leave events sent now, before the removal from the SFU, rather than
	// when a delayed-leave job notices them gone (lk-jwt-service sends on
	// any departure from the SFU).
	if n := s.delegations.sendNow(ctx, roomID, userID); n > 0 {
		s.log.Info().Str("room_id", roomID).Str("user_id", userID).Int("count", n).Msg("Sending the removed user's delayed leave events")
	}
	removed := 0
	var errs []error
	seen := map[[2]string]bool{}
	for _, g := range grants {
		key := [2]string{g.LiveKitRoom, g.Identity}
		if seen[key] {
			continue
		}
		seen[key] = true
		_, err := s.rooms.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: g.LiveKitRoom, Identity: g.Identity})
		var terr twirp.Error
		switch {
		case err == nil:
			removed++
			s.metrics.removed.WithLabelValues("removed").Inc()
			s.log.Info().Str("room_id", roomID).Str("user_id", userID).Str("lk_room", g.LiveKitRoom).
				Str("lk_identity", g.Identity).Str("reason", reason).Msg("Removed participant from SFU")
		case errors.As(err, &terr) && terr.Code() == twirp.NotFound:
			s.metrics.removed.WithLabelValues("absent").Inc()
		default:
			s.metrics.removed.WithLabelValues("error").Inc()
			errs = append(errs, fmt.Errorf("failed to remove %s from %s: %w", g.Identity, g.LiveKitRoom, err))
		}
	}
	return removed, errors.Join(errs...)
}

// Handle mounts an extra handler (metrics, verifier pages) on the focus listener.
func (s *Service) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
}

// Handler is the focus HTTP API.
func (s *Service) Handler() http.Handler { return s.mux }

// Run serves the API on the configured address and purges old grants until
// ctx ends, then shuts the server down gracefully.
func (s *Service) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on an existing listener (tests use port 0).
func (s *Service) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	s.log.Info().Str("address", ln.Addr().String()).Str("livekit_service_url", s.cfg.ServiceURL()).Msg("Focus listening")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	// Delayed-leave jobs stop as soon as ctx ends, before an embedded SFU
	// that shuts down with the same ctx could make its participants look
	// gone: a shutdown sends nothing, the jobs resume at the next start.
	delegCtx, stopDelegations := context.WithCancel(ctx)
	delegDone := make(chan struct{})
	go func() {
		defer close(delegDone)
		s.delegations.Run(delegCtx)
	}()
	defer func() {
		stopDelegations()
		<-delegDone
	}()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("focus server failed: %w", err)
		case now := <-tick.C:
			s.ipLimit.sweep(now)
			s.userLimit.sweep(now)
			if n, err := s.grants.purge(ctx, now.Add(-s.cfg.GrantRetention)); err != nil {
				s.log.Warn().Err(err).Msg("Failed to purge old grants")
			} else if n > 0 {
				s.log.Debug().Int64("count", n).Msg("Purged old grants")
			}
		case <-ctx.Done():
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := srv.Shutdown(shutdownCtx)
			<-errc
			if err != nil {
				return fmt.Errorf("focus shutdown: %w", err)
			}
			return nil
		}
	}
}

// VerifyOpenID checks a Matrix OpenID token with the user's homeserver (the
// same check, cache and overrides as /get_token) and returns whose it is;
// other HTTP APIs (meetings) authenticate callers with it.
func (s *Service) VerifyOpenID(ctx context.Context, tok OpenIDToken) (string, error) {
	user, err := s.verifyOpenID(ctx, tok)
	return user.String(), err
}
