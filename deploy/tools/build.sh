#!/usr/bin/env bash
# Builds the tools deploy/check.sh needs from source with the ordinary go
# client (no Docker, no binary downloads), into $GXCONF_DEPLOY_TOOLS
# (default .cache/deploy-tools/bin). A tool is rebuilt only when its pinned
# version (or this module's go.sum) changed.
#
#   deploy/tools/build.sh [helm kubeconform etcd kube psacheck schemagen]
#
# Cold, on 2 cores: kube-apiserver+kubectl ≈ 5-6 min, helm ≈ 3 min, etcd ≈ 0.5 min,
# the rest seconds. Warm: < 1 s.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
BIN="${GXCONF_DEPLOY_TOOLS:-$root/.cache/deploy-tools/bin}"
STAMPS="$BIN/.stamps"
mkdir -p "$BIN" "$STAMPS"

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
KUBE_VERSION=v1.34.2

sum() { cat "$@" | sha256sum | cut -c1-16; }

# fresh NAME STAMP: true if NAME's stamp equals STAMP and its binaries exist.
fresh() {
  local name=$1 stamp=$2; shift 2
  [ "$(cat "$STAMPS/$name" 2>/dev/null)" = "$stamp" ] || return 1
  for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done
}
done_() { echo "$2" > "$STAMPS/$1"; }

timed() {
  local name=$1; shift
  local t0=$SECONDS
  echo "deploy-tools: building $name"
  "$@"
  echo "deploy-tools: $name built in $((SECONDS - t0)) s"
}

build_helm() {
  fresh helm "$HELM_VERSION-k8s$KUBE_VERSION" helm && return
  # Outside any module, so go install takes exactly the pinned version.
  # As helm's Makefile does: its version, and the Kubernetes version it
  # assumes without a cluster (else v1.20, below the chart's kubeVersion).
  local minor; minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ld="$ld -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  timed helm bash -c "cd /tmp && GOFLAGS=-trimpath GOBIN='$BIN' go install -ldflags='$ld' helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  done_ helm "$HELM_VERSION-k8s$KUBE_VERSION"
}

build_kubeconform() {
  fresh kubeconform "$KUBECONFORM_VERSION" kubeconform && return
  timed kubeconform bash -c "cd /tmp && GOFLAGS=-trimpath GOBIN='$BIN' go install github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  done_ kubeconform "$KUBECONFORM_VERSION"
}

build_etcd() {
  local s; s=$(sum "$here/etcd/go.mod" "$here/etcd/go.sum")
  fresh etcd "$s" etcd && return
  timed etcd bash -c "cd '$here/etcd' && go build -mod=readonly -trimpath -ldflags='-s -w' -o '$BIN/etcd' go.etcd.io/etcd/server/v3"
  done_ etcd "$s"
}

build_kube() {
  local s; s=$(sum "$here/go.mod" "$here/go.sum")
  fresh kube "$s" kube-apiserver kubectl && return
  local v=$KUBE_VERSION minor
  minor=$(echo "$v" | cut -d. -f2)
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  done
  timed kube-apiserver+kubectl bash -c "cd '$here' && go build -mod=readonly -trimpath -ldflags='$ld' -o '$BIN/' k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl"
  done_ kube "$s"
}

build_local() { # psacheck, schemagen: small programs of this module
  local name=$1 s
  s=$(sum "$here/go.mod" "$here/go.sum" "$here/$name"/*.go)
  fresh "$name" "$s" "$name" && return
  timed "$name" bash -c "cd '$here' && go build -mod=readonly -trimpath -o '$BIN/$name' './$name'"
  done_ "$name" "$s"
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(kube etcd helm kubeconform psacheck schemagen)
for t in "${tools[@]}"; do
  case $t in
    helm) build_helm ;;
    kubeconform) build_kubeconform ;;
    etcd) build_etcd ;;
    kube) build_kube ;;
    psacheck|schemagen) build_local "$t" ;;
    *) echo "deploy-tools: unknown tool $t" >&2; exit 2 ;;
  esac
done
