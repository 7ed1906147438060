package sfu

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/stretchr/testify/require"
)

// pionMarshal is how writeRTP marshalled a copy before putRTP: the
// publisher's header with the subscriber's fields, no extension but the
// audio level element.
func pionMarshal(t testing.TB, h *rtp.Header, pt uint8, seq uint16, ts, ssrc uint32, levelID uint8, level, payload []byte) []byte {
	t.Helper()
	out := *withFields(h, pt, seq, ts, ssrc)
	out.Extension, out.Extensions, out.Padding, out.PaddingSize = false, nil, false, 0
	if level != nil {
		require.NoError(t, out.SetExtension(levelID, level))
	}
	b, err := (&rtp.Packet{Header: out, Payload: payload}).Marshal()
	require.NoError(t, err)
	return b
}

// withFields is h with the subscriber's payload type, sequence number,
// timestamp and SSRC, as writeRTP builds it.
func withFields(h *rtp.Header, pt uint8, seq uint16, ts, ssrc uint32) *rtp.Header {
	out := *h
	out.PayloadType, out.SequenceNumber, out.Timestamp, out.SSRC = pt, seq, ts, ssrc
	return &out
}

func randomHeader(r *mrand.Rand) *rtp.Header {
	h := &rtp.Header{Version: 2, Marker: r.IntN(2) == 0, PayloadType: uint8(r.IntN(128)),
		SequenceNumber: uint16(r.Uint32()), Timestamp: r.Uint32(), SSRC: r.Uint32()}
	for range r.IntN(4) {
		h.CSRC = append(h.CSRC, r.Uint32())
	}
	return h
}

// TestPutRTPMatchesPion: putRTP writes the bytes pion's marshalling wrote
// for every header writeRTP builds, and declines what needs pion (a
// two-byte extension element, a buffer too small).
func TestPutRTPMatchesPion(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	buf := make([]byte, 1500)
	for i := range 2000 {
		h := randomHeader(r)
		pt, seq, ts, ssrc := uint8(r.IntN(128)), uint16(r.Uint32()), r.Uint32(), r.Uint32()
		var level []byte
		id := uint8(1 + r.IntN(14))
		if i%3 != 0 {
			level = make([]byte, 1+r.IntN(16))
			_, _ = rand.Read(level)
		}
		payload := make([]byte, r.IntN(1200))
		_, _ = rand.Read(payload)
		n, hdrLen, ok := putRTP(buf, withFields(h, pt, seq, ts, ssrc), id, level, payload)
		require.True(t, ok)
		want := pionMarshal(t, h, pt, seq, ts, ssrc, id, level, payload)
		require.Equal(t, want, buf[:n], "packet %d", i)
		require.Equal(t, len(want)-len(payload), hdrLen)
	}
	h := &rtp.Header{}
	_, _, ok := putRTP(buf, withFields(h, 96, 1, 1, 1), 15, []byte{1}, nil)
	require.False(t, ok, "id 15 needs the two-byte form")
	_, _, ok = putRTP(buf, withFields(h, 96, 1, 1, 1), 3, make([]byte, 17), nil)
	require.False(t, ok, "17 bytes need the two-byte form")
	_, _, ok = putRTP(buf[:40], withFields(h, 96, 1, 1, 1), 0, nil, make([]byte, 29))
	require.False(t, ok, "does not fit")
	n, _, ok := putRTP(buf[:40], withFields(h, 96, 1, 1, 1), 0, nil, make([]byte, 28))
	require.True(t, ok)
	require.Equal(t, 40, n)
}

// TestRTPSealerMatchesPion: for both AEAD profiles, the sealer's SRTP
// packets are byte for byte pion's across a sequence number wrap, with
// packets reordered and retransmitted after the wrap, and a pion context
// with the same keys decrypts every one of them.
func TestRTPSealerMatchesPion(t *testing.T) {
	for _, tc := range []struct {
		profile srtp.ProtectionProfile
		keyLen  int
	}{{srtp.ProtectionProfileAeadAes128Gcm, 16}, {srtp.ProtectionProfileAeadAes256Gcm, 32}} {
		for _, start := range []uint16{65000, 100} {
			keys := &fastKeys{profile: tc.profile, key: make([]byte, tc.keyLen), salt: make([]byte, 12)}
			_, _ = rand.Read(keys.key)
			_, _ = rand.Read(keys.salt)
			sl, err := newRTPSealer(keys)
			require.NoError(t, err)
			sender, err := srtp.CreateContext(keys.key, keys.salt, keys.profile)
			require.NoError(t, err)
			receiver, err := srtp.CreateContext(keys.key, keys.salt, keys.profile)
			require.NoError(t, err)

			// The order packets leave in: mostly in order, every 50th two
			// places late, and after the wrap retransmissions of packets
			// from before it (which the receiver did not get).
			var order []uint16
			lost := map[uint16]bool{}
			for i := range 1500 {
				seq := start + uint16(i)
				if i%50 == 10 {
					order = append(order, seq+1, seq)
					continue
				}
				if i%50 == 11 {
					continue
				}
				order = append(order, seq)
				if i%97 == 5 {
					lost[seq] = true
				}
			}
			for seq := range lost {
				order = append(order, seq)
			}
			sent := map[uint16]int{}
			r := mrand.New(mrand.NewPCG(uint64(start), 7))
			buf, pbuf := make([]byte, 1500), make([]byte, 1500)
			for _, seq := range order {
				payload := make([]byte, 20+r.IntN(1100))
				binary.BigEndian.PutUint16(payload, seq)
				h := &rtp.Header{Marker: seq%3 == 0}
				n, hdrLen, ok := putRTP(buf, withFields(h, 111, seq, uint32(seq)*960, 4242), 1, []byte{0x30}, payload)
				require.True(t, ok)
				plain := append([]byte(nil), buf[:n]...)
				got := sl.seal(buf, n, hdrLen)
				want, err := sender.EncryptRTP(pbuf, plain, nil)
				require.NoError(t, err)
				require.True(t, bytes.Equal(want, got), "seq %d: sealer and pion differ", seq)
				sent[seq]++
				if lost[seq] && sent[seq] == 1 {
					continue // the first copy never arrived
				}
				dec, err := receiver.DecryptRTP(nil, got, nil)
				require.NoError(t, err, "seq %d", seq)
				require.Equal(t, plain, dec)
			}
		}
	}
}

// TestRTPSealerOnlyForAEAD: the AES-CM profile keeps pion's context.
func TestRTPSealerOnlyForAEAD(t *testing.T) {
	_, err := newRTPSealer(&fastKeys{profile: srtp.ProtectionProfileAes128CmHmacSha1_80, key: make([]byte, 16), salt: make([]byte, 14)})
	require.ErrorIs(t, err, errNoSealer)
	_, err = newRTPSealer(&fastKeys{profile: srtp.ProtectionProfileAeadAes128Gcm, key: make([]byte, 16), salt: make([]byte, 14)})
	require.ErrorIs(t, err, errNoSealer, "a salt of the wrong length")
	sl, err := newRTPSealer(&fastKeys{profile: srtp.ProtectionProfileAeadAes128Gcm, key: make([]byte, 16), salt: make([]byte, 12)})
	require.NoError(t, err)
	require.Nil(t, sl.seal(make([]byte, 30), 20, 12), "no room for the tag")
}

// FuzzPutRTP: for any header a publisher can send (CSRCs, marker, the
// audio level element it chose) putRTP either writes exactly pion's bytes
// or declines, and declines only for what pion writes in the two-byte form
// or what does not fit.
func FuzzPutRTP(f *testing.F) {
	f.Add(uint8(2), true, uint8(96), uint16(1), uint32(2), uint32(3), uint8(1), []byte{0x7f}, []byte("payload"), 1500)
	f.Add(uint8(0), false, uint8(111), uint16(65535), uint32(0), uint32(0), uint8(14), make([]byte, 16), []byte{}, 64)
	f.Add(uint8(15), false, uint8(0), uint16(0), uint32(1), uint32(1), uint8(15), []byte{1, 2}, []byte{9}, 100)
	f.Fuzz(func(t *testing.T, ncsrc uint8, marker bool, pt uint8, seq uint16, ts, ssrc uint32, id uint8, level, payload []byte, size int) {
		if size < 0 || size > 1500 || len(payload) > 1400 || len(level) > 300 {
			return
		}
		h := &rtp.Header{Version: 2, Marker: marker}
		for i := range int(ncsrc % 16) {
			h.CSRC = append(h.CSRC, uint32(i)*0x01010101)
		}
		pt &= 0x7f
		if len(level) == 0 {
			level = nil
		}
		buf := make([]byte, size)
		n, hdrLen, ok := putRTP(buf, withFields(h, pt, seq, ts, ssrc), id, level, payload)
		oneByte := level == nil || (id >= 1 && id <= 14 && len(level) <= 16)
		if !ok {
			if oneByte {
				want := 12 + 4*len(h.CSRC) + len(payload)
				if level != nil {
					want += 4 + (1+len(level)+3)/4*4
				}
				if want <= size {
					t.Fatalf("declined a one-byte header that fits (%d ≤ %d)", want, size)
				}
			}
			return
		}
		if !oneByte {
			t.Fatal("wrote an element that needs the two-byte form")
		}
		want := pionMarshal(t, h, pt, seq, ts, ssrc, id, level, payload)
		if !bytes.Equal(want, buf[:n]) || hdrLen != len(want)-len(payload) {
			t.Fatalf("differs from pion:\n got %x\nwant %x", buf[:n], want)
		}
	})
}

// newRTPSealer returns a sealer for a new SSRC under k's keys.
func newRTPSealer(k *fastKeys) (*rtpSealer, error) {
	sk, err := k.sealer()
	if err != nil {
		return nil, err
	}
	return &rtpSealer{keys: sk}, nil
}

// TestSealKeysConcurrent: the downtracks of one subscriber share its keys
// — derived once — and seal concurrently from several goroutines (the
// readers of a socket group), each SSRC byte for byte what a pion context
// of its own produces.
func TestSealKeysConcurrent(t *testing.T) {
	keys := &fastKeys{profile: srtp.ProtectionProfileAeadAes128Gcm, key: make([]byte, 16), salt: make([]byte, 12)}
	_, _ = rand.Read(keys.key)
	_, _ = rand.Read(keys.salt)
	first, err := keys.sealer()
	require.NoError(t, err)
	const streams = 8
	errs := make(chan error, streams)
	for g := range streams {
		go func() {
			errs <- func() error {
				sk, err := keys.sealer()
				if err != nil {
					return err
				}
				if sk != first {
					return fmt.Errorf("stream %d: keys derived again", g)
				}
				sl := rtpSealer{keys: sk}
				pc, err := srtp.CreateContext(keys.key, keys.salt, keys.profile)
				if err != nil {
					return err
				}
				buf, pbuf := make([]byte, 1500), make([]byte, 1500)
				payload := make([]byte, 300)
				for i := range 2000 {
					seq := uint16(65000 + i*(g+1)) // wraps at different points
					h := &rtp.Header{}
					n, hdrLen, ok := putRTP(buf, withFields(h, 96, seq, uint32(i)*3000, uint32(1000+g)), 0, nil, payload)
					if !ok {
						return fmt.Errorf("stream %d: putRTP refused", g)
					}
					want, err := pc.EncryptRTP(pbuf, buf[:n], nil)
					if err != nil {
						return err
					}
					if got := sl.seal(buf, n, hdrLen); !bytes.Equal(got, want) {
						return fmt.Errorf("stream %d seq %d: sealer and pion differ", g, seq)
					}
				}
				return nil
			}()
		}()
	}
	for range streams {
		require.NoError(t, <-errs)
	}
}
