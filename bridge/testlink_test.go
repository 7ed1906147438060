package bridge

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDelayConnKeepsOrder: datagrams arrive after the delay, in the order
// they were sent.
func TestDelayConnKeepsOrder(t *testing.T) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer rx.Close()
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer sock.Close()
	tx := newDelayConn(sock, 30*time.Millisecond)
	start := time.Now()
	for i := range 100 {
		_, err := tx.WriteTo([]byte{byte(i)}, rx.LocalAddr())
		require.NoError(t, err)
	}
	buf := make([]byte, 16)
	require.NoError(t, rx.SetReadDeadline(time.Now().Add(5*time.Second)))
	for i := range 100 {
		k, _, err := rx.ReadFrom(buf)
		require.NoError(t, err)
		require.Equal(t, []byte{byte(i)}, buf[:k])
		if i == 0 {
			require.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond)
		}
	}
	require.NoError(t, tx.Close())
	_, err = tx.WriteTo([]byte{1}, rx.LocalAddr())
	require.ErrorIs(t, err, net.ErrClosed)
}
