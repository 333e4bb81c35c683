"""Looking at a Redis ticket lock store from outside: one conversation's queue, the
conversations with live tickets, and freeing a stuck holder (``turnstile locks``).

Everything goes through the store's own key layout and scripts (``locks.redis``,
``locks.lua``): ``show`` reads one queue with the STATE script (no SCAN; the key is computed
from the conversation id and the store's ``key_prefix``), ``list_conversations`` SCANs for
queue keys (every master in Cluster mode), bounded by a limit, and ``release`` removes one
ticket by number with the RELEASE script, which wakes the waiter directly behind it exactly as
a holder's own release does. Reading a queue purges its expired tickets, as every script does.
``show`` and ``release`` use only commands of the lock store's ACL rule (``stores.acl``);
``list_conversations`` also needs SCAN, which that rule leaves out.

A ticket's number is the Redis server clock in microseconds when it was drawn (or just above
the number before it, ``locks.lua``), so ``drawn_at`` is when the ticket was issued. A holder on
a lease (``lock_lease``) has a ``deadline``, its turn plus its lifetime, and an expiry one lease
ahead that its live holder keeps renewing: a holder whose expiry keeps falling towards 0 is dead
and is overtaken when it gets there. A holder without a deadline holds for its whole lifetime;
the store does not record when it took its turn (its expiry is that moment plus the lifetime
the holder asked for, ``lock_lifetime`` by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from redis import exceptions as rex

from turnstile.stores._redis.connection import AnyRedis
from turnstile.stores.errors import TurnstileError
from turnstile.stores.locks.redis import (
    RedisTicketLockStore,
    conversation_of,
    queue_key,
    queue_key_pattern,
)

#: Default bound of ``list_conversations``.
DEFAULT_LIMIT: Final = 100
#: SCAN's COUNT hint per call.
SCAN_COUNT: Final = 1000
#: Numbers below this (2001-09-09 in µs) were not drawn from the clock (a Rasa-style SAVE).
_CLOCK_NUMBERS: Final = 1_000_000_000 * 1_000_000


@dataclass(frozen=True)
class TicketView:
    """One live ticket: its number (the fencing token), when it expires and, for a holder on a
    lease, its hard deadline."""

    number: int
    expires: float  # seconds since the epoch, Redis server clock
    deadline: float | None = None  # likewise; None: no lease, it holds until ``expires``

    @property
    def drawn_at(self) -> float | None:
        """When the ticket was issued (seconds since the epoch), if its number tells."""
        return self.number / 1_000_000 if self.number >= _CLOCK_NUMBERS else None

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "number": self.number,
            "expires": self.expires,
            "expires_in": round(self.expires - now, 3),
            "drawn_at": self.drawn_at,
            "deadline": self.deadline,
            "deadline_in": None if self.deadline is None else round(self.deadline - now, 3),
        }


@dataclass(frozen=True)
class QueueView:
    """A conversation's queue: the holder (the head) and its waiters, in turn order."""

    conversation_id: str
    key: str
    now: float  # the Redis server clock when read
    tickets: list[TicketView] = field(default_factory=list)

    @property
    def holder(self) -> TicketView | None:
        return self.tickets[0] if self.tickets else None

    @property
    def waiters(self) -> list[TicketView]:
        return self.tickets[1:]

    def as_dict(self) -> dict[str, Any]:
        holder = self.holder
        return {
            "conversation_id": self.conversation_id,
            "key": self.key,
            "now": self.now,
            "holder": None if holder is None else holder.as_dict(self.now),
            "waiters": [w.as_dict(self.now) for w in self.waiters],
        }


@dataclass(frozen=True)
class Listing:
    """What ``list_conversations`` found, and how: a SCAN, stopped at the limit or not."""

    pattern: str
    limit: int
    nodes: int
    keys_seen: int
    stopped_at_limit: bool
    conversations: list[QueueView]

    def as_dict(self) -> dict[str, Any]:
        return {
            "scanned": True,
            "pattern": self.pattern,
            "nodes": self.nodes,
            "limit": self.limit,
            "keys_seen": self.keys_seen,
            "stopped_at_limit": self.stopped_at_limit,
            "conversations": [c.as_dict() for c in self.conversations],
        }


async def server_time(store: RedisTicketLockStore) -> float:
    """The Redis server clock (seconds since the epoch), which ticket expiries follow."""

    async def op(client: AnyRedis) -> Any:
        return await client.time(target_nodes="random") if store.connection.is_cluster \
            else await client.time()

    seconds, micros = await store.connection.run(op, what="TIME")
    return int(seconds) + int(micros) / 1_000_000


async def show(store: RedisTicketLockStore, conversation_id: str) -> QueueView:
    """One conversation's live tickets, without SCAN."""
    state = await store.state(conversation_id)
    now = await server_time(store)
    tickets = [TicketView(t.number, t.expires, deadline) for t, deadline in state]
    return QueueView(conversation_id, queue_key(conversation_id, store.settings.key_prefix),
                     now, tickets)


async def _scan_keys(
    store: RedisTicketLockStore, pattern: str, limit: int
) -> tuple[list[str], int]:
    """Up to ``limit`` keys matching ``pattern`` (more may exist), and the nodes scanned."""
    found: list[str] = []

    async def op(client: Any) -> int:  # redis-py's Redis or RedisCluster
        found.clear()
        if store.connection.is_cluster:
            nodes = client.get_primaries()
            for node in nodes:
                cursor = 0
                while len(found) < limit:
                    cursors, keys = await client.scan(
                        cursor=cursor, match=pattern, count=SCAN_COUNT, target_nodes=node
                    )
                    found.extend(keys)
                    cursor = int(cursors[node.name])
                    if cursor == 0:
                        break
            return len(nodes)
        cursor = 0
        while len(found) < limit:
            cursor, keys = await client.scan(cursor=cursor, match=pattern, count=SCAN_COUNT)
            found.extend(keys)
            if int(cursor) == 0:
                break
        return 1

    try:
        nodes = await store.connection.run(op, what="SCAN")
    except TurnstileError as exc:
        if isinstance(exc.__cause__, rex.NoPermissionError):
            raise TurnstileError(
                f"Redis ({store.settings.where}) refused SCAN to this user: the lock store's "
                "ACL rule leaves SCAN out (a bot never lists conversations); run ls with "
                "the credentials of a user that may SCAN, or use show, which needs no SCAN"
            ) from exc
        raise
    return found, nodes


async def list_conversations(
    store: RedisTicketLockStore, prefix: str = "", limit: int = DEFAULT_LIMIT
) -> Listing:
    """Conversations (id starting with ``prefix``) with live tickets, found by SCAN; at most
    ``limit`` queue keys are looked at, and the listing says whether it stopped there."""
    key_prefix = store.settings.key_prefix
    pattern = queue_key_pattern(prefix, key_prefix)
    # One key more than the limit tells whether the limit cut the scan short.
    keys, nodes = await _scan_keys(store, pattern, limit + 1)
    stopped = len(keys) > limit
    ids = sorted({c for c in (conversation_of(k, key_prefix) for k in keys[:limit])
                  if c is not None})
    views = [await show(store, cid) for cid in ids]
    return Listing(pattern, limit, nodes, min(len(keys), limit), stopped,
                   [v for v in views if v.tickets])


async def release(store: RedisTicketLockStore, conversation_id: str, number: int) -> bool:
    """Remove ticket ``number`` through the store's RELEASE script (the waiter behind it is
    woken, as by a holder's own release); False if no live ticket has that number."""
    return bool(await store._release(conversation_id, number=number))
