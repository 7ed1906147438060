package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/livekit/protocol/livekit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/gxfs-conf/gxconf/bridge"
	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/sfu"
)

// clusterNode is this process's membership in a multi-node cluster: the
// registry it heartbeats into and the placer the focus asks.
type clusterNode struct {
	reg cluster.Registry
	// rooms is the focus's cluster-wide RoomService.
	rooms  *clusterRooms
	placer *cluster.Placer
	// bridge relays media of rooms this node shares with others; nil
	// without a relay address.
	bridge *bridge.Bridge
	// drainRequested is signalled by POST /cluster/drain.
	drainRequested chan struct{}
	// fwd carries the Twirp RoomService's calls to other nodes and answers
	// theirs.
	fwd *roomForwarder
}

// newClusterNode joins the cluster when cluster.redis.address is set; alone
// (the default) it returns nil and the focus keeps handing out this node's
// own SFU. The load it publishes is the embedded SFU's plus the host's CPU.
// root is the process logger: the cluster and the bridge log as their own
// components.
func newClusterNode(full *config.Config, sfuSrv *sfu.Server, metrics prometheus.Registerer, root zerolog.Logger) (*clusterNode, error) {
	cfg := full.Cluster
	if !cfg.Multi() {
		return nil, nil
	}
	log := root.With().Str("component", "cluster").Logger()
	if cfg.SignalURL == "" {
		cfg.SignalURL = sfuSrv.URL()
	}
	redis.SetLogger(cluster.RedisLogger{Log: log})
	cpu := cluster.NewCPUSampler()
	// br is set below, before the registry runs.
	var br *bridge.Bridge
	load := cluster.LoadFunc(func() cluster.Load {
		l := sfuSrv.Load()
		out := cluster.Load{
			CPU: cpu.Busy(), Participants: uint32(l.Participants), Tracks: uint32(l.Tracks),
			BitrateIn: l.BitrateIn, BitrateOut: l.BitrateOut,
		}
		if br != nil {
			out.RelayBitrate = br.Bitrate()
		}
		return out
	})
	reg, err := cluster.New(cfg, log, cluster.WithLoadSource(load))
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if s, ok := reg.(signingStatser); ok {
		if err := metrics.Register(signingCollector{s}); err != nil {
			return nil, fmt.Errorf("cluster metrics: %w", err)
		}
	}
	placer, err := cluster.NewPlacer(cfg, reg, log)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	// The directory learns which rooms, participants and tracks this node
	// hosts: placement keeps a room on the nodes that have it, and the
	// RoomService finds a participant's node.
	sfuSrv.SetRoomHooks(newDirectoryHooks(reg).roomHooks())
	fwd := newRoomForwarder(reg, sfuSrv, log)
	sfuSrv.SetForwarder(fwd)
	node := &clusterNode{reg: reg, placer: placer, drainRequested: make(chan struct{}, 1), fwd: fwd,
		rooms: &clusterRooms{RoomService: sfuSrv.RoomService(), reg: reg, log: log}}
	if full.BridgeEnabled() {
		bcfg := full.Bridge
		bcfg.NodeID = string(reg.Self().ID)
		node.bridge, err = bridge.New(bcfg, sfuSrv, root.With().Str("component", "bridge").Logger())
		if err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
		if err := metrics.Register(node.bridge.Collector()); err != nil {
			return nil, fmt.Errorf("bridge metrics: %w", err)
		}
		br = node.bridge
	}
	return node, nil
}

// signingStatser is a registry that checks message signatures (Redis).
type signingStatser interface {
	SigningStats() cluster.SigningStats
}

var (
	descRefusedPublications = prometheus.NewDesc("gxconf_cluster_refused_publications_total",
		"Node-to-node messages and bus events refused by message signing (cluster.message_key_file): unsigned, bad_signature, sender_mismatch, stale or replayed.",
		[]string{"kind", "reason"}, nil)
	descUnsignedAccepted = prometheus.NewDesc("gxconf_cluster_unsigned_publications_accepted_total",
		"Unsigned node-to-node messages and bus events accepted while cluster.message_key_accept_unsigned is set; turn it off once this stops growing on every node.",
		[]string{"kind"}, nil)
)

// signingCollector exports a registry's signing counts, every kind and
// reason from zero.
type signingCollector struct{ reg signingStatser }

func (c signingCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRefusedPublications
	ch <- descUnsignedAccepted
}

func (c signingCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.reg.SigningStats()
	for _, kind := range []string{cluster.KindMessage, cluster.KindEvent} {
		for _, reason := range []string{cluster.RefusedUnsigned, cluster.RefusedBadSignature, cluster.RefusedSender, cluster.RefusedStale, cluster.RefusedReplayed} {
			var n uint64
			for _, r := range st.Refused {
				if r.Kind == kind && r.Reason == reason {
					n = r.Count
				}
			}
			ch <- prometheus.MustNewConstMetric(descRefusedPublications, prometheus.CounterValue, float64(n), kind, reason)
		}
		ch <- prometheus.MustNewConstMetric(descUnsignedAccepted, prometheus.CounterValue, float64(st.AcceptedUnsigned[kind]), kind)
	}
}

// removeTopic carries RemoveParticipant to every node (node bus).
const removeTopic = "sfu.remove_participant"

// clusterRooms is the focus's RoomService in a cluster. A removal (leave,
// ban, revoked credential) must reach the participant wherever it is
// connected — on a node that shares the room with this one the bridge
// forwards it, but the room may live on nodes this one has no part in — so
// RemoveParticipant also goes to every other live node over the node bus.
type clusterRooms struct {
	livekit.RoomService
	reg cluster.Registry
	log zerolog.Logger
}

func (c *clusterRooms) RemoveParticipant(ctx context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error) {
	resp, err := c.RoomService.RemoveParticipant(ctx, req)
	payload, merr := proto.Marshal(req)
	if merr != nil {
		return resp, err
	}
	self := c.reg.Self().ID
	for _, n := range c.reg.Nodes() {
		if n.ID == self {
			continue
		}
		if serr := c.reg.Send(ctx, n.ID, removeTopic, payload); serr != nil {
			c.log.Warn().Err(serr).Str("node_id", string(n.ID)).Str("lk_room", req.Room).Msg("Failed to send a removal to a node")
		}
	}
	return resp, err
}

// serveRemovals carries out the removals other nodes send until ctx ends.
func (c *clusterRooms) serveRemovals(ctx context.Context) error {
	in := c.reg.Listen(removeTopic, 256)
	defer in.Close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-in.C():
			if !ok {
				return nil
			}
			var req livekit.RoomParticipantIdentity
			if err := proto.Unmarshal(m.Payload, &req); err != nil || req.Room == "" || req.Identity == "" {
				c.log.Warn().Str("node_id", string(m.From)).Msg("Ignored a malformed removal from a node")
				continue
			}
			if _, err := c.RoomService.RemoveParticipant(ctx, &req); err == nil {
				c.log.Info().Str("node_id", string(m.From)).Str("lk_room", req.Room).Str("lk_identity", req.Identity).
					Msg("Removed a participant on another node's behalf")
			}
		}
	}
}

// runners are the node's long-lived parts: the registry, and the bridge
// with the loop that links rooms as the directory says.
func (c *clusterNode) runners() []component {
	out := []component{{"cluster registry", c.reg.Run}, {"cluster removals", c.rooms.serveRemovals},
		{"cluster forwarding", func(ctx context.Context) error { return c.fwd.run(ctx, c.reg) }}}
	if c.bridge != nil {
		out = append(out, component{"bridge", c.bridge.Run},
			component{"bridge follower", func(ctx context.Context) error { return c.bridge.Follow(ctx, c.reg) }})
	}
	return out
}

// statusHandler serves this node's view of the cluster, its relay links
// and, with peering, its peer links as JSON, on the internal metrics
// listener (`gxconf cluster status` reads it). links is nil without a
// bridge, peering nil without peering.
func statusHandler(src cluster.StatusSource, links func() []cluster.LinkStatus, peering func(context.Context) *cluster.PeeringStatus) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		st, err := cluster.Snapshot(ctx, src)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		if links != nil {
			st.Links = links()
		}
		if peering != nil {
			st.Peering = peering(ctx)
		}
		_ = json.NewEncoder(w).Encode(st)
	})
}

// drain takes the node out of placement and moves its participants away,
// within cfg.Timeout.
func (c *clusterNode) drain(ctx context.Context, sfuSrv *sfu.Server, cfg cluster.DrainConfig, log zerolog.Logger) {
	c.reg.SetState(cluster.NodeDraining)
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	sfuSrv.Drain(ctx, cfg.Grace, cfg.Batch, cfg.Interval)
	log.Info().Dur("duration", time.Since(start)).Int("participants_left", sfuSrv.Load().Participants).Msg("Drain finished; stopping")
}

// drainHandler starts the drain on the CLI's POST (then the node stops);
// cluster.DrainHandler refuses requests from web browsers.
func (c *clusterNode) drainHandler() http.Handler {
	return cluster.DrainHandler(func() {
		select {
		case c.drainRequested <- struct{}{}:
		default: // already draining
		}
	})
}

// cmdCluster runs `gxconf cluster status` (a running node's view of the
// cluster: nodes, sites, rooms) and `gxconf cluster drain` (the node moves
// its participants to other nodes, then stops). Both talk to the node's
// internal metrics listener.
func cmdCluster(args []string, stdout io.Writer) error {
	const use = "usage: gxconf cluster status|drain [-c config.yaml | -url http://127.0.0.1:9464] [-ca ca.pem] [-server-name name]"
	if len(args) == 0 || (args[0] != "status" && args[0] != "drain") {
		return &usageError{use}
	}
	return clusterCommand("cluster "+args[0], args[0], args[1:], stdout)
}

// cmdDrain runs `gxconf drain`, the name operators look for, as `gxconf
// cluster drain`.
func cmdDrain(args []string, stdout io.Writer) error {
	return clusterCommand("drain", "drain", args, stdout)
}

// clusterCommand runs action ("status" or "drain") of the command called
// name against a running node.
func clusterCommand(name, action string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfgPath := fs.String("c", "", "config file (its metrics.listen is asked)")
	url := fs.String("url", "", "metrics listener of a running node")
	caFile := fs.String("ca", "", "PEM CA certificates trusted for an https metrics listener (metrics.tls); default: the system's")
	serverName := fs.String("server-name", "", "name the metrics listener's certificate must carry (default: the URL's host)")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	base := *url
	scheme := "http://"
	if base == "" {
		listen := config.DefaultMetricsListen
		if *cfgPath != "" {
			cfg, err := config.Load(*cfgPath, os.Environ())
			if err != nil {
				return err
			}
			if cfg.Metrics.Listen == "" {
				return errors.New("metrics.listen is empty: the cluster status is only served on the metrics listener")
			}
			listen = cfg.Metrics.Listen
			if cfg.Metrics.TLS {
				scheme = "https://"
			}
		}
		base = scheme + strings.Replace(listen, "0.0.0.0:", "127.0.0.1:", 1)
	}
	client, err := metricsClient(*caFile, *serverName)
	if err != nil {
		return err
	}
	base = strings.TrimSuffix(base, "/")
	if action == "drain" {
		resp, err := client.Post(base+"/cluster/drain", "application/json", nil)
		if err != nil {
			return fmt.Errorf("failed to ask the node: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("the node answered %s (is it part of a cluster?)", resp.Status)
		}
		fmt.Fprintln(stdout, "draining: the node moves its participants to other nodes, then stops")
		return nil
	}
	resp, err := client.Get(base + "/cluster/status")
	if err != nil {
		return fmt.Errorf("failed to ask the node: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return errors.New("this node runs alone (cluster.redis.address is not set)")
	}
	var st cluster.Status
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		return fmt.Errorf("the node answered %s: %s", resp.Status, e.Error)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&st); err != nil {
		return fmt.Errorf("failed to read the status: %w", err)
	}
	printStatus(stdout, st)
	return nil
}

// metricsClient is the HTTP client for a node's metrics listener: it checks
// an https listener's chain against caFile (else the system's roots) and,
// when set, serverName instead of the URL's host; TLS 1.2 at least.
func metricsClient(caFile, serverName string) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("failed to read -ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca %s: no PEM certificate in it", caFile)
		}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}, nil
}

func printStatus(out io.Writer, st cluster.Status) {
	terminalSafe(reflect.ValueOf(&st).Elem())
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Asked node %s", st.Self)
	if st.Partial {
		fmt.Fprint(tw, " (registry unreachable: only its own rooms)")
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "\nSITE\tNODE\tSTATE\tPARTICIPANTS\tTRACKS\tCPU\tIN kbit/s\tOUT kbit/s\tRELAY kbit/s\tSIGNAL URL\tRELAY")
	for _, s := range st.Sites {
		for _, n := range s.Nodes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.0f%%\t%d\t%d\t%d\t%s\t%s\n", s.Site, n.ID, n.State,
				n.Load.Participants, n.Load.Tracks, n.Load.CPU*100, n.Load.BitrateIn/1000, n.Load.BitrateOut/1000,
				n.Load.RelayBitrate/1000, n.SignalURL, n.RelayAddr)
		}
	}
	fmt.Fprintln(tw, "\nROOM\tNODE\tPARTICIPANTS\tTRACKS")
	for _, r := range st.Rooms {
		for _, n := range r.Nodes {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", r.Room, n.Node, n.Participants, n.Tracks)
		}
	}
	if len(st.Links) > 0 {
		fmt.Fprintf(tw, "\nRelay links of %s\n", st.Self)
		fmt.Fprintln(tw, "ROOM\tPEER NODE\tSTATE\tTRACKS OUT\tTRACKS IN\tOUT kbit/s\tIN kbit/s\tRTT\tLOST\tRESENT")
		for _, l := range st.Links {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", l.Room, l.PeerNode, linkColumns(l))
		}
	}
	if p := st.Peering; p != nil {
		printPeering(tw, p)
	}
	_ = tw.Flush()
}

// linkColumns are a link's columns from STATE on, as both link tables
// print them.
func linkColumns(l cluster.LinkStatus) string {
	state := "connecting"
	if l.Connected {
		state = "connected"
	}
	return fmt.Sprintf("%s\t%d\t%d\t%d\t%d\t%s\t%d\t%d", state, l.TracksOut, l.TracksIn, l.BitrateOut/1000, l.BitrateIn/1000,
		l.RTT.Round(100*time.Microsecond), l.LostPackets, l.Retransmits)
}

// printPeering prints the peer deployments, the rooms relayed with them
// (one copy of each track crosses a link, whatever the subscribers behind
// it) and their participants present here through the relay.
func printPeering(tw io.Writer, p *cluster.PeeringStatus) {
	fmt.Fprintf(tw, "\nPeering as %s\n", p.Self)
	fmt.Fprintln(tw, "PEER\tRELAY\tURL\tHOMESERVERS\tLEVELS")
	for _, pr := range p.Peers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", pr.Name, pr.RelayAddress, pr.URL, strings.Join(pr.Homeservers, ","), strings.Join(pr.Levels, ","))
	}
	fmt.Fprintln(tw, "\nPEER ROOM\tPEER\tPEER NODE\tDIRECTION\tSTATE\tTRACKS OUT\tTRACKS IN\tOUT kbit/s\tIN kbit/s\tRTT\tLOST\tRESENT")
	for _, l := range p.Links {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Room, l.Peer, l.PeerNode, l.Direction, linkColumns(l.LinkStatus))
	}
	fmt.Fprintln(tw, "\nPEER PARTICIPANT\tROOM\tDEPLOYMENT\tNODE")
	for _, pp := range p.Participants {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", pp.Identity, pp.Room, pp.Deployment, pp.Node)
	}
}

// terminalSafe replaces, in every string v holds, what would act on the
// operator's terminal or the table rather than be printed: control
// characters (escape sequences, tabs, new lines) and the bidirectional
// formatting characters that reorder what follows them. Room names and
// identities come from clients, peer deployments' from the peers.
func terminalSafe(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		if v.CanSet() {
			v.SetString(strings.Map(func(r rune) rune {
				if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
					return utf8.RuneError
				}
				return r
			}, strings.ToValidUTF8(v.String(), "\uFFFD")))
		}
	case reflect.Pointer:
		if !v.IsNil() {
			terminalSafe(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			terminalSafe(v.Field(i))
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			terminalSafe(v.Index(i))
		}
	}
}
