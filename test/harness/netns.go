package harness

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// TestNet is a set of network namespaces a test creates (needs root and
// iproute2): sites, each joined to the root namespace by an uplink veth
// (root side 10.N.i.1, site side addresses 10.N.i.x), and IX links between
// sites (10.N.99.x). N and the names are random per run, so parallel runs
// do not collide; only these addresses carry traffic.
type TestNet struct {
	ID    string
	Octet int
	sites []*Site
	links []string // root-side interfaces
}

// Site is one network namespace of a TestNet.
type Site struct {
	net *TestNet
	// Name is the namespace's name (for `ip netns exec`).
	Name  string
	index int
	// Gateway is the root namespace's address on the uplink.
	Gateway string
	uplink  string // site-side interface
	ix      string // site-side IX interface, once linked
}

// markerDir records which process owns which run id, so a later run can
// remove namespaces a crashed run (a panic skips t.Cleanup) left behind.
var markerDir = filepath.Join(os.TempDir(), "gxconf-testnet")

// sweep deletes the namespaces of runs whose process is gone.
func sweep() {
	entries, _ := os.ReadDir(markerDir)
	if len(entries) == 0 {
		return
	}
	list, _ := exec.Command("ip", "netns", "list").Output()
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(markerDir, e.Name()))
		pid, perr := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil || perr != nil || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		for _, line := range strings.Split(string(list), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "gx"+e.Name()) {
				// Processes the crashed run started inside (gxconf,
				// haproxy) keep the namespace's veths alive.
				pids, _ := exec.Command("ip", "netns", "pids", f[0]).Output()
				for _, p := range strings.Fields(string(pids)) {
					if pid, err := strconv.Atoi(p); err == nil {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				_ = ipCmd("netns", "del", f[0])
			}
		}
		removeHostsDirs(e.Name())
		_ = os.Remove(filepath.Join(markerDir, e.Name()))
	}
}

// netnsEtc is where `ip netns exec` finds per-namespace files, which it
// bind-mounts over their /etc counterparts (ip-netns(8)).
const netnsEtc = "/etc/netns"

// removeHostsDirs deletes the /etc/netns directories of run id's namespaces.
func removeHostsDirs(runID string) {
	dirs, _ := filepath.Glob(filepath.Join(netnsEtc, "gx"+runID+"*"))
	for _, d := range dirs {
		_ = os.RemoveAll(d)
	}
}

// NewTestNet picks a free 10.N.0.0/16 and a run id (after removing what
// crashed runs left).
func NewTestNet() (*TestNet, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("iproute2 (ip) not found: %w", err)
	}
	sweep()
	id := make([]byte, 3)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	used, _ := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	routes, _ := exec.Command("ip", "-4", "route", "show").Output()
	for range 50 {
		n, err := rand.Int(rand.Reader, big.NewInt(200))
		if err != nil {
			return nil, err
		}
		octet := 30 + int(n.Int64())
		prefix := fmt.Sprintf(" 10.%d.", octet)
		if !strings.Contains(string(used), prefix) && !strings.Contains(" "+string(routes), prefix) {
			n := &TestNet{ID: hex.EncodeToString(id)[:5], Octet: octet}
			if err := os.MkdirAll(markerDir, 0o700); err != nil {
				return nil, err
			}
			return n, os.WriteFile(filepath.Join(markerDir, n.ID), []byte(strconv.Itoa(os.Getpid())), 0o600)
		}
	}
	return nil, errors.New("no free 10.N.0.0/16 for the test network")
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Addr is 10.N.sub.host.
func (n *TestNet) Addr(sub, host int) string { return fmt.Sprintf("10.%d.%d.%d", n.Octet, sub, host) }

// AddSite creates namespace "gx<id><name>" with its uplink: the root side
// gets 10.N.index.1/24.
func (n *TestNet) AddSite(name string, index int) (*Site, error) {
	s := &Site{net: n, Name: "gx" + n.ID + name, index: index, Gateway: n.Addr(index, 1),
		uplink: "gx" + n.ID + name + "u"}
	root := "gx" + n.ID + name + "r"
	if err := ipCmd("netns", "add", s.Name); err != nil {
		return nil, err
	}
	n.sites = append(n.sites, s)
	steps := [][]string{
		{"-n", s.Name, "link", "set", "lo", "up"},
		{"link", "add", root, "type", "veth", "peer", "name", s.uplink},
	}
	for _, st := range steps {
		if err := ipCmd(st...); err != nil {
			return nil, err
		}
	}
	n.links = append(n.links, root)
	for _, st := range [][]string{
		{"link", "set", s.uplink, "netns", s.Name},
		{"addr", "add", s.Gateway + "/24", "dev", root},
		{"link", "set", root, "up"},
		{"-n", s.Name, "link", "set", s.uplink, "up"},
	} {
		if err := ipCmd(st...); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// AddUplinkAddr gives the site 10.N.index.host on its uplink and returns it.
func (s *Site) AddUplinkAddr(host int) (string, error) {
	a := s.net.Addr(s.index, host)
	return a, ipCmd("-n", s.Name, "addr", "add", a+"/24", "dev", s.uplink)
}

// RouteTo lets the site reach an address of the root namespace (another
// site's gateway, where shared services listen) through its own uplink.
func (s *Site) RouteTo(rootAddr string) error {
	return ipCmd("-n", s.Name, "route", "add", rootAddr+"/32", "via", s.Gateway)
}

// LinkIX joins two sites with a veth "IX link" on 10.N.99.0/24; the root
// namespace has no address on it.
func (n *TestNet) LinkIX(a, b *Site) error {
	a.ix, b.ix = "gx"+n.ID+"x"+a.Name[len(a.Name)-1:], "gx"+n.ID+"x"+b.Name[len(b.Name)-1:]
	for _, st := range [][]string{
		{"link", "add", a.ix, "netns", a.Name, "type", "veth", "peer", "name", b.ix, "netns", b.Name},
		{"-n", a.Name, "link", "set", a.ix, "up"},
		{"-n", b.Name, "link", "set", b.ix, "up"},
	} {
		if err := ipCmd(st...); err != nil {
			return err
		}
	}
	return nil
}

// AddIXAddr gives the site 10.N.99.host on its IX link and returns it.
func (s *Site) AddIXAddr(host int) (string, error) {
	if s.ix == "" {
		return "", errors.New("site has no IX link")
	}
	a := s.net.Addr(99, host)
	return a, ipCmd("-n", s.Name, "addr", "add", a+"/24", "dev", s.ix)
}

// SetHosts writes the namespace's own hosts file (/etc/netns/<name>/hosts):
// processes started with `ip netns exec` (Command, StartGxconfIn,
// DendriteOptions.Netns) resolve names with it instead of /etc/hosts.
// localhost is kept; names maps host names to addresses.
func (s *Site) SetHosts(names map[string]string) error {
	dir := filepath.Join(netnsEtc, s.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for _, name := range slices.Sorted(maps.Keys(names)) {
		fmt.Fprintf(&b, "%s\t%s\n", names[name], name)
	}
	return os.WriteFile(filepath.Join(dir, "hosts"), []byte(b.String()), 0o644)
}

// Command runs name in the site's namespace.
func (s *Site) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", s.Name, name}, args...)...)
}

// Close deletes the namespaces (their veths go with them) and any root-side
// interface left. Stop the processes running inside first.
func (n *TestNet) Close() error {
	var errs []error
	for _, s := range n.sites {
		if err := ipCmd("netns", "del", s.Name); err != nil {
			errs = append(errs, err)
		}
	}
	for _, l := range n.links {
		if exec.Command("ip", "link", "show", l).Run() == nil {
			_ = ipCmd("link", "del", l)
		}
	}
	removeHostsDirs(n.ID)
	if len(errs) == 0 {
		_ = os.Remove(filepath.Join(markerDir, n.ID))
	}
	return errors.Join(errs...)
}
