package sfu

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Direct send path.
//
// Profiling the pion write path at 150 subscribers shows about a fifth of
// the CPU in the layers between the SRTP session and the socket (mux
// endpoint, ICE conn, candidate pair bookkeeping, a channel receive per
// packet) and half in one sendto per packet. For subscriber connections
// that run over the shared UDP mux socket, the SFU therefore encrypts
// forwarded RTP itself, per downtrack keyed from the connection's DTLS
// keying material (RFC 5764 §4.2) — its own AES-GCM sealer for the AEAD
// profiles (seal.go), a pion SRTP context for the others — and sends the copies
// of one incoming packet with a single sendmmsg. RTCP, ICE and DTLS stay
// with pion; each SSRC is encrypted by exactly one context, so pion's
// SRTP state and ours never overlap.
//
// The keys come from pion's public DTLS hooks (keyCapture): the Server
// Hello hook shows our server random, the cipher suite and the SRTP
// profile, the key log writer the client random and the master secret;
// from these the RFC 5705 exporter is computed as DTLS does. Only the
// DTLS server side sees both randoms, so the SFU takes the server role
// where it can (answering /rtc/v1 offers; clients answer its subscriber
// offers as DTLS clients). As client, or when the selected pair does not
// run over the mux socket (ICE-TCP, port range), forwarding uses pion's
// path; gxconf_sfu_direct_path_connections_total tells how often.

// fastKeys are the local SRTP keys of a subscriber connection.
type fastKeys struct {
	profile srtp.ProtectionProfile
	key     []byte
	salt    []byte

	sealOnce sync.Once
	seal     *sealKeys // AEAD profiles: the derived RTP keys (seal.go)
	sealErr  error
}

// sealer returns the RTP session keys of an AEAD profile, derived on
// first use and shared by every downtrack of the connection.
func (k *fastKeys) sealer() (*sealKeys, error) {
	k.sealOnce.Do(func() { k.seal, k.sealErr = newSealKeys(k) })
	return k.seal, k.sealErr
}

var errNoFastPath = errors.New("direct send path not available")

// keyCapture collects what the DTLS-SRTP exporter needs of one
// connection through pion's public hooks. The master secret is kept only
// until the keys are derived.
type keyCapture struct {
	mu           sync.Mutex
	serverRandom []byte
	suite        dtls.CipherSuiteID
	profile      dtls.SRTPProtectionProfile
	clientRandom []byte
	master       []byte
}

// serverHello is the Server Hello hook: it records and returns the message.
func (k *keyCapture) serverHello(m handshake.MessageServerHello) handshake.Message {
	r := m.Random.MarshalFixed()
	k.mu.Lock()
	k.serverRandom = append([]byte(nil), r[:]...)
	if m.CipherSuiteID != nil {
		k.suite = dtls.CipherSuiteID(*m.CipherSuiteID)
	}
	for _, e := range m.Extensions {
		if u, ok := e.(*extension.UseSRTP); ok && len(u.ProtectionProfiles) == 1 {
			k.profile = dtls.SRTPProtectionProfile(u.ProtectionProfiles[0])
		}
	}
	k.mu.Unlock()
	return &m
}

// Write takes the key log line "CLIENT_RANDOM <client random> <master
// secret>" (NSS key log format, hex).
func (k *keyCapture) Write(p []byte) (int, error) {
	f := strings.Fields(string(p))
	if len(f) != 3 || f[0] != "CLIENT_RANDOM" {
		return len(p), nil
	}
	cr, err1 := hex.DecodeString(f[1])
	ms, err2 := hex.DecodeString(f[2])
	if err1 != nil || err2 != nil || len(cr) != handshake.RandomLength {
		return len(p), nil
	}
	k.mu.Lock()
	k.clientRandom, k.master = cr, ms
	k.mu.Unlock()
	return len(p), nil
}

// ExportKeyingMaterial is RFC 5705's exporter without context, as DTLS
// 1.2 computes it: PRF(master secret, label + client random + server
// random) with the cipher suite's PRF hash.
func (k *keyCapture) ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error) {
	if len(context) != 0 {
		return nil, errNoFastPath
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.master) == 0 || len(k.serverRandom) != handshake.RandomLength || k.suite == 0 {
		return nil, errNoFastPath
	}
	h := sha256.New
	if strings.HasSuffix(dtls.CipherSuiteName(k.suite), "SHA384") {
		h = sha512.New384
	}
	seed := make([]byte, 0, len(label)+2*handshake.RandomLength)
	seed = append(append(append(seed, label...), k.clientRandom...), k.serverRandom...)
	return prf.PHash(k.master, seed, length, h)
}

// sessionKeys derives both directions' SRTP master keys and salts (isClient:
// this side was the DTLS client) and forgets the master secret.
func (k *keyCapture) sessionKeys(isClient bool) (srtp.ProtectionProfile, srtp.SessionKeys, error) {
	k.mu.Lock()
	dp := k.profile
	k.mu.Unlock()
	var profile srtp.ProtectionProfile
	switch dp {
	case dtls.SRTP_AEAD_AES_128_GCM:
		profile = srtp.ProtectionProfileAeadAes128Gcm
	case dtls.SRTP_AEAD_AES_256_GCM:
		profile = srtp.ProtectionProfileAeadAes256Gcm
	case dtls.SRTP_AES128_CM_HMAC_SHA1_80:
		profile = srtp.ProtectionProfileAes128CmHmacSha1_80
	default:
		return 0, srtp.SessionKeys{}, errNoFastPath
	}
	cfg := srtp.Config{Profile: profile}
	err := cfg.ExtractSessionKeysFromDTLS(k, isClient)
	k.mu.Lock()
	clear(k.master)
	k.master = nil
	k.mu.Unlock()
	if err != nil {
		return 0, srtp.SessionKeys{}, err
	}
	return profile, cfg.Keys, nil
}

// keys derives the local (server side) and remote SRTP master keys and
// salts and forgets the master secret.
func (k *keyCapture) keys() (local, remote *fastKeys, err error) {
	profile, sk, err := k.sessionKeys(false)
	if err != nil {
		return nil, nil, err
	}
	return &fastKeys{profile: profile, key: sk.LocalMasterKey, salt: sk.LocalMasterSalt},
		&fastKeys{profile: profile, key: sk.RemoteMasterKey, salt: sk.RemoteMasterSalt}, nil
}

// directDest is where a subscriber connection's media goes on the mux
// socket; nil when the selected pair is not on it. It is the net.Addr of
// the connection's messages in a send batch, so that the batch's writer
// takes the address as it is, not converted from a *net.UDPAddr per copy.
type directDest struct {
	ap netip.AddrPort
	// slots holds, per socket reader, which message of that reader's
	// shared batch carries this destination's copies (sendBatch.shared);
	// each reader touches only its own.
	slots []gsoSlot
}

func (d *directDest) Network() string { return "udp" }
func (d *directDest) String() string  { return d.ap.String() }

// onSelectedPair records the remote address when the selected candidate
// pair runs over the shared UDP mux socket.
func (p *Participant) onSelectedPair(pair *webrtc.ICECandidatePair) {
	ap, ok := p.muxAddr(pair)
	if !ok {
		p.direct.Store(nil)
		return
	}
	p.direct.Store(&directDest{ap: ap, slots: make([]gsoSlot, p.s.readers)})
}

// muxAddr is the remote address of a selected pair that runs over the
// shared UDP mux socket; ok is false for any other pair.
func (p *Participant) muxAddr(pair *webrtc.ICECandidatePair) (netip.AddrPort, bool) {
	if pair == nil || pair.Local == nil || pair.Remote == nil || p.s.socks.udp == nil {
		return netip.AddrPort{}, false
	}
	l, r := pair.Local, pair.Remote
	ip, err := netip.ParseAddr(r.Address)
	if l.Protocol != webrtc.ICEProtocolUDP || int(l.Port) != p.s.cfg.RTC.UDPPort || err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), r.Port), true
}

// wireDirect hooks a connection's DTLS transport for the direct paths:
// with send, its local keys and selected pair feed the send path; with pr,
// its remote keys and selected pair feed the receive path.
func (p *Participant) wireDirect(pc *webrtc.PeerConnection, k *keyCapture, send bool, pr *pubRecv) {
	dtlsT := pc.SCTP().Transport()
	var g *rtcpGuard
	if p.s.directRecv {
		g = newRTCPGuard(p)
		p.guards = append(p.guards, g)
	}
	dtlsT.ICETransport().OnSelectedCandidatePairChange(func(pair *webrtc.ICECandidatePair) {
		if send {
			p.onSelectedPair(pair)
		}
		if pr != nil {
			pr.setAddr(p.muxAddr(pair))
		}
		if g != nil {
			g.setAddr(p.muxAddr(pair))
		}
	})
	dtlsT.OnStateChange(func(st webrtc.DTLSTransportState) {
		// Runs under the transport's lock: touch only its connection.
		if st != webrtc.DTLSTransportStateConnected {
			return
		}
		local, remote, err := k.keys()
		if err != nil {
			p.s.metrics.directConns.WithLabelValues("unavailable").Inc()
			p.log.Debug().Err(err).Msg("direct paths unavailable (the SFU is the DTLS client)")
			return
		}
		if send {
			p.s.metrics.directConns.WithLabelValues("keyed").Inc()
			p.fastKeys.Store(local)
		}
		if pr != nil {
			if err := pr.setKeys(remote); err != nil {
				p.log.Warn().Err(err).Msg("direct receive path unavailable")
			}
		}
		if g != nil {
			if err := g.setKeys(remote); err != nil {
				p.log.Warn().Err(err).Msg("RTCP guard unavailable")
			}
		}
	})
}

// sendBatch collects the encrypted copies of incoming packets and sends
// them with one sendmmsg. It belongs to one read loop.
//
// With segmentation offload (gso), the copies for one destination are
// gathered across the packets of one video frame into one message whose
// buffers the kernel sends as separate datagrams (UDP_SEGMENT): one
// sendmmsg entry per subscriber and frame instead of per packet. The
// kernel needs every segment but the last to be exactly the segment size,
// so a copy that does not fit starts a new message. The read loop flushes
// at the frame's last packet (marker bit), when the timestamp moves on
// (a lost marker), when many packets are held, and when no packet came for
// gsoHoldMax.
//
// A socket reader's shared batch (heldLayers) takes the copies of every
// stream that reader forwards to fewer than gsoKeepMin subscribers and is
// sent when the socket is drained. Its copies are gathered per
// destination rather than per downtrack: a subscriber's audio and video of
// several publishers read in one go share a message where the sizes allow
// (every segment but the last the same size; add may put a copy of
// another stream before a shorter last one): in the 20-person meeting of
// scripts/bench-compare.sh 1.44–1.54 packets per message against
// 1.30–1.35 with per-downtrack messages.
type sendBatch struct {
	out   *mmsgWriter
	gso   bool
	bufs  [][]byte // packet buffers; nbuf in use until the flush
	nbuf  int
	msgs  []ipv4.Message
	segs  []int // per message: its segment size
	n     int
	epoch uint32 // counts flushes: a gsoSlot of an older epoch is stale
	// segmented counts messages sent with more than one segment.
	segmented uint64
	ts        uint32 // RTP timestamp of the held packets
	// off is shared by the batches of a server: set when the kernel
	// refused a segmented send, so every batch stops segmenting.
	off    *gsoSwitch
	errors prometheus.Counter
	// msgsOut and calls count the messages the kernel took and the
	// sendmmsg calls (write; nil in tests that do not look).
	msgsOut, calls prometheus.Counter
	// shared is 1 + the index of the socket reader whose shared batch this
	// is (its slot in directDest.slots); 0 for a layer's own batch.
	shared int
}

// slotFor is the slot that tracks dest's message in the batch: the
// destination's for a reader's shared batch, else own (the downtrack's).
func (b *sendBatch) slotFor(dest *directDest, own *gsoSlot) *gsoSlot {
	if i := b.shared - 1; i >= 0 && i < len(dest.slots) {
		return &dest.slots[i]
	}
	return own
}

// gsoSwitch turns segmentation off for all batches of a server.
type gsoSwitch struct {
	off   atomic.Bool
	gauge prometheus.Gauge
}

func (g *gsoSwitch) Load() bool { return g.off.Load() }

func (g *gsoSwitch) Store(bool) {
	if !g.off.Swap(true) && g.gauge != nil {
		g.gauge.Set(0)
	}
}

// gsoSlot remembers, per downtrack, which message of which batch holds its
// copies of the current frame.
type gsoSlot struct {
	b     *sendBatch
	epoch uint32
	msg   int32
}

const (
	gsoMaxSegments = 32    // the kernel allows 64 (UDP_MAX_SEGMENTS)
	gsoMaxBytes    = 60000 // below the 64 KiB datagram limit
	gsoMaxHeld     = 1024  // packets held per batch before a flush
	gsoHoldMax     = 2 * time.Millisecond
	// gsoKeepMin is the number of subscribers from which the direct
	// receive path keeps a frame's copies held when its socket is drained
	// (heldLayers), bounded by a read deadline: a frame whose packets
	// arrive spread out is then still one message per subscriber, which
	// for many subscribers saves more than the timer costs. For fewer, the
	// timer is the larger cost (meeting20 against 1 → 150, sfu/README.md):
	// such a stream goes into its reader's shared batch instead.
	gsoKeepMin = 32
)

// next returns a 1500-byte buffer for the next packet.
func (b *sendBatch) next() []byte {
	if b.nbuf == len(b.bufs) {
		b.bufs = append(b.bufs, make([]byte, 1500))
	}
	return b.bufs[b.nbuf]
}

// add queues pkt (which must be the buffer from next) for dest; slot is the
// downtrack's, so its copies of one frame share a message.
func (b *sendBatch) add(pkt []byte, dest *directDest, slot *gsoSlot) {
	b.nbuf++
	// The message must still be dest's: an epoch counter that wrapped
	// around must not put a copy in another subscriber's message.
	if b.gso && slot.b == b && slot.epoch == b.epoch && int(slot.msg) < b.n && b.msgs[slot.msg].Addr == dest {
		m, seg := &b.msgs[slot.msg], b.segs[slot.msg]
		k := len(m.Buffers)
		last := m.Buffers[k-1]
		switch {
		case k >= gsoMaxSegments:
		case len(last) == seg && len(pkt) <= seg && (k+1)*seg <= gsoMaxBytes:
			m.Buffers = append(m.Buffers, pkt)
			return
		case !sameSSRC(last, pkt) && (len(pkt) == seg && len(last) < seg || k == 1 && len(pkt) > seg) && (k+1)*len(pkt) <= gsoMaxBytes:
			// A shared batch's copies of two streams: pkt goes before the
			// shorter last segment (a single one: pkt sets the size), which
			// reorders packets of different streams only.
			m.Buffers = append(m.Buffers, last)
			m.Buffers[k-1] = pkt
			b.segs[slot.msg] = len(pkt)
			return
		}
	}
	if b.n == len(b.msgs) {
		b.msgs = append(b.msgs, ipv4.Message{Buffers: make([][]byte, 0, 1)})
		b.segs = append(b.segs, 0)
	}
	m := &b.msgs[b.n]
	m.Buffers = append(m.Buffers[:0], pkt)
	m.Addr, m.OOB = dest, nil
	b.segs[b.n] = len(pkt)
	slot.b, slot.epoch, slot.msg = b, b.epoch, int32(b.n)
	b.n++
}

// sameSSRC tells whether two RTP or SRTP packets (headers in the clear)
// belong to one stream.
func sameSSRC(a, b []byte) bool {
	return len(a) < 12 || len(b) < 12 || [4]byte(a[8:12]) == [4]byte(b[8:12])
}

// held tells whether packets wait for a flush.
func (b *sendBatch) held() bool { return b.n > 0 }

// flush sends the queued messages. sendmmsg stops at the first message
// that fails (and reports the error on the next call): that one is
// skipped, the rest is sent. A segmented message the kernel refuses is
// sent again packet by packet, and segmentation is switched off.
func (b *sendBatch) flush() {
	msgs := b.msgs[:b.n]
	for i := range msgs {
		if len(msgs[i].Buffers) > 1 {
			msgs[i].OOB = gsoControl(b.segs[i])
			b.segmented++
		}
	}
	for len(msgs) > 0 {
		n, err := b.write(msgs)
		if err != nil || n == 0 {
			if len(msgs[0].Buffers) > 1 {
				b.unsegmented(&msgs[0])
			} else {
				b.errors.Inc()
			}
			n = 1
		}
		msgs = msgs[n:]
	}
	b.reset()
	if b.gso && b.off != nil && b.off.Load() {
		b.gso = false
	}
}

// reset empties the batch; slots of the copies it held go stale.
func (b *sendBatch) reset() {
	b.n, b.nbuf = 0, 0
	b.epoch++
}

// unsegmented sends a refused segmented message as single datagrams and
// switches segmentation off for every batch of the server.
func (b *sendBatch) unsegmented(m *ipv4.Message) {
	if b.off != nil {
		b.off.Store(true)
	}
	for _, pkt := range m.Buffers {
		single := [1]ipv4.Message{{Buffers: [][]byte{pkt}, Addr: m.Addr}}
		if n, err := b.write(single[:]); err != nil || n == 0 {
			b.errors.Inc()
		}
	}
}

// write hands msgs to the kernel in one sendmmsg and counts the call and
// the messages it took.
func (b *sendBatch) write(msgs []ipv4.Message) (int, error) {
	n, err := b.out.WriteBatch(msgs)
	if b.calls != nil {
		b.calls.Inc()
		b.msgsOut.Add(float64(n))
	}
	return n, err
}

// gsoControls caches the UDP_SEGMENT control message per segment size.
var gsoControls sync.Map // int -> []byte

// gsoControl is the control message asking the kernel to split a
// message's data into datagrams of size bytes.
func gsoControl(size int) []byte {
	if c, ok := gsoControls.Load(size); ok {
		return c.([]byte)
	}
	// struct cmsghdr { size_t len; int level; int type; } then the data.
	c := make([]byte, unix.CmsgSpace(2))
	lenSize := unix.SizeofCmsghdr - 8
	if lenSize == 8 {
		binary.NativeEndian.PutUint64(c, uint64(unix.CmsgLen(2)))
	} else {
		binary.NativeEndian.PutUint32(c, uint32(unix.CmsgLen(2)))
	}
	binary.NativeEndian.PutUint32(c[lenSize:], uint32(unix.SOL_UDP))
	binary.NativeEndian.PutUint32(c[lenSize+4:], uint32(unix.UDP_SEGMENT))
	binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(size))
	c2, _ := gsoControls.LoadOrStore(size, c)
	return c2.([]byte)
}

// gsoSupported tells whether the kernel segments UDP sends on conn
// (Linux ≥ 4.18): setting UDP_SEGMENT to 0 is accepted only there.
func gsoSupported(conn *net.UDPConn) bool {
	rc, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, 0)
	}); err != nil {
		return false
	}
	return serr == nil
}
