package sfu

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRawSocketGroup: sockets sharing the media port with SO_REUSEPORT
// are read in parallel (a hook blocked in one reader does not stop the
// others), what the hook leaves reaches ReadFromAddrPort with the sender's
// address, replies leave from the shared port, a second process-level
// bind without SO_REUSEPORT is refused, and Close ends the reads.
func TestRawSocketGroup(t *testing.T) {
	conns, err := listenGroup(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, 3, 1<<20)
	require.NoError(t, err)
	require.Len(t, conns, 3)
	port := conns[0].LocalAddr().(*net.UDPAddr).Port
	for _, c := range conns {
		require.Equal(t, port, c.LocalAddr().(*net.UDPAddr).Port)
	}
	raw, err := NewRawUDPGroup(conns)
	require.NoError(t, err)
	defer raw.Close()
	require.ErrorIs(t, raw.SetReadDeadline(time.Now()), errors.ErrUnsupported)

	// Without SO_REUSEPORT nobody else gets the port.
	_, err = net.ListenUDP("udp4", conns[0].LocalAddr().(*net.UDPAddr))
	require.Error(t, err)

	release := make(chan struct{})
	blocked := make(chan struct{})
	var mu sync.Mutex
	taken := map[string]bool{}
	raw.SetReadHook(func(p []byte, from netip.AddrPort) bool {
		m := string(p)
		switch {
		case m == "block":
			close(blocked)
			<-release
			return true
		case strings.HasPrefix(m, "take"):
			mu.Lock()
			taken[m] = true
			mu.Unlock()
			return true
		}
		return false
	})

	blocker, err := net.DialUDP("udp4", nil, conns[0].LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	defer blocker.Close()
	_, err = blocker.Write([]byte("block"))
	require.NoError(t, err)
	<-blocked

	// 32 peers: with three sockets, some land on a reader other than the
	// blocked one, whose packets must still get through.
	peers := make([]*net.UDPConn, 32)
	for i := range peers {
		peers[i], err = net.DialUDP("udp4", nil, conns[0].LocalAddr().(*net.UDPAddr))
		require.NoError(t, err)
		defer peers[i].Close()
		_, err = peers[i].Write([]byte(fmt.Sprintf("take%d", i)))
		require.NoError(t, err)
		_, err = peers[i].Write([]byte(fmt.Sprintf("pass%d", i)))
		require.NoError(t, err)
	}
	buf := make([]byte, 1500)
	type result struct {
		n    int
		from netip.AddrPort
		err  error
	}
	res := make(chan result, 1)
	go func() {
		n, from, err := raw.ReadFromAddrPort(buf)
		res <- result{n, from, err}
	}()
	var r result
	select {
	case r = <-res:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("no datagram while one reader is blocked: the sockets are not read in parallel")
	}
	require.NoError(t, r.err)
	n, from := r.n, r.from
	first := string(buf[:n])
	require.True(t, strings.HasPrefix(first, "pass"), first)
	close(release)

	got := map[string]netip.AddrPort{first: from}
	for len(got) < len(peers) {
		n, from, err := raw.ReadFromAddrPort(buf)
		require.NoError(t, err)
		got[string(buf[:n])] = from
	}
	for i, p := range peers {
		require.Equal(t, p.LocalAddr().(*net.UDPAddr).AddrPort(), got[fmt.Sprintf("pass%d", i)], "pass%d", i)
	}
	mu.Lock()
	require.Len(t, taken, len(peers), "the hook saw every take")
	mu.Unlock()

	// Replies leave from the shared port.
	_, err = raw.WriteToAddrPort([]byte("reply"), peers[0].LocalAddr().(*net.UDPAddr).AddrPort())
	require.NoError(t, err)
	require.NoError(t, peers[0].SetReadDeadline(time.Now().Add(5*time.Second)))
	n, src, err := peers[0].ReadFromUDPAddrPort(buf)
	require.NoError(t, err)
	require.Equal(t, "reply", string(buf[:n]))
	require.Equal(t, uint16(port), src.Port())

	// Close ends a blocked read and the readers.
	done := make(chan error, 1)
	go func() {
		_, _, err := raw.ReadFromAddrPort(buf)
		done <- err
	}()
	require.NoError(t, raw.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("read not ended by Close")
	}
	_, _, err = raw.ReadFromAddrPort(buf)
	require.ErrorIs(t, err, net.ErrClosed)
}

// TestRawSocketGroupOfOne: one socket is a plain RawUDP, read directly.
func TestRawSocketGroupOfOne(t *testing.T) {
	conns, err := listenGroup(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, 1, 0)
	require.NoError(t, err)
	raw, err := NewRawUDPGroup(conns)
	require.NoError(t, err)
	defer raw.Close()
	require.Nil(t, raw.group)
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(-time.Second)))
	_, _, err = raw.ReadFromAddrPort(make([]byte, 10))
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout())
}
