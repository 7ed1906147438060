package sfu

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// dtPacket builds a data track packet as livekit's packetizer lays it out:
// version 0, S/F/X flags, handle, sequence, frame number, timestamp, then
// (with X) a 16-bit extension size in 32-bit words minus one, the
// extensions (id, length, data) padded with zeros, then the payload.
func dtPacket(handle, seq uint16, exts [][]byte, payload []byte) []byte {
	b := make([]byte, dataTrackHeader)
	b[0] = 1<<4 | 1<<3 // start and final of frame
	binary.BigEndian.PutUint16(b[2:], handle)
	binary.BigEndian.PutUint16(b[4:], seq)
	binary.BigEndian.PutUint16(b[6:], seq)
	binary.BigEndian.PutUint32(b[8:], 90000)
	if len(exts) > 0 {
		b[0] |= 1 << 2
		var blk []byte
		for i, e := range exts {
			blk = append(blk, byte(i+1), byte(len(e)))
			blk = append(blk, e...)
		}
		words := (2 + len(blk) + 3) / 4
		blk = append(blk, make([]byte, words*4-2-len(blk))...)
		b = binary.BigEndian.AppendUint16(b, uint16(words-1))
		b = append(b, blk...)
	}
	return append(b, payload...)
}

func TestDataTrackHeader(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pkt    []byte
		handle uint16
		ok     bool
	}{
		{"plain", dtPacket(7, 1, nil, []byte("hi")), 7, true},
		{"no payload", dtPacket(65535, 1, nil, nil), 65535, true},
		{"extensions", dtPacket(3, 1, [][]byte{[]byte("PA_abc"), {1, 2, 3, 4, 5}}, []byte("x")), 3, true},
		{"extension of 2 bytes, no padding", dtPacket(3, 1, [][]byte{{}}, nil), 3, true},
		{"short", dtPacket(7, 1, nil, nil)[:11], 0, false},
		{"handle 0", dtPacket(0, 1, nil, []byte("x")), 0, false},
		{"version 1", func() []byte { b := dtPacket(7, 1, nil, nil); b[0] |= 1 << 5; return b }(), 0, false},
		{"extension flag without its size", func() []byte { b := dtPacket(7, 1, nil, nil); b[0] |= 1 << 2; return b }(), 0, false},
		{"extension size beyond the packet", func() []byte {
			b := dtPacket(7, 1, [][]byte{[]byte("abcdef")}, nil)
			binary.BigEndian.PutUint16(b[12:], 100)
			return b
		}(), 0, false},
		{"extension length beyond its block", func() []byte {
			b := dtPacket(7, 1, [][]byte{[]byte("ab")}, []byte("payload-bytes"))
			b[15] = 200
			return b
		}(), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := parseDataTrackHeader(tc.pkt)
			if !tc.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.handle, h)
		})
	}
}

// FuzzDataTrackHeader: any bytes from a publisher's _data_track channel are
// parsed without a panic, and what is accepted has a header and a handle.
func FuzzDataTrackHeader(f *testing.F) {
	f.Add(dtPacket(7, 1, nil, []byte("hi")))
	f.Add(dtPacket(3, 9, [][]byte{[]byte("PA_abc"), {1}}, []byte("x")))
	f.Add([]byte{4, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseDataTrackHeader(b)
		if err == nil && (h == 0 || len(b) < dataTrackHeader) {
			t.Fatalf("accepted %x as handle %d", b, h)
		}
	})
}
