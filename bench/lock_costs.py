"""What the lock store's options cost on the lock cycle: each variant against its baseline.

Run ``python -m bench.lock_costs`` (about 2 minutes) or ``python -m bench.lock_costs --quick``
(under 30 s). It starts its own redis-server through ``tests.platform.redis_servers``, prints the
rates and ratios, and writes ``docs/bench-lock-costs.md``.

A *variant* is a named way to build the store (``VARIANTS``): ``endpoints.yml`` keys on top of
the same server's. Every variant's uncontended lock cycle (acquire + release of a free
conversation, empty body) is measured with 1 and with 50 tasks, all variants in alternating
0.1 s slices of the same run (``bench._common.interleaved_rates``), so the machine's load drifts
alike for all; a ratio is the median over adjacent slices of the variant against its baseline.
Besides the rates:

* Redis round trips per cycle, from ``INFO commandstats`` (scripts sent per cycle): a holder
  lease must not add one to a body shorter than a third of the lease;
* client CPU per cycle (``time.process_time`` over rounds of 200 cycles, variants alternating;
  the median round, and the median over rounds of the ratio to the baseline's neighbouring
  round): the direct cost of an option in this process, though a loaded machine inflates it
  too (shared caches and cores);
* holder leases with a body longer than the renew interval: renewals (RENEW scripts) per second
  of hold, counted by the store, against the expected three per lease.

To add a variant, append one ``Variant`` to ``VARIANTS`` (metrics on is one). Numbers depend on
the machine and its load; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from prometheus_client import CollectorRegistry

from bench._common import interleaved_rates, machine_note, markdown_table
from tests.platform.redis_servers import RedisServer
from turnstile.stores import metrics
from turnstile.stores.locks.api import Renewal
from turnstile.stores.locks.redis import RedisTicketLockStore

DOCS = Path(__file__).resolve().parents[1] / "docs"
CONCURRENCY = 50

StoreMaker = Callable[[Mapping[str, Any]], RedisTicketLockStore]


class CountingStore(RedisTicketLockStore):
    """The Redis store, counting its lease renewals (the benchmark's only change to it)."""

    renewals = 0

    async def _renew(self, conversation_id: str, ticket_id: str, lease: float,
                     **restore: Any) -> Renewal:
        self.renewals += 1
        return await super()._renew(conversation_id, ticket_id, lease, **restore)


def with_keys(**keys: Any) -> StoreMaker:
    """A store built from the server's ``endpoints.yml`` keys plus ``keys``."""
    return lambda base: CountingStore.from_kwargs({**base, **keys})


@dataclass(frozen=True)
class Variant:
    """One way to build the store; ``baseline`` names the variant it is compared with."""

    name: str
    make: StoreMaker
    baseline: str | None = None


def with_metrics(backend: str, **keys: Any) -> StoreMaker:
    """A store bound to bot metrics ``backend`` (``off``, or ``prometheus`` in a private
    registry); the choice is process-wide, so it is made, bound and forgotten per store."""

    def make(base: Mapping[str, Any]) -> RedisTicketLockStore:
        metrics.reset()
        metrics.configure(backend, registry=CollectorRegistry(), environ={})
        store = CountingStore.from_kwargs({**base, **keys})
        _ = store.metrics  # bind the series now, under this choice
        metrics.reset()
        return store

    return make


#: Leases off is Turnstile before holder leases; on is the default (10 s). The lease rows run
#: with metrics off, the metrics rows with leases at the default, so each row changes one thing.
VARIANTS: list[Variant] = [
    Variant("leases off", with_metrics("off", lock_lease=0)),
    Variant("leases on (10 s, the default)", with_metrics("off", lock_lease=10),
            baseline="leases off"),
    Variant("metrics on (prometheus)", with_metrics("prometheus", lock_lease=10),
            baseline="leases on (10 s, the default)"),
]


@dataclass
class Results:
    #: variant -> tasks -> cycles per second
    rates: dict[str, dict[int, float]] = field(default_factory=dict)
    #: variant -> tasks -> median ratio against its baseline (adjacent slices)
    ratios: dict[str, dict[int, float]] = field(default_factory=dict)
    #: variant -> scripts sent to Redis per cycle (empty body)
    round_trips: dict[str, float] = field(default_factory=dict)
    #: variant -> client CPU µs per cycle (median round)
    cpu_us: dict[str, float] = field(default_factory=dict)
    #: variant -> median over rounds of its CPU per cycle / its baseline's, same round
    cpu_ratios: dict[str, float] = field(default_factory=dict)
    #: (lease, hold seconds) -> (renewals per second of hold, renewals per cycle)
    renewals: dict[tuple[float, float], tuple[float, float]] = field(default_factory=dict)


class Cycles:
    """Uncontended lock cycles on fresh conversations (no two cycles share one)."""

    def __init__(self, store: RedisTicketLockStore) -> None:
        self.store = store
        self.prefix = uuid.uuid4().hex[:8]
        self.n = 0

    async def cycle(self) -> None:
        self.n += 1
        async with self.store.lock(f"cost-{self.prefix}-{self.n}"):
            pass


async def scripts_per_cycle(store: RedisTicketLockStore, cycles: int) -> float:
    """Scripts Redis ran per lock cycle of ``store`` (``INFO commandstats``), empty body."""
    client = await store.connection.client()
    await client.config_resetstat()
    run = Cycles(store)
    for _ in range(cycles):
        await run.cycle()
    stats = await client.info("commandstats")
    calls = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("eval", "evalsha"))
    return float(calls) / cycles


async def client_cpu(
    cycles: dict[str, Cycles], rounds: int, per_round: int = 200
) -> dict[str, list[float]]:
    """Client CPU µs per cycle of each variant, one sample per round; the variants alternate
    round by round (the order turning too), so neighbouring samples saw the same load."""
    samples: dict[str, list[float]] = {name: [] for name in cycles}
    names = list(cycles)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            run = cycles[name]
            started = time.process_time()
            for _ in range(per_round):
                await run.cycle()
            samples[name].append((time.process_time() - started) / per_round * 1e6)
    return samples


async def renewals_per_second(
    base: Mapping[str, Any], lease: float, hold: float, holders: int
) -> tuple[float, float]:
    """``holders`` concurrent holders each hold a conversation for ``hold`` s on ``lease``."""
    store = CountingStore.from_kwargs({**base, "lock_lease": lease, "lock_lifetime": 60})
    try:
        async def one(i: int) -> None:
            async with store.lock(f"hold-{uuid.uuid4().hex[:8]}-{i}"):
                await asyncio.sleep(hold)

        await one(-1)  # warm-up
        store.renewals = 0
        await asyncio.gather(*(one(i) for i in range(holders)))
        return store.renewals / (holders * hold), store.renewals / holders
    finally:
        await store.close()


async def measure(server: RedisServer, res: Results, seconds: float, long: bool) -> None:
    base = {"host": server.host, "port": server.port, "db": 0}
    stores = {v.name: v.make(base) for v in VARIANTS}
    cycles = {name: Cycles(store) for name, store in stores.items()}
    try:
        for run in cycles.values():
            await run.cycle()  # warm-up: connection, script cache
        for variant in VARIANTS:
            res.round_trips[variant.name] = await scripts_per_cycle(stores[variant.name], 500)
            print(f"  {variant.name:<40} {res.round_trips[variant.name]:.2f} scripts per cycle",
                  flush=True)
        cpu = await client_cpu(cycles, rounds=30 if seconds < 5 else 100)
        for variant in VARIANTS:
            res.cpu_us[variant.name] = statistics.median(cpu[variant.name])
            line = f"  {variant.name:<40} {res.cpu_us[variant.name]:6.1f} us client CPU per cycle"
            if variant.baseline is not None:
                pairs = zip(cpu[variant.name], cpu[variant.baseline], strict=True)
                res.cpu_ratios[variant.name] = statistics.median(a / b for a, b in pairs)
                line += f"   {res.cpu_ratios[variant.name]:.3f}x {variant.baseline}"
            print(line, flush=True)
        for tasks in (1, CONCURRENCY):
            ops = {name: (run.cycle, tasks) for name, run in cycles.items()}
            measured = await interleaved_rates(ops, seconds)
            for variant in VARIANTS:
                rate = measured.totals[variant.name]
                res.rates.setdefault(variant.name, {})[tasks] = rate
                line = f"  {variant.name:<40} {tasks:>2} task(s) {rate:>10,.0f} cycles/s"
                if variant.baseline is not None:
                    ratio = measured.ratio(variant.name, variant.baseline)
                    res.ratios.setdefault(variant.name, {})[tasks] = ratio
                    line += f"   {ratio:.3f} of {variant.baseline}"
                print(line, flush=True)
    finally:
        for store in stores.values():
            await store.close()
    shapes = [(1.0, 2.0), (2.0, 4.0)] if not long else [(1.0, 4.0), (2.0, 8.0), (10.0, 20.0)]
    for lease, hold in shapes:
        per_second, per_cycle = await renewals_per_second(base, lease, hold, holders=20)
        res.renewals[(lease, hold)] = (per_second, per_cycle)
        print(f"  lease {lease:g} s, body {hold:g} s: {per_second:.2f} renewals per second of "
              f"hold, {per_cycle:.1f} per cycle (expected {expected_renewals(lease, hold):g})",
              flush=True)


def expected_renewals(lease: float, hold: float) -> float:
    """Renewals of one hold: one per third of a lease, the first third free (3 * hold / lease
    - 1, less one if the hold ends right on a renewal)."""
    return math.ceil(3 * hold / lease) - 1


async def run(quick: bool) -> Results:
    res = Results()
    with RedisServer(name="bench-lock-costs") as server:
        await measure(server, res, seconds=2.0 if quick else 8.0, long=not quick)
    return res


def write_docs(res: Results, command: str, elapsed: float) -> None:
    rate_rows = []
    for variant in VARIANTS:
        rates, ratios = res.rates[variant.name], res.ratios.get(variant.name, {})
        rate_rows.append([
            variant.name,
            f"{rates[1]:,.0f}",
            f"{ratios[1]:.3f}" if 1 in ratios else "-",
            f"{rates[CONCURRENCY]:,.0f}",
            f"{ratios[CONCURRENCY]:.3f}" if CONCURRENCY in ratios else "-",
            variant.baseline or "-",
            f"{res.round_trips[variant.name]:.2f}",
            f"{res.cpu_us[variant.name]:.1f}",
            f"{res.cpu_ratios[variant.name]:.3f}x" if variant.name in res.cpu_ratios else "-",
        ])
    renew_rows = [
        [f"{lease:g}", f"{hold:g}", f"{per_second:.2f}", f"{per_cycle:.1f}",
         f"{expected_renewals(lease, hold):g}"]
        for (lease, hold), (per_second, per_cycle) in res.renewals.items()
    ]
    text = "\n\n".join([
        "# Lock option costs",
        f"Command: `{command}`  \nDate: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"run took {elapsed:.0f} s  \nMachine: {machine_note()}, one redis-server on loopback, "
        f"redis-py {redis.__version__}. The machine was shared with other work while this ran "
        "(load average " + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " at the end); "
        "absolute rates move with its load, the ratios much less: every variant is measured in "
        "alternating 0.1 s slices of the same run and a ratio is the median over adjacent "
        "slices against its baseline.",
        "## Uncontended lock cycle (empty body)",
        "Acquire + release of a free conversation, a fresh one per cycle. Scripts per cycle are "
        "Redis' own count (`INFO commandstats`, `eval` + `evalsha`): 2.00 is ISSUE + RELEASE. A "
        "holder lease is given in the same ISSUE (one more hash field), and a holder waits for "
        "its first renewal in a list walked by one timer per store and loop, which it leaves "
        "on exit: a body shorter than a third of the lease costs no round trip.",
        markdown_table(
            ["variant", "1 task, cycles/s", "ratio", f"{CONCURRENCY} tasks, cycles/s", "ratio",
             "baseline", "scripts per cycle", "client CPU us per cycle", "CPU ratio"],
            rate_rows,
        ),
        "## Bodies longer than the renew interval",
        "20 holders on distinct conversations, each holding for the body's length; renewals are "
        "the RENEW scripts the store sent. A holder renews every third of its lease, the first "
        "third free: 3 x body / lease - 1 renewals per hold, so per second of a long hold "
        "close to 3 / lease (0.3/s with the default 10 s lease: one script every 3.3 s per "
        "held conversation).",
        markdown_table(
            ["lease s", "body s", "renewals per s of hold", "renewals per cycle", "expected"],
            renew_rows,
        ),
    ])
    DOCS.mkdir(exist_ok=True)
    (DOCS / "bench-lock-costs.md").write_text(text + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 30 s)")
    parser.add_argument("--no-docs", action="store_true", help="do not write the docs page")
    args = parser.parse_args()
    started = time.perf_counter()
    res = asyncio.run(run(args.quick))
    elapsed = time.perf_counter() - started
    if not args.no_docs:
        write_docs(res, "python -m bench.lock_costs" + (" --quick" if args.quick else ""),
                   elapsed)
        print(f"\nwrote {DOCS / 'bench-lock-costs.md'}")


if __name__ == "__main__":
    main()
