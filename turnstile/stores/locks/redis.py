"""The Redis ticket lock store, for Rasa servers run with several replicas.

One conversation's tickets live in one hash, ``<prefix>turnstile:lock:{<conversation>}``; the
braces are a Cluster hash tag, so the hash and its wake-up lists (named after it, and passed
to the scripts in KEYS like every key they touch) share a slot and every script runs unchanged
on standalone, Sentinel, Cluster and the managed services that check declared keys (scripts
and data layout: ``locks.lua``). Issuing, checking and releasing are one script each, so a lock
cycle with nobody waiting is two round trips: ISSUE (answers "you are at the head") and
RELEASE.

**Wake-up by blocking pop, keyed by the ticket in front.** A waiter blocks in ``BLPOP`` on the
"done" list of the ticket directly ahead of it (ISSUE and CHECK name it) and on the
conversation's "ask again" list; the RELEASE of that ticket pushes one token to its done list.
The token outlives a waiter that has not yet started to block (no lost wake-up), only the one
behind is woken (no herd), it needs nothing but keys in the conversation's slot (redis-py's
async Cluster client has no pub/sub before 5.x), and a failover cannot split the token from the
release that made it: both are effects of one script. The wait is bounded by the expiry of the
head and of the ticket in front (the safety net for a dead holder or waiter, whose ticket
expires without a push), by ``socket_timeout`` (a blocked read must not hit it) and by the
waiter's lease renewal; after any wake-up the waiter asks with CHECK, which renews its waiting
lease or takes the turn (the lifetime counts from there; ``locks.api`` module doc), and names
the ticket in front again: a waiter ahead that left released its ticket, which woke this one.
So a token lost with a dead master costs one round trip.

**Bounded connections.** Per store and event loop: one multiplexed script connection per Redis
node, plus at most ``wait_connections`` (default 16) pooled connections blocked in ``BLPOP``.
Of the waiters of one conversation in this process only the first in line blocks in Redis; the
others wait in memory for it to leave the line (renewing their leases every few seconds). A
burst on one conversation therefore needs one blocking connection per pod, not one per message.
Past the cap, a waiter asks with CHECK every ``_OVERFLOW_POLL`` instead of blocking.

**Holder leases** (``lock_lease``, ``locks.api`` module doc): ISSUE and CHECK give a ticket that
takes its turn one lease and a deadline (turn + lifetime) in the same script, so the cycle
stays two round trips; the holder's background renewal is the RENEW script.

**Failover** (``docs/locks.md``): a waiter's CHECK carries its number and the conversation's
gone mark, so a ticket lost with a dead master's last writes (or whose waiting lease ran out
while Redis was unreachable) re-enters the line in that same script, in its place when a ticket
ahead of it proves that safe, else at the back; a holder's RENEW puts its lost ticket back when
the queue is empty. RELEASE gets the ticket's known expiry, and the connection says whether an
earlier attempt was sent, so a release whose reply was lost is not taken for an expired ticket.
In durable mode (``lock_durable_replicas``) the ISSUE or CHECK that grants a turn is followed
by ``WAIT`` on the same connection before the holder enters.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Final

from turnstile.stores._redis.cancellation import cancel_safe
from turnstile.stores._redis.connection import AnyRedis, PerLoop, RedisConnection, is_retryable
from turnstile.stores._redis.scripts import LuaScript
from turnstile.stores.config import (
    DURABLE_KEYS,
    REDIS_KEYS,
    DurableSettings,
    RedisSettings,
    SettingsReader,
    read_durable,
    warn_unknown,
)
from turnstile.stores.errors import ConfigurationError, LockError, LockTimeoutError
from turnstile.stores.locks.api import (
    DEFAULT_LOCK_LEASE,
    LEASE_ACCEPTED,
    Issued,
    Released,
    Renewal,
    Ticket,
    TicketLock,
    TicketLockStore,
    check_lease,
    check_lifetime,
    default_lock_lifetime,
    release_outcome,
    renew_interval,
    waiting_lease,
)
from turnstile.stores.locks.lua import CHECK, DELETE, ISSUE, RELEASE, RENEW, SAVE, STATE

logger = logging.getLogger(__name__)

#: Keys of the ``lock_store`` section besides the Redis connection keys.
LOCK_KEYS: Final = frozenset({"lock_lifetime", "lock_lease", "wait_connections"})
#: Default cap on the connections blocked in wake-up waits, per store and event loop.
DEFAULT_WAIT_CONNECTIONS: Final = 16
#: A waiter past that cap asks this often instead of blocking.
_OVERFLOW_POLL: Final = 0.05
_SECTION: Final = "lock_store"
#: A blocked read must end before ``socket_timeout`` would cut it.
_BLOCK_MARGIN: Final = 0.5
_MIN_BLOCK: Final = 0.01
#: After an interrupted wait, before asking again (the retrying CHECK does the real backoff).
_INTERRUPTED_PAUSE: Final = 0.01
#: CHECK's last reply: the ticket was gone and re-entered with its number (else at the back).
_REENTERED_KEEPING_TURN: Final = 1
#: Durable mode: after a WAIT that fell short, turns go unacknowledged this long (seconds), so
#: missing replicas cost one ``lock_durable_timeout`` per interval, not one per turn.
_DURABLE_BACKOFF: Final = 1.0


def conversation_tag(conversation_id: str) -> str:
    """The conversation id as a safe, non-empty hash tag (braces and ``%`` escaped)."""
    escaped = (
        conversation_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    )
    return escaped or "%"


def queue_key(conversation_id: str, key_prefix: str | None = None) -> str:
    """The hash holding one conversation's tickets; its wake-up lists hang off this name."""
    prefix = f"{key_prefix}:" if key_prefix else ""
    return f"{prefix}turnstile:lock:{{{conversation_tag(conversation_id)}}}"


def queue_key_pattern(conversation_prefix: str = "", key_prefix: str | None = None) -> str:
    """A SCAN ``MATCH`` pattern for the queues of conversations whose id starts with
    ``conversation_prefix`` (glob characters escaped; wake-up lists do not match)."""
    tag = conversation_tag(conversation_prefix) if conversation_prefix else ""
    prefix = f"{key_prefix}:" if key_prefix else ""
    return f"{_glob_escape(prefix)}turnstile:lock:{{{_glob_escape(tag)}*}}"


def conversation_of(key: str, key_prefix: str | None = None) -> str | None:
    """The conversation id a queue key belongs to (``queue_key``'s inverse), or None."""
    head = f"{key_prefix}:turnstile:lock:{{" if key_prefix else "turnstile:lock:{"
    if not key.startswith(head) or not key.endswith("}"):
        return None
    tag = key[len(head):-1]
    if "{" in tag or "}" in tag:
        return None
    if tag == "%":
        return ""
    return tag.replace("%7B", "{").replace("%7D", "}").replace("%25", "%")


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def done_key(queue: str, number: int) -> str:
    """The list the RELEASE of ticket ``number`` pushes to; its successor's waiter pops it."""
    return f"{queue}:d:{number}"


def ask_again_key(queue: str) -> str:
    """The list DELETE and SAVE push "ask again" tokens to, one per waiter."""
    return f"{queue}:x"


def gone_key(queue: str) -> str:
    """The gone mark: the highest number removed on purpose (DELETE, SAVE, a release by number
    alone); a waiter or holder whose ticket is gone puts it back only above it."""
    return f"{queue}:g"


@dataclass(eq=False)
class _Waiter:
    """A waiter of this process, in its conversation's local line (see the module doc)."""

    number: int
    turn: asyncio.Event = field(default_factory=asyncio.Event)


class _LoopState:
    """What a store keeps per event loop: its connection and its waiters."""

    def __init__(self, connection: RedisConnection, wait_connections: int) -> None:
        self.connection = connection
        self.free_slots = wait_connections
        self.lines: dict[str, list[_Waiter]] = {}
        #: Durable mode: ``loop.time()`` before which turns are not acknowledged (see
        #: ``_DURABLE_BACKOFF``).
        self.durable_paused_until = 0.0

    def enter(self, conversation_id: str, number: int) -> _Waiter:
        waiter = _Waiter(number)
        line = self.lines.setdefault(conversation_id, [])
        bisect.insort(line, waiter, key=lambda w: w.number)
        if line[0] is waiter:
            waiter.turn.set()
        return waiter

    def renumber(self, conversation_id: str, waiter: _Waiter, number: int) -> None:
        """A waiter that re-entered at the back has a new number: its place here moves too."""
        line = self.lines[conversation_id]
        line.remove(waiter)
        waiter.number = number
        bisect.insort(line, waiter, key=lambda w: w.number)
        line[0].turn.set()

    def is_first(self, conversation_id: str, waiter: _Waiter) -> bool:
        return self.lines[conversation_id][0] is waiter

    def leave(self, conversation_id: str, waiter: _Waiter) -> None:
        line = self.lines.get(conversation_id)
        if line is None:
            return
        line.remove(waiter)
        if line:
            line[0].turn.set()
        else:
            del self.lines[conversation_id]

    async def close(self) -> None:
        await self.connection.close()


class RedisTicketLockStore(TicketLockStore):
    """Ticket locks in Redis (standard, Cluster or Sentinel); see the module doc."""

    #: What each event loop's connection is made of (the benchmark swaps it to compare).
    connection_class: ClassVar[type[RedisConnection]] = RedisConnection

    def __init__(
        self,
        settings: RedisSettings,
        *,
        lock_lifetime: float | None = None,
        lock_lease: float | None = DEFAULT_LOCK_LEASE,
        wait_connections: int = DEFAULT_WAIT_CONNECTIONS,
        client_name: str = "turnstile-locks",
        durable: DurableSettings | None = None,
    ) -> None:
        super().__init__(lock_lifetime=lock_lifetime, lock_lease=lock_lease)
        self.settings = settings
        self.wait_connections = wait_connections
        #: Durable mode (``lock_durable_replicas``): None when off.
        self.durable = durable
        self._client_name = client_name
        # redis-py clients belong to the loop that made them; Rasa runs some jobs under
        # ``asyncio.run`` in another thread, so each loop gets its own connection, closed
        # when that loop closes (Rasa never calls ``close()``).
        self._loops: PerLoop[_LoopState] = PerLoop(self._new_state, _LoopState.close)

    def _new_state(self) -> _LoopState:
        conn = self.connection_class(self.settings, client_name=self._client_name)
        return _LoopState(conn, self.wait_connections)

    @classmethod
    def from_kwargs(
        cls, kwargs: Mapping[str, Any] | None, *, url: str | None = None, section: str = _SECTION
    ) -> RedisTicketLockStore:
        """Build from Rasa's ``endpoint_config.kwargs`` (and ``endpoint_config.url``); errors
        name ``section.key`` (a transition's previous store is ``lock_store.transition_from``)."""
        reader = SettingsReader(kwargs, section=section)
        settings = RedisSettings.read(reader, default_db=1, url=url)
        lifetime = reader.number("lock_lifetime", default_lock_lifetime(), minimum=0,
                                 exclusive_min=True)
        try:
            lease = check_lease(reader.number("lock_lease", DEFAULT_LOCK_LEASE),
                                key=reader.name("lock_lease"))
        except ConfigurationError as exc:  # one sentence for every bad value, as written
            given = (kwargs or {}).get("lock_lease")
            raise ConfigurationError(exc.key, given, LEASE_ACCEPTED) from None
        wait_connections = reader.integer(
            "wait_connections", DEFAULT_WAIT_CONNECTIONS, minimum=1, maximum=10_000
        )
        durable = read_durable(reader)
        warn_unknown(reader, REDIS_KEYS | LOCK_KEYS | DURABLE_KEYS, what=section)
        return cls(settings, lock_lifetime=lifetime, lock_lease=lease,
                   wait_connections=wait_connections, durable=durable)

    @property
    def connection(self) -> RedisConnection:
        """The connection of the running event loop."""
        return self._loops.get().connection

    def _key(self, conversation_id: str) -> str:
        return queue_key(conversation_id, self.settings.key_prefix)

    async def _issue(
        self, conversation_id: str, ticket_id: str, lifetime: float, *, waiting: bool = True
    ) -> Issued:
        lifetime_ms = _ms(check_lifetime(lifetime))
        args: list[Any] = [ticket_id, lifetime_ms]
        if waiting:
            args.append(_ms(waiting_lease(lifetime)))
            hold = self.hold_lease(lifetime)
            if hold is not None:
                args.append(_ms(hold))
        number, position, wait_ms, expires, ahead = await self._turn_script(
            self._loops.get(), ISSUE, [self._key(conversation_id)], args, _issue_at_head
        )
        ticket = Ticket(int(number), int(expires) / 1000)
        self.metrics.drawn(int(position))
        return Issued(
            ticket, ticket_id, int(position) == 0, int(wait_ms) / 1000, lifetime, int(ahead)
        )

    async def _wait_turn(self, issued: Issued, conversation_id: str, deadline: float) -> Ticket:
        state = self._loops.get()
        waiter = state.enter(conversation_id, issued.ticket.number)
        try:
            return await self._wait_in_line(state, waiter, issued, conversation_id, deadline)
        finally:
            state.leave(conversation_id, waiter)

    async def _wait_in_line(
        self,
        state: _LoopState,
        waiter: _Waiter,
        issued: Issued,
        conversation_id: str,
        deadline: float,
    ) -> Ticket:
        loop = asyncio.get_running_loop()
        conn = state.connection
        key = self._key(conversation_id)
        ask_again = ask_again_key(key)
        ahead = issued.ahead
        hold = self.hold_lease(issued.lifetime)
        number = issued.ticket.number
        renew: list[Any] = [
            issued.ticket_id, _ms(waiting_lease(issued.lifetime)), _ms(issued.lifetime),
            "" if hold is None else _ms(hold), number,
        ]
        keys = [key, gone_key(key)]
        head_ttl = issued.head_ttl
        cap = min(
            max(self.settings.socket_timeout - _BLOCK_MARGIN, _MIN_BLOCK),
            renew_interval(issued.lifetime),
        )
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LockTimeoutError(
                    f"conversation {conversation_id!r} was not free within the wait time"
                )
            # Sleep until woken, until the head or the ticket in front would expire (the
            # safety net for a dead holder or waiter), or until this waiter's lease needs
            # renewing.
            block = max(min(remaining, head_ttl + 0.005, cap), _MIN_BLOCK)
            if not state.is_first(conversation_id, waiter):
                waiter.turn.clear()
                await cancel_safe(_wait_event(waiter.turn, block), settle=False)
            elif state.free_slots > 0:
                state.free_slots -= 1
                try:
                    woken = await cancel_safe(
                        conn.run(partial(_blocking_pop,
                                         keys=[done_key(key, ahead), ask_again],
                                         timeout=block),
                                 what="ticket wait"),
                        settle=False,
                    )
                finally:
                    state.free_slots += 1
                if woken is None:
                    await asyncio.sleep(_INTERRUPTED_PAUSE)
            else:
                await asyncio.sleep(min(block, _OVERFLOW_POLL))
            # Woken or not: CHECK renews the lease, or takes the turn at the head; a ticket
            # gone in a failover (or whose lease ran out meanwhile) re-enters.
            position, ttl_ms, expires, in_front, now_number, how = await self._turn_script(
                state, CHECK, keys, renew, _check_at_head
            )
            if int(position) < 0:
                raise LockError(
                    f"the ticket for conversation {conversation_id!r} was deleted before its "
                    "turn"
                )
            if int(how):
                number = self._reentered(state, waiter, conversation_id, number,
                                         int(now_number), int(how))
                renew[-1] = number
            if int(position) == 0:
                return Ticket(number, int(expires) / 1000)
            head_ttl, ahead = int(ttl_ms) / 1000, int(in_front)

    def _reentered(  # noqa: PLR0917 - one private call site, the wait loop
        self, state: _LoopState, waiter: _Waiter, conversation_id: str, old: int, new: int,
        how: int,
    ) -> int:
        self.metrics.reentered()
        if how == _REENTERED_KEEPING_TURN:
            logger.info("conversation %r: a waiting ticket (%d) was gone (a Redis failover, or "
                        "its lease ran out while Redis was unreachable); it re-entered in its "
                        "place", conversation_id, old)
            return old
        logger.info("conversation %r: a waiting ticket (%d) was gone (a Redis failover, or its "
                    "lease ran out while Redis was unreachable) and nothing proves its place "
                    "safe; it re-entered at the back as %d", conversation_id, old, new)
        state.renumber(conversation_id, waiter, new)
        return new

    async def _turn_script(
        self,
        state: _LoopState,
        script: LuaScript,
        keys: list[str],
        args: list[Any],
        grants_turn: Callable[[Any], bool],
    ) -> Any:
        """Run ISSUE or CHECK; in durable mode, a reply that grants the turn is acknowledged by
        ``durable.replicas`` replicas (``WAIT``) before it is returned. Too few acknowledgements
        in ``durable.timeout`` (replicas down, or still resyncing after a failover) let the
        holder enter all the same, with a warning, and pause the acknowledgements for
        ``_DURABLE_BACKOFF``: durable mode narrows the replication window, it does not stop
        conversations when replicas are missing (``docs/locks.md``, "Durable mode")."""
        durable = self.durable
        if durable is None:
            return await state.connection.eval(script, keys, args)
        loop = asyncio.get_running_loop()
        if loop.time() < state.durable_paused_until:
            reply = await state.connection.eval(script, keys, args)
            if grants_turn(reply):
                self.metrics.durable_unacked()
            return reply
        # WAIT must follow the write on the connection that made it: eval_then sends it there.
        wait = ("WAIT", durable.replicas, durable.timeout_ms)
        reply, acked = await state.connection.eval_then(
            script, keys, args, then=lambda reply: wait if grants_turn(reply) else None
        )
        if acked is not None and int(acked) < durable.replicas:
            self.metrics.durable_unacked()
            state.durable_paused_until = loop.time() + _DURABLE_BACKOFF
            logger.warning(
                "durable locks: %d of %d replicas acknowledged a turn within %gs; the holder "
                "enters unacknowledged, and turns go unacknowledged for %gs (are replicas "
                "down, or resyncing after a failover?)",
                acked, durable.replicas, durable.timeout, _DURABLE_BACKOFF,
            )
        return reply

    async def _renew(
        self,
        conversation_id: str,
        ticket_id: str,
        lease: float,
        *,
        number: int | None = None,
        deadline_in: float | None = None,
    ) -> Renewal:
        key = self._key(conversation_id)
        args: list[Any] = [ticket_id, _ms(lease)]
        if number is not None and deadline_in is not None:
            args += [number, int(deadline_in * 1000)]
        position, ttl_ms, deadline_ms, restored = await self.connection.eval(
            RENEW, [key, gone_key(key)], args
        )
        return Renewal(
            int(position), int(ttl_ms) / 1000, int(deadline_ms) / 1000, bool(int(restored))
        )

    async def _release(
        self,
        conversation_id: str,
        *,
        ticket_id: str | None = None,
        number: int | None = None,
        expires: float | None = None,
    ) -> Released:
        key = self._key(conversation_id)
        keys = [key, ask_again_key(key), gone_key(key)]
        if number is not None:
            keys.append(done_key(key, number))
        args = [ticket_id or "", "" if number is None else str(number),
                "" if expires is None else str(int(expires * 1000))]
        found, earlier = await self.connection.eval_counting(RELEASE, keys, args)
        return release_outcome(int(found), reply_lost=earlier > 0)

    async def state(self, conversation_id: str) -> list[tuple[Ticket, float | None]]:
        """The live tickets in turn order, each with its hard deadline (seconds since the
        epoch, Redis' clock) if it is held on a lease."""
        flat = await self.connection.eval(STATE, [self._key(conversation_id)], [])
        return [
            (Ticket(int(flat[i]), int(flat[i + 1]) / 1000),
             int(flat[i + 2]) / 1000 if int(flat[i + 2]) else None)
            for i in range(0, len(flat), 3)
        ]

    async def get_lock(self, conversation_id: str) -> TicketLock | None:
        tickets = [ticket for ticket, _ in await self.state(conversation_id)]
        if not tickets:
            return None
        return TicketLock(conversation_id, deque(tickets))

    async def save_lock(self, lock: TicketLock) -> None:
        args: list[str] = []
        for ticket in lock.tickets:
            args += [str(int(ticket.number)), str(int(ticket.expires * 1000))]
        key = self._key(lock.conversation_id)
        await self.connection.eval(SAVE, [key, ask_again_key(key), gone_key(key)], args)

    async def delete_lock(self, conversation_id: str) -> None:
        key = self._key(conversation_id)
        await self.connection.eval(DELETE, [key, ask_again_key(key), gone_key(key)], [])

    async def close(self) -> None:
        """Close the connection of the running loop and those of other running loops (a
        loop that closes first closes its own)."""
        await self._loops.close_all()


def _issue_at_head(reply: Any) -> bool:
    return int(reply[1]) == 0


def _check_at_head(reply: Any) -> bool:
    return int(reply[0]) == 0


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


async def _blocking_pop(client: AnyRedis, keys: list[str], timeout: float) -> bool | None:
    """BLPOP one wake-up token from any of ``keys``: True if woken, False on timeout, None if
    interrupted (the caller asks with CHECK in every case).

    A failover-like error is not retried here: a token popped just before a master died would
    be lost with its reply, so the caller asks with CHECK first (through the retrying
    connection, which also rediscovers the master) and only then blocks again.
    """
    try:
        reply = await client.blpop(keys, timeout=round(timeout, 3))
    except Exception as exc:
        if not is_retryable(exc):
            raise
        logger.debug("wake-up wait interrupted (%s); checking again", type(exc).__name__)
        return None
    return reply is not None
