package sfu

import (
	"errors"
	"net"
	"reflect"
	"strings"
	"unsafe"

	"github.com/pion/dtls/v3"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
)

// Direct send path.
//
// Profiling the pion write path at 150 subscribers shows about a fifth of
// the CPU in the layers between the SRTP session and the socket (mux
// endpoint, ICE conn, candidate pair bookkeeping, a channel receive per
// packet) and half in one sendto per packet. For subscriber connections
// that run over the shared UDP mux socket, the SFU therefore encrypts
// forwarded RTP itself, with an SRTP context per downtrack keyed from the
// connection's DTLS keying material (RFC 5764 §4.2), and sends the copies
// of one incoming packet with a single sendmmsg. RTCP, ICE and DTLS stay
// with pion; each SSRC is encrypted by exactly one context, so pion's
// SRTP state and ours never overlap.
//
// pion does not expose the DTLS connection of a DTLSTransport, so
// dtlsConnOf reads the unexported field by reflection. When that fails
// (a pion upgrade renamed it) or the connection does not run over the mux
// socket (ICE-TCP, port range), forwarding falls back to pion's path.

// fastKeys are the local SRTP keys of a subscriber connection.
type fastKeys struct {
	profile srtp.ProtectionProfile
	key     []byte
	salt    []byte
}

// dtlsConnOf returns the DTLS connection inside a pion DTLSTransport.
func dtlsConnOf(t *webrtc.DTLSTransport) *dtls.Conn {
	if t == nil {
		return nil
	}
	f := reflect.ValueOf(t).Elem().FieldByName("conn")
	if !f.IsValid() || f.Type() != reflect.TypeOf((*dtls.Conn)(nil)) {
		return nil
	}
	c, _ := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface().(*dtls.Conn)
	return c
}

var errNoFastPath = errors.New("direct send path not available")

// extractFastKeys derives the local SRTP master key and salt of a
// connected DTLS transport. isClient is the local DTLS role.
func extractFastKeys(t *webrtc.DTLSTransport, isClient bool) (*fastKeys, error) {
	conn := dtlsConnOf(t)
	if conn == nil {
		return nil, errNoFastPath
	}
	state, ok := conn.ConnectionState()
	if !ok {
		return nil, errNoFastPath
	}
	dp, ok := conn.SelectedSRTPProtectionProfile()
	if !ok {
		return nil, errNoFastPath
	}
	var profile srtp.ProtectionProfile
	switch dp {
	case dtls.SRTP_AEAD_AES_128_GCM:
		profile = srtp.ProtectionProfileAeadAes128Gcm
	case dtls.SRTP_AEAD_AES_256_GCM:
		profile = srtp.ProtectionProfileAeadAes256Gcm
	case dtls.SRTP_AES128_CM_HMAC_SHA1_80:
		profile = srtp.ProtectionProfileAes128CmHmacSha1_80
	default:
		return nil, errNoFastPath
	}
	cfg := srtp.Config{Profile: profile}
	if err := cfg.ExtractSessionKeysFromDTLS(&state, isClient); err != nil {
		return nil, err
	}
	return &fastKeys{profile: profile, key: cfg.Keys.LocalMasterKey, salt: cfg.Keys.LocalMasterSalt}, nil
}

// localIsDTLSClient tells the local DTLS role from the remote description
// (RFC 5763 §5): a remote "passive" makes us the client.
func localIsDTLSClient(remoteSDP string) bool {
	return strings.Contains(remoteSDP, "a=setup:passive")
}

// directDest is where a subscriber connection's media goes on the mux
// socket; nil when the selected pair is not on it.
type directDest struct {
	addr *net.UDPAddr
}

// onSelectedPair records the remote address when the selected candidate
// pair runs over the shared UDP mux socket.
func (p *Participant) onSelectedPair(pair *webrtc.ICECandidatePair) {
	if pair == nil || pair.Local == nil || pair.Remote == nil || p.s.socks.udp == nil {
		p.direct.Store(nil)
		return
	}
	l, r := pair.Local, pair.Remote
	ip := net.ParseIP(r.Address)
	if l.Protocol != webrtc.ICEProtocolUDP || int(l.Port) != p.s.cfg.RTC.UDPPort || ip == nil {
		p.direct.Store(nil)
		return
	}
	if ip4 := ip.To4(); ip4 != nil {
		ip = ip4
	}
	p.direct.Store(&directDest{addr: &net.UDPAddr{IP: ip, Port: int(r.Port)}})
}

// sendBatch collects the encrypted copies of one incoming packet and sends
// them with one sendmmsg. It belongs to one read loop.
type sendBatch struct {
	pc     *ipv4.PacketConn
	bufs   [][]byte
	msgs   []ipv4.Message
	n      int
	errors prometheus.Counter
}

// next returns a 1500-byte buffer for the next message.
func (b *sendBatch) next() []byte {
	if b.n == len(b.bufs) {
		b.bufs = append(b.bufs, make([]byte, 1500))
		b.msgs = append(b.msgs, ipv4.Message{Buffers: make([][]byte, 1)})
	}
	return b.bufs[b.n]
}

// add queues pkt (which must be the buffer from next) for addr.
func (b *sendBatch) add(pkt []byte, addr *net.UDPAddr) {
	m := &b.msgs[b.n]
	m.Buffers[0] = pkt
	m.Addr = addr
	b.n++
}

// flush sends the queued messages. sendmmsg stops at the first message
// that fails (and reports the error on the next call): that one is
// skipped, the rest is sent.
func (b *sendBatch) flush() {
	msgs := b.msgs[:b.n]
	for len(msgs) > 0 {
		n, err := b.pc.WriteBatch(msgs, 0)
		if err != nil || n == 0 {
			b.errors.Inc()
			n = 1
		}
		msgs = msgs[n:]
	}
	b.n = 0
}
