{{/* Names and labels. */}}
{{- define "gxconf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gxconf.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gxconf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gxconf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gxconf.labels" -}}
{{ include "gxconf.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gxconf
{{- end -}}

{{/* Selector of the gxconf nodes (component node). */}}
{{- define "gxconf.nodeSelectorLabels" -}}
{{ include "gxconf.selectorLabels" . }}
app.kubernetes.io/component: node
{{- end -}}

{{- define "gxconf.redisSelectorLabels" -}}
{{ include "gxconf.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "gxconf.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "gxconf.redisImage" -}}
{{- $i := .Values.redis.bundled.image -}}
{{- if $i.digest -}}
{{ $i.repository }}@{{ $i.digest }}
{{- else -}}
{{ $i.repository }}:{{ $i.tag }}
{{- end -}}
{{- end -}}

{{/* Ports of node $i: dict with udp, tcp. */}}
{{- define "gxconf.udpPort" -}}
{{- add .root.Values.nodes.exposure.udpPortBase .i -}}
{{- end -}}
{{- define "gxconf.tcpPort" -}}
{{- if .root.Values.nodes.exposure.tcpPortBase -}}
{{- add .root.Values.nodes.exposure.tcpPortBase .i -}}
{{- else -}}0{{- end -}}
{{- end -}}

{{/* TURN ports of node $i (0: off): container ports, and the TURNS port its Service offers. */}}
{{- define "gxconf.turnUDPPort" -}}
{{- $t := .root.Values.turn -}}
{{- if and $t.enabled $t.udpPortBase -}}{{- add $t.udpPortBase .i -}}{{- else -}}0{{- end -}}
{{- end -}}
{{- define "gxconf.turnTLSPort" -}}
{{- $t := .root.Values.turn -}}
{{- if and $t.enabled $t.tlsPortBase -}}{{- add $t.tlsPortBase .i -}}{{- else -}}0{{- end -}}
{{- end -}}
{{- define "gxconf.turnTLSServicePort" -}}
{{- $p := int (include "gxconf.turnTLSPort" .) -}}
{{- if and $p (eq .root.Values.nodes.exposure.type "LoadBalancer") .root.Values.turn.tlsServicePort -}}
{{- .root.Values.turn.tlsServicePort -}}
{{- else -}}{{- $p -}}{{- end -}}
{{- end -}}

{{/* Whether node i's advertised address comes from the config file (a static address). */}}
{{- define "gxconf.staticAddress" -}}
{{- $x := .root.Values.nodes.exposure -}}
{{- if or (eq $x.type "LoadBalancer") (and (eq $x.type "NodePort") (eq $x.nodePort.addressSource "static")) -}}
{{- index .root.Values.nodes.addresses .i -}}
{{- end -}}
{{- end -}}

{{- define "gxconf.redisAddress" -}}
{{- if eq .Values.redis.mode "bundled" -}}
{{ include "gxconf.fullname" . }}-redis:6379
{{- else if eq .Values.redis.mode "external" -}}
{{ .Values.redis.external.address }}
{{- end -}}
{{- end -}}

{{- define "gxconf.appserviceAddress" -}}
{{- if .Values.appservice.address -}}
{{ .Values.appservice.address }}
{{- else if .Values.appservice.ingress.enabled -}}
https://{{ .Values.appservice.ingress.host }}
{{- else -}}
{{ ternary "https" "http" (not (empty .Values.tls.existingSecret)) }}://{{ include "gxconf.fullname" . }}-appservice.{{ .Release.Namespace }}.svc:{{ .Values.appservice.port }}
{{- end -}}
{{- end -}}

{{/* The focus's public URL: rtc_foci livekit_service_url and focus.public_url. */}}
{{- define "gxconf.focusURL" -}}
https://{{ .Values.ingress.host }}
{{- end -}}

{{/* Secrets mount paths. */}}
{{- define "gxconf.secretDir" -}}/run/secrets/gxconf{{- end -}}

{{/*
The secrets.* options beyond the ones the StatefulSet spells out, as a YAML
list: each is one key of an existing Secret, mounted read-only at
<secretDir>/<name>/<key>. env is the variable that tells gxconf the file
(GXCONF_<PATH>_FILE); a peer's secret has none, its path goes into the
config file as peering.peers.<peer>.secret_file (gxconf reads no map of
sections from the environment).
*/}}
{{- define "gxconf.fileSecrets" -}}
{{- $s := .Values.secrets -}}
{{- $out := list -}}
{{- range $e := list
  (list "focus-sfu-secret" $s.focusSFUSecret "GXCONF_FOCUS__SFU__API_SECRET_FILE")
  (list "turn-servers" $s.turnServers "GXCONF_SFU__RTC__TURN_SERVERS_FILE")
  (list "catalog-client-secret" $s.catalogClientSecret "GXCONF_CATALOG__ADMIN__CLIENT_SECRET_FILE")
  (list "catalog-signing-key" $s.catalogSigningKey "GXCONF_CATALOG__SIGNING_KEY_FILE")
  (list "oid4vp-signing-key" $s.oid4vpSigningKey "GXCONF_CREDENTIALS__OID4VP__SIGNING_KEY_FILE")
  (list "cluster-message-key" $s.clusterMessageKey "GXCONF_CLUSTER__MESSAGE_KEY_FILE") -}}
{{- $ref := index $e 1 | default dict -}}
{{- if $ref.existingSecret -}}
{{- $out = append $out (dict "name" (index $e 0) "secret" $ref.existingSecret "key" $ref.key "env" (index $e 2)) -}}
{{- end -}}
{{- end -}}
{{- range $peer, $ref := $s.peerSecrets -}}
{{- $out = append $out (dict "name" (printf "peer-%s" $peer) "secret" $ref.existingSecret "key" $ref.key "peer" $peer) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
Refuses secrets in the config passthrough: it is rendered into a ConfigMap
(readable by whoever may read ConfigMaps, shown by kubectl describe, kept in
the release history as plain text). Each key names the secrets.* option
that mounts it from a Secret instead. An empty value holds no secret.
*/}}
{{- define "gxconf.validateConfigSecrets" -}}
{{- $c := .Values.config | default dict -}}
{{- range $r := list
  (list "sfu.keys" "secrets.sfuKey")
  (list "sfu.turn.secret" "secrets.turnSecret")
  (list "focus.sfu.api_secret" "secrets.focusSFUSecret")
  (list "bridge.secret" "secrets.relaySecret")
  (list "credentials.at_rest_key" "secrets.atRestKey (or secrets.atRestKeys)")
  (list "catalog.admin.client_secret" "secrets.catalogClientSecret") -}}
{{- $val := $c -}}
{{- range $k := splitList "." (index $r 0) -}}
{{- if kindIs "map" $val -}}{{- $val = get $val $k -}}{{- else -}}{{- $val = "" -}}{{- end -}}
{{- end -}}
{{- if not (empty $val) -}}
{{- fail (printf "config.%s holds a secret, and config is rendered into a ConfigMap: remove it and give it from a Secret with %s" (index $r 0) (index $r 1)) -}}
{{- end -}}
{{- end -}}
{{- $rtc := get $c "sfu" -}}
{{- if kindIs "map" $rtc -}}{{- $rtc = get $rtc "rtc" -}}{{- end -}}
{{- if kindIs "map" $rtc -}}
{{- range $i, $ts := (get $rtc "turn_servers" | default list) -}}
{{- if and (kindIs "map" $ts) (not (empty (get $ts "credential"))) -}}
{{- fail (printf "config.sfu.rtc.turn_servers[%d].credential holds a secret, and config is rendered into a ConfigMap: remove sfu.rtc.turn_servers from config and give the whole list from a Secret with secrets.turnServers" $i) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $peering := get $c "peering" -}}
{{- $peers := dict -}}
{{- if kindIs "map" $peering -}}{{- $peers = get $peering "peers" | default dict -}}{{- end -}}
{{- if kindIs "map" $peers -}}
{{- range $name, $p := $peers -}}
{{- if and (kindIs "map" $p) (not (empty (get $p "secret"))) -}}
{{- fail (printf "config.peering.peers.%s.secret holds a secret, and config is rendered into a ConfigMap: remove it and give it from a Secret with secrets.peerSecrets.%s" $name $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $name, $_ := .Values.secrets.peerSecrets -}}
{{- if not (and (kindIs "map" $peers) (hasKey $peers $name)) -}}
{{- fail (printf "secrets.peerSecrets.%s names no peer in config.peering.peers" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Checks the combinations the schema cannot express.
*/}}
{{- define "gxconf.validate" -}}
{{- $v := .Values -}}
{{- include "gxconf.validateConfigSecrets" . -}}
{{- if gt (int $v.nodes.replicas) 1 -}}
{{- if ne $v.database.type "postgres" -}}{{ fail "nodes.replicas > 1 needs database.type postgres (SQLite is one node's file)" }}{{- end -}}
{{- if eq $v.redis.mode "none" -}}{{ fail "nodes.replicas > 1 needs redis.mode bundled or external (the nodes share a registry)" }}{{- end -}}
{{- if not $v.cluster.enabled -}}{{ fail "nodes.replicas > 1 needs cluster.enabled (requires gxconf with the cluster section)" }}{{- end -}}
{{- if not $v.secrets.sfuKey.existingSecret -}}{{ fail "nodes.replicas > 1 needs secrets.sfuKey.existingSecret (one SFU key for all nodes)" }}{{- end -}}
{{- end -}}
{{- if and $v.cluster.enabled $v.cluster.relay.enabled (not $v.secrets.relaySecret.existingSecret) -}}{{ fail "cluster.relay.enabled needs secrets.relaySecret.existingSecret (the relay's shared secret)" }}{{- end -}}
{{- if and (ne $v.redis.mode "none") (not $v.cluster.enabled) -}}{{ fail "redis.mode bundled|external needs cluster.enabled" }}{{- end -}}
{{- if and $v.secrets.clusterMessageKey.existingSecret (eq $v.redis.mode "none") -}}{{ fail "secrets.clusterMessageKey needs redis.mode bundled|external (a single node sends no messages)" }}{{- end -}}
{{- if and (eq $v.redis.mode "external") (not $v.redis.external.address) -}}{{ fail "redis.mode external needs redis.external.address" }}{{- end -}}
{{- if and (eq $v.database.type "postgres") (not $v.secrets.databaseURI.existingSecret) -}}{{ fail "database.type postgres needs secrets.databaseURI.existingSecret" }}{{- end -}}
{{- $x := $v.nodes.exposure -}}
{{- if or (eq $x.type "LoadBalancer") (and (eq $x.type "NodePort") (eq $x.nodePort.addressSource "static")) -}}
{{- if lt (len ($v.nodes.addresses | default list)) (int $v.nodes.replicas) -}}{{ fail (printf "nodes.addresses must name the advertised address of each of the %d nodes (exposure %s)" (int $v.nodes.replicas) $x.type) }}{{- end -}}
{{- end -}}
{{- if eq $x.type "NodePort" -}}
{{- if or (lt (int $x.udpPortBase) 30000) (gt (add $x.udpPortBase $v.nodes.replicas) 32768) -}}{{ fail "NodePort: udpPortBase+i must lie in 30000-32767" }}{{- end -}}
{{- if and $x.tcpPortBase (or (lt (int $x.tcpPortBase) 30000) (gt (add $x.tcpPortBase $v.nodes.replicas) 32768)) -}}{{ fail "NodePort: tcpPortBase+i must lie in 30000-32767" }}{{- end -}}
{{- end -}}
{{- if $v.networkPolicy.enabled -}}
{{- $np := $v.networkPolicy -}}
{{- if and (eq $v.database.type "postgres") (not (or $np.database.cidrs $np.database.namespaceSelector $np.database.podSelector)) -}}{{ fail "networkPolicy.database needs cidrs or selectors for PostgreSQL (an empty peer list would allow every destination)" }}{{- end -}}
{{- if not $np.mediaCIDRs -}}{{ fail "networkPolicy.mediaCIDRs must name where clients send media from (0.0.0.0/0 and ::/0 for everyone)" }}{{- end -}}
{{- if and (eq $v.redis.mode "external") (not $v.redis.external.cidrs) -}}{{ fail "redis.external.cidrs must name Redis's addresses for the NetworkPolicy" }}{{- end -}}
{{- end -}}
{{- if and $v.metrics.enabled $v.metrics.tls (not $v.tls.existingSecret) -}}{{ fail "metrics.tls needs tls.existingSecret (the metrics listener serves its certificate)" }}{{- end -}}
{{- if $v.turn.enabled -}}
{{- $t := $v.turn -}}
{{- if not (or $t.udpPortBase $t.tlsPortBase) -}}{{ fail "turn.enabled needs turn.udpPortBase or turn.tlsPortBase" }}{{- end -}}
{{- if and $t.tlsPortBase (not $v.tls.existingSecret) -}}{{ fail "turn.tlsPortBase needs tls.existingSecret (TURNS uses the listeners' certificate, which must name the TURN hosts), or 0" }}{{- end -}}
{{- if and $t.tlsServicePort (ne $x.type "LoadBalancer") -}}{{ fail "turn.tlsServicePort needs nodes.exposure.type LoadBalancer (a nodePort or host port is the container port)" }}{{- end -}}
{{- if gt (int $t.relayPortRangeStart) (int $t.relayPortRangeEnd) -}}{{ fail "turn.relayPortRangeEnd must be >= turn.relayPortRangeStart" }}{{- end -}}
{{- $ports := dict -}}
{{- range $i, $_ := until (int $v.nodes.replicas) -}}
{{- $a := dict "root" $ "i" $i -}}
{{- range $p := list (include "gxconf.udpPort" $a) (include "gxconf.tcpPort" $a) (include "gxconf.turnUDPPort" $a) (include "gxconf.turnTLSPort" $a) -}}
{{- if and (ne $p "0") (hasKey $ports $p) -}}{{ fail (printf "turn: port %s of node %d collides with another media or TURN port (choose turn.udpPortBase/tlsPortBase apart from nodes.exposure.*PortBase by more than nodes.replicas)" $p $i) }}{{- end -}}
{{- $_ := set $ports $p true -}}
{{- end -}}
{{- end -}}
{{- if eq $x.type "NodePort" -}}
{{- range $b := list $t.udpPortBase $t.tlsPortBase -}}
{{- if and $b (or (lt (int $b) 30000) (gt (add $b $v.nodes.replicas) 32768)) -}}{{ fail "NodePort: turn.udpPortBase+i and turn.tlsPortBase+i must lie in 30000-32767" }}{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $t.hosts (lt (len $t.hosts) (int $v.nodes.replicas)) -}}{{ fail (printf "turn.hosts must name the TURN host of each of the %d nodes (or be empty)" (int $v.nodes.replicas)) }}{{- end -}}
{{- end -}}
{{- if and $v.appservice.ingress.enabled (not $v.appservice.ingress.host) -}}{{ fail "appservice.ingress.enabled needs appservice.ingress.host" }}{{- end -}}
{{- end -}}
