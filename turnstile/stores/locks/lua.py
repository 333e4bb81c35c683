"""The Lua scripts of the Redis ticket lock store: each operation is one atomic round trip.

Data of one conversation (``Q`` is ``KEYS[1]``, e.g. ``turnstile:lock:{conversation}``)::

    Q              HASH   <ticket id> -> "<number> <expires ms since epoch>"
                          "~seq"      -> last issued number
    Q..":w:"..id   LIST   wake-up token for ticket ``id`` (BLPOP'ed by its waiter)

The wake-up keys are derived from ``KEYS[1]`` inside the scripts, so they carry its hash tag
and live in its Cluster slot. Expired tickets are purged by every script (Redis 7.0 has no
per-field TTL); ``Q`` itself gets a PEXPIRE at its last expiry so an abandoned conversation
leaves nothing behind.

Expiry: a ticket at the head lives ``lifetime`` from the moment it got there (CHECK takes the
turn); a ticket behind others lives on a short waiting lease that its waiter renews with CHECK,
so a message waiting behind a dead holder never expires with it, and a dead waiter leaves the
queue within one lease (``tickets`` module doc).

Numbers: a new ticket gets ``max(last number + 1, server clock in microseconds)``. The clock
keeps numbers growing when ``Q`` is gone (all tickets returned or expired) and across a failover
that lost the last writes (the new master issues seconds later; only clock skew between the
Redis hosts larger than the failover time could break that). So the number doubles as a
fencing token that never goes back. (Numbers stay below 2^53: exact in Lua's doubles.)

Every script is idempotent per caller-made ticket id: ``RedisConnection.run`` repeats a script
whose reply was lost, and a repeated ISSUE must return the same ticket, not queue a second one.

A script that changes who is at the head (release, purge of an expired head, save) pushes the
token ``1`` ("you are at the head") to the new head's wake key; its waiter is blocked on it in
BLPOP. DELETE pushes ``0`` ("ask again") to every waiter, which then finds its ticket gone.

Resharding: while a conversation's slot migrates between Cluster masters, a script whose
declared key is still on the old master runs there, but the wake key (derived, not declared)
may not be, and Redis stops the script with "non local key". The connection retries that like
ASK (``connection.is_retryable``); RELEASE pushes the wake-up before its own writes so that the
retry is exact. A wake-up lost in the move (ISSUE/CHECK purging an expired head) costs the
waiter at most one blocking-pop timeout (``socket_timeout``) before it asks again with CHECK.
"""

from __future__ import annotations

from typing import Final

from turnstile.stores._redis.scripts import LuaScript

# The clock, first in every script: ``now`` in ms and ``now_us`` in µs since the epoch.
_CLOCK: Final = r"""
local Q = KEYS[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
"""

# Shared helpers. ``load`` purges expired tickets and returns the live ones sorted by number,
# plus the head before the purge; ``settle`` wakes a new head and sets the key's expiry.
# They come after the fast paths of ISSUE and RELEASE, which then do not pay for the closures.
_HELPERS: Final = r"""
local function load()
  local flat = redis.call('HGETALL', Q)
  local live, dead, seq, first = {}, {}, nil, nil
  for i = 1, #flat, 2 do
    local id, value = flat[i], flat[i + 1]
    if id == '~seq' then
      seq = value
    else
      local sp = string.find(value, ' ', 1, true)
      local t = {id = id, n = tonumber(string.sub(value, 1, sp - 1)),
                 e = tonumber(string.sub(value, sp + 1))}
      if first == nil or t.n < first.n then first = t end
      if t.e <= now then dead[#dead + 1] = id else live[#live + 1] = t end
    end
  end
  if #dead > 0 then
    redis.call('HDEL', Q, unpack(dead))
  end
  table.sort(live, function(a, b) return a.n < b.n end)
  return live, seq, first
end

local function wake(id, ttl, token)
  local w = Q .. ':w:' .. id
  redis.call('RPUSH', w, token or '1')
  redis.call('PEXPIRE', w, math.max(ttl, 1))
end

local function settle(live, before)
  if #live == 0 then
    redis.call('DEL', Q)
    return
  end
  local head, last = live[1], 0
  if before == nil or head.id ~= before.id then
    wake(head.id, head.e - now)
  end
  for _, t in ipairs(live) do
    if t.e > last then last = t.e end
  end
  redis.call('PEXPIRE', Q, math.max(last - now, 1))
end

local function encode(n, e)
  return string.format('%.0f %.0f', n, e)
end
"""

#: ISSUE. KEYS[1] = Q. ARGV[1] = ticket id, ARGV[2] = lifetime in ms, ARGV[3] = waiting lease
#: in ms (optional, default the lifetime): how long the ticket lives if it has to wait; its
#: waiter renews it with CHECK. At the head it lives the lifetime.
#: Returns {number, position (0 = head), head ttl ms, expires ms since epoch}. Repeating it with
#: the same id returns the same ticket.
ISSUE: Final = LuaScript(
    "ticket issue",
    _CLOCK
    + r"""
local id, lifetime = ARGV[1], tonumber(ARGV[2])
local lease = tonumber(ARGV[3]) or lifetime
if redis.call('EXISTS', Q) == 0 then
  -- The common case, a free conversation: no queue to read.
  local expires = now + lifetime
  redis.call('HSET', Q, '~seq', string.format('%.0f', now_us), id,
             string.format('%.0f %.0f', now_us, expires))
  redis.call('PEXPIRE', Q, lifetime)
  return {now_us, 0, lifetime, expires}
end
"""
    + _HELPERS
    + r"""
local live, seq, before = load()
local mine = nil
for _, t in ipairs(live) do
  if t.id == id then mine = t end
end
if mine == nil then
  local n = math.max((tonumber(seq) or 0) + 1, now_us)
  redis.call('HSET', Q, '~seq', string.format('%.0f', n))
  local life = lease
  if #live == 0 then life = lifetime end
  mine = {id = id, n = n, e = now + life}
  redis.call('HSET', Q, id, encode(mine.n, mine.e))
  live[#live + 1] = mine
  if #live == 1 then before = mine end
end
settle(live, before)
local position = 0
for i, t in ipairs(live) do
  if t.id == id then position = i - 1 end
end
return {mine.n, position, live[1].e - now, mine.e}
""",
)

#: CHECK. KEYS[1] = Q. ARGV[1] = ticket id, ARGV[2] = waiting lease ms, ARGV[3] = lifetime ms
#: (both optional: without them nothing is renewed). The waiter's heartbeat and its turn: a
#: ticket behind others is renewed to at least now + lease; a ticket at the head is *taken*,
#: its expiry set to now + lifetime (the lifetime counts from the turn).
#: Returns {position (0 = head, -1 = gone: expired or deleted), head ttl ms, expires ms}.
CHECK: Final = LuaScript(
    "ticket check",
    _CLOCK
    + _HELPERS
    + r"""
local id, lease, lifetime = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local live, _, before = load()
local position, mine = -1, nil
for i, t in ipairs(live) do
  if t.id == id then position, mine = i - 1, t end
end
if mine ~= nil and lease ~= nil then
  local e = mine.e
  if position == 0 then e = now + lifetime elseif now + lease > e then e = now + lease end
  if e ~= mine.e then
    mine.e = e
    redis.call('HSET', Q, id, encode(mine.n, e))
  end
end
settle(live, before)
if mine == nil then return {-1, 0, 0} end
return {position, live[1].e - now, mine.e}
""",
)

#: RELEASE. KEYS[1] = Q. ARGV[1] = ticket id or "", ARGV[2] = ticket number or "".
#: Removes the ticket (by id, else by number), wakes the next head. Returns 1 if the ticket was
#: live, 0 if it had expired or was already released (so a repeat returns 0, harmlessly).
RELEASE: Final = LuaScript(
    "ticket release",
    _CLOCK
    + r"""
local id, number = ARGV[1], tonumber(ARGV[2])
if id ~= '' and redis.call('HLEN', Q) == 2 then
  -- The common case, the only ticket ("~seq" is the other field): drop the whole queue.
  local value = redis.call('HGET', Q, id)
  if value then
    local expires = tonumber(string.sub(value, string.find(value, ' ', 1, true) + 1))
    redis.call('DEL', Q)  -- a wake-up list left by this ticket expires on its own
    if expires > now then return 1 end
    return 0
  end
end
"""
    + _HELPERS
    + r"""
local live, _, before = load()
local mine = nil
for i, t in ipairs(live) do
  if t.id == id or (number ~= nil and t.n == number) then
    mine = table.remove(live, i)
    break
  end
end
-- Wake the next head before removing the ticket: while the slot is being resharded, the push
-- to the (undeclared) wake-up list is the write that can fail, and failing before the HDEL
-- leaves the retry exactly what it was (the purge in load() is harmless to repeat).
settle(live, before)
if mine == nil then return 0 end
if #live > 0 then redis.call('HDEL', Q, mine.id) end  -- else settle deleted Q
return 1
""",
)

#: STATE. KEYS[1] = Q. No ARGV. Returns the live tickets as {number, expires ms, ...} sorted.
STATE: Final = LuaScript(
    "ticket state",
    _CLOCK
    + _HELPERS
    + r"""
local live, _, before = load()
settle(live, before)
local out = {}
for _, t in ipairs(live) do
  out[#out + 1] = t.n
  out[#out + 1] = t.e
end
return out
""",
)

#: SAVE. KEYS[1] = Q. ARGV = number, expires ms, number, expires ms, ...
#: Replaces the tickets with the given ones (a ticket already present keeps its id, and so its
#: waiter), drops expired ones, keeps numbering above the highest. Returns the live count.
SAVE: Final = LuaScript(
    "ticket save",
    _CLOCK
    + _HELPERS
    + r"""
local live, seq, before = load()
local by_number = {}
for _, t in ipairs(live) do
  by_number[t.n] = t
  redis.call('HDEL', Q, t.id)
end
local top = tonumber(seq) or 0
local saved = {}
for i = 1, #ARGV, 2 do
  local n, e = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if n > top then top = n end
  if e > now then
    local old = by_number[n]
    local t = {id = old and old.id or ('n' .. string.format('%.0f', n)), n = n, e = e}
    redis.call('HSET', Q, t.id, encode(n, e))
    saved[#saved + 1] = t
  end
end
table.sort(saved, function(a, b) return a.n < b.n end)
if #saved > 0 then
  redis.call('HSET', Q, '~seq', string.format('%.0f', top))
end
settle(saved, before)
return #saved
""",
)

#: DELETE. KEYS[1] = Q. No ARGV. Drops every ticket and wakes all waiters with token "0" (they
#: ask again, find their ticket gone and fail). Returns the number of live tickets dropped.
DELETE: Final = LuaScript(
    "ticket delete",
    _CLOCK
    + _HELPERS
    + r"""
local live = load()
for _, t in ipairs(live) do
  wake(t.id, t.e - now, '0')
end
redis.call('DEL', Q)
return #live
""",
)
