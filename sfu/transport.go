package sfu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/sdp/v3"
	"github.com/pion/stun/v4"
	"github.com/pion/webrtc/v4"
)

// Header extension URIs the SFU negotiates.
const (
	uriAudioLevel = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
)

// codecs offered/accepted on both peer connections. RTX is left out on
// purpose: retransmissions travel on the media SSRC, so a NACK is answered
// by replaying the cached packet with the subscriber's sequence number.
func registerCodecs(m *webrtc.MediaEngine, videoFB []webrtc.RTCPFeedback, audioFB []webrtc.RTCPFeedback) error {
	audio, video := codecList(videoFB, audioFB)
	for _, c := range audio {
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeAudio); err != nil {
			return err
		}
	}
	for _, c := range video {
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return err
		}
	}
	return nil
}

var subscriberVideoFB = []webrtc.RTCPFeedback{{Type: "goog-remb"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}

// subscriberCodecs returns the codecs registered for subscriber
// connections of a kind (for codec preferences).
func subscriberCodecs(kind webrtc.RTPCodecType) []webrtc.RTPCodecParameters {
	audio, video := codecList(subscriberVideoFB, nil)
	if kind == webrtc.RTPCodecTypeAudio {
		return audio
	}
	return video
}

func codecList(videoFB, audioFB []webrtc.RTCPFeedback) (audio, video []webrtc.RTPCodecParameters) {
	audio = []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1", RTCPFeedback: audioFB}, PayloadType: 111},
	}
	h264 := func(fmtp string, pt webrtc.PayloadType) webrtc.RTPCodecParameters {
		return webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: fmtp, RTCPFeedback: videoFB}, PayloadType: pt}
	}
	video = []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: videoFB}, PayloadType: 96},
		h264("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f", 102),
		h264("level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f", 127),
		h264("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", 125),
		h264("level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f", 108),
		h264("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f", 123),
		h264("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f", 112),
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, SDPFmtpLine: "profile-id=0", RTCPFeedback: videoFB}, PayloadType: 98},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, SDPFmtpLine: "profile-id=2", RTCPFeedback: videoFB}, PayloadType: 100},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeAV1, ClockRate: 90000, RTCPFeedback: videoFB}, PayloadType: 45},
	}
	return audio, video
}

// newPublisherAPI builds the recipe for publisher peer connections: the
// SFU receives here, so the interceptor that acts on incoming streams is
// registered: NACK generation, TWCC feedback (so the publisher's bandwidth
// estimate ramps up to its top simulcast layer) and receiver reports, on
// the server's feedback clock fb (feedback.go, rr.go). Its cost is per
// received packet, which is 1/N of the sent ones. The SFU answers as the
// DTLS server, which the direct receive path needs (fastrecv.go).
func newPublisherAPI(se webrtc.SettingEngine, fb *feedbackClock) (*apiRecipe, error) {
	m, recv, err := receivingOptions(fb, []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}})
	if err != nil {
		return nil, err
	}
	if err := se.SetAnsweringDTLSRole(webrtc.DTLSRoleServer); err != nil {
		return nil, err
	}
	return newRecipe(se, m, recv), nil
}

// newSinglePCAPI builds the recipe for single peer connections (/rtc/v1),
// which receive and send: the publisher API's interceptors act on the
// incoming streams only (none binds local streams, so forwarding pays
// nothing for them), and goog-remb is offered as on subscriber connections
// so the client's receive estimate caps the forwarded layers. The SFU
// answers as the DTLS server, which the direct paths need.
func newSinglePCAPI(se webrtc.SettingEngine, fb *feedbackClock) (*apiRecipe, error) {
	m, recv, err := receivingOptions(fb, subscriberVideoFB)
	if err != nil {
		return nil, err
	}
	if err := se.SetAnsweringDTLSRole(webrtc.DTLSRoleServer); err != nil {
		return nil, err
	}
	return newRecipe(se, m, recv), nil
}

// receivingOptions are the media engine and interceptors of connections
// that receive media.
func receivingOptions(fb *feedbackClock, videoFB []webrtc.RTCPFeedback) (*webrtc.MediaEngine, []interceptor.Factory, error) {
	m := &webrtc.MediaEngine{}
	if err := registerCodecs(m, videoFB, nil); err != nil {
		return nil, nil, err
	}
	for _, e := range []struct {
		uri  string
		kind webrtc.RTPCodecType
	}{
		{sdp.SDESMidURI, webrtc.RTPCodecTypeVideo},
		{sdp.SDESMidURI, webrtc.RTPCodecTypeAudio},
		{sdp.SDESRTPStreamIDURI, webrtc.RTPCodecTypeVideo},
		{sdp.SDESRepairRTPStreamIDURI, webrtc.RTPCodecTypeVideo},
		{uriAudioLevel, webrtc.RTPCodecTypeAudio},
		// TWCC feedback, as webrtc.ConfigureTWCCSender registers it.
		{sdp.TransportCCURI, webrtc.RTPCodecTypeVideo},
		{sdp.TransportCCURI, webrtc.RTPCodecTypeAudio},
	} {
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: e.uri}, e.kind); err != nil {
			return nil, nil, err
		}
	}
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBTransportCC}, webrtc.RTPCodecTypeVideo)
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBTransportCC}, webrtc.RTPCodecTypeAudio)
	return m, []interceptor.Factory{feedbackFactory{clock: fb}}, nil
}

// newSubscriberAPI builds the recipe for subscriber peer connections with
// no interceptors at all: pion's sender-side interceptors cost a lock and
// a copy per packet per subscriber. Sender reports, NACK replies and REMB
// handling are done by the downtracks themselves.
func newSubscriberAPI(se webrtc.SettingEngine) (*apiRecipe, error) {
	m := &webrtc.MediaEngine{}
	if err := registerCodecs(m, subscriberVideoFB, nil); err != nil {
		return nil, err
	}
	for _, e := range []struct {
		uri  string
		kind webrtc.RTPCodecType
	}{
		{sdp.SDESMidURI, webrtc.RTPCodecTypeVideo},
		{sdp.SDESMidURI, webrtc.RTPCodecTypeAudio},
		{uriAudioLevel, webrtc.RTPCodecTypeAudio},
	} {
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: e.uri}, e.kind); err != nil {
			return nil, err
		}
	}
	return newRecipe(se, m, nil), nil
}

// apiRecipe makes peer connections of one kind: through one shared API,
// or, for the direct paths, each through its own API whose DTLS hooks
// report to that connection's keyCapture (pion's hooks are per API) and
// whose receive interceptors sit between the direct receive path's taps.
// The media engine and interceptor factories are shared; pion copies the
// one and builds the other's interceptors per connection anyway.
type apiRecipe struct {
	se    webrtc.SettingEngine
	media *webrtc.MediaEngine
	recv  []interceptor.Factory // receive interceptors, innermost first
	api   *webrtc.API
}

func newRecipe(se webrtc.SettingEngine, m *webrtc.MediaEngine, recv []interceptor.Factory) *apiRecipe {
	r := &apiRecipe{se: se, media: m, recv: recv}
	reg := &interceptor.Registry{}
	for _, f := range recv {
		reg.Add(f)
	}
	r.api = webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	return r
}

// newPeerConnection returns a new connection and, with capture, the
// keyCapture its DTLS handshake reports to; with pr as well, its receive
// interceptors are wrapped by pr's taps.
func (r *apiRecipe) newPeerConnection(capture bool, pr *pubRecv) (*webrtc.PeerConnection, *keyCapture, error) {
	if !capture {
		pc, err := r.api.NewPeerConnection(webrtc.Configuration{})
		return pc, nil, err
	}
	k := &keyCapture{}
	se := r.se
	se.SetDTLSServerHelloMessageHook(k.serverHello)
	se.SetDTLSKeyLogWriter(k)
	reg := &interceptor.Registry{}
	var outer interceptor.Factory
	if pr != nil && len(r.recv) > 0 {
		var inner interceptor.Factory
		inner, outer = pr.interceptors()
		reg.Add(inner)
	}
	for _, f := range r.recv {
		if ff, ok := f.(feedbackFactory); ok && pr != nil {
			ff.onNew = pr.fb.Store
			f = ff
		}
		reg.Add(f)
	}
	if outer != nil {
		reg.Add(outer)
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(r.media), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	return pc, k, err
}

// mediaSockets holds the sockets shared by all peer connections.
type mediaSockets struct {
	udp    *net.UDPConn
	raw    *RawUDP // udp, read and written by pion and the direct path (rawsock.go)
	udpMux ice.UDPMux
	tcp    net.Listener
	tcpMux ice.TCPMux
	// ports are the UDP ports peer connections hold in rtc.port_range
	// mode (nil with rtc.udp_port).
	ports *boundPorts
}

func (m *mediaSockets) close() error {
	var errs []error
	if m.udpMux != nil {
		errs = append(errs, m.udpMux.Close())
	}
	if m.raw != nil {
		if err := m.raw.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	} else if m.udp != nil {
		if err := m.udp.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if m.tcpMux != nil {
		errs = append(errs, m.tcpMux.Close())
	}
	if m.tcp != nil {
		if err := m.tcp.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// newSettingEngine opens the media sockets and returns the setting engine
// shared by publisher and subscriber peer connections.
func newSettingEngine(cfg *Config, lf pionLoggerFactory) (webrtc.SettingEngine, *mediaSockets, error) {
	se := webrtc.SettingEngine{LoggerFactory: lf}
	socks := &mediaSockets{}
	// GCM first: a quarter of the per-packet cost of AES-CM + HMAC-SHA1.
	se.SetSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80)
	// mDNS would open a multicast socket per peer connection.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(10*time.Second, 20*time.Second, 2*time.Second)
	se.DisableActiveTCP(true)
	// pion's data channel read loop allocates a 64 KiB buffer per channel
	// (four per participant); detached channels are read with a small
	// buffer that grows only for large messages (data.go).
	se.DetachDataChannels()

	networks := []webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6}
	r := cfg.RTC
	loopbackNode := false
	if r.NodeIP != "" {
		if a, err := netip.ParseAddr(r.NodeIP); err == nil && a.IsLoopback() {
			loopbackNode = true
		}
	}
	if loopbackNode {
		se.SetIncludeLoopbackCandidate(true)
		networks = []webrtc.NetworkType{webrtc.NetworkTypeUDP4}
	}

	if r.UDPPort != 0 {
		bind := &net.UDPAddr{Port: r.UDPPort}
		if loopbackNode {
			bind.IP = net.ParseIP(r.NodeIP)
		}
		conns, err := listenGroup(bind, r.receiveSockets(), r.SocketBufferSize)
		if err != nil {
			return se, nil, fmt.Errorf("failed to listen on rtc.udp_port %d: %w", r.UDPPort, err)
		}
		socks.udp = conns[0]
		if socks.raw, err = NewRawUDPGroup(conns); err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return se, nil, fmt.Errorf("rtc.udp_port %d: %w", r.UDPPort, err)
		}
		socks.udpMux = webrtc.NewICEUDPMux(lf.NewLogger("udpmux"), socks.raw)
		se.SetICEUDPMux(socks.udpMux)
	} else {
		if err := se.SetEphemeralUDPPortRange(uint16(r.PortRangeStart), uint16(r.PortRangeEnd)); err != nil {
			return se, nil, fmt.Errorf("failed to set rtc port range: %w", err)
		}
		socks.ports = newBoundPorts()
		n, err := newPortRecordingNet(socks.ports)
		if err != nil {
			return se, nil, fmt.Errorf("rtc port range: %w", err)
		}
		se.SetNet(n)
	}
	if r.TCPPort != 0 {
		host := ""
		if loopbackNode {
			host = r.NodeIP
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(r.TCPPort)))
		if err != nil {
			_ = socks.close()
			return se, nil, fmt.Errorf("failed to listen on rtc.tcp_port %d: %w", r.TCPPort, err)
		}
		socks.tcp = l
		socks.tcpMux = webrtc.NewICETCPMux(lf.NewLogger("tcpmux"), l, 32)
		se.SetICETCPMux(socks.tcpMux)
		networks = append(networks, webrtc.NetworkTypeTCP4)
	}
	se.SetNetworkTypes(networks)

	switch {
	case r.NodeIP != "" && !loopbackNode:
		se.SetNAT1To1IPs([]string{r.NodeIP}, webrtc.ICECandidateTypeHost)
	case len(r.NAT1To1IPs) > 0:
		se.SetNAT1To1IPs(r.NAT1To1IPs, webrtc.ICECandidateTypeHost)
	case r.UseExternalIP:
		ip, err := discoverExternalIP(r.STUNServers)
		if err != nil {
			_ = socks.close()
			return se, nil, fmt.Errorf("failed to discover external ip (rtc.use_external_ip): %w", err)
		}
		se.SetNAT1To1IPs([]string{ip}, webrtc.ICECandidateTypeHost)
	}
	return se, socks, nil
}

// discoverExternalIP asks the STUN servers in turn for this host's mapped address.
func discoverExternalIP(servers []string) (string, error) {
	var errs []error
	for _, s := range servers {
		addr := strings.TrimPrefix(s, "stun:")
		ip, err := stunMappedIP(addr)
		if err == nil {
			return ip, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return "", errors.Join(errs...)
}

func stunMappedIP(addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp4", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := conn.Write(req.Raw); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	res := &stun.Message{Raw: buf[:n]}
	if err := res.Decode(); err != nil {
		return "", err
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(res); err != nil {
		return "", err
	}
	return xor.IP.String(), nil
}
