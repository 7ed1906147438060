package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
)

// Options configure a load run against any LiveKit-compatible server.
type Options struct {
	// URL is the ws(s):// URL of one server; URLs the nodes of a cluster
	// (set one of them). Participants of a room are spread over the URLs:
	// subscribers round-robin starting at the first, publishers all on the
	// first (their "home" node) unless SpreadPublishers is set, so a
	// subscriber's media comes either from its own node or across the
	// bridge from another one.
	URL              string
	URLs             []string
	SpreadPublishers bool // publishers round-robin over the URLs too
	// SubscriberOffset is the URL index the first subscriber joins (the
	// round-robin starts there): with one subscriber and two nodes, 1
	// puts it on the node the publishers are not on.
	SubscriberOffset int
	APIKey           string
	APISecret        string

	Rooms       int // default 1
	Publishers  int // per room: publish audio + simulcast video, subscribe to the others
	Subscribers int // per room: subscribe only
	// PublishersOnly: publishers subscribe to nothing (a stage: only the
	// subscribers receive).
	PublishersOnly bool

	Duration time.Duration // measurement window, default 30 s
	Warmup   time.Duration // from the last join to the window, default 10 s
	JoinRate float64       // joins per second, default 10
	Grace    time.Duration // per stream, packets before this are not counted for loss; default 1 s

	RoomPrefix string  // default "loadtest"
	NoAudio    bool    // publishers send no audio
	AudioVBR   bool    // audio frame sizes vary as with Opus VBR (PublishOptions.AudioVBR)
	NoVideo    bool    // publishers send no video
	Layers     []Layer // default DefaultLayers()
	FPS        int     // default 30
	// Quality subscribers ask for (track_setting); empty leaves the server
	// default (highest).
	Quality string // "low", "medium", "high" or ""

	// ClientSocketBuffer is the SO_RCVBUF set on the clients' UDP sockets
	// after joining (default 4 MiB, capped by net.core.rmem_max; negative
	// leaves the system default).
	ClientSocketBuffer int

	// SFUPid, when set, is the server process whose CPU time (utime+stime
	// over the window) and RSS (/proc/<pid>) are reported; SFUPids is one
	// per URL (0 skips a node) for a cluster on this host. Set one of them.
	SFUPid  int
	SFUPids []int
	// MetricsURLs, one per URL ("" skips a node), are the http:// bases of
	// gxconf nodes' metrics listeners: the bridge's relay packets and bytes
	// (gxconf_bridge_relay_*_total) over the window are reported per node.
	MetricsURLs []string
}

func (o *Options) defaults() error {
	switch {
	case o.URL != "" && len(o.URLs) > 0:
		return errors.New("url and urls: set one of them")
	case o.URL != "":
		o.URLs = []string{o.URL}
	}
	if len(o.URLs) == 0 || o.APIKey == "" || o.APISecret == "" {
		return errors.New("url, api key and api secret are required")
	}
	for i, u := range o.URLs {
		if u == "" {
			return fmt.Errorf("urls[%d]: empty", i)
		}
	}
	switch {
	case o.SFUPid != 0 && len(o.SFUPids) > 0:
		return errors.New("sfu pid and sfu pids: set one of them")
	case o.SFUPid != 0:
		o.SFUPids = []int{o.SFUPid}
	}
	if len(o.SFUPids) > 0 && len(o.SFUPids) != len(o.URLs) {
		return fmt.Errorf("sfu pids: need one per url (%d), got %d", len(o.URLs), len(o.SFUPids))
	}
	if o.SubscriberOffset < 0 {
		return fmt.Errorf("subscriber offset: must not be negative, got %d", o.SubscriberOffset)
	}
	if len(o.MetricsURLs) > 0 && len(o.MetricsURLs) != len(o.URLs) {
		return fmt.Errorf("metrics urls: need one per url (%d), got %d", len(o.URLs), len(o.MetricsURLs))
	}
	if o.Rooms <= 0 {
		o.Rooms = 1
	}
	if o.Publishers < 0 || o.Subscribers < 0 || o.Publishers+o.Subscribers == 0 {
		return errors.New("need at least one publisher or subscriber per room")
	}
	if o.Duration <= 0 {
		o.Duration = 30 * time.Second
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	} else if o.Warmup == 0 {
		o.Warmup = 10 * time.Second
	}
	if o.JoinRate <= 0 {
		o.JoinRate = 10
	}
	if o.Grace <= 0 {
		o.Grace = time.Second
	}
	if o.ClientSocketBuffer == 0 {
		o.ClientSocketBuffer = 4 << 20
	}
	if o.RoomPrefix == "" {
		o.RoomPrefix = "loadtest"
	}
	switch strings.ToLower(o.Quality) {
	case "", "low", "medium", "high":
	default:
		return fmt.Errorf("quality must be low, medium or high, got %q", o.Quality)
	}
	return nil
}

// nodeOf returns the index of the URL that participant i of a room (the
// publishers first) joins.
func (o *Options) nodeOf(i int) int {
	n := len(o.URLs)
	if i < o.Publishers {
		if o.SpreadPublishers {
			return i % n
		}
		return 0
	}
	return (i - o.Publishers + o.SubscriberOffset) % n
}

type participant struct {
	identity string
	node     int // index into Options.URLs
	room     *lksdk.Room
	pub      *Publisher
	tracks   atomic.Int64 // subscribed
	// unsubscribed and reconnects flag a disturbed run: a track that
	// ended or a client that reconnected (a republish is counted again
	// in tracks).
	unsubscribed, reconnects atomic.Int64

	mu      sync.Mutex
	streams []*StreamStats
	readers Readers
}

// Latency classes: a subscriber on its publisher's node, or on another one
// (media crossed the bridge); audio and video frames apart.
const (
	sameNode = iota
	crossNode
)

const (
	kindAudio = iota
	kindVideo
)

// Run joins Rooms × (Publishers + Subscribers) participants, lets them run
// for Warmup + Duration, writes a report to out and returns it.
//
// It sets server-sdk-go's process-wide logger to errors only: the SDK's
// pion logs otherwise go to the standard logger at debug level, one line
// per duplicated packet under loss, which costs the generator CPU. The
// subscribers' clients log nothing (their failures are counted and their
// join errors logged here).
func Run(ctx context.Context, opts Options, out io.Writer, log zerolog.Logger) (*Report, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	sdkLog, err := protoLogger.NewZapLogger(&protoLogger.Config{Level: "error"})
	if err != nil {
		return nil, err
	}
	lksdk.SetLogger(sdkLog)
	nodes := len(opts.URLs)
	rssStart := make([]uint64, nodes)
	for i, pid := range opts.SFUPids {
		if pid <= 0 {
			continue
		}
		if st, err := readProc(pid); err == nil {
			rssStart[i] = st.rss
		} else {
			log.Warn().Err(err).Int("pid", pid).Msg("cannot read sfu process stats")
		}
	}

	// The plan: every participant's identity and node, fixed before the
	// joins so a subscriber can tell the node of any publisher.
	type planned struct {
		room, identity string
		publish        bool
		node           int
	}
	var plan []planned
	homeOf := map[string]int{} // publisher identity → node
	for r := 0; r < opts.Rooms; r++ {
		roomName := fmt.Sprintf("%s-%d", opts.RoomPrefix, r)
		for i := 0; i < opts.Publishers+opts.Subscribers; i++ {
			publish := i < opts.Publishers
			kind := "sub"
			if publish {
				kind = "pub"
			}
			p := planned{room: roomName, identity: fmt.Sprintf("%s-%d-%d", kind, r, i), publish: publish, node: opts.nodeOf(i)}
			if publish {
				homeOf[p.identity] = p.node
			}
			plan = append(plan, p)
		}
	}
	var latency [2][2]Histogram // [sameNode|crossNode][kindAudio|kindVideo]

	var (
		mu          sync.Mutex
		parts       []*participant
		latencies   = make([][]time.Duration, nodes)
		failures    = make([]int, nodes)
		serverNodes = make([]string, nodes) // server_info.node_id seen
		wg          sync.WaitGroup
	)
	defer func() {
		var dwg sync.WaitGroup
		for _, p := range parts {
			dwg.Add(1)
			go func(p *participant) {
				defer dwg.Done()
				if p.pub != nil {
					p.pub.Stop()
				}
				p.room.Disconnect()
				p.readers.Wait()
			}(p)
		}
		dwg.Wait()
	}()

	quality := map[string]livekit.VideoQuality{"low": livekit.VideoQuality_LOW, "medium": livekit.VideoQuality_MEDIUM, "high": livekit.VideoQuality_HIGH}
	wantQuality, setQuality := quality[strings.ToLower(opts.Quality)]
	join := func(pl planned) {
		defer wg.Done()
		p := &participant{identity: pl.identity, node: pl.node}
		cb := lksdk.NewRoomCallback()
		cb.OnReconnecting = func() { p.reconnects.Add(1) }
		cb.OnTrackUnsubscribed = func(*webrtc.TrackRemote, *lksdk.RemoteTrackPublication, *lksdk.RemoteParticipant) {
			p.unsubscribed.Add(1)
		}
		cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
			p.tracks.Add(1)
			st := &StreamStats{}
			class, kind := sameNode, kindAudio
			if home, ok := homeOf[rp.Identity()]; ok && home != p.node {
				class = crossNode
			}
			if pub.Kind() == lksdk.TrackKindVideo {
				kind = kindVideo
			}
			st.Latency = &latency[class][kind]
			p.mu.Lock()
			p.streams = append(p.streams, st)
			p.mu.Unlock()
			if setQuality && pub.Kind() == lksdk.TrackKindVideo {
				_ = pub.SetVideoQuality(wantQuality)
			}
			p.readers.Go(func() { ReadTrack(track, st, opts.Grace) })
		}
		grant := &auth.VideoGrant{RoomJoin: true, Room: pl.room}
		if !pl.publish {
			// Subscribe-only: the server then does not have the client set
			// up a publisher peer connection (fast_publish), which halves
			// the peer connections of a big run on both sides.
			grant.SetCanPublish(false)
			grant.SetCanPublishData(false)
		}
		tok, err := auth.NewAccessToken(opts.APIKey, opts.APISecret).SetIdentity(pl.identity).SetName(pl.identity).
			SetVideoGrant(grant).SetValidFor(2 * time.Hour).ToJWT()
		if err != nil {
			log.Error().Err(err).Msg("failed to mint token")
			return
		}
		start := time.Now()
		subscribe := !pl.publish || !opts.PublishersOnly
		// Subscribers log nothing: the SDK derives a logger with values for
		// every remote participant, N² of them in a big room, a sizeable
		// part of the generator's CPU even when nothing is logged.
		clientLog := protoLogger.GetDiscardLogger()
		if pl.publish {
			clientLog = sdkLog
		}
		room, err := lksdk.ConnectToRoomWithToken(opts.URLs[pl.node], tok, cb, lksdk.WithAutoSubscribe(subscribe), lksdk.WithLogger(clientLog))
		lat := time.Since(start)
		if err != nil {
			mu.Lock()
			failures[pl.node]++
			mu.Unlock()
			log.Warn().Err(err).Str("lk_identity", pl.identity).Str("url", opts.URLs[pl.node]).Msg("join failed")
			return
		}
		p.room = room
		if pl.publish {
			pub, err := StartPublisher(room, PublishOptions{Audio: !opts.NoAudio, AudioVBR: opts.AudioVBR, Video: !opts.NoVideo, Layers: opts.Layers, FPS: opts.FPS})
			if err != nil {
				log.Warn().Err(err).Str("lk_identity", pl.identity).Msg("publish failed")
			}
			p.pub = pub
		}
		mu.Lock()
		parts = append(parts, p)
		latencies[pl.node] = append(latencies[pl.node], lat)
		if si := room.ServerInfo(); si != nil && serverNodes[pl.node] == "" {
			serverNodes[pl.node] = si.GetNodeId()
		}
		mu.Unlock()
	}

	procs := func() []procStats {
		out := make([]procStats, nodes)
		for i, pid := range opts.SFUPids {
			if pid > 0 {
				out[i], _ = readProc(pid)
			}
		}
		return out
	}
	joinCPU0, _ := readProc(0)
	sfuJoin0 := procs()
	joinStart := time.Now()
	interval := time.Duration(float64(time.Second) / opts.JoinRate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for _, pl := range plan {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil, ctx.Err()
		case <-tick.C:
		}
		wg.Add(1)
		go join(pl)
	}
	wg.Wait()
	joinCPU1, _ := readProc(0)
	sfuJoin1 := procs()
	// Packets received from the first join to the end of the join phase:
	// the SFU's CPU meanwhile paid for forwarding them too.
	var joinPackets uint64
	mu.Lock()
	for _, p := range parts {
		p.mu.Lock()
		for _, st := range p.streams {
			joinPackets += st.Packets.Load()
		}
		p.mu.Unlock()
	}
	mu.Unlock()
	sockets := 0
	if opts.ClientSocketBuffer > 0 {
		sockets = raiseUDPBuffers(opts.ClientSocketBuffer)
	}
	rep := &Report{Nodes: make([]NodeReport, nodes), JoinPhase: time.Since(joinStart)}
	rep.GeneratorJoinCPUPercent = (joinCPU1.cpu - joinCPU0.cpu) / rep.JoinPhase.Seconds() * 100
	rep.JoinPhasePackets = joinPackets
	for i := range sfuJoin0 {
		if sfuJoin0[i].cpu > 0 && sfuJoin1[i].cpu > 0 {
			rep.SFUJoinCPUSeconds += sfuJoin1[i].cpu - sfuJoin0[i].cpu
		}
	}
	var allLatencies []time.Duration
	for i := range rep.Nodes {
		n := &rep.Nodes[i]
		n.URL, n.ServerNodeID, n.JoinFailures = opts.URLs[i], serverNodes[i], failures[i]
		n.Participants = len(latencies[i])
		slices.Sort(latencies[i])
		n.JoinP50, n.JoinP99 = percentile(latencies[i], 0.50), percentile(latencies[i], 0.99)
		allLatencies = append(allLatencies, latencies[i]...)
		rep.JoinFailures += failures[i]
	}
	log.Info().Int("participants", len(parts)).Int("failed", rep.JoinFailures).Int("udp_sockets_tuned", sockets).Msg("all joined")

	perAV := 0
	if !opts.NoAudio {
		perAV++
	}
	if !opts.NoVideo {
		perAV++
	}
	rep.Participants = len(parts)
	subscribers := opts.Subscribers
	if !opts.PublishersOnly {
		subscribers += opts.Publishers - 1 // each publisher receives the others
	}
	rep.TracksExpected = opts.Rooms * subscribers * opts.Publishers * perAV
	slices.Sort(allLatencies)
	rep.JoinP50, rep.JoinP99 = percentile(allLatencies, 0.50), percentile(allLatencies, 0.99)

	sleep := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}
	if err := sleep(opts.Warmup); err != nil {
		return nil, err
	}
	// A snapshot of what every participant received so far, per node.
	type mark struct{ highest, received uint64 }
	type snapshot struct {
		packets, bytes []uint64 // per node
		marks          map[*StreamStats]mark
		streamNode     map[*StreamStats]int
		freezes        map[*StreamStats]freezeMark
		latency        [2][2]HistSnapshot
	}
	snap := func() snapshot {
		s := snapshot{packets: make([]uint64, nodes), bytes: make([]uint64, nodes),
			marks: map[*StreamStats]mark{}, streamNode: map[*StreamStats]int{}, freezes: map[*StreamStats]freezeMark{}}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		for _, p := range parts {
			p.mu.Lock()
			for _, st := range p.streams {
				s.packets[p.node] += st.Packets.Load()
				s.bytes[p.node] += st.Bytes.Load()
				s.streamNode[st] = p.node
				if h, r, ok := st.counts(); ok {
					s.marks[st] = mark{h, r}
				}
				s.freezes[st] = st.freezeState(now)
			}
			p.mu.Unlock()
		}
		for c := range latency {
			for k := range latency[c] {
				s.latency[c][k] = latency[c][k].Snapshot()
			}
		}
		return s
	}
	counters := func() []*nodeCounters {
		out := make([]*nodeCounters, nodes)
		for i, u := range opts.MetricsURLs {
			if u == "" {
				continue
			}
			c, err := scrapeNode(ctx, u)
			if err != nil {
				log.Warn().Err(err).Str("url", u).Msg("cannot read the node's metrics")
				continue
			}
			out[i] = &c
		}
		return out
	}
	s0 := snap()
	self0, _ := readProc(0)
	drops0, _ := udpRcvbufErrors()
	sfu0, node0 := procs(), counters()
	t0 := time.Now()
	if err := sleep(opts.Duration); err != nil {
		return nil, err
	}
	window := time.Since(t0)
	s1 := snap()
	self1, _ := readProc(0)
	drops1, _ := udpRcvbufErrors()
	sfu1, node1 := procs(), counters()
	rep.HostUDPDrops = drops1 - drops0
	rep.LoadAverage = loadAverage()
	rep.Window = window
	rep.GeneratorCPUPercent = (self1.cpu - self0.cpu) / window.Seconds() * 100

	// Loss over the window only: sequence numbers the streams advanced by
	// against packets that arrived (streams counted at both ends).
	expected, received := make([]uint64, nodes), make([]uint64, nodes)
	for st, m1 := range s1.marks {
		m0, ok := s0.marks[st]
		if !ok {
			continue
		}
		node := s1.streamNode[st]
		e, r := m1.highest-m0.highest, m1.received-m0.received
		expected[node] += e
		received[node] += min(r, e)
	}
	// Freezes in the window: gaps over FreezeGap between a stream's intact
	// frames, one still open at the end included.
	var frozen time.Duration
	streams := 0
	for st, f1 := range s1.freezes {
		if !f1.ok {
			continue
		}
		streams++
		f0 := s0.freezes[st]
		if f1.freezes > f0.freezes || f1.frozen > f0.frozen {
			rep.Freezes += f1.freezes - f0.freezes
			frozen += f1.frozen - f0.frozen
			rep.LongestFreeze = max(rep.LongestFreeze, f1.longest)
		}
	}
	if streams > 0 {
		rep.FrozenPercent = float64(frozen) / float64(time.Duration(streams)*window) * 100
	}
	mu.Lock()
	for _, p := range parts {
		rep.Nodes[p.node].TracksSubscribed += int(p.tracks.Load())
		rep.TracksUnsubscribed += int(p.unsubscribed.Load())
		rep.Reconnects += int(p.reconnects.Load())
		p.mu.Lock()
		for _, st := range p.streams {
			rep.CorruptFrames += st.Corrupt.Load()
		}
		p.mu.Unlock()
	}
	mu.Unlock()
	var allExpected, allReceived uint64
	for i := range rep.Nodes {
		n := &rep.Nodes[i]
		n.PacketsReceived = s1.packets[i] - s0.packets[i]
		rep.TracksSubscribed += n.TracksSubscribed
		rep.PacketsReceived += n.PacketsReceived
		rep.BytesReceived += s1.bytes[i] - s0.bytes[i]
		if expected[i] > 0 {
			n.LossPercent = float64(expected[i]-received[i]) / float64(expected[i]) * 100
		}
		allExpected += expected[i]
		allReceived += received[i]
		if sfu0[i].cpu > 0 && sfu1[i].cpu > 0 {
			n.SFUMeasured = true
			n.SFUCPUSeconds = sfu1[i].cpu - sfu0[i].cpu
			n.SFUKernelSeconds = sfu1[i].sys - sfu0[i].sys
			n.SFUCPUPercent = n.SFUCPUSeconds / window.Seconds() * 100
			n.SFURSSStart, n.SFURSSEnd, n.SFUPeakRSS = rssStart[i], sfu1[i].rss, sfu1[i].hwm
			if n.PacketsReceived > 0 {
				n.MicrosPerPacket = n.SFUCPUSeconds * 1e6 / float64(n.PacketsReceived)
			}
		}
		if node0[i] != nil && node1[i] != nil {
			d := node1[i].sub(*node0[i])
			n.RelayMeasured = true
			n.RelayPacketsOut, n.RelayPacketsIn = uint64(d.packetsOut), uint64(d.packetsIn)
			n.RelayBytesOut, n.RelayBytesIn = uint64(d.bytesOut), uint64(d.bytesIn)
			if d.messages > 0 && d.calls > 0 {
				n.SendMeasured = true
				n.DirectPackets, n.SendMessages, n.SendCalls = uint64(d.directOut), uint64(d.messages), uint64(d.calls)
			}
		}
	}
	rep.BitrateMbps = float64(rep.BytesReceived) * 8 / window.Seconds() / 1e6
	if allExpected > 0 {
		rep.LossPercent = float64(allExpected-allReceived) / float64(allExpected) * 100
	}
	// The SFU totals add up the measured nodes (one node: that node).
	for _, n := range rep.Nodes {
		if !n.SFUMeasured {
			continue
		}
		rep.SFUMeasured = true
		rep.SFUCPUSeconds += n.SFUCPUSeconds
		rep.SFUKernelSeconds += n.SFUKernelSeconds
		rep.SFURSSStart += n.SFURSSStart
		rep.SFURSSEnd += n.SFURSSEnd
		rep.SFUPeakRSS += n.SFUPeakRSS
	}
	if rep.SFUMeasured {
		rep.SFUCPUPercent = rep.SFUCPUSeconds / window.Seconds() * 100
		if rep.PacketsReceived > 0 {
			rep.MicrosPerPacket = rep.SFUCPUSeconds * 1e6 / float64(rep.PacketsReceived)
		}
		if rep.Participants > 0 && rep.SFURSSEnd > rep.SFURSSStart {
			rep.RSSPerSubscribe = float64(rep.SFURSSEnd-rep.SFURSSStart) / float64(rep.Participants)
		}
	}
	for c := range latency {
		for k := range latency[c] {
			rep.Latency[c][k] = latencyOf(s1.latency[c][k].Sub(s0.latency[c][k]))
		}
	}
	rep.print(out, opts)
	return rep, nil
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[min(i, len(sorted)-1)]
}
