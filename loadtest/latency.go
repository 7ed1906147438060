package loadtest

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Latency histogram: log-linear buckets (64 per power of two, below 128 ns
// one per nanosecond), so a percentile is within 1.6 % of the true value
// over the whole range, with no allocation or lock per sample: every
// subscriber's reader adds to a few shared histograms.
const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	histMaxNs   = 1 << 40 // about 18 minutes; larger values are clamped
	histBuckets = (40-histSubBits)*histSub + histSub
)

// Histogram counts durations.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
}

func histBucket(ns uint64) int {
	if ns < 2*histSub {
		return int(ns)
	}
	ns = min(ns, histMaxNs-1)
	shift := bits.Len64(ns) - histSubBits - 1 // ns>>shift is in [64, 128)
	return (shift+1)*histSub + int(ns>>shift) - histSub
}

// histLow is the smallest value of bucket i.
func histLow(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	return uint64(i%histSub+histSub) << shift
}

// Add counts d; negative durations (a clock step) count as zero.
func (h *Histogram) Add(d time.Duration) {
	h.counts[histBucket(uint64(max(d, 0)))].Add(1)
}

// HistSnapshot is a histogram's counts at one moment; the difference of two
// snapshots covers the time between them.
type HistSnapshot []uint64

// Snapshot copies the counts.
func (h *Histogram) Snapshot() HistSnapshot {
	s := make(HistSnapshot, histBuckets)
	for i := range h.counts {
		s[i] = h.counts[i].Load()
	}
	return s
}

// Sub returns s minus an earlier snapshot of the same histogram (nil: s).
func (s HistSnapshot) Sub(earlier HistSnapshot) HistSnapshot {
	out := make(HistSnapshot, len(s))
	for i := range s {
		out[i] = s[i]
		if earlier != nil {
			out[i] -= earlier[i]
		}
	}
	return out
}

// Count is the number of samples.
func (s HistSnapshot) Count() uint64 {
	var n uint64
	for _, c := range s {
		n += c
	}
	return n
}

// Quantile returns the q-quantile (0 < q ≤ 1) as the middle of its bucket;
// 0 without samples.
func (s HistSnapshot) Quantile(q float64) time.Duration {
	n := s.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, c := range s {
		seen += c
		if seen >= rank {
			lo, hi := histLow(i), histLow(i+1)
			return time.Duration(lo + (hi-lo)/2)
		}
	}
	return time.Duration(histMaxNs)
}
