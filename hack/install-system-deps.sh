#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo start: Redis (server, sentinel, cli) and
# openssl for test certificates. Does nothing when they are already there.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v openssl >/dev/null || need+=(openssl)

if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts a system redis-server; the tests start their own on free ports and do not need it.
command -v go >/dev/null || { echo "error: Go (>= 1.26, for Kubernetes v1.36) is needed to build the test control plane (hack/build-kube.sh); install it or set KUBEBUILDER_ASSETS" >&2; exit 1; }
