package bridge

import (
	"reflect"
	"sync/atomic"
	"unsafe"

	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// Unknown SSRCs. A PeerConnection accepts the SRTP streams of SSRCs
// nobody opened (its undeclared media processor); with pion's ORTC API
// nobody does, and the session's read loop blocks on the first such packet
// — e.g. a late packet of a layer whose receiver was stopped — which would
// stall the whole association. So each association drains them: it starts
// the SRTP sessions right after DTLS connects and closes every stream it is
// offered. pion keeps the sessions unexported; they are read by reflection,
// as sfu/fastpath.go reads the DTLS connection. If a pion upgrade renames
// them, drainUnknownSSRCs reports false and the association keeps every
// sender and receiver until it ends instead (no stream is ever stopped).

var atomicValueType = reflect.TypeOf((*atomic.Value)(nil)).Elem()

// srtpSessions returns the SRTP and SRTCP sessions of a started transport.
func srtpSessions(t *webrtc.DTLSTransport) (*srtp.SessionSRTP, *srtp.SessionSRTCP) {
	v := reflect.ValueOf(t).Elem()
	load := func(name string) any {
		f := v.FieldByName(name)
		if !f.IsValid() || f.Type() != atomicValueType {
			return nil
		}
		return (*atomic.Value)(unsafe.Pointer(f.UnsafeAddr())).Load()
	}
	rtpS, _ := load("srtpSession").(*srtp.SessionSRTP)
	rtcpS, _ := load("srtcpSession").(*srtp.SessionSRTCP)
	return rtpS, rtcpS
}

// drainUnknownSSRCs starts the SRTP sessions and the goroutines that
// close unknown streams; it reports whether it could.
func (a *association) drainUnknownSSRCs() bool {
	// Any RTCP write makes pion start SRTP; an empty receiver report names
	// no SSRC, so the peer opens no stream for it.
	_, _ = a.dtls.WriteRTCP([]rtcp.Packet{&rtcp.ReceiverReport{}})
	rtpS, rtcpS := srtpSessions(a.dtls)
	if rtpS == nil || rtcpS == nil {
		return false
	}
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		for {
			s, _, err := rtpS.AcceptStream()
			if err != nil {
				return
			}
			_ = s.Close()
		}
	}()
	go func() {
		defer a.wg.Done()
		for {
			s, _, err := rtcpS.AcceptStream()
			if err != nil {
				return
			}
			_ = s.Close()
		}
	}()
	return true
}
