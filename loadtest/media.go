package loadtest

import (
	"encoding/binary"
	"errors"
)

// Synthetic media. Frames carry a marker (who sent it, which layer) and a
// sequence number, followed by a pattern derived from both, so a receiver
// can check that every byte arrived intact.

var (
	errShort   = errors.New("frame too short")
	errMagic   = errors.New("bad magic")
	errPattern = errors.New("payload pattern mismatch")
)

const (
	magicVideo = "GXV"
	magicAudio = "GXA"
)

// VP8Frame builds a synthetic VP8 frame of size bytes (at least
// 20+len(marker)) whose first bytes are a real VP8 frame tag (RFC 6386
// §9.1): a key frame has P=0, the start code 9d 01 2a and the dimensions;
// an inter frame has P=1. The SFU's keyframe detection reads only these.
func VP8Frame(key bool, width, height uint16, marker string, seq uint32, size int) []byte {
	hdr := 3
	if key {
		hdr = 10
	}
	body := len(magicVideo) + 1 + len(marker) + 4
	size = max(size, hdr+body)
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
	fillBody(b[hdr:], magicVideo, marker, seq)
	return b
}

// CheckVP8Frame verifies a frame built by VP8Frame and returns its marker,
// sequence number and whether it is a key frame.
func CheckVP8Frame(b []byte) (marker string, seq uint32, key bool, err error) {
	if len(b) < 3 {
		return "", 0, false, errShort
	}
	key = b[0]&1 == 0
	hdr := 3
	if key {
		hdr = 10
		if len(b) < hdr || b[3] != 0x9d || b[4] != 0x01 || b[5] != 0x2a {
			return "", 0, key, errMagic
		}
	}
	marker, seq, err = checkBody(b[hdr:], magicVideo)
	return marker, seq, key, err
}

// AudioFrame builds a synthetic audio payload (not decodable Opus; the
// SFU forwards payloads untouched).
func AudioFrame(marker string, seq uint32, size int) []byte {
	size = max(size, len(magicAudio)+1+len(marker)+4)
	b := make([]byte, size)
	fillBody(b, magicAudio, marker, seq)
	return b
}

// CheckAudioFrame verifies a payload built by AudioFrame.
func CheckAudioFrame(b []byte) (marker string, seq uint32, err error) {
	return checkBody(b, magicAudio)
}

func fillBody(b []byte, magic, marker string, seq uint32) {
	n := copy(b, magic)
	b[n] = byte(len(marker))
	n++
	n += copy(b[n:], marker)
	binary.BigEndian.PutUint32(b[n:], seq)
	n += 4
	for i := n; i < len(b); i++ {
		b[i] = byte(seq) + byte(i*31)
	}
}

func checkBody(b []byte, magic string) (string, uint32, error) {
	if len(b) < len(magic)+1 || string(b[:len(magic)]) != magic {
		return "", 0, errMagic
	}
	n := len(magic)
	ml := int(b[n])
	n++
	if len(b) < n+ml+4 {
		return "", 0, errShort
	}
	marker := string(b[n : n+ml])
	n += ml
	seq := binary.BigEndian.Uint32(b[n:])
	n += 4
	for i := n; i < len(b); i++ {
		if b[i] != byte(seq)+byte(i*31) {
			return marker, seq, errPattern
		}
	}
	return marker, seq, nil
}
