package bridge

import (
	"math/bits"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Payload types of the relay, by codec: the track's real codec (with its
// fmtp) travels in the participant message; these only label packets.
var relayPayloadTypes = map[string]uint8{
	strings.ToLower(webrtc.MimeTypeOpus): 111,
	strings.ToLower(webrtc.MimeTypeVP8):  96,
	strings.ToLower(webrtc.MimeTypeVP9):  98,
	strings.ToLower(webrtc.MimeTypeH264): 102,
	strings.ToLower(webrtc.MimeTypeAV1):  45,
}

func kindOf(k webrtc.RTPCodecType) string {
	if k == webrtc.RTPCodecTypeAudio {
		return "audio"
	}
	return "video"
}

// Origin side.

// outTrack is a local track relayed to the peer: the sink of an
// sfu.RelaySubscription and one SRTP sender per layer.
type outTrack struct {
	a        *association
	sid      string
	identity string
	kind     webrtc.RTPCodecType
	mime     string
	sub      *sfu.RelaySubscription // nil in benchmarks

	wanted   uint8     // worker: layers the peer wants
	capLayer int       // worker: highest layer the budget allows
	rates    [3]uint64 // worker: smoothed bitrate per layer (sample)

	senders [3]atomic.Pointer[relaySender] // ready: the peer receives the SSRC
	asked   [3]atomic.Bool                 // a sender was requested
	pending [3]*relaySender                // worker only
}

// onWant handles the peer's wanted layers for a local track. A peer
// deployment gets nothing of a track none of its participants may receive
// (holdPeerWant).
func (a *association) onWant(sid string, mask uint8) {
	a.setWant(sid, a.holdPeerWant(sid, mask, nil))
}

// setWant relays the layers mask of local track sid to the peer.
func (a *association) setWant(sid string, mask uint8) {
	ot := a.out[sid]
	if ot == nil {
		if mask == 0 {
			return
		}
		lt := a.rr.LocalTrack(sid)
		if lt == nil {
			return
		}
		ot = &outTrack{a: a, sid: sid, kind: lt.Kind(), mime: lt.Codec().MimeType}
		for _, p := range a.rr.LocalParticipants() {
			for _, t := range p.GetTracks() {
				if t.GetSid() == sid {
					ot.identity = p.GetIdentity()
				}
			}
		}
		if ot.sub = lt.Subscribe(ot); ot.sub == nil {
			return
		}
		a.out[sid] = ot
	}
	ot.wanted = mask
	a.countTracks()
	a.allocate()
}

// countTracks publishes how many tracks cross the link now in each
// direction, and the sids of those sent (for the copies per track of a
// peer). A track stays known (its streams, its publication on the
// receiving node) after its last subscriber there went, but while no layer
// of it is wanted nothing of it crosses, and the gauges say so (worker
// only).
func (a *association) countTracks() {
	var in int64
	sids := make([]string, 0, len(a.out))
	for sid, ot := range a.out {
		if ot.wanted != 0 {
			sids = append(sids, sid)
		}
	}
	for _, it := range a.inTracks {
		if it.wanted != 0 {
			in++
		}
	}
	a.outSIDs.Store(&sids)
	a.stats.outTracks.Store(int64(len(sids)))
	a.stats.inTracks.Store(in)
}

// WriteRTP implements sfu.RelaySink; it runs on the publisher's read loop.
func (ot *outTrack) WriteRTP(layer int, h *rtp.Header, payload []byte) {
	s := ot.senders[layer].Load()
	if s == nil {
		if !ot.asked[layer].Swap(true) {
			ot.a.post(func() { ot.a.newSender(ot, layer) })
		}
		return
	}
	if n := ot.a.lossEvery.Load(); n > 0 && ot.kind == webrtc.RTPCodecTypeVideo && ot.a.lossN.Add(1)%n == 0 {
		return
	}
	s.hdr = *h
	s.hdr.SSRC, s.hdr.PayloadType = s.ssrc, s.pt
	if err := ot.a.sendRTP(&s.hdr, payload, s.plain[:], s.out[:]); err == nil {
		if ot.kind == webrtc.RTPCodecTypeAudio {
			ot.a.stats.sentAudio.Add(1)
			ot.a.stats.sentAudioBy.Add(uint64(len(payload) + h.MarshalSize()))
			return
		}
		ot.a.stats.sentPk[layer].Add(1)
		ot.a.stats.sentBy[layer].Add(uint64(len(payload) + h.MarshalSize()))
	}
}

// ready: the peer can receive layer's SSRC.
func (ot *outTrack) ready(layer int) {
	s := ot.pending[layer]
	if s == nil {
		return
	}
	ot.senders[layer].Store(s)
	if ot.sub != nil {
		ot.sub.RequestKeyframe(layer)
	}
}

// stop detaches the track's sink and forgets its SSRCs (worker).
func (ot *outTrack) stop() {
	if ot.sub != nil {
		ot.sub.Close()
	}
	for i, s := range ot.pending {
		if s != nil {
			delete(ot.a.bySSRC, s.ssrc)
			ot.pending[i] = nil
			ot.senders[i].Store(nil)
		}
	}
	ot.a.publishSenders()
}

// relaySender sends one layer of a track to the peer.
type relaySender struct {
	ot    *outTrack
	layer int
	ssrc  uint32
	pt    uint8

	// the publisher's read loop only
	hdr   rtp.Header
	plain [1500]byte
	out   [1500 + srtpOverhead]byte

	// the socket's read loop only
	rtxAt rtxSlots
}

// newSender creates the stream of a layer and announces its SSRC (worker).
func (a *association) newSender(ot *outTrack, layer int) {
	if ot.pending[layer] != nil {
		return
	}
	pt, ok := relayPayloadTypes[strings.ToLower(ot.mime)]
	if !ok {
		a.log.Warn().Str("track_sid", ot.sid).Str("mime", ot.mime).Msg("cannot relay this codec")
		return
	}
	ssrc := rand.Uint32()
	for ssrc == 0 || a.bySSRC[ssrc] != nil {
		ssrc = rand.Uint32()
	}
	s := &relaySender{ot: ot, layer: layer, ssrc: ssrc, pt: pt}
	ot.pending[layer] = s
	a.bySSRC[ssrc] = s
	a.publishSenders()
	a.send(&message{Type: msgStream, SID: ot.sid, Layer: layer, SSRC: ssrc, Kind: kindOf(ot.kind)})
}

// publishSenders hands the read loop a copy of bySSRC (worker).
func (a *association) publishSenders() {
	m := make(map[uint32]*relaySender, len(a.bySSRC))
	for k, v := range a.bySSRC {
		m[k] = v
	}
	a.senders.Store(&m)
}

// publishStreams hands the read loop the receivers by SSRC (worker).
func (a *association) publishStreams() {
	m := make(map[uint32]*recvStream, len(a.receivers))
	for _, rs := range a.receivers {
		m[rs.ssrc] = rs
	}
	a.streams.Store(&m)
}

// Receiving side.

// inTrack is a peer's track published here.
type inTrack struct {
	a    *association
	sid  string
	kind webrtc.RTPCodecType
	rt   *sfu.RemoteTrack
	ssrc [3]atomic.Uint32 // relay SSRC per layer, for keyframe requests
	// wanted is the layers last asked of the peer (worker only).
	wanted uint8
}

func (a *association) addInTrack(r *remotePart, ti *livekit.TrackInfo, c trackCodec) bool {
	kind := webrtc.RTPCodecTypeVideo
	if ti.GetType() == livekit.TrackType_AUDIO {
		kind = webrtc.RTPCodecTypeAudio
	}
	it := &inTrack{a: a, sid: ti.GetSid(), kind: kind}
	codec := sfu.RelayCodec{
		RTPCodecParameters: webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: c.MimeType, ClockRate: c.ClockRate, Channels: c.Channels, SDPFmtpLine: c.Fmtp,
		}},
		AudioLevelExtID: c.AudioLevel,
	}
	sid := it.sid
	rt, err := r.rp.PublishTrack(ti, codec, func(mask uint8) {
		a.post(func() {
			it.wanted = mask
			a.countTracks()
			a.send(&message{Type: msgWant, SID: sid, Mask: mask})
		})
	}, it.requestKeyframe)
	if err != nil {
		a.log.Info().Err(err).Str("track_sid", sid).Msg("cannot relay track")
		return false
	}
	it.rt = rt
	a.inTracks[sid] = it
	for _, rs := range a.receivers {
		if rs.sid == sid {
			rs.target.Store(it)
			it.ssrc[rs.layer].Store(rs.ssrc)
		}
	}
	return true
}

func (a *association) dropInTrack(sid string) {
	delete(a.inTracks, sid)
	a.countTracks()
	keep := a.receivers[:0]
	for _, rs := range a.receivers {
		if rs.sid != sid {
			keep = append(keep, rs)
			continue
		}
		rs.target.Store(nil)
	}
	clear(a.receivers[len(keep):])
	a.receivers = keep
	a.publishStreams()
}

// requestKeyframe sends a PLI for layer to the origin (already throttled
// by the sfu).
func (it *inTrack) requestKeyframe(layer int) {
	if layer < 0 || layer > 2 {
		return
	}
	ssrc := it.ssrc[layer].Load()
	if ssrc == 0 {
		return
	}
	if it.a.sendRTCP(&rtcp.PictureLossIndication{MediaSSRC: ssrc}) == nil {
		it.a.stats.plisOut.Add(1)
	}
}

// recvStream is one announced SSRC, received until its track is gone;
// later packets of it are dropped as unknown.
type recvStream struct {
	sid    string
	layer  int
	video  bool
	ssrc   uint32
	target atomic.Pointer[inTrack]

	// the socket's read loop only
	highest uint16
	started bool
}

var nackPool = sync.Pool{New: func() any { s := make([]uint16, 0, 64); return &s }}

// onStream receives an SSRC the peer announced for a layer of one of its
// tracks published here. Streams of tracks that are not (or no longer)
// published here and layers outside 0..2 are dropped, leaving nothing
// behind; a new SSRC for a layer replaces the layer's previous one, so a
// track has at most three receivers.
func (a *association) onStream(m *message) {
	it := a.inTracks[m.SID]
	if it == nil || m.Layer < 0 || m.Layer > 2 {
		a.log.Debug().Str("track_sid", m.SID).Int("layer", m.Layer).Msg("Ignored a stream of an unknown track or layer")
		return
	}
	for _, rs := range a.receivers {
		if rs.ssrc == m.SSRC {
			a.send(&message{Type: msgStreamReady, SID: m.SID, Layer: m.Layer})
			return
		}
	}
	rs := &recvStream{sid: m.SID, layer: m.Layer, video: m.Kind != "audio", ssrc: m.SSRC}
	rs.target.Store(it)
	it.ssrc[m.Layer].Store(m.SSRC)
	replaced := false
	for i, old := range a.receivers {
		if old.sid == m.SID && old.layer == m.Layer {
			old.target.Store(nil)
			a.receivers[i] = rs
			replaced = true
			break
		}
	}
	if !replaced {
		a.receivers = append(a.receivers, rs)
	}
	a.publishStreams()
	a.send(&message{Type: msgStreamReady, SID: m.SID, Layer: m.Layer})
}

// maxNackGap is the largest sequence gap that is NACKed; larger gaps
// (a paused layer, a restart) are not losses worth repairing.
const maxNackGap = 64

// onMedia feeds one authentic packet of a relayed layer into the local
// receive path and NACKs relay losses once (answered from the origin's
// packet cache). It runs on the socket's read loop.
func (a *association) onMedia(rs *recvStream, pkt []byte, seq uint16) {
	n := len(pkt)
	if rs.video {
		a.stats.recvPk[rs.layer].Add(1)
		a.stats.recvBy[rs.layer].Add(uint64(n))
	} else {
		a.stats.recvAudio.Add(1)
		a.stats.recvAudioBy.Add(uint64(n))
	}
	if !rs.started {
		rs.highest, rs.started = seq, true
	} else if d := seq - rs.highest; d != 0 && d < 0x8000 {
		if d > 1 && d <= maxNackGap && rs.video {
			a.nack(rs, rs.highest+1, seq)
		}
		rs.highest = seq
	}
	if it := rs.target.Load(); it != nil {
		it.rt.WriteRTP(rs.layer, pkt)
	}
	if f := a.recvHook.Load(); f != nil {
		(*f)(rs.layer, pkt)
	}
}

// nack asks the origin for sequence numbers from..to-1.
func (a *association) nack(rs *recvStream, from, to uint16) {
	sp := nackPool.Get().(*[]uint16)
	seqs := (*sp)[:0]
	for s := from; s != to; s++ {
		seqs = append(seqs, s)
	}
	a.stats.nacksOut.Add(uint64(len(seqs)))
	_ = a.sendRTCP(&rtcp.TransportLayerNack{MediaSSRC: rs.ssrc, Nacks: rtcp.NackPairsFromSequenceNumbers(seqs)})
	*sp = seqs
	nackPool.Put(sp)
}

// defaultLayerRate estimates a layer's bitrate before it was measured.
var defaultLayerRate = [3]uint64{150_000, 500_000, 1_700_000}

// sample folds the layers' bitrates measured now into ot.rates, once per
// allocation: half the old value and half the new, so that one window
// with a key frame or a burst of late frames does not move the budget's
// layer choice by itself. A layer that measures 0 (paused by dynacast)
// keeps its last rate.
func (ot *outTrack) sample() {
	for l := range ot.rates {
		br := ot.sub.Bitrate(l)
		switch {
		case br == 0:
		case ot.rates[l] == 0:
			ot.rates[l] = br
		default:
			ot.rates[l] = (ot.rates[l] + br) / 2
		}
	}
}

// rate is the layer's smoothed bitrate, else an estimate.
func (ot *outTrack) rate(layer int) float64 {
	if ot.rates[layer] > 0 {
		return float64(ot.rates[layer])
	}
	if ot.kind == webrtc.RTPCodecTypeAudio {
		return 64_000
	}
	return float64(defaultLayerRate[layer])
}

// upgradeHeadroom: a video layer above the one relayed now is added only
// if its extra bitrate, times this, fits the budget; keeping a layer needs
// only that it fits. Without the margin a layer whose rate sits at the
// budget's edge would be added and dropped every second.
const upgradeHeadroom = 1.25

// allocate fits the peer's wanted layers into the association's budget:
// audio first, then every wanted video track at its lowest layer, then
// one layer up at a time, round robin, while the budget allows.
func (a *association) allocate() {
	limited := a.b.cfg.MaxBitrate > 0
	budget := float64(a.b.cfg.MaxBitrate)
	var video []*outTrack
	for _, ot := range a.out {
		if ot.sub == nil {
			continue
		}
		if !limited || ot.kind == webrtc.RTPCodecTypeAudio || ot.wanted == 0 {
			if limited && ot.wanted != 0 {
				ot.sample()
				budget -= ot.rate(0)
			}
			ot.sub.SetWanted(ot.wanted)
			continue
		}
		ot.sample()
		video = append(video, ot)
	}
	if !limited {
		return
	}
	fitLayers(budget, video)
	for _, ot := range video {
		ot.sub.SetWanted(ot.capMask())
	}
}

// fitLayers sets each video track's capLayer: every track at its lowest
// layer first, then one layer up at a time, round robin in sid order,
// while the budget allows (a layer above the previous cap needs
// upgradeHeadroom).
func fitLayers(budget float64, video []*outTrack) {
	sort.Slice(video, func(i, j int) bool { return video[i].sid < video[j].sid })
	prev := make([]int, len(video))
	for i, ot := range video {
		prev[i] = ot.capLayer
		ot.capLayer = 0
		budget -= ot.rate(0)
	}
	for up := true; up; {
		up = false
		for i, ot := range video {
			top := bits.Len8(ot.wanted) - 1
			if ot.capLayer >= top {
				continue
			}
			extra := ot.rate(ot.capLayer+1) - ot.rate(ot.capLayer)
			need := extra
			if ot.capLayer+1 > prev[i] {
				need *= upgradeHeadroom
			}
			if need <= budget {
				budget -= extra
				ot.capLayer++
				up = true
			}
		}
	}
}

// capMask is the wanted layers up to capLayer, or capLayer alone if none
// of them is wanted.
func (ot *outTrack) capMask() uint8 {
	m := ot.wanted & uint8(1<<(ot.capLayer+1)-1)
	if m == 0 {
		m = 1 << ot.capLayer
	}
	return m
}
