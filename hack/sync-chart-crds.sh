#!/usr/bin/env bash
# Copy the Turnstile CRDs from crds/ (the source of truth) into the Helm chart's crds/ directory.
#
# Helm can only install CRDs from files inside the chart, so the chart carries byte-identical
# copies; tests/k8s/test_chart.py fails when they drift. Only the Turnstile CRDs are managed
# here (every *.yaml in crds/); the chart's own kopf.dev peering CRDs are left alone.
#
# Usage:
#   hack/sync-chart-crds.sh          copy, and remove chart copies whose source is gone
#   hack/sync-chart-crds.sh --check  exit 1 (listing the files) if the chart is out of date
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/crds"
DST="$ROOT/charts/turnstile-operator/crds"
# Chart files that are not copies of crds/ and must never be touched.
KEEP=(kopf.dev_peerings.yaml)

die() { printf '[sync-chart-crds] ERROR: %s\n' "$*" >&2; exit 1; }
kept() { local k; for k in "${KEEP[@]}"; do [[ "$1" == "$k" ]] && return 0; done; return 1; }

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac

[[ -d "$SRC" ]] || die "$SRC does not exist"
mkdir -p "$DST"
shopt -s nullglob
sources=("$SRC"/*.yaml)
(( ${#sources[@]} > 0 )) || die "no *.yaml in $SRC: nothing to ship"

stale=()
for src in "${sources[@]}"; do
  name="$(basename "$src")"
  kept "$name" && die "crds/$name clashes with a chart-owned file of the same name"
  if ! cmp -s "$src" "$DST/$name"; then
    stale+=("$name")
    (( check )) || cp "$src" "$DST/$name"
  fi
done
for dst in "$DST"/*.yaml; do
  name="$(basename "$dst")"
  kept "$name" && continue
  if [[ ! -e "$SRC/$name" ]]; then
    stale+=("$name (removed from crds/)")
    (( check )) || rm -f "$dst"
  fi
done

if (( ${#stale[@]} == 0 )); then
  echo "[sync-chart-crds] chart CRDs are up to date"
elif (( check )); then
  printf '[sync-chart-crds] out of date: %s\n' "${stale[@]}" >&2
  echo "[sync-chart-crds] run hack/sync-chart-crds.sh" >&2
  exit 1
else
  printf '[sync-chart-crds] updated: %s\n' "${stale[@]}"
fi
