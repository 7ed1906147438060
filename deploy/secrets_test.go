package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/gxfs-conf/gxconf/config"
)

// testSecret stands for a secret an operator puts into the values; it must
// never reach a ConfigMap.
const testSecret = "gxconf-test-secret-0123456789abcdef0123456789abcdef"

// decode splits helm's output into objects.
func decode(t *testing.T, out []byte) []obj {
	t.Helper()
	var objs []obj
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var o map[string]any
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		require.NoError(t, err)
		if o != nil {
			objs = append(objs, obj(o))
		}
	}
}

// writeValues writes a values file into a test directory and returns its path.
func writeValues(t *testing.T, values string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	require.NoError(t, os.WriteFile(f, []byte(values), 0o600))
	return f
}

// TestConfigRefusesSecrets: config: is rendered into a ConfigMap, so every
// secret-bearing gxconf key there makes helm fail, naming the key and the
// secrets.* option that mounts it from a Secret; no ConfigMap ever holds it.
func TestConfigRefusesSecrets(t *testing.T) {
	cases := []struct {
		key, values, option string
	}{
		{"sfu.keys", "sfu: {keys: {gxconf: %q}}", "secrets.sfuKey"},
		{"sfu.turn.secret", "sfu: {turn: {secret: %q}}", "secrets.turnSecret"},
		{"sfu.rtc.turn_servers[0].credential", `sfu: {rtc: {turn_servers: [{urls: ["turn:t.bund.test:3478"], username: u, credential: %q}]}}`, "secrets.turnServers"},
		{"focus.sfu.api_secret", "focus: {sfu: {url: wss://lk.bund.test, api_key: lk, api_secret: %q}}", "secrets.focusSFUSecret"},
		{"bridge.secret", "bridge: {secret: %q}", "secrets.relaySecret"},
		{"credentials.at_rest_key", "credentials: {at_rest_key: %q}", "secrets.atRestKey"},
		{"catalog.admin.client_secret", "catalog: {admin: {client_secret: %q}}", "secrets.catalogClientSecret"},
		{"peering.peers.fed-b.secret", "peering: {name: fed-a, peers: {fed-b: {url: wss://b.test, secret: %q}}}", "secrets.peerSecrets.fed-b"},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			f := writeValues(t, "config:\n  "+fmt.Sprintf(c.values, testSecret)+"\n")
			out, err := helmTemplate(t, "minimal", "-f", f)
			if err == nil {
				for _, cm := range ofKind(decode(t, out), "ConfigMap") {
					b, merr := yaml.Marshal(cm)
					require.NoError(t, merr)
					require.False(t, strings.Contains(string(b), testSecret), "config.%s is rendered into ConfigMap %s", c.key, cm.name())
				}
			}
			require.Error(t, err, "config.%s is accepted", c.key)
			require.Contains(t, err.Error(), "config."+c.key)
			require.Contains(t, err.Error(), c.option)
			require.NotContains(t, err.Error(), testSecret, "the error quotes the secret")
		})
	}
	t.Run("empty values hold no secret", func(t *testing.T) {
		f := writeValues(t, "config:\n  sfu: {keys: {}, turn: {secret: \"\"}}\n  credentials: {at_rest_key: \"\"}\n")
		_, err := helmTemplate(t, "minimal", "-f", f)
		require.NoError(t, err)
	})
	t.Run("a peer secret for no configured peer", func(t *testing.T) {
		_, err := helmTemplate(t, "minimal", "--set", "secrets.peerSecrets.fed-x.existingSecret=p", "--set", "secrets.peerSecrets.fed-x.key=k")
		require.Error(t, err)
		require.Contains(t, err.Error(), "secrets.peerSecrets.fed-x names no peer in config.peering.peers")
	})
}

// mountedFile checks that path is a file of a read-only mount of the gxconf
// container whose volume is key of Secret secretName.
func mountedFile(t *testing.T, sts obj, path, secretName, key string) {
	t.Helper()
	pod := get(sts, "spec", "template", "spec")
	var volume string
	for _, m := range list(pod, "containers", 0, "volumeMounts") {
		if dir := str(m, "mountPath"); dir != "" && strings.HasPrefix(path, dir+"/") {
			require.Equal(t, true, get(m, "readOnly"), "%s is mounted read-only", dir)
			require.Equal(t, key, strings.TrimPrefix(path, dir+"/"))
			volume = str(m, "name")
		}
	}
	require.NotEmpty(t, volume, "%s: no volume mounted there", path)
	for _, v := range list(pod, "volumes") {
		if str(v, "name") != volume {
			continue
		}
		require.Equal(t, secretName, str(v, "secret", "secretName"), "volume %s", volume)
		require.Equal(t, key, str(v, "secret", "items", 0, "key"), "volume %s", volume)
		require.Equal(t, key, str(v, "secret", "items", 0, "path"), "volume %s", volume)
		return
	}
	t.Fatalf("volume %s not found", volume)
}

// envValue is the literal value of the gxconf container's variable name, or "".
func envValue(sts obj, name string) string {
	for _, e := range list(sts, "spec", "template", "spec", "containers", 0, "env") {
		if str(e, "name") == name {
			return str(e, "value")
		}
	}
	return ""
}

// TestSecretOptionsMountFiles: each secrets.* option mounts its key of the
// named Secret read-only and tells gxconf the file (GXCONF_<PATH>_FILE, or
// peering.peers.<name>.secret_file in the config file), and gxconf's parser
// reads the secret from there.
func TestSecretOptionsMountFiles(t *testing.T) {
	type want struct{ env, secret, key string }
	stockLiveKit := writeValues(t, `
config:
  focus: {sfu: {url: "wss://livekit.bund.test", api_key: lk-gxconf}}
secrets:
  focusSFUSecret: {existingSecret: livekit-keys, key: api-secret}
`)
	cases := map[string]struct {
		set   string
		extra []string
		envs  []want
		peers map[string]want
	}{
		"secrets value set": {
			set: "secrets",
			envs: []want{
				{"GXCONF_SFU__RTC__TURN_SERVERS_FILE", "gxconf-turn-servers", "turn-servers.yaml"},
				{"GXCONF_CATALOG__ADMIN__CLIENT_SECRET_FILE", "gxconf-catalog", "client-secret"},
				{"GXCONF_CATALOG__SIGNING_KEY_FILE", "gxconf-catalog", "signing-key.pem"},
				{"GXCONF_CREDENTIALS__OID4VP__SIGNING_KEY_FILE", "gxconf-oid4vp", "signing-key.pem"},
				{"GXCONF_CLUSTER__MESSAGE_KEY_FILE", "gxconf-keys", "message-key"},
				{"GXCONF_SFU__KEYS__GXCONF_FILE", "gxconf-keys", "sfu-api-secret"},
				{"GXCONF_BRIDGE__SECRET_FILE", "gxconf-keys", "relay-secret"},
				{"GXCONF_CREDENTIALS__AT_REST_KEY_FILE", "gxconf-keys", "at-rest-key"},
				{"GXCONF_DATABASE__URI_FILE", "gxconf-postgres", "uri"},
			},
			peers: map[string]want{"fed-b": {"", "gxconf-peers", "fed-b"}},
		},
		"stock LiveKit": {
			set:   "minimal",
			extra: []string{"-f", stockLiveKit},
			envs:  []want{{"GXCONF_FOCUS__SFU__API_SECRET_FILE", "livekit-keys", "api-secret"}},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			objs := render(t, c.set, c.extra...)
			sts := find(objs, "StatefulSet", "gx-gxconf")
			require.NotNil(t, sts)
			for _, w := range c.envs {
				path := envValue(sts, w.env)
				require.NotEmpty(t, path, "env %s", w.env)
				mountedFile(t, sts, path, w.secret, w.key)
			}
			env, secrets := nodeEnv(t, sts, hasSection("cluster"))
			for i, doc := range nodeConfigs(t, objs) {
				for peer, w := range c.peers {
					path := str(doc, "peering", "peers", peer, "secret_file")
					require.NotEmpty(t, path, "node %d: peering.peers.%s.secret_file", i, peer)
					mountedFile(t, sts, path, w.secret, w.key)
				}
				mountPeerSecrets(t, doc, secrets)
				b, err := yaml.Marshal(doc)
				require.NoError(t, err)
				cfg, err := config.Parse(b, env)
				require.NoError(t, err, "node %d", i)
				for peer := range c.peers {
					require.Equal(t, secretFor["peering.peers.*.secret"], cfg.Peering.Peers[peer].Secret, "node %d: peer %s", i, peer)
				}
				if name == "secrets value set" && hasSection("cluster") {
					b, err := os.ReadFile(cfg.Cluster.MessageKeyFile)
					require.NoError(t, err, "node %d: cluster.message_key_file", i)
					require.Equal(t, secretFor["cluster.message_key"]+"\n", string(b), "node %d", i)
				}
				if name == "stock LiveKit" {
					require.Equal(t, "wss://livekit.bund.test", cfg.Focus.SFU.URL)
					require.Equal(t, secretFor["focus.sfu.api_secret"], cfg.Focus.SFU.APISecret)
				}
			}
		})
	}
}
