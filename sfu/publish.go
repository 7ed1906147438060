package sfu

import (
	"fmt"
	"strings"

	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/utils/guid"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/proto"
)

// maxTracksPerParticipant bounds add_track requests per session.
const maxTracksPerParticipant = 32

// pendingTrack is an add_track request waiting for its media.
type pendingTrack struct {
	cid  string
	cids []string // cid plus simulcast codec cids
	kind webrtc.RTPCodecType
	t    *publishedTrack
}

// handleAddTrack answers add_track at once with track_published; the
// media is matched to it when it arrives (onTrack).
func (p *Participant) handleAddTrack(req *livekit.AddTrackRequest) {
	refuse := func(reason livekit.RequestResponse_Reason, msg string) {
		p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_RequestResponse{RequestResponse: &livekit.RequestResponse{
			Reason: reason, Message: msg, Request: &livekit.RequestResponse_AddTrack{AddTrack: req},
		}}})
	}
	var kind webrtc.RTPCodecType
	switch req.GetType() {
	case livekit.TrackType_AUDIO:
		kind = webrtc.RTPCodecTypeAudio
	case livekit.TrackType_VIDEO:
		kind = webrtc.RTPCodecTypeVideo
	default:
		refuse(livekit.RequestResponse_UNSUPPORTED_TYPE, "only audio and video tracks are supported")
		return
	}
	source := req.GetSource()
	if source == livekit.TrackSource_UNKNOWN {
		if kind == webrtc.RTPCodecTypeAudio {
			source = livekit.TrackSource_MICROPHONE
		} else {
			source = livekit.TrackSource_CAMERA
		}
	}
	if msg := addTrackTooLarge(req); msg != "" {
		refuse(livekit.RequestResponse_LIMIT_EXCEEDED, msg)
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	if !p.video.GetCanPublish() || !p.video.GetCanPublishSource(source) {
		p.mu.Unlock()
		refuse(livekit.RequestResponse_NOT_ALLOWED, "does not have permission to publish "+strings.ToLower(source.String()))
		return
	}
	if p.sourceMisfitLocked(source, kind) {
		p.mu.Unlock()
		refuse(livekit.RequestResponse_NOT_ALLOWED, "a "+strings.ToLower(req.GetType().String())+" track cannot be the "+strings.ToLower(source.String()))
		return
	}
	if len(p.published) >= maxTracksPerParticipant {
		p.mu.Unlock()
		refuse(livekit.RequestResponse_LIMIT_EXCEEDED, "too many tracks")
		return
	}
	if pt := p.pending[req.GetCid()]; pt != nil {
		info := pt.t.trackInfoAny()
		p.mu.Unlock()
		p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_TrackPublished{TrackPublished: &livekit.TrackPublishedResponse{Cid: req.GetCid(), Track: info}}})
		return
	}
	prefix := "TR_V"
	if kind == webrtc.RTPCodecTypeAudio {
		prefix = "TR_A"
	}
	info := &livekit.TrackInfo{
		Sid:               guid.New(prefix),
		Type:              req.GetType(),
		Name:              req.GetName(),
		Muted:             req.GetMuted(),
		Width:             req.GetWidth(),
		Height:            req.GetHeight(),
		DisableDtx:        req.GetDisableDtx(),
		Source:            source,
		Layers:            req.GetLayers(),
		Stereo:            req.GetStereo(),
		DisableRed:        req.GetDisableRed(),
		Encryption:        req.GetEncryption(),
		Stream:            req.GetStream(),
		AudioFeatures:     req.GetAudioFeatures(),
		BackupCodecPolicy: req.GetBackupCodecPolicy(),
		// frame metadata the publisher appends (trailer.go; newPublishedTrack
		// drops unknown values and repeats)
		PacketTrailerFeatures: req.GetPacketTrailerFeatures(),
	}
	if kind == webrtc.RTPCodecTypeVideo && len(info.Layers) == 0 {
		info.Layers = []*livekit.VideoLayer{{Quality: livekit.VideoQuality_HIGH, Width: req.GetWidth(), Height: req.GetHeight()}}
	}
	for _, l := range info.Layers {
		if l.Width > info.Width {
			info.Width, info.Height = l.Width, l.Height
		}
	}
	info.Simulcast = len(info.Layers) > 1
	cids := []string{req.GetCid()}
	for _, sc := range req.GetSimulcastCodecs() {
		mime := normalizeMime(kind, sc.GetCodec())
		if info.MimeType == "" {
			info.MimeType = mime
		}
		info.Codecs = append(info.Codecs, &livekit.SimulcastCodecInfo{
			MimeType: mime, Cid: sc.GetCid(), Layers: info.Layers, VideoLayerMode: sc.GetVideoLayerMode(),
		})
		if sc.GetCid() != "" {
			cids = append(cids, sc.GetCid())
		}
		if len(sc.GetLayers()) > 1 {
			info.Simulcast = true
		}
	}
	t := newPublishedTrack(p, info, req.GetCid(), kind)
	p.pending[req.GetCid()] = &pendingTrack{cid: req.GetCid(), cids: cids, kind: kind, t: t}
	p.published[info.Sid] = t
	out := proto.Clone(info).(*livekit.TrackInfo)
	p.mu.Unlock()
	p.log.Debug().Str("track_sid", info.Sid).Str("kind", kind.String()).Msg("track published")
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_TrackPublished{TrackPublished: &livekit.TrackPublishedResponse{Cid: req.GetCid(), Track: out}}})
}

// Bounds on an add_track request: its TrackInfo goes to every participant
// on each change of the publisher, and each simulcast codec carries the
// track's layers (layers × codecs VideoLayers).
const (
	maxSimulcastCodecs = 4   // a primary and backup codecs (livekit-client sends up to 2)
	maxTrackText       = 256 // bytes of a track's name, stream and cids
	maxAudioFeatures   = 16
)

// addTrackTooLarge says which bound req exceeds, or "".
func addTrackTooLarge(req *livekit.AddTrackRequest) string {
	switch {
	case len(req.GetLayers()) > maxLayers:
		return fmt.Sprintf("layers: at most %d", maxLayers)
	case len(req.GetSimulcastCodecs()) > maxSimulcastCodecs:
		return fmt.Sprintf("simulcast_codecs: at most %d", maxSimulcastCodecs)
	case len(req.GetName()) > maxTrackText, len(req.GetStream()) > maxTrackText, len(req.GetCid()) > maxTrackText:
		return fmt.Sprintf("name, stream and cid: at most %d bytes each", maxTrackText)
	case len(req.GetAudioFeatures()) > maxAudioFeatures:
		return fmt.Sprintf("audio_features: at most %d", maxAudioFeatures)
	}
	for _, sc := range req.GetSimulcastCodecs() {
		if len(sc.GetLayers()) > maxLayers {
			return fmt.Sprintf("simulcast_codecs.layers: at most %d", maxLayers)
		}
		if len(sc.GetCid()) > maxTrackText || len(sc.GetCodec()) > maxTrackText {
			return fmt.Sprintf("simulcast_codecs cid and codec: at most %d bytes each", maxTrackText)
		}
	}
	return ""
}

// normalizeMime turns "vp8" or "video/vp8" into "video/VP8" style.
func normalizeMime(kind webrtc.RTPCodecType, codec string) string {
	if codec == "" {
		return ""
	}
	c := strings.ToLower(codec)
	c = strings.TrimPrefix(strings.TrimPrefix(c, "video/"), "audio/")
	names := map[string]string{"vp8": "VP8", "vp9": "VP9", "h264": "H264", "h265": "H265", "av1": "AV1", "opus": "opus", "red": "red"}
	if n, ok := names[c]; ok {
		c = n
	}
	return kind.String() + "/" + c
}

// recordOfferMids remembers the msid track id of each m-section of a
// publisher offer the connection took (the "sdp cid" of livekit-server).
// Every offer lists all sections, so each replaces the last one's map:
// mids of sections gone do not pile up.
func (p *Participant) recordOfferMids(sdp string) {
	next := offerMids(sdp)
	p.mu.Lock()
	p.midCid = next
	p.mu.Unlock()
}

// offerMids maps the mid of each media section of sdp to the track id of
// the section's a=msid line ("a=msid:<stream> <track>"), the first of each
// attribute as pion reads them. A scan of the lines, not a parse: it costs
// nothing beyond the bounds the offer passed already.
func offerMids(sdp string) map[string]string {
	mids := map[string]string{}
	var mid, msid string
	var inMedia, haveMid, haveMsid bool
	done := func() {
		if !inMedia || mid == "" || !haveMsid {
			return
		}
		if f := strings.Fields(msid); len(f) == 2 {
			mids[mid] = f[1]
		}
	}
	for line := range strings.Lines(sdp) {
		line = strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(line, "m=") {
			done()
			inMedia, mid, msid, haveMid, haveMsid = true, "", "", false, false
			continue
		}
		if !inMedia || !strings.HasPrefix(line, "a=") {
			continue
		}
		switch key, value, _ := strings.Cut(line[len("a="):], ":"); key {
		case "mid":
			if !haveMid {
				mid, haveMid = value, true
			}
		case "msid":
			if !haveMsid {
				msid, haveMsid = value, true
			}
		}
	}
	done()
	return mids
}

// sourceMisfitLocked reports whether the participant's sources are limited
// and source does not fit a track of kind. Where a token limits the sources
// (say, microphone only), the source is what the permission is about, so a
// video track calling itself the microphone is refused; livekit-server
// checks only the source. Caller holds p.mu.
func (p *Participant) sourceMisfitLocked(source livekit.TrackSource, kind webrtc.RTPCodecType) bool {
	return len(p.video.CanPublishSources) > 0 && !sourceFitsKind(source, kind)
}

// sourceFitsKind reports whether a track of kind may carry source.
func sourceFitsKind(source livekit.TrackSource, kind webrtc.RTPCodecType) bool {
	switch source {
	case livekit.TrackSource_MICROPHONE, livekit.TrackSource_SCREEN_SHARE_AUDIO:
		return kind == webrtc.RTPCodecTypeAudio
	case livekit.TrackSource_CAMERA, livekit.TrackSource_SCREEN_SHARE:
		return kind == webrtc.RTPCodecTypeVideo
	}
	return true
}

// matchTrackLocked finds the published track an incoming RTP stream
// belongs to, in livekit-server's order: msid track id == cid, == a
// simulcast codec cid, the offer's msid for the mid, then the first
// pending track of the same kind.
func (p *Participant) matchTrackLocked(remote *webrtc.TrackRemote, mid string) *publishedTrack {
	id := remote.ID()
	sdpCid := p.midCid[mid]
	for _, t := range p.published {
		if t.mid != "" && t.mid == mid && t.kind == remote.Kind() && !t.isClosed() {
			return t
		}
	}
	for _, match := range []string{id, sdpCid} {
		if match == "" {
			continue
		}
		for _, pt := range p.pending {
			if pt.kind != remote.Kind() {
				continue // video on a declared audio track is not that track
			}
			for _, c := range pt.cids {
				if c == match {
					return pt.t
				}
			}
		}
	}
	var first *pendingTrack
	for _, pt := range p.pending {
		if pt.kind == remote.Kind() && pt.t.mid == "" && (first == nil || pt.t.created.Before(first.t.created)) {
			first = pt
		}
	}
	if first != nil {
		return first.t
	}
	return nil
}

// onTrack is pion's OnTrack for the publisher connection: one call per
// RTP stream (per simulcast layer).
func (p *Participant) onTrack(remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	mid := ""
	for _, tr := range p.pub.GetTransceivers() {
		if tr.Receiver() == recv {
			mid = tr.Mid()
			break
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	t := p.matchTrackLocked(remote, mid)
	if t == nil {
		p.mu.Unlock()
		p.s.metrics.unmatchedMedia.Inc()
		p.log.Warn().Str("kind", remote.Kind().String()).Str("rid", remote.RID()).Msg("no add_track for incoming media")
		return
	}
	if t.mid == "" {
		t.mid = mid
	}
	delete(p.pending, t.cid)
	p.mu.Unlock()

	first, l := t.addLayer(remote, recv)
	if l == nil {
		return
	}
	p.log.Debug().Str("track_sid", t.sid).Str("rid", remote.RID()).Str("codec", remote.Codec().MimeType).Msg("media arrived")
	if p.recv != nil {
		p.recv.addLayer(l)
	}
	p.rtcpStreams.Add(1)
	if !p.s.goAdd(l.readLoop) {
		return
	}
	if first {
		p.s.metrics.tracks.Inc()
		p.mu.Lock()
		p.changedLocked()
		p.mu.Unlock()
		p.room.trackLive(p, t)
	} else {
		t.layerAdded()
	}
}

// layerEnded is called when a stream's read loop ends. When every stream
// of a track ended while the participant stays (the client removed the
// track by renegotiation), the track is unpublished.
func (p *Participant) layerEnded(l *layerRecv) {
	l.ended.Store(true)
	if p.recv != nil {
		p.recv.removeLayer(l)
	}
	if p.isClosed() {
		return
	}
	t := l.t
	t.mu.Lock()
	for _, o := range t.layers {
		if o != nil && !o.ended.Load() {
			t.mu.Unlock()
			return
		}
	}
	t.mu.Unlock()
	p.unpublish(t)
}

// unpublish removes a track: the others see it gone from the
// participant's info and lose their subscriptions; the publisher gets
// track_unpublished.
func (p *Participant) unpublish(t *publishedTrack) {
	p.mu.Lock()
	if p.published[t.sid] != t {
		p.mu.Unlock()
		return
	}
	delete(p.published, t.sid)
	delete(p.pending, t.cid)
	p.changedLocked()
	p.mu.Unlock()
	if t.close() {
		p.s.metrics.tracks.Dec()
	}
	p.log.Debug().Str("track_sid", t.sid).Msg("track unpublished")
	p.publishUpdate(false)
	p.room.trackGone(t)
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_TrackUnpublished{TrackUnpublished: &livekit.TrackUnpublishedResponse{TrackSid: t.sid}}})
}

// liveTracks returns the participant's tracks that receive media.
func (p *Participant) liveTracks() []*publishedTrack {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*publishedTrack
	for _, t := range p.published {
		if t.isLive() {
			out = append(out, t)
		}
	}
	return out
}

// setTrackMuted records a mute from the client or (byServer) from
// MutePublishedTrack, which also tells the publisher.
func (p *Participant) setTrackMuted(sid string, muted, byServer bool) (*livekit.TrackInfo, bool) {
	p.mu.Lock()
	t := p.published[sid]
	if t == nil {
		p.mu.Unlock()
		return nil, false
	}
	changed := t.setMuted(muted)
	if changed {
		p.changedLocked()
	}
	p.mu.Unlock()
	if byServer {
		p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Mute{Mute: &livekit.MuteTrackRequest{Sid: sid, Muted: muted}}})
		if p.remote != nil {
			p.remote.mutedByServer(sid, muted)
		}
	}
	if changed && t.isLive() {
		p.publishUpdate(false)
	}
	return t.trackInfoAny(), true
}

func (p *Participant) updateTrackInfo(sid string, f func(*livekit.TrackInfo)) {
	p.mu.Lock()
	t := p.published[sid]
	if t == nil {
		p.mu.Unlock()
		return
	}
	t.mu.Lock()
	before := proto.Clone(t.info)
	f(t.info)
	same := proto.Equal(before, t.info)
	t.mu.Unlock()
	if same {
		// A repeated update changes nothing and is sent to nobody: each
		// broadcast goes to every participant.
		p.mu.Unlock()
		return
	}
	p.changedLocked()
	p.mu.Unlock()
	if t.isLive() {
		p.publishUpdate(false)
	}
}

// findTrack returns the live published track with sid.
func (r *Room) findTrack(sid string) *publishedTrack {
	for _, p := range r.participantList() {
		p.mu.Lock()
		t := p.published[sid]
		p.mu.Unlock()
		if t != nil && t.isLive() {
			return t
		}
	}
	return nil
}
