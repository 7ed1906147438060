package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/gxfs-conf/gxconf/config"
)

// hasSection reports whether this gxconf's Config has a top-level key.
func hasSection(key string) bool {
	t := reflect.TypeFor[config.Config]()
	for i := 0; i < t.NumField(); i++ {
		if strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0] == key {
			return true
		}
	}
	return false
}

// secretFor is what a mounted secret file holds in the tests, by config key.
var secretFor = map[string]string{
	"credentials.at_rest_key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
	"sfu.keys.gxconf":         "0123456789abcdef0123456789abcdef-sfu-secret",
	"bridge.secret":           "0123456789abcdef0123456789abcdef-relay-secret",
	"sfu.turn.secret":         "0123456789abcdef0123456789abcdef-turn-secret",
	"database.uri":            "postgres://gxconf:pw@postgres.postgres.svc/gxconf?connect_timeout=10",
	"focus.sfu.api_secret":    "0123456789abcdef0123456789abcdef-livekit-secret",
	"sfu.rtc.turn_servers":    `[{urls: ["turn:turn.bund.test:3478"], username: gxconf, credential: "0123456789abcdef-turn-servers-credential"}]`,
	// Keys whose value is itself a file (…_file): the file holds the secret.
	"catalog.admin.client_secret":    "0123456789abcdef0123456789abcdef-client-secret",
	"catalog.signing_key":            "-----BEGIN PRIVATE KEY-----\ncatalog\n-----END PRIVATE KEY-----",
	"credentials.oid4vp.signing_key": "-----BEGIN PRIVATE KEY-----\noid4vp\n-----END PRIVATE KEY-----",
	"cluster.message_key":            "0123456789abcdef0123456789abcdef-cluster-message-key",
	// Every peer's secret (peering.peers.<name>.secret_file in the config file).
	"peering.peers.*.secret": "0123456789abcdef0123456789abcdef-peer-secret",
}

// mountPeerSecrets points every peering.peers.<name>.secret_file of a node's
// config (a path below the mounted Secrets) at a file holding the test
// secret, as the mounted Secret would. It reports whether it changed doc.
func mountPeerSecrets(t *testing.T, doc map[string]any, secrets map[string]string) bool {
	t.Helper()
	changed := false
	for name, p := range mapOf(doc, "peering", "peers") {
		path := str(p, "secret_file")
		if path == "" {
			continue
		}
		require.True(t, strings.HasPrefix(path, "/run/secrets/gxconf/"), "peering.peers.%s.secret_file: secrets are mounted below /run/secrets/gxconf", name)
		f := filepath.Join(t.TempDir(), "peer-"+name)
		require.NoError(t, os.WriteFile(f, []byte(secretFor["peering.peers.*.secret"]+"\n"), 0o600))
		p.(map[string]any)["secret_file"] = f
		secrets["peering.peers."+name+".secret"] = secretFor["peering.peers.*.secret"]
		changed = true
	}
	return changed
}

// nodeEnv turns the StatefulSet's environment into what the process would
// see: _FILE variables point at files holding test secrets, downward-API
// values get example addresses, $(VAR) references are expanded.
func nodeEnv(t *testing.T, sts obj, withCluster bool) (env []string, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	files = map[string]string{}
	vars := map[string]string{"POD_NAME": "", "POD_IP": "10.1.2.3", "HOST_IP": "192.0.2.7"}
	for _, e := range list(sts, "spec", "template", "spec", "containers", 0, "env") {
		name := str(e, "name")
		value := str(e, "value")
		switch str(e, "valueFrom", "fieldRef", "fieldPath") {
		case "status.hostIP":
			value = vars["HOST_IP"]
		case "status.podIP":
			value = vars["POD_IP"]
		case "metadata.name":
			continue
		}
		for k, v := range vars {
			value = strings.ReplaceAll(value, "$("+k+")", v)
		}
		if !strings.HasPrefix(name, config.EnvPrefix) {
			continue
		}
		if name == "GXCONF_AT_REST__KEYS_DIR" {
			// The mounted Secret: one file per key, named by its id.
			require.True(t, strings.HasPrefix(value, "/run/secrets/gxconf/"), "env %s: secrets are mounted below /run/secrets/gxconf", name)
			kdir := filepath.Join(dir, "at-rest-keys")
			require.NoError(t, os.MkdirAll(kdir, 0o700))
			for _, id := range []string{"2026-11", "2026-12"} {
				require.NoError(t, os.WriteFile(filepath.Join(kdir, id), []byte(secretFor["credentials.at_rest_key"]), 0o600))
			}
			files["at_rest.keys_dir"] = kdir
			value = kdir
		}
		require.NotContains(t, value, "$(", "env %s references an undefined variable", name)
		if !withCluster && strings.HasPrefix(name, "GXCONF_CLUSTER__") {
			continue
		}
		if strings.HasPrefix(name, "GXCONF_DATABASE__TLS__") && strings.HasSuffix(name, "_FILE") {
			// A database.tls key naming a file of the mounted Secret: the
			// path itself is the value (gxconf checks the file exists).
			require.True(t, strings.HasPrefix(value, "/run/secrets/gxconf/database-tls/"), "env %s", name)
			f := filepath.Join(dir, "database-tls-"+filepath.Base(value))
			require.NoError(t, os.WriteFile(f, []byte("PEM"), 0o600))
			files["database.tls."+filepath.Base(value)] = f
			env = append(env, name+"="+f)
			continue
		}
		if strings.HasSuffix(name, "_FILE") {
			key := strings.ToLower(strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(name, config.EnvPrefix), "_FILE"), "__", "."))
			secret, ok := secretFor[key]
			require.True(t, ok, "env %s: no test secret for key %s", name, key)
			require.True(t, strings.HasPrefix(value, "/run/secrets/gxconf/"), "env %s: secrets are mounted below /run/secrets/gxconf", name)
			f := filepath.Join(dir, strings.ReplaceAll(key, ".", "_"))
			require.NoError(t, os.WriteFile(f, []byte(secret+"\n"), 0o600))
			files[key] = secret
			value = f
		}
		env = append(env, name+"="+value)
	}
	return env, files
}

// TestChartConfigDecodes decodes every node's rendered config file of every
// value set with gxconf's own strict parser (unknown keys, bad values and
// environment overrides naming no key are errors), so that chart and binary
// cannot drift. The cluster section is checked only once this gxconf has it.
func TestChartConfigDecodes(t *testing.T) {
	withCluster := hasSection("cluster")
	if !withCluster {
		t.Log("this gxconf has no cluster section yet: cluster.* keys and GXCONF_CLUSTER__ variables are not decoded")
	}
	for _, set := range valueSets(t) {
		t.Run(set, func(t *testing.T) {
			objs := render(t, set)
			sts := find(objs, "StatefulSet", "gx-gxconf")
			require.NotNil(t, sts)
			cm := find(objs, "ConfigMap", "gx-gxconf")
			require.NotNil(t, cm)
			replicas := num(sts, "spec", "replicas")
			require.Len(t, mapOf(cm, "data"), replicas, "one config file per node")
			env, secrets := nodeEnv(t, sts, withCluster)
			for i := 0; i < replicas; i++ {
				file := fmt.Sprintf("gx-gxconf-%d.yaml", i)
				raw := str(cm, "data", file)
				require.NotEmpty(t, raw, file)
				var doc map[string]any
				require.NoError(t, yaml.Unmarshal([]byte(raw), &doc))
				changed := mountPeerSecrets(t, doc, secrets)
				if !withCluster {
					delete(doc, "cluster")
					changed = true
				}
				if changed {
					b, err := yaml.Marshal(doc)
					require.NoError(t, err)
					raw = string(b)
				}
				cfg, err := config.Parse([]byte(raw), env)
				require.NoError(t, err, "%s of value set %s", file, set)

				require.Equal(t, fmt.Sprintf("gx-gxconf-%d", i), cfg.SFU.NodeID)
				require.Equal(t, "https://"+hostOf(objs), cfg.Focus.PublicURL)
				require.Equal(t, fmt.Sprintf("wss://%s/sfu/%d", hostOf(objs), i), cfg.SFU.PublicURL)
				if s, ok := secrets["sfu.keys.gxconf"]; ok {
					require.Equal(t, map[string]string{"gxconf": s}, cfg.SFU.Keys, "the shared SFU key comes from its file")
				}
				if s, ok := secrets["credentials.at_rest_key"]; ok {
					require.Equal(t, s, cfg.Credentials.AtRestKey)
				}
				if d, ok := secrets["at_rest.keys_dir"]; ok {
					require.Equal(t, d, cfg.AtRest.KeysDir)
					require.NotEmpty(t, cfg.AtRest.Primary, "two keys need a primary")
				}
				if f, ok := secrets["database.tls.ca.crt"]; ok {
					require.Equal(t, "verify-full", cfg.Database.TLS.Mode, "the server's name is checked")
					require.Equal(t, f, cfg.Database.TLS.RootCertFile)
					dsn, err := cfg.Database.DSN()
					require.NoError(t, err)
					require.Contains(t, dsn, "sslmode=verify-full")
				}
				if s, ok := secrets["database.uri"]; ok {
					require.Equal(t, s, cfg.Database.URI)
				}
				if s, ok := secrets["focus.sfu.api_secret"]; ok {
					require.Equal(t, s, cfg.Focus.SFU.APISecret)
				}
				if _, ok := secrets["sfu.rtc.turn_servers"]; ok {
					require.Len(t, cfg.SFU.RTC.TURNServers, 1)
					require.Equal(t, "0123456789abcdef-turn-servers-credential", cfg.SFU.RTC.TURNServers[0].Credential)
				}
				for key, got := range map[string]string{
					"catalog.admin.client_secret":    cfg.Catalog.Admin.ClientSecretFile,
					"catalog.signing_key":            cfg.Catalog.SigningKeyFile,
					"credentials.oid4vp.signing_key": cfg.Credentials.OID4VP.SigningKeyFile,
				} {
					if s, ok := secrets[key]; ok {
						b, err := os.ReadFile(got)
						require.NoError(t, err, "%s_file names the mounted file", key)
						require.Equal(t, s, strings.TrimRight(string(b), "\n"))
					}
				}
				for name, pc := range cfg.Peering.Peers {
					if s, ok := secrets["peering.peers."+name+".secret"]; ok {
						require.Equal(t, s, pc.Secret, "peering.peers.%s.secret comes from its file", name)
					}
				}
				if h := routedHost(objs, "/_matrix/app"); h != "" {
					require.Equal(t, "https://"+h, cfg.Appservice.Address, "the registration URL is the appservice Ingress")
				}
				probes := get(sts, "spec", "template", "spec", "containers", 0)
				scheme := "HTTP"
				if cfg.TLS.Enabled() {
					scheme = "HTTPS"
					require.True(t, strings.HasPrefix(cfg.TLS.CertFile, "/run/secrets/gxconf/tls/"), "the certificate comes from the mounted Secret")
					require.True(t, strings.HasPrefix(cfg.Appservice.Address, "https://"), "the homeserver reaches the appservice over TLS")
				}
				for _, p := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
					require.Equal(t, scheme, str(probes, p, "httpGet", "scheme"), "%s speaks the focus listener's protocol", p)
				}
				if cfg.Metrics.Enabled {
					require.Equal(t, "0.0.0.0:9464", cfg.Metrics.Listen, "metrics on their own listener")
				}
				if sm := find(objs, "ServiceMonitor", "gx-gxconf"); sm != nil {
					want := ""
					if cfg.Metrics.TLS {
						want = "https"
					}
					require.Equal(t, want, str(sm, "spec", "endpoints", 0, "scheme"), "Prometheus speaks the metrics listener's protocol")
				}
			}
		})
	}
}

// hostOf is the host of the Ingress routing the focus API.
func hostOf(objs []obj) string { return routedHost(objs, "/get_token") }

// routedHost is the host of the Ingress rule routing path, or "".
func routedHost(objs []obj, path string) string {
	for _, ing := range ofKind(objs, "Ingress") {
		for _, r := range list(ing, "spec", "rules") {
			for _, p := range list(r, "http", "paths") {
				if str(p, "path") == path {
					return str(r, "host")
				}
			}
		}
	}
	return ""
}
