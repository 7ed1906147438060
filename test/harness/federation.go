package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"
)

// Every federation has its namespace, so its listeners use fixed ports.
const (
	fedHTTPPort       = 8008 // Dendrite: client API (and federation, plain)
	fedFederationPort = 8448 // Dendrite: federation over TLS, the port in the server name
	fedASPort         = 9001
	fedFocusPort      = 9002
	fedSFUPort        = 7880
	fedUDPPort        = 7882
	fedMetricsPort    = 9464
	fedRelayPort      = 7890 // bridge relay (peering), on the IX address
	fedUplinkHost     = 10
)

// FederationNames are the rig's two federations, in order.
var FederationNames = [2]string{"fed-a", "fed-b"}

// FederationServerName is the Matrix server name of a federation: its name
// under .test with an explicit port. The explicit port makes server
// discovery (Matrix server-server API, "Resolving server names", step 2)
// a plain address lookup, which the namespace's hosts file answers: no
// /.well-known/matrix/server request to port 443 and no SRV query to the
// host's DNS resolver, whose answers (or time-outs) would depend on the
// machine the test runs on.
func FederationServerName(name string) string {
	return name + ".test:" + strconv.Itoa(fedFederationPort)
}

// FederationOptions configure StartFederations.
type FederationOptions struct {
	// Bin is the gxconf binary.
	Bin string
	// Dir receives every federation's configs, databases and logs.
	Dir string
	// Config is merged over both federations' generated gxconf configs
	// (nested maps merge), then PerFederation[name] over that one's.
	Config        map[string]any
	PerFederation map[string]map[string]any
	// Env is added to both gxconf processes' environment.
	Env []string
	// OpenIDTokenLifetime shortens the homeservers' OpenID tokens.
	OpenIDTokenLifetime time.Duration
}

// Federation is one federation of the rig: a Dendrite homeserver and a
// single-node gxconf (SQLite, embedded SFU) registered as its appservice,
// both inside the federation's network namespace. The embedded Stack's URLs
// (homeserver client API, focus, SFU, metrics) are on the namespace's uplink
// address, reachable from the test's (root) namespace.
type Federation struct {
	*Stack
	// Name is "fed-a" or "fed-b"; ServerName its Matrix server name.
	Name, ServerName string
	Site             *Site
	// UplinkAddr carries the clients' traffic; IXAddr the federation's
	// (Dendrite's TLS listener, which the peer's hosts file points at).
	UplinkAddr, IXAddr string
	dir                string
	bin                string
	env                []string
	cfg                map[string]any
	starts             int
}

// Federations is the two-federation rig (issue 10): namespaces fed-a and
// fed-b, each with an uplink to the root namespace (clients) and joined by
// a veth IX link; each namespace's hosts file (/etc/netns/<ns>/hosts) maps
// both server names to their IX addresses, so federation traffic —
// homeserver to homeserver, and a focus verifying a foreign user's OpenID
// token — crosses the IX and finds its peer by ordinary federation
// resolution (no server_overrides anywhere).
type Federations struct {
	Net  *TestNet
	A, B *Federation
}

// StartFederations builds the namespaces and starts both homeservers and
// gxconfs (needs root). On error everything started is torn down again;
// the error includes the failing process's log.
func StartFederations(ctx context.Context, opts FederationOptions) (f *Federations, err error) {
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	tn, err := NewTestNet()
	if err != nil {
		return nil, err
	}
	f = &Federations{Net: tn}
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Close())
			f = nil
		}
	}()
	feds := make([]*Federation, 2)
	for i, name := range FederationNames {
		site, err := tn.AddSite(name[len(name)-1:], i+1)
		if err != nil {
			return f, err
		}
		feds[i] = &Federation{Name: name, ServerName: FederationServerName(name), Site: site,
			dir: filepath.Join(dir, name), bin: opts.Bin, env: opts.Env}
		if feds[i].UplinkAddr, err = site.AddUplinkAddr(fedUplinkHost); err != nil {
			return f, err
		}
	}
	f.A, f.B = feds[0], feds[1]
	if err := tn.LinkIX(f.A.Site, f.B.Site); err != nil {
		return f, err
	}
	hosts := map[string]string{}
	for i, fed := range feds {
		if fed.IXAddr, err = fed.Site.AddIXAddr(i + 1); err != nil {
			return f, err
		}
		hosts[fed.Name+".test"] = fed.IXAddr
	}
	for _, fed := range feds {
		if err := fed.Site.SetHosts(hosts); err != nil {
			return f, err
		}
	}
	for _, fed := range feds {
		cfg := map[string]any{}
		mergeMaps(cfg, opts.Config)
		mergeMaps(cfg, opts.PerFederation[fed.Name])
		if err := fed.start(ctx, cfg, opts.OpenIDTokenLifetime); err != nil {
			return f, fmt.Errorf("%s: %w", fed.Name, err)
		}
	}
	return f, nil
}

// start writes the federation's gxconf config and registration, then starts
// Dendrite and gxconf in its namespace.
func (fed *Federation) start(ctx context.Context, overrides map[string]any, openIDLifetime time.Duration) error {
	if err := os.MkdirAll(fed.dir, 0o755); err != nil {
		return err
	}
	at := func(port int) string { return net.JoinHostPort(fed.UplinkAddr, strconv.Itoa(port)) }
	hsURL := "http://" + at(fedHTTPPort)
	s := &Stack{
		FocusURL:         "http://" + at(fedFocusPort),
		MetricsURL:       "http://" + at(fedMetricsPort),
		DBDriver:         "sqlite3",
		DBURI:            "file:" + filepath.Join(fed.dir, "gxconf.db") + "?mode=ro",
		ConfigPath:       filepath.Join(fed.dir, "gxconf.yaml"),
		RegistrationPath: filepath.Join(fed.dir, "registration.yaml"),
		BotID:            id.NewUserID("gxconf", fed.ServerName),
		SFUURL:           "ws://" + at(fedSFUPort),
		SFUKey:           "gxconf-" + fed.Name,
		SFUSecret:        randomHex(24),
	}
	fed.cfg = map[string]any{
		"homeserver": map[string]any{"domain": fed.ServerName, "address": hsURL},
		"database":   map[string]any{"uri": "file:" + filepath.Join(fed.dir, "gxconf.db") + "?_txlock=immediate"},
		"appservice": map[string]any{"listen": at(fedASPort)},
		"focus": map[string]any{
			"listen": at(fedFocusPort),
			// Both homeservers' federation certificates are self-signed.
			"openid": map[string]any{"dangerously_skip_tls_verify": true},
			// Tests send many requests from one address.
			"rate_limit": map[string]any{"per_ip": map[string]any{"rate": 1000, "burst": 1000}, "per_user": map[string]any{"rate": 1000, "burst": 1000}},
		},
		"sfu": map[string]any{
			"listen": at(fedSFUPort),
			"keys":   map[string]any{s.SFUKey: s.SFUSecret},
			"rtc":    map[string]any{"udp_port": fedUDPPort, "tcp_port": 0, "node_ip": fed.UplinkAddr},
		},
		"metrics": map[string]any{"listen": at(fedMetricsPort)},
		"logging": map[string]any{"level": "debug"},
	}
	mergeMaps(fed.cfg, overrides)
	if err := fed.writeConfig(s.ConfigPath); err != nil {
		return err
	}
	gen := exec.CommandContext(ctx, fed.bin, "generate-registration", "-c", s.ConfigPath, "-r", s.RegistrationPath)
	if out, err := gen.CombinedOutput(); err != nil {
		return fmt.Errorf("generate-registration: %w\n%s", err, out)
	}
	hsDir := filepath.Join(fed.dir, "dendrite")
	if err := os.MkdirAll(hsDir, 0o755); err != nil {
		return err
	}
	var err error
	s.Dendrite, err = StartDendrite(ctx, DendriteOptions{
		Dir:                 hsDir,
		ServerName:          fed.ServerName,
		Host:                fed.UplinkAddr,
		Port:                fedHTTPPort,
		Netns:               fed.Site.Name,
		FederationTLS:       net.JoinHostPort(fed.IXAddr, strconv.Itoa(fedFederationPort)),
		Registrations:       []string{s.RegistrationPath},
		OpenIDTokenLifetime: openIDLifetime,
		// Federation is what these rigs test, and a transaction that
		// failed (backing the destination off) is logged only at debug.
		LogLevel: "debug",
	})
	if err != nil {
		// The log is in the test's temporary directory, gone by the time
		// anyone reads the error.
		return fmt.Errorf("%w\n%s", err, (&Dendrite{Dir: hsDir}).Log())
	}
	fed.Stack = s
	return fed.startGxconf(ctx)
}

func (fed *Federation) writeConfig(path string) error {
	raw, err := yaml.Marshal(fed.cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o600)
}

func (fed *Federation) startGxconf(ctx context.Context) error {
	fed.starts++
	p, err := StartGxconfIn(ctx, fed.Site.Name, fed.bin, fed.ConfigPath, fed.RegistrationPath,
		filepath.Join(fed.dir, fmt.Sprintf("gxconf-%d.log", fed.starts)), fed.FocusURL+"/healthz", fed.env...)
	if err != nil {
		return err
	}
	fed.Gxconf = p
	return nil
}

// RestartGxconf stops the federation's gxconf gracefully, merges overrides
// into its config and starts it again on the same database. It returns the
// stop's error (an unclean exit) joined with the start's.
func (fed *Federation) RestartGxconf(ctx context.Context, overrides map[string]any) error {
	stopErr := fed.Gxconf.Stop()
	mergeMaps(fed.cfg, overrides)
	if err := fed.writeConfig(fed.ConfigPath); err != nil {
		return errors.Join(stopErr, err)
	}
	return errors.Join(stopErr, fed.startGxconf(ctx))
}

// PeeringOptions make the rig's two deployments peers of each other
// (issue 10 item 2).
type PeeringOptions struct {
	// Secret is the peer secret both deployments share (>= 32 bytes).
	Secret string
	// Levels[name] are the confidentiality levels of name's rooms its peer
	// may relay; default public and kritis.
	Levels map[string][]string
}

// PeeringConfig is fed's gxconf config for peering with the other
// federation of the rig: its bridge relay listens on its IX address, the
// peer's relay on the peer's IX address, and the peer's users are sent to
// the peer's SFU URL (on its uplink, where the peer's users connect).
// Merge it with RestartGxconf (or FederationOptions.PerFederation).
func (f *Federations) PeeringConfig(fed *Federation, opts PeeringOptions) map[string]any {
	other := f.A
	if fed == f.A {
		other = f.B
	}
	levels := opts.Levels[fed.Name]
	if levels == nil {
		levels = []string{"public", "kritis"}
	}
	return map[string]any{
		"bridge": map[string]any{"listen": net.JoinHostPort(fed.IXAddr, strconv.Itoa(fedRelayPort))},
		"peering": map[string]any{
			"name": fed.Name,
			"peers": map[string]any{other.Name: map[string]any{
				"relay_address": net.JoinHostPort(other.IXAddr, strconv.Itoa(fedRelayPort)),
				"url":           other.SFUURL,
				"homeservers":   []string{other.ServerName},
				"levels":        levels,
				"secret":        opts.Secret,
			}},
		},
	}
}

// IXInterface is the federation's end of the IX link (in its namespace).
func (fed *Federation) IXInterface() string { return fed.Site.ix }

// IXBytes returns the bytes the federation's IX interface received and
// sent so far (the kernel's counters: every frame on the link, headers
// included).
func (fed *Federation) IXBytes() (rx, tx uint64, err error) {
	out, err := exec.Command("ip", "-n", fed.Site.Name, "-s", "-j", "link", "show", "dev", fed.Site.ix).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("ip -s link show %s: %w", fed.Site.ix, err)
	}
	var links []struct {
		Stats64 struct {
			RX, TX struct {
				Bytes uint64 `json:"bytes"`
			}
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return 0, 0, fmt.Errorf("cannot read the counters of %s: %v: %s", fed.Site.ix, err, out)
	}
	return links[0].Stats64.RX.Bytes, links[0].Stats64.TX.Bytes, nil
}

// SetIX takes the IX link down or up (on the federation's end, which takes
// the carrier of the other end with it). Routes through the link go with
// it: add them again after it is up.
func (fed *Federation) SetIX(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ipCmd("-n", fed.Site.Name, "link", "set", fed.Site.ix, state)
}

// RouteOverIX lets processes in fed's namespace reach to's uplink address
// (its SFU, focus, homeserver client API) across the IX instead of through
// the root namespace, as a federation's own users would reach the other
// federation. to accepts the packets as its own address; its answers go
// back over the IX, where fed's source address lives.
func (fed *Federation) RouteOverIX(to *Federation) error {
	return ipCmd("-n", fed.Site.Name, "route", "replace", to.UplinkAddr+"/32", "via", to.IXAddr)
}

// GxconfCPU returns the CPU time (user and system) the federation's
// gxconf has used so far, from /proc (`ip netns exec` execs gxconf, so the
// process is gxconf itself).
func (fed *Federation) GxconfCPU() (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", fed.Gxconf.Pid()))
	if err != nil {
		return 0, err
	}
	// The fields after the command name (which may contain spaces): state
	// is field 3 of proc(5), utime and stime fields 14 and 15.
	i := strings.LastIndexByte(string(raw), ')')
	f := strings.Fields(string(raw[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("cannot parse /proc/%d/stat", fed.Gxconf.Pid())
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	// USER_HZ is 100 on every Linux ABI this runs on.
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// BotClient is a client of the federation's homeserver acting as gxconf's
// bot (with the registration's as_token): it reads rooms as that
// homeserver currently sees them.
func (fed *Federation) BotClient() (*mautrix.Client, error) {
	reg, err := appservice.LoadRegistration(fed.RegistrationPath)
	if err != nil {
		return nil, err
	}
	return mautrix.NewClient(fed.Dendrite.URL, fed.BotID, reg.AppToken)
}

// Logs returns the tails of the federation's gxconf and Dendrite logs.
func (fed *Federation) Logs() string {
	var out string
	if fed.Gxconf != nil {
		log := fed.Gxconf.Log()
		if len(log) > 20000 {
			log = "…" + log[len(log)-20000:]
		}
		out += "== " + fed.Name + " gxconf\n" + log
	}
	if fed.Dendrite != nil {
		out += "== " + fed.Name + " dendrite\n" + fed.Dendrite.Log()
		out += "== " + fed.Name + " dendrite: federation lines, warnings and errors\n" + fed.Dendrite.FederationLog()
	}
	return out
}

// KeepLogs copies both federations' whole gxconf and Dendrite logs into a
// new directory under $TMPDIR (gxconf-federations-*) and returns its path:
// the failure message carries tails, the rig's directory is the test's and
// removed with it.
func (f *Federations) KeepLogs() (string, error) {
	dir, err := os.MkdirTemp("", "gxconf-federations-")
	if err != nil {
		return "", err
	}
	var errs []error
	for _, fed := range []*Federation{f.A, f.B} {
		if fed == nil || fed.Stack == nil {
			continue
		}
		if fed.Gxconf != nil {
			errs = append(errs, os.WriteFile(filepath.Join(dir, fed.Name+"-gxconf.log"), []byte(fed.Gxconf.Log()), 0o600))
		}
		if fed.Dendrite != nil {
			errs = append(errs, fed.Dendrite.KeepLog(dir, fed.Name+"-dendrite"))
		}
	}
	return dir, errors.Join(errs...)
}

// Close stops both gxconfs (gracefully; their exit errors are returned),
// both homeservers, and removes the namespaces and their hosts files.
func (f *Federations) Close() error {
	var errs []error
	for _, fed := range []*Federation{f.A, f.B} {
		if fed == nil || fed.Stack == nil {
			continue
		}
		if fed.Gxconf != nil {
			select {
			case <-fed.Gxconf.Done():
			default:
				if err := fed.Gxconf.Stop(); err != nil {
					errs = append(errs, fmt.Errorf("%s gxconf: %w", fed.Name, err))
				}
			}
		}
		fed.Dendrite.Stop()
	}
	if err := f.Net.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
