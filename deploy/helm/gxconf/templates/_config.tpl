{{/*
The gxconf config file of node .i: the operator's `config` values overlaid
with what the chart derives. Only keys gxconf knows may appear here; the Go
test deploy/helm_config_test.go decodes every node's file with gxconf's own
strict parser for every value set.
*/}}
{{- define "gxconf.nodeConfig" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $i := int .i -}}
{{- $full := include "gxconf.fullname" $root -}}
{{- $node := printf "%s-%d" $full $i -}}
{{- $prefix := printf "/sfu/%d" $i -}}
{{- $signal := printf "wss://%s%s" $v.ingress.host $prefix -}}
{{- $rtc := dict "udp_port" (int (include "gxconf.udpPort" (dict "root" $root "i" $i))) -}}
{{- $tcp := int (include "gxconf.tcpPort" (dict "root" $root "i" $i)) -}}
{{- $_ := set $rtc "tcp_port" $tcp -}}
{{- $addr := include "gxconf.staticAddress" (dict "root" $root "i" $i) -}}
{{- if $addr -}}{{- $_ := set $rtc "node_ip" $addr -}}{{- end -}}
{{- $turn := dict "enabled" false -}}
{{- if $v.turn.enabled -}}
{{- $a := dict "root" $root "i" $i -}}
{{- $tlsPort := int (include "gxconf.turnTLSPort" $a) -}}
{{- $turn = dict "enabled" true "udp_port" (int (include "gxconf.turnUDPPort" $a)) "tls_port" $tlsPort "tcp_port" 0
  "relay_port_range_start" (int $v.turn.relayPortRangeStart) "relay_port_range_end" (int $v.turn.relayPortRangeEnd) "user_quota" (int $v.turn.userQuota) -}}
{{- $ext := int (include "gxconf.turnTLSServicePort" $a) -}}
{{- if and $tlsPort (ne $ext $tlsPort) -}}{{- $_ := set $turn "external_tls_port" $ext -}}{{- end -}}
{{- if $v.turn.hosts -}}
{{- $_ := set $turn "domain" (index $v.turn.hosts $i) -}}
{{- else if $addr -}}
{{- $_ := set $turn "domain" $addr -}}
{{- end -}}
{{- end -}}
{{- $db := dict "type" $v.database.type "max_open_conns" (int $v.database.maxOpenConns) "max_idle_conns" (int $v.database.maxIdleConns) -}}
{{- if ne $v.database.type "postgres" -}}
{{- $_ := set $db "uri" "file:/var/lib/gxconf/gxconf.db?_txlock=immediate" -}}
{{- end -}}
{{- $derived := dict
  "homeserver" (dict "domain" $v.homeserver.domain "address" $v.homeserver.address)
  "database" $db
  "appservice" (dict "listen" (printf "0.0.0.0:%d" (int $v.appservice.port)) "address" (include "gxconf.appserviceAddress" $root))
  "focus" (dict "listen" "0.0.0.0:8080" "public_url" (include "gxconf.focusURL" $root))
  "sfu" (dict "enabled" true "listen" "0.0.0.0:7880" "path_prefix" $prefix "public_url" $signal "node_id" $node "region" $v.cluster.site "rtc" $rtc "turn" $turn)
  "metrics" (dict "enabled" $v.metrics.enabled "listen" (printf "0.0.0.0:%d" (int $v.metrics.port)) "tls" (and $v.metrics.enabled $v.metrics.tls))
-}}
{{- if $v.tls.existingSecret -}}
{{- $tdir := printf "%s/tls" (include "gxconf.secretDir" $root) -}}
{{- $_ := set $derived "tls" (dict "cert_file" (printf "%s/tls.crt" $tdir) "key_file" (printf "%s/tls.key" $tdir) "min_version" $v.tls.minVersion) -}}
{{- end -}}
{{- if $v.cluster.enabled -}}
{{- $cl := dict "node_id" $node "site" $v.cluster.site "signal_url" $signal -}}
{{- if $v.cluster.federation -}}{{- $_ := set $cl "federation" $v.cluster.federation -}}{{- end -}}
{{- if $v.cluster.defaultSite -}}{{- $_ := set $cl "default_site" $v.cluster.defaultSite -}}{{- end -}}
{{- if $v.cluster.sites -}}{{- $_ := set $cl "sites" $v.cluster.sites -}}{{- end -}}
{{- if $v.cluster.homeservers -}}{{- $_ := set $cl "homeservers" $v.cluster.homeservers -}}{{- end -}}
{{- if $addr -}}{{- $_ := set $cl "media_addresses" (list (printf "%s:%d" $addr (int $rtc.udp_port))) -}}{{- end -}}
{{- if ne $v.redis.mode "none" -}}
{{- $r := dict "address" (include "gxconf.redisAddress" $root) -}}
{{- $sec := include "gxconf.secretDir" $root -}}
{{- if eq $v.redis.mode "external" -}}
{{- $e := $v.redis.external -}}
{{- if $e.username -}}{{- $_ := set $r "username" $e.username -}}{{- end -}}
{{- if $e.passwordSecret.name -}}{{- $_ := set $r "password_file" (printf "%s/redis-password/%s" $sec $e.passwordSecret.key) -}}{{- end -}}
{{- if $e.db -}}{{- $_ := set $r "db" (int $e.db) -}}{{- end -}}
{{- $_ := set $r "key_prefix" $e.keyPrefix -}}
{{- if $e.tls.enabled -}}
{{- $t := dict "enabled" true -}}
{{- if $e.tls.secretName -}}{{- $_ := set $t "ca_file" (printf "%s/redis-tls/ca.crt" $sec) -}}{{- end -}}
{{- if $e.tls.clientCert -}}
{{- $_ := set $t "cert_file" (printf "%s/redis-tls/tls.crt" $sec) -}}
{{- $_ := set $t "key_file" (printf "%s/redis-tls/tls.key" $sec) -}}
{{- end -}}
{{- if $e.tls.serverName -}}{{- $_ := set $t "server_name" $e.tls.serverName -}}{{- end -}}
{{- $_ := set $r "tls" $t -}}
{{- end -}}
{{- else if $v.redis.bundled.passwordSecret.name -}}
{{- $_ := set $r "password_file" (printf "%s/redis-password/%s" $sec $v.redis.bundled.passwordSecret.key) -}}
{{- end -}}
{{- $_ := set $cl "redis" $r -}}
{{- end -}}
{{- $_ := set $derived "cluster" $cl -}}
{{- end -}}
{{- $peers := dict -}}
{{- range $e := fromYamlArray (include "gxconf.fileSecrets" $root) -}}
{{- if $e.peer -}}
{{- $_ := set $peers $e.peer (dict "secret_file" (printf "%s/%s/%s" (include "gxconf.secretDir" $root) $e.name $e.key)) -}}
{{- end -}}
{{- end -}}
{{- if $peers -}}{{- $_ := set $derived "peering" (dict "peers" $peers) -}}{{- end -}}
{{- $cfg := mustMergeOverwrite (deepCopy $v.config) $derived -}}
{{- toYaml $cfg -}}
{{- end -}}
