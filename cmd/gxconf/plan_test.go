package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/plan"
)

// The two tender cases as README.md and docs/concept give them.
var tenderCases = map[string][]string{
	"500": {"-sessions", "1", "-participants", "500", "-video-publishers", "2", "-audio-publishers", "20", "-speakers", "2",
		"-receive-layer", "high", "-remote-share", "0.2", "-sites", "2", "-level", "kritis", "-redundancy", "n+1"},
	"2000": {"-sessions", "40", "-participants", "50", "-video-publishers", "16", "-audio-publishers", "50", "-speakers", "2",
		"-receive-layer", "low", "-remote-share", "0.2", "-sites", "2", "-level", "kritis", "-redundancy", "n+1"},
}

func TestPlanCommand(t *testing.T) {
	for name, args := range tenderCases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			require.Equal(t, 0, run(append([]string{"plan"}, args...), &out, &errOut), errOut.String())
			require.Contains(t, out.String(), "site-1")
			require.Contains(t, out.String(), "cost/month:")

			out.Reset()
			require.Equal(t, 0, run(append([]string{"plan", "-json"}, args...), &out, &errOut), errOut.String())
			var p plan.Plan
			require.NoError(t, json.Unmarshal(out.Bytes(), &p))
			require.Len(t, p.Sites, 2)
			require.NotNil(t, p.Peer)
			require.Positive(t, p.Totals.Nodes)
		})
	}
}

func TestPlanCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-level", "geheim"}, `level: unknown level "geheim"`},
		{[]string{"-remote-share", "1.5"}, "remote_share: must be at least 0 and below 1"},
		{[]string{"-participants", "-3"}, "participants: must be between 1"},
		{[]string{"-layers", "high:17"}, "layers: entry 1"},
		{[]string{"-receive-layer", "4k"}, `receive_layer: unknown layer "4k"`},
	} {
		var out, errOut bytes.Buffer
		require.Equal(t, 2, run(append([]string{"plan"}, tc.args...), &out, &errOut), tc.args)
		require.Contains(t, errOut.String(), tc.want)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "cal.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"kind":"gxconf.calibration","version":7}`), 0o600))
	var out, errOut bytes.Buffer
	require.Equal(t, 1, run([]string{"plan", "-calibration", bad}, &out, &errOut))
	require.Contains(t, errOut.String(), "unknown calibration version 7")
}

func TestPlanCalibrationFile(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"plan", "-print-calibration"}, &out, &errOut), errOut.String())
	p := filepath.Join(t.TempDir(), "cal.json")
	// A calibration twice as expensive per packet shows in the plan.
	c, err := plan.ParseCalibration(out.Bytes())
	require.NoError(t, err)
	c.ForwardMicros *= 2
	b, err := c.Marshal()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, b, 0o600))
	cpu := func(args ...string) float64 {
		var out, errOut bytes.Buffer
		require.Equal(t, 0, run(append([]string{"plan", "-json", "-participants", "500"}, args...), &out, &errOut), errOut.String())
		var pl plan.Plan
		require.NoError(t, json.Unmarshal(out.Bytes(), &pl))
		return pl.Totals.CPUCores
	}
	require.Greater(t, cpu("-calibration", p), 1.8*cpu())
}

func TestRedactArgs(t *testing.T) {
	got := redactArgs([]string{"-url", "ws://x", "-api-secret", "s3cret", "--api-secret=other", "-api-key", "k", "-api-secret"})
	require.Equal(t, []string{"-url", "ws://x", "-api-secret", "REDACTED", "--api-secret=REDACTED", "-api-key", "k", "-api-secret"}, got)
	require.NotContains(t, strings.Join(got, " "), "s3cret")
	require.NotContains(t, machineDescription(1.5), "\n")
}

func TestLoadtestCalibrationOutNeedsOneNode(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"loadtest", "-url", "ws://a,ws://b", "-api-key", "k", "-api-secret", "s", "-calibration-out", filepath.Join(t.TempDir(), "c.json")}, &out, &errOut)
	require.Equal(t, 2, code)
	require.Contains(t, errOut.String(), "-calibration-out needs exactly one -url and its -sfu-pid")
}
