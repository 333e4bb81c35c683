"""The Lua scripts of the Redis ticket lock store: each operation is one atomic round trip.

Every key a script touches is in its KEYS (Redis' EVAL contract), so the scripts run unchanged
where Redis routes or locks a script by its declared keys: Cluster, ElastiCache (Serverless
Valkey too), MemoryDB, Memorystore, Azure Cache, Valkey, Dragonfly (``docs/locks.md``;
``tests/unit/test_lua_keys.py`` checks it). The keys of one conversation share its hash tag
(``Q`` is ``KEYS[1]``, e.g. ``turnstile:lock:{conversation}``), so they share a Cluster slot::

    Q         HASH   "~"         -> last issued number
                     <ticket id> -> its number
                     "~"<id>     -> its expiry, ms since the epoch
                     "~~"<id>    -> its hard deadline, ms since the epoch: only a holder on
                                    a lease has one (turn + lifetime; RENEW never passes it)
    Q:d:<N>   LIST   "done" tokens of ticket number N: pushed by its RELEASE when a ticket is
                     behind it, BLPOP'ed by that ticket's waiter (the one directly behind N)
    Q:x       LIST   "ask again" tokens, one per waiter: pushed by DELETE and SAVE
    Q:g       HASH   "n" -> the "gone" mark: the highest number removed on purpose (DELETE, SAVE,
                     a release by number alone), kept ``GONE_TTL_MS`` after the last such
                     removal (a hash: the commands the lock scripts already need, so the
                     bots' ACL rule is unchanged)

Numbers are stored as Lua numbers, which Redis 7 prints exactly (no string parsing, no
``string.format``). A ticket id never starts with ``~``.

**Wake-up keyed by the ticket in front.** ISSUE and CHECK return the number of the ticket
directly ahead of the caller's; its waiter blocks in BLPOP on that ticket's done list and on
``Q:x``. The RELEASE of ticket N pushes to ``Q:d:N``, a key its caller declares, since it
knows its own number (Rasa's ``finish_serving`` passes only the number). Woken, the waiter asks
with CHECK: it is the head now, or it has a new ticket in front (a waiter ahead of it left:
leaving releases its ticket, which pushes its own done list) and blocks on that one's list.
Nothing is pushed when a ticket expires (Redis 7.0 has no per-field TTL, and which ticket is
behind is only known inside the script): the waiter's block is bounded by the expiry of the
ticket in front and of the head (ISSUE and CHECK return the sooner one), so it asks again
when one of them would expire. A release without a known number (a message cancelled while
its ticket was being drawn) pushes one ``Q:x`` token per ticket behind it instead. Every wake
list gets a PEXPIRE of ``WAKE_TTL_MS`` at each push, so a token nobody popped, or one more
than there were waiters, goes away by itself; a stray token costs a waiter one CHECK.

Expired tickets are purged by every script that reads the queue; ``Q`` gets a PEXPIRE at its
last ticket's expiry so an abandoned conversation leaves nothing behind. So a ``Q`` that
exists and holds one ticket holds a live one (to the millisecond), which lets RELEASE's fast
path skip the clock.

Expiry: a ticket at the head lives ``lifetime`` from the moment it got there (CHECK takes the
turn); a ticket behind others lives on a short waiting lease that its waiter renews with CHECK,
so a message waiting behind a dead holder never expires with it, and a dead waiter leaves the
queue within one lease (``locks.api`` module doc).

**Holder leases.** When the caller passes a *hold lease* (ISSUE's and CHECK's optional last
ARGV, shorter than the lifetime), a ticket that reaches the head lives one hold lease instead of
the whole lifetime, and gets a hard deadline (``"~~"<id>``: turn + lifetime). Its holder renews
it with RENEW while it runs; RENEW sets the expiry to ``min(now + lease, deadline)``, so however
often it runs, the ticket never outlives ``lifetime`` from its turn, and a holder that dies is
overtaken within one lease. Tickets without a deadline (issued without a hold lease, such as
Rasa's ``issue_ticket``, or before a lease existed) are never extended by RENEW.

Numbers: a new ticket gets ``max(last number + 1, server clock in microseconds)``. The clock
keeps numbers growing when ``Q`` is gone (all tickets returned or expired) and across a failover
that lost the last writes (the new master issues seconds later; only clock skew between the
Redis hosts larger than the failover time could break that). So the number doubles as a
fencing token that never goes back. (Numbers stay below 2^53: exact in Lua's doubles.)

**Failover.** A waiter whose ticket is gone (lost with a dead master's last writes, or its
waiting lease ran out while Redis was unreachable) re-enters with CHECK (given ``Q:g`` and the
number it had): with its old number if a live ticket numbered below it is still there (then the
head is unchanged and nobody behind it can have had a turn: numbers are issued in order), else
at the back with a new number. A number at or below the gone mark was removed on purpose and
stays gone (its waiter gets ``LockError``). A holder's RENEW that finds its ticket gone puts it
back under its old deadline when the queue is empty and the mark allows it: nobody can have been
let in. RELEASE is given the ticket's expiry as the client last heard it, so a ticket it does
not find is told apart: gone before that expiry (released by an earlier attempt whose reply was
lost, or removed on purpose, or lost in a failover) or expired.

Every script is idempotent per caller-made ticket id: ``RedisConnection.run`` repeats a script
whose reply was lost, and a repeated ISSUE must return the same ticket, not queue a second one;
a repeated RELEASE finds its ticket gone and pushes nothing.

Cost: the uncontended cycle (ISSUE on a free conversation, RELEASE of the only ticket) takes
fast paths at the top of the scripts: four and three commands, no read of the queue, no
helpers defined (``bench/locks.py`` measures Redis' time per cycle); a hold lease adds one
field to ISSUE's HSET and nothing else. Redis 7.0 turns every Lua *number* passed to a
command into text with ``"%.17g"``, about 3,000 instructions each (a whole cycle, its two
round trips included, is ~113,000), so ISSUE's fast path passes the ticket number as TIME's
digits and the key's TTL as its ARGV string: only the two sums (expiry, deadline) are
formatted. RENEW runs only for a holder still running a third of a lease after its turn
(``bench/lock_costs.py`` counts renewals per second of hold).
"""

from __future__ import annotations

from typing import Final

from turnstile.stores._redis.scripts import LuaScript

#: How long a wake-up token waits to be popped (ms): a waiter starts blocking within a round
#: trip of its CHECK, and misses nothing worse than one timed-out block if a token expires.
WAKE_TTL_MS: Final = 10_000
#: How long the gone mark outlives the last removal on purpose (ms): a waiter asks at least
#: every third of its waiting lease (10 s at most), and at once when DELETE or SAVE wake it.
GONE_TTL_MS: Final = 60_000

# The clock: ``now`` in ms and ``now_us`` in µs since the epoch. TIME's two strings are read
# once each (a string in arithmetic is parsed again every time it is used).
_CLOCK: Final = r"""
local clock = redis.call('TIME')
local secs, micros = tonumber(clock[1]), tonumber(clock[2])
local now = secs * 1000 + math.floor(micros / 1000)
local now_us = secs * 1000000 + micros
"""

# Shared helpers of the slow paths. ``load`` purges expired tickets and returns the live ones
# sorted by number (``{id, n, e, d}``, ``d`` the deadline of a holder on a lease or nil), plus
# the last issued number; ``settle`` sets the key's expiry (or deletes it); ``answer`` is a
# waiter's view: position, how long it may block, the ticket in front; ``take`` gives a ticket
# at the head its turn: the lifetime, or one hold lease under a deadline.
_HELPERS: Final = (
    f"local WAKE_TTL = {WAKE_TTL_MS}\nlocal GONE_TTL = {GONE_TTL_MS}\n"
    + r"""
local function load()
  local flat = redis.call('HGETALL', Q)
  local by_id, seq = {}, 0
  for i = 1, #flat, 2 do
    local f, v = flat[i], tonumber(flat[i + 1])
    if f == '~' then
      seq = v
    elseif string.byte(f, 2) == 126 and string.byte(f, 1) == 126 then  -- "~~<id>"
      local id = string.sub(f, 3)
      local t = by_id[id]
      if t == nil then t = {id = id}; by_id[id] = t end
      t.d = v
    elseif string.byte(f, 1) == 126 then  -- "~<id>": the expiry
      local id = string.sub(f, 2)
      local t = by_id[id]
      if t == nil then t = {id = id}; by_id[id] = t end
      t.e = v
    else
      local t = by_id[f]
      if t == nil then t = {id = f}; by_id[f] = t end
      t.n = v
    end
  end
  local live, dead = {}, {}
  for id, t in pairs(by_id) do
    if t.n == nil or t.e == nil or t.e <= now then
      dead[#dead + 1] = id
      dead[#dead + 1] = '~' .. id
      dead[#dead + 1] = '~~' .. id
    else
      live[#live + 1] = t
    end
  end
  if #dead > 0 then
    redis.call('HDEL', Q, unpack(dead))
  end
  table.sort(live, function(a, b) return a.n < b.n end)
  return live, seq
end

local function settle(live)
  if #live == 0 then
    redis.call('DEL', Q)
    return
  end
  local last = 0
  for _, t in ipairs(live) do
    if t.e > last then last = t.e end
  end
  redis.call('PEXPIRE', Q, math.max(last - now, 1))
end

local function find(live, id)
  for i, t in ipairs(live) do
    if t.id == id then return i end
  end
  return nil
end

local function answer(live, i)
  if i == 1 then return 0, live[1].e - now, 0 end
  local ahead = live[i - 1]
  return i - 1, math.min(live[1].e, ahead.e) - now, ahead.n
end

local function take(t, lifetime, hold)
  if hold == nil or hold >= lifetime then
    t.e = now + lifetime
    return false
  end
  -- A deadline already set means the turn was taken (a repeated CHECK): keep it.
  if t.d == nil then t.d = now + lifetime end
  t.e = math.min(now + hold, t.d)
  return true
end
"""
)

# ``ask_again`` pushes ``count`` "ask again" tokens to ``Q:x`` (``X``, declared by the scripts
# that include it).
_ASK_AGAIN: Final = r"""
local function ask_again(count)
  local tokens = {}
  for i = 1, count do tokens[i] = '0' end
  redis.call('RPUSH', X, unpack(tokens))
  redis.call('PEXPIRE', X, WAKE_TTL)
end
"""

# The gone mark (``Q:g``, ``G``, declared by the scripts that include it): the highest number
# removed on purpose; ``gone_mark`` reads it (0 when there is none), ``mark_gone`` raises it.
_GONE: Final = r"""
local function gone_mark()
  local flat = redis.call('HGETALL', G)
  return tonumber(flat[2]) or 0
end

local function mark_gone(n)
  if n > gone_mark() then
    redis.call('HSET', G, 'n', n)
    redis.call('PEXPIRE', G, GONE_TTL)
  end
end
"""

#: ISSUE. KEYS[1] = Q. ARGV[1] = ticket id, ARGV[2] = lifetime in ms, ARGV[3] = waiting lease
#: in ms (optional, default the lifetime): how long the ticket lives if it has to wait; its
#: waiter renews it with CHECK. ARGV[4] = hold lease in ms (optional): at the head the ticket
#: lives the lifetime, or, with a hold lease shorter than it, one hold lease under a deadline of
#: now + lifetime (its holder renews it with RENEW). Durations are integers (the fast path
#: hands ARGV[2] or ARGV[4] to PEXPIRE as given).
#: Returns {number, position (0 = head), ms the waiter may block (the sooner expiry of the head
#: and of the ticket in front), expires ms since epoch, number of the ticket in front (0 at the
#: head)}. Repeating it with the same id returns the same ticket.
ISSUE: Final = LuaScript(
    "ticket issue",
    r"""
local Q = KEYS[1]
local id, lifetime, hold = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
"""
    + _CLOCK
    + r"""
if redis.call('EXISTS', Q) == 0 then
  -- The common case, a free conversation: no queue to read. The number is now_us written as
  -- TIME's digits (the same text "%.17g" would make of it, without the formatting).
  local n = clock[1] .. string.sub('00000' .. clock[2], -6)
  if hold ~= nil and hold < lifetime then
    local expires = now + hold
    redis.call('HSET', Q, '~', n, id, n, '~' .. id, expires, '~~' .. id, now + lifetime)
    redis.call('PEXPIRE', Q, ARGV[4])
    return {now_us, 0, hold, expires, 0}
  end
  local expires = now + lifetime
  redis.call('HSET', Q, '~', n, id, n, '~' .. id, expires)
  redis.call('PEXPIRE', Q, ARGV[2])
  return {now_us, 0, lifetime, expires, 0}
end
"""
    + _HELPERS
    + r"""
local lease = tonumber(ARGV[3]) or lifetime
local live, seq = load()
local i = find(live, id)
if i == nil then
  local t = {id = id, n = math.max(seq + 1, now_us), e = now + lease}
  if #live == 0 and take(t, lifetime, hold) then
    redis.call('HSET', Q, '~', t.n, id, t.n, '~' .. id, t.e, '~~' .. id, t.d)
  else
    redis.call('HSET', Q, '~', t.n, id, t.n, '~' .. id, t.e)
  end
  live[#live + 1] = t
  i = #live
end
settle(live)
local position, wait, ahead = answer(live, i)
return {live[i].n, position, wait, live[i].e, ahead}
""",
)

#: CHECK. KEYS[1] = Q, KEYS[2] = Q:g (optional: with it, a waiter whose ticket is gone
#: re-enters). ARGV[1] = ticket id, ARGV[2] = waiting lease ms, ARGV[3] = lifetime ms (both
#: optional: without them nothing is renewed), ARGV[4] = hold lease ms (optional, "" for none),
#: ARGV[5] = the ticket's number (needed to re-enter).
#: The waiter's heartbeat and its turn: a ticket behind others is renewed to at least now + lease;
#: a ticket at the head is *taken*, its expiry set to now + lifetime (the lifetime counts from
#: the turn), or, with a hold lease shorter than the lifetime, to now + hold lease under a
#: deadline of now + lifetime (kept if already set: a repeated CHECK does not move it).
#: A ticket that is gone (lost in a failover, or its lease ran out while Redis was unreachable)
#: re-enters when KEYS[2] and ARGV[5] are given and its number is above the gone mark: with its
#: number if a live ticket numbered below it is there (its turn is kept: the head is unchanged),
#: else at the back with a new number; then it is answered like any waiter (and takes the turn
#: if it is the head). Returns {position (0 = head, -1 = gone: expired or deleted, and not
#: re-entered), ms the waiter may block, expires ms, number of the ticket in front (0 at the
#: head), the ticket's number (new if it re-entered at the back), 0 = found / 1 = re-entered
#: keeping its turn / 2 = re-entered at the back}.
CHECK: Final = LuaScript(
    "ticket check",
    r"""
local Q = KEYS[1]
local G = KEYS[2]
"""
    + _CLOCK
    + _HELPERS
    + _GONE
    + r"""
local id, lease, lifetime = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local hold, number = tonumber(ARGV[4]), tonumber(ARGV[5])
local live, seq = load()
local i = find(live, id)
local how = 0
if i == nil then
  if G == nil or number == nil or lease == nil or number <= gone_mark() then
    settle(live)
    return {-1, 0, 0, 0, 0, 0}
  end
  how = 1
  if #live == 0 or live[1].n >= number then
    how = 2
  else
    for _, t in ipairs(live) do
      if t.n == number then how = 2 end
    end
  end
  if how == 2 then number = math.max(seq + 1, now_us) end
  local t = {id = id, n = number, e = now + lease}
  redis.call('HSET', Q, id, number, '~' .. id, t.e)
  if number > seq then redis.call('HSET', Q, '~', number) end
  live[#live + 1] = t
  table.sort(live, function(a, b) return a.n < b.n end)
  i = find(live, id)
end
local mine = live[i]
if lease ~= nil then
  if i == 1 then
    if take(mine, lifetime, hold) then
      redis.call('HSET', Q, '~' .. id, mine.e, '~~' .. id, mine.d)
    else
      redis.call('HSET', Q, '~' .. id, mine.e)
    end
  elseif now + lease > mine.e then
    mine.e = now + lease
    redis.call('HSET', Q, '~' .. id, mine.e)
  end
end
settle(live)
local position, wait, ahead = answer(live, i)
return {position, wait, mine.e, ahead, mine.n, how}
""",
)

#: RELEASE. KEYS[1] = Q, KEYS[2] = Q:x, KEYS[3] = Q:g, KEYS[4] = Q:d:<ARGV[2]> (only when the
#: number is known). ARGV[1] = ticket id or "", ARGV[2] = ticket number or "", ARGV[3] = the
#: ticket's expiry as its holder last heard it, ms since the epoch ("" if unknown; a lower bound,
#: since expiries only move forward).
#: Removes the ticket (by id, else by number). If a ticket was behind it, wakes that ticket's
#: waiter: a token on KEYS[4] if the released ticket has number ARGV[2], else one "ask again"
#: token on KEYS[2] per ticket behind it. The ticket's deadline field, if any, goes with it. A
#: release by number alone (Rasa's ``finish_serving``, ``turnstile locks release``) raises the
#: gone mark, so the waiter or holder whose ticket it was does not put it back.
#: Returns 1 if the ticket was live; if it was not there: 2 when Redis' clock is still before
#: ARGV[3] (it cannot have expired: an earlier attempt of this release ran and its reply was
#: lost, or the ticket was removed on purpose or lost in a failover), else 0 (expired, or
#: already released). A repeat pushes nothing.
RELEASE: Final = LuaScript(
    "ticket release",
    r"""
local Q = KEYS[1]
local X = KEYS[2]
local G = KEYS[3]
local id = ARGV[1]
local fields = id ~= '' and redis.call('HLEN', Q) or 0
if (fields == 3 or fields == 4) and redis.call('HEXISTS', Q, id) == 1 then
  -- The common case, the only ticket (with "~", its expiry field and, on a hold lease, its
  -- deadline; a second ticket would add two fields): nobody to wake, and it is live, or Q
  -- would have expired with it.
  redis.call('DEL', Q)
  return 1
end
local number = tonumber(ARGV[2])
"""
    + _CLOCK
    + _HELPERS
    + _ASK_AGAIN
    + _GONE
    + r"""
local live = load()
local i = nil
for j, t in ipairs(live) do
  if t.id == id or (id == '' and t.n == number) then
    i = j
    break
  end
end
if i == nil then
  settle(live)
  local known = tonumber(ARGV[3])
  if known ~= nil and now < known then return 2 end
  return 0
end
local mine = table.remove(live, i)
redis.call('HDEL', Q, mine.id, '~' .. mine.id, '~~' .. mine.id)
if id == '' then mark_gone(mine.n) end
local behind = #live - i + 1
if behind > 0 then
  if KEYS[4] ~= nil and mine.n == number then
    local D = KEYS[4]
    redis.call('RPUSH', D, '1')
    redis.call('PEXPIRE', D, WAKE_TTL)
  else
    ask_again(behind)
  end
end
settle(live)
return 1
""",
)

#: RENEW. KEYS[1] = Q, KEYS[2] = Q:g (optional: with it, a holder whose ticket is gone may put
#: it back). ARGV[1] = ticket id, ARGV[2] = hold lease ms, ARGV[3] = the ticket's number and
#: ARGV[4] = ms left until its deadline on the holder's clock (both optional, needed to put it
#: back). The holder's heartbeat: a ticket at the head with a deadline lives until
#: min(now + lease, deadline), never less than it already had; a ticket without a deadline is
#: left as it is. A ticket that is gone (lost in a failover, or its lease ran out while Redis
#: was unreachable) is put back at the head, under now + ARGV[4] as its deadline, only when no
#: live ticket is in the queue (nobody can have been let in) and its number is above the gone
#: mark. Returns {position (0 = head, -1 = gone: expired, released or deleted; > 0: no longer
#: the head, and not renewed), ms until its expiry, ms until its deadline (its expiry when it
#: has none), 1 if it was put back (else 0)}.
RENEW: Final = LuaScript(
    "ticket renew",
    r"""
local Q = KEYS[1]
local G = KEYS[2]
"""
    + _CLOCK
    + _HELPERS
    + _GONE
    + r"""
local id, lease = ARGV[1], tonumber(ARGV[2])
local number, left = tonumber(ARGV[3]), tonumber(ARGV[4])
local live, seq = load()
local i = find(live, id)
if i == nil then
  if G == nil or number == nil or left == nil or left <= 0 or #live > 0
      or number <= gone_mark() then
    settle(live)
    return {-1, 0, 0, 0}
  end
  local t = {id = id, n = number, d = now + left, e = now + math.min(lease, left)}
  redis.call('HSET', Q, id, number, '~' .. id, t.e, '~~' .. id, t.d)
  if number > seq then redis.call('HSET', Q, '~', number) end
  settle({t})
  return {0, t.e - now, t.d - now, 1}
end
local mine = live[i]
if i == 1 and mine.d ~= nil then
  local e = math.min(now + lease, mine.d)
  if e > mine.e then
    mine.e = e
    redis.call('HSET', Q, '~' .. id, e)
  end
end
settle(live)
return {i - 1, mine.e - now, (mine.d or mine.e) - now, 0}
""",
)

#: STATE. KEYS[1] = Q. No ARGV. Returns the live tickets sorted, as {number, expires ms,
#: deadline ms (0 if the ticket has none: not a holder on a lease), ...}.
STATE: Final = LuaScript(
    "ticket state",
    r"""
local Q = KEYS[1]
"""
    + _CLOCK
    + _HELPERS
    + r"""
local live = load()
settle(live)
local out = {}
for _, t in ipairs(live) do
  out[#out + 1] = t.n
  out[#out + 1] = t.e
  out[#out + 1] = t.d or 0
end
return out
""",
)

#: SAVE. KEYS[1] = Q, KEYS[2] = Q:x, KEYS[3] = Q:g. ARGV = number, expires ms, number,
#: expires ms, ... Replaces the tickets with the given ones (a ticket already present keeps its
#: id, and so its waiter and its deadline, if any), drops expired ones, keeps numbering above
#: the highest; the waiters of the tickets that were there get an "ask again" token each (the
#: ticket in front of them may have changed), and the gone mark covers the tickets it dropped
#: (their waiters fail rather than re-enter). Returns the live count.
SAVE: Final = LuaScript(
    "ticket save",
    r"""
local Q = KEYS[1]
local X = KEYS[2]
local G = KEYS[3]
"""
    + _CLOCK
    + _HELPERS
    + _ASK_AGAIN
    + _GONE
    + r"""
local live, seq = load()
local by_number = {}
for _, t in ipairs(live) do
  by_number[t.n] = t
  redis.call('HDEL', Q, t.id, '~' .. t.id, '~~' .. t.id)
end
local top = seq
local saved = {}
for i = 1, #ARGV, 2 do
  local n, e = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if n > top then top = n end
  if e > now then
    local old = by_number[n]
    local t = {id = old and old.id or ('n' .. ARGV[i]), n = n, e = e}
    redis.call('HSET', Q, t.id, n, '~' .. t.id, e)
    if old and old.d then redis.call('HSET', Q, '~~' .. t.id, old.d) end
    saved[#saved + 1] = t
  end
end
if #saved > 0 then
  redis.call('HSET', Q, '~', top)
end
local kept = {}
for _, t in ipairs(saved) do kept[t.n] = true end
for _, t in ipairs(live) do
  if not kept[t.n] then mark_gone(t.n) end
end
settle(saved)
if #live > 0 then ask_again(#live) end
return #saved
""",
)

#: DELETE. KEYS[1] = Q, KEYS[2] = Q:x, KEYS[3] = Q:g. No ARGV. Drops every ticket, raises the
#: gone mark to the last issued number (so no waiter re-enters) and pushes one "ask again" token
#: per live ticket to KEYS[2] (its waiter asks, finds its ticket gone and fails).
#: Returns the number of live tickets dropped.
DELETE: Final = LuaScript(
    "ticket delete",
    r"""
local Q = KEYS[1]
local X = KEYS[2]
local G = KEYS[3]
"""
    + _CLOCK
    + _HELPERS
    + _ASK_AGAIN
    + _GONE
    + r"""
local live, seq = load()
if seq > 0 then mark_gone(seq) end
redis.call('DEL', Q)
if #live > 0 then ask_again(#live) end
return #live
""",
)
