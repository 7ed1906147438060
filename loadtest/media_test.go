package loadtest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestVP8FrameRoundTrip(t *testing.T) {
	sent := time.Unix(1700000000, 123456789)
	for _, key := range []bool{true, false} {
		f := VP8Frame(key, 640, 360, "alice/h", 7, sent, 1500)
		require.Len(t, f, 1500)
		require.Equal(t, !key, f[0]&1 == 1, "P bit")
		got, err := CheckVP8Frame(f)
		require.NoError(t, err)
		require.Equal(t, Frame{Marker: "alice/h", Seq: 7, Sent: sent, Key: key}, got)
		f[len(f)-1]++
		_, err = CheckVP8Frame(f)
		require.ErrorIs(t, err, errPattern)
	}
	a := AudioFrame("bob/audio", 3, sent, 80)
	got, err := CheckAudioFrame(a)
	require.NoError(t, err)
	require.Equal(t, Frame{Marker: "bob/audio", Seq: 3, Sent: sent}, got)
	_, err = CheckAudioFrame(a[:5])
	require.Error(t, err)
}

// The send stamp is covered: a frame too short for it is refused, and the
// smallest frame still carries it.
func TestFrameStamp(t *testing.T) {
	sent := time.Unix(0, 42)
	a := AudioFrame("x", 1, sent, 0)
	require.Len(t, a, bodyLen("x"))
	got, err := CheckAudioFrame(a)
	require.NoError(t, err)
	require.True(t, got.Sent.Equal(sent))
	_, err = CheckAudioFrame(a[:len(a)-1])
	require.ErrorIs(t, err, errShort)

	v := VP8Frame(false, 320, 180, "pub/q", 9, sent, 0)
	require.Len(t, v, 3+bodyLen("pub/q"))
	got, err = CheckVP8Frame(v)
	require.NoError(t, err)
	require.True(t, got.Sent.Equal(sent))
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

// TestStreamStatsFreezes: a gap over FreezeGap between intact frames is a
// freeze, shorter ones are not; a stream that stopped counts as frozen
// up to now, and the open gap is not counted twice once it closes.
func TestStreamStatsFreezes(t *testing.T) {
	var s StreamStats
	t0 := time.Unix(1000, 0)
	require.False(t, s.freezeState(t0).ok, "no frame yet: nothing to say")
	at := t0
	for range 10 {
		s.frame("x", at)
		at = at.Add(FreezeGap) // exactly the limit: not a freeze
	}
	m := s.freezeState(at.Add(-FreezeGap))
	require.True(t, m.ok)
	require.Zero(t, m.freezes)

	last := at.Add(-FreezeGap)
	open := s.freezeState(last.Add(3 * time.Second))
	require.EqualValues(t, 1, open.freezes, "stopped for 3 s")
	require.Equal(t, 3*time.Second, open.frozen)

	s.frame("x", last.Add(4*time.Second))
	closed := s.freezeState(last.Add(4 * time.Second))
	require.EqualValues(t, 1, closed.freezes, "the same gap, now closed")
	require.Equal(t, 4*time.Second, closed.frozen)
	require.Equal(t, 4*time.Second, closed.longest)

	s.frame("x", last.Add(2*time.Second)) // reordered: no gap, no step back
	s.frame("x", last.Add(4*time.Second+time.Second))
	require.EqualValues(t, 2, s.freezeState(last.Add(5*time.Second)).freezes)
}

// TestVBRSize: -audio-vbr frame sizes stay within half and one and a half
// times the mean, average to it, and differ from frame to frame.
func TestVBRSize(t *testing.T) {
	sum, distinct := 0, map[int]bool{}
	for seq := uint32(1); seq <= 5000; seq++ {
		n := vbrSize(80, seq)
		if n < 40 || n > 120 {
			t.Fatalf("frame %d: %d bytes", seq, n)
		}
		sum += n
		distinct[n] = true
	}
	if mean := float64(sum) / 5000; mean < 76 || mean > 84 {
		t.Fatalf("mean %.1f bytes, want about 80", mean)
	}
	if len(distinct) < 60 {
		t.Fatalf("%d distinct sizes of 81", len(distinct))
	}
}
