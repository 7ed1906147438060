package sfu

import (
	"time"

	"github.com/pion/rtcp"
)

// Receiver reports on the feedback clock.
//
// A publisher learns from the SFU's receiver reports (RFC 3550 §6.4.2) how
// much of each stream arrived, the interarrival jitter and, through the
// last sender report's timestamp and the delay since, its round-trip time.
// pion's report.ReceiverInterceptor parsed the header of every received
// packet once more into a new allocation and ran a goroutine and a ticker
// per connection; and since nothing reads a publisher connection's RTCP
// from pion, it never saw a sender report, so its reports carried no
// round-trip fields. feedbackInterceptor keeps these statistics per stream
// from the header the reader already parsed, the RTCP guard hands it the
// sender reports, and every rrTicks-th tick of the feedback clock it sends
// one receiver report for the connection's streams.

// rrTicks is how many feedback ticks make a receiver report interval:
// one second, pion's default.
const rrTicks = int(time.Second / feedbackInterval)

// rrMaxBlocks is how many report blocks one RTCP receiver report holds.
const rrMaxBlocks = 31

// recvStats are one received stream's reception statistics (RFC 3550
// appendix A.3 and A.8).
type recvStats struct {
	clockRate uint32
	started   bool
	maxSeq    uint16
	cycles    uint32 // sequence number wraps, shifted left 16
	baseSeq   uint32
	received  uint32
	// at the previous report
	expectedPrior, receivedPrior uint32
	// jitter: the last packet's transit time in RTP units, and the
	// estimate times 16 (A.8's integer form)
	transit    uint32
	haveTrans  bool
	jitter16   uint32
	haveSR     bool
	lastSR     uint32 // middle 32 bits of the last sender report's NTP time
	lastSRAtNs int64  // monotonic time it arrived
}

// add records a packet with seq and RTP timestamp ts that arrived at
// atUs (microseconds on any steady clock).
func (s *recvStats) add(seq uint16, ts uint32, atUs int64) {
	if !s.started {
		s.started, s.maxSeq, s.baseSeq = true, seq, uint32(seq)
	} else if d := seq - s.maxSeq; d != 0 && d < 0x8000 {
		if seq < s.maxSeq {
			s.cycles += 1 << 16
		}
		s.maxSeq = seq
	}
	s.received++
	if s.clockRate == 0 {
		return
	}
	arrival := uint32(atUs * int64(s.clockRate) / 1e6)
	transit := arrival - ts
	if s.haveTrans {
		d := int32(transit - s.transit)
		if d < 0 {
			d = -d
		}
		s.jitter16 += uint32(d) - ((s.jitter16 + 8) >> 4)
	}
	s.transit, s.haveTrans = transit, true
}

// senderReport records a sender report's NTP time that arrived at nowNs
// (monotonic).
func (s *recvStats) senderReport(ntp uint64, nowNs int64) {
	s.haveSR, s.lastSR, s.lastSRAtNs = true, uint32(ntp>>16), nowNs
}

// report returns the stream's report block at nowNs (monotonic) and starts
// the next interval; ok is false before the first packet.
func (s *recvStats) report(ssrc uint32, nowNs int64) (rtcp.ReceptionReport, bool) {
	if !s.started {
		return rtcp.ReceptionReport{}, false
	}
	extMax := s.cycles + uint32(s.maxSeq)
	expected := extMax - s.baseSeq + 1
	lost := int64(expected) - int64(s.received)
	lost = min(max(lost, -0x800000), 0x7fffff) // 24 bits, signed
	expInt := expected - s.expectedPrior
	recvInt := s.received - s.receivedPrior
	s.expectedPrior, s.receivedPrior = expected, s.received
	var fraction uint8
	if lostInt := int64(expInt) - int64(recvInt); expInt != 0 && lostInt > 0 {
		fraction = uint8(min(lostInt<<8/int64(expInt), 255))
	}
	var dlsr uint32
	if s.haveSR && nowNs > s.lastSRAtNs {
		// via microseconds, so the product cannot overflow
		dlsr = uint32((nowNs - s.lastSRAtNs) / 1000 * 65536 / 1e6)
	}
	return rtcp.ReceptionReport{
		SSRC:               ssrc,
		FractionLost:       fraction,
		TotalLost:          uint32(lost) & 0xffffff,
		LastSequenceNumber: extMax,
		Jitter:             s.jitter16 >> 4,
		LastSenderReport:   s.lastSR,
		Delay:              dlsr,
	}, true
}
