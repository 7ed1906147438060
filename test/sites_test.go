package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// Fixed ports: every node has its own addresses inside its site's
// namespace, so nothing collides.
const (
	siteASPort      = 9001
	siteFocusPort   = 9002
	siteSFUPort     = 7880
	siteUDPPort     = 7882
	siteMetricsPort = 9464
	siteRelayPort   = 7890
	// IX impairment on site b's node (what it sends towards site a).
	ixLoss  = 0.05
	ixDelay = 20 * time.Millisecond
)

// siteNode is one gxconf process in a site's namespace.
type siteNode struct {
	id, site string
	ns       *harness.Site
	up, ix   string // uplink and IX addresses
	cfgPath  string
	proc     *harness.Process
	starts   int
}

func (n *siteNode) focusURL() string {
	return fmt.Sprintf("http://%s:%d", n.up, siteFocusPort)
}
func (n *siteNode) metricsURL() string {
	return fmt.Sprintf("http://%s:%d", n.up, siteMetricsPort)
}

func (n *siteNode) alive() bool {
	if n.proc == nil {
		return false
	}
	select {
	case <-n.proc.Done():
		return false
	default:
		return true
	}
}

// siteClient is a server-sdk-go participant that records what it receives
// (media per publisher and kind, data per sender) and the node it joined.
type siteClient struct {
	name     string // member id, for the log
	identity string
	site     string
	node     string // the node of the first join (server_info)
	room     *lksdk.Room
	pub      *loadtest.Publisher
	mu       sync.Mutex
	streams  map[string]*loadtest.StreamStats // publisher identity/kind
	data     map[string]int                   // sender identity → packets
	// left is when each remote participant was last seen leaving
	// (ParticipantDisconnected), by identity.
	left    map[string]time.Time
	readers loadtest.Readers
}

// leftAfter returns when identity was seen leaving after t0.
func (c *siteClient) leftAfter(identity string, t0 time.Time) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.left[identity]
	if !ok || at.Before(t0) {
		return 0, false
	}
	return at.Sub(t0), true
}

func (c *siteClient) stream(key string) *loadtest.StreamStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[key]
}

func (c *siteClient) dataFrom(identity string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.data[identity]
}

func (c *siteClient) close() {
	if c.pub != nil {
		c.pub.Stop()
	}
	c.room.Disconnect()
	c.readers.Wait()
}

// TestSites runs issue 9's cluster the way it is deployed: two sites, each
// a network namespace whose nodes clients reach over an uplink veth from
// the root namespace (Dendrite, Redis, PostgreSQL and the clients live
// there), the sites joined by a veth "IX link" that carries only relay
// traffic, and HAProxy (L4, /healthz checks) as each site's entry, so
// tokens carry the site URL and server-sdk-go reconnects through it.
// Three gxconf processes: a1, a2 in site a, b1 in site b; b1 impairs what
// it relays (5 % video loss, 20 ms delay; no netem on this kernel).
//
// Cases: participants on three nodes and two sites receive each other's
// audio, video and data intact; kill -9 of a site-a node hosting clients
// (3 runs): they are back publishing and subscribing through the site URL
// on the other node, while everyone else's media carries on; drain of a
// site-a node: its clients come back on the other one; the lossy IX link:
// subscribers in site a see < 0.5 % loss of site b's video.
func TestSites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))

	tn, err := harness.NewTestNet()
	require.NoError(t, err)
	// Registered first, so it runs last: after every process inside is gone.
	t.Cleanup(func() { require.NoError(t, tn.Close(), "network namespaces removed") })
	siteA, err := tn.AddSite("a", 1)
	require.NoError(t, err)
	siteB, err := tn.AddSite("b", 2)
	require.NoError(t, err)
	require.NoError(t, tn.LinkIX(siteA, siteB))
	// Shared services listen on site a's gateway; site b reaches it through
	// its own uplink (the IX stays private to the relay).
	svc := siteA.Gateway

	rds, err := harness.StartRedis(ctx, dir, svc)
	require.NoError(t, err)
	t.Cleanup(rds.Stop)
	_, redisPort, _ := net.SplitHostPort(rds.Addr)
	pg, err := harness.StartPostgres(ctx, svc)
	require.NoError(t, err)
	t.Cleanup(pg.Stop)
	pgURI := strings.Replace(pg.URI, "127.0.0.1", svc, 1)
	hsPort, err := harness.FreePort()
	require.NoError(t, err)
	hsURL := fmt.Sprintf("http://%s:%d", svc, hsPort)

	lbAddr := map[string]string{}
	for site, s := range map[string]*harness.Site{"a": siteA, "b": siteB} {
		a, err := s.AddUplinkAddr(10)
		require.NoError(t, err)
		lbAddr[site] = fmt.Sprintf("%s:%d", a, siteSFUPort)
	}
	nodes := []*siteNode{{id: "a1", site: "a", ns: siteA}, {id: "a2", site: "a", ns: siteA}, {id: "b1", site: "b", ns: siteB}}
	for i, n := range nodes {
		host := 11 + i%2
		if n.site == "b" {
			host = 11
		}
		n.up, err = n.ns.AddUplinkAddr(host)
		require.NoError(t, err)
		n.ix, err = n.ns.AddIXAddr(10*(1+strings.Index("ab", n.site)) + host - 10)
		require.NoError(t, err)
	}
	require.NoError(t, siteB.RouteTo(svc))
	sfuKey, sfuSecret := "gxconf-sites", "sites-test-secret-0123456789abcdef0123456789"
	relaySecret := "relay-secret-of-the-sites-test-0123456789abcdef"
	for i, n := range nodes {
		bridgeCfg := map[string]any{"secret": relaySecret}
		if n.site == "b" {
			bridgeCfg["test_link_loss"] = ixLoss
			bridgeCfg["test_link_delay"] = ixDelay.String()
		}
		cfg := map[string]any{
			"homeserver": map[string]any{"domain": "localhost", "address": hsURL},
			"database":   map[string]any{"type": "postgres", "uri": pgURI},
			"appservice": map[string]any{"listen": fmt.Sprintf("%s:%d", n.up, siteASPort)},
			"focus": map[string]any{
				"listen": fmt.Sprintf("%s:%d", n.up, siteFocusPort),
				"openid": map[string]any{"server_overrides": map[string]any{"localhost": hsURL}},
				"rate_limit": map[string]any{"per_ip": map[string]any{"rate": 1000, "burst": 1000},
					"per_user": map[string]any{"rate": 1000, "burst": 1000}},
			},
			"sfu": map[string]any{
				"node_id": n.id,
				"listen":  fmt.Sprintf("%s:%d", n.up, siteSFUPort),
				"keys":    map[string]any{sfuKey: sfuSecret},
				// The SFU's UDP mux listens on every address of the
				// namespace, so two nodes of one site need two ports.
				"rtc": map[string]any{"udp_port": siteUDPPort + i, "tcp_port": 0, "node_ip": n.up},
			},
			"cluster": map[string]any{
				"node_id": n.id, "site": n.site, "relay_address": fmt.Sprintf("%s:%d", n.ix, siteRelayPort),
				"heartbeat_interval": "200ms", "liveness_ttl": "1s",
				"redis": map[string]any{"address": net.JoinHostPort(svc, redisPort), "op_timeout": "500ms"},
				"sites": map[string]any{
					"a": map[string]any{"url": "ws://" + lbAddr["a"], "fallback": []string{"b"}},
					"b": map[string]any{"url": "ws://" + lbAddr["b"], "fallback": []string{"a"}},
				},
				// A token request reaching a site's node from the root
				// namespace comes from that site's gateway.
				"client_prefixes": map[string]any{siteA.Gateway + "/32": "a", siteB.Gateway + "/32": "b"},
				"limits":          map[string]any{"max_cpu": 0},
			},
			"bridge":  bridgeCfg,
			"metrics": map[string]any{"listen": fmt.Sprintf("%s:%d", n.up, siteMetricsPort)},
			"logging": map[string]any{"level": "debug"},
		}
		raw, err := yaml.Marshal(cfg)
		require.NoError(t, err)
		n.cfgPath = filepath.Join(dir, n.id+".yaml")
		require.NoError(t, os.WriteFile(n.cfgPath, raw, 0o644))
	}
	regPath := filepath.Join(dir, "registration.yaml")
	out, err := exec.Command(gxconfBin, "generate-registration", "-c", nodes[0].cfgPath, "-r", regPath).CombinedOutput()
	require.NoError(t, err, "%s", out)
	hsDir := filepath.Join(dir, "dendrite")
	require.NoError(t, os.MkdirAll(hsDir, 0o755))
	hs, err := harness.StartDendrite(ctx, harness.DendriteOptions{Dir: hsDir, Port: hsPort, Host: svc, Registrations: []string{regPath}})
	require.NoError(t, err)
	t.Cleanup(hs.Stop)

	start := func(n *siteNode) {
		t.Helper()
		n.starts++
		p, err := harness.StartGxconfIn(ctx, n.ns.Name, gxconfBin, n.cfgPath, regPath,
			filepath.Join(dir, fmt.Sprintf("%s-%d.log", n.id, n.starts)), n.focusURL()+"/healthz", "GXCONF_TESTING=1")
		require.NoError(t, err)
		n.proc = p
	}
	// Registered before the first start: a node that fails to start must
	// not leave the others running.
	t.Cleanup(func() {
		for _, n := range nodes {
			if n.proc == nil {
				continue
			}
			if n.alive() {
				_ = n.proc.Stop()
			}
			if t.Failed() {
				t.Logf("%s log:\n%s", n.id, tail(n.proc.Log(), 20000))
			}
		}
	})
	for _, n := range nodes {
		start(n)
	}
	for site, ns := range map[string]*harness.Site{"a": siteA, "b": siteB} {
		var servers []harness.HAProxyServer
		for _, n := range nodes {
			if n.site == site {
				servers = append(servers, harness.HAProxyServer{Name: n.id, Addr: fmt.Sprintf("%s:%d", n.up, siteSFUPort)})
			}
		}
		lb, err := harness.StartHAProxy(ctx, dir, ns.Name, lbAddr[site], servers)
		require.NoError(t, err)
		t.Cleanup(func() {
			lb.Stop()
			if t.Failed() {
				t.Logf("haproxy %s log:\n%s", site, tail(lb.Log(), 6000))
			}
		})
	}
	// Every node sees the other two.
	waitNodes := func(from *siteNode, want int) {
		t.Helper()
		require.Eventually(t, func() bool {
			st := clusterStatus(t, from.metricsURL())
			count := 0
			for _, s := range st.Sites {
				for _, n := range s.Nodes {
					if n.State == "serving" {
						count++
					}
				}
			}
			return count == want
		}, 30*time.Second, 100*time.Millisecond, "%s does not see %d serving nodes", from.id, want)
	}
	waitNodes(nodes[2], 3)

	// One Matrix room, four members: three join from site a, one from b.
	var users []*harness.User
	for i := range 4 {
		u, err := hs.RegisterUser(ctx, fmt.Sprintf("user%d", i), fmt.Sprintf("user%d-password", i), false)
		require.NoError(t, err)
		users = append(users, u)
	}
	created, err := users[0].Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat",
		Invite: []id.UserID{users[1].ID, users[2].ID, users[3].ID}})
	require.NoError(t, err)
	room := created.RoomID
	for _, u := range users[1:] {
		_, err := u.Client.JoinRoomByID(ctx, room)
		require.NoError(t, err)
	}

	// One 180p layer of about 3 packets per frame at 30 fps: enough
	// packets for a loss figure, little CPU.
	layers := []loadtest.Layer{{Quality: livekit.VideoQuality_LOW, Width: 320, Height: 180, FrameBytes: 3000}}
	join := func(u *harness.User, site, member string) *siteClient {
		t.Helper()
		var via *siteNode
		for _, n := range nodes {
			if n.site == site && n.alive() {
				via = n
				break
			}
		}
		require.NotNil(t, via, "a live node in site %s", site)
		status, resp := postJSON(t, via.focusURL()+"/get_token", getTokenBody(room, u, member, openID(t, u)))
		require.Equal(t, http.StatusOK, status, resp)
		require.Equal(t, "ws://"+lbAddr[site], resp["url"], "the token carries the site's entry URL")
		c := &siteClient{name: member, identity: focus.LiveKitIdentity(u.ID.String(), u.Client.DeviceID.String(), member), site: site,
			streams: map[string]*loadtest.StreamStats{}, data: map[string]int{}, left: map[string]time.Time{}}
		cb := lksdk.NewRoomCallback()
		cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
			st := &loadtest.StreamStats{}
			c.mu.Lock()
			c.streams[rp.Identity()+"/"+pub.Kind().String()] = st
			c.mu.Unlock()
			c.readers.Go(func() { loadtest.ReadTrack(track, st, time.Second) })
		}
		cb.OnDataPacket = func(data lksdk.DataPacket, params lksdk.DataReceiveParams) {
			c.mu.Lock()
			c.data[params.SenderIdentity]++
			c.mu.Unlock()
		}
		cb.OnParticipantDisconnected = func(rp *lksdk.RemoteParticipant) {
			c.mu.Lock()
			c.left[rp.Identity()] = time.Now()
			c.mu.Unlock()
		}
		c.room, err = lksdk.ConnectToRoomWithToken(resp["url"].(string), resp["jwt"].(string), cb, lksdk.WithAutoSubscribe(true))
		require.NoError(t, err)
		c.node = c.room.ServerInfo().GetNodeId()
		c.pub, err = loadtest.StartPublisher(c.room, loadtest.PublishOptions{Audio: true, Video: true, Layers: layers})
		require.NoError(t, err)
		return c
	}
	var live []*siteClient
	t.Cleanup(func() {
		for _, c := range live {
			c.close()
		}
	})
	// round joins fresh participants: three from site a, one from site b,
	// and waits until everyone receives everyone's audio and video.
	round := func(tag string) []*siteClient {
		t.Helper()
		for _, c := range live {
			c.close()
		}
		live = nil
		for i := range 4 {
			site := "a"
			if i == 3 {
				site = "b"
			}
			live = append(live, join(users[i], site, tag+"-"+strconv.Itoa(i)))
		}
		require.Eventually(t, func() bool {
			for _, c := range live {
				for _, o := range live {
					if o == c {
						continue
					}
					v, a := c.stream(o.identity+"/video"), c.stream(o.identity+"/audio")
					if v == nil || a == nil || v.Frames.Load() < 10 || a.Frames.Load() < 10 {
						return false
					}
				}
			}
			return true
		}, 45*time.Second, 50*time.Millisecond, "not everyone receives everyone's media (%s)", tag)
		var where []string
		for _, c := range live {
			where = append(where, c.name+"@"+c.node)
		}
		t.Logf("%s: participants on %s", tag, strings.Join(where, " "))
		return live
	}
	nodeByID := func(id string) *siteNode {
		for _, n := range nodes {
			if n.id == id {
				return n
			}
		}
		t.Fatalf("unknown node %q", id)
		return nil
	}

	// (1) + (4): media, data, intact, across nodes and the lossy IX.
	cs := round("r0")
	hosting := map[string]bool{}
	for _, c := range cs {
		hosting[c.node] = true
	}
	require.GreaterOrEqual(t, len(hosting), 2, "participants spread over nodes of both sites")
	for _, c := range cs {
		require.NoError(t, c.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("hello from "+c.identity)), lksdk.WithDataPublishReliable(true)))
	}
	require.Eventually(t, func() bool {
		for _, c := range cs {
			for _, o := range cs {
				if o != c && c.dataFrom(o.identity) == 0 {
					return false
				}
			}
		}
		return true
	}, 20*time.Second, 50*time.Millisecond, "data crosses every node pair")
	// The loss figure is taken over a window of media on the lossy IX: the
	// difference of two snapshots, so that packets still being recovered
	// (NACKed, not yet resent) at its end are balanced by those recovered
	// after its start, rather than counted as lost.
	var exp, got uint64
	snapshot := func(sign int) {
		for _, c := range cs {
			if c.site == "a" {
				e, g := c.stream(cs[3].identity + "/video").Loss()
				if sign < 0 {
					exp, got = exp-e, got-g
				} else {
					exp, got = exp+e, got+g
				}
			}
		}
	}
	snapshot(-1)
	time.Sleep(8 * time.Second) // media over the lossy IX for the loss figure
	snapshot(+1)
	for _, c := range cs {
		for _, o := range cs {
			if o == c {
				continue
			}
			for _, kind := range []string{"video", "audio"} {
				require.Zero(t, c.stream(o.identity+"/"+kind).Corrupt.Load(), "%s receives %s's %s intact", c.name, o.name, kind)
			}
		}
	}
	require.NotZero(t, exp)
	loss := float64(exp-got) / float64(exp)
	t.Logf("IX (b1 → site a, %.0f %% of relayed video dropped, %s delay): site-a subscribers expected %d packets of b's video, received %d: loss %.3f %%",
		ixLoss*100, ixDelay, exp, got, loss*100)
	require.Less(t, loss, 0.005, "NACK recovery across the IX keeps subscriber loss under 0.5 %")
	for _, n := range nodes {
		cpu, rss := procUsage(n.proc.Pid())
		t.Logf("node %s: CPU %.1f s since start, RSS %d MiB", n.id, cpu, rss>>20)
	}

	// back measures, per participant of gone, the time from t0 until it
	// receives fresh media from another participant and site b's client
	// receives fresh media from it (new subscriptions after its rejoin).
	back := func(cs []*siteClient, gone string, t0 time.Time, what string) []time.Duration {
		t.Helper()
		before := map[string]*loadtest.StreamStats{}
		var affected, others []*siteClient
		for _, c := range cs {
			if c.node == gone {
				affected = append(affected, c)
			} else {
				others = append(others, c)
			}
		}
		for _, c := range cs {
			for _, o := range cs {
				before[c.identity+">"+o.identity] = c.stream(o.identity + "/video")
			}
		}
		observer := cs[3]
		// All affected participants are watched at once: each one's time is
		// its own.
		var out []time.Duration
		backIn, backSeen := map[*siteClient]bool{}, map[*siteClient]bool{}
		deadline := t0.Add(30 * time.Second)
		for len(out) < len(affected) && time.Now().Before(deadline) {
			for _, c := range affected {
				if backIn[c] && backSeen[c] {
					continue
				}
				if in := c.stream(others[0].identity + "/video"); in != nil && in != before[c.identity+">"+others[0].identity] && in.Frames.Load() >= 3 {
					backIn[c] = true
				}
				if seen := observer.stream(c.identity + "/video"); seen != nil && seen != before[observer.identity+">"+c.identity] && seen.Frames.Load() >= 3 {
					backSeen[c] = true
				}
				if backIn[c] && backSeen[c] {
					out = append(out, time.Since(t0))
				}
			}
			time.Sleep(10 * time.Millisecond) // polling other processes' media
		}
		for _, c := range affected {
			if !backIn[c] || !backSeen[c] {
				var got []string
				for _, o := range cs {
					if st := c.stream(o.identity + "/video"); st != nil {
						got = append(got, fmt.Sprintf("%s: %d frames (new subscription: %t)", o.name, st.Frames.Load(), st != before[c.identity+">"+o.identity]))
					}
				}
				t.Logf("%s receives %s", c.name, strings.Join(got, ", "))
			}
			require.True(t, backIn[c], "%s (was on %s) does not receive %s's video again after %s", c.name, gone, others[0].name, what)
			require.True(t, backSeen[c], "%s does not receive the video of %s (was on %s) again after %s", observer.name, c.name, gone, what)
		}
		// The others' media carried on: the same subscriptions kept flowing.
		for _, c := range others {
			for _, o := range others {
				if o == c {
					continue
				}
				st := c.stream(o.identity + "/video")
				require.Same(t, before[c.identity+">"+o.identity], st, "%s kept its subscription to %s", c.name, o.name)
				n := st.Frames.Load()
				require.Eventually(t, func() bool { return st.Frames.Load() > n+10 }, 10*time.Second, 20*time.Millisecond,
					"%s still receives %s after %s", c.name, o.name, what)
			}
		}
		return out
	}

	// (2) kill -9 of a site-a node hosting participants, 3 runs.
	var killTimes, dropTimes []time.Duration
	dropsMissed := 0
	for run := 1; run <= 3; run++ {
		for _, n := range nodes {
			if !n.alive() {
				start(n)
			}
		}
		waitNodes(nodes[2], 3)
		cs := round(fmt.Sprintf("kill%d", run))
		victim := nodeByID(cs[0].node)
		t0 := time.Now()
		require.NoError(t, syscall.Kill(-victim.proc.Pid(), syscall.SIGKILL))
		<-victim.proc.Done()
		d := back(cs, victim.id, t0, "kill -9 of "+victim.id)
		t.Logf("kill %d: %s killed; its participants back with media after %v", run, victim.id, d)
		killTimes = append(killTimes, d...)
		// When the others saw the dead node's participants leave (a
		// measurement: a participant that rejoins elsewhere first may be
		// replaced without a leave, counted as missed).
		for _, o := range cs {
			if o.node == victim.id {
				continue
			}
			for _, c := range cs {
				if c.node != victim.id {
					continue
				}
				if dt, ok := o.leftAfter(c.identity, t0); ok {
					dropTimes = append(dropTimes, dt)
				} else {
					dropsMissed++
				}
			}
		}
	}
	logDistribution(t, "kill -9 → media again", killTimes)
	if len(dropTimes) > 0 {
		logDistribution(t, "kill -9 → the others see the dead node's participants leave", dropTimes)
	}
	t.Logf("kill -9: %d of %d departures seen as a leave", len(dropTimes), len(dropTimes)+dropsMissed)
	// The lossy IX was repaired by NACKs: b1's associations with the killed
	// nodes (closed when ICE consent failed) resent what site a asked for.
	var sent, rtx uint64
	require.Eventually(t, func() bool {
		sent, rtx = 0, 0
		for _, line := range strings.Split(nodes[2].proc.Log(), "\n") {
			if !strings.Contains(line, `"message":"relay association closed"`) {
				continue
			}
			var rec struct {
				VideoSent   uint64 `json:"video_sent"`
				Retransmits uint64 `json:"retransmits"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil {
				sent, rtx = sent+rec.VideoSent, rtx+rec.Retransmits
			}
		}
		return rtx > 0
	}, 10*time.Second, 100*time.Millisecond, "b1 retransmitted nothing over the lossy IX")
	t.Logf("b1's closed associations: %d video packets sent over the IX (%.0f %% dropped on purpose), %d retransmitted on NACK", sent, ixLoss*100, rtx)

	// (3) drain of a site-a node through `gxconf cluster drain`.
	for _, n := range nodes {
		if !n.alive() {
			start(n)
		}
	}
	waitNodes(nodes[2], 3)
	cs = round("drain")
	drained := nodeByID(cs[0].node)
	t0 := time.Now()
	out, err = exec.Command(gxconfBin, "cluster", "drain", "-url", drained.metricsURL()).CombinedOutput()
	require.NoError(t, err, "%s", out)
	drainTimes := back(cs, drained.id, t0, "drain of "+drained.id)
	logDistribution(t, "drain → media again", drainTimes)
	select {
	case <-drained.proc.Done():
		require.NoError(t, drained.proc.Stop(), "a drained node exits cleanly")
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop after draining", drained.id)
	}
	require.Contains(t, drained.proc.Log(), `"message":"drained"`)
}

// logDistribution logs p50/p95/max of ds (not asserted: wall-clock on a
// shared machine).
func logDistribution(t *testing.T, what string, ds []time.Duration) {
	t.Helper()
	if len(ds) == 0 {
		return
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration { return s[int(p*float64(len(s)-1)+0.5)].Round(10 * time.Millisecond) }
	t.Logf("%s over %d participants: p50 %v, p95 %v, max %v", what, len(s), q(0.5), q(0.95), s[len(s)-1].Round(10*time.Millisecond))
}

// procUsage is a process's CPU seconds (user+system) and resident bytes.
func procUsage(pid int) (float64, uint64) {
	var cpu float64
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			s, _ := strconv.ParseFloat(f[12], 64)
			cpu = (u + s) / 100 // USER_HZ
		}
	}
	var rss uint64
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				kb, _ := strconv.ParseUint(strings.Fields(line)[1], 10, 64)
				rss = kb << 10
			}
		}
	}
	return cpu, rss
}
