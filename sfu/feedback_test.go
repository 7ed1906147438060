package sfu

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/stretchr/testify/require"
)

func TestNackLog(t *testing.T) {
	var l nackLog
	add := func(seqs ...uint16) {
		for _, s := range seqs {
			l.add(s)
		}
	}
	missing := func() []uint16 { return l.missingSeqs(nil) }

	add(1, 2, 3)
	require.Empty(t, missing())
	add(6)
	require.Equal(t, []uint16{4, 5}, missing())
	add(4)
	require.Equal(t, []uint16{5}, missing())
	add(5)
	require.Empty(t, missing(), "filled in")
	require.Equal(t, uint16(6), l.lastConsecutive)
	add(6, 6)
	require.Empty(t, missing(), "duplicates")

	l = nackLog{}
	add(65534, 65535, 1)
	require.Equal(t, []uint16{0}, missing(), "across the wrap")

	l = nackLog{}
	add(100, 700)
	m := missing()
	require.Len(t, m, nackLogSize-1, "only the window is asked for")
	require.Equal(t, uint16(700-nackLogSize+1), m[0])
	require.Equal(t, uint16(699), m[len(m)-1])
	add(150) // out of the window: its slot is 662's
	require.Contains(t, missing(), uint16(662))
	add(662)
	require.NotContains(t, missing(), uint16(662))

	l = nackLog{}
	add(10, 12)
	add(30000) // a jump far ahead: the window restarts behind it
	m = missing()
	require.Len(t, m, nackLogSize-1)
	require.Equal(t, uint16(30000-nackLogSize+1), m[0])
}

// A missing packet is asked for on nackMaxTries ticks and then no more;
// one that goes missing later is asked for as often, and a slot reused by
// a newer packet starts its count afresh.
func TestNackLogTries(t *testing.T) {
	var l nackLog
	for _, s := range []uint16{1, 2, 4} {
		l.add(s)
	}
	for i := 0; i < nackMaxTries; i++ {
		require.Equal(t, []uint16{3}, l.nackSeqs(nil), "tick %d", i)
	}
	require.Empty(t, l.nackSeqs(nil), "given up on 3")
	require.Equal(t, []uint16{3}, l.missingSeqs(nil), "still missing")
	l.add(6)
	require.Equal(t, []uint16{5}, l.nackSeqs(nil), "a new gap is asked for")
	for i := 1; i < nackMaxTries; i++ {
		require.Equal(t, []uint16{5}, l.nackSeqs(nil))
	}
	require.Empty(t, l.nackSeqs(nil))
	// 3 + 512 takes 3's slot: when it goes missing, it is asked for anew.
	for s := uint16(7); s != 3+nackLogSize; s++ {
		l.add(s)
	}
	l.add(3 + nackLogSize + 1)
	require.Equal(t, []uint16{3 + nackLogSize}, l.nackSeqs(nil))
	// A jump past the window forgets every count.
	l.add(3 + 3*nackLogSize)
	m := l.nackSeqs(nil)
	require.Len(t, m, nackLogSize-1)
	for i := 1; i < nackMaxTries; i++ {
		require.Len(t, l.nackSeqs(nil), nackLogSize-1)
	}
	require.Empty(t, l.nackSeqs(nil))
}

// FuzzNackLog: whatever order sequence numbers arrive in, no received
// packet of the window is asked for, nor anything outside the window, and
// a tick asks for no more than is missing, each at most nackMaxTries times.
func FuzzNackLog(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 0, 5, 0, 3})
	f.Add([]byte{0xff, 0xfe, 0, 1, 0x02, 0x00, 0x80, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		var l nackLog
		recv := map[uint16]bool{}
		var newest uint16
		started := false
		for i := 0; i+1 < len(data); i += 2 {
			seq := binary.BigEndian.Uint16(data[i:])
			if data[i]&0x40 != 0 && started {
				seq = newest + uint16(data[i+1]%8) // mostly near the newest
			}
			l.add(seq)
			switch d := seq - newest; {
			case !started:
				started, newest = true, seq
				recv[seq] = true
			case d == 0:
			case d < 0x8000:
				newest = seq
				for s := range recv {
					if newest-s >= nackLogSize {
						delete(recv, s)
					}
				}
				recv[seq] = true
			case newest-seq < nackLogSize:
				recv[seq] = true
			}
			m := l.missingSeqs(nil)
			require.LessOrEqual(t, len(m), nackLogSize-1)
			for _, s := range m {
				require.False(t, recv[s], "received %d asked for", s)
				require.Less(t, newest-s, uint16(nackLogSize), "%d outside the window of %d", s, newest)
				require.NotEqual(t, newest, s)
			}
			if data[i+1]&1 != 0 { // a tick: asks for some of what is missing
				require.Subset(t, m, l.nackSeqs(nil))
			}
		}
		// Without new packets, every missing packet is given up on.
		for i := 0; i < nackMaxTries; i++ {
			l.nackSeqs(nil)
		}
		require.Empty(t, l.nackSeqs(nil))
	})
}

type rtcpCapture chan []rtcp.Packet

func (c rtcpCapture) Write(pkts []rtcp.Packet, _ interceptor.Attributes) (int, error) {
	c <- pkts
	return 0, nil
}

func tccPacket(t *testing.T, seq, tseq uint16, extID uint8) []byte {
	t.Helper()
	h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, SSRC: 1234}
	if extID != 0 {
		ext, err := (&rtp.TransportCCExtension{TransportSequence: tseq}).Marshal()
		require.NoError(t, err)
		require.NoError(t, h.SetExtension(extID, ext))
	}
	b, err := (&rtp.Packet{Header: h, Payload: make([]byte, 100)}).Marshal()
	require.NoError(t, err)
	return b
}

// TestFeedbackInterceptor: a connection's gaps are NACKed, its
// transport-wide sequence numbers acknowledged and its streams reported on
// on the shared clock, NACKs and TWCC only for what the stream negotiated;
// the clock runs while connections are registered.
func TestFeedbackInterceptor(t *testing.T) {
	clock := newFeedbackClock(5 * time.Millisecond)
	ff := feedbackFactory{clock: clock}
	i, err := ff.NewInterceptor("")
	require.NoError(t, err)
	out := make(rtcpCapture, 64)
	i.BindRTCPWriter(out)
	require.True(t, clock.running())

	pass := interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		return len(b), a, nil
	})
	info := &interceptor.StreamInfo{
		SSRC:                1234,
		RTCPFeedback:        []interceptor.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}},
		RTPHeaderExtensions: []interceptor.RTPHeaderExtension{{URI: sdp.TransportCCURI, ID: 5}},
	}
	r := i.BindRemoteStream(info, pass)
	for k, seq := range []uint16{10, 11, 13, 16} {
		_, _, err := r.Read(tccPacket(t, seq, 100+uint16(k), 5), nil)
		require.NoError(t, err)
	}
	// A TWCC element too short to hold a sequence number is ignored.
	bad := tccPacket(t, 17, 0, 0)
	h := rtp.Header{}
	_, err = h.Unmarshal(bad)
	require.NoError(t, err)
	require.NoError(t, h.SetExtension(5, []byte{1}))
	bad, err = (&rtp.Packet{Header: h, Payload: make([]byte, 10)}).Marshal()
	require.NoError(t, err)
	_, _, err = r.Read(bad, nil)
	require.NoError(t, err)
	_, _, err = r.Read([]byte{1, 2, 3}, nil)
	require.Error(t, err, "not RTP")

	var nacked []uint16
	var acked uint16
	var report *rtcp.ReceptionReport
	deadline := time.After(10 * time.Second)
	for nacked == nil || acked == 0 || report == nil {
		select {
		case pkts := <-out:
			for _, p := range pkts {
				switch p := p.(type) {
				case *rtcp.TransportLayerNack:
					require.Equal(t, uint32(1234), p.MediaSSRC)
					nacked = nil
					for _, pair := range p.Nacks {
						nacked = append(nacked, pair.PacketList()...)
					}
				case *rtcp.TransportLayerCC:
					require.Equal(t, uint16(100), p.BaseSequenceNumber)
					acked = p.PacketStatusCount
				case *rtcp.ReceiverReport:
					require.Len(t, p.Reports, 1)
					report = &p.Reports[0]
				}
			}
		case <-deadline:
			t.Fatal("no feedback")
		}
	}
	require.Equal(t, []uint16{12, 14, 15}, nacked)
	require.Equal(t, uint16(4), acked)
	// The receiver report: 10 … 17 with 12, 14 and 15 missing.
	require.EqualValues(t, 1234, report.SSRC)
	require.EqualValues(t, 17, report.LastSequenceNumber)
	require.EqualValues(t, 3, report.TotalLost)

	// A stream without NACK feedback is not NACKed, whatever its gaps.
	i2, err := ff.NewInterceptor("")
	require.NoError(t, err)
	out2 := make(rtcpCapture, 64)
	i2.BindRTCPWriter(out2)
	r2 := i2.BindRemoteStream(&interceptor.StreamInfo{SSRC: 1234, RTPHeaderExtensions: info.RTPHeaderExtensions}, pass)
	for k, seq := range []uint16{1, 5, 9} {
		_, _, err := r2.Read(tccPacket(t, seq, uint16(k), 5), nil)
		require.NoError(t, err)
	}
	var got []rtcp.Packet
	for len(got) == 0 {
		select {
		case pkts := <-out2:
			got = pkts
		case <-deadline:
			t.Fatal("no feedback on the second connection")
		}
	}
	require.True(t, slices.ContainsFunc(got, func(p rtcp.Packet) bool { _, ok := p.(*rtcp.TransportLayerCC); return ok }))
	require.False(t, slices.ContainsFunc(got, func(p rtcp.Packet) bool { _, ok := p.(*rtcp.TransportLayerNack); return ok }))

	require.NoError(t, i.Close())
	require.True(t, clock.running(), "the second connection is still registered")
	require.NoError(t, i2.Close())
	require.NoError(t, i2.Close())
	require.False(t, clock.running())
	i2.BindRTCPWriter(out2)
	require.False(t, clock.running(), "a closed connection does not register again")
}
