package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// `gxconf drain` is `gxconf cluster drain`: both ask the node's metrics
// listener to drain.
func TestDrainCommand(t *testing.T) {
	var drains atomic.Int32
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/cluster/drain" {
			drains.Add(1)
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.WriteHeader(http.StatusNotFound)
	}))
	defer node.Close()

	for _, args := range [][]string{{"drain", "-url", node.URL}, {"cluster", "drain", "-url", node.URL}} {
		var out, errOut bytes.Buffer
		require.Equal(t, 0, run(args, &out, &errOut), errOut.String())
		require.Contains(t, out.String(), "draining")
	}
	require.EqualValues(t, 2, drains.Load())

	var out, errOut bytes.Buffer
	require.Equal(t, 1, run([]string{"drain", "-url", node.URL + "/elsewhere"}, &out, &errOut))
	require.Contains(t, errOut.String(), "gxconf drain: the node answered 404")
	errOut.Reset()
	require.Equal(t, 2, run([]string{"drain", "now"}, &out, &errOut))
	require.Contains(t, errOut.String(), `unexpected argument "now"`)
	out.Reset()
	require.Equal(t, 0, run([]string{"help"}, &out, &errOut))
	require.Contains(t, out.String(), "gxconf drain [-c config.yaml")
	require.EqualValues(t, 2, drains.Load())
}
