package plan

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDefaultCalibration(t *testing.T) {
	c := DefaultCalibration()
	require.NoError(t, c.Validate())
	// Every figure says where it comes from.
	for _, f := range requiredFields[3:] {
		require.NotEmpty(t, c.Sources[f], f)
	}
	require.InDelta(t, 10.5, c.ForwardMicros, 1e-9)
}

func TestMeasuredCalibrationFile(t *testing.T) {
	// The file the calibration run of docs/concept wrote.
	c, err := ReadCalibrationFile("../docs/concept/kalibrierung-2026-12-02.json")
	require.NoError(t, err)
	require.Contains(t, c.Command, "-api-secret REDACTED")
	require.Greater(t, c.ForwardMicros, 0.0)
}

func TestCalibrationRoundTrip(t *testing.T) {
	b, err := DefaultCalibration().Marshal()
	require.NoError(t, err)
	c, err := ParseCalibration(b)
	require.NoError(t, err)
	require.Equal(t, DefaultCalibration(), c)
	p := filepath.Join(t.TempDir(), "c.json")
	require.NoError(t, os.WriteFile(p, b, 0o600))
	c, err = ReadCalibrationFile(p)
	require.NoError(t, err)
	require.Equal(t, DefaultCalibration(), c)
}

// variant returns the default calibration as a JSON object, changed by mod.
func variant(t *testing.T, mod func(m map[string]any)) []byte {
	t.Helper()
	b, err := DefaultCalibration().Marshal()
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	mod(m)
	out, err := json.Marshal(m)
	require.NoError(t, err)
	return out
}

func TestCalibrationErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  func(t *testing.T) []byte
		want []string
	}{
		{"unknown version", func(t *testing.T) []byte { return variant(t, func(m map[string]any) { m["version"] = 2 }) },
			[]string{"version: unknown calibration version 2 (this gxconf reads version 1)"}},
		{"version as a string", func(t *testing.T) []byte { return variant(t, func(m map[string]any) { m["version"] = "1" }) },
			[]string{`version: unknown calibration version "1"`}},
		{"future version with new fields", func(t *testing.T) []byte {
			return variant(t, func(m map[string]any) { m["version"], m["gpu_us"] = 3, 1 })
		}, []string{"unknown calibration version 3"}},
		{"missing version", func(t *testing.T) []byte { return variant(t, func(m map[string]any) { delete(m, "version") }) },
			[]string{"version: missing (want 1)"}},
		{"wrong kind", func(t *testing.T) []byte { return variant(t, func(m map[string]any) { m["kind"] = "livekit.bench" }) },
			[]string{`kind: unknown kind "livekit.bench"`}},
		{"missing figure", func(t *testing.T) []byte { return variant(t, func(m map[string]any) { delete(m, "join_cpu_ms") }) },
			[]string{"join_cpu_ms: missing"}},
		{"unknown field", func(t *testing.T) []byte {
			return variant(t, func(m map[string]any) { m["forward_ms_per_packet"] = 1 })
		},
			[]string{`unknown field "forward_ms_per_packet"`}},
		{"re-spelled field", func(t *testing.T) []byte {
			b := variant(t, func(map[string]any) {})
			return []byte(strings.Replace(string(b), `"forward_us_per_packet"`, `"Forward_US_per_packet"`, 1))
		}, []string{`"Forward_US_per_packet" for "forward_us_per_packet"`}},
		{"second spelling of a field", func(t *testing.T) []byte {
			b := variant(t, func(map[string]any) {})
			return []byte(strings.Replace(string(b), `{`, `{"FORWARD_US_PER_PACKET":0.001,`, 1))
		}, []string{"FORWARD_US_PER_PACKET"}},
		{"negative figure", func(t *testing.T) []byte {
			return variant(t, func(m map[string]any) { m["forward_us_per_packet"] = -3 })
		},
			[]string{"forward_us_per_packet: must be positive, got -3"}},
		{"zero figure", func(t *testing.T) []byte {
			return variant(t, func(m map[string]any) { m["participant_memory_kib"] = 0 })
		},
			[]string{"participant_memory_kib: must be positive, got 0"}},
		{"wrong unit", func(t *testing.T) []byte {
			return variant(t, func(m map[string]any) { m["node_base_memory_mib"] = 58720256 })
		},
			[]string{"node_base_memory_mib: implausibly large"}},
		{"bad date", func(t *testing.T) []byte { return variant(t, func(m map[string]any) { m["date"] = "yesterday" }) },
			[]string{`date: not an RFC 3339 time: "yesterday"`}},
		{"terminal escape in machine", func(t *testing.T) []byte {
			return variant(t, func(m map[string]any) { m["machine"] = "x\x1b]0;owned\x07" })
		}, []string{"machine: contains control characters"}},
		{"newline in a source", func(t *testing.T) []byte {
			return variant(t, func(m map[string]any) { m["sources"] = map[string]any{"join_cpu_ms": "a\nb"} })
		}, []string{"sources.join_cpu_ms: contains control characters"}},
		{"duplicate key", func(t *testing.T) []byte {
			b := variant(t, func(map[string]any) {})
			return []byte(strings.Replace(string(b), `{`, `{"forward_us_per_packet":0.001,`, 1))
		}, []string{`duplicate member name: "forward_us_per_packet"`}},
		{"trailing data", func(t *testing.T) []byte { return append(variant(t, func(map[string]any) {}), []byte(`{}`)...) },
			[]string{"not one JSON object", "trailing data"}},
		{"not an object", func(*testing.T) []byte { return []byte(`[1,2]`) }, []string{"not one JSON object"}},
		{"nested too deeply", func(t *testing.T) []byte {
			b := variant(t, func(map[string]any) {})
			deep := strings.Repeat("[", 40) + strings.Repeat("]", 40)
			return []byte(strings.Replace(string(b), `{`, `{"x":`+deep+`,`, 1))
		}, []string{"nesting too deep"}},
		{"too large", func(*testing.T) []byte { return []byte(`{"kind":"` + strings.Repeat("a", MaxCalibrationSize) + `"}`) },
			[]string{"larger than"}},
		{"several problems", func(t *testing.T) []byte {
			return variant(t, func(m map[string]any) { m["join_cpu_ms"], m["relay_send_us_per_packet"] = -1, 0 })
		}, []string{"join_cpu_ms:", "relay_send_us_per_packet:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCalibration(tc.doc(t))
			require.ErrorIs(t, err, ErrCalibration)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestReadCalibrationFileErrors(t *testing.T) {
	_, err := ReadCalibrationFile(filepath.Join(t.TempDir(), "absent.json"))
	require.ErrorContains(t, err, "failed to open calibration")
	p := filepath.Join(t.TempDir(), "v2.json")
	require.NoError(t, os.WriteFile(p, variant(t, func(m map[string]any) { m["version"] = 2 }), 0o600))
	_, err = ReadCalibrationFile(p)
	require.ErrorIs(t, err, ErrCalibration)
	require.ErrorContains(t, err, p+": ")
	require.ErrorContains(t, err, "unknown calibration version 2")
}

func TestFromRun(t *testing.T) {
	base := roundCal() // 500 KiB per participant, 100 KiB per track, join 10 ms
	base.Sources = map[string]string{"relay_send_us_per_packet": "bench"}
	run := RunFigures{
		Participants: 50, TracksSubscribed: 100, MicrosPerPacket: 12,
		// 1 s of SFU CPU during the joins, 25,000 packets × 12 µs = 0.3 s
		// of it forwarding: 0.7 s / 50 = 14 ms per join.
		JoinCPUSeconds: 1, JoinPackets: 25000,
		// 50 × 1,050 KiB = (500 + 2 × 100) KiB × 1.5 each.
		RSSStart: 60 << 20, RSSEnd: 60<<20 + 50*1050*1024,
		Date: time.Date(2026, 12, 2, 13, 0, 0, 0, time.FixedZone("CET", 3600)), Machine: "m", Command: "gxconf loadtest …",
	}
	c, err := FromRun(run, base)
	require.NoError(t, err)
	require.Equal(t, "2026-12-02T12:00:00Z", c.Date)
	require.InDelta(t, 12, c.ForwardMicros, 1e-9)
	require.InDelta(t, 14, c.JoinCPUMillis, 1e-9)
	require.InDelta(t, 60, c.NodeBaseMiB, 1e-9)
	require.InDelta(t, 750, c.ParticipantKiB, 1e-9)
	require.InDelta(t, 150, c.SubscribedTrackKiB, 1e-9)
	require.Equal(t, base.RelaySendMicros, c.RelaySendMicros)
	require.Equal(t, "kept from the base calibration: bench", c.Sources["relay_send_us_per_packet"])
	require.Contains(t, c.Sources["relay_receive_us_per_packet"], "kept from the base calibration")

	// Forwarding during the joins explains all CPU: the join cost is kept.
	run.JoinCPUSeconds = 0.2
	c, err = FromRun(run, base)
	require.NoError(t, err)
	require.InDelta(t, 10, c.JoinCPUMillis, 1e-9)
	require.Contains(t, c.Sources["join_cpu_ms"], "kept")

	_, err = FromRun(RunFigures{Participants: 5}, base)
	require.ErrorContains(t, err, "no SFU CPU per packet")
	_, err = FromRun(RunFigures{MicrosPerPacket: 5}, base)
	require.ErrorContains(t, err, "no joined participants")
}

func FuzzParseCalibration(f *testing.F) {
	def, err := DefaultCalibration().Marshal()
	require.NoError(f, err)
	f.Add(def)
	if b, err := os.ReadFile("../docs/concept/kalibrierung-2026-12-02.json"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"kind":"gxconf.calibration","version":2}`))
	f.Add([]byte(`{"kind":"gxconf.calibration","version":1,"date":"2026-01-01T00:00:00Z","machine":"","command":"",` +
		`"forward_us_per_packet":1,"relay_send_us_per_packet":1,"relay_receive_us_per_packet":1,"node_base_memory_mib":1,` +
		`"participant_memory_kib":1,"subscribed_track_memory_kib":1,"join_cpu_ms":1,"sources":{"a":"b"}}`))
	f.Add([]byte(`{"kind":"gxconf.calibration","version":1e0}`))
	f.Add([]byte(`{"a":{"b":[{"c":{}}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCalibration(b)
		if err != nil {
			return
		}
		// Accepted input re-marshals to a file that parses to the same.
		out, err := c.Marshal()
		require.NoError(t, err)
		c2, err := ParseCalibration(out)
		require.NoError(t, err)
		require.Equal(t, c, c2)
		// And it plans: finite figures, or a clear error (a node too
		// small for a huge base memory).
		p, err := Compute(DefaultInput(), c)
		if err != nil {
			require.ErrorIs(t, err, ErrInput)
			return
		}
		require.False(t, math.IsNaN(p.Cost.Total) || math.IsInf(p.Totals.CPUCores, 0))
	})
}
