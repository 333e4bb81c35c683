#!/usr/bin/env bash
# End-to-end run of the Turnstile operator on a kind cluster (`make e2e`).
#
# Needs a Docker engine. kind is installed from the Go module proxy (pinned below) into the same
# cache hack/build-kube.sh uses; kubectl and helm come from hack/build-kube.sh's directory when
# built there, else from PATH.
#
#   1. create the kind cluster (hack/kind/cluster.yaml),
#   2. build the operator image (Dockerfile) and load it into the cluster,
#   3. install the chart (charts/turnstile-operator) watching the e2e namespace,
#   4. run Redis in all three modes there (tests/e2e/manifests/redis-*.yaml) and a stand-in bot,
#   5. run the e2e tests (tests/e2e), which apply the stores and check Ready, the ConfigMaps
#      and a rollout of the bot,
#   6. delete the cluster (unless KEEP_CLUSTER=1).
#
# Usage:
#   hack/e2e-kind.sh            all of the above
#   hack/e2e-kind.sh up         steps 1-4 only (idempotent; reuses an existing cluster)
#   hack/e2e-kind.sh test       step 5 against a cluster made by `up`
#   hack/e2e-kind.sh down       step 6
#   hack/e2e-kind.sh --print-kind        install kind if needed and print its path
#   hack/e2e-kind.sh --print-kubeconfig  print where `up` writes the cluster's kubeconfig
#
# Environment: KIND_CLUSTER (turnstile-e2e), KIND_NODE_IMAGE (override the config's image),
# OPERATOR_NAMESPACE (turnstile-system),
# IMAGE (turnstile-operator:e2e), KEEP_CLUSTER=1, PYTHON (.venv/bin/python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TURNSTILE_CACHE:-${HOME}/.cache/turnstile}"
KIND_VERSION="v0.33.0"
KIND_BIN_DIR="$CACHE/kind-$KIND_VERSION/bin"
KIND_CLUSTER="${KIND_CLUSTER:-turnstile-e2e}"
# Fixed: tests/e2e/manifests/stores.yaml addresses Redis as <service>.turnstile-e2e.svc.
E2E_NAMESPACE="turnstile-e2e"
OPERATOR_NAMESPACE="${OPERATOR_NAMESPACE:-turnstile-system}"
IMAGE="${IMAGE:-turnstile-operator:e2e}"
RELEASE="turnstile"
STATE_DIR="$CACHE/e2e-$KIND_CLUSTER"
KUBECONFIG_E2E="$STATE_DIR/kubeconfig"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

log() { printf '[e2e-kind] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_docker() {
  command -v docker >/dev/null || die "docker CLI not found"
  docker info >/dev/null 2>&1 || die "no Docker engine reachable (docker info failed)"
}

# kind_bin: kind from PATH if it is the pinned version, else the cached `go install` build.
kind_bin() {
  if command -v kind >/dev/null && [[ "$(kind version -q 2>/dev/null)" == "$KIND_VERSION" ]]; then
    command -v kind
    return
  fi
  if [[ ! -x "$KIND_BIN_DIR/kind" ]]; then
    command -v go >/dev/null || die "kind $KIND_VERSION not found and no Go toolchain to install it"
    log "installing kind $KIND_VERSION into $KIND_BIN_DIR"
    mkdir -p "$KIND_BIN_DIR"
    GOBIN="$KIND_BIN_DIR" GOFLAGS="${GOFLAGS:-} -mod=mod" go install "sigs.k8s.io/kind@$KIND_VERSION" >&2
  fi
  printf '%s\n' "$KIND_BIN_DIR/kind"
}

# tool NAME: NAME from hack/build-kube.sh's directory if built there, else from PATH.
tool() {
  local dir
  dir="$(bash "$ROOT/hack/build-kube.sh" --print-dir 2>/dev/null || true)"
  if [[ -n "$dir" && -x "$dir/$1" ]]; then
    printf '%s\n' "$dir/$1"
  elif command -v "$1" >/dev/null; then
    command -v "$1"
  else
    die "$1 not found: run hack/build-kube.sh (make kube) or put $1 on PATH"
  fi
}

kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_E2E" "$@"; }

up() {
  require_docker
  local kind
  kind="$(kind_bin)"
  KUBECTL="$(tool kubectl)"
  HELM="$(tool helm)"
  mkdir -p "$STATE_DIR"

  if "$kind" get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    log "kind cluster $KIND_CLUSTER exists; reusing it"
  else
    local args=(create cluster --name "$KIND_CLUSTER" --config "$ROOT/hack/kind/cluster.yaml" --wait 180s)
    [[ -n "${KIND_NODE_IMAGE:-}" ]] && args+=(--image "$KIND_NODE_IMAGE")
    log "creating kind cluster $KIND_CLUSTER"
    "$kind" "${args[@]}"
  fi
  "$kind" get kubeconfig --name "$KIND_CLUSTER" >"$KUBECONFIG_E2E"
  chmod 600 "$KUBECONFIG_E2E"

  log "building $IMAGE"
  DOCKER_BUILDKIT=1 docker build -t "$IMAGE" "$ROOT"
  log "loading $IMAGE into $KIND_CLUSTER"
  "$kind" load docker-image "$IMAGE" --name "$KIND_CLUSTER"

  kc create namespace "$E2E_NAMESPACE" --dry-run=client -o yaml | kc apply -f -
  log "starting Redis (standalone, cluster, sentinel) and the bot in $E2E_NAMESPACE"
  local m
  for m in redis-standalone redis-cluster redis-sentinel bot; do
    kc -n "$E2E_NAMESPACE" apply -f "$ROOT/tests/e2e/manifests/$m.yaml"
  done

  log "installing the chart into $OPERATOR_NAMESPACE"
  local repo="${IMAGE%:*}" tag="${IMAGE##*:}"
  "$HELM" --kubeconfig "$KUBECONFIG_E2E" upgrade --install "$RELEASE" "$ROOT/charts/turnstile-operator" \
    --namespace "$OPERATOR_NAMESPACE" --create-namespace \
    --set image.registry= --set image.repository="$repo" --set image.tag="$tag" \
    --set image.pullPolicy=Never \
    --set "watchNamespaces={$E2E_NAMESPACE}" \
    --set recheckInterval=5 \
    --wait --timeout 180s

  log "waiting for Redis"
  kc -n "$E2E_NAMESPACE" rollout status deployment/redis-standalone --timeout=180s
  kc -n "$E2E_NAMESPACE" rollout status statefulset/redis-cluster --timeout=180s
  kc -n "$E2E_NAMESPACE" wait --for=condition=complete job/redis-cluster-create --timeout=300s
  kc -n "$E2E_NAMESPACE" rollout status statefulset/redis-node --timeout=180s
  kc -n "$E2E_NAMESPACE" rollout status deployment/redis-sentinel --timeout=180s
  kc -n "$E2E_NAMESPACE" rollout status deployment/bot --timeout=180s
  log "cluster ready: KUBECONFIG=$KUBECONFIG_E2E"
}

run_tests() {
  [[ -f "$KUBECONFIG_E2E" ]] || die "no cluster: run '$0 up' first"
  KUBECTL="$(tool kubectl)"
  TURNSTILE_E2E_KUBECONFIG="$KUBECONFIG_E2E" \
  TURNSTILE_E2E_OPERATOR_NAMESPACE="$OPERATOR_NAMESPACE" \
  TURNSTILE_E2E_KUBECTL="$KUBECTL" \
    "$PYTHON" -m pytest -m e2e "$ROOT/tests/e2e" "$@"
}

dump() {
  log "operator logs (last 200 lines):"
  kc -n "$OPERATOR_NAMESPACE" logs deployment/"$RELEASE"-turnstile-operator --tail=200 >&2 || true
  kc -n "$E2E_NAMESPACE" get all,lockstores,timerstores,configmaps >&2 || true
}

down() {
  if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
    log "KEEP_CLUSTER=1: leaving $KIND_CLUSTER running (KUBECONFIG=$KUBECONFIG_E2E)"
    return
  fi
  local kind
  kind="$(kind_bin)"
  "$kind" delete cluster --name "$KIND_CLUSTER" || true
  rm -rf "$STATE_DIR"
}

main() {
  case "${1:-all}" in
    up) up ;;
    test) shift; run_tests "$@" ;;
    down) down ;;
    --print-kind) kind_bin ;;
    --print-kubeconfig) printf '%s\n' "$KUBECONFIG_E2E" ;;
    all)
      require_docker
      trap down EXIT
      up
      run_tests || { dump; exit 1; }
      ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
    *) die "unknown command: $1 (see --help)" ;;
  esac
}

main "$@"
