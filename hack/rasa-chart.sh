#!/usr/bin/env bash
# Fetch Rasa's own Helm chart (RasaHQ/rasa-helm-charts, charts/rasa) at the commit docs/rasa-charts.md
# was written against, for tests/unit/test_rasa_charts.py (`helm template` of examples/rasa-charts/).
# The chart is Rasa's (Apache-2.0) and is never copied into this repository: it goes to the cache.
#
# Usage:
#   hack/rasa-chart.sh               fetch into ~/.cache/turnstile/ (no-op when present)
#   hack/rasa-chart.sh --print-dir   print the chart directory (fetches nothing)
# Env: RASA_HELM_CHARTS_GIT  where to fetch from (a URL or a local git directory; default GitHub)
set -euo pipefail

COMMIT=1eee5b44b92e03adad9615f54c9c690e425102df   # chart rasa 2.4.0, 2026-07-08
SRC="${RASA_HELM_CHARTS_GIT:-https://github.com/RasaHQ/rasa-helm-charts.git}"
DEST="${XDG_CACHE_HOME:-$HOME/.cache}/turnstile/rasa-helm-charts-${COMMIT:0:12}"
CHART="$DEST/charts/rasa"

if [[ "${1:-}" == "--print-dir" ]]; then echo "$CHART"; exit 0; fi
[[ -f "$CHART/Chart.yaml" ]] && { echo "[rasa-chart] $CHART is there"; exit 0; }

work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
git init -q --bare "$work/repo"
git --git-dir "$work/repo" fetch -q --depth 1 "$SRC" "$COMMIT"
mkdir -p "$DEST.tmp"
git --git-dir "$work/repo" archive "$COMMIT" charts/rasa | tar -x -C "$DEST.tmp"
rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
echo "[rasa-chart] charts/rasa $(sed -n 's/^version: //p' "$CHART/Chart.yaml") at ${COMMIT:0:12} in $CHART"
