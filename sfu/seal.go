package sfu

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// RTP sealing for the direct send path.
//
// A downtrack sends one SSRC, so it needs none of what pion's srtp.Context
// does per packet to serve many: a map lookup of the SSRC's state, a
// second parse of the header it was just given, its rollover bookkeeping.
// In a meeting every copy goes to another subscriber, and those steps run
// on cold caches: the profile put them at ~6 % of the SFU's CPU. With an
// AEAD profile (RFC 7714: AEAD_AES_128_GCM, AEAD_AES_256_GCM — what
// browsers negotiate first) the downtrack therefore seals its packets
// itself: the session key and salt are derived from the master key and
// salt as SRTP does (RFC 3711 §4.3, the AES-CM PRF, as pion and libsrtp
// compute it for these profiles), the AES-GCM itself is Go's crypto/cipher.
// Other profiles keep pion's context. The output is byte for byte what
// pion's context produces (TestRTPSealerMatchesPion).

// errNoSealer: the keys are not for an AEAD profile.
var errNoSealer = errors.New("no direct sealer for this SRTP profile")

// SRTP key derivation labels (RFC 3711 §4.3.2).
const (
	labelRTPKey  = 0x00
	labelRTPSalt = 0x02
)

// sealKeys is the RTP session key (as an AES-GCM) and salt of one
// subscriber's connection. Every downtrack of the subscriber seals with
// the same keys, so they are derived once per connection (fastKeys.sealer)
// and shared: in a meeting each copy of a packet goes to another
// subscriber, and one AES key schedule and GCM table per subscriber stays
// in the cache where one per downtrack did not. The GCM is not changed
// after it is made (crypto/cipher's NewGCM), so downtracks served by
// different socket readers seal with it concurrently
// (TestSealKeysConcurrent).
type sealKeys struct {
	aead cipher.AEAD
	salt [12]byte
}

// newSealKeys derives the SRTP session key and salt for RTP from k.
func newSealKeys(k *fastKeys) (*sealKeys, error) {
	switch k.profile {
	case srtp.ProtectionProfileAeadAes128Gcm, srtp.ProtectionProfileAeadAes256Gcm:
	default:
		return nil, errNoSealer
	}
	if len(k.salt) != 12 || (len(k.key) != 16 && len(k.key) != 32) {
		return nil, errNoSealer
	}
	key, err := srtpKDF(labelRTPKey, k.key, k.salt, len(k.key))
	if err != nil {
		return nil, err
	}
	salt, err := srtpKDF(labelRTPSalt, k.key, k.salt, 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	clear(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sk := &sealKeys{aead: aead}
	copy(sk.salt[:], salt)
	return sk, nil
}

// rtpSealer protects the RTP packets of one SSRC: the subscriber's keys
// and the SSRC's own rollover counter. The zero value seals nothing
// (keys nil).
type rtpSealer struct {
	keys    *sealKeys
	roc     uint32 // rollover counter of highest
	highest uint16 // highest sequence number sent
	started bool
	// iv is the nonce's scratch: a local array would escape to the heap
	// through the cipher.AEAD interface, one allocation per copy.
	iv [12]byte
}

// srtpKDF is SRTP's key derivation with a key derivation rate of 0: AES
// in counter mode under the master key over (label XOR master salt); the
// label sits in byte 7 of the salt, the block counter in the last two
// bytes of the 16-byte input.
func srtpKDF(label byte, masterKey, masterSalt []byte, n int) ([]byte, error) {
	block, err := aes.NewCipher(masterKey)
	if err != nil {
		return nil, err
	}
	var in [16]byte
	copy(in[:], masterSalt)
	in[7] ^= label
	out := make([]byte, (n+15)/16*16)
	for i := 0; i*16 < n; i++ {
		binary.BigEndian.PutUint16(in[14:], uint16(i))
		block.Encrypt(out[i*16:], in[:])
	}
	return out[:n], nil
}

// index returns the rollover counter of sequence number seq and records
// seq as sent (RFC 3711 §3.3.1: the sender's ROC counts its own wraps; a
// packet from before the last wrap, such as a retransmission, keeps the
// counter it was first sent with).
func (s *rtpSealer) index(seq uint16) uint32 {
	if !s.started {
		s.started, s.highest = true, seq
		return s.roc
	}
	if int16(seq-s.highest) > 0 {
		if seq < s.highest {
			s.roc++
		}
		s.highest = seq
		return s.roc
	}
	if seq > s.highest && s.roc > 0 {
		return s.roc - 1 // sent before highest wrapped
	}
	return s.roc
}

// seal encrypts the packet in buf[:n], whose header is hdrLen bytes, in
// place and returns the SRTP packet (n + 16 bytes of buf); nil if buf has
// no room for the tag.
func (s *rtpSealer) seal(buf []byte, n, hdrLen int) []byte {
	if n+16 > len(buf) || hdrLen < 12 || hdrLen > n {
		return nil
	}
	ssrc := binary.BigEndian.Uint32(buf[8:12])
	seq := binary.BigEndian.Uint16(buf[2:4])
	iv := &s.iv
	iv[0], iv[1] = 0, 0
	binary.BigEndian.PutUint32(iv[2:], ssrc)
	binary.BigEndian.PutUint32(iv[6:], s.index(seq))
	binary.BigEndian.PutUint16(iv[10:], seq)
	k := s.keys
	for i := range iv {
		iv[i] ^= k.salt[i]
	}
	k.aead.Seal(buf[hdrLen:hdrLen], iv[:], buf[hdrLen:n], buf[:hdrLen])
	return buf[:n+16]
}

// putRTP writes the RTP packet of h (version 2, its marker, payload type,
// sequence number, timestamp, SSRC and CSRCs) with, as its only header
// extension, the audio level element levelID (RFC 8285 one-byte form) when
// level is not nil, followed by payload — the bytes rtp.MarshalPacketTo
// writes for the header writeRTP builds. It returns the packet's and the
// header's length; ok is false when it does not fit buf or the extension
// needs the two-byte form (the caller then marshals with pion).
func putRTP(buf []byte, h *rtp.Header, levelID uint8, level, payload []byte) (n, hdrLen int, ok bool) {
	if len(h.CSRC) > 15 {
		return 0, 0, false
	}
	hdrLen = 12 + 4*len(h.CSRC)
	ext := 0
	if level != nil {
		if levelID < 1 || levelID > 14 || len(level) < 1 || len(level) > 16 {
			return 0, 0, false
		}
		ext = 4 + (1+len(level)+3)/4*4
	}
	hdrLen += ext
	n = hdrLen + len(payload)
	if n > len(buf) {
		return 0, 0, false
	}
	b0 := byte(0x80) | byte(len(h.CSRC))
	if ext > 0 {
		b0 |= 0x10
	}
	buf[0] = b0
	buf[1] = h.PayloadType & 0x7f
	if h.Marker {
		buf[1] |= 0x80
	}
	binary.BigEndian.PutUint16(buf[2:], h.SequenceNumber)
	binary.BigEndian.PutUint32(buf[4:], h.Timestamp)
	binary.BigEndian.PutUint32(buf[8:], h.SSRC)
	o := 12
	for _, c := range h.CSRC {
		binary.BigEndian.PutUint32(buf[o:], c)
		o += 4
	}
	if ext > 0 {
		buf[o], buf[o+1] = 0xbe, 0xde
		binary.BigEndian.PutUint16(buf[o+2:], uint16((ext-4)/4))
		buf[o+4] = levelID<<4 | byte(len(level)-1)
		copy(buf[o+5:], level)
		clear(buf[o+5+len(level) : o+ext])
		o += ext
	}
	copy(buf[o:], payload)
	return n, hdrLen, true
}
