package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/credentials"
	"github.com/gxfs-conf/gxconf/sfu"
)

func readExample(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile("../config.example.yaml")
	require.NoError(t, err)
	return raw
}

// exampleEnv replaces the example's placeholders.
var exampleEnv = []string{
	"GXCONF_HOMESERVER__DOMAIN=bund.test",
	"GXCONF_CREDENTIALS__AT_REST_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
}

// The example documents every key: it must decode strictly, and only its
// placeholders may be refused, so example and code cannot drift.
func TestExampleConfigDecodes(t *testing.T) {
	_, err := Parse(readExample(t), nil)
	var problems Problems
	require.ErrorAs(t, err, &problems)
	require.Len(t, problems, 2, "%v", problems)
	require.Contains(t, problems[0], "homeserver.domain:")
	require.Contains(t, problems[0], "placeholder")
	require.Contains(t, problems[1], "credentials.at_rest_key: placeholder")

	cfg, err := Parse(readExample(t), exampleEnv)
	require.NoError(t, err)
	require.Equal(t, "bund.test", cfg.Homeserver.Domain)
	require.Equal(t, Default().Focus, cfg.Focus)
}

// Every key in the example must also be a default: a missing section would
// leave it to zero values.
func TestExampleMatchesDefaults(t *testing.T) {
	cfg, err := Parse(readExample(t), exampleEnv)
	require.NoError(t, err)
	def := Default()
	require.Equal(t, def.Database, cfg.Database)
	require.Equal(t, def.Appservice, cfg.Appservice)
	require.Equal(t, def.Metrics, cfg.Metrics)
	require.Equal(t, def.Logging, cfg.Logging)
	require.Equal(t, def.Cluster, cfg.Cluster)
	require.Equal(t, def.Bridge, cfg.Bridge)
	meet := cfg.Meetings
	if len(meet.Levels) == 0 {
		meet.Levels = nil
	}
	if len(meet.OrganiserHomeservers) == 0 {
		meet.OrganiserHomeservers = nil
	}
	require.Equal(t, def.Meetings, meet)
	// The embedded SFU: every default, keys aside (derived per process when empty).
	sfuCfg, defSFU := cfg.SFU, def.SFU
	sfuCfg.Keys, defSFU.Keys = nil, nil
	defSFU.RTC.NAT1To1IPs, defSFU.RTC.STUNServers, defSFU.RTC.TURNServers = []string{}, []string{}, []sfu.TURNServer{}
	require.Equal(t, defSFU, sfuCfg)
	require.Len(t, cfg.SFU.Keys, 1, "a key is derived for the embedded SFU")

	// Credentials: the example shows one federation (example values) and
	// every default.
	require.Equal(t, "xfsc-compat", cfg.Credentials.Federations[0].TrustedIssuers[0].StatusProfile)
	cred, dcred := cfg.Credentials, def.Credentials
	for _, l := range []*credentials.LevelDefaults{&dcred.Levels.Public, &dcred.Levels.Kritis, &dcred.Levels.VSNfD} {
		if l.RequiredCredentialTypes == nil {
			l.RequiredCredentialTypes = []string{}
		}
	}
	require.Equal(t, dcred.Levels, cred.Levels)
	require.Equal(t, dcred.DIDResolution, cred.DIDResolution)
	require.Equal(t, dcred.StatusList, cred.StatusList)
	require.Equal(t, dcred.OID4VP.NonceTTL, cred.OID4VP.NonceTTL)
	require.Equal(t, dcred.MaxInputBytes, cred.MaxInputBytes)
	require.Equal(t, dcred.RecheckInterval, cred.RecheckInterval)
	require.Equal(t, dcred.PolicyFile, cred.PolicyFile)
}

func TestUnknownKeysAndTypesAreNamed(t *testing.T) {
	_, err := Parse([]byte(`
homeserver:
  domain: bund.test
  address: http://127.0.0.1:8008
  adress: typo
focus:
  token_ttl: soon
  openid:
    cache_tl: 1m
  rate_limit:
    per_ip:
      rate: [1]
bogus: 1
`), nil)
	var problems Problems
	require.ErrorAs(t, err, &problems)
	joined := strings.Join(problems, "\n")
	require.Contains(t, joined, "homeserver.adress: unknown key (line 5)")
	require.Contains(t, joined, "focus.token_ttl:")
	require.Contains(t, joined, "focus.openid.cache_tl: unknown key")
	require.Contains(t, joined, "focus.rate_limit.per_ip.rate:")
	require.Contains(t, joined, "bogus: unknown key")
	require.Len(t, problems, 5, joined)
}

func TestValidationCollectsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(`
homeserver:
  domain: ""
  address: ftp://x
database:
  type: sqlite
focus:
  listen: nowhere
  token_ttl: 1s
  full_access_homeservers: ["*", "other.test"]
logging:
  level: loud
`), nil)
	var problems Problems
	require.ErrorAs(t, err, &problems)
	joined := strings.Join(problems, "\n")
	for _, key := range []string{"homeserver.domain:", "homeserver.address:", "database.type:", "focus.listen:", "focus.token_ttl:", "focus.full_access_homeservers[0]:", "logging.level:"} {
		require.Contains(t, joined, key)
	}
}

func TestEnvOverrides(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secretFile, []byte("s3cr3t-from-a-file-0123456789abcdef\n"), 0o600))
	cfg, err := Parse([]byte("homeserver: {domain: bund.test, address: 'http://127.0.0.1:8008'}\n"), []string{
		"GXCONF_FOCUS__TOKEN_TTL=5m",
		"GXCONF_FOCUS__FULL_ACCESS_HOMESERVERS=[a.test, b.test]",
		"GXCONF_FOCUS__SFU__API_SECRET_FILE=" + secretFile,
		"GXCONF_FOCUS__OPENID__SERVER_OVERRIDES__BUND.TEST=http://127.0.0.1:1",
		"GXCONF_FOCUS__SFU__API_KEY=yes",              // strings stay verbatim, not YAML booleans
		"GXCONF_SFU__KEYS__GXCONF_FILE=" + secretFile, // a map entry from a file (the Helm chart's shared SFU key)
		"OTHER_VAR=ignored",
	})
	require.NoError(t, err)
	require.Equal(t, 5*time.Minute, cfg.Focus.TokenTTL)
	require.Equal(t, []string{"a.test", "b.test"}, cfg.Focus.FullAccessHomeservers)
	require.Equal(t, "s3cr3t-from-a-file-0123456789abcdef", cfg.Focus.SFU.APISecret)
	require.Equal(t, "yes", cfg.Focus.SFU.APIKey)
	require.Equal(t, "http://127.0.0.1:1", cfg.Focus.OpenID.ServerOverrides["bund.test"])
	require.Equal(t, map[string]string{"gxconf": "s3cr3t-from-a-file-0123456789abcdef"}, cfg.SFU.Keys)

	_, err = Parse([]byte("homeserver: {domain: bund.test, address: 'http://127.0.0.1:8008'}\n"), []string{
		"GXCONF_FOCUS__TOKEN_TL=5m",
		"GXCONF_FOCUS__TOKEN_TTL=later",
		"GXCONF_FOCUS__SFU__API_SECRET_FILE=/does/not/exist",
	})
	var problems Problems
	require.ErrorAs(t, err, &problems)
	joined := strings.Join(problems, "\n")
	require.Contains(t, joined, "focus.token_tl: env GXCONF_FOCUS__TOKEN_TL names no config key")
	require.Contains(t, joined, "focus.token_ttl: env GXCONF_FOCUS__TOKEN_TTL:")
	require.Contains(t, joined, "focus.sfu.api_secret: env GXCONF_FOCUS__SFU__API_SECRET_FILE: cannot read file")
	require.NotContains(t, joined, "s3cr3t")
}

// A secret map entry from the environment (sfu.keys, the Helm chart's
// shared SFU key) is taken verbatim like any string: YAML would misread one
// starting with '*', '!' or '&' and quote it in the configuration problem.
func TestEnvMapSecretsAreVerbatim(t *testing.T) {
	hs := []byte("homeserver: {domain: bund.test, address: 'http://127.0.0.1:8008'}\n")
	for _, secret := range []string{
		"*s3cr3t-anchor-0123456789abcdef0123",
		"!!int s3cr3t-tagged-0123456789abcdef",
		"&a s3cr3t-anchored-0123456789abcdef",
	} {
		t.Run(secret[:3], func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "key")
			require.NoError(t, os.WriteFile(file, []byte(secret+"\n"), 0o600))
			for _, env := range []string{"GXCONF_SFU__KEYS__GXCONF=" + secret, "GXCONF_SFU__KEYS__GXCONF_FILE=" + file} {
				cfg, err := Parse(hs, []string{env})
				if err != nil {
					require.NotContains(t, err.Error(), "s3cr3t")
				}
				require.NoError(t, err)
				require.Equal(t, map[string]string{"gxconf": secret}, cfg.SFU.Keys)
			}
		})
	}
	// Other map values are still YAML, and a problem still names the key.
	_, err := Parse(hs, []string{"GXCONF_CLUSTER__HOMESERVERS__BUND.TEST=[not, a, site]"})
	require.ErrorContains(t, err, "cluster.homeservers.bund.test: env GXCONF_CLUSTER__HOMESERVERS__BUND.TEST: cannot unmarshal")
}

// A refused value of a string key (where the secrets are) is not quoted in
// the configuration problem, nor is an unquoted secret starting with '*'
// that YAML reads as an alias; the key is still named. Other values are.
func TestFileProblemsDoNotQuoteSecrets(t *testing.T) {
	hs := "homeserver: {domain: bund.test, address: 'http://127.0.0.1:8008'}\n"
	cases := map[string]struct{ yaml, want string }{
		"alias":      {"sfu:\n  keys:\n    gxconf: *s3cr3t-0123456789abcdef0123456789ab\n", "file: unknown anchor referenced"},
		"tagged":     {"focus:\n  sfu:\n    api_secret: !!int s3cr3t-0123456789abcdef0123456789ab\n", "focus.sfu.api_secret: must be a string"},
		"map tagged": {"sfu:\n  keys:\n    gxconf: !!float s3cr3t-0123456789abcdef0123456789ab\n", "sfu.keys.gxconf: must be a string"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(hs+c.yaml), nil)
			require.ErrorContains(t, err, c.want)
			require.NotContains(t, err.Error(), "s3cr3t")
		})
	}
	// A list set from the environment is YAML; its aliases are not named either.
	_, err := Parse([]byte(hs), []string{"GXCONF_SFU__RTC__TURN_SERVERS=[{urls: ['turn:t.test:3478'], username: u, credential: *s3cr3t-0123}]"})
	require.ErrorContains(t, err, "sfu.rtc.turn_servers: env GXCONF_SFU__RTC__TURN_SERVERS: unknown anchor referenced")
	require.NotContains(t, err.Error(), "s3cr3t")

	_, err = Parse([]byte(hs+"focus: {token_ttl: later}\n"), nil)
	require.ErrorContains(t, err, "focus.token_ttl:")
	require.ErrorContains(t, err, "later", "a duration is no secret: the refused value helps")
}

func TestPlaceholderDomains(t *testing.T) {
	require.True(t, IsPlaceholderDomain("example.org"))
	require.True(t, IsPlaceholderDomain("matrix.EXAMPLE.com"))
	require.False(t, IsPlaceholderDomain("bund.de"))
	require.False(t, IsPlaceholderDomain("notexample.org"))
}

// /metrics stays off the public focus listener unless the operator says so.
func TestMetricsListenerIsSeparateByDefault(t *testing.T) {
	def := Default()
	require.Equal(t, DefaultMetricsListen, def.Metrics.Listen)
	require.NotEqual(t, def.Focus.Listen, def.Metrics.Listen)

	_, err := Parse([]byte("homeserver: {domain: bund.test, address: http://hs.test}\nmetrics: {listen: nowhere}\n"), nil)
	var problems Problems
	require.ErrorAs(t, err, &problems)
	require.Contains(t, strings.Join(problems, "\n"), "metrics.listen:")
}

// Profiles are served on the separate metrics listener only, never on the
// public focus listener.
func TestPprofNeedsMetricsListener(t *testing.T) {
	_, err := Parse([]byte("homeserver: {domain: bund.test, address: http://hs.test}\nmetrics: {listen: \"\", pprof: true}\n"), nil)
	var problems Problems
	require.ErrorAs(t, err, &problems)
	require.Contains(t, strings.Join(problems, "\n"), "metrics.pprof: needs metrics.enabled and metrics.listen")

	cfg, err := Parse([]byte("homeserver: {domain: bund.test, address: http://hs.test}\nmetrics: {pprof: true}\n"), nil)
	require.NoError(t, err)
	require.True(t, cfg.Metrics.Pprof)
}

func TestMetricsTLSNeedsCertificateAndListener(t *testing.T) {
	_, err := Parse([]byte("homeserver: {domain: bund.test, address: http://hs.test}\nmetrics: {listen: \"\", tls: true}\n"), nil)
	var problems Problems
	require.ErrorAs(t, err, &problems)
	all := strings.Join(problems, "\n")
	require.Contains(t, all, "metrics.tls: needs tls.cert_file")
	require.Contains(t, all, "metrics.tls: needs metrics.enabled and metrics.listen")
}

func TestDatabaseTLS(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(ca, []byte("x"), 0o600))
	base := "homeserver: {domain: bund.test, address: http://hs.test}\n"
	_, err := Parse([]byte(base+"database: {tls: {mode: verify-full}}\n"), nil)
	require.ErrorContains(t, err, "database.tls: applies to PostgreSQL only")
	_, err = Parse([]byte(base+"database: {type: postgres, uri: \"postgres://db/gx?sslmode=require\", tls: {mode: verify-full, root_cert_file: /nope}}\n"), nil)
	require.ErrorContains(t, err, "database.tls.mode: the uri sets sslmode too")
	require.ErrorContains(t, err, "database.tls.root_cert_file:")
	// The files may come from the environment (mounted Secrets).
	cfg, err := Parse([]byte(base+"database: {type: postgres, uri: \"postgres://db/gx\"}\n"),
		[]string{"GXCONF_DATABASE__TLS__MODE=verify-full", "GXCONF_DATABASE__TLS__ROOT_CERT_FILE=" + ca})
	require.NoError(t, err)
	dsn, err := cfg.Database.DSN()
	require.NoError(t, err)
	require.Contains(t, dsn, "sslmode=verify-full")
	require.Contains(t, dsn, "sslrootcert=")
}

// A cluster node needs what every node shares: the SFU keys and the database;
// its own signalling URL is derived from the SFU's.
func TestClusterNeedsSharedKeysAndDatabase(t *testing.T) {
	_, err := Parse([]byte(`
homeserver: {domain: bund.test, address: http://hs.test}
cluster: {redis: {address: "127.0.0.1:6379"}}
`), nil)
	var problems Problems
	require.ErrorAs(t, err, &problems)
	joined := strings.Join(problems, "\n")
	require.Contains(t, joined, "sfu.keys: must be set, the same on every node")
	require.Contains(t, joined, "database.type: a cluster needs one database")

	cfg, err := Parse([]byte(`
homeserver: {domain: bund.test, address: http://hs.test}
database: {type: postgres, uri: "postgres://gx@db.test/gx"}
sfu: {listen: "10.1.0.2:7880", keys: {k1: secret-long-enough-0123456789abcdef}}
cluster: {redis: {address: "127.0.0.1:6379"}}
`), nil)
	require.NoError(t, err)
	require.Equal(t, "ws://10.1.0.2:7880", cfg.Cluster.SignalURL)
}

func TestTURNTLSNeedsCertificate(t *testing.T) {
	_, err := Parse([]byte(`
homeserver: {domain: bund.test, address: http://hs.test}
sfu: {rtc: {node_ip: 203.0.113.7}, turn: {enabled: true, tls_on_signal_port: true}}
`), nil)
	var problems Problems
	require.ErrorAs(t, err, &problems)
	joined := strings.Join(problems, "\n")
	require.Contains(t, joined, "sfu.turn.tls_on_signal_port: needs tls.cert_file")
	require.Contains(t, joined, "sfu.turn.tls_port: 5349 needs tls.cert_file")

	_, err = Parse([]byte(`
homeserver: {domain: bund.test, address: http://hs.test}
sfu: {rtc: {node_ip: 203.0.113.7}, turn: {enabled: true, external_tls: true, external_tls_port: 443}}
`), nil)
	require.NoError(t, err)
}

// TestBridgeTestLinkNeedsTestingEnv: the relay's test-only impairments are
// refused in a normal run and accepted with GXCONF_TESTING=1 (which is not
// taken for a config key).
func TestBridgeTestLinkNeedsTestingEnv(t *testing.T) {
	raw := []byte(`
homeserver: {domain: bund.test, address: http://hs.test}
database: {type: postgres, uri: "postgres://gx@db.test/gx"}
sfu: {listen: "10.1.0.2:7880", keys: {k1: secret-long-enough-0123456789abcdef}}
cluster: {redis: {address: "127.0.0.1:6379"}, relay_address: "10.99.0.1:7890"}
bridge: {secret: relay-secret-long-enough-0123456789abcdef, test_link_loss: 0.05, test_link_delay: 20ms}
`)
	_, err := Parse(raw, nil)
	var problems Problems
	require.ErrorAs(t, err, &problems)
	require.Contains(t, strings.Join(problems, "\n"), "test_link_loss, test_link_delay: test-only, refused unless GXCONF_TESTING=1")

	cfg, err := Parse(raw, []string{TestingEnv + "=1"})
	require.NoError(t, err)
	require.InDelta(t, 0.05, cfg.Bridge.TestLinkLoss, 1e-9)
	require.Equal(t, 20*time.Millisecond, cfg.Bridge.TestLinkDelay)
	require.True(t, cfg.Bridge.Testing)
}

// peeringYAML is a valid single-node peering setup of fed-a.
const peeringYAML = `
homeserver: {domain: fed-a.test, address: "http://127.0.0.1:8008"}
cluster: {relay_address: "10.99.0.1:7890"}
peering:
  name: fed-a
  peers:
    fed-b:
      relay_address: 10.99.0.2:7890
      url: wss://sfu.fed-b.test
      homeservers: [fed-b.test]
      levels: [public, kritis]
      secret: 0123456789abcdef0123456789abcdef-peer
`

// Peering: a valid section enables the bridge on a lone node; every field
// is checked and named; both deployments derive the same keys from the
// secret, different per use and direction.
func TestPeering(t *testing.T) {
	cfg, err := Parse([]byte(peeringYAML), nil)
	require.NoError(t, err)
	require.True(t, cfg.BridgeEnabled())
	require.Equal(t, "10.99.0.1:7890", cfg.Bridge.Listen)
	require.GreaterOrEqual(t, len(cfg.Bridge.Secret), 32, "a lone node's bridge gets a cluster secret nobody needs")
	pc := cfg.Peering.Peers["fed-b"]
	other := PeerConfig{Secret: pc.Secret}
	require.Equal(t, pc.TokenSecret("fed-a"), other.TokenSecret("fed-a"))
	require.NotEqual(t, pc.TokenSecret("fed-a"), pc.TokenSecret("fed-b"))
	require.NotEqual(t, pc.TokenSecret("fed-a"), string(pc.SignalKey()))
	require.Len(t, pc.SignalKey(), 32)

	file := filepath.Join(t.TempDir(), "peer")
	require.NoError(t, os.WriteFile(file, []byte("0123456789abcdef0123456789abcdef-file\n"), 0o600))
	cfg, err = Parse([]byte(strings.Replace(peeringYAML, "secret: 0123456789abcdef0123456789abcdef-peer", "secret_file: "+file, 1)), nil)
	require.NoError(t, err)
	require.Equal(t, "0123456789abcdef0123456789abcdef-file", cfg.Peering.Peers["fed-b"].Secret)
	cfg, err = Parse([]byte(strings.Replace(peeringYAML, "  name: fed-a\n", "  name: fed-a\n  relay_addresses: [\"203.0.113.9:7890\"]\n", 1)), nil)
	require.NoError(t, err)
	require.Equal(t, []string{"203.0.113.9:7890"}, cfg.Peering.RelayAddresses)

	for _, c := range []struct{ from, to, want string }{
		{"name: fed-a", "name: fed.a", "peering.name:"},
		{"fed-b:\n", "fed-a:\n", "peering.peers.fed-a: names this deployment"},
		{"relay_address: 10.99.0.2:7890", "relay_address: nope", "peering.peers.fed-b.relay_address:"},
		{"url: wss://sfu.fed-b.test", "url: https://sfu.fed-b.test", "peering.peers.fed-b.url:"},
		{"homeservers: [fed-b.test]", "homeservers: []", "peering.peers.fed-b.homeservers:"},
		{"homeservers: [fed-b.test]", "homeservers: [fed-a.test]", "peering.peers.fed-b.homeservers: names our own homeserver"},
		{"levels: [public, kritis]", "levels: [secret]", "peering.peers.fed-b.levels:"},
		{"levels: [public, kritis]", "levels: []", "peering.peers.fed-b.levels:"},
		{"secret: 0123456789abcdef0123456789abcdef-peer", "secret: short", "peering.peers.fed-b.secret:"},
		{"secret: 0123456789abcdef0123456789abcdef-peer", "secret: x\n      secret_file: /nonexistent", "peering.peers.fed-b.secret_file:"},
		{`cluster: {relay_address: "10.99.0.1:7890"}`, "", "peering: needs the bridge"},
		{"  name: fed-a\n", "  name: fed-a\n  relay_addresses: [\"203.0.113.9:7890\", \"nope\"]\n", "peering.relay_addresses[1]: must be host:port"},
		// Two peers with one secret could sign as each other.
		{"      secret: 0123456789abcdef0123456789abcdef-peer\n", "      secret: 0123456789abcdef0123456789abcdef-peer\n" +
			"    fed-c:\n      relay_address: 10.99.0.3:7890\n      url: wss://sfu.fed-c.test\n      homeservers: [fed-c.test]\n" +
			"      levels: [public]\n      secret: 0123456789abcdef0123456789abcdef-peer\n", "peering.peers.fed-c.secret: is the same as peers.fed-b's"},
	} {
		t.Run(c.want, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(peeringYAML, c.from, c.to, 1)), nil)
			require.ErrorContains(t, err, c.want)
		})
	}
}
