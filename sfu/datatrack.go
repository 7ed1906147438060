package sfu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"sync/atomic"

	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/utils"
	"github.com/livekit/protocol/utils/guid"
	"github.com/pion/webrtc/v4"
)

// Data tracks (livekit-client's publishDataTrack, protocol 16's
// publish_data_track_request), as livekit-server forwards them:
//   - A participant allowed to publish data asks to publish a named track
//     under a handle it chose (1–65535, unique among its data tracks, name
//     1–256 bytes and unique); the SFU answers publish_data_track_response
//     with the track's sid, or a request_response naming what is wrong, and
//     the track appears in the participant's info (data_tracks).
//   - A subscriber asks for a track by sid (update_data_subscription; with
//     auto_subscribe_data_track it gets every data track without asking) and
//     is told the handle its packets will carry in
//     data_track_subscriber_handles, the whole map of its handles each time.
//   - Packets come in on the publisher's _data_track channel (unordered,
//     no retransmissions), each with a 12-byte header naming the
//     publisher's handle; each subscriber gets a copy with its own handle on
//     its _data_track channel (the subscriber connection's, or in single
//     peer connection mode the client's own). Nothing else is changed.
//
// Subscriptions follow the publisher's subscription permission
// (permission.go) and the subscriber's canSubscribe: a subscriber not
// permitted is told with subscription_permission_update and keeps its
// wish, fulfilled when the permission lets it in, as livekit-server. An
// unpublished track ends its subscriptions.
//
// Across nodes and sites the relay carries a participant's data tracks in
// its info and their packets with the publisher's identity
// (RelayObserver.DataTrackPacket, RelayRoom.DeliverDataTrack); the
// receiving node publishes them for the relayed participant under the
// origin's sids and handles, serves its own subscribers and tells the
// origin which tracks it wants (RemoteHooks.OnDataWant), so only those
// cross.
//
// State: a publisher's tracks (an immutable map replaced on change, read per
// packet without a lock), each track's destinations (likewise) and the
// subscribers' wishes change only under the room's permMu, so a permission
// check and the subscription it decides are one step.

const (
	// dataTrackLabel is the data channel of data track packets.
	dataTrackLabel = "_data_track"
	// maxDataTracks bounds the data tracks one participant publishes.
	maxDataTracks = 64
	// maxDataTrackName bounds a data track's name (livekit-server's limit).
	maxDataTrackName = 256
	// maxDataTrackEncoding bounds a custom frame or schema encoding name
	// (livekit-server's default); maxDataTrackSchema a schema's name.
	maxDataTrackEncoding = 32
	maxDataTrackSchema   = 256
	// maxDataWants bounds the data tracks one participant subscribes to
	// (or waits for); maxDataUpdates the updates one request applies.
	maxDataWants   = 1024
	maxDataUpdates = 256
	// dataTrackHeader is the fixed part of a data track packet's header.
	dataTrackHeader = 12
)

// dataTrack is one published data track.
type dataTrack struct {
	owner *Participant
	info  *livekit.DataTrackInfo     // immutable
	dests atomic.Pointer[[]dataDest] // replaced under room.permMu
}

// dataDest is one subscriber of a data track and the handle its copies carry.
type dataDest struct {
	p      *Participant
	handle uint16
}

// dataWant is a subscriber's wish for a data track; track is set while it
// is subscribed. Guarded by room.permMu.
type dataWant struct {
	track  *dataTrack
	handle uint16
	denied bool // told that the publisher does not permit it
}

// dataTracksOf returns p's published data tracks by publisher handle.
func (p *Participant) dataTracksOf() map[uint16]*dataTrack {
	if m := p.dataTracks.Load(); m != nil {
		return *m
	}
	return nil
}

// dataTrackInfos lists p's data tracks for its info, by handle.
func (p *Participant) dataTrackInfos() []*livekit.DataTrackInfo {
	m := p.dataTracksOf()
	if len(m) == 0 {
		return nil
	}
	out := make([]*livekit.DataTrackInfo, 0, len(m))
	for _, t := range m {
		out = append(out, utils.CloneProto(t.info))
	}
	slices.SortFunc(out, func(a, b *livekit.DataTrackInfo) int { return int(a.PubHandle) - int(b.PubHandle) })
	return out
}

// refuseDataTrack answers a data track request with a request_response.
func (p *Participant) refuseDataTrack(reason livekit.RequestResponse_Reason, msg string, pub *livekit.PublishDataTrackRequest, unpub *livekit.UnpublishDataTrackRequest) {
	p.log.Debug().Str("reason", reason.String()).Msg("data track request refused: " + msg)
	rr := &livekit.RequestResponse{Reason: reason, Message: msg}
	if pub != nil {
		rr.Request = &livekit.RequestResponse_PublishDataTrack{PublishDataTrack: utils.CloneProto(pub)}
	} else {
		rr.Request = &livekit.RequestResponse_UnpublishDataTrack{UnpublishDataTrack: utils.CloneProto(unpub)}
	}
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_RequestResponse{RequestResponse: rr}})
}

// checkDataTrackRequest returns why req cannot be published, if it cannot.
func checkDataTrackRequest(req *livekit.PublishDataTrackRequest) (livekit.RequestResponse_Reason, string) {
	switch {
	case req.GetPubHandle() == 0 || req.GetPubHandle() > 65535:
		return livekit.RequestResponse_INVALID_HANDLE, "handle should be > 0 AND < 65536"
	case req.GetName() == "" || len(req.GetName()) > maxDataTrackName:
		return livekit.RequestResponse_INVALID_NAME, "name should not be empty and should not exceed 256 characters"
	}
	if fe := req.GetFrameEncoding(); fe != nil {
		if _, ok := fe.GetValue().(*livekit.DataTrackFrameEncoding_Custom); ok && (fe.GetCustom() == "" || len(fe.GetCustom()) > maxDataTrackEncoding) {
			return livekit.RequestResponse_INVALID_REQUEST, "frame_encoding: a custom encoding must have 1 to 32 characters"
		}
	}
	if sc := req.GetSchema(); sc != nil {
		enc := sc.GetEncoding()
		if _, ok := enc.GetValue().(*livekit.DataTrackSchemaEncoding_Custom); ok && (enc.GetCustom() == "" || len(enc.GetCustom()) > maxDataTrackEncoding) {
			return livekit.RequestResponse_INVALID_REQUEST, "schema.encoding: a custom encoding must have 1 to 32 characters"
		}
		if len(sc.GetName()) > maxDataTrackSchema {
			return livekit.RequestResponse_INVALID_REQUEST, "schema.name: at most 256 characters"
		}
	}
	return livekit.RequestResponse_OK, ""
}

// handlePublishDataTrack publishes a data track (publish_data_track_request).
func (p *Participant) handlePublishDataTrack(req *livekit.PublishDataTrackRequest) {
	p.mu.Lock()
	allowed := p.video.GetCanPublishData() && !p.hidden
	p.mu.Unlock()
	if !allowed {
		p.refuseDataTrack(livekit.RequestResponse_NOT_ALLOWED, "does not have permission to publish data", req, nil)
		return
	}
	if reason, msg := checkDataTrackRequest(req); reason != livekit.RequestResponse_OK {
		p.refuseDataTrack(reason, msg, req, nil)
		return
	}
	r := p.room
	r.permMu.Lock()
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		r.permMu.Unlock()
		return
	}
	old := p.dataTracksOf()
	for _, t := range old {
		switch {
		case t.info.PubHandle == req.GetPubHandle():
			r.permMu.Unlock()
			p.refuseDataTrack(livekit.RequestResponse_DUPLICATE_HANDLE, "a data track with same handle already exists", req, nil)
			return
		case t.info.Name == req.GetName():
			r.permMu.Unlock()
			p.refuseDataTrack(livekit.RequestResponse_DUPLICATE_NAME, "a data track with same name already exists", req, nil)
			return
		}
	}
	if len(old) >= maxDataTracks {
		r.permMu.Unlock()
		p.refuseDataTrack(livekit.RequestResponse_LIMIT_EXCEEDED, "too many data tracks", req, nil)
		return
	}
	t := &dataTrack{owner: p, info: &livekit.DataTrackInfo{
		PubHandle:     req.GetPubHandle(),
		Sid:           guid.New(utils.DataTrackPrefix),
		Name:          req.GetName(),
		Encryption:    req.GetEncryption(),
		FrameEncoding: utils.CloneProto(req.GetFrameEncoding()),
		Schema:        utils.CloneProto(req.GetSchema()),
	}}
	next := make(map[uint16]*dataTrack, len(old)+1)
	for h, o := range old {
		next[h] = o
	}
	next[uint16(t.info.PubHandle)] = t
	p.dataTracks.Store(&next)
	p.s.metrics.dataTracks.Inc() // under permMu, as the leave's decrement
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_PublishDataTrackResponse{
		PublishDataTrackResponse: &livekit.PublishDataTrackResponse{Info: utils.CloneProto(t.info)},
	}})
	r.addDataTrackLocked(t)
	r.permMu.Unlock()
	p.log.Info().Str("track_sid", t.info.Sid).Uint32("handle", t.info.PubHandle).Msg("data track published")
	p.mu.Lock()
	p.changedLocked()
	p.mu.Unlock()
	p.publishUpdate(false)
}

// handleUnpublishDataTrack ends one of p's data tracks.
func (p *Participant) handleUnpublishDataTrack(req *livekit.UnpublishDataTrackRequest) {
	r := p.room
	r.permMu.Lock()
	var t *dataTrack
	if h := req.GetPubHandle(); h <= 65535 {
		t = p.dataTracksOf()[uint16(h)]
	}
	if t == nil {
		r.permMu.Unlock()
		p.refuseDataTrack(livekit.RequestResponse_NOT_FOUND, "no data track with this handle", nil, req)
		return
	}
	p.removeDataTracksLocked([]*dataTrack{t})
	r.permMu.Unlock()
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_UnpublishDataTrackResponse{
		UnpublishDataTrackResponse: &livekit.UnpublishDataTrackResponse{Info: utils.CloneProto(t.info)},
	}})
	p.log.Info().Str("track_sid", t.info.Sid).Msg("data track unpublished")
	p.mu.Lock()
	p.changedLocked()
	p.mu.Unlock()
	p.publishUpdate(false)
}

// removeDataTracksLocked takes tracks of p's away and ends their
// subscriptions; callers hold room.permMu.
func (p *Participant) removeDataTracksLocked(tracks []*dataTrack) {
	next := map[uint16]*dataTrack{}
	for h, t := range p.dataTracksOf() {
		if !slices.Contains(tracks, t) {
			next[h] = t
		}
	}
	p.dataTracks.Store(&next)
	tell := map[*Participant]bool{}
	for _, t := range tracks {
		t.dests.Store(nil)
		if p.room.dataTracks[t.info.Sid] == t {
			delete(p.room.dataTracks, t.info.Sid)
		}
		if p.remote == nil {
			p.s.metrics.dataTracks.Dec()
		}
		for _, sub := range p.room.participantList() {
			if w, ok := sub.dataWant[t.info.Sid]; ok {
				delete(sub.dataWant, t.info.Sid)
				tell[sub] = tell[sub] || w.track != nil
			}
		}
	}
	for sub, changed := range tell {
		if changed {
			sub.sendDataHandlesLocked()
		}
	}
}

// handleDataSubscription applies update_data_subscription.
func (p *Participant) handleDataSubscription(u *livekit.UpdateDataSubscription) {
	updates := u.GetUpdates()
	if len(updates) > maxDataUpdates {
		p.log.Debug().Int("updates", len(updates)).Msg("data subscription request cut to its first updates")
		updates = updates[:maxDataUpdates]
	}
	r := p.room
	r.permMu.Lock()
	defer r.permMu.Unlock()
	tell := false // the handles go out once, after all updates
	defer func() {
		if tell {
			p.sendDataHandlesLocked()
		}
	}()
	for _, up := range updates {
		sid := up.GetTrackSid()
		w, ok := p.dataWant[sid]
		if !up.GetSubscribe() {
			if ok {
				delete(p.dataWant, sid)
				if w.track != nil {
					w.track.removeDest(p)
					tell = true
				}
			}
			continue
		}
		t := r.dataTracks[sid]
		if t == nil || t.owner == p {
			p.log.Debug().Str("track_sid", sid).Msg("data subscription to an unknown data track ignored")
			continue
		}
		if !ok {
			if len(p.dataWant) >= maxDataWants {
				p.log.Debug().Msg("data subscription ignored: too many data tracks wanted")
				continue
			}
			p.dataWant[sid] = &dataWant{}
		}
		// Already subscribed, a client asking again (after a resume) is
		// told its handles again.
		if p.reconcileDataLocked(sid, t) || p.dataWant[sid].track != nil {
			tell = true
		}
	}
}

// addDataTrackLocked enters a newly published data track (local or
// relayed) in the room's index and gives it to the participants that take
// every data track; callers hold permMu.
func (r *Room) addDataTrackLocked(t *dataTrack) {
	r.dataTracks[t.info.Sid] = t
	for _, sub := range r.participantList() {
		if sub != t.owner && sub.remote == nil && sub.autoSubscribeData && sub.wantDataLocked(t) {
			sub.sendDataHandlesLocked()
		}
	}
}

// wantDataLocked makes p want t if it did not yet and may want more; it
// reports whether p's subscriptions changed. Callers hold room.permMu.
func (p *Participant) wantDataLocked(t *dataTrack) bool {
	if _, ok := p.dataWant[t.info.Sid]; ok || len(p.dataWant) >= maxDataWants {
		return false
	}
	p.dataWant[t.info.Sid] = &dataWant{}
	return p.reconcileDataLocked(t.info.Sid, t)
}

// reconcileDataLocked makes p's subscription to the data track sid (which
// is t, or nil when it is gone) what its wish, its permissions and the
// publisher's permission say, and tells p of a permission change; it
// reports whether the subscription changed (the caller then sends p its
// handles, once for all its changes). Callers hold room.permMu.
func (p *Participant) reconcileDataLocked(sid string, t *dataTrack) bool {
	w := p.dataWant[sid]
	if w == nil {
		return false
	}
	if t == nil {
		delete(p.dataWant, sid)
		if w.track != nil {
			w.track.removeDest(p)
			return true
		}
		return false
	}
	p.mu.Lock()
	mayAtAll := p.video.GetCanSubscribe() && !p.closed
	p.mu.Unlock()
	permitted := t.owner.permits(p, sid)
	switch {
	case mayAtAll && permitted && w.track == nil:
		w.track, w.handle = t, p.nextDataHandleLocked()
		t.addDest(dataDest{p: p, handle: w.handle})
		if w.denied {
			w.denied = false
			p.sendDataPermission(t, true)
		}
		return true
	case !(mayAtAll && permitted) && w.track != nil:
		w.track.removeDest(p)
		w.track = nil
		if !permitted && !w.denied {
			w.denied = true
			p.sendDataPermission(t, false)
		}
		return true
	case !permitted && !w.denied:
		w.denied = true
		p.sendDataPermission(t, false)
	}
	return false
}

// reconcileDataAll re-decides every data track p wants (its canSubscribe
// changed).
func (p *Participant) reconcileDataAll() {
	r := p.room
	r.permMu.Lock()
	defer r.permMu.Unlock()
	changed := false
	for sid := range p.dataWant {
		if p.reconcileDataLocked(sid, r.dataTracks[sid]) {
			changed = true
		}
	}
	if changed {
		p.sendDataHandlesLocked()
	}
}

// reconcileDataOwner re-decides the subscriptions to owner's data tracks
// (its subscription permission changed).
func (r *Room) reconcileDataOwner(owner *Participant) {
	r.permMu.Lock()
	defer r.permMu.Unlock()
	tracks := owner.dataTracksOf()
	if len(tracks) == 0 {
		return
	}
	for _, sub := range r.participantList() {
		changed := false
		for _, t := range tracks {
			if sub != owner && sub.reconcileDataLocked(t.info.Sid, t) {
				changed = true
			}
		}
		if changed {
			sub.sendDataHandlesLocked()
		}
	}
}

// autoSubscribeDataLocked makes p want every data track in the room;
// callers hold room.permMu.
func (p *Participant) autoSubscribeDataLocked() {
	changed := false
	for _, o := range p.room.participantList() {
		if o == p {
			continue
		}
		for _, t := range o.dataTracksOf() {
			if p.wantDataLocked(t) {
				changed = true
			}
		}
	}
	if changed {
		p.sendDataHandlesLocked()
	}
}

// leaveDataTracks ends p's data tracks and its data subscriptions (it
// leaves).
func (p *Participant) leaveDataTracks() {
	r := p.room
	r.permMu.Lock()
	defer r.permMu.Unlock()
	var mine []*dataTrack
	for _, t := range p.dataTracksOf() {
		mine = append(mine, t)
	}
	if len(mine) > 0 {
		p.removeDataTracksLocked(mine)
	}
	for sid, w := range p.dataWant {
		if w.track != nil {
			w.track.removeDest(p)
		}
		delete(p.dataWant, sid)
	}
}

// nextDataHandleLocked returns a subscriber handle p does not use yet.
func (p *Participant) nextDataHandleLocked() uint16 {
	for {
		p.nextDataHandle++
		if p.nextDataHandle == 0 {
			continue
		}
		inUse := false
		for _, w := range p.dataWant {
			if w.track != nil && w.handle == p.nextDataHandle {
				inUse = true
				break
			}
		}
		if !inUse {
			return p.nextDataHandle
		}
	}
}

// sendDataHandlesLocked tells p the handles of all its data subscriptions.
// Until p's data track channel is open they wait (dataTrackChannelOpen):
// a client that knows a handle expects the packets that carry it, and
// before the channel opens the SFU can send none — pion reports a channel
// the client opened some time after the client sees it open.
func (p *Participant) sendDataHandlesLocked() {
	if !p.dtChanOpen {
		p.dtHandlesHeld = true
		return
	}
	m := map[uint32]*livekit.DataTrackSubscriberHandles_PublishedDataTrack{}
	for sid, w := range p.dataWant {
		if w.track == nil {
			continue
		}
		m[uint32(w.handle)] = &livekit.DataTrackSubscriberHandles_PublishedDataTrack{
			PublisherIdentity: w.track.owner.identity,
			PublisherSid:      w.track.owner.sid,
			TrackSid:          sid,
		}
	}
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_DataTrackSubscriberHandles{
		DataTrackSubscriberHandles: &livekit.DataTrackSubscriberHandles{SubHandles: m},
	}})
}

// dataTrackChannelOpen is called when the channel p's data track packets
// go out on opened (the SFU's on the subscriber connection, or in single
// peer connection mode the client's, adopted): handles held for it go out.
func (p *Participant) dataTrackChannelOpen() {
	r := p.room
	r.permMu.Lock()
	defer r.permMu.Unlock()
	p.dtChanOpen = true
	if p.dtHandlesHeld {
		p.dtHandlesHeld = false
		p.sendDataHandlesLocked()
	}
}

// sendDataPermission tells p whether it may subscribe to t.
func (p *Participant) sendDataPermission(t *dataTrack, allowed bool) {
	if !allowed {
		p.s.metrics.permDenied.Inc()
	}
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_SubscriptionPermissionUpdate{
		SubscriptionPermissionUpdate: &livekit.SubscriptionPermissionUpdate{
			ParticipantSid: t.owner.sid, TrackSid: t.info.Sid, Allowed: allowed,
		},
	}})
}

// destList returns t's subscribers (read per packet, never changed in place).
func (t *dataTrack) destList() []dataDest {
	if d := t.dests.Load(); d != nil {
		return *d
	}
	return nil
}

func (t *dataTrack) addDest(d dataDest) {
	old := t.destList()
	next := make([]dataDest, 0, len(old)+1)
	next = append(append(next, old...), d)
	t.dests.Store(&next)
	t.wantChanged(len(old), len(next))
}

func (t *dataTrack) removeDest(p *Participant) {
	old := t.destList()
	next := make([]dataDest, 0, len(old))
	for _, d := range old {
		if d.p != p {
			next = append(next, d)
		}
	}
	t.dests.Store(&next)
	t.wantChanged(len(old), len(next))
}

// wantChanged tells a relayed track's origin that this node now wants its
// packets (a first subscriber) or no longer does (the last left).
func (t *dataTrack) wantChanged(before, after int) {
	rp := t.owner.remote
	if rp == nil || rp.hooks.OnDataWant == nil || (before == 0) == (after == 0) {
		return
	}
	rp.hooks.OnDataWant(t.info.Sid, after > 0)
}

var errDataTrackPacket = errors.New("malformed data track packet")

// parseDataTrackHeader checks a data track packet's header (version 0, the
// extension block within the packet) and returns its handle.
func parseDataTrackHeader(b []byte) (uint16, error) {
	if len(b) < dataTrackHeader || b[0]>>5 != 0 {
		return 0, errDataTrackPacket
	}
	handle := binary.BigEndian.Uint16(b[2:4])
	if handle == 0 {
		return 0, errDataTrackPacket
	}
	if b[0]&0x04 != 0 { // extensions: a 16-bit size in words minus one, then the block
		if len(b) < dataTrackHeader+2 {
			return 0, errDataTrackPacket
		}
		size := (int(binary.BigEndian.Uint16(b[12:14]))+1)*4 - 2
		if len(b) < dataTrackHeader+2+size {
			return 0, errDataTrackPacket
		}
		ext := b[dataTrackHeader+2 : dataTrackHeader+2+size]
		for i := 0; i < len(ext); {
			if ext[i] == 0 { // padding to the end
				break
			}
			if i+2 > len(ext) || i+2+int(ext[i+1]) > len(ext) {
				return 0, errDataTrackPacket
			}
			i += 2 + int(ext[i+1])
		}
	}
	return handle, nil
}

// onDataTrackPacket forwards a packet from p's _data_track channel to the
// subscribers of the track its handle names, each copy with the
// subscriber's handle.
func (p *Participant) onDataTrackPacket(data []byte) {
	handle, err := parseDataTrackHeader(data)
	if err != nil {
		p.s.metrics.dtMalformed.Inc()
		return
	}
	t := p.dataTracksOf()[handle]
	if t == nil {
		p.s.metrics.dtUnknown.Inc()
		return
	}
	p.s.metrics.dtReceived.Inc()
	if p.remote == nil {
		p.room.relay.dataTrackPacket(p, data)
	}
	dests := t.destList()
	if len(dests) == 0 {
		return
	}
	// The data channel copies what it is given, so one buffer serves all.
	buf := bytes.Clone(data)
	for _, d := range dests {
		binary.BigEndian.PutUint16(buf[2:4], d.handle)
		d.p.sendDataTrack(buf)
	}
}

// syncRemoteDataTracks makes a relayed participant's data tracks those of
// its origin's info: new ones are published here (auto-subscribers get
// them), gone ones end, kept ones keep their subscriptions. Entries that
// could not come from an origin (no sid, a handle out of range or taken, a
// name over the limit, more than the limit, the sid of another
// participant's track) are ignored.
func (p *Participant) syncRemoteDataTracks(infos []*livekit.DataTrackInfo) {
	r := p.room
	r.permMu.Lock()
	defer r.permMu.Unlock()
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return
	}
	old := p.dataTracksOf()
	next := map[uint16]*dataTrack{}
	var added []*dataTrack
	for _, in := range infos {
		h := in.GetPubHandle()
		if len(next) >= maxDataTracks || in.GetSid() == "" || len(in.GetSid()) > maxDataTrackName || h == 0 || h > 65535 ||
			len(in.GetName()) > maxDataTrackName || next[uint16(h)] != nil {
			continue
		}
		t := r.dataTracks[in.GetSid()]
		if t != nil && t.owner != p {
			continue // another participant's sid: never taken over
		}
		if t == nil || t.info.PubHandle != h {
			t = &dataTrack{owner: p, info: utils.CloneProto(in)}
			added = append(added, t)
		}
		next[uint16(h)] = t
	}
	var gone []*dataTrack
	for _, t := range old {
		if next[uint16(t.info.PubHandle)] != t {
			gone = append(gone, t)
		}
	}
	if len(gone) > 0 {
		p.removeDataTracksLocked(gone) // stores what is left; next replaces it
	}
	p.dataTracks.Store(&next)
	for _, t := range added {
		r.addDataTrackLocked(t)
	}
}

// sendDataTrack sends a data track packet to p; like lossy data it is
// dropped when the channel is not open or holds too much already.
func (p *Participant) sendDataTrack(b []byte) {
	p.dcMu.Lock()
	defer p.dcMu.Unlock()
	dc := p.subDataTrack
	if dc == nil || dc.ReadyState() != webrtc.DataChannelStateOpen {
		return
	}
	if dc.BufferedAmount() > maxLossyBuffered {
		p.s.metrics.dataDropped.WithLabelValues(dataTrackLabel).Inc()
		return
	}
	if err := dc.Send(b); err != nil {
		p.log.Trace().Err(err).Msg("failed to send data track packet")
		return
	}
	p.s.metrics.dtSent.Inc()
}
