package sfu

import (
	"slices"
	"sort"

	"github.com/livekit/protocol/livekit"
	"google.golang.org/protobuf/proto"
)

// Subscription permissions: a publisher says who may subscribe to its
// tracks (livekit-client's setTrackSubscriptionPermissions, the signal
// request subscription_permission), as livekit-server does:
//   - all_participants (or never having sent one) lets everyone subscribe;
//   - otherwise only the listed participants, each to all its tracks or to
//     the listed track sids. A participant is named by identity, or by sid
//     (resolved to the identity of the participant with that sid in the
//     room when the permission arrives; a sid naming nobody grants nothing).
//
// A subscriber that wants a track it may not have (auto-subscribe, or an
// explicit subscription) is told once with subscription_permission_update
// {allowed: false} and remembered; when the publisher's permission lets it
// in, it is told {allowed: true} and subscribed. A permission that takes a
// track away ends those subscriptions at once (the track leaves the
// subscriber's connection in the next offer). Recorders (the recorder grant)
// are exempt, as in livekit-server.
//
// Where livekit-server differs: an entry that names neither a sid nor an
// identity makes it keep the previous permission; here such an entry grants
// nothing and the rest applies (fail closed). Oversized lists are cut
// (maxPermissionEntries, maxSubscriptionSids per entry), the cut part
// granting nothing, and only sids of the publisher's own tracks are kept.
//
// Across nodes the permission travels with the participant in the relay
// (RelayRoom.SubscriptionPermission, RemoteParticipant.SetSubscriptionPermission),
// resolved to identities, which stay the same on every node; each node
// enforces it for its own subscribers.

// maxPermissionEntries bounds the participants one permission names (the
// largest room offered holds 1000).
const maxPermissionEntries = 1024

// trackGrant is what one subscriber may have of a publisher's tracks.
type trackGrant struct {
	all    bool
	tracks map[string]bool
}

// subPolicy is a publisher's subscription permission resolved to
// identities; nil lets everyone subscribe. Immutable once built.
type subPolicy struct {
	grants map[string]trackGrant // by subscriber identity
}

func (sp *subPolicy) allows(identity, trackSid string) bool {
	if sp == nil {
		return true
	}
	g, ok := sp.grants[identity]
	return ok && (g.all || g.tracks[trackSid])
}

// toProto is the policy as a permission naming identities only, sorted
// (nil: everyone).
func (sp *subPolicy) toProto() *livekit.SubscriptionPermission {
	if sp == nil {
		return nil
	}
	out := &livekit.SubscriptionPermission{}
	for id, g := range sp.grants {
		tp := &livekit.TrackPermission{ParticipantIdentity: id, AllTracks: g.all}
		if !g.all {
			for sid := range g.tracks {
				tp.TrackSids = append(tp.TrackSids, sid)
			}
			slices.Sort(tp.TrackSids)
		}
		out.TrackPermissions = append(out.TrackPermissions, tp)
	}
	sort.Slice(out.TrackPermissions, func(i, j int) bool {
		return out.TrackPermissions[i].ParticipantIdentity < out.TrackPermissions[j].ParticipantIdentity
	})
	return out
}

// newSubPolicy resolves a permission; bySid finds the identity of a
// participant sid in the room ("" if none); own, when not nil, tells the
// publisher's track sids: others can never match (a track gets a new sid
// when published again) and are not kept, so a permission costs memory by
// the publisher's tracks, not by what its client sent. It also returns how
// many entries granted nothing or were cut (no id, unknown sid, beyond the
// limits).
func newSubPolicy(perm *livekit.SubscriptionPermission, bySid func(sid string) string, own func(trackSid string) bool) (*subPolicy, int) {
	if perm == nil || perm.GetAllParticipants() {
		return nil, 0
	}
	sp := &subPolicy{grants: map[string]trackGrant{}}
	ignored := 0
	for i, tp := range perm.GetTrackPermissions() {
		if i >= maxPermissionEntries {
			ignored += len(perm.GetTrackPermissions()) - i
			break
		}
		id := tp.GetParticipantIdentity()
		if id == "" && tp.GetParticipantSid() != "" {
			id = bySid(tp.GetParticipantSid())
		}
		if id == "" {
			ignored++
			continue
		}
		g := sp.grants[id]
		if tp.GetAllTracks() {
			g.all = true
		} else {
			sids := tp.GetTrackSids()
			if len(sids) > maxSubscriptionSids {
				sids = sids[:maxSubscriptionSids]
				ignored++
			}
			if g.tracks == nil {
				g.tracks = map[string]bool{}
			}
			for _, sid := range sids {
				if own == nil || own(sid) {
					g.tracks[sid] = true
				}
			}
		}
		sp.grants[id] = g
	}
	return sp, ignored
}

// permits tells whether sub may subscribe to owner's track sid; callers
// hold the room's permMu.
func (owner *Participant) permits(sub *Participant, sid string) bool {
	if owner.subPerm == nil {
		return true
	}
	sub.mu.Lock()
	recorder := sub.video.Recorder
	sub.mu.Unlock()
	return recorder || owner.subPerm.allows(sub.identity, sid)
}

// setSubscriptionPermission replaces p's subscription permission and
// applies it: subscriptions it no longer allows end, subscribers it now
// lets in and that wanted a track get it. For a local participant the relay
// carries the resolved permission to the other nodes.
func (p *Participant) setSubscriptionPermission(perm *livekit.SubscriptionPermission) {
	r := p.room
	r.permChange.Lock()
	defer r.permChange.Unlock()
	var own func(string) bool
	if p.remote == nil {
		// A relayed permission is the origin's, already cut to its
		// tracks, and arrives before them.
		p.mu.Lock()
		sids := make(map[string]bool, len(p.published))
		for sid := range p.published {
			sids[sid] = true
		}
		p.mu.Unlock()
		for _, t := range p.dataTracksOf() {
			sids[t.info.Sid] = true
		}
		own = func(sid string) bool { return sids[sid] }
	}
	sp, ignored := newSubPolicy(perm, r.identityBySid(), own)
	if ignored > 0 {
		p.log.Debug().Int("entries", ignored).Msg("subscription permission entries that name nobody grant nothing")
	}
	type change struct {
		sub *Participant
		t   *publishedTrack
	}
	var revoke, grant []change
	r.permMu.Lock()
	if proto.Equal(p.subPerm.toProto(), sp.toProto()) {
		r.permMu.Unlock()
		return // nothing changes (a client repeating itself)
	}
	p.subPerm = sp
	tracks := p.liveTracks()
	for _, sub := range r.participantList() {
		if sub == p || sub.remote != nil {
			continue
		}
		for _, t := range tracks {
			allowed := p.permits(sub, t.sid)
			sub.mu.Lock()
			switch {
			case !allowed && sub.subscriptions[t.sid] != nil:
				sub.denied[t.sid] = true // a later grant gives it back
				revoke = append(revoke, change{sub, t})
			case allowed && sub.denied[t.sid]:
				grant = append(grant, change{sub, t})
			}
			sub.mu.Unlock()
		}
	}
	r.permMu.Unlock()
	p.log.Debug().Bool("everyone", sp == nil).Int("revoked", len(revoke)).Int("granted", len(grant)).Msg("subscription permission updated")

	negotiate := map[*Participant]bool{}
	for _, c := range revoke {
		if c.sub.dropSubscription(c.t.sid, false) {
			negotiate[c.sub] = true
		}
		c.sub.sendPermission(c.t, false)
	}
	for _, c := range grant {
		if c.sub.subscribeIf(c.t, true) {
			negotiate[c.sub] = true
		}
	}
	for sub := range negotiate {
		sub.negotiate()
	}
	r.reconcileDataOwner(p)
	if p.remote == nil {
		// The other nodes learn it now, not with the next update clients
		// see (a revocation must not wait).
		p.annMu.Lock()
		p.mu.Lock()
		closed := p.closed
		p.changedLocked()
		info := p.snapshotLocked()
		p.mu.Unlock()
		if !closed && !p.hidden {
			r.relay.participantChanged(p, info)
		}
		p.annMu.Unlock()
	}
}

// sendPermission tells p whether it may subscribe to t; a denial is
// counted.
func (p *Participant) sendPermission(t *publishedTrack, allowed bool) {
	if !allowed {
		p.s.metrics.permDenied.Inc()
	}
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_SubscriptionPermissionUpdate{
		SubscriptionPermissionUpdate: &livekit.SubscriptionPermissionUpdate{
			ParticipantSid: t.owner.sid, TrackSid: t.sid, Allowed: allowed,
		},
	}})
}

// identityBySid returns a lookup of the identity of a participant sid in
// the room ("" if none), from the participants present when first used.
func (r *Room) identityBySid() func(sid string) string {
	var m map[string]string
	return func(sid string) string {
		if m == nil {
			r.mu.Lock()
			m = make(map[string]string, len(r.participants))
			for id, p := range r.participants {
				m[p.sid] = id
			}
			r.mu.Unlock()
		}
		return m[sid]
	}
}
