// Package statuslist decodes the bitstrings of W3C Bitstring Status List
// (https://www.w3.org/TR/vc-bitstring-status-list/) and StatusList2021
// credentials, including the non-conformant encoding of the Eclipse XFSC
// status-list service, and the lists of IETF Token Status List tokens
// (draft-ietf-oauth-status-list, used by SD-JWT VCs). Decompression is
// size-capped against zip bombs.
package statuslist

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Profile selects the bit order and encoding rules of an issuer's lists.
type Profile string

const (
	// ProfileW3C reads bits most significant first, as the W3C specs define
	// (§ "Validate Algorithm": the first index is the left-most bit).
	ProfileW3C Profile = "w3c"
	// ProfileXFSCCompat reads bits least significant first, as XFSC's
	// statuslist-service sets them (1<<bitIndex), with standard base64.
	ProfileXFSCCompat Profile = "xfsc-compat"
	// ProfileToken is an IETF Token Status List: entries of 1, 2, 4 or 8
	// bits, the first in the least significant bits of the first byte, each
	// value in its natural bit order; ZLIB; base64url (DecodeToken).
	ProfileToken Profile = "token-status-list"
)

// Errors.
var (
	ErrInvalid  = errors.New("invalid encoded status list")
	ErrTooLarge = errors.New("status list exceeds size limit")
	ErrIndex    = errors.New("status index out of range")
)

// Bitstring is a decoded status list.
type Bitstring struct {
	bits    []byte
	profile Profile
	size    int // bits per entry (statusSize), 1 unless the list says otherwise
}

// Len returns the number of entries.
func (b *Bitstring) Len() int { return len(b.bits) * 8 / b.size }

// Status returns the value of entry i (0 = not set).
func (b *Bitstring) Status(i int) (uint, error) {
	if i < 0 || i >= b.Len() {
		return 0, fmt.Errorf("%w: %d of %d", ErrIndex, i, b.Len())
	}
	if b.profile == ProfileToken {
		// size divides 8: an entry never spans two bytes.
		bit := i * b.size
		return uint(b.bits[bit/8]>>uint(bit%8)) & (1<<uint(b.size) - 1), nil
	}
	var v uint
	for k := 0; k < b.size; k++ {
		bit := i*b.size + k
		byteIdx, off := bit/8, uint(bit%8)
		var set bool
		if b.profile == ProfileXFSCCompat {
			set = b.bits[byteIdx]&(1<<off) != 0
		} else {
			set = b.bits[byteIdx]&(0x80>>off) != 0
		}
		v <<= 1
		if set {
			v |= 1
		}
	}
	return v, nil
}

// Limits bound decoding work.
type Limits struct {
	// MaxEncoded bounds the length of the encodedList string.
	MaxEncoded int
	// MaxDecompressed bounds the inflated bitstring.
	MaxDecompressed int64
}

// DefaultLimits caps the inflated list at 16 MiB (134 million entries).
var DefaultLimits = Limits{MaxEncoded: 4 << 20, MaxDecompressed: 16 << 20}

// Decode decodes encodedList with the given profile and entry size (0 = 1).
// W3C lists may be multibase ('u' + base64url) or plain base64url; the XFSC
// profile uses standard base64. Either base64 alphabet, padded or not, is
// accepted because implementations disagree.
func Decode(encoded string, profile Profile, statusSize int, lim Limits) (*Bitstring, error) {
	if lim.MaxEncoded <= 0 || lim.MaxDecompressed <= 0 {
		lim = DefaultLimits
	}
	if statusSize <= 0 {
		statusSize = 1
	}
	if statusSize > 8 {
		return nil, fmt.Errorf("%w: statusSize %d", ErrInvalid, statusSize)
	}
	if len(encoded) > lim.MaxEncoded {
		return nil, fmt.Errorf("%w: encoded list has %d bytes", ErrTooLarge, len(encoded))
	}
	if profile != ProfileW3C && profile != ProfileXFSCCompat {
		return nil, fmt.Errorf("%w: unknown profile %q", ErrInvalid, profile)
	}
	s := encoded
	if profile == ProfileW3C && strings.HasPrefix(s, "u") {
		// Multibase base64url (VC Bitstring Status List §2.1). A plain
		// base64url list never starts with 'u' ambiguously for gzip data,
		// whose first byte 0x1f encodes as 'H'.
		s = s[1:]
	}
	raw, err := decodeBase64Any(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: not GZIP: %v", ErrInvalid, err)
	}
	bits, err := inflate(zr, lim.MaxDecompressed)
	if err != nil {
		return nil, err
	}
	return &Bitstring{bits: bits, profile: profile, size: statusSize}, nil
}

// DecodeToken decodes the lst of a Token Status List with bits bits per
// entry (1, 2, 4 or 8): base64url without padding of ZLIB (RFC 1950) data.
func DecodeToken(lst string, bits int, lim Limits) (*Bitstring, error) {
	if lim.MaxEncoded <= 0 || lim.MaxDecompressed <= 0 {
		lim = DefaultLimits
	}
	switch bits {
	case 1, 2, 4, 8:
	default:
		return nil, fmt.Errorf("%w: bits %d (1, 2, 4 or 8)", ErrInvalid, bits)
	}
	if len(lst) > lim.MaxEncoded {
		return nil, fmt.Errorf("%w: lst has %d bytes", ErrTooLarge, len(lst))
	}
	raw, err := base64.RawURLEncoding.DecodeString(lst)
	if err != nil {
		return nil, fmt.Errorf("%w: lst is not base64url: %v", ErrInvalid, err)
	}
	zr, err := zlib.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: not ZLIB: %v", ErrInvalid, err)
	}
	data, err := inflate(zr, lim.MaxDecompressed)
	if err != nil {
		return nil, err
	}
	return &Bitstring{bits: data, profile: ProfileToken, size: bits}, nil
}

// inflate reads a decompressor to its end, at most max bytes, and closes
// it; an empty list is invalid.
func inflate(zr io.ReadCloser, max int64) ([]byte, error) {
	defer zr.Close()
	data, err := io.ReadAll(io.LimitReader(zr, max+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%w: inflates beyond %d bytes", ErrTooLarge, max)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty list", ErrInvalid)
	}
	return data, nil
}

// EncodeToken builds a Token Status List lst (for tests): values[i] at
// entry i, bits bits each.
func EncodeToken(values []uint, bits int) (string, error) {
	switch bits {
	case 1, 2, 4, 8:
	default:
		return "", fmt.Errorf("%w: bits %d", ErrInvalid, bits)
	}
	buf := make([]byte, (len(values)*bits+7)/8)
	for i, v := range values {
		if v >= 1<<uint(bits) {
			return "", fmt.Errorf("%w: value %d in %d bits", ErrInvalid, v, bits)
		}
		bit := i * bits
		buf[bit/8] |= byte(v) << uint(bit%8)
	}
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	if _, err := zw.Write(buf); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(z.Bytes()), nil
}

func decodeBase64Any(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	if strings.ContainsAny(s, "+/") {
		return base64.RawStdEncoding.DecodeString(s)
	}
	return base64.RawURLEncoding.DecodeString(s)
}

// Encode builds an encodedList (for tests and fixtures): bits set at the
// given indices, GZIP, then the profile's encoding.
func Encode(length int, set []int, profile Profile) (string, error) {
	buf := make([]byte, (length+7)/8)
	for _, i := range set {
		if i < 0 || i >= length {
			return "", fmt.Errorf("%w: %d", ErrIndex, i)
		}
		if profile == ProfileXFSCCompat {
			buf[i/8] |= 1 << uint(i%8)
		} else {
			buf[i/8] |= 0x80 >> uint(i%8)
		}
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	if _, err := zw.Write(buf); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	if profile == ProfileXFSCCompat {
		return base64.RawStdEncoding.EncodeToString(z.Bytes()), nil
	}
	return "u" + base64.RawURLEncoding.EncodeToString(z.Bytes()), nil
}
