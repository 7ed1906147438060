#!/usr/bin/env bash
# Installs what gxconf's tests and demo need, skipping what is already there:
#  - Dendrite v0.13.8 and its generate-keys/generate-config/create-account tools (go install, cached in .cache/bin)
#  - PostgreSQL's server (apt), which the tests start as a throwaway cluster
#  - npm packages of test/credharness (npm ci from the committed lockfile)
#  - Chromium (Debian's chromium, /usr/bin/chromium), which the browser call tests drive
#  - Redis (Debian's redis-server), which the cluster tests start on a loopback port
#  - nftables (apt), whose nft filters the TURN test's client namespace to one TCP port
#  - HAProxy (Debian's haproxy), each site's entry in the sites test
#  - openssl (deploy/check.sh; its helm, kubeconform, etcd and kube-apiserver are built
#    from source by deploy/tools/build.sh, which check.sh runs)
#  - npm packages of test/ecembed: Element Call embedded (@element-hq/element-call-embedded)
#    and the widget host the Element Call browser test puts it in (npm ci from the lockfile)
#  - npm packages of test/icaljs: Mozilla's ical.js, the independent reader of the meetings' .ics files
#  - npm packages of web/, the browser call client (npm ci from the committed lockfile)
#  - ORY Hydra (scripts/build-hydra.sh, cached in .cache/bin), the OpenID provider of the
#    catalogue admin tests, and the npm packages of test/catalogcheck (jose, jsonld,
#    rdf-validate-shacl), which check the catalogue's credentials independently
# `scripts/deps.sh web` installs only the latter (what `make web` needs).
# Later additions (browser, Redis, npm packages) are installed here too, so that
# `make test` works on a fresh machine and in CI alike.
set -euo pipefail
cd "$(dirname "$0")/.."

# npm packages from a directory's lockfile; re-installed when the lockfile is
# newer than node_modules.
npm_ci() {
  local dir=$1
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "deps: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
need_node() {
  command -v node >/dev/null && command -v npm >/dev/null || { echo "deps: Node.js 20 and npm are required" >&2; exit 1; }
}
if [ "${1:-}" = web ]; then
  need_node
  npm_ci web
  exit 0
fi

BIN="${DENDRITE_BIN_DIR:-$PWD/.cache/bin}"
DENDRITE_VERSION=v0.13.8

# System packages: PostgreSQL (the tests run gxconf on it too), Chromium
# (the browser call tests; Debian's package, never a browser download) and
# Redis (the cluster registry tests start their own redis-server).
apt_missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_missing+=(postgresql)
[ -x /usr/bin/chromium ] || apt_missing+=(chromium)
command -v redis-server >/dev/null || apt_missing+=(redis-server)
# nftables: the TURN test filters a client's network namespace down to one TCP port.
command -v nft >/dev/null || apt_missing+=(nftables)
# HAProxy: the sites test puts it in front of each site's nodes (L4, /healthz checks).
command -v haproxy >/dev/null || apt_missing+=(haproxy)
# openssl: deploy/check.sh signs the throwaway kube-apiserver's service-account keys.
command -v openssl >/dev/null || apt_missing+=(openssl)
if [ ${#apt_missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: please install: ${apt_missing[*]} (apt-get install ${apt_missing[*]})" >&2
    exit 1
  fi
  echo "deps: apt-get install ${apt_missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi

missing=()
for c in dendrite generate-keys generate-config create-account; do
  [ -x "$BIN/$c" ] || missing+=("github.com/matrix-org/dendrite/cmd/$c@$DENDRITE_VERSION")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing Dendrite $DENDRITE_VERSION into $BIN (takes a few minutes once)"
  mkdir -p "$BIN"
  # Outside the module, so that go install takes exactly the pinned versions.
  (cd /tmp && GOBIN="$BIN" go install "${missing[@]}")
fi
# ORY Hydra for the catalogue admin tests (go install cannot build it; see the script).
if [ ! -x "$BIN/hydra" ]; then
  echo "deps: building ORY Hydra into $BIN (takes a few minutes once)"
  scripts/build-hydra.sh "$BIN/hydra"
fi
# npm packages of the Node credential issuer/wallet (test/credharness), of
# the browser call client (web/) and of the Element Call embedded test
# (test/ecembed).
need_node
npm_ci test/credharness
npm_ci web
npm_ci test/ecembed
npm_ci test/icaljs
npm_ci test/catalogcheck

echo "deps: ok"
