package sfu

import (
	"errors"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/proto"
)

// maxLayers is the number of simulcast layers: q, h, f.
const maxLayers = 3

// layerTimeout is how long a layer may send nothing before it counts as
// paused (a 30 fps layer sends a packet every 33 ms; publishers pause
// layers for dynacast or congestion).
const layerTimeout = 1500 * time.Millisecond

// audioActiveLevel is the ssrc-audio-level (-dBov) at or below which a
// packet counts as speech, as livekit-server does.
const audioActiveLevel = 35

// publishedTrack is one published track and its fan-out. The RTP read
// loop of each layer forwards every packet inline to the downtracks in the
// copy-on-write snapshot dts: no channel, lock or allocation per packet.
type publishedTrack struct {
	owner   *Participant
	sid     string
	cid     string
	kind    webrtc.RTPCodecType
	created time.Time

	mu     sync.Mutex // guards info, layers (assignment), mid, live, closed
	info   *livekit.TrackInfo
	mid    string
	layers [maxLayers]*layerRecv
	live   bool
	closed bool
	codec  webrtc.RTPCodecParameters
	// trailer: the publisher appends packet trailers to its frames
	// (packet_trailer_features in its TrackInfo; trailer.go)
	trailer bool

	dynMax        int32     // highest layer the publisher was told to send
	dynLowerSince time.Time // when fewer layers became enough

	dtMu sync.Mutex
	dts  atomic.Pointer[[]*downTrack]

	relay trackRelay // relay sinks and hooks (relay.go)

	everSubscribed atomic.Bool // the owner was told track_subscribed

	// Audio level accounting for speaker detection, reset every interval.
	audioActive   atomic.Uint32
	audioTotal    atomic.Uint32
	audioLevelSum atomic.Uint64
}

// markSubscribed tells the owner, once, that a subscriber receives the
// track (track_subscribed; livekit-client then ends an audio track's
// pre-connect buffer). A subscriber on another node counts when its node
// first wants a layer; hidden subscribers do not count (livekit-server).
func (t *publishedTrack) markSubscribed() {
	if t.everSubscribed.Swap(true) {
		return
	}
	p := t.owner
	if p.remote != nil || !p.trackSubscribedEvent {
		return
	}
	p.sc.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_TrackSubscribed{TrackSubscribed: &livekit.TrackSubscribed{TrackSid: t.sid}}})
}

func newPublishedTrack(owner *Participant, info *livekit.TrackInfo, cid string, kind webrtc.RTPCodecType) *publishedTrack {
	info.PacketTrailerFeatures = knownTrailerFeatures(info.GetPacketTrailerFeatures()) // a relayed info's too
	t := &publishedTrack{owner: owner, sid: info.Sid, cid: cid, kind: kind, created: time.Now(), info: info, dynMax: maxLayers - 1,
		trailer: len(info.GetPacketTrailerFeatures()) > 0}
	empty := []*downTrack{}
	t.dts.Store(&empty)
	return t
}

// trackInfo returns a copy of the info, or nil while no media arrived.
func (t *publishedTrack) trackInfo() *livekit.TrackInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.live || t.closed {
		return nil
	}
	return proto.Clone(t.info).(*livekit.TrackInfo)
}

func (t *publishedTrack) trackInfoAny() *livekit.TrackInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	return proto.Clone(t.info).(*livekit.TrackInfo)
}

func (t *publishedTrack) isLive() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.live && !t.closed
}

func (t *publishedTrack) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

func (t *publishedTrack) setMuted(muted bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.info.Muted == muted {
		return false
	}
	t.info.Muted = muted
	return true
}

func (t *publishedTrack) codecParams() webrtc.RTPCodecParameters {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.codec
}

// ridLayer maps a RID to the layer index: q/h/f low to high; no RID
// (no simulcast) is layer 0.
func ridLayer(rid string) int {
	switch rid {
	case "h":
		return 1
	case "f":
		return 2
	default:
		return 0
	}
}

// addLayer registers an incoming stream; first is true for the track's
// first stream (the track goes live).
func (t *publishedTrack) addLayer(remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) (first bool, l *layerRecv) {
	idx := ridLayer(remote.RID())
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.layers[idx] != nil {
		return false, nil
	}
	cacheSize := 0
	if t.kind == webrtc.RTPCodecTypeVideo {
		cacheSize = t.owner.s.cfg.RTC.PacketCacheSize
		switch remote.RID() {
		case "q":
			cacheSize /= 4
		case "h":
			cacheSize /= 2
		}
		cacheSize = max(cacheSize, 16)
	}
	l = &layerRecv{
		t:      t,
		idx:    idx,
		remote: remote,
		hold:   true,
		pc:     t.owner.pub,
		ssrc:   uint32(remote.SSRC()),
		isKey:  keyframeDetector(remote.Codec().MimeType),
	}
	t.owner.s.initBatch(&l.batch)
	if cacheSize > 0 {
		l.cache = newPacketCache(cacheSize)
	}
	if t.kind == webrtc.RTPCodecTypeAudio {
		for _, e := range recv.GetParameters().HeaderExtensions {
			if e.URI == uriAudioLevel {
				l.audioLevelID = uint8(e.ID)
			}
		}
	}
	t.layers[idx] = l
	if !t.live {
		first = true
		t.live = true
		t.codec = remote.Codec()
		t.info.MimeType = remote.Codec().MimeType
		t.info.Mid = t.mid
		for _, c := range t.info.Codecs {
			if c.Mid == "" {
				c.Mid = t.mid
			}
		}
	}
	return first, l
}

// layerAdded re-evaluates the downtracks' layer choice.
func (t *publishedTrack) layerAdded() {
	for _, dt := range *t.dts.Load() {
		dt.selectLayer()
	}
	t.relayReselect()
}

func (t *publishedTrack) layer(i int) *layerRecv {
	if i < 0 || i >= maxLayers {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.layers[i]
}

// layerLive tells whether layer i received packets in the last second.
func (t *publishedTrack) layerLive(i int) bool {
	l := t.layer(i)
	return l != nil && l.live.Load()
}

func (t *publishedTrack) lowestLiveLayer() int32 {
	for i := 0; i < maxLayers; i++ {
		if t.layerLive(i) {
			return int32(i)
		}
	}
	return 0
}

// bitrate of layer i over the last interval, bit/s.
func (t *publishedTrack) bitrate(i int) uint64 {
	l := t.layer(i)
	if l == nil {
		return 0
	}
	return l.bitrate.Load()
}

func (t *publishedTrack) addDownTrack(dt *downTrack) bool {
	t.dtMu.Lock()
	defer t.dtMu.Unlock()
	if t.isClosed() {
		return false
	}
	old := *t.dts.Load()
	next := make([]*downTrack, 0, len(old)+1)
	next = append(next, old...)
	next = append(next, dt)
	t.dts.Store(&next)
	return true
}

func (t *publishedTrack) removeDownTrack(dt *downTrack) {
	t.dtMu.Lock()
	defer t.dtMu.Unlock()
	old := *t.dts.Load()
	next := make([]*downTrack, 0, len(old))
	for _, d := range old {
		if d != dt {
			next = append(next, d)
		}
	}
	t.dts.Store(&next)
	t.relayWant()
}

// close marks the track unpublished; it reports whether it was live.
func (t *publishedTrack) close() bool {
	t.mu.Lock()
	wasLive := t.live && !t.closed
	t.closed = true
	layers := t.layers
	t.mu.Unlock()
	for _, l := range layers {
		if l != nil {
			l.stopReader()
		}
	}
	t.dtMu.Lock()
	empty := []*downTrack{}
	t.dts.Store(&empty)
	t.dtMu.Unlock()
	return wasLive
}

// requestKeyframe sends a PLI for layer i to the publisher, at most every
// 500 ms for the low layer and every second for the others
// (livekit-server's throttle).
func (t *publishedTrack) requestKeyframe(i int) {
	if t.kind != webrtc.RTPCodecTypeVideo || i < 0 || i >= maxLayers {
		return
	}
	l := t.layer(i)
	if l == nil {
		return
	}
	l.requestKeyframe()
}

// periodic updates per-layer rates and liveness and returns the loss
// fraction of the interval.
func (t *publishedTrack) periodic(now time.Time) (float64, bool) {
	var lost, recv uint64
	changed := false
	for i := 0; i < maxLayers; i++ {
		l := t.layer(i)
		if l == nil {
			continue
		}
		l.statMu.Lock()
		pk, by, lo := l.packets.Load(), l.bytes.Load(), l.lost.Load()
		dtSec := now.Sub(l.lastAt).Seconds()
		if !l.lastAt.IsZero() && dtSec > 0 {
			l.bitrate.Store(uint64(float64(by-l.lastBytes) * 8 / dtSec))
			recv += pk - l.lastPackets
			lost += lo - l.lastLost
			// Time based, so a late or doubled tick cannot flap a layer.
			wasLive := l.live.Load()
			isLive := monoNow()-l.lastPkt.Load() < int64(layerTimeout)
			if wasLive != isLive {
				l.live.Store(isLive)
				changed = true
			}
		}
		l.lastAt, l.lastBytes, l.lastPackets, l.lastLost = now, by, pk, lo
		l.statMu.Unlock()
	}
	if changed {
		t.layerAdded()
	}
	t.dynacast(now)
	if recv+lost == 0 {
		return 0, false
	}
	return float64(lost) / float64(recv+lost), true
}

// takeCounters returns the counters since the last call (for metrics);
// packets are per layer.
func (t *publishedTrack) takeCounters() (packets [maxLayers]uint64, bytes, lost, plis, direct uint64) {
	for i := 0; i < maxLayers; i++ {
		l := t.layer(i)
		if l == nil {
			continue
		}
		l.statMu.Lock()
		pk, by, lo, pl, di := l.packets.Load(), l.bytes.Load(), l.lost.Load(), l.plis.Load(), l.direct.Load()
		direct += di - l.flushedDirect
		l.flushedDirect = di
		packets[i] += pk - l.flushedPackets
		bytes += by - l.flushedBytes
		lost += lo - l.flushedLost
		plis += pl - l.flushedPLIs
		l.flushedPackets, l.flushedBytes, l.flushedLost, l.flushedPLIs = pk, by, lo, pl
		l.statMu.Unlock()
	}
	return
}

// takeAudioLevel returns the speaking state of the last interval.
func (t *publishedTrack) takeAudioLevel() (level float32, active bool) {
	act := t.audioActive.Swap(0)
	total := t.audioTotal.Swap(0)
	sum := t.audioLevelSum.Swap(0)
	if act < 3 || act*10 < total*3 {
		return 0, false
	}
	dbov := float64(sum) / float64(act)
	return float32(math.Pow(10, -dbov/20)), true
}

// layerRecv is one incoming RTP stream (one simulcast layer).
type layerRecv struct {
	t            *publishedTrack
	idx          int
	remote       *webrtc.TrackRemote // nil for a relayed layer
	hold         bool                // its read loop may hold a frame's copies (readLoop)
	rid          string              // of a relayed layer
	onKeyframe   func(layer int)     // relayed layer: keyframe requests go to the relay
	pc           *webrtc.PeerConnection
	ssrc         uint32
	cache        *packetCache
	isKey        func([]byte) bool
	audioLevelID uint8

	lastPLI  atomic.Int64
	deferred atomic.Bool  // a throttled keyframe request waits for the window's end
	lastKey  atomic.Int64 // monoNow of the last keyframe packet (read loop)
	live     atomic.Bool
	lastPkt  atomic.Int64 // monoNow of the last packet
	ended    atomic.Bool  // the stream ended (publisher removed it)
	stopping atomic.Bool  // the track closed: the read loop ends at its next deadline (stopReader)

	// mu serialises handle: the read loop and, for a stream the direct
	// receive path took over, the socket reader. The fields below are
	// under it.
	mu       sync.Mutex
	highest  uint16
	started  bool
	batch    sendBatch
	deadline bool        // a read deadline bounds a held frame (pion's path)
	heldBy   *heldLayers // the socket reader that will flush a held frame (direct path)
	shared   *heldLayers // the reader whose shared batch took the last packet (direct path)

	// written by the read loop only
	packets atomic.Uint64
	bytes   atomic.Uint64
	lost    atomic.Uint64
	plis    atomic.Uint64
	bitrate atomic.Uint64
	direct  atomic.Uint64 // packets that came by the direct receive path

	statMu                                                 sync.Mutex // guards the fields below
	lastAt                                                 time.Time
	lastBytes, lastPackets, lastLost                       uint64
	flushedPackets, flushedBytes, flushedLost, flushedPLIs uint64
	flushedDirect                                          uint64
}

func (l *layerRecv) requestKeyframe() {
	now := time.Now().UnixNano()
	interval := int64(time.Second)
	if l.idx == 0 {
		interval = int64(500 * time.Millisecond)
	}
	last := l.lastPLI.Load()
	if now-last < interval {
		// Throttled: ask once more when the window ends unless a keyframe
		// came meanwhile, so a subscriber arriving just after another one
		// waits at most the window, not the publisher's keyframe interval.
		if l.deferred.CompareAndSwap(false, true) {
			asked := monoNow()
			time.AfterFunc(time.Duration(interval-(now-last)), func() {
				if l.lastKey.Load() < asked && !l.ended.Load() {
					l.requestKeyframe()
				}
				l.deferred.Store(false)
			})
		}
		return
	}
	if !l.lastPLI.CompareAndSwap(last, now) {
		return
	}
	l.plis.Add(1)
	if l.onKeyframe != nil {
		l.onKeyframe(l.idx)
		return
	}
	if l.pc == nil {
		return // unit tests
	}
	_ = l.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: l.ssrc}})
}

// readLoop reads the stream and forwards every packet inline. While the
// batch holds a frame's copies (segmentation offload), a read deadline
// bounds the wait for the frame's next packet. Once the direct receive
// path took the stream over (fastrecv.go), pion delivers nothing more: the
// socket reader flushes held frames (heldLayers), and the loop flushes at
// a deadline it had set before and notices the stream's end.
func (l *layerRecv) readLoop() {
	buf := make([]byte, 1500)
	var h rtp.Header
	l.live.Store(true)
	for {
		n, _, err := l.remote.Read(buf)
		l.mu.Lock()
		if err != nil {
			var ne net.Error
			timeout := errors.As(err, &ne) && ne.Timeout()
			if l.batch.held() {
				l.batch.flush()
			}
			if timeout && !l.stopping.Load() {
				l.setDeadline(time.Time{})
				l.deadline = false
				l.mu.Unlock()
				continue
			}
			l.mu.Unlock()
			l.t.owner.layerEnded(l)
			return
		}
		l.handle(buf[:n], &h)
		l.holdLocked()
		l.mu.Unlock()
	}
}

// deliver handles a packet of the direct receive path. A stream of fewer
// than gsoKeepMin subscribers puts its copies into the socket reader's
// (hl's) shared batch, sent once the socket is drained; a frame of
// gsoKeepMin subscribers or more stays in the layer's own batch until the
// frame ends or the read deadline (gsoHoldMax) passes.
func (l *layerRecv) deliver(pkt []byte, h *rtp.Header, hl *heldLayers) {
	l.direct.Add(1)
	l.mu.Lock()
	if hl.batch.out != nil && len(*l.t.dts.Load()) < gsoKeepMin {
		// Few subscribers: into the reader's shared batch, sent at the
		// drain. What the layer's own batch still holds leaves first, so
		// a stream's packets stay in order.
		if l.batch.held() {
			l.batch.flush()
			l.holdLocked()
		}
		l.shared = hl
		l.handleInto(pkt, h, &hl.batch)
		l.mu.Unlock()
		return
	}
	if l.shared != nil {
		// The layer leaves the shared batch (more subscribers now, or
		// another reader): what it left there goes first.
		if l.shared == hl && hl.batch.held() {
			hl.batch.flush()
		}
		l.shared = nil
	}
	l.handle(pkt, h)
	if l.batch.held() && l.batch.n < gsoKeepMin {
		hl.add(l)
	} else {
		l.holdLocked()
	}
	l.mu.Unlock()
}

// holdLocked bounds the wait for a held frame's next packet by the read
// loop's deadline.
func (l *layerRecv) holdLocked() {
	if l.remote == nil {
		return // unit tests
	}
	switch held := l.batch.held(); {
	case held && !l.deadline:
		l.setDeadline(time.Now().Add(gsoHoldMax))
		l.deadline = true
	case !held && l.deadline:
		l.setDeadline(time.Time{})
		l.deadline = false
	}
}

// setDeadline sets the read loop's deadline, unless the reader is being
// stopped: then the deadline stays in the past (stopReader sets its own
// after raising the flag; whichever comes last leaves it there).
func (l *layerRecv) setDeadline(t time.Time) {
	_ = l.remote.SetReadDeadline(t)
	if l.stopping.Load() {
		_ = l.remote.SetReadDeadline(time.Now())
	}
}

// stopReader ends the read loop even when pion never closes its stream.
// pion can open a receiver's streams after the receiver was stopped (the
// start a description queued runs after the connection closed it, or a
// simulcast layer's first packet arrives as the section turns inactive);
// nothing closes those, and a read loop on one would wait forever, which
// holds up the server's shutdown (s.wg).
func (l *layerRecv) stopReader() {
	if l.remote == nil || l.stopping.Swap(true) {
		return
	}
	_ = l.remote.SetReadDeadline(time.Now())
}

// handle processes one received RTP packet: sequence accounting, packet
// cache, keyframe and audio level detection, then inline fan-out to the
// downtracks. h is scratch space reused across calls. The caller holds mu.
func (l *layerRecv) handle(pkt []byte, h *rtp.Header) { l.handleInto(pkt, h, nil) }

// handleInto is handle with the copies going to shared (a socket
// reader's batch, flushed by the reader) instead of the layer's own batch.
func (l *layerRecv) handleInto(pkt []byte, h *rtp.Header, shared *sendBatch) {
	hn, err := h.Unmarshal(pkt)
	if err != nil {
		return
	}
	end := len(pkt)
	if h.Padding {
		pad := int(pkt[end-1])
		if pad == 0 || hn+pad > end {
			return
		}
		end -= pad
		h.Padding, h.PaddingSize = false, 0
	}
	if end <= hn {
		return // padding-only probe
	}
	payload := pkt[hn:end]
	if l.started {
		if d := h.SequenceNumber - l.highest; d != 0 && d < 0x8000 {
			if d > 1 {
				l.lost.Add(uint64(d - 1))
			}
			l.highest = h.SequenceNumber
		}
	} else {
		l.highest, l.started = h.SequenceNumber, true
	}
	l.packets.Add(1)
	l.bytes.Add(uint64(len(pkt)))
	now := monoNow()
	l.lastPkt.Store(now)
	if !l.live.Load() {
		// A paused layer (dynacast, congestion) resumed.
		l.live.Store(true)
		l.t.layerAdded()
	}

	t := l.t
	keyframe := t.kind == webrtc.RTPCodecTypeAudio // audio may start anywhere
	if l.cache != nil {
		keyframe = l.isKey(payload)
		if keyframe {
			l.lastKey.Store(now)
		}
		l.cache.put(h.SequenceNumber, pkt[:end])
	} else if l.audioLevelID != 0 {
		if ext := h.GetExtension(l.audioLevelID); len(ext) > 0 {
			lvl := uint32(ext[0] & 0x7f)
			t.audioTotal.Add(1)
			if lvl <= audioActiveLevel {
				t.audioActive.Add(1)
				t.audioLevelSum.Add(uint64(lvl))
			}
		}
	}
	b := &l.batch
	switch {
	case shared != nil:
		b = shared
	case b.out == nil:
		b = nil
	case b.held() && b.ts != h.Timestamp:
		b.flush() // the previous frame's last packet was lost
	}
	trailer := 0 // length of the frame's packet trailer, for the subscribers that cannot read it
	if t.trailer && h.Marker {
		trailer = packetTrailerLen(payload)
	}
	for _, dt := range *t.dts.Load() {
		dt.writeRTP(l.idx, h, payload, trailer, keyframe, now, b)
	}
	if shared != nil {
		if b.nbuf >= gsoMaxHeld {
			b.flush()
		}
	} else if b != nil && b.held() {
		// Video from a publisher is held until the frame's last packet
		// (readLoop's deadline bounds the wait); anything else goes now.
		if !b.gso || !l.hold || l.cache == nil || h.Marker || b.nbuf >= gsoMaxHeld {
			b.flush()
		} else {
			b.ts = h.Timestamp
		}
	}
	t.relayForward(l.idx, h, payload)
}

var monoStart = time.Now()

// monoNow is a monotonic clock in nanoseconds.
func monoNow() int64 { return int64(time.Since(monoStart)) }

// packetCache keeps the last packets of a stream for NACK replies. Slots
// are fixed-size, allocated together with the first packet (a track
// announced but never sent, as a relay may announce thousands, costs no
// slots); a packet larger than a slot is not cached.
type packetCache struct {
	mu   sync.Mutex
	n    int
	buf  []byte
	seqs []uint16
	lens []uint16
}

const cacheSlot = 1280

func newPacketCache(n int) *packetCache { return &packetCache{n: n} }

func (c *packetCache) put(seq uint16, pkt []byte) {
	if len(pkt) > cacheSlot {
		return
	}
	c.mu.Lock()
	if c.seqs == nil {
		c.buf, c.seqs, c.lens = make([]byte, c.n*cacheSlot), make([]uint16, c.n), make([]uint16, c.n)
	}
	i := int(seq) % c.n
	copy(c.buf[i*cacheSlot:], pkt)
	c.seqs[i] = seq
	c.lens[i] = uint16(len(pkt))
	c.mu.Unlock()
}

// get copies packet seq into dst and returns it, or nil if gone.
func (c *packetCache) get(seq uint16, dst []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seqs == nil {
		return nil
	}
	i := int(seq) % c.n
	if c.lens[i] == 0 || c.seqs[i] != seq {
		return nil
	}
	n := copy(dst, c.buf[i*cacheSlot:i*cacheSlot+int(c.lens[i])])
	return dst[:n]
}

// keyframeDetector returns the keyframe test for a codec's RTP payload.
func keyframeDetector(mime string) func([]byte) bool {
	switch strings.ToLower(mime) {
	case "video/vp8":
		return isVP8Keyframe
	case "video/h264":
		return isH264Keyframe
	case "video/vp9":
		return isVP9Keyframe
	case "video/av1":
		return isAV1Keyframe
	default:
		return func([]byte) bool { return false }
	}
}

// isVP8Keyframe parses the VP8 payload descriptor (RFC 7741 §4.2) and the
// first byte of the VP8 payload header (P bit 0 = key frame). The header
// stays unencrypted under LiveKit's E2EE.
func isVP8Keyframe(p []byte) bool {
	n, ok := vp8DescriptorLen(p)
	if !ok || len(p) <= n {
		return false
	}
	// S bit set and partition index 0: start of a frame.
	if p[0]&0x10 == 0 || p[0]&0x07 != 0 {
		return false
	}
	return p[n]&0x01 == 0
}

// vp8DescriptorLen returns the length of the VP8 payload descriptor.
func vp8DescriptorLen(p []byte) (int, bool) {
	if len(p) < 1 {
		return 0, false
	}
	n := 1
	if p[0]&0x80 == 0 {
		return n, true
	}
	if len(p) < 2 {
		return 0, false
	}
	x := p[1]
	n++
	if x&0x80 != 0 { // I: picture id
		if len(p) <= n {
			return 0, false
		}
		if p[n]&0x80 != 0 {
			n += 2
		} else {
			n++
		}
	}
	if x&0x40 != 0 { // L: tl0picidx
		n++
	}
	if x&0x30 != 0 { // T or K
		n++
	}
	return n, len(p) >= n
}

// isH264Keyframe looks for an IDR or SPS NAL unit (RFC 6184): single NAL,
// STAP-A or the start of an FU-A.
func isH264Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	switch typ := p[0] & 0x1f; typ {
	case 5, 7:
		return true
	case 24: // STAP-A
		for i := 1; i+2 < len(p); {
			size := int(p[i])<<8 | int(p[i+1])
			if i+2 >= len(p) || size == 0 {
				return false
			}
			if t := p[i+2] & 0x1f; t == 5 || t == 7 {
				return true
			}
			i += 2 + size
		}
	case 28: // FU-A
		if len(p) > 1 && p[1]&0x80 != 0 {
			t := p[1] & 0x1f
			return t == 5 || t == 7
		}
	}
	return false
}

// isVP9Keyframe: not inter-predicted (P=0) and beginning of a frame (B=1).
func isVP9Keyframe(p []byte) bool {
	return len(p) > 0 && p[0]&0x40 == 0 && p[0]&0x08 != 0
}

// isAV1Keyframe: the aggregation header's N bit starts a coded video sequence.
func isAV1Keyframe(p []byte) bool {
	return len(p) > 0 && p[0]&0x08 != 0
}

// layerForQuality maps a requested quality to a layer index. Enums take
// any int32 on the wire: a value outside LOW..HIGH must not become an index.
func (t *publishedTrack) layerForQuality(q livekit.VideoQuality) int32 {
	return clampLayer(int32(q))
}

// clampLayer keeps a layer index taken from a client's request or
// TrackInfo within the layers there are.
func clampLayer(i int32) int32 {
	return max(0, min(i, maxLayers-1))
}

// layerForDimensions picks the smallest published layer at least as large
// as the requested size, else the largest.
func (t *publishedTrack) layerForDimensions(w, h uint32) int32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	layers := t.info.GetLayers()
	if len(layers) <= 1 {
		return maxLayers - 1
	}
	best := int32(-1)
	var bestW uint32
	for i, l := range layers {
		idx := int32(i)
		if l.GetQuality() <= livekit.VideoQuality_HIGH {
			idx = int32(l.GetQuality())
		}
		idx = clampLayer(idx) // the publisher's TrackInfo may declare any quality or number of layers
		if l.GetWidth() >= w && l.GetHeight() >= h && (best < 0 || l.GetWidth() < bestW) {
			best, bestW = idx, l.GetWidth()
		}
	}
	if best < 0 {
		return maxLayers - 1
	}
	return best
}

func (t *publishedTrack) mutedNow() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.info.Muted
}

// vp8Pic locates the picture id and tl0picidx in a VP8 payload descriptor
// (RFC 7741 §4.2); offsets are -1 when absent.
type vp8Pic struct {
	pidAt int
	pid15 bool
	pid   uint16
	tl0At int
	tl0   uint8
}

func parseVP8Pic(p []byte) (vp8Pic, bool) {
	v := vp8Pic{pidAt: -1, tl0At: -1}
	if len(p) < 1 {
		return v, false
	}
	if p[0]&0x80 == 0 {
		return v, true
	}
	if len(p) < 2 {
		return v, false
	}
	x := p[1]
	n := 2
	if x&0x80 != 0 {
		if len(p) <= n {
			return v, false
		}
		v.pidAt = n
		if p[n]&0x80 != 0 {
			if len(p) <= n+1 {
				return v, false
			}
			v.pid15 = true
			v.pid = uint16(p[n]&0x7f)<<8 | uint16(p[n+1])
			n += 2
		} else {
			v.pid = uint16(p[n])
			n++
		}
	}
	if x&0x40 != 0 {
		if len(p) <= n {
			return v, false
		}
		v.tl0At = n
		v.tl0 = p[n]
	}
	return v, true
}

// layerLabel names layer i for metrics.
func (t *publishedTrack) layerLabel(i int) string {
	if t.kind == webrtc.RTPCodecTypeAudio {
		return "audio"
	}
	t.mu.Lock()
	rid := ""
	if l := t.layers[i]; l != nil {
		rid = l.rid
		if l.remote != nil {
			rid = l.remote.RID()
		}
	}
	t.mu.Unlock()
	if rid == "" {
		return "video"
	}
	return rid
}
