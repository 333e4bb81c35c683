#!/usr/bin/env bash
# Build the real Kubernetes control plane used by Turnstile's k8s test tier.
#
# There is no Docker (hence no kind) in our environments and nothing on the
# internet is reachable except the Go module proxy, so the binaries are compiled
# from Go modules, pinned by the wrapper modules next to this script:
#
#   hack/kube/  k8s.io/kubernetes  -> kube-apiserver, kube-controller-manager, kubectl,
#                                     and for the node tier kubelet, kube-scheduler, kube-proxy
#   hack/etcd/  go.etcd.io/etcd/server/v3 -> etcd  (Debian bookworm's 3.4 is too old)
#   hack/helm/  helm.sh/helm/v3    -> helm
#   hack/pause/ Turnstile's own    -> pause (the node tier's sandbox image program)
#
# Versions live ONLY in those go.mod files (committed with go.sum); this script
# reads them from there. Output goes to a cache outside the work tree:
#
#   ${TURNSTILE_CACHE:-$HOME/.cache/turnstile}/kube-<kube version>/bin/
#
# Each binary has a stamp (version + hash of its wrapper's go.mod/go.sum); a run
# whose stamps all match does nothing, so it is cheap to call from `make`.
#
# KUBEBUILDER_ASSETS: if set to a directory with prebuilt binaries (the envtest
# convention: kube-apiserver, etcd, kubectl; optionally also
# kube-controller-manager and helm), those are used as-is and only the binaries
# it lacks are built. The directory printed by --print-dir is then a directory
# of symlinks combining both sources.
#
# Usage:
#   hack/build-kube.sh              build whatever is missing or stale
#   hack/build-kube.sh --print-dir  print the binary directory (never builds)
#   hack/build-kube.sh --force      rebuild everything not taken from KUBEBUILDER_ASSETS
#   hack/build-kube.sh --regen      rewrite hack/kube/go.mod's replace block for the
#                                   k8s.io/kubernetes version it requires, then tidy
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${TURNSTILE_CACHE:-${HOME}/.cache/turnstile}"

# One `go build` compiles all of these, so the node's binaries share the control plane's
# packages (a few seconds each on a warm cache rather than a second cold build).
K8S_BINS=(kube-apiserver kube-controller-manager kubectl kubelet kube-scheduler kube-proxy)
ALL_BINS=("${K8S_BINS[@]}" etcd helm pause)

log() { printf '[build-kube] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# module_version DIR MODULE: the version DIR/go.mod requires for MODULE.
module_version() {
  local v
  v="$(grep -v '^[[:space:]]*//' "$1/go.mod" | grep -oE "(^|[[:space:]])$2 v[0-9][^[:space:]]*" |
    head -n1 | awk '{print $2}')"
  [[ -n "$v" ]] || die "$1/go.mod does not require $2"
  printf '%s\n' "$v"
}

KUBE_VERSION="$(module_version "$HACK_DIR/kube" k8s.io/kubernetes)"
ETCD_VERSION="$(module_version "$HACK_DIR/etcd" go.etcd.io/etcd/server/v3)"
HELM_VERSION="$(module_version "$HACK_DIR/helm" helm.sh/helm/v3)"
BIN_DIR="$CACHE/kube-$KUBE_VERSION/bin"
STAMP_DIR="$BIN_DIR/.stamps"

# wrapper_of BIN: the wrapper module directory that builds BIN.
wrapper_of() {
  case "$1" in
    etcd) echo "$HACK_DIR/etcd" ;;
    helm) echo "$HACK_DIR/helm" ;;
    pause) echo "$HACK_DIR/pause" ;;
    *) echo "$HACK_DIR/kube" ;;
  esac
}

version_of() {
  case "$1" in
    etcd) echo "$ETCD_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    pause) echo "v1" ;;
    *) echo "$KUBE_VERSION" ;;
  esac
}

# expected_stamp BIN: changes whenever the pins that produce BIN change.
expected_stamp() {
  local dir
  dir="$(wrapper_of "$1")"
  printf '%s %s %s\n' "$1" "$(version_of "$1")" \
    "$(find "$dir" -maxdepth 1 \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 |
      sort -z | xargs -0 cat | sha256sum | cut -c1-16)"
}

is_fresh() {
  [[ -x "$BIN_DIR/$1" && -f "$STAMP_DIR/$1" ]] &&
    [[ "$(cat "$STAMP_DIR/$1")" == "$(expected_stamp "$1")" ]]
}

# from_assets BIN: true if KUBEBUILDER_ASSETS provides BIN.
from_assets() {
  [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "${KUBEBUILDER_ASSETS}/$1" ]]
}

# assets_dir: the directory to hand to consumers. Without KUBEBUILDER_ASSETS it
# is BIN_DIR; with it, a symlink farm preferring the prebuilt binaries.
assets_dir() {
  if [[ -z "${KUBEBUILDER_ASSETS:-}" ]]; then
    printf '%s\n' "$BIN_DIR"
    return
  fi
  local src key farm b
  src="$(cd "$KUBEBUILDER_ASSETS" 2>/dev/null && pwd -P)" ||
    die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS is not a directory"
  key="$(printf '%s' "$src" | sha256sum | cut -c1-12)"
  farm="$CACHE/kubebuilder-assets-$key/bin"
  mkdir -p "$farm"
  for b in "${ALL_BINS[@]}"; do
    if [[ -x "$src/$b" ]]; then
      ln -sfn "$src/$b" "$farm/$b"
    elif [[ -x "$BIN_DIR/$b" ]]; then
      ln -sfn "$BIN_DIR/$b" "$farm/$b"
    else
      rm -f "$farm/$b"
    fi
  done
  printf '%s\n' "$farm"
}

ldflags_for() {
  local flags="-s -w" major minor pkg
  case "$1" in
    kube)
      major="${KUBE_VERSION#v}"; major="${major%%.*}"
      minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
      # Without these the binaries report v0.0.0-master, which trips kubectl's
      # version-skew warning and makes `kubectl version` useless in bug reports.
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major"
        flags+=" -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
      done
      ;;
    helm)
      # Mirrors helm's Makefile: report the real version and the Kubernetes
      # minor helm was built against (defaults to 1.20 otherwise).
      local kv
      kv="$(cd "$HACK_DIR/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)"
      minor="${kv#v0.}"; minor="${minor%%.*}"
      flags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
      flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
      done
      ;;
  esac
  printf '%s\n' "$flags"
}

# go_build GROUP OUTDIR PKG...: one `go build` so shared packages compile once.
# -trimpath and -buildvcs=false make the output depend only on the pins and the
# Go version (not on the checkout path or the Turnstile commit), so two machines
# produce bit-identical binaries.
go_build() {
  local group="$1" out="$2" dir start
  shift 2
  dir="$(wrapper_of "$group")"
  start=$SECONDS
  log "go build ($group): $* (this takes a while on a cold cache)"
  (
    cd "$dir"
    CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
      go build -trimpath -buildvcs=false -ldflags="$(ldflags_for "$group")" -o "$out/" "$@"
  )
  log "go build ($group) took $((SECONDS - start))s"
}

build() {
  local force="$1" b todo_k8s=() todo_other=()
  command -v go >/dev/null || die "go not found on PATH (need Go >= 1.26)"
  for b in "${ALL_BINS[@]}"; do
    if from_assets "$b"; then
      log "$b: using KUBEBUILDER_ASSETS/$b"
    elif [[ "$force" == 1 ]] || ! is_fresh "$b"; then
      case "$b" in
        kube-*|kubectl|kubelet) todo_k8s+=("$b") ;;
        *) todo_other+=("$b") ;;
      esac
    else
      log "$b: up to date ($(cut -d' ' -f2 "$STAMP_DIR/$b"))"
    fi
  done
  if (( ${#todo_k8s[@]} + ${#todo_other[@]} == 0 )); then
    log "nothing to do"
    return
  fi

  mkdir -p "$STAMP_DIR"
  BUILD_TMP="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"
  trap 'rm -rf "$BUILD_TMP"' EXIT
  local tmp="$BUILD_TMP"

  if (( ${#todo_k8s[@]} > 0 )); then
    local pkgs=()
    for b in "${todo_k8s[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    go_build kube "$tmp" "${pkgs[@]}"
  fi
  for b in "${todo_other[@]}"; do
    case "$b" in
      etcd) go_build etcd "$tmp" . ;;
      helm) go_build helm "$tmp" helm.sh/helm/v3/cmd/helm ;;
      pause) go_build pause "$tmp" . ;;
    esac
  done

  # Move into place binary first, stamp last: an interrupted run never leaves
  # a stamp claiming a binary it did not install.
  for b in "${todo_k8s[@]}" "${todo_other[@]}"; do
    [[ -x "$tmp/$b" ]] || die "expected $tmp/$b after build"
    mv -f "$tmp/$b" "$BIN_DIR/$b"
    expected_stamp "$b" >"$STAMP_DIR/$b"
    log "$b: installed $(version_of "$b")"
  done
}

regen() {
  local gomod
  gomod="$(cd "$HACK_DIR/kube" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$gomod" ]] || die "could not download go.mod of k8s.io/kubernetes@$KUBE_VERSION"
  local staging="v0.${KUBE_VERSION#v1.}"
  local block
  # Every staging module k8s.io/kubernetes requires at v0.0.0 (i.e. resolves
  # via ./staging) is re-pinned to its published v0.X.Y twin.
  block="$(awk '/=> \.\/staging\//{print $1}' "$gomod" | while read -r m; do
    grep -qE "^[[:space:]]+$m v0\.0\.0$" "$gomod" && printf '\t%s => %s %s\n' "$m" "$m" "$staging"
  done)"
  [[ -n "$block" ]] || die "no staging modules found in $gomod"
  (
    cd "$HACK_DIR/kube"
    awk '/^replace \(/{skip=1} !skip{print} skip&&/^\)/{skip=0}' go.mod >go.mod.new
    printf 'replace (\n%s\n)\n' "$block" >>go.mod.new
    mv go.mod.new go.mod
    go mod tidy
  )
  log "regenerated hack/kube/go.mod for k8s.io/kubernetes $KUBE_VERSION (staging $staging)"
}

main() {
  local force=0
  case "${1:-}" in
    --print-dir) assets_dir; return ;;
    --regen) regen; return ;;
    --force) force=1 ;;
    "") ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; return ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  local start=$SECONDS
  mkdir -p "$BIN_DIR"
  # Serialise concurrent runs (parallel CI jobs, two terminals) on one cache.
  exec 9>"$BIN_DIR/.lock"
  flock 9
  log "kube $KUBE_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION -> $BIN_DIR"
  build "$force"
  log "done in $((SECONDS - start))s; binaries in $(assets_dir)"
}

main "$@"
