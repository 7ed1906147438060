package deploy

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/gxfs-conf/gxconf/config"
)

// turnURLPorts are the ports a node's TURN URLs name, as sfu.turnServer
// builds them (turn.go iceServers): udp_port for turn:…?transport=udp, and
// external_tls_port (else tls_port) for turns:.
func turnURLPorts(c *config.Config) (udp, tls int) {
	t := c.SFU.TURN
	tls = t.TLSPort
	if tls != 0 && t.ExternalTLSPort != 0 {
		tls = t.ExternalTLSPort
	}
	return t.UDPPort, tls
}

// TestTURNPorts checks, for every value set with turn.enabled, that each
// node's TURN URL ports are what its media Service offers on its advertised
// address (port = URL port, targetPort = the port the TURN server listens on,
// nodePort = URL port), that the NetworkPolicy lets clients reach the
// listening ports, that the URLs name the node's own host (never the
// Ingress host, which fronts every node), and that TURNS has a certificate.
func TestTURNPorts(t *testing.T) {
	tested := 0
	for _, set := range valueSets(t) {
		t.Run(set, func(t *testing.T) {
			objs := render(t, set)
			sts := find(objs, "StatefulSet", "gx-gxconf")
			hostNet := get(sts, "spec", "template", "spec", "hostNetwork") == true
			env, secrets := nodeEnv(t, sts, hasSection("cluster"))
			cm := find(objs, "ConfigMap", "gx-gxconf")
			for i, raw := range nodeConfigs(t, objs) {
				mountPeerSecrets(t, raw, secrets)
				b, err := yaml.Marshal(raw)
				require.NoError(t, err)
				c, err := config.Parse(b, env)
				require.NoError(t, err, "node %d of %s", i, set)
				tc := c.SFU.TURN
				svc := find(objs, "Service", fmt.Sprintf("gx-gxconf-%d-media", i))
				if !tc.Enabled {
					for _, p := range list(svc, "spec", "ports") {
						require.False(t, strings.HasPrefix(str(p, "name"), "turn-"), "node %d: TURN port exposed while TURN is off", i)
					}
					continue
				}
				if i == 0 {
					tested++
				}
				require.NotEmpty(t, str(cm, "data", fmt.Sprintf("gx-gxconf-%d.yaml", i)))
				udpURL, tlsURL := turnURLPorts(c)
				require.True(t, udpURL > 0 || tlsURL > 0, "node %d: TURN without a port", i)
				require.Zero(t, tc.TCPPort, "plain TURN over TCP is not exposed by the chart")

				// The URLs' host is the node's own, not the shared Ingress host.
				require.NotEmpty(t, tc.Domain, "node %d: turn.domain (else the URLs name the Ingress host)", i)
				require.NotEqual(t, hostOf(objs), tc.Domain)
				if ip := net.ParseIP(tc.Domain); ip != nil {
					require.Equal(t, c.SFU.RTC.NodeIP, tc.Domain, "node %d: the TURN URLs name its advertised address", i)
				}
				if tlsURL != 0 {
					require.True(t, c.TLS.Enabled() || tc.ExternalTLS, "node %d: TURNS needs a certificate", i)
				}

				// The NetworkPolicy admits the listening ports from clients.
				if udpURL != 0 {
					require.True(t, allows(objs, "UDP", tc.UDPPort), "node %d: TURN UDP %d not allowed", i, tc.UDPPort)
				}
				if tlsURL != 0 {
					require.True(t, allows(objs, "TCP", tc.TLSPort), "node %d: TURNS %d not allowed", i, tc.TLSPort)
				}

				if hostNet {
					require.Nil(t, svc)
					require.Equal(t, tc.UDPPort, udpURL, "host network: the URL port is the host port")
					require.Equal(t, tc.TLSPort, tlsURL)
					continue
				}
				require.NotNil(t, svc, "node %d: media Service", i)
				want := map[string][2]int{"turn-udp": {udpURL, tc.UDPPort}, "turn-tls": {tlsURL, tc.TLSPort}}
				seen := map[string]bool{}
				for _, p := range list(svc, "spec", "ports") {
					name := str(p, "name")
					w, ok := want[name]
					if !ok {
						continue
					}
					seen[name] = true
					proto := map[string]string{"turn-udp": "UDP", "turn-tls": "TCP"}[name]
					require.Equal(t, proto, str(p, "protocol"), "node %d %s", i, name)
					require.Equal(t, w[0], num(p, "port"), "node %d %s: Service port = URL port", i, name)
					require.Equal(t, w[1], num(p, "targetPort"), "node %d %s: targetPort = listening port", i, name)
					if str(svc, "spec", "type") == "NodePort" {
						require.Equal(t, w[0], num(p, "nodePort"), "node %d %s: nodePort = URL port", i, name)
					}
				}
				require.Equal(t, udpURL != 0, seen["turn-udp"], "node %d: turn-udp exposed iff configured", i)
				require.Equal(t, tlsURL != 0, seen["turn-tls"], "node %d: turn-tls exposed iff configured", i)
				// No two ports of one Service collide on a protocol.
				ports := map[string]bool{}
				for _, p := range list(svc, "spec", "ports") {
					k := fmt.Sprintf("%s/%d", str(p, "protocol"), num(p, "port"))
					require.False(t, ports[k], "node %d: %s twice", i, k)
					ports[k] = true
				}
			}
		})
	}
	require.Positive(t, tested, "no value set enables TURN")
}

// TestTURNRefusedValues checks the TURN combinations the chart refuses.
func TestTURNRefusedValues(t *testing.T) {
	cases := map[string]struct {
		args []string
		want string
	}{
		"TURNS without certificate": {[]string{"--set", "turn.enabled=true"}, "turn.tlsPortBase needs tls.existingSecret"},
		"no TURN port":              {[]string{"--set", "turn.enabled=true", "--set", "turn.udpPortBase=0", "--set", "turn.tlsPortBase=0"}, "needs turn.udpPortBase or turn.tlsPortBase"},
		"collides with media":       {[]string{"--set", "turn.enabled=true", "--set", "turn.tlsPortBase=0", "--set", "turn.udpPortBase=30100"}, "collides"},
		"service port on NodePort": {[]string{"--set", "turn.enabled=true", "--set", "turn.tlsPortBase=0", "--set", "turn.udpPortBase=31300",
			"--set", "nodes.exposure.type=NodePort", "--set", "nodes.exposure.udpPortBase=31100", "--set", "nodes.exposure.tcpPortBase=31200",
			"--set", "turn.tlsServicePort=443"}, "tlsServicePort needs"},
		"NodePort outside range": {[]string{"--set", "turn.enabled=true", "--set", "turn.tlsPortBase=0",
			"--set", "nodes.exposure.type=NodePort", "--set", "nodes.exposure.udpPortBase=31100", "--set", "nodes.exposure.tcpPortBase=31200", "--set", "turn.udpPortBase=3478"}, "turn.udpPortBase+i"},
		"too few hosts":    {[]string{"--set", "turn.hosts={turn-0.rtc.bund.test}"}, "turn.hosts must name the TURN host of each of the 2 nodes"},
		"unknown TURN key": {[]string{"--set", "turn.tcpPortBase=1"}, "tcpPortBase"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			set := "minimal"
			if strings.HasPrefix(c.args[1], "turn.hosts") {
				set = "turn"
			}
			_, err := helmTemplate(t, set, c.args...)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
		})
	}
}
