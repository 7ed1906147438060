package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Postgres is a throwaway PostgreSQL cluster on loopback.
type Postgres struct {
	// URI connects to the "gxconf" database.
	URI     string
	dir     string
	bin     string
	asUser  string
	logPath string
}

// postgresBin finds Debian's PostgreSQL server binaries.
func postgresBin() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", fmt.Errorf("PostgreSQL server not installed (Debian package postgresql; scripts/deps.sh installs it)")
	}
	return filepath.Dir(matches[len(matches)-1]), nil
}

// StartPostgres initialises a cluster in a new directory and starts it. As
// root, the server runs as the "postgres" user, since PostgreSQL refuses root.
//
// extraListen are further addresses to listen on; clients from their /16
// networks are trusted too (test network namespaces).
func StartPostgres(ctx context.Context, extraListen ...string) (*Postgres, error) {
	bin, err := postgresBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "gxconf-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{dir: dir, bin: bin, logPath: filepath.Join(dir, "postgres.log")}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		p.asUser = "postgres"
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if out, err := p.run(ctx, "initdb", "-D", data, "-U", "gxconf", "--auth=trust", "-E", "UTF8"); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if len(extraListen) > 0 {
		var hba strings.Builder
		for _, a := range extraListen {
			ip := net.ParseIP(a).To4()
			if ip == nil {
				return nil, fmt.Errorf("postgres: extra listen address %q is not IPv4", a)
			}
			fmt.Fprintf(&hba, "host all all %s/16 trust\n", ip.Mask(net.CIDRMask(16, 32)))
		}
		f, err := os.OpenFile(filepath.Join(data, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		_, err = f.WriteString(hba.String())
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	listen := strings.Join(append([]string{"127.0.0.1"}, extraListen...), ",")
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=%s -c fsync=off", port, dir, listen)
	if out, err := p.run(ctx, "pg_ctl", "-D", data, "-l", p.logPath, "-o", opts, "-w", "-t", "60", "start"); err != nil {
		return nil, fmt.Errorf("pg_ctl start: %w\n%s", err, out)
	}
	base := fmt.Sprintf("postgres://gxconf@127.0.0.1:%d/", port)
	if out, err := p.run(ctx, "createdb", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "gxconf", "gxconf"); err != nil {
		p.Stop()
		return nil, fmt.Errorf("createdb: %w\n%s", err, out)
	}
	p.URI = base + "gxconf?sslmode=disable"
	return p, nil
}

func (p *Postgres) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmdPath := filepath.Join(p.bin, name)
	var cmd *exec.Cmd
	if p.asUser != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", p.asUser, "--", cmdPath}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, cmdPath, args...)
	}
	cmd.Dir = p.dir
	return cmd.CombinedOutput()
}

// Stop shuts the cluster down and removes it.
func (p *Postgres) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = p.run(ctx, "pg_ctl", "-D", filepath.Join(p.dir, "data"), "-m", "fast", "-w", "stop")
	_ = os.RemoveAll(p.dir)
}

// Log returns the server log.
func (p *Postgres) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return strings.TrimSpace(string(b))
}
