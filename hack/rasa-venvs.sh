#!/usr/bin/env bash
# Build the three venvs the Rasa drop-in tests (tests/rasa, `make test-rasa`) run in:
#
#   .venv-rasa-pro     Rasa Pro 3.21.0, redis-py 8.1   Python 3.13 (else 3.12/3.14)
#   .venv-rasa-pro311  Rasa Pro 3.21.0, redis-py 8.1   Python 3.11 (the oldest Rasa Pro 3.21 allows;
#                      asyncio.wait_for there drops cancellations that 3.12+ deliver)
#   .venv-rasa36       Rasa OSS 3.6.21, redis-py 4.5.5 Python 3.10
#
# Rasa is installed with --no-deps plus only what the Rasa modules the tests import need
# (exact pins in requirements/rasa-pro.txt and requirements/rasa36.txt; see
# docs/rasa-compat.md), then `pip check` must report nothing but Rasa's own intentionally
# missing dependencies, and the Rasa modules must import. Turnstile goes in editable, --no-deps.
#
# Idempotent: a venv whose stamp (hash of its pins file, this script, the interpreter version)
# matches is left alone (well under a second); --force rebuilds.
#
#   hack/rasa-venvs.sh                all three venvs
#   hack/rasa-venvs.sh pro|pro311|36  some of them
#   hack/rasa-venvs.sh --force        rebuild even if up to date
#
# Interpreters: RASA_PRO_PYTHON / RASA_PRO311_PYTHON / RASA36_PYTHON override; otherwise pyenv
# ($PYENV_ROOT, default ~/.pyenv) versions, then python3.X on PATH, then python3 if it fits.
# RASA_PRO_VENV / RASA_PRO311_VENV / RASA36_VENV put a venv elsewhere (e.g. another Python
# for the same pins); keep the directory name starting with ".venv-rasa" so the tests refuse to skip there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="$ROOT/hack/rasa-venvs.sh"
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
FORCE=0
TARGETS=()
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        pro|pro311|36) TARGETS+=("$arg") ;;
        -h|--help) sed -n '2,24p' "$SCRIPT"; exit 0 ;;
        *) echo "rasa-venvs: unknown argument '$arg' (pro, pro311, 36, --force)" >&2; exit 2 ;;
    esac
done
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(pro pro311 36)

log() { echo "rasa-venvs: $*" >&2; }

# find_python MINOR... : first interpreter whose X.Y is one of the given minors.
find_python() {
    local minor cand
    for minor in "$@"; do
        for cand in $(ls -d "$PYENV_ROOT"/versions/"$minor".*/bin/python 2>/dev/null | sort -rV) \
                    "$(command -v "python$minor" 2>/dev/null || true)"; do
            [ -n "$cand" ] && [ -x "$cand" ] && { echo "$cand"; return 0; }
        done
    done
    if command -v python3 >/dev/null 2>&1; then
        local v; v="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        for minor in "$@"; do [ "$v" = "$minor" ] && { command -v python3; return 0; }; done
    fi
    return 1
}

# Rasa modules each venv must import (the tests' loading path; docs/rasa-compat.md).
PRO_MODULES="rasa.utils.endpoints rasa.core.lock_store rasa.core.lock rasa.core.concurrent_lock_store
rasa.core.timer_stores.timer_store rasa.core.timer_stores.in_memory_timer_store
rasa.core.timer_stores.redis_timer_store rasa.core.timer_managers.timer_manager
rasa.core.timer_managers.in_memory_timer_manager rasa.core.timer_managers.redis_timer_manager
rasa.core.config.available_endpoints rasa.mantle.config.runtime_endpoints
turnstile.rasa turnstile.rasa.launcher pytest pytest_asyncio pytest_timeout"
R36_MODULES="rasa.utils.endpoints rasa.core.lock_store rasa.core.lock rasa.shared.utils.common
rasa.shared.utils.io turnstile.rasa pytest pytest_asyncio pytest_timeout"

check_imports() {  # VENV MODULES
    "$1/bin/python" - $2 <<'PY'
import importlib, sys, warnings
warnings.simplefilter("ignore")
for name in sys.argv[1:]:
    importlib.import_module(name)
PY
}

build() {  # NAME VENV PYTHON PINS MODULES
    local name="$1" venv="$2" python="$3" pins="$4" modules="$5"
    local pyver stamp want t0
    pyver="$("$python" -c 'import sys; print(sys.version.split()[0])')"
    want="$( { sha256sum "$pins" "$SCRIPT" | cut -d' ' -f1; echo "$pyver"; } | sha256sum | cut -c1-16)"
    stamp="$venv/.turnstile-rasa-stamp"
    # Up to date: same pins, script and interpreter as when the imports last passed, and the
    # venv's interpreter still runs (importing Rasa again would cost seconds for nothing).
    if [ "$FORCE" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
        && "$venv/bin/python" -c '' 2>/dev/null; then
        log "$name: up to date ($venv, Python $pyver)"
        return 0
    fi
    t0=$SECONDS
    log "$name: building $venv with Python $pyver ($python) from ${pins#"$ROOT"/}"
    rm -rf "$venv"
    # No pip inside the venv (ensurepip alone costs seconds): the interpreter's own pip
    # (>= 22.3) installs into it with --python. --no-compile: only the handful of Rasa modules
    # the tests import ever get byte-compiled, on first import.
    local pip
    if "$python" -c 'import pip, sys; sys.exit(int(pip.__version__.split(".")[0]) < 23)' \
        2>/dev/null; then
        "$python" -m venv --without-pip "$venv"
        pip=("$python" -m pip --disable-pip-version-check --python "$venv/bin/python")
    else  # no usable pip next to the interpreter: the venv gets its own
        "$python" -m venv "$venv"
        pip=("$venv/bin/python" -m pip --disable-pip-version-check)
    fi
    # --no-deps: exactly the pinned set, nothing Rasa declares but does not import here.
    "${pip[@]}" install -q --no-deps --no-compile -r "$pins"
    # Turnstile itself, editable, built in an isolated env with the setuptools that
    # requirements/build.txt pins (PEP 639 needs >= 77; Rasa 3.6 keeps its own 70.3 in the venv).
    PIP_CONSTRAINT="$ROOT/requirements/build.txt" \
        "${pip[@]}" install -q --no-deps --no-compile -e "$ROOT"
    # Every installed package's requirements must hold; only Rasa's deliberately absent
    # dependencies ("<rasa> requires X, which is not installed") are allowed.
    local problems
    problems="$("${pip[@]}" check 2>&1 \
        | grep -v -E '^rasa(-pro)? [0-9.]+ requires .*, which is not installed\.$' \
        | grep -v -E '^No broken requirements found\.$' || true)"
    if [ -n "$problems" ]; then
        log "$name: pip check found inconsistent pins in ${pins#"$ROOT"/}:"
        echo "$problems" >&2
        exit 1
    fi
    if ! check_imports "$venv" "$modules"; then
        log "$name: a Rasa module does not import with the pinned set (see traceback above)"
        exit 1
    fi
    echo "$want" > "$stamp"
    log "$name: ready in $((SECONDS - t0)) s"
}

one() {  # TARGET
    local py
    case "$1" in
        pro)
            py="${RASA_PRO_PYTHON:-$(find_python 3.13 3.12 3.14 || true)}"
            [ -n "$py" ] || { log "pro: no Python 3.12-3.14 found (set RASA_PRO_PYTHON)"; exit 1; }
            build "rasa-pro 3.21.0" "${RASA_PRO_VENV:-$ROOT/.venv-rasa-pro}" "$py" \
                "$ROOT/requirements/rasa-pro.txt" "$PRO_MODULES"
            ;;
        pro311)
            py="${RASA_PRO311_PYTHON:-$(find_python 3.11 || true)}"
            [ -n "$py" ] || { log "pro311: no Python 3.11 found (set RASA_PRO311_PYTHON)"; exit 1; }
            build "rasa-pro 3.21.0 (3.11)" "${RASA_PRO311_VENV:-$ROOT/.venv-rasa-pro311}" "$py" \
                "$ROOT/requirements/rasa-pro.txt" "$PRO_MODULES"
            ;;
        36)
            py="${RASA36_PYTHON:-$(find_python 3.10 || true)}"
            [ -n "$py" ] || { log "36: no Python 3.10 found (set RASA36_PYTHON)"; exit 1; }
            build "rasa 3.6.21" "${RASA36_VENV:-$ROOT/.venv-rasa36}" "$py" \
                "$ROOT/requirements/rasa36.txt" "$R36_MODULES"
            ;;
    esac
}

# The venvs are independent: build them side by side (downloads overlap), fail if either fails.
pids=()
for target in "${TARGETS[@]}"; do
    one "$target" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
exit "$status"
