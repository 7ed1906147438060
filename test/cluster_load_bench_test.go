package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// BenchmarkClusterLoad measures one room spanning two gxconf nodes on
// loopback: Debian's redis-server, a throwaway PostgreSQL, two nodes with
// the bridge (no homeserver: the load tool mints SFU tokens with the shared
// sfu.keys), then `gxconf loadtest` in-process against both URLs with the
// nodes' PIDs and metrics listeners. Each iteration is one load run in a
// fresh room. Without -race (gxconf is built like the test binary):
//
//	GXTEST_LOAD_SUBSCRIBERS=1000 go test -run XXX -bench ClusterLoad -benchtime 1x -timeout 30m -v ./test/
//
// Parameters (GXTEST_LOAD_*, defaults in brackets): PUBLISHERS [1],
// SUBSCRIBERS [20], NODES [2] (1: only node A is given to the load tool,
// node B idles: the baseline without a hop), SPREAD_PUBLISHERS [false],
// SUBSCRIBER_OFFSET [0] (1: the first subscriber joins node B),
// PUBLISHERS_ONLY [false] (publishers subscribe to nothing),
// JOIN_RATE [20], WARMUP [10s], DURATION [30s], FPS [15], QUALITY [low],
// NO_AUDIO, NO_VIDEO [false], LOG_LEVEL [warn] (the nodes' logging.level),
// LOG_DIR [the benchmark's temporary directory] (where the nodes' logs stay),
// PROFILE_DIR [none] (the nodes serve /debug/pprof/ on their metrics
// listeners and their CPU profiles of the run, in consecutive 30 s pieces,
// are written there as node-a-01.pprof, …; profile the load tool itself
// with -test.cpuprofile).
func BenchmarkClusterLoad(b *testing.B) {
	if raceEnabled {
		b.Skip("a measurement: run without -race")
	}
	env := loadEnv{b: b}
	opts := loadtest.Options{
		Publishers:       env.int("PUBLISHERS", 1),
		Subscribers:      env.int("SUBSCRIBERS", 20),
		SpreadPublishers: env.bool("SPREAD_PUBLISHERS"),
		SubscriberOffset: env.int("SUBSCRIBER_OFFSET", 0),
		PublishersOnly:   env.bool("PUBLISHERS_ONLY"),
		JoinRate:         float64(env.int("JOIN_RATE", 20)),
		Warmup:           env.duration("WARMUP", 10*time.Second),
		Duration:         env.duration("DURATION", 30*time.Second),
		FPS:              env.int("FPS", 15),
		Quality:          env.str("QUALITY", "low"),
		NoAudio:          env.bool("NO_AUDIO"),
		NoVideo:          env.bool("NO_VIDEO"),
	}
	useNodes := env.int("NODES", 2)
	require.Contains(b, []int{1, 2}, useNodes, "GXTEST_LOAD_NODES")
	logLevel := env.str("LOG_LEVEL", "warn")
	logDir := env.str("LOG_DIR", "")
	profileDir := env.str("PROFILE_DIR", "")

	ctx := context.Background()
	dir := b.TempDir()
	rds, err := harness.StartRedis(ctx, dir)
	require.NoError(b, err)
	b.Cleanup(rds.Stop)
	pg, err := harness.StartPostgres(ctx)
	require.NoError(b, err)
	b.Cleanup(pg.Stop)

	key, secret := "load", "load-secret-of-this-benchmark-0123456789abcdef"
	relaySecret := "relay-secret-of-this-benchmark-0123456789abcdef"
	free := func() int {
		p, err := harness.FreePort()
		require.NoError(b, err)
		return p
	}
	// Nobody listens on the homeserver address: the appservice's bot set-up
	// fails (logged), the SFU and the bridge do not need it.
	homeserver := fmt.Sprintf("http://127.0.0.1:%d", free())
	type node struct {
		id, sfuURL, focusURL, metricsURL string
		proc                             *harness.Process
	}
	var nodes []*node
	var regPath string
	for _, id := range []string{"node-a", "node-b"} {
		sfuPort, focusPort, metricsPort := free(), free(), free()
		udp, err := harness.FreeUDPPort()
		require.NoError(b, err)
		n := &node{id: id, sfuURL: fmt.Sprintf("ws://127.0.0.1:%d", sfuPort),
			focusURL: fmt.Sprintf("http://127.0.0.1:%d", focusPort), metricsURL: fmt.Sprintf("http://127.0.0.1:%d", metricsPort)}
		cfg := map[string]any{
			"homeserver": map[string]any{"domain": "localhost", "address": homeserver},
			"database":   map[string]any{"type": "postgres", "uri": pg.URI},
			"appservice": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", free())},
			"focus":      map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", focusPort)},
			"sfu": map[string]any{
				"listen": fmt.Sprintf("127.0.0.1:%d", sfuPort),
				// server_info.node_id: the load report names the nodes.
				"node_id": id,
				"keys":    map[string]any{key: secret},
				"rtc":     map[string]any{"udp_port": udp, "tcp_port": 0, "node_ip": "127.0.0.1"},
			},
			"cluster": map[string]any{
				"node_id": id, "site": "local", "relay_address": fmt.Sprintf("127.0.0.1:%d", free()),
				"redis": map[string]any{"address": rds.Addr},
				// Placement is not used (the tokens name no node), but the
				// node's published limits must not call it full.
				"limits": map[string]any{"max_cpu": 0, "max_participants": 100000, "max_tracks": 100000},
			},
			"bridge":  map[string]any{"secret": relaySecret},
			"metrics": map[string]any{"listen": strings.TrimPrefix(n.metricsURL, "http://"), "pprof": profileDir != ""},
			"logging": map[string]any{"level": logLevel},
		}
		raw, err := yaml.Marshal(cfg)
		require.NoError(b, err)
		cfgPath := filepath.Join(dir, id+".yaml")
		require.NoError(b, os.WriteFile(cfgPath, raw, 0o600))
		if regPath == "" {
			regPath = filepath.Join(dir, "registration.yaml")
			out, err := exec.Command(gxconfBin, "generate-registration", "-c", cfgPath, "-r", regPath).CombinedOutput()
			require.NoError(b, err, "%s", out)
		}
		logPath := filepath.Join(dir, id+".log")
		if logDir != "" {
			logPath = filepath.Join(logDir, id+".log")
		}
		n.proc, err = harness.StartGxconf(ctx, gxconfBin, cfgPath, regPath, logPath, n.focusURL+"/healthz")
		require.NoError(b, err)
		b.Cleanup(func() {
			if err := n.proc.Stop(); err != nil {
				b.Logf("%s: %v; log:\n%s", id, err, tail(n.proc.Log(), 4000))
			}
		})
		nodes = append(nodes, n)
	}
	// Both nodes see each other before anyone joins, so the bridge links
	// the room as soon as it exists on both.
	require.Eventually(b, func() bool {
		for _, n := range nodes {
			if nodesIn(n.metricsURL) != len(nodes) {
				return false
			}
		}
		return true
	}, 20*time.Second, 100*time.Millisecond)

	for _, n := range nodes[:useNodes] {
		opts.URLs = append(opts.URLs, n.sfuURL)
		opts.SFUPids = append(opts.SFUPids, n.proc.Pid())
		opts.MetricsURLs = append(opts.MetricsURLs, n.metricsURL)
	}
	opts.APIKey, opts.APISecret = key, secret
	b.Logf("load average before the run: %s", loadavg())
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	b.ResetTimer()
	for i := range b.N {
		opts.RoomPrefix = fmt.Sprintf("cluster-load-%d", i)
		var out strings.Builder
		stopProfiles := func() {}
		if profileDir != "" {
			var urls []string
			for _, n := range nodes {
				urls = append(urls, n.metricsURL)
			}
			stopProfiles = profileNodes(b, urls, filepath.Join(profileDir, opts.RoomPrefix))
		}
		rep, err := loadtest.Run(ctx, opts, &out, log)
		stopProfiles()
		require.NoError(b, err)
		b.Logf("\n%s", out.String())
		b.ReportMetric(float64(rep.JoinP99)/1e6, "join-p99-ms")
		b.ReportMetric(rep.LossPercent, "loss-%")
		b.ReportMetric(float64(rep.TracksSubscribed)/float64(max(rep.TracksExpected, 1))*100, "tracks-%")
		b.ReportMetric(rep.GeneratorCPUPercent, "generator-cpu-%")
		if rep.SFUMeasured {
			b.ReportMetric(rep.MicrosPerPacket, "sfu-us/pkt")
		}
		for k, kind := range []string{"audio", "video"} {
			same, cross := rep.Latency[0][k], rep.Latency[1][k]
			if same.Frames > 0 {
				b.ReportMetric(float64(same.P99)/1e6, kind+"-same-p99-ms")
			}
			if same.Frames > 0 && cross.Frames > 0 {
				b.ReportMetric(float64(cross.P99)/1e6, kind+"-cross-p99-ms")
			}
		}
	}
	b.StopTimer()
	for _, n := range nodes {
		b.Logf("%s: %d bytes of log, last lines:\n%s", n.id, len(n.proc.Log()), tail(n.proc.Log(), 1500))
	}
}

// profileNodes writes consecutive 30 s CPU profiles of each node (metrics
// listener URLs, node-a first) to prefix-node-a-01.pprof, … until the
// returned function is called (the piece then running is dropped).
func profileNodes(b *testing.B, metricsURLs []string, prefix string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, len(metricsURLs))
	for i, u := range metricsURLs {
		go func() {
			defer func() { done <- struct{}{} }()
			for piece := 1; ctx.Err() == nil; piece++ {
				path := fmt.Sprintf("%s-node-%c-%02d.pprof", prefix, 'a'+i, piece)
				if err := fetchProfile(ctx, u, path); err != nil && ctx.Err() == nil {
					b.Logf("profile %s: %v", path, err)
					return
				}
			}
		}()
	}
	return func() {
		cancel()
		for range metricsURLs {
			<-done
		}
	}
}

// fetchProfile saves one 30 s CPU profile (nothing when ctx is cancelled
// first).
func fetchProfile(ctx context.Context, metricsURL, path string) error {
	req, err := http.NewRequest(http.MethodGet, metricsURL+"/debug/pprof/profile?seconds=30", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}

// nodesIn counts the live nodes a node's /cluster/status lists (0 when it
// cannot be read).
func nodesIn(metricsURL string) int {
	resp, err := http.Get(metricsURL + "/cluster/status")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var st cluster.Status
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil {
		return 0
	}
	n := 0
	for _, s := range st.Sites {
		n += len(s.Nodes)
	}
	return n
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(string(b))
}

// loadEnv reads the benchmark's GXTEST_LOAD_* parameters.
type loadEnv struct{ b *testing.B }

func (e loadEnv) str(name, def string) string {
	if v, ok := os.LookupEnv("GXTEST_LOAD_" + name); ok {
		return v
	}
	return def
}

func (e loadEnv) int(name string, def int) int {
	v := e.str(name, strconv.Itoa(def))
	n, err := strconv.Atoi(v)
	require.NoError(e.b, err, "GXTEST_LOAD_%s", name)
	return n
}

func (e loadEnv) bool(name string) bool {
	v := e.str(name, "false")
	t, err := strconv.ParseBool(v)
	require.NoError(e.b, err, "GXTEST_LOAD_%s", name)
	return t
}

func (e loadEnv) duration(name string, def time.Duration) time.Duration {
	v := e.str(name, def.String())
	d, err := time.ParseDuration(v)
	require.NoError(e.b, err, "GXTEST_LOAD_%s", name)
	return d
}
