package loadtest

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Every value falls in the bucket whose bounds enclose it, and buckets are
// contiguous.
func TestHistogramBuckets(t *testing.T) {
	for _, ns := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 123456789, histMaxNs - 1} {
		i := histBucket(ns)
		require.LessOrEqual(t, histLow(i), ns, "ns %d bucket %d", ns, i)
		require.Greater(t, histLow(i+1), ns, "ns %d bucket %d", ns, i)
	}
	for i := 0; i < histBuckets-1; i++ {
		require.Equal(t, i+1, histBucket(histLow(i+1)), "bucket %d", i)
	}
	require.Equal(t, histBuckets-1, histBucket(1<<62), "clamped")
}

// Quantiles of a histogram are within the bucket precision (1.6 %) of the
// exact ones; snapshots subtract.
func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	rng := rand.New(rand.NewPCG(1, 2))
	var all []time.Duration
	for i := 0; i < 20000; i++ {
		d := time.Duration(200_000 + rng.ExpFloat64()*300_000) // 0.2 ms + exponential
		all = append(all, d)
		h.Add(d)
	}
	slices.Sort(all)
	s := h.Snapshot()
	require.EqualValues(t, len(all), s.Count())
	for _, q := range []float64{0.5, 0.9, 0.99} {
		exact := float64(percentile(all, q))
		require.InEpsilon(t, exact, float64(s.Quantile(q)), 0.02, "q %v", q)
	}

	h.Add(-time.Millisecond) // a clock step counts as zero
	h.Add(5 * time.Second)
	d := h.Snapshot().Sub(s)
	require.EqualValues(t, 2, d.Count())
	require.Zero(t, d.Quantile(0.5))
	require.InEpsilon(t, float64(5*time.Second), float64(d.Quantile(1)), 0.02)
	require.Zero(t, HistSnapshot(make([]uint64, histBuckets)).Quantile(0.5))
}
