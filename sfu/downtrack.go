package sfu

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// seqMapSize is how many sent video packets a downtrack can map back to
// the publisher's sequence numbers for NACK replies (power of two).
const seqMapSize = 256

type seqEntry struct {
	out   uint16
	in    uint16
	ts    uint32
	rtxAt uint32 // ms on the monotonic clock of the last retransmission
	layer int8
	valid bool
}

// rtxInterval is the least time between two retransmissions of one packet:
// receivers repeat NACKs until the packet arrives, and a retransmission
// may still be in flight.
const rtxInterval = 100 // ms

// Retransmission budget: every forwarded packet earns one token, a
// retransmission costs rtxCost, at most rtxBurst tokens are kept. So
// retransmissions stay under a quarter of the forwarded rate, and a
// receiver that drops because it is overloaded cannot trigger a NACK
// storm that overloads it further.
const (
	rtxCost  = 4
	rtxBurst = 256
)

// downTrack forwards one published track to one subscriber. It is pion's
// TrackLocal for the subscriber connection. writeRTP is called inline by
// the publisher's read loops; only the layer being forwarded takes mu, so
// the lock is uncontended except against RTCP handling.
type downTrack struct {
	// What writeRTP reads and writes for every copy comes first, packed
	// into as few cache lines as it fits (two, with out a third): in a
	// meeting each copy of a packet is another downtrack's, reached with
	// cold caches, and each line is a miss (sfu/README.md).
	current atomic.Int32 // layer being forwarded, -1 none
	target  atomic.Int32 // layer to switch to at its next keyframe, -1 none
	mu      sync.Mutex   // guards the fields below but those marked otherwise

	bound      bool
	haveOut    bool
	vp8        bool // VP8 picture id / tl0picidx continuity across layer switches
	havePid    bool
	pidPending bool
	levelIn    uint8 // publisher's audio level extension id
	levelOut   uint8 // subscriber's audio level extension id
	pt         uint8
	tl0Offset  uint8
	lastTl0    uint8
	cur        int32
	ssrc       uint32
	seqOffset  uint16
	segStart   uint16 // oldest input sequence number still forwarded
	tsOffset   uint32
	lastOutSeq uint16
	pidOffset  uint16
	lastPid    uint16
	lastOutTs  uint32
	lastAt     int64
	rtxTokens  int
	seqMap     []seqEntry
	sub        *Participant
	seal       rtpSealer // direct send path (fastpath.go), AEAD profiles (seal.keys set)
	srtpKeys   *fastKeys
	gso        gsoSlot
	direct     uint64
	packets    uint64
	bytes      uint64
	out        rtp.Header // reused per packet: a local would escape to the heap

	track    *publishedTrack
	id       string
	streamID string
	kind     webrtc.RTPCodecType
	codec    webrtc.RTPCodecParameters // the publisher's codec
	sender   *webrtc.RTPSender
	attached bool // has a sender on the connection; guarded by sub.mu
	// stripTrailer: the track's frames end in packet trailers and the
	// subscriber cannot read them (trailer.go)
	stripTrailer bool

	pref     atomic.Int32 // highest layer wanted by track_setting
	bweCap   atomic.Int32 // highest layer the subscriber's bandwidth allows
	disabled atomic.Bool
	probe    probeState // owned by the subscriber's tick (allocateBandwidth)

	ws        webrtc.TrackLocalWriter
	clockRate uint32
	extBuf    []rtp.Extension
	scratch   []byte
	payBuf    []byte
	srtpCtx   *srtp.Context // direct send path, other profiles
	encHdr    rtp.Header
	encBuf    []byte

	nacks, retrans, stripped                                  uint64
	flushedPk, flushedBy, flushedNk, flushedRt, flushedDirect uint64
	flushedStripped                                           uint64
	fracLost                                                  float64
	rrAt                                                      time.Time
}

func newDownTrack(sub *Participant, t *publishedTrack) *downTrack {
	dt := &downTrack{
		sub:      sub,
		track:    t,
		id:       t.sid,
		streamID: t.owner.sid + "|" + t.sid,
		kind:     t.kind,
		codec:    t.codecParams(),
		extBuf:   make([]rtp.Extension, 0, 1),
		cur:      -1,
	}
	dt.vp8 = strings.EqualFold(dt.codec.MimeType, webrtc.MimeTypeVP8)
	dt.stripTrailer = t.trailer && !sub.readsTrailers
	dt.current.Store(-1)
	dt.target.Store(-1)
	dt.pref.Store(maxLayers - 1)
	dt.bweCap.Store(maxLayers - 1)
	dt.probe.layer = -1
	if dt.kind == webrtc.RTPCodecTypeVideo {
		dt.seqMap = make([]seqEntry, seqMapSize)
	}
	return dt
}

// TrackLocal implementation.

func (dt *downTrack) ID() string                { return dt.id }
func (dt *downTrack) RID() string               { return "" }
func (dt *downTrack) StreamID() string          { return dt.streamID }
func (dt *downTrack) Kind() webrtc.RTPCodecType { return dt.kind }

// Bind is called by pion once the subscriber answered; from then on the
// downtrack receives packets.
func (dt *downTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	chosen, ok := matchCodec(ctx.CodecParameters(), dt.codec)
	if !ok {
		return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
	}
	var levelOut uint8
	for _, e := range ctx.HeaderExtensions() {
		if e.URI == uriAudioLevel {
			levelOut = uint8(e.ID)
		}
	}
	var levelIn uint8
	if l := dt.track.layer(0); l != nil {
		levelIn = l.audioLevelID
	}
	dt.mu.Lock()
	dt.ssrc = uint32(ctx.SSRC())
	dt.pt = uint8(chosen.PayloadType)
	dt.ws = ctx.WriteStream()
	dt.levelIn, dt.levelOut = levelIn, levelOut
	dt.clockRate = chosen.ClockRate
	dt.bound = true
	dt.mu.Unlock()
	dt.sub.setSendTrack(uint32(ctx.SSRC()), dt)
	reader := ctx.RTCPReader()
	dt.sub.s.goAdd(func() { dt.rtcpLoop(reader) })
	if dt.track.addDownTrack(dt) {
		dt.selectLayer()
		dt.track.dynacast(time.Now())
		if !dt.sub.hidden {
			dt.track.markSubscribed()
		}
	}
	return chosen, nil
}

// Unbind stops forwarding.
func (dt *downTrack) Unbind(webrtc.TrackLocalContext) error {
	dt.track.removeDownTrack(dt)
	dt.mu.Lock()
	dt.bound = false
	ssrc := dt.ssrc
	dt.mu.Unlock()
	dt.sub.removeSendTrack(ssrc, dt)
	return nil
}

// matchCodec picks the negotiated codec for the publisher's codec: same
// mime type, and for H.264 preferably the same fmtp.
func matchCodec(negotiated []webrtc.RTPCodecParameters, want webrtc.RTPCodecParameters) (webrtc.RTPCodecParameters, bool) {
	var found *webrtc.RTPCodecParameters
	for i := range negotiated {
		c := &negotiated[i]
		if !strings.EqualFold(c.MimeType, want.MimeType) {
			continue
		}
		if c.SDPFmtpLine == want.SDPFmtpLine {
			return *c, true
		}
		if found == nil {
			found = c
		}
	}
	if found == nil {
		return webrtc.RTPCodecParameters{}, false
	}
	return *found, true
}

// attach adds the downtrack to the subscriber connection, restricted to
// the publisher's codec.
func (dt *downTrack) attach() error {
	pc := dt.sub.sendPC()
	sender, err := pc.AddTrack(dt)
	if err != nil {
		return err
	}
	dt.sub.mu.Lock()
	dt.sender = sender
	dt.attached = true
	dt.sub.mu.Unlock()
	var prefs []webrtc.RTPCodecParameters
	for _, c := range subscriberCodecs(dt.kind) {
		if strings.EqualFold(c.MimeType, dt.codec.MimeType) {
			if c.SDPFmtpLine == dt.codec.SDPFmtpLine {
				prefs = append([]webrtc.RTPCodecParameters{c}, prefs...)
			} else {
				prefs = append(prefs, c)
			}
		}
	}
	for _, tr := range pc.GetTransceivers() {
		if tr.Sender() == sender {
			if err := tr.SetCodecPreferences(prefs); err != nil {
				dt.sub.log.Debug().Err(err).Msg("failed to set codec preferences")
			}
			break
		}
	}
	return nil
}

// detach stops forwarding and, with removeSender, removes the sender from
// the subscriber connection (a renegotiation must follow).
func (dt *downTrack) detach(removeSender bool) {
	dt.track.removeDownTrack(dt)
	dt.mu.Lock()
	dt.bound = false
	dt.mu.Unlock()
	dt.sub.mu.Lock()
	sender := dt.sender
	dt.sub.mu.Unlock()
	if removeSender && sender != nil {
		if dt.sub.single {
			dt.sub.retire(sender)
		}
		if err := dt.sub.removeSender(dt.sub.sendPC(), sender); err != nil {
			dt.sub.log.Trace().Err(err).Msg("failed to remove track")
		}
	}
}

// segWindow is how far behind the newest forwarded packet a late one
// may be and still be forwarded (seconds of video, a minute of audio).
const segWindow = 4096

// writeRTP forwards one packet of layer. h and payload belong to the
// caller and are not modified.
// payload ends with a packet trailer of trailer bytes (0: none), which a
// subscriber that cannot read it does not get.
func (dt *downTrack) writeRTP(layer int, h *rtp.Header, payload []byte, trailer int, keyframe bool, now int64, b *sendBatch) {
	l := int32(layer)
	if l != dt.current.Load() && (!keyframe || l != dt.target.Load()) {
		return
	}
	dt.mu.Lock()
	if !dt.bound {
		dt.mu.Unlock()
		return
	}
	if l != dt.cur {
		if !keyframe || l != dt.target.Load() {
			dt.mu.Unlock()
			return
		}
		dt.switchLocked(l, h, now)
	} else if d := int16(h.SequenceNumber - dt.segStart); d < 0 {
		dt.mu.Unlock() // from before the switch to this layer, or far too late
		return
	} else if d > segWindow {
		// Trail the newest packet, or after 32768 packets every packet
		// would compare as older than the switch.
		dt.segStart = h.SequenceNumber - segWindow
	}
	if trailer > 0 && dt.stripTrailer {
		payload = payload[:len(payload)-trailer]
		dt.stripped++
	}
	out := &dt.out
	*out = *h
	out.SSRC = dt.ssrc
	out.PayloadType = dt.pt
	out.SequenceNumber = h.SequenceNumber - dt.seqOffset
	out.Timestamp = h.Timestamp - dt.tsOffset
	out.Extension = false
	out.Extensions = nil
	var level []byte // the audio level element, the only extension forwarded
	if dt.levelOut != 0 && dt.levelIn != 0 {
		level = h.GetExtension(dt.levelIn)
	}
	if !dt.haveOut || int16(out.SequenceNumber-dt.lastOutSeq) > 0 {
		dt.lastOutSeq, dt.lastOutTs, dt.lastAt, dt.haveOut = out.SequenceNumber, out.Timestamp, now, true
	}
	var pic vp8Pic
	munge := false
	if dt.vp8 {
		if v, ok := parseVP8Pic(payload); ok {
			pic, munge = v, dt.mungeVP8Locked(&v)
		}
	}
	if dt.seqMap != nil {
		e := &dt.seqMap[out.SequenceNumber&(seqMapSize-1)]
		e.out, e.in, e.ts, e.rtxAt, e.layer, e.valid = out.SequenceNumber, h.SequenceNumber, out.Timestamp, 0, int8(l), true
	}
	dt.packets++
	dt.bytes += uint64(len(payload))
	if dt.rtxTokens < rtxBurst {
		dt.rtxTokens++
	}
	if b != nil {
		if dest := dt.sub.direct.Load(); dest != nil && dt.directContextLocked() {
			if enc := dt.sealLocked(b.next(), out, level, payload, munge, &pic); enc != nil {
				b.add(enc, dest, b.slotFor(dest, &dt.gso))
				dt.direct++
				dt.mu.Unlock()
				return
			}
		}
	}
	dt.setLevelLocked(out, level)
	if munge && (dt.pidOffset != 0 || dt.tl0Offset != 0) {
		// The payload is shared with the other downtracks: rewrite a copy.
		if dt.payBuf == nil {
			dt.payBuf = make([]byte, 1500)
		}
		payload = dt.payBuf[:copy(dt.payBuf, payload)]
		writeVP8Pic(payload, &pic)
	}
	_, _ = dt.ws.WriteRTP(out, payload)
	dt.mu.Unlock()
}

// directContextLocked makes sure the downtrack can protect its packets
// with the subscriber's current keys — its own sealer for AEAD profiles
// (seal.go), else a pion SRTP context; false when the direct path is not
// usable.
func (dt *downTrack) directContextLocked() bool {
	keys := dt.sub.fastKeys.Load()
	if keys == nil {
		return false
	}
	if dt.srtpKeys != keys {
		if sk, err := keys.sealer(); err == nil {
			dt.seal, dt.srtpCtx = rtpSealer{keys: sk}, nil
		} else {
			ctx, err := srtp.CreateContext(keys.key, keys.salt, keys.profile)
			if err != nil {
				return false
			}
			dt.seal, dt.srtpCtx = rtpSealer{}, ctx
		}
		dt.srtpKeys = keys
	}
	return true
}

// setLevelLocked gives out the audio level element (level nil: none).
func (dt *downTrack) setLevelLocked(out *rtp.Header, level []byte) {
	if level != nil {
		out.Extensions = dt.extBuf[:0]
		_ = out.SetExtension(dt.levelOut, level)
	}
}

// sealLocked writes the SRTP packet of out (with the audio level element
// level) and payload into buf, the VP8 picture ids of pic rewritten when
// munge; nil if it cannot (the caller sends on pion's path).
func (dt *downTrack) sealLocked(buf []byte, out *rtp.Header, level, payload []byte, munge bool, pic *vp8Pic) []byte {
	var n, hdrLen int
	ok := false
	if dt.seal.keys != nil {
		n, hdrLen, ok = putRTP(buf, out, dt.levelOut, level, payload)
	}
	if !ok {
		dt.setLevelLocked(out, level)
		m, err := rtp.MarshalPacketTo(buf, out, payload) //nolint:staticcheck
		if err != nil {
			return nil
		}
		n, hdrLen = m, m-len(payload)
	}
	if munge {
		writeVP8Pic(buf[hdrLen:n], pic)
	}
	if dt.seal.keys != nil {
		return dt.seal.seal(buf, n, hdrLen)
	}
	enc, err := dt.srtpCtx.EncryptRTP(buf, buf[:n], &dt.encHdr)
	if err != nil || len(enc) > len(buf) {
		return nil
	}
	return enc
}

// switchLocked starts forwarding layer l at its keyframe h: sequence
// numbers continue from the last one sent, timestamps advance by the wall
// clock time since the last packet.
func (dt *downTrack) switchLocked(l int32, h *rtp.Header, now int64) {
	if dt.haveOut {
		dt.seqOffset = h.SequenceNumber - (dt.lastOutSeq + 1)
		delta := uint32(uint64(now-dt.lastAt) * uint64(dt.clockRate) / uint64(time.Second))
		if delta == 0 {
			delta = 1
		}
		dt.tsOffset = h.Timestamp - (dt.lastOutTs + delta)
	}
	dt.segStart = h.SequenceNumber
	dt.cur = l
	dt.current.Store(l)
	dt.pidPending = dt.vp8 && dt.havePid
}

// mungeVP8Locked maps the packet's picture id and tl0picidx into the
// downtrack's continuous sequence (v is updated with the output values).
// After a layer switch the keyframe's picture id follows the last one
// sent, as browsers' VP8 reference finders expect.
func (dt *downTrack) mungeVP8Locked(v *vp8Pic) bool {
	if v.pidAt < 0 && v.tl0At < 0 {
		return false
	}
	mask := uint16(0x7f)
	if v.pid15 {
		mask = 0x7fff
	}
	if dt.pidPending {
		dt.pidPending = false
		dt.pidOffset = v.pid - (dt.lastPid + 1)
		dt.tl0Offset = v.tl0 - (dt.lastTl0 + 1)
	}
	if v.pidAt >= 0 {
		v.pid = (v.pid - dt.pidOffset) & mask
		if !dt.havePid || int16((v.pid-dt.lastPid)<<1) > 0 {
			dt.lastPid = v.pid
		}
		dt.havePid = true
	}
	if v.tl0At >= 0 {
		v.tl0 -= dt.tl0Offset
		if int8(v.tl0-dt.lastTl0) > 0 {
			dt.lastTl0 = v.tl0
		}
	}
	return true
}

// writeVP8Pic stores picture id and tl0picidx into a payload descriptor.
func writeVP8Pic(p []byte, v *vp8Pic) {
	if v.pidAt >= 0 {
		if v.pid15 {
			p[v.pidAt] = 0x80 | byte(v.pid>>8)
			p[v.pidAt+1] = byte(v.pid)
		} else {
			p[v.pidAt] = byte(v.pid) & 0x7f
		}
	}
	if v.tl0At >= 0 {
		p[v.tl0At] = v.tl0
	}
}

// selectLayer picks the target layer: the highest live layer at or below
// min(preference, bandwidth cap), else the lowest live one above. Audio
// has the single layer 0; every audio packet may start forwarding.
func (dt *downTrack) selectLayer() {
	if dt.disabled.Load() {
		dt.target.Store(-1)
		dt.mu.Lock()
		dt.cur = -1
		dt.current.Store(-1)
		dt.mu.Unlock()
		return
	}
	if dt.kind == webrtc.RTPCodecTypeAudio {
		dt.target.Store(0)
		return
	}
	want := min(dt.pref.Load(), dt.bweCap.Load())
	best := int32(-1)
	for l := want; l >= 0; l-- {
		if dt.track.layerLive(int(l)) {
			best = l
			break
		}
	}
	if best < 0 {
		for l := want + 1; l < maxLayers; l++ {
			if dt.track.layerLive(int(l)) {
				best = l
				break
			}
		}
	}
	if best < 0 {
		return
	}
	dt.target.Store(best)
	if dt.current.Load() != best {
		dt.track.requestKeyframe(int(best))
	}
}

// applySettings handles track_setting: disabled, or a layer from
// width/height (preferred) or quality.
func (dt *downTrack) applySettings(s *livekit.UpdateTrackSettings) {
	dt.disabled.Store(s.GetDisabled() || s.GetQuality() == livekit.VideoQuality_OFF)
	if dt.kind == webrtc.RTPCodecTypeVideo {
		pref := int32(maxLayers - 1)
		if s.GetWidth() > 0 || s.GetHeight() > 0 {
			pref = dt.track.layerForDimensions(s.GetWidth(), s.GetHeight())
		} else if q := s.GetQuality(); q <= livekit.VideoQuality_HIGH {
			pref = dt.track.layerForQuality(q)
		}
		dt.pref.Store(pref) // both mappings clamp to a layer there is
	}
	dt.selectLayer()
	dt.track.dynacast(time.Now())
}

func (dt *downTrack) preferredLayer() int32 { return dt.pref.Load() }

func (dt *downTrack) setBandwidthCap(l int32) {
	if dt.bweCap.Swap(l) != l {
		dt.selectLayer()
		dt.track.dynacast(time.Now())
	}
}

// rtcpLoop reads the subscriber's RTCP about this downtrack from pion:
// the path of connections whose RTCP the guard does not take (rtcpguard.go).
// pion hands it each packet that names the downtrack's SSRC.
func (dt *downTrack) rtcpLoop(r interceptor.RTCPReader) {
	buf := make([]byte, 1500)
	for {
		n, _, err := r.Read(buf, nil)
		if err != nil {
			return
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		for _, pk := range pkts {
			dt.sub.onRTCP(pk, dt)
		}
	}
}

// onRTCP acts on one RTCP packet from the participant: as a subscriber's,
// keyframe requests, NACKs, REMB and reception reports, each for the
// downtracks whose SSRCs it names; as a publisher's, sender reports. With
// only, the packet came from only's RTCP reader and acts on only alone.
func (p *Participant) onRTCP(pk rtcp.Packet, only *downTrack) {
	find := func(ssrc uint32) *downTrack {
		if only != nil {
			if only.ssrcValue() == ssrc {
				return only
			}
			return nil
		}
		return p.sendTrack(ssrc)
	}
	switch v := pk.(type) {
	case *rtcp.PictureLossIndication:
		if dt := find(v.MediaSSRC); dt != nil {
			dt.keyframeRequested()
		}
	case *rtcp.FullIntraRequest:
		for _, e := range v.FIR {
			if dt := find(e.SSRC); dt != nil {
				dt.keyframeRequested()
			}
		}
	case *rtcp.TransportLayerNack:
		// At most as many sequence numbers as the downtrack remembers,
		// and none once it cannot retransmit: a 1,500-byte datagram of
		// NACKs names up to ~1,500 of them.
		if dt := find(v.MediaSSRC); dt != nil {
			n := 0
			for _, pair := range v.Nacks {
				more := true
				pair.Range(func(seq uint16) bool {
					n++
					more = dt.retransmit(seq) && n < seqMapSize
					return more
				})
				if !more {
					break
				}
			}
		}
	case *rtcp.ReceiverEstimatedMaximumBitrate:
		p.remb.Store(uint64(v.Bitrate))
		p.rembAt.Store(time.Now().UnixNano())
	case *rtcp.ReceiverReport:
		p.onReports(v.Reports, find)
	case *rtcp.SenderReport:
		// A client that sends and receives on one connection reports on
		// what it receives in its sender reports.
		p.onReports(v.Reports, find)
		if p.recv != nil {
			if fb := p.recv.fb.Load(); fb != nil {
				fb.senderReport(v.SSRC, v.NTPTime)
			}
		}
	}
}

// onReports hands each reception report to the downtrack it is about.
func (p *Participant) onReports(reports []rtcp.ReceptionReport, find func(uint32) *downTrack) {
	for i := range reports {
		if dt := find(reports[i].SSRC); dt != nil {
			dt.onReport(&reports[i])
		}
	}
}

// keyframeRequested passes the subscriber's keyframe request on to the
// publisher of the layer being forwarded.
func (dt *downTrack) keyframeRequested() {
	if l := dt.current.Load(); l >= 0 {
		dt.track.requestKeyframe(int(l))
	}
}

// onReport takes the subscriber's reception report for the downtrack.
func (dt *downTrack) onReport(rr *rtcp.ReceptionReport) {
	dt.mu.Lock()
	dt.fracLost = float64(rr.FractionLost) / 256
	dt.rrAt = time.Now()
	dt.mu.Unlock()
}

func (dt *downTrack) ssrcValue() uint32 {
	dt.mu.Lock()
	defer dt.mu.Unlock()
	return dt.ssrc
}

// retransmit answers a NACK for outSeq from the publisher's packet cache.
// It reports whether a NACK for another packet could be answered now: not
// when the downtrack cannot retransmit or has used up its budget.
func (dt *downTrack) retransmit(outSeq uint16) (more bool) {
	dt.mu.Lock()
	defer dt.mu.Unlock()
	dt.nacks++
	if !dt.bound || dt.seqMap == nil {
		return false
	}
	if dt.rtxTokens < rtxCost {
		return false
	}
	e := &dt.seqMap[outSeq&(seqMapSize-1)]
	if !e.valid || e.out != outSeq {
		return true
	}
	nowMs := uint32(monoNow() / int64(time.Millisecond))
	if e.rtxAt != 0 && nowMs-e.rtxAt < rtxInterval {
		return true
	}
	dt.rtxTokens -= rtxCost
	e.rtxAt = max(nowMs, 1)
	l := dt.track.layer(int(e.layer))
	if l == nil || l.cache == nil {
		return true
	}
	if dt.scratch == nil {
		dt.scratch = make([]byte, 1500)
	}
	pkt := l.cache.get(e.in, dt.scratch)
	if pkt == nil {
		return true
	}
	var h rtp.Header
	hn, err := h.Unmarshal(pkt)
	if err != nil {
		return true
	}
	if dt.vp8 && int32(e.layer) == dt.cur {
		if v, ok := parseVP8Pic(pkt[hn:]); ok && (v.pidAt >= 0 || v.tl0At >= 0) {
			mask := uint16(0x7f)
			if v.pid15 {
				mask = 0x7fff
			}
			v.pid = (v.pid - dt.pidOffset) & mask
			v.tl0 -= dt.tl0Offset
			writeVP8Pic(pkt[hn:], &v) // pkt is the downtrack's own copy
		}
	}
	payload := pkt[hn:]
	if dt.stripTrailer && h.Marker {
		payload = payload[:len(payload)-packetTrailerLen(payload)]
	}
	h.SSRC, h.PayloadType, h.SequenceNumber, h.Timestamp = dt.ssrc, dt.pt, outSeq, e.ts
	h.Padding, h.PaddingSize = false, 0
	h.Extension, h.Extensions = false, nil
	dt.retrans++
	if dest := dt.sub.direct.Load(); dest != nil && dt.sub.s.socks.udp != nil && dt.directContextLocked() {
		if dt.encBuf == nil {
			dt.encBuf = make([]byte, 1500)
		}
		if enc := dt.sealLocked(dt.encBuf, &h, nil, payload, false, nil); enc != nil {
			_, _ = dt.sub.s.socks.raw.WriteToAddrPort(enc, dest.ap)
			return true
		}
	}
	_, _ = dt.ws.WriteRTP(&h, payload)
	return true
}

// senderReport returns an RTCP SR for the downtrack, or nil before the
// first packet. A downtrack still waiting for a keyframe asks again.
func (dt *downTrack) senderReport(now time.Time) rtcp.Packet {
	dt.mu.Lock()
	if !dt.bound || !dt.haveOut {
		dt.mu.Unlock()
		dt.rerequestKeyframe()
		return nil
	}
	elapsed := monoNow() - dt.lastAt
	sr := &rtcp.SenderReport{
		SSRC:        dt.ssrc,
		NTPTime:     toNTP(now),
		RTPTime:     dt.lastOutTs + uint32(uint64(elapsed)*uint64(dt.clockRate)/uint64(time.Second)),
		PacketCount: uint32(dt.packets),
		OctetCount:  uint32(dt.bytes),
	}
	dt.mu.Unlock()
	dt.rerequestKeyframe()
	return sr
}

func (dt *downTrack) rerequestKeyframe() {
	if t := dt.target.Load(); t >= 0 && t != dt.current.Load() {
		dt.track.requestKeyframe(int(t))
	}
}

// lossFraction returns the subscriber's last reported loss, if recent.
func (dt *downTrack) lossFraction() (float64, bool) {
	dt.mu.Lock()
	defer dt.mu.Unlock()
	if dt.rrAt.IsZero() || time.Since(dt.rrAt) > 6*time.Second {
		return 0, false
	}
	return dt.fracLost, true
}

func (dt *downTrack) takeCounters() (packets, bytes, nacks, retrans, direct, stripped uint64) {
	dt.mu.Lock()
	defer dt.mu.Unlock()
	packets, bytes, nacks, retrans = dt.packets-dt.flushedPk, dt.bytes-dt.flushedBy, dt.nacks-dt.flushedNk, dt.retrans-dt.flushedRt
	direct, stripped = dt.direct-dt.flushedDirect, dt.stripped-dt.flushedStripped
	dt.flushedPk, dt.flushedBy, dt.flushedNk, dt.flushedRt, dt.flushedDirect = dt.packets, dt.bytes, dt.nacks, dt.retrans, dt.direct
	dt.flushedStripped = dt.stripped
	return
}

// toNTP converts wall clock time to the 64-bit NTP format (RFC 3550 §4).
func toNTP(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800
	secs := uint64(t.Unix()) + ntpEpochOffset
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return secs<<32 | frac
}
