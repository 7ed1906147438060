package bridge

import (
	"encoding/binary"
	"math/bits"
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

// relayMediaEngine registers one payload type per codec: the relay only
// needs pion to accept the packets; the track's real codec (with its fmtp)
// travels in the participant message.
func relayMediaEngine() (*webrtc.MediaEngine, error) {
	m := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}
	audio := []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, PayloadType: 111},
	}
	video := []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: fb}, PayloadType: 96},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, RTCPFeedback: fb}, PayloadType: 98},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, RTCPFeedback: fb}, PayloadType: 102},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeAV1, ClockRate: 90000, RTCPFeedback: fb}, PayloadType: 45},
	}
	for _, c := range audio {
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, err
		}
	}
	for _, c := range video {
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
	}
	return m, nil
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
	rates    [3]uint64 // worker: last measured bitrate per layer

	senders [3]atomic.Pointer[relaySender] // ready: the peer receives the SSRC
	asked   [3]atomic.Bool                 // a sender was requested
	pending [3]*relaySender                // worker only
}

// onWant handles the peer's wanted layers for a local track.
func (a *association) onWant(sid string, mask uint8) {
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
	s.hdr.SSRC, s.hdr.PayloadType = s.track.ssrc, s.track.pt
	if _, err := s.track.ws.WriteRTP(&s.hdr, payload); err == nil {
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

func (ot *outTrack) stop() {
	if ot.sub != nil {
		ot.sub.Close()
	}
	for i := range ot.pending {
		if s := ot.pending[i]; s != nil {
			_ = s.sender.Stop()
		}
	}
}

// senderTrack is the TrackLocal of one relayed layer.
type senderTrack struct {
	id   string
	kind webrtc.RTPCodecType
	mime string

	// set by Bind, before the sender is published to the packet path
	ws   webrtc.TrackLocalWriter
	ssrc uint32
	pt   uint8
}

func (t *senderTrack) ID() string                { return t.id }
func (t *senderTrack) RID() string               { return "" }
func (t *senderTrack) StreamID() string          { return "gxconf-relay" }
func (t *senderTrack) Kind() webrtc.RTPCodecType { return t.kind }
func (t *senderTrack) Unbind(webrtc.TrackLocalContext) error {
	return nil
}

func (t *senderTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	for _, c := range ctx.CodecParameters() {
		if strings.EqualFold(c.MimeType, t.mime) {
			t.ws, t.ssrc, t.pt = ctx.WriteStream(), uint32(ctx.SSRC()), uint8(c.PayloadType)
			return c, nil
		}
	}
	return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
}

// relaySender sends one layer of a track to the peer.
type relaySender struct {
	ot     *outTrack
	layer  int
	track  *senderTrack
	sender *webrtc.RTPSender
	hdr    rtp.Header // the publisher's read loop only
}

// newSender creates the SRTP sender of a layer and announces its SSRC.
func (a *association) newSender(ot *outTrack, layer int) {
	if ot.pending[layer] != nil {
		return
	}
	st := &senderTrack{id: ot.sid, kind: ot.kind, mime: ot.mime}
	sender, err := a.api.NewRTPSender(st, a.dtls)
	if err != nil {
		a.log.Warn().Err(err).Str("track_sid", ot.sid).Msg("failed to create relay sender")
		return
	}
	if err := sender.Send(sender.GetParameters()); err != nil {
		a.log.Warn().Err(err).Str("track_sid", ot.sid).Msg("failed to start relay sender")
		return
	}
	s := &relaySender{ot: ot, layer: layer, track: st, sender: sender}
	ot.pending[layer] = s
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		s.rtcpLoop()
	}()
	a.send(&message{Type: msgStream, SID: ot.sid, Layer: layer, SSRC: st.ssrc, Kind: kindOf(ot.kind)})
}

// rtcpLoop handles the peer's RTCP for this layer: keyframe requests go
// to the origin's throttle, NACKs are answered from its packet cache.
func (s *relaySender) rtcpLoop() {
	buf := make([]byte, 1500)
	pkt := make([]byte, 1500)
	var h rtp.Header
	a := s.ot.a
	for {
		n, _, err := s.sender.Read(buf)
		if err != nil {
			return
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil || s.ot.sub == nil {
			continue
		}
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				a.stats.plisIn.Add(1)
				s.ot.sub.RequestKeyframe(s.layer)
			case *rtcp.TransportLayerNack:
				for _, pair := range p.Nacks {
					pair.Range(func(seq uint16) bool {
						b := s.ot.sub.Packet(s.layer, seq, pkt)
						if b == nil {
							return true
						}
						hn, err := h.Unmarshal(b)
						if err != nil {
							return true
						}
						h.Padding, h.PaddingSize = false, 0
						h.SSRC, h.PayloadType = s.track.ssrc, s.track.pt
						if _, err := s.track.ws.WriteRTP(&h, b[hn:]); err == nil {
							a.stats.rtx.Add(1)
						}
						return true
					})
				}
			}
		}
	}
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
		if a.canStop.Load() {
			_ = rs.recv.Stop()
		} else {
			keep = append(keep, rs)
		}
	}
	clear(a.receivers[len(keep):])
	a.receivers = keep
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
	if _, err := it.a.dtls.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err == nil {
		it.a.stats.plisOut.Add(1)
	}
}

// recvStream receives one announced SSRC, until its track is gone (see
// drain.go for why stopping it is safe).
type recvStream struct {
	sid    string
	layer  int
	video  bool
	ssrc   uint32
	recv   *webrtc.RTPReceiver
	target atomic.Pointer[inTrack]
}

var nackPool = sync.Pool{New: func() any { s := make([]uint16, 0, 64); return &s }}

func (a *association) onStream(m *message) {
	kind := webrtc.RTPCodecTypeVideo
	if m.Kind == "audio" {
		kind = webrtc.RTPCodecTypeAudio
	}
	for _, rs := range a.receivers {
		if rs.ssrc == m.SSRC {
			a.send(&message{Type: msgStreamReady, SID: m.SID, Layer: m.Layer})
			return
		}
	}
	recv, err := a.api.NewRTPReceiver(kind, a.dtls)
	if err != nil {
		a.log.Warn().Err(err).Msg("failed to create relay receiver")
		return
	}
	if err := recv.Receive(webrtc.RTPReceiveParameters{Encodings: []webrtc.RTPDecodingParameters{{
		RTPCodingParameters: webrtc.RTPCodingParameters{SSRC: webrtc.SSRC(m.SSRC)},
	}}}); err != nil {
		a.log.Warn().Err(err).Msg("failed to start relay receiver")
		_ = recv.Stop()
		return
	}
	rs := &recvStream{sid: m.SID, layer: m.Layer, video: kind == webrtc.RTPCodecTypeVideo, ssrc: m.SSRC, recv: recv}
	if it := a.inTracks[m.SID]; it != nil {
		rs.target.Store(it)
		it.ssrc[m.Layer].Store(m.SSRC)
	}
	a.receivers = append(a.receivers, rs)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.readLoop(rs)
	}()
	a.send(&message{Type: msgStreamReady, SID: m.SID, Layer: m.Layer})
}

// maxNackGap is the largest sequence gap that is NACKed; larger gaps
// (a paused layer, a restart) are not losses worth repairing.
const maxNackGap = 64

// readLoop feeds one relayed layer into the local receive path and NACKs
// relay losses once (answered from the origin's packet cache).
func (a *association) readLoop(rs *recvStream) {
	tr := rs.recv.Track()
	buf := make([]byte, 1500)
	var highest uint16
	started := false
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if n < 12 {
			continue
		}
		if rs.video {
			a.stats.recvPk[rs.layer].Add(1)
			a.stats.recvBy[rs.layer].Add(uint64(n))
		} else {
			a.stats.recvAudio.Add(1)
			a.stats.recvAudioBy.Add(uint64(n))
		}
		seq := binary.BigEndian.Uint16(buf[2:4])
		if !started {
			highest, started = seq, true
		} else if d := seq - highest; d != 0 && d < 0x8000 {
			if d > 1 && d <= maxNackGap && rs.video {
				a.nack(rs, highest+1, seq)
			}
			highest = seq
		}
		if it := rs.target.Load(); it != nil {
			it.rt.WriteRTP(rs.layer, buf[:n])
		}
		if f := a.recvHook.Load(); f != nil {
			(*f)(rs.layer, buf[:n])
		}
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
	_, _ = a.dtls.WriteRTCP([]rtcp.Packet{&rtcp.TransportLayerNack{MediaSSRC: rs.ssrc, Nacks: rtcp.NackPairsFromSequenceNumbers(seqs)}})
	*sp = seqs
	nackPool.Put(sp)
}

// defaultLayerRate estimates a layer's bitrate before it was measured.
var defaultLayerRate = [3]uint64{150_000, 500_000, 1_700_000}

// rate is the layer's current bitrate, else the last measured, else an
// estimate (a layer dynacast paused measures 0).
func (ot *outTrack) rate(layer int) float64 {
	if br := ot.sub.Bitrate(layer); br > 0 {
		ot.rates[layer] = br
	}
	if ot.rates[layer] > 0 {
		return float64(ot.rates[layer])
	}
	if ot.kind == webrtc.RTPCodecTypeAudio {
		return 64_000
	}
	return float64(defaultLayerRate[layer])
}

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
				budget -= ot.rate(0)
			}
			ot.sub.SetWanted(ot.wanted)
			continue
		}
		video = append(video, ot)
	}
	if !limited {
		return
	}
	sort.Slice(video, func(i, j int) bool { return video[i].sid < video[j].sid })
	for _, ot := range video {
		ot.capLayer = 0
		budget -= ot.rate(0)
	}
	for up := true; up; {
		up = false
		for _, ot := range video {
			top := bits.Len8(ot.wanted) - 1
			if ot.capLayer >= top {
				continue
			}
			extra := ot.rate(ot.capLayer+1) - ot.rate(ot.capLayer)
			if extra <= budget {
				budget -= extra
				ot.capLayer++
				up = true
			}
		}
	}
	for _, ot := range video {
		m := ot.wanted & uint8(1<<(ot.capLayer+1)-1)
		if m == 0 {
			m = 1 << ot.capLayer
		}
		ot.sub.SetWanted(m)
	}
}
