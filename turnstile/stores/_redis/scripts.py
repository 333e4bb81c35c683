"""Lua scripts run by ``EVALSHA`` on a multiplexed connection, ``EVAL`` until Redis knows them.

Both stores define their scripts as :class:`LuaScript` values (``locks.lua``, ``timers.lua``);
:meth:`~turnstile.stores._redis.connection.RedisConnection.eval` runs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as rex

from turnstile.stores._redis.multiplexed import MultiplexedConnection


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
