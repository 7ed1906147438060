package loadtest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestVP8FrameRoundTrip(t *testing.T) {
	for _, key := range []bool{true, false} {
		f := VP8Frame(key, 640, 360, "alice/h", 7, 1500)
		require.Len(t, f, 1500)
		require.Equal(t, !key, f[0]&1 == 1, "P bit")
		m, seq, k, err := CheckVP8Frame(f)
		require.NoError(t, err)
		require.Equal(t, "alice/h", m)
		require.EqualValues(t, 7, seq)
		require.Equal(t, key, k)
		f[len(f)-1]++
		_, _, _, err = CheckVP8Frame(f)
		require.ErrorIs(t, err, errPattern)
	}
	a := AudioFrame("bob/audio", 3, 80)
	m, seq, err := CheckAudioFrame(a)
	require.NoError(t, err)
	require.Equal(t, "bob/audio", m)
	require.EqualValues(t, 3, seq)
	_, _, err = CheckAudioFrame(a[:5])
	require.Error(t, err)
}

func TestStreamStatsLoss(t *testing.T) {
	var s StreamStats
	for seq := uint16(65530); seq != 20; seq++ {
		if seq == 3 || seq == 4 {
			continue // lost
		}
		s.packet(seq, 0)
	}
	exp, got := s.Loss()
	require.EqualValues(t, 26, exp)
	require.EqualValues(t, 24, got)
}

func TestReadProc(t *testing.T) {
	st, err := readProc(0)
	require.NoError(t, err)
	require.Greater(t, st.rss, uint64(0))
	require.GreaterOrEqual(t, st.hwm, st.rss)
}
