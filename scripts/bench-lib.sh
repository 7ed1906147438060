# Shared by scripts/bench-compare.sh and scripts/profile-sfu.sh (sourced;
# they set NICE, SIGNAL_PORT and UDP_PORT first).

# prio PIDFILE CMD...: runs CMD in a session of its own whose autogroup (and
# CMD itself) has nice NICE, writing CMD's pid to PIDFILE ("-": nowhere).
# Linux with sched_autogroup applies nice only within a session, so a build
# in another terminal would otherwise take half the pinned core. Writing
# /proc/self/autogroup needs root for negative values; without it, only
# CMD's own nice is set.
prio() {
  setsid -w sh -c '[ "$1" = - ] || echo $$ >"$1"; echo "$0" >/proc/self/autogroup 2>/dev/null; shift; exec nice -n "$0" "$@"' "$NICE" "$@"
}

# gxconf_bench_config FILE DIR SECRET GSO: writes the benchmark's gxconf
# config (SFU only: no homeserver, meetings or metrics; log level warn; one
# UDP port on 127.0.0.1, no ICE-TCP), readable only by its owner (it holds
# the API secret), with its database in DIR.
gxconf_bench_config() {
  (
    umask 077
    cat >"$1" <<EOC
homeserver: {domain: bench.invalid, address: "http://127.0.0.1:1"}
database: {uri: "file:$2/gxconf.db?_txlock=immediate"}
appservice: {listen: "127.0.0.1:0"}
focus: {listen: "127.0.0.1:0"}
meetings: {enabled: false}
metrics: {enabled: false}
logging: {level: warn}
sfu:
  listen: "127.0.0.1:$SIGNAL_PORT"
  keys: {bench: "$3"}
  rtc: {udp_port: $UDP_PORT, tcp_port: 0, node_ip: 127.0.0.1, gso: $4}
EOC
  )
}
