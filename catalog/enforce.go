package catalog

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/credentials"
)

// AdmitRequest is a token request the room's access policy allowed.
type AdmitRequest struct {
	RoomID      string
	UserID      string
	ServerName  string
	LiveKitRoom string
	Identity    string
	// Level is the room's confidentiality level.
	Level credentials.Level
}

// Admission is the booking's answer; a non-empty Refused refuses.
type Admission struct {
	Refused         string
	Booking         string
	MaxParticipants uint32
	Sites           []cluster.SiteID
	NotAfter        time.Time
}

func refuse(m *metrics, kind, reason string) (Admission, error) {
	m.admissions.WithLabelValues(kind).Inc()
	return Admission{Refused: reason}, nil
}

// Admit enforces the room's booking (meetings-and-catalogue §5.6): active
// and unrevoked, level ≤ booked level, participants over the whole meeting
// (every bound room with the same meeting key, all nodes, federated users
// included) below the tier, open sessions ≤ max concurrent (a new session
// also takes one of a sessions quota), and the booked sites.
func (c *Catalog) Admit(ctx context.Context, req AdmitRequest) (Admission, error) {
	bd, ok, err := c.st.binding(ctx, req.RoomID)
	if err != nil {
		return Admission{}, err
	}
	if ok && bd.ConfirmedBy == "" {
		// Bound by an organisation's admin but not accepted by the room.
		if c.cfg.RequireBooking {
			return refuse(c.metrics, "unconfirmed", fmt.Sprintf("This room's binding to the booking %s awaits a room admin's acceptance: send \"!conf bookings accept %s\" in the room.", bd.Booking, bd.Booking))
		}
		return Admission{}, nil
	}
	if !ok {
		if c.cfg.RequireBooking {
			return refuse(c.metrics, "unbound", "This room is not bound to a service booking, so calls cannot start here; an organisation admin must book a tier and bind the room.")
		}
		return Admission{}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var adm Admission
	// Under the booking's lock: the participants admitted, the sessions
	// open and the quota used are in the database, so two replicas
	// admitting to one booking see each other's admissions.
	_, err = c.withFresh(ctx, bd.Booking, func(ctx context.Context, b *Booking) error {
		var err error
		adm, err = c.admitLocked(ctx, req, bd, b)
		return err
	}, "booking:"+bd.Booking)
	if err != nil {
		return Admission{}, err
	}
	return adm, nil
}

// admitLocked is Admit in the transaction holding b's lock.
func (c *Catalog) admitLocked(ctx context.Context, req AdmitRequest, bd Binding, b *Booking) (Admission, error) {
	now := c.now()
	if ok, why := b.activeAt(now, c.cfg.Grace); !ok {
		return refuse(c.metrics, "inactive", why)
	}
	name := fmt.Sprintf("The booking %s (%s, up to %d participants)", b.ID, levelLabel(b.Snapshot.Level), b.Snapshot.MaxParticipants)
	if req.Level.Rank() > b.Snapshot.Level.Rank() {
		return refuse(c.metrics, "level", fmt.Sprintf("This room is classified %s, but the%s covers %s rooms only.",
			levelLabel(req.Level), strings.TrimPrefix(name, "The"), levelLabel(b.Snapshot.Level)))
	}
	if c.localSite != "" && !slices.Contains(b.Sites, c.localSite) {
		return refuse(c.metrics, "site", fmt.Sprintf("%s is for the sites %s only; this deployment runs at %s.",
			name, strings.Join(b.Sites, ", "), c.localSite))
	}

	// Participants over the meeting: this LiveKit room and every other one
	// with a session of the meeting, whichever replica opened it.
	open, err := c.st.sessionsOf(ctx, b.ID)
	if err != nil {
		return Admission{}, err
	}
	var s *sessionRow
	rooms := []string{req.LiveKitRoom}
	for i, o := range open {
		switch {
		case o.LKRoom == req.LiveKitRoom:
			s = &open[i]
		case o.Meeting == bd.Meeting:
			rooms = append(rooms, o.LKRoom)
		}
	}
	present := map[string]struct{}{}
	for _, lk := range rooms {
		ids, err := c.participants(ctx, lk, now)
		if err != nil {
			return Admission{}, fmt.Errorf("failed to count participants: %w", err)
		}
		for _, id := range ids {
			present[lk+"\x00"+id] = struct{}{}
		}
	}
	delete(present, req.LiveKitRoom+"\x00"+req.Identity) // a rejoin replaces its old session
	if len(present)+1 > b.Snapshot.MaxParticipants {
		return refuse(c.metrics, "participants", fmt.Sprintf("%s allows at most %d participants in this meeting; %d are already in the call.",
			name, b.Snapshot.MaxParticipants, len(present)))
	}

	// Sessions: joining a room without an open session opens one. A room
	// with participants but no session (admitted by a node without the
	// catalogue's tables, or before the session closed) is a session
	// already open: joining it opens none.
	changed := false
	running := false
	for k := range present {
		if strings.HasPrefix(k, req.LiveKitRoom+"\x00") {
			running = true
			break
		}
	}
	if s == nil && !running {
		if len(open) >= b.MaxConcurrent {
			return refuse(c.metrics, "sessions", fmt.Sprintf("%s allows %d concurrent session(s); %d are running now.", name, b.MaxConcurrent, len(open)))
		}
		if b.Unit == UnitSessions && b.Usage.Sessions >= b.SessionsQuota {
			return refuse(c.metrics, "quota", fmt.Sprintf("%s has used all of its %d sessions.", name, b.SessionsQuota))
		}
		b.Usage.Sessions++
		b.Usage.PeakSessions = max(b.Usage.PeakSessions, len(open)+1)
		changed = true
	}
	if s == nil {
		s = &sessionRow{LKRoom: req.LiveKitRoom, Booking: b.ID, Meeting: bd.Meeting, OpenedAt: now, SampledAt: now}
	}
	s.LastSeen = now
	if err := c.st.putSession(ctx, *s); err != nil {
		return Admission{}, err
	}
	if err := c.st.putPending(ctx, req.LiveKitRoom, req.Identity, now); err != nil {
		return Admission{}, err
	}
	if n := len(present) + 1; n > b.Usage.PeakParticipants {
		b.Usage.PeakParticipants = n
		changed = true
	}
	if changed {
		if err := c.st.update(ctx, b); err != nil {
			return Admission{}, err
		}
	}
	sites := make([]cluster.SiteID, len(b.Sites))
	for i, st := range b.Sites {
		sites[i] = cluster.SiteID(st)
	}
	c.metrics.admissions.WithLabelValues("admitted").Inc()
	return Admission{
		Booking: b.ID, MaxParticipants: uint32(b.Snapshot.MaxParticipants), Sites: sites,
		NotAfter: b.ValidUntil.Add(c.cfg.Grace),
	}, nil
}

// participants are the identities in a LiveKit room: connected on any node,
// or admitted (by any replica) within the pending window and not connected
// yet. The caller is in a transaction.
func (c *Catalog) participants(ctx context.Context, lkRoom string, now time.Time) ([]string, error) {
	var ids []string
	seen := map[string]bool{}
	if c.dir != nil {
		entries, err := c.dir.Participants(ctx, cluster.RoomName(lkRoom))
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if !seen[string(e.Identity)] {
				seen[string(e.Identity)] = true
				ids = append(ids, string(e.Identity))
			}
		}
	}
	pending, err := c.st.pending(ctx, lkRoom)
	if err != nil {
		return nil, err
	}
	for id, at := range pending {
		switch {
		case seen[id], now.Sub(at) >= c.cfg.PendingWindow:
			// Connected (the directory counts them now), or never connected.
			if err := c.st.deletePending(ctx, lkRoom, id); err != nil {
				return nil, err
			}
		default:
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Run samples usage every UsageInterval (participant-minutes, peaks),
// closes idle sessions and expires ended bookings, until ctx ends. Every
// replica runs it; each session's usage is accounted from the time the
// last sample of any replica reached (sampled_at), so none is counted twice.
func (c *Catalog) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.UsageInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c.sample(ctx, c.now())
		}
	}
}

// sample accounts the usage of every open session up to now.
func (c *Catalog) sample(ctx context.Context, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.st.prunePending(ctx, now.Add(-c.cfg.PendingWindow)); err != nil {
		c.log.Warn().Err(err).Msg("Failed to forget admitted participants who never connected")
	}
	ids, err := c.st.sessionBookings(ctx)
	if err != nil {
		c.log.Warn().Err(err).Msg("Failed to list booked sessions")
	}
	for _, id := range ids {
		var b *Booking
		var expiredNow bool
		err := c.st.locked(ctx, func(ctx context.Context) error {
			var err error
			if b, err = c.st.get(ctx, id); err != nil {
				return err
			}
			if err := c.sampleLocked(ctx, b, now); err != nil {
				return err
			}
			if expiredNow, err = c.markExpired(ctx, b); err != nil || expiredNow {
				return err
			}
			return c.st.update(ctx, b)
		}, "booking:"+id)
		if err != nil {
			c.log.Warn().Err(err).Str("booking", id).Msg("Failed to record a booking's usage")
			continue
		}
		if expiredNow {
			c.auditExpiry(ctx, b)
		}
	}
	if open, err := c.st.sessionsWhere(ctx, ""); err == nil {
		c.metrics.sessions.Set(float64(len(open)))
	}
	bs, err := c.st.list(ctx, "")
	if err != nil {
		c.log.Warn().Err(err).Msg("Failed to list bookings for expiry")
		return
	}
	for _, b := range bs {
		c.refresh(ctx, b)
	}
}

// sampleLocked accounts b's sessions up to now and closes the idle ones;
// the caller holds b's lock and writes b.
func (c *Catalog) sampleLocked(ctx context.Context, b *Booking, now time.Time) error {
	open, err := c.st.sessionsOf(ctx, b.ID)
	if err != nil {
		return err
	}
	sessions := 0
	meeting := map[string]int{}
	for _, s := range open {
		ids, err := c.participants(ctx, s.LKRoom, now)
		if err != nil {
			c.log.Warn().Err(err).Str("lk_room", s.LKRoom).Msg("Failed to count a booked session's participants")
			continue
		}
		if len(ids) > 0 {
			s.LastSeen = now
		} else if now.Sub(s.LastSeen) >= c.cfg.SessionIdle {
			if err := c.st.closeSession(ctx, s.LKRoom); err != nil {
				return err
			}
			continue
		}
		if now.After(s.SampledAt) {
			// Another replica's sample may have accounted up to a later
			// time already (clocks differ); then this one adds nothing.
			b.Usage.ParticipantMinutes += float64(len(ids)) * now.Sub(s.SampledAt).Minutes()
			s.SampledAt = now
		}
		if err := c.st.putSession(ctx, s); err != nil {
			return err
		}
		sessions++
		meeting[s.Meeting] += len(ids)
	}
	b.Usage.PeakSessions = max(b.Usage.PeakSessions, sessions)
	for _, n := range meeting {
		b.Usage.PeakParticipants = max(b.Usage.PeakParticipants, n)
	}
	return nil
}
