#!/usr/bin/env bash
# Compares gxconf's embedded SFU with livekit-server under the same load,
# driven by `gxconf loadtest` (method of shared/reference/sfu-performance.md).
# A benchmark, not a test: not part of `make test`.
#
#   scripts/bench-compare.sh            # all settings and scenarios, 2 runs each
#   RUNS=3 SCENARIOS=1to150 SETTINGS="gxconf lk-cc" scripts/bench-compare.sh
#   GXCONF=/tmp/gx-a LOADTEST=bin/gxconf LOADTEST_ARGS=-audio-vbr scripts/bench-compare.sh
#     (another gxconf build as the SFU; the load tool of this one, with
#     audio frames of varying size as Opus sends them)
#
# Prints one line per run (and keeps each run's output in $OUT):
#   server setting scenario run  µs CPU per forwarded packet, delivered
#   packets/s, loss %, freezes (gaps over 500 ms between a stream's frames),
#   SFU RSS growth per subscribing participant (KB), join
#   p50/p99, tracks subscribed/expected, generator CPU %, host load average,
#   the share of the SFU's CPU spent in the kernel (kern%) and, for gxconf,
#   forwarded packets per UDP message its direct send path handed the kernel
#   (pkt/msg: what segmentation offload saved; from its metrics).
#
# Settings (SETTINGS, space-separated; runs alternate between them):
#   gxconf        gxconf serve with its defaults (direct send, UDP GSO on)
#   gxconf-nogso  the same with sfu.rtc.gso: false
#   gxconf-norecv the same with sfu.rtc.direct_receive: false (pion's receive path)
#   lk-cc         livekit-server, rtc.congestion_control.enabled: true (its default)
#   lk-nocc       livekit-server, rtc.congestion_control.enabled: false
# Scenarios (SCENARIOS):
#   1to150        1 publisher → 150 subscribe-only participants, top layer (-quality high)
#   meeting20     20 participants, each publishes audio + video and
#                 subscribes to the 19 others at the middle layer (-quality medium)
#
# What "identical" means here:
# - the same load: one `gxconf loadtest` binary with the same flags against
#   both (server-sdk-go clients; Opus-sized audio 50 pkt/s + VP8 simulcast
#   180p/360p/720p at 30 fps per publisher, the loadtest's default layers
#   and bitrates; join rate 10/s; WARMUP after the last join, then a
#   DURATION window), the same layer asked for (track_setting);
# - the same transport: one UDP port for all peers (ICE UDP mux) on
#   127.0.0.1, no ICE-TCP, no TURN, no STUN, same API key and a fresh random
#   secret per run (never written outside the run's temp dir, handed to the
#   load tool through LIVEKIT_API_KEY/LIVEKIT_API_SECRET, not argv);
# - the same codecs: livekit-server's room.enabled_codecs is cut to
#   audio/opus and video/vp8 (gxconf negotiates those; no RED, no RTX);
# - log level warn on both; no Redis, no webhooks; livekit-server's
#   Prometheus port off, gxconf's metrics listener on 127.0.0.1:METRICS_PORT
#   (idle but for one scrape before and one after the window);
# - pinning: the SFU on core SFU_CPU, the load tool on core GEN_CPU, both at
#   nice NICE (-10; the machine is shared). Linux with sched_autogroup
#   applies nice only within a session: each of the two is started in a
#   session of its own (setsid) whose autogroup gets the same nice, else a
#   build in another terminal takes half the SFU's core whatever its nice
#   (runs read 2-5x the CPU per packet with tens of % loss). CPU per packet
#   is the SFU's own CPU time, so other load moves it less than wall-clock
#   figures, but it still costs cache and frequency: read the load average
#   printed with each run;
# - congestion control: livekit-server's stream allocator (REMB/TWCC-driven
#   layer selection and probing) on or off. gxconf has no switch for it: its
#   subscribers' REMB always caps their layers (sfu/README.md), so "gxconf"
#   is compared with both. gxconf's GSO has no livekit-server counterpart
#   (its rtc.batch_io sendmmsg batching is off by default and stays off);
#   gxconf-nogso shows gxconf without it.
# livekit-server is v1.13.11 built on upstream pion by
# scripts/build-livekit-server.sh (LiveKit's pion forks are not available
# here), not its release binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-2}
FIRST_RUN=${FIRST_RUN:-1} # number of the first run (to add runs to an earlier series)
SETTINGS=${SETTINGS:-gxconf gxconf-nogso lk-cc lk-nocc}
SCENARIOS=${SCENARIOS:-1to150 meeting20}
WARMUP=${WARMUP:-10s}
DURATION=${DURATION:-30s}
SFU_CPU=${SFU_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
NICE=${NICE:--10}
SIGNAL_PORT=${SIGNAL_PORT:-17880}
UDP_PORT=${UDP_PORT:-17882}
METRICS_PORT=${METRICS_PORT:-17890}
GXCONF=${GXCONF:-$root/bin/gxconf}
LOADTEST=${LOADTEST:-$GXCONF}  # the gxconf binary whose `loadtest` drives the runs
LOADTEST_ARGS=${LOADTEST_ARGS:-} # more loadtest flags for every run, e.g. -audio-vbr
LIVEKIT=${LIVEKIT:-$root/.cache/bin/livekit-server}
OUT=${OUT:-$(mktemp -d /tmp/bench-compare.XXXXXX)}

need_gxconf=1
need_lk=0
for s in $SETTINGS; do
  case $s in
  gxconf | gxconf-nogso | gxconf-norecv) ;;
  lk-cc | lk-nocc) need_lk=1 ;;
  *) echo "bench-compare.sh: unknown setting $s" >&2; exit 2 ;;
  esac
done
for sc in $SCENARIOS; do
  case $sc in
  1to150 | meeting20) ;;
  *) echo "bench-compare.sh: unknown scenario $sc" >&2; exit 2 ;;
  esac
done
if [ "$need_gxconf" = 1 ] && [ ! -x "$GXCONF" ]; then
  echo "bench-compare.sh: $GXCONF missing (make build, or set GXCONF)" >&2; exit 1
fi
if [ "$need_lk" = 1 ] && [ ! -x "$LIVEKIT" ]; then
  "$root/scripts/build-livekit-server.sh" "$LIVEKIT"
fi
mkdir -p "$OUT"

sfu_pid=
gen_pid=
# cleanup stops this script's load tool and server (both run in sessions of
# their own, so a Ctrl-C on the terminal does not reach them).
cleanup() {
  if [ -n "$gen_pid" ]; then
    kill -INT "$gen_pid" 2>/dev/null || true
    gen_pid=
  fi
  if [ -n "$sfu_pid" ]; then
    kill "$sfu_pid" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
      kill -0 "$sfu_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$sfu_pid" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/bench-lib.sh
. "$root/scripts/bench-lib.sh" # prio, gxconf_bench_config, wait_ready

# start_sfu SETTING DIR: starts the server pinned to SFU_CPU, sets sfu_pid.
start_sfu() {
  local setting=$1 dir=$2 cc
  case $setting in
  gxconf | gxconf-nogso | gxconf-norecv)
    local gso=true recv=true
    [ "$setting" = gxconf-nogso ] && gso=false
    [ "$setting" = gxconf-norecv ] && recv=false
    gxconf_bench_config "$dir/gxconf.yaml" "$dir" "$secret" "$gso" "$recv"
    "$GXCONF" generate-registration -c "$dir/gxconf.yaml" -r "$dir/registration.yaml" >/dev/null
    prio "$dir/sfu.pid" taskset -c "$SFU_CPU" "$GXCONF" serve -c "$dir/gxconf.yaml" -r "$dir/registration.yaml" \
      >"$dir/sfu.log" 2>&1 &
    ;;
  lk-cc | lk-nocc)
    cc=true
    [ "$setting" = lk-nocc ] && cc=false
    (
      umask 077
      cat >"$dir/livekit.yaml" <<EOF
port: $SIGNAL_PORT
bind_addresses: ["127.0.0.1"]
keys: {bench: "$secret"}
logging: {level: warn}
rtc:
  udp_port: $UDP_PORT
  tcp_port: 0
  node_ip: 127.0.0.1
  use_external_ip: false
  enable_loopback_candidate: true
  congestion_control: {enabled: $cc}
room:
  enabled_codecs: [{mime: audio/opus}, {mime: video/vp8}]
EOF
    )
    prio "$dir/sfu.pid" taskset -c "$SFU_CPU" "$LIVEKIT" --config "$dir/livekit.yaml" >"$dir/sfu.log" 2>&1 &
    ;;
  esac
  wait_ready "$setting" "$dir"
}

# field FILE REGEX: the first capture group of the first matching line.
field() { sed -nE "s#$2#\\1#p" "$1" | head -1; }

printf '%-7s %-12s %-9s %3s %8s %8s %7s %7s %8s %8s %8s %7s %5s %5s %5s %7s\n' \
  server setting scenario run 'us/pkt' 'pkt/s' 'loss%' freezes 'KB/sub' 'join50' 'join99' tracks 'gen%' load 'kern%' 'pkt/msg'
for run in $(seq "$FIRST_RUN" $((FIRST_RUN + RUNS - 1))); do
  for scenario in $SCENARIOS; do
    case $scenario in
    1to150) args=(-publishers 1 -subscribers 150 -quality high) ;;
    meeting20) args=(-publishers 20 -subscribers 0 -quality medium) ;;
    esac
    for setting in $SETTINGS; do
      dir="$OUT/$scenario-$setting-$run"
      mkdir -p "$dir"
      secret=$(openssl rand -hex 32)
      start_sfu "$setting" "$dir" || exit 1
      metrics=()
      [ "${setting%%-*}" = gxconf ] && metrics=(-metrics-url "http://127.0.0.1:$METRICS_PORT")
      # In the background and waited for, so that a signal to this script
      # interrupts the wait (and cleanup stops the load tool).
      LIVEKIT_API_KEY=bench LIVEKIT_API_SECRET=$secret prio "$dir/loadtest.pid" taskset -c "$GEN_CPU" \
        "$LOADTEST" loadtest -url "ws://127.0.0.1:$SIGNAL_PORT" "${args[@]}" $LOADTEST_ARGS "${metrics[@]}" \
        -room-prefix "bench-$run" -warmup "$WARMUP" -duration "$DURATION" -sfu-pid "$sfu_pid" \
        >"$dir/loadtest.txt" 2>"$dir/loadtest.log" &
      wrapper=$!
      for i in $(seq 1 50); do
        [ -s "$dir/loadtest.pid" ] && gen_pid=$(cat "$dir/loadtest.pid") && break
        sleep 0.1
      done
      wait "$wrapper" || echo "bench-compare.sh: loadtest failed, see $dir" >&2
      gen_pid=
      cleanup
      sfu_pid=
      rm -f "$dir/gxconf.yaml" "$dir/livekit.yaml" "$dir/registration.yaml" "$dir/sfu.pid" "$dir/loadtest.pid"
      r=$dir/loadtest.txt
      server=${setting%%-*}
      [ "$server" = lk ] && server=livekit
      printf '%-7s %-12s %-9s %3s %8s %8s %7s %7s %8s %8s %8s %7s %5s %5s %5s %7s\n' "$server" "$setting" "$scenario" "$run" \
        "$(field "$r" '^sfu cpu / packet: +([0-9.]+) us.*')" \
        "$(field "$r" '^received: +[0-9]+ packets \(([0-9]+)\/s\).*')" \
        "$(field "$r" '^packet loss: +([0-9.]+) %.*')" \
        "$(field "$r" '^freezes: +([0-9]+) .*')" \
        "$(field "$r" '^sfu rss: .*, ([0-9]+) KB per participant$')" \
        "$(field "$r" '^joined: .*p50 ([^ ]+) p99.*')" \
        "$(field "$r" '^joined: .*p99 ([^ ]+)$')" \
        "$(field "$r" '^tracks subscribed: +([0-9]+ / [0-9]+) expected$' | tr -d ' ')" \
        "$(field "$r" '^generator cpu: +([0-9.]+) %.*')" \
        "$(field "$r" '^host: .*load average ([0-9.]+)$')" \
        "$(sed -nE 's#^sfu cpu: +([0-9.]+) s over .*; ([0-9.]+) s of it in the kernel\)$#\1 \2#p' "$r" | awk '$1 > 0 { printf "%.0f", $2 / $1 * 100 }')" \
        "$(field "$r" '^sfu sends: .*\(([0-9.]+) packets per message\).*')"
    done
  done
done
echo "# outputs: $OUT"
