"""Small helpers shared by the benchmarks: timing loops, percentiles, filler keys, the machine.

Kept small and stable on purpose (other benchmarks import it). Everything here measures; no
helper asserts a speed.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


async def count(
    op: Callable[[], Awaitable[Any]], seconds: float, *, tasks: int = 1
) -> tuple[int, float]:
    """``(completed op() calls, elapsed seconds)`` with ``tasks`` concurrent loops."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await op()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(tasks)))
    return done, time.perf_counter() - started


async def rate(op: Callable[[], Awaitable[Any]], seconds: float, *, tasks: int = 1) -> float:
    """Completed ``op()`` calls per second, with ``tasks`` concurrent loops, over ``seconds``."""
    done, elapsed = await count(op, seconds, tasks=tasks)
    return done / elapsed


@dataclass
class Interleaved:
    """Per-slice rates of several contenders measured in alternating slices."""

    slices: dict[str, list[float]]
    totals: dict[str, float]

    def ratio(self, a: str, b: str, *, b_factor: float = 1.0) -> float:
        """Median over rounds of ``a / (b * b_factor)`` from adjacent slices: a load burst
        hits one round, not the result."""
        pairs = zip(self.slices[a], self.slices[b], strict=True)
        return statistics.median(x / (y * b_factor) for x, y in pairs if y > 0)


async def interleaved_rates(
    ops: dict[str, tuple[Callable[[], Awaitable[Any]], int]],
    seconds: float,
    *,
    slice_seconds: float = 0.1,
) -> Interleaved:
    """Rates of several ``name: (op, tasks)`` measured in alternating short slices.

    On a machine whose load drifts, measuring A then B compares two different machines;
    alternating slices lets the drift hit every contender alike, so ratios stay meaningful.
    ``seconds`` is the total per op.
    """
    done = dict.fromkeys(ops, 0)
    spent = dict.fromkeys(ops, 0.0)
    slices: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(max(1, round(seconds / slice_seconds))):
        for name, (op, tasks) in ops.items():
            n, elapsed = await count(op, slice_seconds, tasks=tasks)
            done[name] += n
            spent[name] += elapsed
            slices[name].append(n / elapsed)
    return Interleaved(slices, {name: done[name] / spent[name] for name in ops})


def sync_rate(op: Callable[[], Any], seconds: float) -> float:
    """Completed ``op()`` calls per second in this thread, over ``seconds``."""
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        op()
        done += 1
    return done / (time.perf_counter() - started)


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(samples: list[float]) -> dict[str, float]:
    """Median and p95 of samples given in seconds, in milliseconds."""
    return {
        "median_ms": statistics.median(samples) * 1000 if samples else float("nan"),
        "p95_ms": percentile(samples, 0.95) * 1000,
        "n": float(len(samples)),
    }


async def fill_keys(client: Any, count: int, *, prefix: str = "filler", batch: int = 5000) -> None:
    """Write ``count`` unrelated string keys (plain async redis-py client, pipelined)."""
    for start in range(0, count, batch):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + batch, count)):
            pipe.set(f"{prefix}:{i}", "x")
        await pipe.execute()


def machine_note() -> str:
    """One line saying where the numbers come from."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} vCPU ({cpu}), "
        f"Python {platform.python_version()}"
    )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
