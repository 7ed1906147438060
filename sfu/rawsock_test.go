package sfu

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/ipv4"
)

// rawWriter is a sendmmsg writer on c for tests and benchmarks.
func rawWriter(tb testing.TB, c *net.UDPConn) *mmsgWriter {
	tb.Helper()
	s, err := NewRawUDP(c)
	require.NoError(tb, err)
	return newMmsgWriter(s)
}

func listenRaw(t *testing.T, network string, ip net.IP) (*RawUDP, *net.UDPConn) {
	t.Helper()
	c, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	s, err := NewRawUDP(c)
	require.NoError(t, err)
	return s, c
}

// rawWithPeer is a RawUDP on IPv4 loopback and a peer socket to send to it.
func rawWithPeer(t *testing.T) (*RawUDP, *net.UDPConn, *net.UDPConn) {
	t.Helper()
	s, c := listenRaw(t, "udp4", net.IPv4(127, 0, 0, 1))
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = peer.Close() })
	return s, c, peer
}

// readForPion reads s as pion's UDP mux does and passes on what the read
// hook leaves; the channel closes when a read fails (the socket closed).
func readForPion(s *RawUDP) <-chan string {
	got := make(chan string, 4)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := s.ReadFromAddrPort(buf)
			if err != nil {
				close(got)
				return
			}
			got <- string(buf[:n])
		}
	}()
	return got
}

// TestRawSocketIdleHook: the idle hook runs once the reader has consumed
// everything queued — after the datagrams that arrived together, before it
// waits — and not for datagrams the read hook left to pion; a datagram that
// arrives while the idle hook runs (after the read that found the socket
// empty) still wakes the reader.
func TestRawSocketIdleHook(t *testing.T) {
	s, c, peer := rawWithPeer(t)
	self := c.LocalAddr().(*net.UDPAddr).AddrPort()
	var err error
	var taken int
	var inject atomic.Bool
	idles := make(chan int, 8)
	s.SetReadHooks(func() (func([]byte, netip.AddrPort) bool, func()) {
		return func(p []byte, _ netip.AddrPort) bool {
				if string(p) != "take" {
					return false
				}
				taken++
				return true
			}, func() {
				if inject.CompareAndSwap(true, false) {
					_, err := peer.WriteToUDPAddrPort([]byte("take"), self)
					require.NoError(t, err)
				}
				idles <- taken
			}
	})
	for range 3 {
		_, err = peer.WriteToUDPAddrPort([]byte("take"), self)
		require.NoError(t, err)
	}
	got := readForPion(s)
	require.Equal(t, 3, <-idles, "one idle call after the three queued datagrams")
	_, err = peer.WriteToUDPAddrPort([]byte("take"), self)
	require.NoError(t, err)
	require.Equal(t, 4, <-idles)
	inject.Store(true)
	_, err = peer.WriteToUDPAddrPort([]byte("take"), self)
	require.NoError(t, err)
	require.Equal(t, 5, <-idles, "the hook sends the sixth datagram")
	require.Equal(t, 6, <-idles, "the datagram sent during the idle hook is read")
	_, err = peer.WriteToUDPAddrPort([]byte("pion"), self)
	require.NoError(t, err)
	require.Equal(t, "pion", <-got)
	require.NoError(t, c.Close())
	for range got {
	}
	require.Empty(t, idles, "no idle call for a datagram left to pion")
}

// TestRawSocketBatchedReads: datagrams read in batches (recvmmsg) reach the
// read hook in the order they arrived, across more batches than one read
// callback consumes; one the hook leaves is returned in its place and the
// rest are still handed to the hook; the idle hook runs once, when all are
// consumed.
func TestRawSocketBatchedReads(t *testing.T) {
	s, c, peer := rawWithPeer(t)
	self := c.LocalAddr().(*net.UDPAddr).AddrPort()
	var err error
	before := readBatch*readBursts + readBatch + 3
	var seen []int
	idles := make(chan []int, 4)
	s.SetReadHooks(func() (func([]byte, netip.AddrPort) bool, func()) {
		return func(p []byte, _ netip.AddrPort) bool {
				i, err := strconv.Atoi(string(p))
				if err != nil {
					return false
				}
				seen = append(seen, i)
				return true
			}, func() {
				idles <- append([]int(nil), seen...)
			}
	})
	for i := range before + 5 {
		if i == before {
			_, err = peer.WriteToUDPAddrPort([]byte("pion"), self)
			require.NoError(t, err)
		}
		_, err = peer.WriteToUDPAddrPort([]byte(strconv.Itoa(i)), self)
		require.NoError(t, err)
	}
	got := readForPion(s)
	require.Equal(t, "pion", <-got)
	all := <-idles
	require.Len(t, all, before+5)
	for i, v := range all {
		require.Equal(t, i, v, "datagrams reach the hook in order")
	}
	require.NoError(t, c.Close())
	for range got {
	}
	require.Empty(t, idles, "one idle call")
}

// TestRawSocket: the media socket read and written with untracked system
// calls behaves as package net's: addresses (an IPv4 peer of a dual-stack
// socket as IPv4-mapped, as net reports it), deadlines, close, errors
// naming the address, and no allocation per packet.
func TestRawSocket(t *testing.T) {
	for _, tc := range []struct {
		name, network string
		ip            net.IP
		inet6         bool
	}{
		{"udp4", "udp4", net.IPv4(127, 0, 0, 1), false},
		{"dual-stack", "udp", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c := listenRaw(t, tc.network, tc.ip)
			require.Equal(t, tc.inet6, s.inet6)
			port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
			self := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)

			peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(t, err)
			defer peer.Close()
			peerAP := peer.LocalAddr().(*net.UDPAddr).AddrPort()

			// peer -> s
			_, err = peer.WriteToUDPAddrPort([]byte("ping"), self)
			require.NoError(t, err)
			buf := make([]byte, 1500)
			require.NoError(t, s.SetReadDeadline(time.Now().Add(5*time.Second)))
			n, from, err := s.ReadFromAddrPort(buf)
			require.NoError(t, err)
			require.Equal(t, "ping", string(buf[:n]))
			require.Equal(t, peerAP.Port(), from.Port())
			require.Equal(t, peerAP.Addr(), from.Addr().Unmap())
			require.Equal(t, tc.inet6, from.Addr().Is4In6(), "address form as package net reports it")

			// s -> peer, by plain and by mapped address, and through WriteTo.
			for _, to := range []netip.AddrPort{peerAP, netip.AddrPortFrom(netip.AddrFrom16(peerAP.Addr().As16()), peerAP.Port())} {
				n, err = s.WriteToAddrPort([]byte("pong"), to)
				require.NoError(t, err)
				require.Equal(t, 4, n)
				require.NoError(t, peer.SetReadDeadline(time.Now().Add(5*time.Second)))
				n, src, err := peer.ReadFromUDPAddrPort(buf)
				require.NoError(t, err)
				require.Equal(t, "pong", string(buf[:n]))
				require.Equal(t, port, src.Port())
			}
			_, err = s.WriteTo([]byte("x"), peer.LocalAddr())
			require.NoError(t, err)
			_, _, err = peer.ReadFromUDP(buf)
			require.NoError(t, err)
			_, err = s.WriteTo([]byte("x"), &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1})
			require.Error(t, err)

			// ReadFrom returns a *net.UDPAddr.
			_, err = peer.WriteToUDPAddrPort([]byte("again"), self)
			require.NoError(t, err)
			n, addr, err := s.ReadFrom(buf)
			require.NoError(t, err)
			require.Equal(t, "again", string(buf[:n]))
			require.Equal(t, int(peerAP.Port()), addr.(*net.UDPAddr).Port)

			// No allocation per packet either way.
			a, b := []byte("a"), []byte("b")
			allocs := testing.AllocsPerRun(100, func() {
				_, _ = s.WriteToAddrPort(a, peerAP)
				_, _, _ = peer.ReadFromUDPAddrPort(buf)
				_, _ = peer.WriteToUDPAddrPort(b, self)
				_, _, _ = s.ReadFromAddrPort(buf)
			})
			require.Zero(t, allocs)

			// A deadline in the past: a timeout, as net reports it.
			require.NoError(t, s.SetReadDeadline(time.Now().Add(-time.Second)))
			_, _, err = s.ReadFromAddrPort(buf)
			require.True(t, os.IsTimeout(err), "%v", err)
			var ne net.Error
			require.True(t, errors.As(err, &ne) && ne.Timeout())
			require.NoError(t, s.SetReadDeadline(time.Time{}))

			// A read waiting for data ends when the socket closes.
			done := make(chan error, 1)
			go func() {
				_, _, err := s.ReadFromAddrPort(make([]byte, 1500))
				done <- err
			}()
			time.Sleep(20 * time.Millisecond) // let the read block; it must return either way
			require.NoError(t, s.Close())
			select {
			case err := <-done:
				require.ErrorIs(t, err, net.ErrClosed)
			case <-time.After(5 * time.Second):
				t.Fatal("a blocked read did not end on close")
			}
			_, err = s.WriteToAddrPort([]byte("late"), peerAP)
			require.ErrorIs(t, err, net.ErrClosed)
		})
	}
}

// TestRawSocketFamilies: an IPv6 destination on an IPv4 socket is refused
// with the address in the error, nothing sent; an IPv6 socket talks to an
// IPv6 peer.
func TestRawSocketFamilies(t *testing.T) {
	s, _ := listenRaw(t, "udp4", net.IPv4(127, 0, 0, 1))
	_, err := s.WriteToAddrPort([]byte("x"), netip.MustParseAddrPort("[::1]:9"))
	require.ErrorContains(t, err, "[::1]:9")
	w := newMmsgWriter(s)
	n, err := w.WriteBatch([]ipv4.Message{{Buffers: [][]byte{[]byte("x")}, Addr: &net.UDPAddr{IP: net.IPv6loopback, Port: 9}}})
	require.Error(t, err)
	require.Zero(t, n)
	_, err = w.WriteBatch([]ipv4.Message{{Buffers: [][]byte{[]byte("x")}, Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}}})
	require.Error(t, err)

	c6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Logf("no IPv6 loopback here (%v): the IPv6 peer case is not run", err)
		return
	}
	defer c6.Close()
	s6, err := NewRawUDP(c6)
	require.NoError(t, err)
	peer, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	require.NoError(t, err)
	defer peer.Close()
	_, err = s6.WriteToAddrPort([]byte("v6"), peer.LocalAddr().(*net.UDPAddr).AddrPort())
	require.NoError(t, err)
	buf := make([]byte, 64)
	require.NoError(t, peer.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, _, err = peer.ReadFromUDP(buf)
	require.NoError(t, err)
	require.Equal(t, "v6", string(buf[:n]))
}

// TestMmsgWriter: one call sends messages to several destinations, a
// message of several buffers as one datagram (without a segmentation
// control message), and reports how many the kernel took.
func TestMmsgWriter(t *testing.T) {
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer src.Close()
	w := rawWriter(t, src)
	sinks := make([]*net.UDPConn, 3)
	for i := range sinks {
		sinks[i], err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		require.NoError(t, err)
		defer sinks[i].Close()
	}
	for round := range 3 { // the writer's arrays are reused and regrown
		var msgs []ipv4.Message
		for i, s := range sinks {
			for k := 0; k <= round+i; k++ {
				msgs = append(msgs, ipv4.Message{Buffers: [][]byte{[]byte{byte(i)}, []byte{byte(k), 0xee}}, Addr: s.LocalAddr()})
			}
		}
		n, err := w.WriteBatch(msgs)
		require.NoError(t, err)
		require.Equal(t, len(msgs), n)
		for i, s := range sinks {
			buf := make([]byte, 64)
			for k := 0; k <= round+i; k++ {
				require.NoError(t, s.SetReadDeadline(time.Now().Add(5*time.Second)))
				n, from, err := s.ReadFromUDP(buf)
				require.NoError(t, err)
				require.Equal(t, []byte{byte(i), byte(k), 0xee}, buf[:n])
				require.Equal(t, src.LocalAddr().(*net.UDPAddr).Port, from.Port)
			}
		}
	}
	n, err := w.WriteBatch(nil)
	require.NoError(t, err)
	require.Zero(t, n)
}
