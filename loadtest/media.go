package loadtest

import (
	"encoding/binary"
	"errors"
	"time"
)

// Synthetic media. Frames carry a marker (who sent it, which layer), a
// sequence number and the time the publisher handed the frame to its track
// (Unix nanoseconds: publisher and subscriber share this process's clock),
// followed by a pattern derived from the sequence number, so a receiver can
// check that every byte arrived intact and how long delivery took.

var (
	errShort   = errors.New("frame too short")
	errMagic   = errors.New("bad magic")
	errPattern = errors.New("payload pattern mismatch")
)

const (
	magicVideo = "GXV"
	magicAudio = "GXA"
)

// Frame is what a synthetic frame carries besides its pattern.
type Frame struct {
	Marker string
	Seq    uint32
	Sent   time.Time // when the publisher wrote it
	Key    bool      // a VP8 key frame (video only)
}

// bodyLen is the fixed part of a frame body: magic (both have three
// bytes), marker length, marker, sequence number, send time.
func bodyLen(marker string) int { return len(magicVideo) + 1 + len(marker) + 4 + 8 }

// VP8Frame builds a synthetic VP8 frame of size bytes (at least
// 26+len(marker)) whose first bytes are a real VP8 frame tag (RFC 6386
// §9.1): a key frame has P=0, the start code 9d 01 2a and the dimensions;
// an inter frame has P=1. The SFU's keyframe detection reads only these.
func VP8Frame(key bool, width, height uint16, marker string, seq uint32, sent time.Time, size int) []byte {
	hdr := 3
	if key {
		hdr = 10
	}
	size = max(size, hdr+bodyLen(marker))
	b := make([]byte, size)
	firstPart := uint32(size - hdr)
	tag := uint32(1<<4) | firstPart<<5 // version 0, show_frame 1
	if !key {
		tag |= 1
	}
	b[0], b[1], b[2] = byte(tag), byte(tag>>8), byte(tag>>16)
	if key {
		b[3], b[4], b[5] = 0x9d, 0x01, 0x2a
		binary.LittleEndian.PutUint16(b[6:], width&0x3fff)
		binary.LittleEndian.PutUint16(b[8:], height&0x3fff)
	}
	fillBody(b[hdr:], magicVideo, marker, seq, sent)
	return b
}

// CheckVP8Frame verifies a frame built by VP8Frame.
func CheckVP8Frame(b []byte) (Frame, error) {
	if len(b) < 3 {
		return Frame{}, errShort
	}
	key := b[0]&1 == 0
	hdr := 3
	if key {
		hdr = 10
		if len(b) < hdr || b[3] != 0x9d || b[4] != 0x01 || b[5] != 0x2a {
			return Frame{Key: key}, errMagic
		}
	}
	f, err := checkBody(b[hdr:], magicVideo)
	f.Key = key
	return f, err
}

// AudioFrame builds a synthetic audio payload (not decodable Opus; the
// SFU forwards payloads untouched).
func AudioFrame(marker string, seq uint32, sent time.Time, size int) []byte {
	size = max(size, bodyLen(marker))
	b := make([]byte, size)
	fillBody(b, magicAudio, marker, seq, sent)
	return b
}

// CheckAudioFrame verifies a payload built by AudioFrame.
func CheckAudioFrame(b []byte) (Frame, error) {
	return checkBody(b, magicAudio)
}

func fillBody(b []byte, magic, marker string, seq uint32, sent time.Time) {
	n := copy(b, magic)
	b[n] = byte(len(marker))
	n++
	n += copy(b[n:], marker)
	binary.BigEndian.PutUint32(b[n:], seq)
	n += 4
	binary.BigEndian.PutUint64(b[n:], uint64(sent.UnixNano()))
	n += 8
	for i := n; i < len(b); i++ {
		b[i] = byte(seq) + byte(i*31)
	}
}

func checkBody(b []byte, magic string) (Frame, error) {
	if len(b) < len(magic)+1 || string(b[:len(magic)]) != magic {
		return Frame{}, errMagic
	}
	n := len(magic)
	ml := int(b[n])
	n++
	if len(b) < n+ml+4+8 {
		return Frame{}, errShort
	}
	f := Frame{Marker: string(b[n : n+ml])}
	n += ml
	f.Seq = binary.BigEndian.Uint32(b[n:])
	n += 4
	f.Sent = time.Unix(0, int64(binary.BigEndian.Uint64(b[n:])))
	n += 8
	for i := n; i < len(b); i++ {
		if b[i] != byte(f.Seq)+byte(i*31) {
			return f, errPattern
		}
	}
	return f, nil
}
