package bridge

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// The relay's SRTP (RFC 3711, keys per RFC 5764 §4.2).
//
// pion runs ICE, DTLS and SCTP only; it never starts its SRTP sessions
// (no RTPSender, RTPReceiver or DTLSTransport.WriteRTCP), so exactly one
// context per direction uses the association's keys: nothing is encrypted
// twice under one key and nonce by two parties. The keys come from the
// DTLS handshake through pion's public hooks (sfu.DTLSKeys): the DTLS
// server knows everything at once and tells the client its Server Hello
// (random, suite, profile) as the first control message; media flows only
// after both derived their keys (streams are announced on the same ordered
// channel, later). Received packets are authenticated, replay-checked,
// decrypted in place and dispatched by SSRC on the socket's read loop;
// an SSRC nobody announced is dropped before decryption, so it cannot
// stall anything.

// srtpReplayWindow is the receive replay window per SSRC, in packets: a
// retransmission answered from the origin's cache arrives a round trip
// after its successors and must still be inside it.
const srtpReplayWindow = 1024

var errNotReady = errors.New("relay media not ready")

// relayCrypto is an association's SRTP state.
type relayCrypto struct {
	mu     sync.Mutex    // guards local and encHdr: senders run on several goroutines
	local  *srtp.Context // encrypts what we send
	encHdr rtp.Header

	remote  *srtp.Context // decrypts what we receive: the socket's read loop only
	hdr     rtp.Header    // read loop only
	rtcpHdr rtcp.Header   // read loop only
}

func newRelayCrypto(k sfu.SRTPKeys) (*relayCrypto, error) {
	local, err := srtp.CreateContext(k.LocalKey, k.LocalSalt, k.Profile)
	if err != nil {
		return nil, err
	}
	remote, err := srtp.CreateContext(k.RemoteKey, k.RemoteSalt, k.Profile,
		srtp.SRTPReplayProtection(srtpReplayWindow), srtp.SRTCPReplayProtection(srtpReplayWindow))
	if err != nil {
		return nil, err
	}
	return &relayCrypto{local: local, remote: remote}, nil
}

// deriveKeys sets up the association's SRTP once the DTLS handshake and,
// on the DTLS client, the server's msgSRTP told everything.
func (a *association) deriveKeys(isClient bool) error {
	k, err := a.keys.SRTPKeys(isClient)
	if err != nil {
		return err
	}
	c, err := newRelayCrypto(k)
	if err != nil {
		return err
	}
	a.crypto.Store(c)
	return nil
}

// onSRTP handles the DTLS server's Hello on the client (worker).
func (a *association) onSRTP(m *message) {
	if a.crypto.Load() != nil {
		return // we are the server, or were told already
	}
	if err := a.keys.SetServerHello(m.Data, m.Suite, m.Profile); err != nil {
		a.log.Warn().Err(err).Msg("invalid srtp message")
		a.b.fail(a)
		return
	}
	if err := a.deriveKeys(true); err != nil {
		a.log.Warn().Err(err).Msg("failed to derive the relay's SRTP keys")
		a.b.fail(a)
	}
}

// onSelectedPair points media at the selected pair's remote address and
// routes what comes from there to this association.
func (a *association) onSelectedPair(p *webrtc.ICECandidatePair) {
	var dst netip.AddrPort
	if p != nil && p.Remote != nil {
		if ip, err := netip.ParseAddr(p.Remote.Address); err == nil {
			dst = netip.AddrPortFrom(ip.Unmap(), p.Remote.Port)
		}
	}
	if dst.IsValid() {
		a.dst.Store(&dst)
	} else {
		a.dst.Store(nil)
	}
	a.sock.route(a, dst)
}

// sendRTP marshals h and payload into plain, encrypts into out and sends.
// plain and out belong to the caller's goroutine.
func (a *association) sendRTP(h *rtp.Header, payload, plain, out []byte) error {
	c, dst := a.crypto.Load(), a.dst.Load()
	if c == nil || dst == nil {
		return errNotReady
	}
	// Never padding: a retransmission (built from the packet cache, which
	// keeps no padding) must encrypt to the same plaintext as the first
	// send under the same sequence number, or AES-GCM's nonce is reused
	// for two messages. The SFU strips padding before its sinks anyway.
	padding, paddingSize := h.Padding, h.PaddingSize
	h.Padding, h.PaddingSize = false, 0
	n, err := h.MarshalTo(plain)
	h.Padding, h.PaddingSize = padding, paddingSize
	if err != nil {
		return err
	}
	if n+len(payload) > len(plain) {
		return errTooLarge
	}
	n += copy(plain[n:], payload)
	c.mu.Lock()
	enc, err := c.local.EncryptRTP(out[:0], plain[:n], &c.encHdr)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return a.sock.send(enc, *dst)
}

var errTooLarge = errors.New("relay packet too large")

// sendRTCP sends RTCP of ours (keyframe requests, NACKs).
func (a *association) sendRTCP(pkts ...rtcp.Packet) error {
	c, dst := a.crypto.Load(), a.dst.Load()
	if c == nil || dst == nil {
		return errNotReady
	}
	b, err := rtcp.Marshal(pkts)
	if err != nil {
		return err
	}
	c.mu.Lock()
	enc, err := c.local.EncryptRTCP(nil, b, nil)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return a.sock.send(enc, *dst)
}

// isRTCP tells RTCP from RTP on one port (RFC 5761 §4: payload types
// 64..95 with the marker bit are RTCP packet types 192..223).
func isRTCP(b []byte) bool { return len(b) >= 2 && b[1] >= 192 && b[1] <= 223 }

// receive handles one RTP or RTCP datagram from the peer; it runs on the
// socket's read loop and may overwrite pkt.
func (a *association) receive(pkt []byte) {
	drops := a.sock.drops
	c := a.crypto.Load()
	if c == nil {
		drops.auth.Add(1)
		return
	}
	if isRTCP(pkt) {
		dec, err := c.remote.DecryptRTCP(pkt[:0], pkt, &c.rtcpHdr)
		if err != nil {
			drops.auth.Add(1)
			return
		}
		a.onRTCP(dec)
		return
	}
	if len(pkt) < 12 {
		drops.auth.Add(1)
		return
	}
	// The SSRC is not authenticated yet: only choose by it.
	rs := (*a.streams.Load())[binary.BigEndian.Uint32(pkt[8:12])]
	if rs == nil {
		drops.ssrc.Add(1)
		return
	}
	dec, err := c.remote.DecryptRTP(pkt[:0], pkt, &c.hdr)
	if err != nil {
		drops.auth.Add(1)
		return
	}
	a.onMedia(rs, dec, c.hdr.SequenceNumber)
}

// onRTCP handles the peer's RTCP about our streams: keyframe requests go
// to the origin's throttle, NACKs are answered from its packet cache
// (read loop).
func (a *association) onRTCP(b []byte) {
	pkts, err := rtcp.Unmarshal(b)
	if err != nil {
		return
	}
	senders := *a.senders.Load()
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.PictureLossIndication:
			if s := senders[p.MediaSSRC]; s != nil {
				s.keyframe()
			}
		case *rtcp.FullIntraRequest:
			for _, e := range p.FIR {
				if s := senders[e.SSRC]; s != nil {
					s.keyframe()
				}
			}
		case *rtcp.TransportLayerNack:
			if s := senders[p.MediaSSRC]; s != nil {
				a.retransmit(s, p.Nacks)
			}
		}
	}
}

func (s *relaySender) keyframe() {
	s.ot.a.stats.plisIn.Add(1)
	if s.ot.sub != nil {
		s.ot.sub.RequestKeyframe(s.layer)
	}
}

// Retransmission budget of an association, as the sfu's for its
// subscribers: a NACK names up to ~1,500 sequence numbers per datagram and
// a peer may repeat it at will, and retransmissions are sent inline on
// the relay socket's read loop that every association shares.
const (
	// rtxPerNack bounds the sequence numbers looked at per NACK packet:
	// one packet cache's worth (sfu's default packet_cache_size).
	rtxPerNack = 256
	// rtxInterval is the least time between two retransmissions of one
	// packet of a stream: a copy may still be in flight.
	rtxInterval = 10 * time.Millisecond
	// Every video packet sent to the peer earns 1/rtxEarn token, a
	// retransmission costs one, at most rtxBurst are kept: resends stay
	// under a quarter of the relayed packet rate.
	rtxEarn  = 4
	rtxBurst = 256
)

// rtxSlot remembers when a sequence number of a stream was last resent.
type rtxSlot struct {
	at  int64 // ns since the association started; 0 never
	seq uint16
}

// rtxSlots is per relaySender, indexed by seq mod rtxPerNack (the
// socket's read loop only).
type rtxSlots [rtxPerNack]rtxSlot

// refillRtx adds the tokens earned by the video sent since the last
// call (read loop).
func (a *association) refillRtx() {
	x := &a.rtx
	var sent uint64
	for i := range a.stats.sentPk {
		sent += a.stats.sentPk[i].Load()
	}
	if earned := (sent - x.earnedAt) / rtxEarn; earned > 0 {
		x.tokens = int(min(uint64(x.tokens)+earned, rtxBurst))
		x.earnedAt += earned * rtxEarn
	}
}

// retransmit answers a NACK from the origin's packet cache, within the
// association's budget (read loop: the buffers are the association's).
func (a *association) retransmit(s *relaySender, nacks []rtcp.NackPair) {
	if s.ot.sub == nil {
		return
	}
	x := &a.rtx
	a.refillRtx()
	now := max(int64(time.Since(a.started)), 1)
	n := 0
	spent := func() bool { return n >= rtxPerNack || x.tokens <= 0 }
	for _, pair := range nacks {
		pair.Range(func(seq uint16) bool {
			if spent() {
				return false
			}
			n++
			slot := &s.rtxAt[seq%rtxPerNack]
			if slot.at != 0 && slot.seq == seq && now-slot.at < int64(rtxInterval) {
				return true
			}
			b := s.ot.sub.Packet(s.layer, seq, x.pkt[:])
			if b == nil {
				return true
			}
			hn, err := x.hdr.Unmarshal(b)
			if err != nil {
				return true
			}
			slot.at, slot.seq = now, seq
			x.tokens--
			// sendRTP sends no padding, as for the first send: the same
			// sequence number under the same key is the same plaintext
			// (GCM nonce reuse otherwise).
			x.hdr.SSRC, x.hdr.PayloadType = s.ssrc, s.pt
			if a.sendRTP(&x.hdr, b[hn:], x.plain[:], x.out[:]) == nil {
				a.stats.rtx.Add(1)
			}
			return true
		})
		if spent() {
			break
		}
	}
}

// rtxBuffers are the read loop's buffers and budget for retransmissions.
type rtxBuffers struct {
	hdr   rtp.Header
	pkt   [1500]byte
	plain [1500]byte
	out   [1500 + srtpOverhead]byte
	// tokens is the retransmission budget; earnedAt the video packets
	// sent that it accounts for.
	tokens   int
	earnedAt uint64
}

// srtpOverhead bounds what SRTP adds to a packet (auth tag, MKI, ROC).
const srtpOverhead = 32
