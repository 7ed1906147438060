package statuslist

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBitOrderPerProfile(t *testing.T) {
	for _, p := range []Profile{ProfileW3C, ProfileXFSCCompat} {
		for _, revoked := range []int{0, 7, 8, 131071} {
			enc, err := Encode(131072, []int{revoked}, p)
			require.NoError(t, err)
			b, err := Decode(enc, p, 1, DefaultLimits)
			require.NoError(t, err)
			require.Equal(t, 131072, b.Len())
			for _, i := range []int{0, 1, 6, 7, 8, 131071} {
				v, err := b.Status(i)
				require.NoError(t, err)
				require.Equal(t, i == revoked, v == 1, "profile %s revoked %d index %d", p, revoked, i)
			}
		}
	}
}

func TestKnownEncodings(t *testing.T) {
	// One byte 0x80: W3C reads index 0 as set, XFSC reads index 7.
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	_, _ = zw.Write([]byte{0x80, 0, 0, 0})
	require.NoError(t, zw.Close())
	w3c, err := Decode("u"+base64.RawURLEncoding.EncodeToString(z.Bytes()), ProfileW3C, 1, DefaultLimits)
	require.NoError(t, err)
	v0, _ := w3c.Status(0)
	v7, _ := w3c.Status(7)
	require.Equal(t, []uint{1, 0}, []uint{v0, v7})

	xfsc, err := Decode(base64.StdEncoding.EncodeToString(z.Bytes()), ProfileXFSCCompat, 1, DefaultLimits)
	require.NoError(t, err)
	v0, _ = xfsc.Status(0)
	v7, _ = xfsc.Status(7)
	require.Equal(t, []uint{0, 1}, []uint{v0, v7})

	// StatusList2021 without multibase prefix, padded standard alphabet.
	_, err = Decode(base64.StdEncoding.EncodeToString(z.Bytes()), ProfileW3C, 1, DefaultLimits)
	require.NoError(t, err)
}

func TestStatusSize(t *testing.T) {
	enc, err := Encode(16, []int{2, 3}, ProfileW3C) // entry 1 (bits 2,3) = 0b11
	require.NoError(t, err)
	b, err := Decode(enc, ProfileW3C, 2, DefaultLimits)
	require.NoError(t, err)
	require.Equal(t, 8, b.Len())
	v, _ := b.Status(1)
	require.Equal(t, uint(3), v)
	v, _ = b.Status(0)
	require.Equal(t, uint(0), v)
}

func TestDecompressionBomb(t *testing.T) {
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
	_, _ = zw.Write(make([]byte, 16<<20+1))
	require.NoError(t, zw.Close())
	_, err := Decode("u"+base64.RawURLEncoding.EncodeToString(z.Bytes()), ProfileW3C, 1, DefaultLimits)
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = Decode("u"+base64.RawURLEncoding.EncodeToString(z.Bytes()), ProfileW3C, 1, Limits{MaxEncoded: 10, MaxDecompressed: 1 << 30})
	require.ErrorIs(t, err, ErrTooLarge)
}

func TestDecodeRejects(t *testing.T) {
	for name, enc := range map[string]string{"empty": "", "not base64": "u!!!", "not gzip": "uAAAA"} {
		_, err := Decode(enc, ProfileW3C, 1, DefaultLimits)
		require.ErrorIs(t, err, ErrInvalid, name)
	}
	_, err := Decode("uAAAA", "lsb", 1, DefaultLimits)
	require.ErrorIs(t, err, ErrInvalid)
	enc, _ := Encode(8, nil, ProfileW3C)
	b, err := Decode(enc, ProfileW3C, 1, DefaultLimits)
	require.NoError(t, err)
	_, err = b.Status(8)
	require.ErrorIs(t, err, ErrIndex)
	_, err = b.Status(-1)
	require.ErrorIs(t, err, ErrIndex)
}

// TestTokenList: Token Status List entries of 1, 2, 4 and 8 bits sit in
// the least significant bits first, each value in its natural bit order;
// the draft's example (bits 1, bytes 0xB9 0xA3) and a 2-bit list made by
// @sd-jwt/jwt-status-list 0.19 decode to the values those were made from.
func TestTokenList(t *testing.T) {
	for _, tc := range []struct {
		lst  string
		bits int
		want []uint
	}{
		{"eNrbuRgAAhcBXQ", 1, []uint{1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1}},
		{"eNqb8xAAAhsBfg", 2, []uint{0, 3, 1, 2, 1, 0, 2, 3}},
	} {
		b, err := DecodeToken(tc.lst, tc.bits, DefaultLimits)
		require.NoError(t, err)
		for i, w := range tc.want {
			v, err := b.Status(i)
			require.NoError(t, err)
			require.Equal(t, w, v, "%s index %d", tc.lst, i)
		}
	}
	for _, bits := range []int{1, 2, 4, 8} {
		values := make([]uint, 37)
		for i := range values {
			values[i] = uint(i*7+3) % (1 << uint(bits))
		}
		lst, err := EncodeToken(values, bits)
		require.NoError(t, err)
		b, err := DecodeToken(lst, bits, DefaultLimits)
		require.NoError(t, err)
		for i, w := range values {
			v, err := b.Status(i)
			require.NoError(t, err)
			require.Equal(t, w, v, "bits %d index %d", bits, i)
		}
		_, err = b.Status(b.Len())
		require.ErrorIs(t, err, ErrIndex)
	}
	_, err := DecodeToken("eNrbuRgAAhcBXQ", 3, DefaultLimits)
	require.ErrorIs(t, err, ErrInvalid)
	_, err = DecodeToken("H4sIAAAAAAAA_wMAAAAAAAAAAAA", 1, DefaultLimits) // GZIP, not ZLIB
	require.ErrorIs(t, err, ErrInvalid)
	bomb, err := EncodeToken(make([]uint, 8<<20), 8)
	require.NoError(t, err)
	_, err = DecodeToken(bomb, 8, Limits{MaxEncoded: 1 << 20, MaxDecompressed: 1 << 20})
	require.ErrorIs(t, err, ErrTooLarge)
}

func FuzzDecodeToken(f *testing.F) {
	f.Add("eNrbuRgAAhcBXQ", 1, 3)
	lst, _ := EncodeToken([]uint{0, 3, 1, 2}, 2)
	f.Add(lst, 2, 1)
	f.Add("eNoDAAAAAAE", 8, 0)
	f.Fuzz(func(t *testing.T, s string, bits, idx int) {
		b, err := DecodeToken(s, bits, Limits{MaxEncoded: 1 << 16, MaxDecompressed: 1 << 20})
		if err != nil {
			return
		}
		v, err := b.Status(idx)
		if err == nil && v >= 1<<uint(bits) {
			t.Fatalf("value %d does not fit in %d bits", v, bits)
		}
		_, _ = b.Status(b.Len() - 1)
	})
}

func FuzzDecode(f *testing.F) {
	enc, _ := Encode(64, []int{0, 7}, ProfileW3C)
	f.Add(enc, 1, 3)
	enc, _ = Encode(64, []int{1}, ProfileXFSCCompat)
	f.Add(enc, 2, 0)
	f.Add("H4sIAAAAAAAA/wMAAAAAAAAAAAA", 1, 0)
	f.Fuzz(func(t *testing.T, s string, size, idx int) {
		for _, p := range []Profile{ProfileW3C, ProfileXFSCCompat} {
			b, err := Decode(s, p, size, Limits{MaxEncoded: 1 << 16, MaxDecompressed: 1 << 20})
			if err != nil {
				continue
			}
			_, _ = b.Status(idx)
			_, _ = b.Status(b.Len() - 1)
		}
	})
}
