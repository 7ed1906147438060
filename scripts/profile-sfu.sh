#!/usr/bin/env bash
# Profiles gxconf's SFU under `gxconf loadtest` and says where each forwarded
# packet's CPU goes (sfu/README.md, "Where each forwarded packet's CPU goes").
# A benchmark, not a test: not part of `make test`. Needs perf (linux-perf)
# and python3.
#
#   scripts/profile-sfu.sh             # 1 publisher → 150 subscribers, top layer
#   SCENARIO=meeting20 scripts/profile-sfu.sh
#   GSO=false scripts/profile-sfu.sh   # without segmentation offload (sfu.rtc.gso)
#   DIRECT_RECEIVE=false scripts/profile-sfu.sh   # pion's receive path (sfu.rtc.direct_receive)
#
# gxconf runs as in scripts/bench-compare.sh (pinned to core SFU_CPU, the load
# tool to GEN_CPU, each at nice NICE in a session of its own); `perf record
# -g` samples the SFU for PERF_SECONDS inside the load tool's window. Prints
# the load tool's report and a table: share of the SFU's CPU and µs per
# forwarded packet for each area (scripts/perf-classify.py). perf adds a few
# % to the SFU's CPU; the µs column scales the shares to the run's own figure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
SCENARIO=${SCENARIO:-1to150}
SFU_CPU=${SFU_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
NICE=${NICE:--10}
SIGNAL_PORT=${SIGNAL_PORT:-17880}
UDP_PORT=${UDP_PORT:-17882}
METRICS_PORT=${METRICS_PORT:-17890}
PERF_SECONDS=${PERF_SECONDS:-20}
GXCONF=${GXCONF:-$root/bin/gxconf}
OUT=${OUT:-$(mktemp -d /tmp/profile-sfu.XXXXXX)}

case $SCENARIO in
1to150) load=(-publishers 1 -subscribers 150 -quality high) joins=151 ;;
meeting20) load=(-publishers 20 -subscribers 0 -quality medium) joins=20 ;;
*) echo "profile-sfu.sh: unknown scenario $SCENARIO (1to150, meeting20)" >&2; exit 2 ;;
esac
command -v perf >/dev/null || { echo "profile-sfu.sh: perf missing (apt-get install linux-perf)" >&2; exit 1; }
[ -x "$GXCONF" ] || { echo "profile-sfu.sh: $GXCONF missing (make build, or set GXCONF)" >&2; exit 1; }
mkdir -p "$OUT"
secret=$(head -c 32 /dev/urandom | base64 | tr -d '/+=')

sfu_pid=
cleanup() {
  if [ -n "$sfu_pid" ]; then kill "$sfu_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

# shellcheck source=scripts/bench-lib.sh
. "$root/scripts/bench-lib.sh" # prio, gxconf_bench_config, wait_ready

gxconf_bench_config "$OUT/gxconf.yaml" "$OUT" "$secret" "${GSO:-true}" "${DIRECT_RECEIVE:-true}"
"$GXCONF" generate-registration -c "$OUT/gxconf.yaml" -r "$OUT/registration.yaml" >/dev/null
prio "$OUT/sfu.pid" taskset -c "$SFU_CPU" "$GXCONF" serve -c "$OUT/gxconf.yaml" -r "$OUT/registration.yaml" \
  >"$OUT/sfu.log" 2>&1 &
wait_ready gxconf "$OUT"

# The window starts 10 s after the last join (joins at 10/s); perf starts 5 s
# into it.
(
  sleep $((joins / 10 + 1 + 10 + 5))
  perf record -F 999 -g -p "$sfu_pid" -o "$OUT/perf.data" -- sleep "$PERF_SECONDS" >"$OUT/perf.log" 2>&1
) &
perf_job=$!
LIVEKIT_API_KEY=bench LIVEKIT_API_SECRET=$secret prio - taskset -c "$GEN_CPU" "$GXCONF" loadtest \
  -url "ws://127.0.0.1:$SIGNAL_PORT" "${load[@]}" -warmup 10s -duration 30s -sfu-pid "$sfu_pid" \
  -metrics-url "http://127.0.0.1:$METRICS_PORT" \
  >"$OUT/loadtest.txt" 2>&1
wait "$perf_job"
grep -vE '^\S*[0-9]{2}:[0-9]{2}:[0-9]{2}' "$OUT/loadtest.txt" || true
us=$(sed -n 's/^sfu cpu \/ packet: *\([0-9.]*\) us.*/\1/p' "$OUT/loadtest.txt")
echo
perf script -i "$OUT/perf.data" 2>/dev/null | python3 "$root/scripts/perf-classify.py" "${us:-0}"
echo "(perf data and the run's files: $OUT)"
