package sfu

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"sync"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
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

// keys derives the local (server side) SRTP master key and salt and
// forgets the master secret.
func (k *keyCapture) keys() (*fastKeys, error) {
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
		return nil, errNoFastPath
	}
	cfg := srtp.Config{Profile: profile}
	err := cfg.ExtractSessionKeysFromDTLS(k, false)
	k.mu.Lock()
	clear(k.master)
	k.master = nil
	k.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &fastKeys{profile: profile, key: cfg.Keys.LocalMasterKey, salt: cfg.Keys.LocalMasterSalt}, nil
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
