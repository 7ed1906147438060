package deploy

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// podTemplates returns the workloads of a render with their pod templates.
func podTemplates(objs []obj) []obj {
	return ofKind(objs, "StatefulSet", "Deployment", "DaemonSet", "Job")
}

// TestManifests asserts, for every value set, what the issue demands of every
// workload: NetworkPolicy coverage, limits, restricted security settings, no
// service-account token, probes, a PDB, and that every Service and Ingress
// points at something that exists.
func TestManifests(t *testing.T) {
	for _, set := range valueSets(t) {
		t.Run(set, func(t *testing.T) {
			objs := render(t, set)
			policies := ofKind(objs, "NetworkPolicy")
			pdbs := ofKind(objs, "PodDisruptionBudget")
			workloads := podTemplates(objs)
			require.NotEmpty(t, workloads)
			for _, w := range workloads {
				id := w.kind() + "/" + w.name()
				pod := get(w, "spec", "template")
				labels := mapOf(pod, "metadata", "labels")
				spec := get(pod, "spec")

				// Default deny in both directions plus an allow-list of its own.
				var ingressCovered, egressCovered, specific bool
				for _, np := range policies {
					if !subset(mapOf(np, "spec", "podSelector", "matchLabels"), labels) {
						continue
					}
					for _, pt := range list(np, "spec", "policyTypes") {
						ingressCovered = ingressCovered || pt == "Ingress"
						egressCovered = egressCovered || pt == "Egress"
					}
					specific = specific || mapOf(np, "spec", "podSelector", "matchLabels")["app.kubernetes.io/component"] != nil
				}
				require.True(t, ingressCovered && egressCovered, "%s: not covered by an Ingress+Egress NetworkPolicy", id)
				require.True(t, specific, "%s: no NetworkPolicy of its own component", id)

				// No Kubernetes API access.
				require.Equal(t, false, get(spec, "automountServiceAccountToken"), "%s: SA token mounted", id)
				sa := find(objs, "ServiceAccount", str(spec, "serviceAccountName"))
				require.NotNil(t, sa, "%s: own ServiceAccount", id)
				require.Equal(t, false, get(sa, "automountServiceAccountToken"))

				// Restricted Pod Security (also checked by psacheck and the API server).
				require.Equal(t, true, get(spec, "securityContext", "runAsNonRoot"), id)
				require.Equal(t, "RuntimeDefault", str(spec, "securityContext", "seccompProfile", "type"), id)
				for _, c := range append(list(spec, "initContainers"), list(spec, "containers")...) {
					cid := id + "/" + str(c, "name")
					for _, r := range []string{"cpu", "memory"} {
						require.NotNil(t, get(c, "resources", "limits", r), "%s: no %s limit", cid, r)
						require.NotNil(t, get(c, "resources", "requests", r), "%s: no %s request", cid, r)
					}
					require.Equal(t, true, get(c, "securityContext", "readOnlyRootFilesystem"), cid)
					require.Equal(t, false, get(c, "securityContext", "allowPrivilegeEscalation"), cid)
					require.Equal(t, []any{"ALL"}, list(c, "securityContext", "capabilities", "drop"), cid)
					require.NotNil(t, get(c, "readinessProbe"), "%s: readiness probe", cid)
					require.NotNil(t, get(c, "livenessProbe"), "%s: liveness probe", cid)
					for _, e := range list(c, "env") {
						n := str(e, "name")
						if strings.Contains(n, "SECRET") || strings.Contains(n, "PASSWORD") || strings.Contains(n, "KEY") {
							mountedDir := strings.HasSuffix(n, "_DIR") && strings.HasPrefix(str(e, "value"), "/run/secrets/gxconf/")
							require.True(t, strings.HasSuffix(n, "_FILE") || mountedDir || get(e, "valueFrom", "secretKeyRef") != nil,
								"%s: secret %s must come from a Secret, not a literal", cid, n)
						}
					}
				}

				// Voluntary disruptions are bounded.
				var pdb bool
				for _, p := range pdbs {
					pdb = pdb || subset(mapOf(p, "spec", "selector", "matchLabels"), labels)
				}
				require.True(t, pdb, "%s: no PodDisruptionBudget", id)
			}

			// An empty peer list would allow everyone: every rule names its peers.
			for _, np := range policies {
				for _, dir := range []string{"ingress", "egress"} {
					for i, r := range list(np, "spec", dir) {
						peers := "from"
						if dir == "egress" {
							peers = "to"
						}
						require.NotEmpty(t, list(r, peers), "NetworkPolicy %s %s[%d] has no %s: it would allow everyone", np.name(), dir, i, peers)
					}
				}
			}

			// Every Service selects pods of this release; every Ingress
			// backend is a Service port that exists.
			for _, svc := range ofKind(objs, "Service") {
				sel := mapOf(svc, "spec", "selector")
				delete(sel, "statefulset.kubernetes.io/pod-name")
				var matched bool
				for _, w := range workloads {
					matched = matched || subset(sel, mapOf(w, "spec", "template", "metadata", "labels"))
				}
				require.True(t, matched, "Service %s selects no workload", svc.name())
			}
			for _, ing := range ofKind(objs, "Ingress") {
				for _, r := range list(ing, "spec", "rules") {
					for _, p := range list(r, "http", "paths") {
						svc := find(objs, "Service", str(p, "backend", "service", "name"))
						require.NotNil(t, svc, "Ingress %s path %s: no Service", ing.name(), str(p, "path"))
						port := str(p, "backend", "service", "port", "name")
						var ok bool
						for _, sp := range list(svc, "spec", "ports") {
							ok = ok || str(sp, "name") == port
						}
						require.True(t, ok, "Ingress %s path %s: Service %s has no port %s", ing.name(), str(p, "path"), svc.name(), port)
					}
				}
			}
		})
	}
}

// nodeConfigs returns each node's rendered gxconf config.
func nodeConfigs(t *testing.T, objs []obj) []map[string]any {
	t.Helper()
	cm := find(objs, "ConfigMap", "gx-gxconf")
	require.NotNil(t, cm)
	var out []map[string]any
	for i := 0; ; i++ {
		raw := str(cm, "data", fmt.Sprintf("gx-gxconf-%d.yaml", i))
		if raw == "" {
			return out
		}
		var c map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(raw), &c))
		out = append(out, c)
	}
}

// allows reports whether a NetworkPolicy ingress rule of the node policy
// opens port/proto.
func allows(objs []obj, proto string, port int) bool {
	np := find(objs, "NetworkPolicy", "gx-gxconf-node")
	for _, r := range list(np, "spec", "ingress") {
		for _, p := range list(r, "ports") {
			if str(p, "protocol") != proto {
				continue
			}
			lo, hi := num(p, "port"), num(p, "endPort")
			if hi < 0 {
				hi = lo
			}
			if port >= lo && port <= hi {
				return true
			}
		}
	}
	return false
}

// TestMediaPorts checks that each node's UDP (and ICE-TCP) port is the same
// number in its config, its Service (port, targetPort, nodePort) and its
// NetworkPolicy, and that the advertised address is the Service's address.
func TestMediaPorts(t *testing.T) {
	for _, set := range valueSets(t) {
		t.Run(set, func(t *testing.T) {
			objs := render(t, set)
			sts := find(objs, "StatefulSet", "gx-gxconf")
			hostNet := get(sts, "spec", "template", "spec", "hostNetwork") == true
			for i, c := range nodeConfigs(t, objs) {
				udp := num(c, "sfu", "rtc", "udp_port")
				tcp := num(c, "sfu", "rtc", "tcp_port")
				require.Positive(t, udp)
				require.True(t, allows(objs, "UDP", udp), "node %d: UDP %d not allowed by the NetworkPolicy", i, udp)
				if tcp > 0 {
					require.True(t, allows(objs, "TCP", tcp), "node %d: TCP %d not allowed", i, tcp)
				}
				svc := find(objs, "Service", fmt.Sprintf("gx-gxconf-%d-media", i))
				if hostNet {
					require.Nil(t, svc, "hostNetwork needs no media Service")
					continue
				}
				require.NotNil(t, svc, "node %d: media Service", i)
				require.Equal(t, fmt.Sprintf("gx-gxconf-%d", i), str(svc, "spec", "selector", "statefulset.kubernetes.io/pod-name"))
				want := map[string]int{"UDP": udp, "TCP": tcp}
				seen := map[string]bool{}
				for _, p := range list(svc, "spec", "ports") {
					if strings.HasPrefix(str(p, "name"), "turn-") {
						continue // TestTURNPorts
					}
					proto := str(p, "protocol")
					seen[proto] = true
					require.Equal(t, want[proto], num(p, "port"), "node %d %s: port = advertised port", i, proto)
					require.Equal(t, want[proto], num(p, "targetPort"), "node %d %s: targetPort = advertised port", i, proto)
					if str(svc, "spec", "type") == "NodePort" {
						require.Equal(t, want[proto], num(p, "nodePort"), "node %d %s: nodePort = advertised port", i, proto)
					}
				}
				require.True(t, seen["UDP"])
				require.Equal(t, tcp > 0, seen["TCP"])
				switch str(svc, "spec", "type") {
				case "LoadBalancer":
					ip := str(c, "sfu", "rtc", "node_ip")
					require.NotEmpty(t, ip, "node %d advertises its load balancer's address", i)
					if lb := str(svc, "spec", "loadBalancerIP"); lb != "" {
						require.Equal(t, lb, ip)
					}
				case "NodePort":
					require.Equal(t, "Local", str(svc, "spec", "externalTrafficPolicy"), "the pod's own node answers")
				default:
					t.Fatalf("media Service type %q", str(svc, "spec", "type"))
				}
			}
		})
	}
}

// TestWellKnown checks that the rtc_foci snippet, the focus's public_url and
// the Ingress host agree, and that each node's signalling path is routed to
// that node.
func TestWellKnown(t *testing.T) {
	for _, set := range valueSets(t) {
		t.Run(set, func(t *testing.T) {
			objs := render(t, set)
			host := hostOf(objs)
			require.NotEmpty(t, host)
			cm := find(objs, "ConfigMap", "gx-gxconf-well-known")
			require.NotNil(t, cm)
			var wk struct {
				Foci []struct {
					Type string `json:"type"`
					URL  string `json:"livekit_service_url"`
				} `json:"org.matrix.msc4143.rtc_foci"`
			}
			require.NoError(t, json.Unmarshal([]byte(str(cm, "data", "rtc_foci.json")), &wk))
			require.Len(t, wk.Foci, 1)
			require.Equal(t, "livekit", wk.Foci[0].Type)
			require.Equal(t, "https://"+host, wk.Foci[0].URL)
			for i, c := range nodeConfigs(t, objs) {
				require.Equal(t, "https://"+host, str(c, "focus", "public_url"))
				prefix := str(c, "sfu", "path_prefix")
				require.Equal(t, "wss://"+host+prefix, str(c, "sfu", "public_url"))
				var routed bool
				for _, ing := range ofKind(objs, "Ingress") {
					for _, r := range list(ing, "spec", "rules") {
						for _, p := range list(r, "http", "paths") {
							if str(r, "host") == host && str(p, "path") == prefix {
								routed = str(p, "backend", "service", "name") == fmt.Sprintf("gx-gxconf-%d", i)
							}
						}
					}
				}
				require.True(t, routed, "node %d: %s%s is routed to its own Service", i, host, prefix)
			}
		})
	}
}

// TestRefusedValues checks that combinations gxconf cannot run are refused
// at render time, by the schema or by the chart.
func TestRefusedValues(t *testing.T) {
	cases := map[string]struct {
		args []string
		want string
	}{
		"unknown key":                          {[]string{"--set", "nodes.replicaz=2"}, "replicaz"},
		"several nodes on SQLite":              {[]string{"--set", "nodes.replicas=2", "--set", "nodes.addresses={192.0.2.1,192.0.2.2}"}, "needs database.type postgres"},
		"LB without address":                   {[]string{"--set", "nodes.addresses=null"}, "nodes.addresses must name"},
		"NodePort outside range":               {[]string{"--set", "nodes.exposure.type=NodePort", "--set", "nodes.exposure.udpPortBase=7882"}, "30000-32767"},
		"chart-owned config key":               {[]string{"--set", "config.metrics.listen=127.0.0.1:1"}, "metrics"},
		"bad exposure":                         {[]string{"--set", "nodes.exposure.type=HostPort"}, "exposure"},
		"redis without cluster":                {[]string{"--set", "redis.mode=bundled"}, "needs cluster.enabled"},
		"external redis, no address":           {[]string{"--set", "cluster.enabled=true", "--set", "redis.mode=external"}, "needs redis.external.address"},
		"postgres without uri secret":          {[]string{"--set", "database.type=postgres"}, "needs secrets.databaseURI.existingSecret"},
		"postgres without NetworkPolicy peers": {[]string{"--set", "database.type=postgres", "--set", "secrets.databaseURI.existingSecret=db"}, "networkPolicy.database needs"},
		"external redis without CIDRs":         {[]string{"--set", "cluster.enabled=true", "--set", "redis.mode=external", "--set", "redis.external.address=r:6379"}, "redis.external.cidrs"},
		"no media CIDRs":                       {[]string{"--set", "networkPolicy.mediaCIDRs=null"}, "mediaCIDRs"},
		"message key without redis":            {[]string{"--set", "secrets.clusterMessageKey.existingSecret=k"}, "secrets.clusterMessageKey needs redis.mode"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := helmTemplate(t, "minimal", c.args...)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
		})
	}
}
