package cluster

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCPUSampler(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stat")
	write := func(line string) {
		require.NoError(t, os.WriteFile(path, []byte(line+"\ncpu0 1 2 3 4 5\nintr 1\n"), 0o600))
	}
	s := &CPUSampler{path: path}
	write("cpu  100 0 100 700 100 0 0 0 0 0")
	require.InDelta(t, 0.2, s.Busy(), 1e-9, "since boot: 200 busy of 1000")
	write("cpu  400 0 200 800 100 0 0 0 0 0")
	require.InDelta(t, 0.8, s.Busy(), 1e-9, "400 busy of 500 since the last call")
	write("garbage")
	require.Zero(t, s.Busy())

	// The real file parses.
	sys := NewCPUSampler()
	if _, err := os.Stat("/proc/stat"); err == nil {
		v := sys.Busy()
		require.GreaterOrEqual(t, v, 0.0)
		require.LessOrEqual(t, v, 1.0)
	}
}

func TestNewPicksTheRegistry(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeID = "n"
	r, err := New(cfg, nopLog())
	require.NoError(t, err)
	require.IsType(t, &Embedded{}, r)
	cfg.Redis.Address = "127.0.0.1:1"
	cfg.SignalURL = "ws://n.test"
	r, err = New(cfg, nopLog(), WithLoadSource(LoadFunc(func() Load { return Load{Tracks: 3} })))
	require.NoError(t, err)
	require.IsType(t, &Redis{}, r)
	require.Equal(t, uint32(3), r.Self().Load.Tracks)
	require.NoError(t, r.(*Redis).closeClients())
}
