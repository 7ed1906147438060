package bridge

import (
	"testing"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

// TestFitLayers: every wanted track gets its lowest layer first, then
// layers up round robin while the budget allows; a layer above the
// current cap needs upgradeHeadroom, so a rate at the budget's edge does
// not flip the choice every second.
func TestFitLayers(t *testing.T) {
	track := func(sid string, wanted uint8, rates ...uint64) *outTrack {
		ot := &outTrack{sid: sid, kind: webrtc.RTPCodecTypeVideo, wanted: wanted}
		copy(ot.rates[:], rates)
		return ot
	}

	// Two tracks, 1.2 Mbit/s: both low (300k, 900k left), then a and b
	// medium in sid order (+350k each, with the margin 437.5k: 550k and
	// 200k left), high (+1.2M) fits for neither.
	a := track("a", 0b111, 150_000, 500_000, 1_700_000)
	b := track("b", 0b111, 150_000, 500_000, 1_700_000)
	fitLayers(1_200_000, []*outTrack{b, a})
	require.Equal(t, []int{1, 1}, []int{a.capLayer, b.capLayer})
	require.Equal(t, uint8(0b011), a.capMask())

	// One track wanting only the top layer, budget between low and
	// medium: the budget's layer alone is sent.
	c := track("c", 0b100, 150_000, 500_000, 1_700_000)
	fitLayers(600_000, []*outTrack{c})
	require.Equal(t, 1, c.capLayer)
	require.Equal(t, uint8(0b010), c.capMask())

	// At the edge: 520k left after low; medium needs 350k × 1.25 = 437.5k
	// to be added but only 350k to be kept.
	d := track("d", 0b100, 150_000, 500_000, 1_700_000)
	fitLayers(150_000+400_000, []*outTrack{d})
	require.Equal(t, 0, d.capLayer, "added without the margin")
	fitLayers(150_000+450_000, []*outTrack{d})
	require.Equal(t, 1, d.capLayer, "not added with the margin")
	for _, medium := range []uint64{520_000, 480_000, 540_000, 500_000} {
		d.rates[1] = medium
		fitLayers(150_000+400_000, []*outTrack{d})
		require.Equal(t, 1, d.capLayer, "dropped while it still fits (medium %d)", medium)
	}
	d.rates[1] = 600_000
	fitLayers(150_000+400_000, []*outTrack{d})
	require.Equal(t, 0, d.capLayer, "kept over the budget")
	require.Equal(t, uint8(0b001), d.capMask())

	// Nothing fits: the lowest layer anyway.
	e := track("e", 0b111, 150_000, 500_000, 1_700_000)
	fitLayers(10_000, []*outTrack{e})
	require.Equal(t, 0, e.capLayer)
}
