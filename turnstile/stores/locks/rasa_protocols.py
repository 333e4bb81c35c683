"""Rasa's own lock protocols, spoken by a Turnstile pod while a deployment moves off them.

During a rolling update from Rasa's ``concurrent_redis`` or ``redis`` lock store to Turnstile,
old pods (Rasa's code) and new pods (Turnstile, in transition: ``locks.transition``) serve the
same conversations. A new pod first takes the lock the old pods know, in *their* data format,
so each side sees the other as a peer. This module writes those two formats exactly:

``concurrent_redis`` (Rasa Pro 3.21, ``rasa.core.concurrent_lock_store``)::

    <p>concurrent_lock:<conversation>:last_issued_ticket_number   INCR counter, no expiry
    <p>concurrent_lock:<conversation>:<n>   '{"number": n, "expires": t}', EX int(t - now)

  ``<p>`` is ``"<key_prefix>:"`` or empty. Rasa draws a ticket with INCR then SET; the head
  is the lowest live number among the keys matching ``...:<conversation>:[0-9]*`` (KEYS on
  standalone and Sentinel, SCAN on every Cluster primary, as Rasa reads them). Between its INCR
  and its SET a number is drawn but no ticket shows it, and a pod that drew a higher number
  meanwhile finds itself at the head: two of Rasa's pods can hold at once (``bench/
  lock_overlaps.py`` counts it). A new pod therefore draws *visible before counted*: it writes
  its ticket with SET NX under the number after the counter (the next one if taken) and only
  then raises the counter to it (``COUNTER_AT_LEAST``), so no later draw can pass its number
  while its ticket is unseen. An old pod whose INCR returns the same number overwrites it: the
  new pod finds its ticket gone and draws again.

``redis`` (Rasa Pro 3.21 and Rasa Open Source 3.6, ``rasa.core.lock_store.RedisLockStore``)::

    <p>lock:<conversation>   '{"conversation_id": "c", "tickets": ["{\\"number\\": 0, ...}"]}'

  one JSON document, no expiry, which Rasa reads, changes and writes back (a racy GET/SET).
  A new pod changes it with a Lua script (one key, so it runs on Cluster too): atomic among
  new pods, and it keeps every other ticket's text as it was.

**Polling.** Rasa's protocol has no wake-up: old pods poll every ``wait_time_in_seconds``
(1 s). A new pod polls too, every ``poll_interval`` (0.05 s by default; bounded by the wait
deadline), which only ever reads.

**Old pods race; new pods guard against it.** Rasa's read-modify-write steps are not atomic, so
an old pod can erase a ticket a new pod just drew (a stale SET of the document; ``cleanup``
deleting the keys it saw empty a moment before) or reset the ``concurrent_redis`` counter. A new
pod therefore recognises its ticket by its exact text (its ``expires`` is moved later by a
random number of ulps, and in the ``redis`` document the scripts refuse an ``expires`` another
live ticket already has: two tickets sharing one text once made both pods rewrite both tickets,
so neither reached the head until they expired), draws again if it was erased while waiting, and
takes the lock only after two checks ``settle`` apart (0.05 s) both find it at the head with its
ticket intact and the counter not behind it (put back if an old pod reset it): any stale write
an old pod started before the new ticket existed has landed by then (Rasa's steps are
synchronous round trips; an old pod stalled for longer than ``settle`` between its read and its
write is the one case left). After a release it removes its ticket again, at random moments,
until a removal finds nothing: an old pod's stale write may have put it back. Among old pods
themselves Rasa's races remain (two old pods can hold one conversation): that is Rasa's own
behaviour, which no peer can fix.

**Lifetimes.** As in Rasa, a ticket expires ``lifetime`` after it is drawn; at the head a new
pod extends it to ``now + lifetime``, so it holds for its full lifetime like any Turnstile
holder. A ticket that expires while waiting is drawn again (the wait goes on).

What a new pod leaves: it deletes its own ticket on release and the ``redis`` document when it
empties it, as Rasa's ``cleanup`` does. It never deletes the ``concurrent_redis`` counter
(Rasa's ``delete_lock`` does, racily); one counter key per conversation stays until an old pod
cleans it up.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Literal

from redis.asyncio.cluster import RedisCluster

from turnstile.stores._redis.cancellation import cancel_safe
from turnstile.stores._redis.connection import AnyRedis, PerLoop, RedisConnection
from turnstile.stores._redis.scripts import LuaScript
from turnstile.stores.config import RedisSettings
from turnstile.stores.errors import LockError, LockTimeoutError

logger = logging.getLogger(__name__)

RasaProtocol = Literal["concurrent_redis", "redis"]
#: How often a new pod polls the previous store while it waits (Rasa polls every 1 s).
DEFAULT_POLL_INTERVAL: Final = 0.05
#: Between the two checks that must both find a ticket at the head (see the module doc).
DEFAULT_SETTLE: Final = 0.05
#: At most this many removals after a release (see ``RasaLockProtocol.release``).
_REMOVALS: Final = 5
#: At most this many numbers tried when drawing a ``concurrent_redis`` ticket (each one taken
#: means another ticket was written meanwhile), or ``expires`` texts for a ``redis`` one.
_DRAWS: Final = 20
#: A ticket's ``expires`` is moved later by up to this many ulps (``_expires_text``).
_NUDGES: Final = 40_000
#: Rasa's key names.
CONCURRENT_PREFIX: Final = "concurrent_lock:"
LAST_ISSUED_SUFFIX: Final = "last_issued_ticket_number"
REDIS_PREFIX: Final = "lock:"


# ---- scripts of the ``redis`` protocol (one JSON document per conversation) ---------------------

# Shared by the three scripts: parse Rasa's document, dropping expired tickets (Rasa drops a
# ticket when ``time.time() > expires``); recognise one's own tickets by their whole texts, or
# by the *mark* that ends them (``, "expires": <t>}``) while the number is unknown; refuse an
# ``expires`` a live ticket already carries (``taken``), so it stays unique per ticket; write
# the document back in the layout of Python's ``json.dumps``, other tickets' texts unchanged.
_DOC_HELPERS = r"""
local function load(raw, now)
  local out, dropped = {}, false
  if not raw then return out, dropped end
  local doc = cjson.decode(raw)
  for _, text in ipairs(doc.tickets or {}) do
    local t = cjson.decode(text)
    if now > tonumber(t.expires) then dropped = true
    else out[#out + 1] = {n = tonumber(t.number), s = text} end
  end
  return out, dropped
end
local function is_mine(text, from, to)
  for i = from, to do
    if string.sub(text, -#ARGV[i]) == ARGV[i] then return true end
  end
  return false
end
local function taken(tickets, mark)
  for _, t in ipairs(tickets) do
    if string.sub(t.s, -#mark) == mark then return true end
  end
  return false
end
local function dump(conv_json, tickets)
  local parts = {}
  for i, t in ipairs(tickets) do
    local quoted = string.gsub(string.gsub(t.s, '\\', '\\\\'), '"', '\\"')
    parts[i] = '"' .. quoted .. '"'
  end
  local body = table.concat(parts, ', ')
  return '{"conversation_id": ' .. conv_json .. ', "tickets": [' .. body .. ']}'
end
"""

#: Draw a ticket the way Rasa's ``TicketLock.issue_ticket`` does: the last ticket's number + 1
#: (0 when none is live), appended; refused if a live ticket already ends with that ``expires``.
#: KEYS[1] the document. ARGV[1] the conversation id as JSON, ARGV[2] now (s since the epoch),
#: ARGV[3] the new ticket's ``expires`` as JSON text. Returns {number, head number}, or
#: {-1, -1} with nothing written when the text is taken.
DOC_ISSUE: Final = LuaScript("rasa redis issue", _DOC_HELPERS + r"""
local tickets = load(redis.call('GET', KEYS[1]), tonumber(ARGV[2]))
if taken(tickets, ', "expires": ' .. ARGV[3] .. '}') then return {-1, -1} end
local n = 0
if #tickets > 0 then n = tickets[#tickets].n + 1 end
local text = '{"number": ' .. string.format('%d', n) .. ', "expires": ' .. ARGV[3] .. '}'
tickets[#tickets + 1] = {n = n, s = text}
redis.call('SET', KEYS[1], dump(ARGV[1], tickets))
return {n, tickets[1].n}
""")

#: Where a ticket stands; optionally give it a new text (a new ``expires``), unless another
#: ticket already ends with that ``expires``; drop the caller's abandoned tickets (*ghosts*:
#: erased by an old pod's stale write, then put back by another).
#: KEYS[1] the document. ARGV[1] the conversation id as JSON, ARGV[2] now, ARGV[3] the text to
#: give the ticket ("" for none), ARGV[4] k, ARGV[5..4+k] every text the ticket may have (or
#: their marks), ARGV[5+k..] those of ghosts. Returns {position, taken}: position 0 at the
#: head, -1 gone (erased or expired); taken 1 when the new text was refused. Expired tickets
#: and ghosts are dropped and saved.
DOC_CHECK: Final = LuaScript("rasa redis check", _DOC_HELPERS + r"""
local tickets, changed = load(redis.call('GET', KEYS[1]), tonumber(ARGV[2]))
local k = tonumber(ARGV[4])
local position, kept, others = -1, {}, {}
for _, t in ipairs(tickets) do
  if is_mine(t.s, 5, 4 + k) then
    position = #kept
    kept[#kept + 1] = t
  elseif is_mine(t.s, 5 + k, #ARGV) then
    changed = true
  else
    kept[#kept + 1] = t
    others[#others + 1] = t
  end
end
local refused = 0
if ARGV[3] ~= '' and position >= 0 and kept[position + 1].s ~= ARGV[3] then
  local at = string.find(ARGV[3], ', "expires": ', 1, true)
  if taken(others, string.sub(ARGV[3], at)) then refused = 1
  else kept[position + 1].s = ARGV[3]; changed = true end
end
if changed then
  if #kept > 0 then redis.call('SET', KEYS[1], dump(ARGV[1], kept))
  else redis.call('DEL', KEYS[1]) end
end
return {position, refused}
""")

#: Return a ticket as Rasa's ``cleanup`` does: remove it, delete the document once empty.
#: KEYS[1] the document. ARGV[1] the conversation id as JSON, ARGV[2] now, ARGV[3..] every
#: text the ticket may have and those of its ghosts (or their marks). Returns 1 if one was there.
DOC_RELEASE: Final = LuaScript("rasa redis release", _DOC_HELPERS + r"""
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local tickets = load(raw, tonumber(ARGV[2]))
local kept, found = {}, 0
for _, t in ipairs(tickets) do
  if is_mine(t.s, 3, #ARGV) then found = 1 else kept[#kept + 1] = t end
end
if #kept > 0 then redis.call('SET', KEYS[1], dump(ARGV[1], kept))
else redis.call('DEL', KEYS[1]) end
return found
""")

# ---- scripts of the ``concurrent_redis`` protocol (one key per ticket) -----------------------

#: Give one's own ticket a new text and expiry, only if it is still one's own.
#: KEYS[1] the ticket key. ARGV[1] the new text, ARGV[2] its EX seconds, ARGV[3..] the
#: marks of every text the ticket may have now. Returns 1 if set, 0 if the key is gone or
#: someone else's.
TICKET_EXTEND: Final = LuaScript("rasa concurrent extend", r"""
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
for i = 3, #ARGV do
  if string.sub(current, -#ARGV[i]) == ARGV[i] then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
    return 1
  end
end
return 0
""")

#: Delete one's own ticket (and nobody else's under the same number).
#: KEYS[1] the ticket key. ARGV[1..] the marks of every text the ticket may have. Returns 1
#: if deleted.
TICKET_RELEASE: Final = LuaScript("rasa concurrent release", r"""
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
for i = 1, #ARGV do
  if string.sub(current, -#ARGV[i]) == ARGV[i] then
    redis.call('DEL', KEYS[1])
    return 1
  end
end
return 0
""")

#: Put back a counter an old pod's ``delete_lock`` removed (or lowered) while tickets live.
#: KEYS[1] the ``last_issued_ticket_number`` key. ARGV[1] the lowest value it may have.
#: Returns 1 if it was behind and was raised.
COUNTER_AT_LEAST: Final = LuaScript("rasa concurrent counter", r"""
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
""")


# ---- the protocols ----------------------------------------------------------------------------


@dataclass
class RasaTicket:
    """A ticket a new pod drew in a Rasa store: its number and the ``expires`` texts it had."""

    conversation_id: str
    number: int = -1
    #: Every ``expires`` (as JSON text) the ticket was given, the current one last.
    expires: list[str] = field(default_factory=list)
    #: Tickets this waiter drew before and abandoned (erased by an old pod): number, marks.
    ghosts: list[tuple[int, list[str]]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The ticket's JSON as Rasa's ``Ticket.dumps`` writes it."""
        return _ticket_text(self.number, self.expires[-1])

    @property
    def marks(self) -> list[str]:
        """How its texts end; unique to this ticket (see ``_expires_text``)."""
        return [_mark(e) for e in self.expires]

    @property
    def ghost_marks(self) -> list[str]:
        return [m for _, marks in self.ghosts for m in marks]

    @property
    def texts(self) -> list[str]:
        """Every whole text the ticket may have, or its marks while its number is unknown (an
        issue cancelled before its reply): what the ``redis`` document scripts match it by."""
        return _texts(self.number, self.marks)

    @property
    def ghost_texts(self) -> list[str]:
        return [t for number, marks in self.ghosts for t in _texts(number, marks)]

    def owns(self, text: str | None) -> bool:
        return text is not None and any(text.endswith(m) for m in self.marks)

    def abandon(self) -> None:
        """Forget the current draw, keeping its marks to remove it wherever it turns up."""
        if self.expires:
            self.ghosts.append((self.number, self.marks))
        self.number, self.expires = -1, []


def _expires_text(expires: float, attempt: int = 0) -> str:
    """``expires`` as JSON, moved later by a random number of ulps (at most ``_NUDGES``, about
    10 ms at today's epoch), plus ``attempt``: what Rasa's ``json.loads``/``json.dumps`` write
    back unchanged (Python's shortest repr). Two draws in one clock tick can still get one text;
    the ``redis`` document's scripts refuse a text another live ticket carries, and the caller
    tries again with the next ``attempt``."""
    return repr(expires + (random.randint(1, _NUDGES) + attempt) * math.ulp(expires))


def _texts(number: int, marks: list[str]) -> list[str]:
    if number < 0:
        return marks
    return [f'{{"number": {number}{mark}' for mark in marks]


def _mark(expires_text: str) -> str:
    return f', "expires": {expires_text}}}'


def _ticket_text(number: int, expires_text: str) -> str:
    return f'{{"number": {number}{_mark(expires_text)}'


class RasaLockProtocol(abc.ABC):
    """One of Rasa's two lock protocols on one Redis (see the module doc)."""

    name: str

    def __init__(
        self,
        settings: RedisSettings,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        settle: float = DEFAULT_SETTLE,
    ) -> None:
        self.settings = settings
        self.poll_interval = poll_interval
        self.settle = settle
        prefix = f"{settings.key_prefix}:" if settings.key_prefix else ""
        self.prefix = prefix + self._base_prefix
        self._loops: PerLoop[RedisConnection] = PerLoop(self._connect, _close)
        #: Removals still running after a release (``release``); closing waits for them.
        self._pending: set[asyncio.Future[bool]] = set()

    _base_prefix: str = ""

    def _connect(self) -> RedisConnection:
        return RedisConnection(self.settings, client_name="turnstile-transition")

    @property
    def connection(self) -> RedisConnection:
        return self._loops.get()

    @property
    def where(self) -> str:
        return f"{self.name} on {self.settings.where}"

    async def close(self) -> None:
        pending = {t for t in self._pending if not t.done()}
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.settle * 1.5 * _REMOVALS + 1)
            for task in late:
                task.cancel()
        await self._loops.close_all()

    # -- primitives ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def _issue(self, ticket: RasaTicket) -> int:
        """Draw ``ticket`` (its ``expires`` is set; this sets its number); the head's number,
        -1 if none is live."""

    @abc.abstractmethod
    async def _position(self, ticket: RasaTicket, *, at_head: bool) -> int:
        """0 at the head, > 0 behind others, -1 gone; ``at_head`` also checks what only the
        head must (the ``concurrent_redis`` counter)."""

    @abc.abstractmethod
    async def _extend(self, ticket: RasaTicket, lifetime: float) -> None:
        """Give the ticket ``now + lifetime``, if it is still there."""

    @abc.abstractmethod
    async def _remove(self, ticket: RasaTicket) -> bool:
        """Remove the ticket and its ghosts (idempotent); False if the ticket was gone."""

    async def release(self, ticket: RasaTicket) -> bool:
        """Remove the ticket; then again in the background, in case an old pod's stale write
        (read before this release) put it back, until a removal finds nothing."""
        found = await self._remove(ticket)
        task = asyncio.ensure_future(self._remove_again(ticket))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        task.add_done_callback(_release_done)
        return found

    async def _remove_again(self, ticket: RasaTicket) -> bool:
        # Random pauses: an old pod polls on a fixed period, and a fixed one could keep
        # landing inside its read-modify-write.
        for _ in range(_REMOVALS):
            await asyncio.sleep(self.settle * random.uniform(0.5, 1.5))
            if not await self._remove(ticket):
                return True
        return False

    # -- the wait -------------------------------------------------------------------------------

    async def acquire(self, conversation_id: str, lifetime: float, deadline: float) -> RasaTicket:
        """Hold the conversation in this store: draw, poll until at the head, confirm.

        ``deadline`` is ``loop.time()``; LockTimeoutError past it. Whatever ends the wait
        early (an error, a cancellation), the ticket drawn is returned first.
        """
        ticket = RasaTicket(conversation_id)
        try:
            return await self._wait(ticket, lifetime, deadline)
        except BaseException:
            if ticket.expires or ticket.ghosts:
                await release_safely(self, ticket)
            raise

    async def _draw(self, ticket: RasaTicket, lifetime: float) -> int:
        for attempt in range(_DRAWS):
            ticket.expires = [_expires_text(time.time() + lifetime, attempt)]
            head = await cancel_safe(self._issue(ticket), settle=True)
            if ticket.number >= 0:
                return 0 if head == ticket.number else 1
        raise LockError(f"conversation {ticket.conversation_id!r}: no unused ticket text in the "
                        f"previous lock store ({self.where}) after {_DRAWS} tries")

    async def _wait(self, ticket: RasaTicket, lifetime: float, deadline: float) -> RasaTicket:
        loop = asyncio.get_running_loop()
        position = await self._draw(ticket, lifetime)
        confirming = False
        while True:
            if position < 0:  # erased by an old pod's stale write, or expired: draw again
                ticket.abandon()
                position, confirming = await self._draw(ticket, lifetime), False
            if position == 0 and not confirming:
                await self._extend(ticket, lifetime)
                confirming = True
                pause = self.settle
            elif position == 0:
                return ticket
            else:
                confirming = False
                pause = self.poll_interval
            if not confirming:  # a ticket at the head is confirmed even past the deadline
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise LockTimeoutError(
                        f"conversation {ticket.conversation_id!r} was not free in the previous "
                        f"lock store ({self.where}) within the wait time"
                    )
                pause = min(pause, remaining)
            await asyncio.sleep(pause)
            position = await self._position(ticket, at_head=confirming)


async def release_safely(protocol: RasaLockProtocol, ticket: RasaTicket) -> None:
    """Release even while being cancelled (again in the background; the caller still sees the
    cancellation), as ``locks.api`` does for Turnstile's own tickets."""
    try:
        await protocol.release(ticket)
    except asyncio.CancelledError:
        task = asyncio.ensure_future(protocol.release(ticket))
        _BACKGROUND.add(task)
        task.add_done_callback(_release_done)
        raise


_BACKGROUND: set[asyncio.Future[bool]] = set()


def _release_done(task: asyncio.Future[bool]) -> None:
    _BACKGROUND.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("returning a ticket to the previous lock store failed",
                       exc_info=task.exception())


async def _close(conn: RedisConnection) -> None:
    await conn.close()


class ConcurrentRedisProtocol(RasaLockProtocol):
    """Rasa Pro's ``concurrent_redis`` (``ConcurrentRedisLockStore``)."""

    name = "concurrent_redis"
    _base_prefix = CONCURRENT_PREFIX

    def _ticket_key(self, conversation_id: str, number: int) -> str:
        return f"{self.prefix}{conversation_id}:{number}"

    def _counter_key(self, conversation_id: str) -> str:
        return f"{self.prefix}{conversation_id}:{LAST_ISSUED_SUFFIX}"

    async def _issue(self, ticket: RasaTicket) -> int:
        # Visible before counted (module doc): the ticket is written (SET NX) under the number
        # after the counter, and only then is the counter raised past it. Rasa's order, INCR
        # then SET, leaves the number drawn but the ticket unseen for a round trip: an old pod
        # that drew the next number in between found itself at the head and held, and this
        # pod, at the head too once its SET landed, held with it.
        conn = self.connection
        cid = ticket.conversation_id
        counter = self._counter_key(cid)
        number = int(await conn.run(lambda c: c.get(counter), what="GET") or 0) + 1
        for _ in range(_DRAWS):
            ticket.number = number
            if await conn.run(partial(_set_new, self._ticket_key(cid, number), ticket.text,
                                      _ttl(ticket)), what="SET NX"):
                break
            # Taken (an old pod's INCR and SET came first): after it, or after the counter.
            now = int(await conn.run(lambda c: c.get(counter), what="GET") or 0)
            number = max(number, now) + 1
        else:
            raise LockError(f"conversation {cid!r}: no free ticket number in the previous lock "
                            f"store ({self.where}) after {_DRAWS} tries")
        await conn.eval(COUNTER_AT_LEAST, [counter], [number])
        live = await self._live(cid)
        return min(live) if live else -1

    async def _live(self, conversation_id: str) -> dict[int, str]:
        """Rasa's ``get_lock``: the live tickets, number -> text."""
        pattern = f"{self.prefix}{conversation_id}:[0-9]*"

        async def read(client: AnyRedis) -> list[Any]:
            if isinstance(client, RedisCluster):  # every primary, as Rasa's SCAN
                keys = [k async for k in client.scan_iter(match=pattern, count=100)]
                return list(await client.mget_nonatomic(keys)) if keys else []
            keys = await client.keys(pattern)
            return list(await client.mget(keys)) if keys else []

        now = time.time()
        live: dict[int, str] = {}
        for raw in await self.connection.run(read, what="ticket scan"):
            if raw is None:
                continue
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                data = json.loads(text)
                number, expires = int(data["number"]), float(data["expires"])
            except (ValueError, KeyError, TypeError):
                continue
            if now <= expires:
                live[number] = text
        return live

    async def _position(self, ticket: RasaTicket, *, at_head: bool) -> int:
        cid = ticket.conversation_id
        live = await self._live(cid)
        if not ticket.owns(live.get(ticket.number)):
            return -1
        ahead = sum(1 for n in live if n < ticket.number)
        if at_head and ahead == 0:
            raised = await self.connection.eval(
                COUNTER_AT_LEAST, [self._counter_key(cid)], [ticket.number]
            )
            if int(raised):
                logger.info("previous lock store (%s): put back the ticket counter of "
                            "conversation %r that an old pod removed", self.where, cid)
                return 1  # look again after a poll: an old pod may have drawn a low number
        return ahead

    async def _extend(self, ticket: RasaTicket, lifetime: float) -> None:
        marks = ticket.marks
        new = _expires_text(time.time() + lifetime)
        key = self._ticket_key(ticket.conversation_id, ticket.number)
        text = _ticket_text(ticket.number, new)
        if int(await self.connection.eval(
            TICKET_EXTEND, [key], [text, max(int(lifetime), 1), *marks]
        )):
            ticket.expires.append(new)

    async def _remove(self, ticket: RasaTicket) -> bool:
        cid = ticket.conversation_id
        for number, marks in ticket.ghosts:
            await self.connection.eval(TICKET_RELEASE, [self._ticket_key(cid, number)], marks)
        if not ticket.expires or ticket.number < 0:
            return False
        key = self._ticket_key(cid, ticket.number)
        return bool(int(await self.connection.eval(TICKET_RELEASE, [key], ticket.marks)))


async def _set_new(key: str, text: str, ttl: int, client: AnyRedis) -> bool:
    """SET NX with an expiry: whether ``key`` was free and is now ``text`` (also when this is
    the retry of a SET whose reply a failover lost: the key then holds ``text`` already)."""
    if await client.set(key, text, ex=ttl, nx=True):
        return True
    current = await client.get(key)
    return current in {text, text.encode()}


def _ttl(ticket: RasaTicket) -> int:
    """Rasa's ``EX``: ``int(expires - now)``, at least 1 (Rasa would not save it at all)."""
    return max(int(float(ticket.expires[-1]) - time.time()), 1)


class RedisDocumentProtocol(RasaLockProtocol):
    """Rasa's ``redis`` (``RedisLockStore``, Rasa Pro 3.21 and Rasa Open Source 3.6)."""

    name = "redis"
    _base_prefix = REDIS_PREFIX

    def _key(self, conversation_id: str) -> str:
        return f"{self.prefix}{conversation_id}"

    def _args(self, ticket: RasaTicket) -> list[str]:
        return [json.dumps(ticket.conversation_id), repr(time.time())]

    async def _issue(self, ticket: RasaTicket) -> int:
        # The mark is known before the number: a cancelled issue can still be released by it.
        # Number -1: another live ticket has this ``expires``; nothing was written.
        number, head = await self.connection.eval(
            DOC_ISSUE, [self._key(ticket.conversation_id)],
            [*self._args(ticket), ticket.expires[-1]],
        )
        ticket.number = int(number)
        return int(head)

    async def _position(self, ticket: RasaTicket, *, at_head: bool) -> int:
        position, _ = await self._check(ticket, ticket.text)
        return position

    async def _check(self, ticket: RasaTicket, text: str) -> tuple[int, bool]:
        """Its position, and whether ``text`` was refused (another ticket has its ``expires``).
        Matched by whole texts: another ticket may later draw an ``expires`` this one had."""
        texts = ticket.texts
        position, refused = await self.connection.eval(
            DOC_CHECK, [self._key(ticket.conversation_id)],
            [*self._args(ticket), text, len(texts), *texts, *ticket.ghost_texts],
        )
        return int(position), bool(int(refused))

    async def _extend(self, ticket: RasaTicket, lifetime: float) -> None:
        for attempt in range(_DRAWS):
            new = _expires_text(time.time() + lifetime, attempt)
            position, refused = await self._check(ticket, _ticket_text(ticket.number, new))
            if position < 0:
                return
            if not refused:
                ticket.expires.append(new)
                return
        # Every try was taken: it keeps the lifetime it has, and is still confirmed.

    async def _remove(self, ticket: RasaTicket) -> bool:
        marks = ticket.texts + ticket.ghost_texts
        if not marks:
            return False
        return bool(int(await self.connection.eval(
            DOC_RELEASE, [self._key(ticket.conversation_id)], [*self._args(ticket), *marks]
        )))


PROTOCOLS: Final[Mapping[str, type[RasaLockProtocol]]] = {
    "concurrent_redis": ConcurrentRedisProtocol,
    "redis": RedisDocumentProtocol,
}
