package sfu

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A stream's report block follows RFC 3550: the extended highest sequence
// number across a wrap, cumulative and interval loss, jitter from transit
// times, and the last sender report's timestamp with the delay since.
func TestRecvStats(t *testing.T) {
	s := recvStats{clockRate: 90000}
	_, ok := s.report(1, 0)
	require.False(t, ok, "no report before the first packet")

	// 65530 … 5 across the wrap, 2 and 3 lost, on time: 100 ms apart,
	// 9000 RTP units apart.
	k := int64(0)
	for _, seq := range []uint16{65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 4, 5} {
		d := int64(seq-65530) & 0xffff
		s.add(seq, uint32(d*9000), d*100_000)
		k = d
	}
	rr, ok := s.report(1, 0)
	require.True(t, ok)
	require.EqualValues(t, 1, rr.SSRC)
	require.EqualValues(t, 65536+5, rr.LastSequenceNumber)
	require.EqualValues(t, 2, rr.TotalLost)
	require.EqualValues(t, 2*256/12, rr.FractionLost)
	require.Zero(t, rr.Jitter)
	require.Zero(t, rr.LastSenderReport)
	require.Zero(t, rr.Delay)

	// Next interval: nothing new lost; one packet 10 ms late (900 units).
	k++
	s.add(6, uint32(k*9000), k*100_000+10_000)
	rr, _ = s.report(1, 0)
	require.Zero(t, rr.FractionLost)
	require.EqualValues(t, 2, rr.TotalLost)
	require.EqualValues(t, 900/16, rr.Jitter)

	// A sender report: its NTP time's middle 32 bits, and the delay since
	// in 1/65536 s.
	s.senderReport(0x0001_2345_6789_abcd, int64(time.Second))
	rr, _ = s.report(1, int64(time.Second)+int64(500*time.Millisecond))
	require.EqualValues(t, 0x23456789, rr.LastSenderReport)
	require.EqualValues(t, 32768, rr.Delay)

	// Duplicates make the cumulative loss negative: 24-bit two's complement.
	for range 5 {
		s.add(6, uint32(k*9000), k*100_000)
	}
	rr, _ = s.report(1, int64(2*time.Second))
	require.EqualValues(t, 0xffffff-2, rr.TotalLost)
	require.Zero(t, rr.FractionLost)
}
