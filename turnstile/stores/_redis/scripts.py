"""Lua scripts run by ``EVALSHA`` on a multiplexed connection, ``EVAL`` until Redis knows them.

Both stores define their scripts as :class:`LuaScript` values (``locks.lua``, ``timers.lua``);
:meth:`~turnstile.stores._redis.connection.RedisConnection.eval` runs them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as rex

from turnstile.stores._redis.multiplexed import MultiplexedConnection

#: Every script made, by SHA1, so an error naming a script (``ACL`` refusals do) can be read.
_BY_SHA: dict[str, LuaScript] = {}
_CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'")


def script_by_sha(sha: str) -> LuaScript | None:
    """The script with this SHA1, if this process made it."""
    return _BY_SHA.get(sha)


def scripts_calling_at(line: int, command: str | None = None) -> list[LuaScript]:
    """The scripts this process made that call ``command`` (any, if None) on ``line``: how an
    error that names a line but no script (Valkey 9) is traced to one."""
    return [
        script for script in _BY_SHA.values()
        if (command.upper() in script.commands_at(line) if command else script.commands_at(line))
    ]


@dataclass(frozen=True)
class LuaScript:
    """A Lua script run with ``EVALSHA``, falling back to ``EVAL`` when Redis lacks it.

    A new master after a failover has an empty script cache, so the fallback is not rare.
    """

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())
        _BY_SHA[self.sha] = self

    def commands_at(self, line: int) -> list[str]:
        """The Redis commands the script calls on ``line`` (1-based, as Redis counts)."""
        lines = self.source.splitlines()
        text = lines[line - 1] if 0 < line <= len(lines) else ""
        return list(dict.fromkeys(name.upper() for name in _CALL.findall(text)))

    async def run_on(
        self, conn: MultiplexedConnection, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run it on a multiplexed connection (see ``multiplexed``).

        ``EVAL`` until Redis has run it once on this connection, ``EVALSHA`` after. Sending
        ``EVALSHA`` blind and retrying with ``EVAL`` on ``NOSCRIPT`` would reorder callers: a
        caller arriving after the first ``EVAL`` could overtake the earlier callers' retries,
        and tickets must be drawn in arrival order.
        """
        if self.sha in conn.scripts:
            try:
                return await conn.call("EVALSHA", self.sha, len(keys), *keys, *args)
            except rex.NoScriptError:  # SCRIPT FLUSH, or a restart behind the same address
                conn.scripts.discard(self.sha)
        result = await conn.call("EVAL", self.source, len(keys), *keys, *args)
        conn.scripts.add(self.sha)
        return result
