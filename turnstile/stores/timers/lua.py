"""The Redis keys and Lua scripts of the timer store.

Each bucket (see :mod:`turnstile.stores.timers.buckets`) is five keys under one hash tag::

    [<key_prefix>:]turnstile:timers:{<tag>}:due    sorted set  sender_id -> when it is due
    [<key_prefix>:]turnstile:timers:{<tag>}:data   hash        sender_id -> JSON record
    [<key_prefix>:]turnstile:timers:{<tag>}:leases hash        sender_id -> claim id holding it
    [<key_prefix>:]turnstile:timers:{<tag>}:claims sorted set  recent claim ids -> forget-at ms
    [<key_prefix>:]turnstile:timers:{<tag>}:popped hash        recent claim id -> claimed timers

A timer's score in ``due`` is its scheduled time until a poll claims it. A claim is a *lease*:
the poll moves the score to the lease's expiry and records its claim id in ``leases``, so other
pods do not see the timer until the lease runs out; the poller acknowledges (``ACK``, deletes)
after the callback, or renews (``EXTEND``) while the callback runs. A lease nobody acknowledged
simply becomes due again, and the next poll anywhere claims it. The record keeps the original
``scheduled_time``, so a re-delivered timer carries the time it was scheduled for.

The JSON record holds ``sender_id``, ``session_id``, ``scheduled_time``, ``metadata`` and
``written_at`` (the writer's clock, used only when an outage's timers are written back).
Every script takes keys of one bucket only, so it runs unchanged on Redis Cluster,
and every script is safe to repeat (a retry after a lost reply changes nothing further).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from turnstile.stores._redis.scripts import LuaScript
from turnstile.stores.timers.buckets import bucket_of, bucket_tags


@dataclass(frozen=True)
class BucketKeys:
    due: str
    data: str
    claims: str
    popped: str
    leases: str

    @property
    def keys(self) -> tuple[str, str, str]:
        """The keys of the write scripts (``PUT``, ``MERGE``, ``ACK``)."""
        return (self.due, self.data, self.leases)

    @property
    def read_keys(self) -> tuple[str, str]:
        """The keys of ``READ_DUE``."""
        return (self.due, self.data)

    @property
    def claim_keys(self) -> tuple[str, str, str, str, str]:
        """The keys of the claim scripts (``CLAIM``, ``CLAIM_DUE``)."""
        return (self.due, self.data, self.claims, self.popped, self.leases)

    @property
    def lease_keys(self) -> tuple[str, str]:
        """The keys of ``EXTEND``."""
        return (self.due, self.leases)


class TimerKeys:
    """The key names of ``count`` buckets under an optional ``key_prefix``."""

    def __init__(self, count: int, key_prefix: str | None = None) -> None:
        base = f"{key_prefix}:turnstile:timers" if key_prefix else "turnstile:timers"
        self.count = count
        self.buckets: tuple[BucketKeys, ...] = tuple(
            BucketKeys(
                f"{base}:{{{tag}}}:due",
                f"{base}:{{{tag}}}:data",
                f"{base}:{{{tag}}}:claims",
                f"{base}:{{{tag}}}:popped",
                f"{base}:{{{tag}}}:leases",
            )
            for tag in bucket_tags(count)
        )

    def bucket(self, sender_id: str) -> int:
        return bucket_of(sender_id, self.count)

    def of(self, sender_id: str) -> BucketKeys:
        return self.buckets[self.bucket(sender_id)]


#: Store (replace) one timer; a lease on the old one ends (its acknowledgement will not match).
#: KEYS[1] due zset, KEYS[2] data hash, KEYS[3] leases hash (one bucket).
#: ARGV[1] sender_id, ARGV[2] scheduled_time, ARGV[3] JSON record.
#: Returns 1.
PUT: Final = LuaScript(
    "timer put",
    """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
""",
)

#: Forget claims older than their memory window; at most 1000 per call, so the cost stays
#: bounded. Prepended to the claim scripts (KEYS[3] claims zset, KEYS[4] popped hash); defines
#: ``now`` (Redis' clock, ms) for the memo expiry only: timer scores are on the callers' clocks.
_FORGET_OLD_CLAIMS: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
if #old > 0 then
    redis.call('HDEL', KEYS[4], unpack(old))
    redis.call('ZREM', KEYS[3], unpack(old))
end
"""

#: Delete timers, each only if its scheduled time still matches: the claim of Rasa's contract
#: (``delete_timer(only_if_scheduled_time=...)``) and an unconditional delete.
#: KEYS[1] due zset, KEYS[2] data hash, KEYS[3] claims zset, KEYS[4] popped hash,
#: KEYS[5] leases hash (one bucket).
#: ARGV[1] claim id (fresh per call, the same on a retry), ARGV[2] how long to remember the
#: claim (ms), ARGV[3] the caller's clock (s), then pairs of (sender_id, expected
#: scheduled_time or "" for unconditional).
#: Returns an array with 1 for each pair whose timer this claim id deleted, 0 otherwise.
#: A leased timer (claimed by a poll, callback running) is not due: a conditional delete
#: refuses it until the lease has run out (due score <= ARGV[3]), and then compares the
#: record's scheduled time, since the score holds the lease expiry. An unconditional delete
#: (a cancel) removes it whatever its lease.
#: Remembering "<sender_id>\n<claim id>" makes a retry after a lost reply answer 1 again
#: instead of 0, so a failover between delete and reply cannot make every pod skip a timer.
#: Scores are compared as doubles: Redis prints them with 17 significant digits and Python
#: with the shortest round-trip form, and both parse back to the same double.
CLAIM: Final = LuaScript(
    "timer claim",
    _FORGET_OLD_CLAIMS
    + """
local out = {}
for i = 4, #ARGV, 2 do
    local sender, expected = ARGV[i], ARGV[i + 1]
    local memo = sender .. '\\n' .. ARGV[1]
    local hit = 0
    if redis.call('ZSCORE', KEYS[3], memo) then
        hit = 1
    else
        local score = redis.call('ZSCORE', KEYS[1], sender)
        local match = false
        if score and expected == '' then
            match = true
        elseif score and redis.call('HEXISTS', KEYS[5], sender) == 1 then
            if tonumber(score) <= tonumber(ARGV[3]) then
                local raw = redis.call('HGET', KEYS[2], sender)
                local ok, record = pcall(cjson.decode, raw or '')
                match = ok and type(record) == 'table'
                    and tonumber(record['scheduled_time']) == tonumber(expected)
            end
        elseif score then
            match = tonumber(score) == tonumber(expected)
        end
        if match then
            redis.call('ZREM', KEYS[1], sender)
            redis.call('HDEL', KEYS[2], sender)
            redis.call('HDEL', KEYS[5], sender)
            redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), memo)
            hit = 1
        end
    end
    out[#out + 1] = hit
end
return out
""",
)

#: Lease up to a page of due timers at once, oldest first: the poll.
#: KEYS[1] due zset, KEYS[2] data hash, KEYS[3] claims zset, KEYS[4] popped hash,
#: KEYS[5] leases hash (one bucket).
#: ARGV[1] claim id (fresh per call; the same again when the caller never saw the reply),
#: ARGV[2] how long to remember an unacknowledged reply (ms), ARGV[3] cutoff (inclusive),
#: ARGV[4] at most this many (<= 2000), ARGV[5] the caller's previous claim id for this
#: bucket whose reply it did see (forgotten now), or "", ARGV[6] the lease's expiry (same
#: clock as the cutoff).
#: Returns {n, "[record1,...]"}: n is how many due timers were claimed (n = ARGV[4] means more
#: may be due) and their JSON records as one JSON array. Each claimed timer's score becomes
#: ARGV[6] and ``leases`` maps it to ARGV[1] (the token ``ACK`` and ``EXTEND`` check); a timer
#: whose lease ran out is due again and is claimed here like any other. The reply is
#: remembered under the claim id until acknowledged, so a caller that lost it (failover,
#: timeout) gets the same timers back at once by asking again with the same id.
CLAIM_DUE: Final = LuaScript(
    "timer claim due",
    _FORGET_OLD_CLAIMS
    + """
if ARGV[5] ~= '' then
    redis.call('HDEL', KEYS[4], ARGV[5])
    redis.call('ZREM', KEYS[3], ARGV[5])
end
local done = redis.call('HGET', KEYS[4], ARGV[1])
if done then return cjson.decode(done) end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, ARGV[4])
if #ids == 0 then return {0, '[]'} end
local records = redis.call('HMGET', KEYS[2], unpack(ids))
local found, scores, leases = {}, {}, {}
for i = 1, #records do
    if records[i] then
        found[#found + 1] = records[i]
        scores[#scores + 1] = ARGV[6]
        scores[#scores + 1] = ids[i]
        leases[#leases + 1] = ids[i]
        leases[#leases + 1] = ARGV[1]
    else
        redis.call('ZREM', KEYS[1], ids[i])
    end
end
if #found > 0 then
    redis.call('ZADD', KEYS[1], unpack(scores))
    redis.call('HSET', KEYS[5], unpack(leases))
end
local reply = {#ids, '[' .. table.concat(found, ',') .. ']'}
redis.call('HSET', KEYS[4], ARGV[1], cjson.encode(reply))
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
return reply
""",
)

#: Acknowledge leased timers whose callback ran: delete each if the lease is still ours.
#: KEYS[1] due zset, KEYS[2] data hash, KEYS[3] leases hash (one bucket).
#: ARGV pairs of (sender_id, claim id that leased it).
#: Returns how many were deleted. A timer replaced (``PUT``) or cancelled since the claim, or
#: re-leased by another pod after our lease ran out, is left alone.
ACK: Final = LuaScript(
    "timer ack",
    """
local acked = 0
for i = 1, #ARGV, 2 do
    if redis.call('HGET', KEYS[3], ARGV[i]) == ARGV[i + 1] then
        redis.call('ZREM', KEYS[1], ARGV[i])
        redis.call('HDEL', KEYS[2], ARGV[i])
        redis.call('HDEL', KEYS[3], ARGV[i])
        acked = acked + 1
    end
end
return acked
""",
)

#: Renew leases whose callbacks are still running.
#: KEYS[1] due zset, KEYS[2] leases hash (one bucket).
#: ARGV[1] the new expiry, then pairs of (sender_id, claim id that leased it).
#: Returns how many leases were still ours and were renewed.
EXTEND: Final = LuaScript(
    "timer extend",
    """
local renewed = 0
for i = 2, #ARGV, 2 do
    if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
        redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
        renewed = renewed + 1
    end
end
return renewed
""",
)

#: Read due timers with their data in one call, oldest first; deletes nothing.
#: KEYS[1] due zset, KEYS[2] data hash (one bucket).
#: ARGV[1] cutoff (inclusive), ARGV[2] offset, ARGV[3] page size (<= 4000, Lua's unpack limit).
#: Returns {n, "[record1,record2,...]"}: n is how many due members the page held (a full page
#: means there may be more), then their JSON records joined into one JSON array, so the client
#: parses one string per bucket instead of one reply element per timer (a member without a
#: record, which the scripts never leave behind, is skipped).
READ_DUE: Final = LuaScript(
    "timer read due",
    """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', ARGV[2], ARGV[3])
if #ids == 0 then return {0, '[]'} end
local records = redis.call('HMGET', KEYS[2], unpack(ids))
local found = {}
for i = 1, #records do
    if records[i] then found[#found + 1] = records[i] end
end
return {#ids, '[' .. table.concat(found, ',') .. ']'}
""",
)

#: Write back what a pod kept in memory during an outage, newer wins.
#: KEYS[1] due zset, KEYS[2] data hash, KEYS[3] leases hash (one bucket).
#: ARGV: groups of four (kind, sender_id, version, scheduled_time|""), then one JSON record
#: per "put" in the same order after all groups. kind "put" stores the record and "del"
#: deletes, each only if Redis holds no record for the sender or one with written_at <= version.
#: ARGV[1] is the number of groups.
#: Returns the number of entries applied.
MERGE: Final = LuaScript(
    "timer merge",
    """
local groups = tonumber(ARGV[1])
local payload = 2 + groups * 4
local applied = 0
for g = 0, groups - 1 do
    local base = 2 + g * 4
    local kind, sender = ARGV[base], ARGV[base + 1]
    local version, scheduled = tonumber(ARGV[base + 2]), ARGV[base + 3]
    local current = redis.call('HGET', KEYS[2], sender)
    local older = true
    if current then
        local ok, decoded = pcall(cjson.decode, current)
        if ok and type(decoded) == 'table' and tonumber(decoded['written_at']) then
            older = tonumber(decoded['written_at']) <= version
        end
    end
    if kind == 'put' then
        local record = ARGV[payload]
        payload = payload + 1
        if older then
            redis.call('ZADD', KEYS[1], scheduled, sender)
            redis.call('HSET', KEYS[2], sender, record)
            redis.call('HDEL', KEYS[3], sender)
            applied = applied + 1
        end
    elseif current and older then
        redis.call('ZREM', KEYS[1], sender)
        redis.call('HDEL', KEYS[2], sender)
        redis.call('HDEL', KEYS[3], sender)
        applied = applied + 1
    end
end
return applied
""",
)

#: Lua's ``unpack`` takes at most ~8000 values (a claimed page unpacks 2 per timer); keep
#: pages and batches well below.
PAGE_SIZE: Final = 2000
