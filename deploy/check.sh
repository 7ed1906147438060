#!/usr/bin/env bash
# Checks the Helm chart without Docker, for every value set in
# helm/gxconf/ci/*-values.yaml:
#   1. helm lint --strict (values.schema.json included);
#   2. helm template, then the Pod Security "restricted" evaluation of every
#      pod template (psacheck; hostnetwork is the explicit exception);
#   3. a real etcd + kube-apiserver on loopback: kubeconform -strict against
#      schemas generated offline from that server's OpenAPI document, then
#      kubectl apply --dry-run=server into a namespace that enforces
#      restricted Pod Security, with warnings as errors;
#   4. the Go tests on the rendered manifests (go test ./deploy/).
# The tools are built from source by tools/build.sh (cached in
# .cache/deploy-tools). Processes are stopped by PID on exit.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
BIN="${GXCONF_DEPLOY_TOOLS:-$root/.cache/deploy-tools/bin}"
export GXCONF_DEPLOY_TOOLS="$BIN"
CHART="$here/helm/gxconf"
KUBE_VERSION=v1.34.2
t0=$SECONDS
step() { echo "== deploy-check: $* ($((SECONDS - t0)) s)"; }

step "building tools"
"$here/tools/build.sh"
export PATH="$BIN:$PATH"

W="$(mktemp -d "${TMPDIR:-/tmp}/gxconf-deploy-check.XXXXXX")"
pids=()
# Stops what this script started, by PID: SIGTERM, then SIGKILL after 5 s
# (kube-apiserver's graceful shutdown would take ~20 s, for nothing here).
stop_servers() {
  local p i
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for i in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_servers
  rm -rf "$W"
}
trap cleanup EXIT

sets=()
for f in "$CHART"/ci/*-values.yaml; do sets+=("$(basename "$f" -values.yaml)"); done

step "helm lint --strict and helm template: ${sets[*]}"
for s in "${sets[@]}"; do
  helm lint --strict --quiet "$CHART" -f "$CHART/ci/$s-values.yaml" >"$W/lint-$s.log" 2>&1 \
    || { cat "$W/lint-$s.log"; echo "deploy-check: helm lint failed for $s" >&2; exit 1; }
  helm template gx "$CHART" --namespace "gxconf-$s" -f "$CHART/ci/$s-values.yaml" \
    --kube-version "$KUBE_VERSION" --api-versions monitoring.coreos.com/v1/ServiceMonitor >"$W/$s.yaml"
done

step "Pod Security restricted (psacheck)"
for s in "${sets[@]}"; do
  if [ "$s" = hostnetwork ]; then
    # The explicit exception: it must fail restricted, for hostNetwork only.
    if psacheck -level restricted <"$W/$s.yaml" >"$W/psa-$s.log"; then
      echo "deploy-check: hostnetwork unexpectedly passes restricted" >&2; exit 1
    fi
    if grep -v '^psacheck:' "$W/psa-$s.log" | grep -v 'host namespaces' | grep -q .; then
      cat "$W/psa-$s.log"; echo "deploy-check: hostnetwork violates more than host namespaces" >&2; exit 1
    fi
    continue
  fi
  psacheck -level restricted <"$W/$s.yaml" | sed "s/^/  $s: /"
done

step "starting etcd and kube-apiserver on loopback"
# A loopback port nobody listens on (random, so that concurrent runs do not collide).
freeport() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
ETCD_PORT=$(freeport); PEER_PORT=$(freeport); API_PORT=$(freeport)
etcd --name check --data-dir "$W/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "check=http://127.0.0.1:$PEER_PORT" --log-level error >"$W/etcd.log" 2>&1 &
pids+=($!)
TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
echo "$TOKEN,admin,admin,system:masters" >"$W/token.csv"
openssl genrsa -out "$W/sa.key" 2048 2>/dev/null
openssl rsa -in "$W/sa.key" -pubout -out "$W/sa.pub" 2>/dev/null
kube-apiserver --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" --cert-dir "$W/certs" \
  --token-auth-file "$W/token.csv" --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$W/sa.pub" \
  --service-account-signing-key-file "$W/sa.key" --service-cluster-ip-range 10.96.0.0/16 \
  >"$W/apiserver.log" 2>&1 &
pids+=($!)
k() { kubectl --server "https://127.0.0.1:$API_PORT" --token "$TOKEN" \
  --certificate-authority "$W/certs/apiserver.crt" --tls-server-name kubernetes.default.svc "$@"; }
for i in $(seq 1 360); do  # up to 3 min on a loaded machine
  if [ -f "$W/certs/apiserver.crt" ] && k get --raw /readyz >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[1]}" 2>/dev/null; then tail -20 "$W/apiserver.log"; echo "deploy-check: kube-apiserver exited" >&2; exit 1; fi
  sleep 0.5
done
k get --raw /readyz >/dev/null
step "kube-apiserver $(k get --raw /version | grep -o '"gitVersion": *"[^"]*"' | cut -d'"' -f4) ready"

step "kubeconform -strict against schemas generated from the server's OpenAPI document"
SCHEMAS="$(dirname "$BIN")/schemas"
if [ ! -d "$SCHEMAS/$KUBE_VERSION-standalone-strict" ]; then
  k get --raw /openapi/v2 >"$W/openapi.json"
  schemagen -in "$W/openapi.json" -out "$SCHEMAS" -version "$KUBE_VERSION"
fi
for s in "${sets[@]}"; do
  kubeconform -strict -summary -kubernetes-version "${KUBE_VERSION#v}" -skip ServiceMonitor \
    -schema-location "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    "$W/$s.yaml" | sed "s/^/  $s: /"
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "deploy-check: kubeconform failed for $s" >&2; exit 1; }
done

step "kubectl apply --dry-run=server (restricted Pod Security enforced, warnings are errors)"
k apply -f "$here/tools/testdata/servicemonitor-crd.yaml" >/dev/null
k wait --for condition=Established --timeout 60s crd/servicemonitors.monitoring.coreos.com >/dev/null
for s in "${sets[@]}"; do
  level=restricted
  [ "$s" = hostnetwork ] && level=privileged
  k create namespace "gxconf-$s" >/dev/null
  k label namespace "gxconf-$s" "pod-security.kubernetes.io/enforce=$level" "pod-security.kubernetes.io/warn=$level" \
    "pod-security.kubernetes.io/audit=$level" >/dev/null
  k -n "gxconf-$s" create serviceaccount default >/dev/null
  k apply --dry-run=server --warnings-as-errors -n "gxconf-$s" -f "$W/$s.yaml" >"$W/apply-$s.log" 2>&1 \
    || { cat "$W/apply-$s.log"; echo "deploy-check: server dry-run failed for $s" >&2; exit 1; }
  echo "  $s: $(grep -c 'created (server dry run)' "$W/apply-$s.log") objects accepted"
done

# Negative control: the gate is real — hostNetwork is refused where restricted is enforced.
if k apply --dry-run=server --warnings-as-errors -n gxconf-minimal -f "$W/hostnetwork.yaml" >"$W/apply-control.log" 2>&1; then
  echo "deploy-check: hostnetwork was accepted in a restricted namespace" >&2; exit 1
fi
grep -q 'hostNetwork' "$W/apply-control.log" || { cat "$W/apply-control.log"; echo "deploy-check: control refused for another reason" >&2; exit 1; }
echo "  control: hostnetwork refused in the restricted namespace"

stop_servers

step "go test ./deploy/ (rendered manifests, config decoded by gxconf)"
(cd "$root" && HELM="$BIN/helm" GXTEST_DEPLOY_REQUIRE_TOOLS=1 go test -count=1 ./deploy/)

step "ok"
