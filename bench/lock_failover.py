"""Lock stores while the Redis master is killed with -9 again and again (Sentinel and Cluster).

Run ``python -m bench.lock_failover`` (about 10 minutes; ``--quick`` about 5) in the main venv
after ``hack/rasa-venvs.sh pro``. Per mode (Sentinel: a master, one replica, three sentinels;
Cluster: three masters with one replica each, ``tests.platform``) it runs, at the same time and
through the same failovers, four stores, each as two processes ("pods", ``bench.overlap_pod``)
that load it exactly as Rasa Pro 3.21 does:

* Rasa's ``ConcurrentRedisLockStore`` (``concurrent_redis``) and ``RedisLockStore`` (``redis``);
* Turnstile (``turnstile.rasa.TicketLockStore``) as configured by default, and in durable mode
  (``lock_durable_replicas: 1``, ``docs/locks.md``, "Durable mode").

Rounds of bursts run back to back: each round, every store gets ``--parallel`` new conversations,
and each pod sends ``--messages`` messages to each of them at the same instant. Most messages
hold the lock 1-20 ms; in a ``--long-share`` of the conversations one message holds it 3-6 s,
longer than a promotion, so that messages wait behind a holder while the master dies. Meanwhile
a thread kills the master (Cluster: the master of a random key) ``--failovers`` times, waits for
the promotion, restarts the killed node as a replica and lets traffic run before the next kill.

Counted per store and mode: messages that held the lock (acquisitions), messages that never got
it (``LockError``, or 30 s: Rasa drops them), overlapping pairs (two messages of one
conversation handled at the same time) and the worst wait (burst start to entering the lock).
Turnstile's pods' warnings (a holder overtaken or lost) are counted from their logs. Before the
pods start, the cost of durable mode is measured in this process: uncontended lock cycles per
second with and without it, interleaved, on the same topology.

It prints the tables and writes ``docs/bench-lock-failover.md`` and
``docs/bench-lock-failover.png``. The counts depend on timing and load; nothing here asserts
anything.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import interleaved_rates, machine_note, markdown_table
from bench.lock_overlaps import overlaps, reply, section_yaml, stop_pods
from tests.platform.redis_servers import RedisCluster, SentinelGroup, store_kwargs
from turnstile.stores.locks.redis import RedisTicketLockStore

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bench-lock-failover.md"
PLOT = ROOT / "docs" / "bench-lock-failover.png"
VENV = Path(os.environ.get("RASA_PRO_VENV", ROOT / ".venv-rasa-pro"))
TURNSTILE = "turnstile.rasa.TicketLockStore"
MODES = ("sentinel", "cluster")
#: Short and long holds (seconds): long ones outlast a promotion (2-5 s here).
SHORT_HOLD = (0.001, 0.020)
LONG_HOLD = (3.0, 6.0)
#: Words in a Turnstile pod's log that mean a holder was overtaken or lost its lock.
WARNED = ("lost its lock", "held longer than its lock_lifetime", "before it could expire")
#: ... and that a durable turn was not acknowledged by enough replicas in time.
SHORTFALL = "durable locks:"


@dataclass
class Store:
    """One store under test in one mode: its pods and what they counted."""

    label: str
    short: str
    mode: str
    section: dict[str, Any]
    pods: int = 2
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    messages: int = 0
    acquired: int = 0
    #: Messages that never held the lock; errors raised after holding it (at the release).
    lost: int = 0
    release_errors: int = 0
    pairs: int = 0
    worst_wait: float = 0.0
    warnings: int = 0
    shortfalls: int = 0
    lost_samples: list[str] = field(default_factory=list)
    overlap_samples: list[str] = field(default_factory=list)


def stores(mode: str, topology: SentinelGroup | RedisCluster) -> list[Store]:
    def section(kind: str, **extra: Any) -> dict[str, Any]:
        prefix = kind.rsplit(".", maxsplit=1)[-1].replace("_", "") + uuid.uuid4().hex[:6]
        keys = store_kwargs(topology, type=kind, key_prefix=prefix, **extra)
        if mode != "cluster":
            keys["db"] = 1
        return keys

    return [
        Store("Rasa `concurrent_redis`", "concurrent_redis", mode, section("concurrent_redis")),
        Store("Rasa `redis`", "redis", mode, section("redis")),
        Store("Turnstile (default)", "turnstile", mode, section(TURNSTILE)),
        Store("Turnstile, durable (`lock_durable_replicas: 1`)", "durable", mode,
              section(TURNSTILE, lock_durable_replicas=1)),
    ]


def start(store: Store, workdir: Path) -> None:
    python = VENV / "bin" / "python"
    if not python.exists():
        sys.exit(f"{python} is missing: run `bash hack/rasa-venvs.sh pro` first")
    for i in range(store.pods):
        path = workdir / f"{store.short}-{uuid.uuid4().hex[:8]}.yml"
        path.write_text("\n".join(["lock_store:", *section_yaml(store.section)]) + "\n")
        log = workdir / f"{store.mode}-{store.short}-pod{i}.log"
        store.logs.append(log)
        with log.open("w") as err:
            store.procs.append(subprocess.Popen(
                [str(python), "-m", "bench.overlap_pod", str(path), f"pod{i}"],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            ))


def ready(store: Store) -> None:
    for i, proc in enumerate(store.procs):
        if reply(proc) != "READY":
            sys.exit(f"pod {i} of {store.label} did not start (exit {proc.poll()}); "
                     f"see {store.logs[i]}")


def stop(store: Store) -> None:
    stop_pods(store.procs)
    lines = [line for log in store.logs
             for line in log.read_text(errors="replace").splitlines()]
    store.warnings = sum(any(w in line for w in WARNED) for line in lines)
    store.shortfalls = sum(SHORTFALL in line for line in lines)


def send_round(store: Store, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """Write one round's bursts to the store's pods; returns what ``read_round`` needs."""
    conversations = [f"c{uuid.uuid4().hex[:12]}" for _ in range(args.parallel)]
    at = time.monotonic() + 0.3
    long_ones = {c for c in conversations if rng.random() < args.long_share}
    for pod, proc in enumerate(store.procs):
        holds = {
            c: [rng.uniform(*LONG_HOLD) if (c in long_ones and pod == 0 and i == 0)
                else rng.uniform(*SHORT_HOLD) for i in range(args.messages)]
            for c in conversations
        }
        burst = {"at": at, "messages": args.messages, "conversations": conversations,
                 "wait": 1.0, "hold": SHORT_HOLD[1], "holds": holds}
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(burst) + "\n")
        proc.stdin.flush()
    return {"at": at, "conversations": conversations}


def read_round(store: Store, sent: dict[str, Any], messages: int) -> None:
    held: list[list[Any]] = []
    failed: list[list[Any]] = []
    for proc in store.procs:
        answer = json.loads(reply(proc))
        held += answer["held"]
        failed += answer["lost"]
    entered = {(h[0], h[1]) for h in held}
    never = [f for f in failed if (f[0], f[1]) not in entered]
    store.lost += len(never)
    store.release_errors += len(failed) - len(never)
    if len(store.lost_samples) < 4:
        store.lost_samples += [" ".join(str(x) for x in f[1:]) for f in never][:2]
    store.messages += len(sent["conversations"]) * messages * len(store.procs)
    store.acquired += len(held)
    store.worst_wait = max([store.worst_wait, *(start - sent["at"] for _, _, start, _ in held)])
    for conversation in sent["conversations"]:
        sections = [h for h in held if h[0] == conversation]
        pairs = overlaps(sections)
        store.pairs += len(pairs)
        if pairs and len(store.overlap_samples) < 4:
            first = min(h[2] for h in sections)
            store.overlap_samples.append(", ".join(
                f"{name} {1000 * (a - first):.0f}-{1000 * (b - first):.0f} ms"
                for _, name, a, b in sorted(sections, key=lambda h: h[2])))


class Chaos(threading.Thread):
    """Kills the master ``count`` times, ``pause`` seconds of traffic apart; records each."""

    def __init__(self, mode: str, topology: SentinelGroup | RedisCluster, count: int,
                 pause: float) -> None:
        super().__init__(daemon=True, name="chaos")
        self.mode, self.topology, self.count, self.pause = mode, topology, count, pause
        self.done: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(self.count):
                time.sleep(self.pause)
                self.done.append(self._failover())
                print(f"  {self.mode}: failover {len(self.done)}/{self.count}: {self.done[-1]}",
                      flush=True)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _failover(self) -> str:
        started = time.monotonic()
        if isinstance(self.topology, SentinelGroup):
            group = self.topology
            old = group.kill_master()
            new = group.wait_for_failover(old, timeout=60)
            promoted = time.monotonic() - started
            group.restart(group.data_node_by_port(old[1]), timeout=60)
            return f"{old[1]} -> {new[1]} promoted in {promoted:.1f} s"
        cluster = self.topology
        key = uuid.uuid4().hex
        node = cluster.kill_master_for_key(key)
        new_node = cluster.wait_for_failover(node, key=key, timeout=60)
        promoted = time.monotonic() - started
        cluster.restart_node(node, timeout=60)
        return f"{node.port} -> {new_node.port} promoted in {promoted:.1f} s"


async def durable_cost(topology: SentinelGroup | RedisCluster, seconds: float) -> dict[str, float]:
    """Uncontended lock cycles per second, default and durable, in interleaved slices."""
    kwargs = store_kwargs(topology, **({} if isinstance(topology, RedisCluster) else {"db": 0}))
    plain = RedisTicketLockStore.from_kwargs(kwargs)
    durable = RedisTicketLockStore.from_kwargs({**kwargs, "lock_durable_replicas": 1,
                                                "lock_durable_timeout": 1})

    async def cycle(store: RedisTicketLockStore) -> None:
        async with store.lock(f"cost-{uuid.uuid4().hex[:10]}"):
            pass

    try:
        measured = await interleaved_rates(
            {"default": (lambda: cycle(plain), 1), "durable": (lambda: cycle(durable), 1)},
            seconds, slice_seconds=0.2,
        )
    finally:
        await plain.close()
        await durable.close()
    return {"default": measured.totals["default"], "durable": measured.totals["durable"],
            "ratio": measured.ratio("durable", "default")}


def topology_for(mode: str) -> SentinelGroup | RedisCluster:
    if mode == "sentinel":
        return SentinelGroup(replicas=1, sentinels=3, quorum=2)
    return RedisCluster(masters=3, replicas_per_master=1)


def run_mode(
    mode: str, args: argparse.Namespace, workdir: Path
) -> tuple[list[Store], dict[str, Any]]:
    rng = random.Random(args.seed)
    with topology_for(mode) as topology:
        cost = asyncio.run(durable_cost(topology, args.cost_seconds))
        print(f"  {mode}: durable cost {cost['default']:.0f} vs {cost['durable']:.0f} cycles/s "
              f"(x{cost['ratio']:.2f})", flush=True)
        under_test = stores(mode, topology)
        chaos = Chaos(mode, topology, args.failovers, args.pause)
        rounds = 0
        try:
            for store in under_test:
                start(store, workdir)
            for store in under_test:
                ready(store)
            chaos.start()
            while chaos.is_alive() or rounds < 2:
                sent = [send_round(store, args, rng) for store in under_test]
                for store, burst in zip(under_test, sent, strict=True):
                    read_round(store, burst, args.messages)
                rounds += 1
            for _ in range(2):  # traffic after the last failover too
                sent = [send_round(store, args, rng) for store in under_test]
                for store, burst in zip(under_test, sent, strict=True):
                    read_round(store, burst, args.messages)
                rounds += 1
        finally:
            for store in under_test:
                stop(store)
        if chaos.error is not None:
            raise chaos.error
    return under_test, {"rounds": rounds, "failovers": chaos.done, "cost": cost}


HEADER = ["store", "pods", "messages", "acquisitions", "failed", "errors at release",
          "overlapping pairs", "worst wait s", "holders warned overtaken",
          "durable shortfalls warned"]


def rows(results: list[Store]) -> list[list[str]]:
    return [[s.label, str(s.pods), f"{s.messages:,}", f"{s.acquired:,}", str(s.lost),
             str(s.release_errors), str(s.pairs), f"{s.worst_wait:.1f}",
             str(s.warnings) if s.short in ("turnstile", "durable") else "-",
             str(s.shortfalls) if s.short == "durable" else "-"]
            for s in results]


def plot(results: dict[str, list[Store]]) -> None:
    import matplotlib  # noqa: PLC0415 - only needed when writing the docs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (after choosing the Agg backend)

    labels = [s.short for s in next(iter(results.values()))]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    width = 0.38
    for ax, (title, value) in zip(axes, [
        ("failed messages per 1,000", lambda s: 1000 * s.lost / max(s.messages, 1)),
        ("overlapping pairs", lambda s: s.pairs),
        ("worst wait (s)", lambda s: s.worst_wait),
    ], strict=True):
        for k, (mode, stores_) in enumerate(results.items()):
            xs = [i + (k - 0.5) * width for i in range(len(stores_))]
            ax.bar(xs, [value(s) for s in stores_], width, label=mode)
        ax.set_xticks(range(len(labels)), labels, rotation=20)
        ax.set_title(title)
    axes[0].legend()
    fig.suptitle("Lock stores through repeated master kills (-9)")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def write_doc(results: dict[str, list[Store]], info: dict[str, dict[str, Any]], command: str,
              elapsed: float, args: argparse.Namespace) -> None:
    parts = [
        "# Lock stores through failovers: Rasa's two and Turnstile (default and durable)",
        f"Command: `{command}`  \nDate: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"run took {elapsed:.0f} s  \nMachine: {machine_note()}; load average "
        + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " at the end.",
        f"Per mode, four stores ran at the same time through the same failovers, each as two "
        f"pods (processes running Rasa Pro 3.21's loader, `bench/overlap_pod.py`). Every round "
        f"each store got {args.parallel} new conversations and each pod sent {args.messages} "
        f"message(s) to each at once; messages hold the lock 1-20 ms, except that in "
        f"{args.long_share:.0%} of the conversations one message holds it 3-6 s (longer than a "
        f"promotion). {args.failovers} master kills (-9) per mode, {args.pause:g} s of traffic "
        "apart; after each, the killed node is restarted as a replica. Failed: a message that "
        "never got the lock (`LockError`, a Redis error out of the store, or 30 s; Rasa drops "
        "it). Errors at release: a message that held the lock and whose release raised (Rasa "
        "fails the request after handling it). Overlapping pairs: two "
        "messages of one conversation handled at the same time. Worst wait: from the burst's "
        "start to entering the lock. Holders warned overtaken: Turnstile's warnings that a "
        "holder lost its lock or found its ticket gone at the release. Durable shortfalls: "
        "warnings that fewer replicas than asked acknowledged a turn in time (each pauses "
        "acknowledgements for 1 s). See `bench/lock_failover.py`.",
        "Reading it: a failover makes Rasa's stores fail messages (Redis errors out of the "
        "store while the master is down, `LockError` after their lock lifetime) and "
        "`RedisLockStore` lets two holders in (its read-modify-write loses tickets, failover "
        "or not). What durable mode is for, a ticket that granted a turn lost with a master "
        "that died before replicating it, needs the kill to land within the replication delay "
        "(well under a millisecond on loopback) after a turn: rare here, so default and durable "
        "Turnstile usually read the same, and the durable column shows its cost and that it "
        "runs through failovers, not a difference in overlaps.",
        "![failovers](bench-lock-failover.png)",
    ]
    for mode, stores_ in results.items():
        cost = info[mode]["cost"]
        parts += [
            f"## {mode.capitalize()} ({info[mode]['rounds']} rounds)",
            "Failovers: " + "; ".join(info[mode]["failovers"]) + ".",
            markdown_table(HEADER, rows(stores_)),
            f"Durable mode's cost here (one task, uncontended cycles, interleaved 0.2 s slices, "
            f"{args.cost_seconds:g} s each, before the pods started): {cost['default']:,.0f} "
            f"cycles/s default, {cost['durable']:,.0f} durable (x{cost['ratio']:.2f}; "
            f"{1000 / cost['default']:.2f} ms and {1000 / cost['durable']:.2f} ms per cycle).",
        ]
        samples = [f"- {s.label}: {x}" for s in stores_ for x in s.lost_samples[:2]]
        if samples:
            parts += ["Examples of failed messages:", "\n".join(samples)]
        overlapping = [f"- {s.label}: {x}" for s in stores_ for x in s.overlap_samples[:2]]
        if overlapping:
            parts += ["Examples of overlaps (sections, ms from the conversation's first entry):",
                      "\n".join(overlapping)]
    DOC.write_text("\n\n".join(parts) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 failovers per mode instead of 5")
    parser.add_argument("--failovers", type=int, default=None, help="master kills per mode")
    parser.add_argument("--pause", type=float, default=12.0,
                        help="seconds of traffic before each kill")
    parser.add_argument("--parallel", type=int, default=8, help="conversations per store per round")
    parser.add_argument("--messages", type=int, default=2, help="messages per pod per conversation")
    parser.add_argument("--long-share", type=float, default=0.1,
                        help="share of conversations with one 3-6 s hold")
    parser.add_argument("--cost-seconds", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=29)
    parser.add_argument("--only", choices=MODES, action="append", help="run only these modes")
    parser.add_argument("--no-docs", action="store_true", help="do not write the doc")
    args = parser.parse_args()
    args.failovers = args.failovers or (2 if args.quick else 5)
    started = time.perf_counter()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-failover-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    results: dict[str, list[Store]] = {}
    info: dict[str, dict[str, Any]] = {}
    for mode in args.only or MODES:
        print(f"{mode}: starting", flush=True)
        results[mode], info[mode] = run_mode(mode, args, workdir)
        print(markdown_table(HEADER, rows(results[mode])), flush=True)
    if not args.no_docs:
        plot(results)
        command = "python -m bench.lock_failover " + " ".join(sys.argv[1:])
        write_doc(results, info, command.strip(), time.perf_counter() - started, args)
        print(f"\nwrote {DOC} and {PLOT} (pod logs in {workdir})")


if __name__ == "__main__":
    main()
