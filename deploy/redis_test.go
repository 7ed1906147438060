package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// redisValues renders the bundled Redis with a password Secret.
var redisValues = []string{"--set", "nodes.replicas=2", "--set", "nodes.addresses={192.0.2.1,192.0.2.2}",
	"--set", "database.type=postgres", "--set", "secrets.databaseURI.existingSecret=db",
	"--set", "networkPolicy.database.cidrs={10.0.0.0/8}", "--set", "cluster.enabled=true",
	"--set", "secrets.sfuKey.existingSecret=keys", "--set", "redis.mode=bundled",
	"--set", "redis.bundled.passwordSecret.name=gxconf-redis"}

// varRef is a $(VAR) reference Kubernetes expands in command and args.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// TestSecretsNotOnCommandLines: no container's command or args carries a
// value from a Secret (expanded $(VAR) of a secretKeyRef variable): the
// process list (ps, /proc/<pid>/cmdline) is readable far more widely than
// the Secret. The Redis password reaches redis-server and gxconf as files.
func TestSecretsNotOnCommandLines(t *testing.T) {
	renders := map[string][]obj{"redis with password": render(t, "minimal", redisValues...)}
	for _, set := range valueSets(t) {
		renders[set] = render(t, set)
	}
	for name, objs := range renders {
		t.Run(name, func(t *testing.T) {
			for _, w := range podTemplates(objs) {
				spec := get(w, "spec", "template", "spec")
				for _, c := range append(list(spec, "initContainers"), list(spec, "containers")...) {
					cid := w.name() + "/" + str(c, "name")
					fromSecret := map[string]bool{}
					for _, e := range list(c, "env") {
						if get(e, "valueFrom", "secretKeyRef") != nil {
							fromSecret[str(e, "name")] = true
						}
					}
					for _, a := range append(list(c, "command"), list(c, "args")...) {
						s, _ := a.(string)
						for _, m := range varRef.FindAllStringSubmatch(s, -1) {
							require.False(t, fromSecret[m[1]], "%s: the Secret's value of %s is on the command line", cid, m[1])
						}
					}
					if str(c, "name") == "redis" {
						require.Empty(t, fromSecret, "%s: the Redis password comes from a file, not the environment", cid)
					}
				}
			}
		})
	}
	objs := renders["redis with password"]
	redis := find(objs, "Deployment", "gx-gxconf-redis")
	require.NotNil(t, redis)
	mountedFile(t, redis, "/run/secrets/redis/password", "gxconf-redis", "password")
	sts := find(objs, "StatefulSet", "gx-gxconf")
	for i, doc := range nodeConfigs(t, objs) {
		path := str(doc, "cluster", "redis", "password_file")
		require.NotEmpty(t, path, "node %d reads the Redis password from a file", i)
		mountedFile(t, sts, path, "gxconf-redis", "password")
	}
}

// TestRedisPasswordReachesRedis runs the bundled Redis container's start
// command with /bin/sh and a stand-in redis-server: the config file it writes
// holds requirepass with the Secret's password (quoted as redis.conf reads
// it), and no argv holds the password.
func TestRedisPasswordReachesRedis(t *testing.T) {
	sh, err := exec.LookPath("sh")
	require.NoError(t, err)
	objs := render(t, "minimal", redisValues...)
	redis := find(objs, "Deployment", "gx-gxconf-redis")
	require.NotNil(t, redis)
	c := get(redis, "spec", "template", "spec", "containers", 0)
	var argv []string
	for _, a := range append(list(c, "command"), list(c, "args")...) {
		argv = append(argv, a.(string))
	}
	require.GreaterOrEqual(t, len(argv), 3)
	require.Equal(t, []string{"/bin/sh", "-ec"}, argv[:2], "redis-server is started by a shell that writes its config file")

	for _, password := range []string{`plain-0123456789abcdef`, `with "quotes" and \back\slashes, $dollar 'single' #hash`} {
		dir := t.TempDir()
		secrets, auth, bin := filepath.Join(dir, "secrets"), filepath.Join(dir, "auth"), filepath.Join(dir, "bin")
		for _, d := range []string{secrets, auth, bin} {
			require.NoError(t, os.MkdirAll(d, 0o700))
		}
		require.NoError(t, os.WriteFile(filepath.Join(secrets, "password"), []byte(password+"\n"), 0o600))
		// The stand-in records its arguments and the config file it was given.
		stub := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + filepath.Join(dir, "argv") + "\ncat \"$1\" > " + filepath.Join(dir, "conf") + "\n"
		require.NoError(t, os.WriteFile(filepath.Join(bin, "redis-server"), []byte(stub), 0o700))

		script := strings.NewReplacer("/run/secrets/redis", secrets, "/run/redis", auth).Replace(argv[2])
		cmd := exec.Command(sh, append([]string{"-ec", script}, argv[3:]...)...)
		cmd.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)

		args, err := os.ReadFile(filepath.Join(dir, "argv"))
		require.NoError(t, err)
		require.NotContains(t, string(args), password)
		require.Equal(t, filepath.Join(auth, "auth.conf"), strings.SplitN(string(args), "\n", 2)[0], "redis-server reads the rendered file")
		conf, err := os.ReadFile(filepath.Join(dir, "conf"))
		require.NoError(t, err)
		require.Equal(t, password, redisConfValue(t, string(conf), "requirepass"))
		st, err := os.Stat(filepath.Join(auth, "auth.conf"))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "only redis reads the file")
	}
}

// redisConfValue reads directive's double-quoted argument from a redis.conf
// as Redis does (sdssplitargs: \" and \\ escapes).
func redisConfValue(t *testing.T, conf, directive string) string {
	t.Helper()
	line := strings.TrimSuffix(conf, "\n")
	require.NotContains(t, line, "\n", "one line")
	rest, ok := strings.CutPrefix(line, directive+" \"")
	require.True(t, ok, "%q", line)
	var b strings.Builder
	for i := 0; i < len(rest); i++ {
		switch rest[i] {
		case '\\':
			i++
			require.Less(t, i, len(rest))
			b.WriteByte(rest[i])
		case '"':
			require.Equal(t, len(rest)-1, i, "text after the closing quote")
			return b.String()
		default:
			b.WriteByte(rest[i])
		}
	}
	t.Fatalf("unterminated value in %q", line)
	return ""
}
