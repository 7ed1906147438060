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

// session is a booked LiveKit room in use: opened by the first admission,
// closed after SessionIdle without participants.
type session struct {
	booking  string
	meeting  string
	opened   time.Time
	lastSeen time.Time
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
	b, err := c.st.get(ctx, bd.Booking)
	if err != nil {
		return Admission{}, err
	}
	c.expireLocked(ctx, b)
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

	// Participants over the meeting: every LiveKit room of it seen so far.
	key := b.ID + "|" + bd.Meeting
	rooms := c.meetings[key]
	if rooms == nil {
		rooms = map[string]struct{}{}
		c.meetings[key] = rooms
	}
	rooms[req.LiveKitRoom] = struct{}{}
	present := map[string]struct{}{}
	for lk := range rooms {
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
	// with participants this node did not admit (another node's, or from
	// before a restart) is a session already open: joining it opens none.
	changed := false
	s := c.sessions[req.LiveKitRoom]
	running := false
	for k := range present {
		if strings.HasPrefix(k, req.LiveKitRoom+"\x00") {
			running = true
			break
		}
	}
	if (s == nil || s.booking != b.ID) && running {
		s = &session{booking: b.ID, meeting: bd.Meeting, opened: now}
		c.sessions[req.LiveKitRoom] = s
		c.metrics.sessions.Inc()
	}
	if s == nil || s.booking != b.ID {
		open := 0
		for _, o := range c.sessions {
			if o.booking == b.ID {
				open++
			}
		}
		if open >= b.MaxConcurrent {
			return refuse(c.metrics, "sessions", fmt.Sprintf("%s allows %d concurrent session(s); %d are running now.", name, b.MaxConcurrent, open))
		}
		if b.Unit == UnitSessions && b.Usage.Sessions >= b.SessionsQuota {
			return refuse(c.metrics, "quota", fmt.Sprintf("%s has used all of its %d sessions.", name, b.SessionsQuota))
		}
		s = &session{booking: b.ID, meeting: bd.Meeting, opened: now}
		c.sessions[req.LiveKitRoom] = s
		c.metrics.sessions.Inc()
		b.Usage.Sessions++
		b.Usage.PeakSessions = max(b.Usage.PeakSessions, open+1)
		changed = true
	}
	s.lastSeen = now
	p := c.pending[req.LiveKitRoom]
	if p == nil {
		p = map[string]time.Time{}
		c.pending[req.LiveKitRoom] = p
	}
	p[req.Identity] = now
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
// or admitted within the pending window and not connected yet. Caller holds mu.
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
	for id, at := range c.pending[lkRoom] {
		switch {
		case seen[id]:
			delete(c.pending[lkRoom], id) // connected: the directory counts them now
		case now.Sub(at) >= c.cfg.PendingWindow:
			delete(c.pending[lkRoom], id) // never connected
		default:
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(c.pending[lkRoom]) == 0 {
		delete(c.pending, lkRoom)
	}
	return ids, nil
}

// Run samples usage every UsageInterval (participant-minutes, peaks),
// closes idle sessions and expires ended bookings, until ctx ends.
func (c *Catalog) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.UsageInterval)
	defer t.Stop()
	last := c.now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			now := c.now()
			c.sample(ctx, now, now.Sub(last))
			last = now
		}
	}
}

// sample accounts dt of usage for every open session.
func (c *Catalog) sample(ctx context.Context, now time.Time, dt time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	type acc struct {
		minutes  float64
		sessions int
		meeting  map[string]int
	}
	per := map[string]*acc{}
	for lk, s := range c.sessions {
		ids, err := c.participants(ctx, lk, now)
		if err != nil {
			c.log.Warn().Err(err).Str("lk_room", lk).Msg("Failed to count a booked session's participants")
			continue
		}
		if len(ids) > 0 {
			s.lastSeen = now
		} else if now.Sub(s.lastSeen) >= c.cfg.SessionIdle {
			delete(c.sessions, lk)
			c.metrics.sessions.Dec()
			continue
		}
		a := per[s.booking]
		if a == nil {
			a = &acc{meeting: map[string]int{}}
			per[s.booking] = a
		}
		a.minutes += float64(len(ids)) * dt.Minutes()
		a.sessions++
		a.meeting[s.meeting] += len(ids)
	}
	// Forget meeting rooms without a session or a pending participant.
	for key, rooms := range c.meetings {
		for lk := range rooms {
			if c.sessions[lk] == nil && c.pending[lk] == nil {
				delete(rooms, lk)
			}
		}
		if len(rooms) == 0 {
			delete(c.meetings, key)
		}
	}
	for id, a := range per {
		b, err := c.st.get(ctx, id)
		if err != nil {
			c.log.Warn().Err(err).Str("booking", id).Msg("Failed to read a booking for its usage")
			continue
		}
		b.Usage.ParticipantMinutes += a.minutes
		b.Usage.PeakSessions = max(b.Usage.PeakSessions, a.sessions)
		for _, n := range a.meeting {
			b.Usage.PeakParticipants = max(b.Usage.PeakParticipants, n)
		}
		if err := c.st.update(ctx, b); err != nil {
			c.log.Warn().Err(err).Str("booking", id).Msg("Failed to record a booking's usage")
		}
	}
	bs, err := c.st.list(ctx, "")
	if err != nil {
		c.log.Warn().Err(err).Msg("Failed to list bookings for expiry")
		return
	}
	for _, b := range bs {
		c.expireLocked(ctx, b)
	}
}
