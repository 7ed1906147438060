package sfu

import (
	"bytes"
	"testing"

	"github.com/gxfs-conf/gxconf/internal/rtptest"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/rtp"
	"github.com/stretchr/testify/require"
)

// withTrailer returns payload followed by a packet trailer carrying user
// timestamp ts.
func withTrailer(payload []byte, ts uint64) []byte {
	return append(append([]byte(nil), payload...), rtptest.Trailer(ts)...)
}

func TestPacketTrailerLen(t *testing.T) {
	body := []byte{0x10, 1, 2, 3}
	require.Equal(t, 15, packetTrailerLen(withTrailer(body, 42)))
	require.Zero(t, packetTrailerLen(body))
	require.Zero(t, packetTrailerLen(withTrailer(nil, 42)), "all trailer: left as it came")
	require.Zero(t, packetTrailerLen([]byte("LKTS")))
	require.Zero(t, packetTrailerLen(append([]byte{9, 9, 0xff ^ 4}, "LKTS"...)), "length under the envelope")
	require.Zero(t, packetTrailerLen(append([]byte{9, 9, 0xff ^ 200}, "LKTS"...)), "length over the payload (split trailer)")
	require.Equal(t, []livekit.PacketTrailerFeature{livekit.PacketTrailerFeature_PTF_FRAME_ID, livekit.PacketTrailerFeature_PTF_USER_TIMESTAMP},
		knownTrailerFeatures([]livekit.PacketTrailerFeature{1, 1, 99, 0, -3, 0}))
}

// TestPacketTrailerCut: a track whose publisher announced packet trailers
// reaches a subscriber that reads them unchanged and one that does not
// without the trailer of each frame's last packet — also when that packet
// is retransmitted; packets without the marker are never cut, and a track
// without the announcement is forwarded as it came.
func TestPacketTrailerCut(t *testing.T) {
	for _, announced := range []bool{true, false} {
		l, _ := benchTrack(0)
		tr := l.t
		tr.trailer = announced
		capture := func(reads bool) (*downTrack, *captureWriter) {
			dt := newDownTrack(&Participant{s: tr.owner.s, readsTrailers: reads}, tr)
			w := &captureWriter{}
			dt.ws, dt.bound, dt.ssrc, dt.pt, dt.clockRate = w, true, 7, 97, 90000
			dt.target.Store(0)
			tr.addDownTrack(dt)
			return dt, w
		}
		_, reader := capture(true)
		plain, other := capture(false)

		var sent [][]byte
		var h rtp.Header
		for i := range 6 {
			p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(100 + i), Timestamp: uint32(i/2) * 3000, SSRC: 1, Marker: i%2 == 1}}
			body := vp8Payload(uint16(i), 0, i == 0)
			p.Payload = withTrailer(body, uint64(1000+i)) // also on the first packet of a frame: not cut there
			raw, err := p.Marshal()
			require.NoError(t, err)
			l.handle(raw, &h)
			sent = append(sent, p.Payload)
		}
		require.Len(t, reader.payloads, 6)
		require.Len(t, other.payloads, 6)
		var cut uint64
		for i := range sent {
			require.Equal(t, sent[i], reader.payloads[i], "packet %d to the reader", i)
			if announced && i%2 == 1 {
				require.Equal(t, sent[i][:len(sent[i])-15], other.payloads[i], "frame end %d cut", i)
				require.False(t, bytes.HasSuffix(other.payloads[i], []byte("LKTS")))
				cut++
			} else {
				require.Equal(t, sent[i], other.payloads[i], "packet %d as it came", i)
			}
		}
		_, _, _, _, _, stripped := plain.takeCounters()
		require.Equal(t, cut, stripped)

		plain.retransmit(other.hdrs[3].SequenceNumber)
		require.Len(t, other.payloads, 7)
		require.Equal(t, other.payloads[3], other.payloads[6], "the retransmission is cut as the original")
	}
}

// FuzzPacketTrailerLen: whatever a publisher sends, the length cut is
// either 0 or a trailer ending in the magic that leaves payload behind.
func FuzzPacketTrailerLen(f *testing.F) {
	f.Add(withTrailer([]byte{0x10, 1}, 5))
	f.Add(withTrailer(nil, 5))
	f.Add([]byte("LKTS"))
	f.Add(append([]byte{1, 0xff ^ 6}, "LKTS"...))
	f.Fuzz(func(t *testing.T, p []byte) {
		n := packetTrailerLen(p)
		if n != 0 && (n < trailerEnvelope || n >= len(p) || !bytes.HasSuffix(p, []byte("LKTS"))) {
			t.Fatalf("cut %d of %d bytes %x", n, len(p), p)
		}
	})
}
