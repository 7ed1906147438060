package sfu

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are registered on the Registerer given to New, never globally.
// Per-packet counters are accumulated in plain per-stream fields and
// flushed here periodically, so the forwarding path touches no shared
// cache line.
type metrics struct {
	rooms        prometheus.Gauge
	participants prometheus.Gauge
	tracks       prometheus.Gauge
	packetsIn    *prometheus.CounterVec
	bytesIn      prometheus.Counter
	packetsOut   prometheus.Counter
	bytesOut     prometheus.Counter
	packetsLost  prometheus.Counter
	directOut    prometheus.Counter
	directIn     prometheus.Counter
	sendErrors   prometheus.Counter
	sendMsgs     prometheus.Counter
	sendCalls    prometheus.Counter
	nacks        prometheus.Counter
	retransmits  prometheus.Counter
	plis         prometheus.Counter
	joins        *prometheus.CounterVec
	directConns  *prometheus.CounterVec
	recvDrops    prometheus.Counter
	rtcpDrops    *prometheus.CounterVec
	gso          prometheus.Gauge
	unread       prometheus.Counter
	dataDropped  *prometheus.CounterVec
	candIgnored  *prometheus.CounterVec
	sdpRefused   *prometheus.CounterVec
	negThrottles prometheus.Counter
	negThrottled prometheus.Counter
	permDenied   prometheus.Counter
	rpcCalls     *prometheus.CounterVec
	dataTracks   prometheus.Gauge
	dataTrackPkt *prometheus.CounterVec
	// frames whose packet trailer was cut for a subscriber (trailer.go)
	trailersStripped prometheus.Counter
	unmatchedMedia   prometheus.Counter
	// pre-resolved children of dataTrackPkt (per packet)
	dtReceived, dtSent, dtMalformed, dtUnknown prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "gxconf", "sfu"
	m := &metrics{
		rooms:            prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "rooms", Help: "Rooms open on this node."}),
		participants:     prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "participants", Help: "Participants connected to this node."}),
		tracks:           prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "published_tracks", Help: "Tracks published on this node."}),
		packetsIn:        prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rtp_packets_in_total", Help: "RTP packets received from publishers, by stream (audio, or video layer q/h/f)."}, []string{"layer"}),
		bytesIn:          prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rtp_bytes_in_total", Help: "RTP bytes (header and payload) received from publishers."}),
		packetsOut:       prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rtp_packets_out_total", Help: "RTP packets forwarded to subscribers."}),
		bytesOut:         prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rtp_bytes_out_total", Help: "RTP bytes forwarded to subscribers."}),
		directOut:        prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rtp_packets_direct_out_total", Help: "Forwarded RTP packets sent on the direct path (SFU-side SRTP, sendmmsg)."}),
		directIn:         prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rtp_packets_direct_in_total", Help: "RTP packets from publishers taken by the direct receive path (SFU-side SRTP where the mux socket is read)."}),
		sendErrors:       prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "direct_send_errors_total", Help: "Packets the direct path failed to send."}),
		sendMsgs:         prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "direct_send_messages_total", Help: "UDP messages the direct path handed to the kernel; a segmented message (UDP GSO) counts once, however many packets it carries. rtp_packets_direct_out_total over this is the packets per message."}),
		unmatchedMedia:   prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "unmatched_media_total", Help: "Incoming RTP streams that match no track the participant announced (add_track) of their kind; they are dropped."}),
		trailersStripped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "packet_trailers_stripped_total", Help: "Copies of a video frame's last packet whose packet trailer (frame metadata) was cut for a subscriber that does not read it."}),
		sendCalls:        prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "direct_send_calls_total", Help: "sendmmsg system calls of the direct path (each sends a batch of messages)."}),
		packetsLost:      prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rtp_packets_lost_total", Help: "RTP packets missing in publisher streams (sequence gaps)."}),
		nacks:            prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "nacks_total", Help: "Sequence numbers NACKed by subscribers."}),
		retransmits:      prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "retransmits_total", Help: "Packets retransmitted from the packet cache."}),
		plis:             prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "plis_total", Help: "Keyframe requests (PLI) sent to publishers."}),
		unread:           prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "signal_unread_closed_total", Help: "Signal sockets closed because their client did not read: more messages waited for it than the server keeps (the session then ends)."}),
		dataDropped:      prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "data_dropped_total", Help: "Data packets not sent to a participant because its data channel already held more unsent than allowed (1 MiB lossy, 16 MiB reliable: its client takes data slower than it is sent, or not at all), by channel (_reliable, _lossy, _data_track)."}, []string{"channel"}),
		candIgnored:      prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "ice_candidates_ignored_total", Help: "Remote ICE candidates ignored (trickled, or a=candidate lines of an offer or answer), by reason: oversized (over 2 KiB), malformed, limit (over 64 trickled before a connection's session description, or over 128 distinct in one ICE generation of a connection), ice_restarts (over what an ICE generation shares with the ones before it: a connection's ICE restarts get a fresh 128 four times at once and once every 30 s after)."}, []string{"reason"}),
		sdpRefused:       prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "session_descriptions_refused_total", Help: "Clients' offers and answers refused before they were applied, by reason: media_sections (over 512 on the connection), line_length (a line over 4 KiB), section_size (a media section or the session part over 32 KiB), ssrc (over 64 a=ssrc or 16 a=ssrc-group lines in a section), rid (over 16 distinct a=rid lines in a section), unconnected (over 8 offers before the publisher connection first connected), tracks (an offer with a media section describing more than one track by a=ssrc, which pion takes and cannot answer); and unanswerable: an offer pion took and then could not answer (the session is ended, its client told to join again)."}, []string{"reason"}),
		negThrottles:     prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "negotiation_throttles_total", Help: "Episodes of a participant's signal messages read late because its session descriptions used up their handling time (a bucket of 1 s, refilled at 100 ms a second; each read then waits for the debt, at most 3 s): counted once until its bucket is full again."}),
		negThrottled:     prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "negotiation_throttled_seconds_total", Help: "Time participants' signal reading waited for their negotiation debt to be repaid (negotiation_throttles_total)."}),
		dataTracks:       prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "published_data_tracks", Help: "Data tracks published on this node."}),
		dataTrackPkt:     prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "data_track_packets_total", Help: "Data track packets: received from publishers, sent to subscribers (one per copy), dropped as malformed or naming no data track of their publisher."}, []string{"outcome"}),
		permDenied:       prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "subscriptions_denied_total", Help: "Subscriptions refused or ended because the publisher's subscription permission leaves the subscriber out (each counted once until the permission lets it in)."}),
		rpcCalls:         prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rpc_calls_total", Help: "RoomService.PerformRpc calls to participants' clients on this node, by outcome: answered, error (the client answered with an RPC error), timeout (no ack, or no answer in time), gone (the participant left), canceled (the caller gave up), refused (payload too large, too many calls in flight)."}, []string{"outcome"}),
		gso:              prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "segmentation_offload", Help: "1 when the direct send path sends a subscriber's packets of a video frame (with direct receive: of whatever one read brought) as one segmented message (UDP GSO), 0 when one message per packet."}),
		directConns:      prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "direct_path_connections_total", Help: "Connections whose DTLS keys the direct send path got (keyed) or not (unavailable: the SFU is the DTLS client), and publishing connections the direct receive path took over (receive; again after a change of the selected pair)."}, []string{"outcome"}),
		recvDrops:        prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "direct_receive_drops_total", Help: "RTP packets the direct receive path dropped: SRTP authentication failed or a replayed packet."}),
		rtcpDrops:        prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rtcp_drops_total", Help: "RTCP packets from peers dropped where the mux socket is read: SRTCP authentication failed or a replay (authentication), or they named more distinct SSRCs than the connection has streams for (ssrc_budget)."}, []string{"reason"}),
		joins:            prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "joins_total", Help: "Signal connections by outcome (joined, resumed, refused, reconnect_refused) and path (rtc, rtc_v1)."}, []string{"outcome", "path"}),
	}
	for _, c := range []prometheus.Collector{m.rooms, m.participants, m.tracks, m.packetsIn, m.bytesIn, m.packetsOut, m.bytesOut, m.directOut, m.directIn, m.sendErrors, m.sendMsgs, m.sendCalls, m.packetsLost, m.nacks, m.retransmits, m.plis, m.joins, m.directConns, m.recvDrops, m.rtcpDrops, m.gso, m.unread, m.dataDropped, m.candIgnored, m.sdpRefused, m.negThrottles, m.negThrottled, m.permDenied, m.rpcCalls, m.dataTracks, m.dataTrackPkt, m.trailersStripped, m.unmatchedMedia} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.dtReceived = m.dataTrackPkt.WithLabelValues("received")
	m.dtSent = m.dataTrackPkt.WithLabelValues("sent")
	m.dtMalformed = m.dataTrackPkt.WithLabelValues("malformed")
	m.dtUnknown = m.dataTrackPkt.WithLabelValues("unknown_handle")
	return m, nil
}
