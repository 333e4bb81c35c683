#!/usr/bin/env bash
# Build CoreDNS once (`go install` from the Go module proxy) into the cache the node tier uses,
# and print the binary's path. Only the node tier's DNS option needs it
# (`python -m tests.platform.cluster up --dns`, `make e2e-node`): about 3.5 min on a cold Go
# cache, nothing afterwards.
#
# Usage: hack/build-coredns.sh     build if missing, print the path
set -euo pipefail

COREDNS_VERSION="v1.15.0"
CACHE="${TURNSTILE_CACHE:-${HOME}/.cache/turnstile}"
BIN_DIR="$CACHE/coredns-$COREDNS_VERSION/bin"

log() { printf '[build-coredns] %s\n' "$*" >&2; }

if [[ ! -x "$BIN_DIR/coredns" ]]; then
  command -v go >/dev/null || { log "ERROR: no Go toolchain to build CoreDNS"; exit 1; }
  log "go install github.com/coredns/coredns@$COREDNS_VERSION (a few minutes on a cold cache)"
  mkdir -p "$BIN_DIR"
  start=$SECONDS
  CGO_ENABLED=0 GOBIN="$BIN_DIR" GOFLAGS="${GOFLAGS:-} -trimpath" \
    go install "github.com/coredns/coredns@$COREDNS_VERSION" >&2
  log "built in $((SECONDS - start))s"
fi
echo "$BIN_DIR/coredns"
