# Shared by scripts/bench-compare.sh and scripts/profile-sfu.sh (sourced;
# they set NICE, SIGNAL_PORT, UDP_PORT and METRICS_PORT first): prio,
# gxconf_bench_config, wait_ready.

# prio PIDFILE CMD...: runs CMD in a session of its own whose autogroup (and
# CMD itself) has nice NICE, writing CMD's pid to PIDFILE ("-": nowhere).
# Linux with sched_autogroup applies nice only within a session, so a build
# in another terminal would otherwise take half the pinned core. Writing
# /proc/self/autogroup needs root for negative values; without it, only
# CMD's own nice is set.
prio() {
  setsid -w sh -c '[ "$1" = - ] || echo $$ >"$1"; echo "$0" >/proc/self/autogroup 2>/dev/null; shift; exec nice -n "$0" "$@"' "$NICE" "$@"
}

# gxconf_bench_config FILE DIR SECRET GSO RECV: writes the benchmark's gxconf
# config (SFU only: no homeserver or meetings; metrics on
# 127.0.0.1:METRICS_PORT; log level warn; one UDP port on 127.0.0.1, no
# ICE-TCP), readable only by its owner (it holds the API secret), with its
# database in DIR.
gxconf_bench_config() {
  (
    umask 077
    cat >"$1" <<EOC
homeserver: {domain: bench.invalid, address: "http://127.0.0.1:1"}
database: {uri: "file:$2/gxconf.db?_txlock=immediate"}
appservice: {listen: "127.0.0.1:0"}
focus: {listen: "127.0.0.1:0"}
meetings: {enabled: false}
metrics: {enabled: true, listen: "127.0.0.1:$METRICS_PORT"}
logging: {level: warn}
sfu:
  listen: "127.0.0.1:$SIGNAL_PORT"
  keys: {bench: "$3"}
  rtc: {udp_port: $UDP_PORT, tcp_port: 0, node_ip: 127.0.0.1, gso: $4, direct_receive: $5}
EOC
  )
}

# wait_ready NAME DIR: waits until the server started with `prio
# DIR/sfu.pid …` (log in DIR/sfu.log) answers /rtc/validate on SIGNAL_PORT
# (401 without a token); sets sfu_pid. Fails, naming NAME, if it does not
# start, exits or does not listen within 20 s.
wait_ready() {
  local name=$1 dir=$2 i
  sfu_pid=
  for i in $(seq 1 50); do
    [ -s "$dir/sfu.pid" ] && sfu_pid=$(cat "$dir/sfu.pid") && break
    sleep 0.1
  done
  [ -n "$sfu_pid" ] || { echo "$(basename "$0"): $name did not start" >&2; return 1; }
  for i in $(seq 1 200); do
    if ! kill -0 "$sfu_pid" 2>/dev/null; then
      echo "$(basename "$0"): $name exited at start, see $dir/sfu.log" >&2
      sfu_pid=
      return 1
    fi
    if curl -s -o /dev/null "http://127.0.0.1:$SIGNAL_PORT/rtc/validate"; then
      return 0
    fi
    sleep 0.1
  done
  echo "$(basename "$0"): $name not listening on $SIGNAL_PORT, see $dir/sfu.log" >&2
  return 1
}
