package bridge

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSignalStalledBody: a client sends a request's headers announcing a
// 100-byte body and then nothing; the relay closes the connection once
// its read timeout has passed instead of waiting for ever.
func TestSignalStalledBody(t *testing.T) {
	old := signalReadTimeout
	signalReadTimeout = 300 * time.Millisecond
	t.Cleanup(func() { signalReadTimeout = old })
	n := startNode(t, "node-a")

	c, err := net.Dial("tcp", n.br.Addr())
	require.NoError(t, err)
	defer c.Close()
	_, err = fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: relay\r\nContent-Length: 100\r\n\r\n", associatePath)
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadAll(c) // until the server closes
	require.NoError(t, err, "the connection is still open after 5 s")
	require.Less(t, time.Since(start), 3*time.Second)
}

// TestSignalOversized: a request body beyond maxSignalBody (413; it was
// a 400 "bad request") and a header beyond maxSignalHeader are refused.
func TestSignalOversized(t *testing.T) {
	n := startNode(t, "node-a")
	url := "http://" + n.br.Addr() + associatePath

	resp, err := http.Post(url, "application/json", bytes.NewReader(make([]byte, maxSignalBody+1)))
	require.NoError(t, err)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	require.Contains(t, string(raw), fmt.Sprintf("body larger than %d bytes", maxSignalBody))

	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
	require.NoError(t, err)
	req.Header.Set("X-Padding", strings.Repeat("p", 2*maxSignalHeader))
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
}
