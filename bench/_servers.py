"""The server dimension of the benchmarks: one measurement on each server in the same run.

``bench/locks.py`` and ``bench/timers.py`` measure Redis CPU per cycle and cycles per second on
Redis 7.0, Valkey 8.0 and Valkey 9.1 side by side (``--servers``), starting one standalone
server of each kind through ``tests.platform.redis_servers``. The per-server section of a
benchmark's document sits between two markers, so ``--servers-only`` can rewrite it alone and
leave the rest of the document (and the numbers the README quotes from it) as measured.
"""

from __future__ import annotations

from pathlib import Path

from tests.platform.redis_servers import SERVERS, ServerKind

#: Every server the platform knows, in the order the tables show them.
ALL_SERVERS = ",".join(SERVERS)


def parse_servers(text: str) -> list[ServerKind]:
    """``redis,valkey8,valkey9`` -> the kinds; an unknown name raises naming the choices, and
    each kind's binary is checked (missing or another version raises) before anything runs."""
    kinds = []
    for key in filter(None, (part.strip() for part in text.split(","))):
        if key not in SERVERS:
            raise SystemExit(f"--servers: unknown server {key!r}; one of {ALL_SERVERS}")
        kinds.append(SERVERS[key])
    for kind in kinds:
        kind.version()
    return kinds


def label(kind: ServerKind) -> str:
    """``Valkey 9.1.2`` (the product and the version the binary reports)."""
    return f"{kind.product} {kind.version()}"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- begin {name} -->", f"<!-- end {name} -->"


def section(name: str, text: str) -> str:
    """``text`` between the markers that :func:`replace_section` finds again."""
    begin, end = _markers(name)
    return f"{begin}\n{text}\n{end}"


def replace_section(path: Path, name: str, text: str) -> None:
    """Put ``section(name, text)`` in place of that section of ``path`` (appended if absent)."""
    begin, end = _markers(name)
    doc = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in doc and end in doc:
        head, _, rest = doc.partition(begin)
        _, _, tail = rest.partition(end)
        doc = head + section(name, text) + tail
    else:
        doc = doc.rstrip("\n") + "\n\n" + section(name, text) + "\n"
    path.write_text(doc, encoding="utf-8")
