package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gxfs-conf/gxconf/internal/logbuf"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// relayedVideo sets up one relayed video layer from a to b outside any
// SFU track (as BenchmarkRelayPath does) and returns its sink and b's
// association once b receives its SSRC.
func relayedVideo(t testing.TB, a, b *node, room string) (*outTrack, *association) {
	t.Helper()
	aa := a.br.assocFor(t, room, b.id)
	ba := b.br.assocFor(t, room, a.id)
	const sid = "TR_VCsec"
	info := &livekit.ParticipantInfo{Sid: "PA_sec", Identity: "sec", State: livekit.ParticipantInfo_ACTIVE, Version: 1,
		Tracks: []*livekit.TrackInfo{{Sid: sid, Type: livekit.TrackType_VIDEO, Width: 1280, Height: 720}}}
	ot := &outTrack{a: aa, sid: sid, kind: webrtc.RTPCodecTypeVideo, mime: webrtc.MimeTypeVP8}
	aa.post(func() {
		aa.send(&message{Type: msgParticipant, info: info, Codecs: []trackCodec{{SID: sid, MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}}})
		aa.out[sid] = ot
		aa.newSender(ot, 2)
	})
	require.Eventually(t, func() bool { return ot.senders[2].Load() != nil }, 10*time.Second, 5*time.Millisecond)
	return ot, ba
}

// encrypt makes an authentic SRTP packet of a's for ssrc (advancing a's
// context, as a send would).
func encrypt(t testing.TB, a *association, ssrc uint32, seq uint16) []byte {
	t.Helper()
	h := rtp.Header{Version: 2, PayloadType: 96, SSRC: ssrc, SequenceNumber: seq, Timestamp: 9}
	plain, err := (&rtp.Packet{Header: h, Payload: []byte{0x10, 0x01, 1, 2, 3}}).Marshal()
	require.NoError(t, err)
	c := a.crypto.Load()
	require.NotNil(t, c)
	c.mu.Lock()
	defer c.mu.Unlock()
	enc, err := c.local.EncryptRTP(nil, plain, nil)
	require.NoError(t, err)
	return enc
}

// fromAssoc sends pkt on a's socket to its peer, as a's media does.
func fromAssoc(t testing.TB, a *association, pkt []byte) {
	t.Helper()
	require.NoError(t, a.sock.send(pkt, *a.dst.Load()))
}

// TestRelayMediaSecurity: on the relay socket, media from an address that
// is not an association's selected pair is dropped whatever it looks like;
// a replayed SRTP packet is dropped; an authentic packet of an SSRC nobody
// announced is dropped and the streams that were announced go on (pion's
// ORTC SRTP session stalled its read loop on such a packet); forged SRTP
// fails authentication; and neither node logs handshake secrets.
func TestRelayMediaSecurity(t *testing.T) {
	verifyNoLeaks(t)
	var logs logbuf.Buffer
	capture := func(n *node) { n.br.log = zerolog.New(&logs).Level(zerolog.TraceLevel) }
	a, b := startNodeFull(t, "node-a", nil, capture), startNodeFull(t, "node-b", nil, capture)
	link(t, "sec", a, b)
	ot, ba := relayedVideo(t, a, b, "sec")
	aa := a.br.assocFor(t, "sec", b.id)
	ssrc := ot.senders[2].Load().ssrc
	recv := func() uint64 { return ba.stats.recvPk[2].Load() }
	drops := func(reason string) uint64 { return b.br.Dropped()[reason] }

	// One authentic packet crosses.
	pkt := encrypt(t, aa, ssrc, 100)
	fromAssoc(t, aa, bytes.Clone(pkt))
	require.Eventually(t, func() bool { return recv() == 1 }, 5*time.Second, 5*time.Millisecond)

	// The same packet again: a replay.
	auth0 := drops("auth")
	fromAssoc(t, aa, bytes.Clone(pkt))
	require.Eventually(t, func() bool { return drops("auth") == auth0+1 }, 5*time.Second, 5*time.Millisecond)

	// The same packet, and a plain RTP packet, from another address.
	// b's socket is where a's association ends: the address a dials.
	to := netip.MustParseAddrPort(b.br.Addr())
	stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer stranger.Close()
	addr0 := drops("address")
	plain, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SSRC: ssrc, SequenceNumber: 101}, Payload: []byte{1}}).Marshal()
	require.NoError(t, err)
	for _, p := range [][]byte{encrypt(t, aa, ssrc, 102), plain} {
		_, err = stranger.WriteToUDPAddrPort(p, to)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return drops("address") == addr0+2 }, 5*time.Second, 5*time.Millisecond)

	// Forged: an authentic packet with one payload bit flipped.
	forged := encrypt(t, aa, ssrc, 103)
	forged[len(forged)-20] ^= 1
	auth0 = drops("auth")
	fromAssoc(t, aa, forged)
	require.Eventually(t, func() bool { return drops("auth") == auth0+1 }, 5*time.Second, 5*time.Millisecond)

	// An authentic packet of an unknown SSRC, then the known stream goes on.
	ssrc0 := drops("ssrc")
	fromAssoc(t, aa, encrypt(t, aa, ssrc+1, 1))
	require.Eventually(t, func() bool { return drops("ssrc") == ssrc0+1 }, 5*time.Second, 5*time.Millisecond)
	before := recv()
	for seq := uint16(104); seq < 110; seq++ {
		fromAssoc(t, aa, encrypt(t, aa, ssrc, seq))
	}
	require.Eventually(t, func() bool { return recv() == before+6 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, addr0+2, drops("address"), "nothing else came from a stranger")

	// A PLI from a stranger does not reach the origin.
	plis := aa.stats.plisIn.Load()
	pli, err := rtcp.Marshal([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
	require.NoError(t, err)
	_, err = stranger.WriteToUDPAddrPort(pli, to)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return drops("address") == addr0+3 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, plis, aa.stats.plisIn.Load())

	random, _, _, ok := aa.keys.ServerHello()
	if !ok {
		random, _, _, ok = ba.keys.ServerHello()
	}
	require.True(t, ok, "one side is the DTLS server")
	out := logs.String()
	require.NotEmpty(t, out)
	for _, secret := range []string{"CLIENT_RANDOM", hex.EncodeToString(random), base64.StdEncoding.EncodeToString(random)} {
		require.NotContains(t, out, secret)
	}
}

// FuzzRelayReceive feeds datagrams to a relay socket's demux as from an
// association's selected pair: no panic, and exactly the RTP/RTCP range
// (RFC 7983) is kept from pion. Seeds include authentic SRTP and SRTCP of
// the association's keys, so mutations reach the dispatch.
func FuzzRelayReceive(f *testing.F) {
	var drops dropCounters
	sock, err := newRelaySocket(net.IPv4(127, 0, 0, 1), 0, 0, &drops)
	require.NoError(f, err)
	f.Cleanup(sock.close)
	keys := sfu.SRTPKeys{Profile: srtp.ProtectionProfileAeadAes128Gcm,
		LocalKey: bytes.Repeat([]byte{1}, 16), LocalSalt: bytes.Repeat([]byte{2}, 12),
		RemoteKey: bytes.Repeat([]byte{3}, 16), RemoteSalt: bytes.Repeat([]byte{4}, 12)}
	c, err := newRelayCrypto(keys)
	require.NoError(f, err)
	a := &association{sock: sock, done: make(chan struct{})}
	a.crypto.Store(c)
	ot := &outTrack{a: a, kind: webrtc.RTPCodecTypeVideo}
	a.bySSRC = map[uint32]*relaySender{5678: {ot: ot, layer: 1, ssrc: 5678, pt: 96}}
	a.receivers = []*recvStream{{sid: "TR_x", layer: 2, video: true, ssrc: 1234}}
	a.publishSenders()
	a.publishStreams()
	from := netip.MustParseAddrPort("127.0.0.1:40000")
	sock.route(a, from)

	// The peer's context: our remote keys are its local ones.
	peer, err := srtp.CreateContext(keys.RemoteKey, keys.RemoteSalt, keys.Profile)
	require.NoError(f, err)
	for seq := uint16(1); seq < 4; seq++ {
		h := rtp.Header{Version: 2, PayloadType: 96, SSRC: 1234, SequenceNumber: seq * 5}
		if seq == 2 {
			require.NoError(f, h.SetExtension(1, []byte{byte(seq)}))
		}
		plain, err := (&rtp.Packet{Header: h, Payload: []byte{0x10, 1, 2}}).Marshal()
		require.NoError(f, err)
		enc, err := peer.EncryptRTP(nil, plain, nil)
		require.NoError(f, err)
		f.Add(enc)
	}
	for _, p := range []rtcp.Packet{
		&rtcp.PictureLossIndication{MediaSSRC: 5678},
		&rtcp.FullIntraRequest{FIR: []rtcp.FIREntry{{SSRC: 5678}}},
		&rtcp.TransportLayerNack{MediaSSRC: 5678, Nacks: []rtcp.NackPair{{PacketID: 7, LostPackets: 3}}},
	} {
		plain, err := rtcp.Marshal([]rtcp.Packet{p})
		require.NoError(f, err)
		enc, err := peer.EncryptRTCP(nil, plain, nil)
		require.NoError(f, err)
		f.Add(enc)
	}
	f.Add([]byte{0x80})
	f.Add([]byte{0x80, 0xc8, 0, 1})
	f.Add([]byte{0x16, 0xfe, 0xfd, 0, 0}) // DTLS
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		kept := sock.demux(bytes.Clone(pkt), from)
		require.Equal(t, len(pkt) > 0 && pkt[0] >= 128 && pkt[0] <= 191, kept)
	})
}

// TestSendRTPWire: what a sender puts on the wire decrypts, with the
// peer's keys, to the packet pion would have marshalled from the same
// header and payload (header extensions), never with padding: a
// retransmission of the same sequence number must encrypt the same
// plaintext.
func TestSendRTPWire(t *testing.T) {
	var drops dropCounters
	sock, err := newRelaySocket(net.IPv4(127, 0, 0, 1), 0, 0, &drops)
	require.NoError(t, err)
	defer sock.close()
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer rx.Close()
	keys := sfu.SRTPKeys{Profile: srtp.ProtectionProfileAeadAes128Gcm,
		LocalKey: bytes.Repeat([]byte{1}, 16), LocalSalt: bytes.Repeat([]byte{2}, 12),
		RemoteKey: bytes.Repeat([]byte{3}, 16), RemoteSalt: bytes.Repeat([]byte{4}, 12)}
	c, err := newRelayCrypto(keys)
	require.NoError(t, err)
	a := &association{sock: sock, done: make(chan struct{})}
	a.crypto.Store(c)
	dst := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	a.dst.Store(&dst)
	peer, err := srtp.CreateContext(keys.LocalKey, keys.LocalSalt, keys.Profile)
	require.NoError(t, err)

	var plain, out [1500 + srtpOverhead]byte
	buf := make([]byte, 2000)
	for i, tc := range []struct {
		ext bool
		pad byte
	}{{false, 0}, {true, 0}, {false, 4}, {true, 1}} {
		h := rtp.Header{Version: 2, PayloadType: 96, SSRC: 42, SequenceNumber: uint16(i), Timestamp: 3000}
		if tc.ext {
			require.NoError(t, h.SetExtension(3, []byte{1, 2, 3}))
		}
		payload := []byte{0x10, 0x01, byte(i), 9, 9}
		want, err := (&rtp.Packet{Header: h, Payload: payload}).Marshal()
		require.NoError(t, err)
		hc := h
		hc.Padding, hc.PaddingSize = tc.pad > 0, tc.pad
		require.NoError(t, a.sendRTP(&hc, payload, plain[:1500], out[:]))
		require.NoError(t, rx.SetReadDeadline(time.Now().Add(5*time.Second)))
		n, _, err := rx.ReadFromUDPAddrPort(buf)
		require.NoError(t, err)
		got, err := peer.DecryptRTP(nil, buf[:n], nil)
		require.NoError(t, err)
		require.Equal(t, want, got, "case %d", i)
	}
	h := rtp.Header{Version: 2, SSRC: 42}
	require.ErrorIs(t, a.sendRTP(&h, make([]byte, 1500), plain[:1500], out[:]), errTooLarge)
}
