"""The minimal Redis ACL rule of each store, and a check of a live user against it.

Redis checks every command a Lua script calls against the user running the script, so a
store's rule is: the commands its Python code sends (``EVAL``/``EVALSHA``, ``BLPOP``, ...) plus
the commands inside its scripts, each on the store's key pattern only. ``tests/unit/test_acl.py``
parses the scripts and fails when a script calls a command missing here.

:func:`acl_rule` spells the rule as ``ACL SETUSER`` arguments; :func:`missing_permissions` asks
the server with ``ACL DRYRUN`` (Redis 7+) whether a user may run each command on a key of the
pattern, and returns what is missing. ``turnstile check --acl`` prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from redis import exceptions as rex

Store = Literal["lock_store", "timer_store"]

#: A key name standing for any key of the pattern (``{..}``: one cluster slot, like the stores').
_SAMPLE: Final = "{turnstile-acl-check}"


@dataclass(frozen=True)
class Permission:
    """One command (``CLIENT|SETNAME`` for a subcommand) with sample arguments; ``KEY`` in
    ``args`` stands for a key of the store's pattern."""

    command: str
    args: tuple[str, ...] = ()
    why: str = ""

    @property
    def uses_key(self) -> bool:
        return "KEY" in self.args

    def dryrun_args(self, key: str) -> list[str]:
        words = self.command.split("|")
        return [*words, *(key if a == "KEY" else a for a in self.args)]


_SHA: Final = "0" * 40
#: Sent by the connection code for every store: the handshake, health checks, the scripts.
_CONNECTION: Final = (
    Permission("PING", why="health checks and the probe"),
    Permission("SELECT", ("0",), why="db (standalone and sentinel mode)"),
    Permission("CLIENT|SETNAME", ("turnstile",), why="names the connection"),
    Permission("EVAL", ("return 1", "1", "KEY"), why="runs the store's scripts"),
    Permission("EVALSHA", (_SHA, "1", "KEY"), why="runs the store's cached scripts"),
    Permission("TIME", why="the scripts read the server clock"),
)
#: Only in cluster mode: the redis-py cluster client reads the slot map and command table.
CLUSTER_ONLY: Final = (
    Permission("CLUSTER|SLOTS", why="the cluster client's slot map"),
    Permission("CLUSTER|NODES", why="the probe's node health"),
    Permission("CLUSTER|INFO", why="the probe's cluster state"),
    Permission("COMMAND", why="the cluster client's command table"),
    Permission("INFO", why="redis-py < 5's cluster client checks cluster_enabled at start"),
)


def _keyed(commands: Sequence[tuple[str, tuple[str, ...]]], why: str) -> tuple[Permission, ...]:
    return tuple(Permission(c, ("KEY", *a), why=why) for c, a in commands)


#: The ticket lock store: one hash per conversation plus its waiters' wake-up lists.
LOCK_PERMISSIONS: Final = (
    *_CONNECTION,
    *_keyed([("BLPOP", ("1",))], "waiters sleep on their wake-up list"),
    *_keyed(
        [
            ("HGETALL", ()), ("HDEL", ("f",)), ("RPUSH", ("v",)), ("PEXPIRE", ("1000",)),
            ("DEL", ()), ("EXISTS", ()), ("HSET", ("f", "v")), ("HLEN", ()),
            ("HEXISTS", ("f",)),
        ],
        "inside the lock scripts",
    ),
    Permission("WAIT", ("1", "1"), why="durable mode (lock_durable_replicas) waits for replicas"),
)
#: The timer store: sorted sets and hashes per bucket.
TIMER_PERMISSIONS: Final = (
    *_CONNECTION,
    *_keyed(
        [
            ("HGET", ("f",)), ("HDEL", ("f",)), ("HEXISTS", ("f",)), ("HMGET", ("f",)),
            ("HSET", ("f", "v")), ("ZADD", ("1", "m")), ("ZRANGEBYSCORE", ("-inf", "+inf")),
            ("ZREM", ("m",)), ("ZSCORE", ("m",)),
        ],
        "inside the timer scripts (HGET also from Python)",
    ),
)
PERMISSIONS: Final[dict[Store, tuple[Permission, ...]]] = {
    "lock_store": LOCK_PERMISSIONS,
    "timer_store": TIMER_PERMISSIONS,
}
_PATTERNS: Final[dict[Store, str]] = {
    "lock_store": "turnstile:lock:*",
    "timer_store": "turnstile:timers:*",
}


def key_pattern(store: Store, key_prefix: str | None = None) -> str:
    """The glob every key of ``store`` matches (``<key_prefix>:`` first when set)."""
    prefix = f"{key_prefix}:" if key_prefix else ""
    return prefix + _PATTERNS[store]


def permissions(store: Store, *, cluster: bool = False) -> tuple[Permission, ...]:
    return PERMISSIONS[store] + (CLUSTER_ONLY if cluster else ())


def acl_rule(store: Store, key_prefix: str | None = None, *, cluster: bool = False) -> list[str]:
    """``ACL SETUSER <user> on >password <these...>``: the store's commands on its keys only."""
    commands = sorted({p.command.lower() for p in permissions(store, cluster=cluster)})
    return [
        "resetkeys", f"~{key_pattern(store, key_prefix)}", "resetchannels", "-@all",
        *(f"+{c}" for c in commands),
    ]


async def missing_permissions(
    client: Any, user: str, store: Store, key_prefix: str | None = None, *, cluster: bool = False
) -> list[str]:
    """What ``user`` lacks of the rule, one sentence each (empty: it has all of it).

    ``client`` is a redis-py asyncio client whose own user may run ``ACL DRYRUN``; a
    ``NoPermissionError`` from it reaches the caller.
    """
    pattern = key_pattern(store, key_prefix)
    key = pattern[:-1] + _SAMPLE
    missing: list[str] = []
    for permission in permissions(store, cluster=cluster):
        try:
            reply = await client.execute_command(
                "ACL", "DRYRUN", user, *permission.dryrun_args(key)
            )
        except rex.NoPermissionError:
            raise
        except rex.ResponseError as exc:
            reply = str(exc)
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        if text == "OK":
            continue
        on = f" on keys {pattern}" if permission.uses_key else ""
        missing.append(
            f"user {user!r} may not run {permission.command.replace('|', ' ')}{on} "
            f"({permission.why}): add +{permission.command.lower()}"
            + (f" ~{pattern}" if permission.uses_key else "")
            + f" [{text}]"
        )
    return missing
