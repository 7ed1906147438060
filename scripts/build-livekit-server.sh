#!/usr/bin/env bash
# Builds livekit-server (the reference SFU of scripts/bench-compare.sh) into
# $1 (default .cache/bin/livekit-server). Not part of `make test`.
# `go install github.com/livekit/livekit-server/cmd/server@…` refuses the
# module: its go.mod has replace directives (pion/webrtc, dtls, ice → LiveKit's
# "warp" forks). Those forks are not served by the module proxy (403), so the
# replaces are dropped and the upstream pion versions its go.mod requires are
# used ("livekit-server on upstream pion" in README.md). Upstream pion lacks
# one fork method, SettingEngine.EnableSped, called only with
# rtc.enable_warp (off by default, and off in scripts/bench-compare.sh): that
# one call is removed. The module is built
# as the main module in a writable copy. Its go.mod says `go 1.26.0`: the
# machine's Go 1.26.8 builds it, no GOTOOLCHAIN needed. Idempotent: an
# existing binary of the same version is kept.
set -euo pipefail
version=v1.13.11
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$root/.cache/bin/livekit-server}") # absolute: the build runs in a temporary copy
if [ -x "$out" ] && [ "$(cat "$out.version" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
src=$(cd /tmp && go mod download -json "github.com/livekit/livekit-server@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$src" ] || { echo "build-livekit-server.sh: go mod download gave no directory" >&2; exit 1; }
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
chmod -R u+w "$work"
mkdir -p "$(dirname "$out")"
cd "$work"
for m in github.com/pion/webrtc/v4 github.com/pion/dtls/v3 github.com/pion/ice/v4; do
  go mod edit -dropreplace "$m"
done
grep -q 'se.EnableSped(true)' pkg/rtc/transport.go
sed -i '/se.EnableSped(true)/d' pkg/rtc/transport.go
GOFLAGS=-mod=mod go build -trimpath -o "$out.tmp" ./cmd/server
mv "$out.tmp" "$out"
echo "$version" > "$out.version"
