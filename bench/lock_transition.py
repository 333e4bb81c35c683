"""What a lock store in transition costs: cycle rate and handoff delay next to the normal store.

Run ``python -m bench.lock_transition`` (about 40 s) or ``--quick`` (about 15 s). It starts two
redis-servers on loopback, the new Redis and the previous one, and measures with one event loop:

* the plain Turnstile store (the normal figures);
* Turnstile in transition from another Turnstile store on the previous Redis (another prefix or
  Redis: a second ``RedisTicketLockStore`` taken first);
* Turnstile in transition from Rasa's ``concurrent_redis`` and ``redis`` protocols on the
  previous Redis (``locks.rasa_protocols``; no Rasa needed: the protocols are ours).

A *cycle* is acquire + release of a free lock on a fresh conversation, one task. A *handoff* is
the delay from a holder's release to the waiter (another store instance, another "pod") holding:
in Rasa's protocols the waiter polls every 0.05 s and confirms after a 0.05 s settle, so that
is the price of speaking a protocol without wake-ups. Writes ``docs/bench-lock-transition.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench._common import machine_note, markdown_table, rate, summary_ms
from tests.platform.redis_servers import RedisServer
from turnstile.stores.locks.transition import build_lock_store

DOC = Path(__file__).resolve().parent.parent / "docs" / "bench-lock-transition.md"


def sections(new: RedisServer, old: RedisServer) -> dict[str, dict[str, Any] | None]:
    base = {"host": new.host, "port": new.port, "db": 0, "key_prefix": "new"}
    old_keys = {"host": old.host, "port": old.port, "key_prefix": "old"}
    until = time.time() + 3600
    out: dict[str, dict[str, Any] | None] = {"Turnstile (no transition)": base}
    for label, store_type in [
        ("in transition from Turnstile (other Redis)", "turnstile.rasa.TicketLockStore"),
        ("in transition from concurrent_redis", "concurrent_redis"),
        ("in transition from redis", "redis"),
    ]:
        out[label] = {**base, "transition_from": {"type": store_type, **old_keys, "db": 0},
                      "transition_until": until}
    return out


async def cycle_rate(store: Any, seconds: float) -> float:
    async def cycle() -> None:
        async with store.lock(f"c-{uuid.uuid4().hex[:12]}", lock_lifetime=30):
            pass

    for _ in range(20):  # warm the connections and the script caches
        await cycle()
    return await rate(cycle, seconds)


async def handoffs(holder: Any, waiter: Any, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        cid = f"h-{uuid.uuid4().hex[:12]}"
        held = holder.lock(cid, lock_lifetime=30)
        await held.__aenter__()
        acquired: list[float] = []

        async def wait(cid: str = cid, acquired: list[float] = acquired) -> None:
            async with waiter.lock(cid, lock_lifetime=30):
                acquired.append(time.perf_counter())

        task = asyncio.create_task(wait())
        await asyncio.sleep(0.15)  # the waiter has drawn its tickets and waits
        started = time.perf_counter()
        await held.__aexit__(None, None, None)
        await asyncio.wait_for(task, timeout=10)
        out.append(acquired[0] - started)
    return out


async def measure(quick: bool) -> list[list[str]]:
    seconds = 0.6 if quick else 3.0
    samples = 10 if quick else 40
    rows = []
    with RedisServer(name="bench-new") as new, RedisServer(name="bench-old") as old:
        for label, section in sections(new, old).items():
            stores = [build_lock_store(section), build_lock_store(section)]
            try:
                cycles = await cycle_rate(stores[0], seconds)
                hand = summary_ms(await handoffs(stores[0], stores[1], samples))
            finally:
                for store in stores:
                    await store.close()
            print(f"  {label:<46} {cycles:8,.0f} cycles/s   handoff median "
                  f"{hand['median_ms']:.2f} ms, p95 {hand['p95_ms']:.2f} ms", flush=True)
            rows.append([label, f"{cycles:,.0f}", f"{hand['median_ms']:.2f}",
                         f"{hand['p95_ms']:.2f}", str(int(hand["n"]))])
    return rows


def write_doc(rows: list[list[str]], command: str, elapsed: float) -> None:
    text = "\n\n".join([
        "# Lock store in transition: benchmark",
        f"Command: `{command}`  \nDate: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"run took {elapsed:.0f} s  \nMachine: {machine_note()}, two redis-servers on loopback, "
        f"redis-py {redis.__version__}; the machine was shared with other work (load average "
        + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " at the end).",
        "One event loop, one task. A cycle is acquire + release of a free lock on a fresh "
        "conversation. A handoff is the delay from a holder's release to the waiter (another "
        "store instance) holding. In transition a lock is held only once both the previous "
        "store's and the new store's are (`docs/adoption.md`): a cycle costs the previous "
        "store's round trips on top; with Rasa's protocols, which have no wake-up, a waiter "
        "polls every 0.05 s and confirms its turn after a 0.05 s settle (the guard against old "
        "pods' stale writes, `turnstile/stores/locks/rasa_protocols.py`), so a handoff costs "
        "about that. The cost lasts until `transition_until`; afterwards the store is the plain "
        "one again.",
        markdown_table(["store", "cycles/s", "handoff median ms", "handoff p95 ms", "n"], rows),
    ])
    DOC.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (~15 s)")
    parser.add_argument("--no-docs", action="store_true", help="do not write the doc")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = asyncio.run(measure(args.quick))
    if not args.no_docs:
        command = "python -m bench.lock_transition" + (" --quick" if args.quick else "")
        write_doc(rows, command, time.perf_counter() - started)


if __name__ == "__main__":
    main()
