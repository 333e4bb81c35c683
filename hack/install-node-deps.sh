#!/usr/bin/env bash
# Installs the Debian packages the `node` tier runs (tests/platform/node.py): containerd and runc
# (the container runtime behind kubelet's CRI), the CNI plugins (bridge, host-local, loopback,
# portmap in /usr/lib/cni), iptables and conntrack (kube-proxy), nftables (`nft` deletes the
# tables kube-proxy made, so the host goes back to none), socat (relays pods to the API server
# on loopback), busybox-static (the one binary of the
# small image the tier's tests run), and for the images the tier builds: debootstrap (a Debian
# root filesystem) and docker.io (dockerd for `docker build` of the repo's Dockerfile, started
# by the tier only while it builds, never as a service).
# Does nothing when they are all there. Versions are Debian 12's (bookworm) stable ones, fixed
# by the release; docs/node-tier.md lists those the tier was proven with.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for pkg in containerd runc containernetworking-plugins iptables nftables conntrack socat busybox-static \
  debootstrap docker.io; do
  have "$pkg" || need+=("$pkg")
done
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing Debian packages for the node tier: ${need[*]}"
  $sudo apt-get update -qq
  # policy-rc.d exit 101: the packages must not start containerd or dockerd as system services;
  # the tier starts its own, with its own config, root and socket, and stops them.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [ -n "$policy" ]; then $sudo rm -f "$policy"; fi
fi
