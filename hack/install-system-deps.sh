#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo start: Redis (server, sentinel, cli),
# Valkey 8.0 (server and tools, from bookworm-backports only) and openssl for test
# certificates. Does nothing when they are already there.
#
# Valkey: bookworm-backports is added to apt's sources with a pin that keeps every other
# backports package out (priority 1: never chosen unless asked for by version), and the two
# packages are installed at their pinned version. valkey-server runs the Sentinel too
# (`valkey-server FILE --sentinel`), so Debian's valkey-sentinel package is not needed.
set -euo pipefail
VALKEY_DEB_VERSION="8.0.1+dfsg1-1~bpo12+1"

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v openssl >/dev/null || need+=(openssl)
valkey_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$1" 2>/dev/null)" = "installed $VALKEY_DEB_VERSION" ]
}
valkey_installed valkey-server || need+=("valkey-server=$VALKEY_DEB_VERSION")
valkey_installed valkey-tools || need+=("valkey-tools=$VALKEY_DEB_VERSION")

backports() {
  local sources=/etc/apt/sources.list.d/turnstile-bookworm-backports.sources
  local prefs=/etc/apt/preferences.d/turnstile-valkey
  if [ ! -f "$sources" ]; then
    echo "adding bookworm-backports to apt's sources ($sources), pinned to valkey-server and valkey-tools"
    $sudo tee "$sources" >/dev/null <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  fi
  $sudo tee "$prefs" >/dev/null <<'PREFS'
# Turnstile's tests take Valkey 8.0 from bookworm-backports and nothing else (hack/install-system-deps.sh).
Package: *
Pin: release n=bookworm-backports
Pin-Priority: 1

Package: valkey-server valkey-tools
Pin: release n=bookworm-backports
Pin-Priority: 500
PREFS
}

if ((${#need[@]})); then
  case " ${need[*]}" in *" valkey-"*) backports ;; esac
  echo "installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts a system redis-server (and, with systemd, valkey-server); the tests start their
# own on free ports and do not need them.
command -v go >/dev/null || { echo "error: Go (>= 1.26, for Kubernetes v1.36) is needed to build the test control plane (hack/build-kube.sh); install it or set KUBEBUILDER_ASSETS" >&2; exit 1; }
