#!/usr/bin/env bash
# Build .venv-rasa-server: Rasa Open Source 3.6.21 installed WHOLE (tensorflow, spaCy, sanic,
# uvloop, ... everything it declares), for the `rasa-server` tier (tests/rasa_server, real
# `rasa run` servers) and bench/rasa_server.py.
#
# Unlike hack/rasa-venvs.sh (minimal --no-deps installs for the drop-in tests), this is what a
# user gets from `pip install rasa==3.6.21`: requirements/rasa36-server.txt is `pip freeze` of
# such an install (plus the test runner), and it is installed WITH dependency resolution, so pip
# would pull anything the pins lacked; afterwards `pip freeze` must equal the pins exactly and
# `pip check` must be clean. Turnstile goes in editable, --no-deps (redis-py comes with Rasa).
#
# Idempotent: when the stamp (hash of the pins, this script and the interpreter version)
# matches, nothing is done (well under a second); --force rebuilds.
#
#   hack/rasa-server-venv.sh [--force]
#
# Interpreter: RASA_SERVER_PYTHON overrides; otherwise pyenv ($PYENV_ROOT, default ~/.pyenv)
# 3.10.x, then python3.10 on PATH, then python3 if it is 3.10 (Rasa 3.6 allows 3.8-3.10).
# RASA_SERVER_VENV puts the venv elsewhere.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="$ROOT/hack/rasa-server-venv.sh"
PINS="$ROOT/requirements/rasa36-server.txt"
VENV="${RASA_SERVER_VENV:-$ROOT/.venv-rasa-server}"
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,20p' "$SCRIPT"; exit 0 ;;
        *) echo "rasa-server-venv: unknown argument '$arg' (--force)" >&2; exit 2 ;;
    esac
done

log() { echo "rasa-server-venv: $*" >&2; }

find_python() {
    local cand
    for cand in $(ls -d "$PYENV_ROOT"/versions/3.10.*/bin/python 2>/dev/null | sort -rV) \
                "$(command -v python3.10 2>/dev/null || true)"; do
        [ -n "$cand" ] && [ -x "$cand" ] && { echo "$cand"; return 0; }
    done
    if command -v python3 >/dev/null 2>&1 \
        && [ "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = 3.10 ]; then
        command -v python3; return 0
    fi
    return 1
}

PYTHON="${RASA_SERVER_PYTHON:-$(find_python || true)}"
[ -n "$PYTHON" ] || { log "no Python 3.10 found (set RASA_SERVER_PYTHON)"; exit 1; }
pyver="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
want="$( { sha256sum "$PINS" "$SCRIPT" | cut -d' ' -f1; echo "$pyver"; } | sha256sum | cut -c1-16)"
stamp="$VENV/.turnstile-rasa-server-stamp"
if [ "$FORCE" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$VENV/bin/python" -c '' 2>/dev/null; then
    log "up to date ($VENV, Python $pyver)"
    exit 0
fi

t0=$SECONDS
log "building $VENV with Python $pyver ($PYTHON) from ${PINS#"$ROOT"/}"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
# The venv's own pip (23.0.1 on 3.10.13) is what a user of this Python has; no upgrade, no
# download of pip itself.
"${pip[@]}" install -q -r "$PINS"
# Built in an isolated env with the setuptools requirements/build.txt pins (PEP 639 needs >= 77;
# Rasa 3.6 keeps its own 70.3 in the venv).
PIP_CONSTRAINT="$ROOT/requirements/build.txt" "${pip[@]}" install -q --no-deps -e "$ROOT"

# Exactly the pinned set: nothing pulled in beyond it, nothing missing from it.
extra="$(diff <(grep -v -E '^[[:space:]]*(#|$)' "$PINS" | tr 'A-Z_' 'a-z-' | sort) \
              <("${pip[@]}" freeze --all --exclude-editable | grep -v '^pip==' \
                   | tr 'A-Z_' 'a-z-' | sort) || true)"
if [ -n "$extra" ]; then
    log "the installed set differs from ${PINS#"$ROOT"/} (< pins, > installed):"
    echo "$extra" >&2
    exit 1
fi
if ! "${pip[@]}" check >&2; then
    log "pip check failed: the pins are inconsistent"
    exit 1
fi
if ! "$VENV/bin/python" -W ignore -c 'import rasa.core.agent, rasa.server, turnstile.rasa, uvloop, pytest' \
    >&2; then
    log "Rasa's server modules do not import (see traceback above)"
    exit 1
fi
echo "$want" > "$stamp"
log "ready in $((SECONDS - t0)) s"
