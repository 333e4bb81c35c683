"""How often two pods hold one conversation at once: Rasa's two Redis lock stores and Turnstile.

Run ``python -m bench.lock_overlaps`` (about 6 minutes; ``--quick`` about 1.5) in the main venv
after ``hack/rasa-venvs.sh pro``. It starts one standalone Redis (``tests.platform``) and, per
store, separate processes ("pods", ``bench.overlap_pod``) in ``.venv-rasa-pro`` that load the
store exactly as Rasa Pro 3.21 does (``read_endpoint_config`` + ``LockStore.create``):

* ``concurrent_redis``: Rasa's ``ConcurrentRedisLockStore`` (the one Rasa recommends);
* ``redis``: Rasa's ``RedisLockStore``;
* ``turnstile``: ``turnstile.rasa.TicketLockStore``;
* ``concurrent_redis, in transition``: two Rasa ``concurrent_redis`` pods beside two Turnstile
  pods in transition from them (``transition_from``, ``docs/adoption.md``), as during a rolling
  update; overlaps are counted apart: between two old pods, and involving a new pod.

A *burst* is one new conversation that gets ``--messages`` messages on every pod at the same
instant (a user typing fast, the channel spreading the messages over the pods). Each round runs
``--parallel`` bursts at once on distinct conversations; the stores take turns round by round,
so load drift hits all of them. Handlers enter ``lock_store.lock(conversation)`` with Rasa's
default poll (``wait_time_in_seconds=1``), hold ``--hold`` seconds and record when they held.
Two sections of one conversation that intersect are an *overlap*: two messages of one
conversation handled at once, which is what a lock store exists to prevent. A handler that gets
no lock (``LockError``, or 30 s) is *lost*: Rasa drops that message.

It prints a table and writes ``docs/bench-lock-overlaps.md``. The counts depend on timing and
load; nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import machine_note, markdown_table
from tests.platform.redis_servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bench-lock-overlaps.md"
VENV = Path(os.environ.get("RASA_PRO_VENV", ROOT / ".venv-rasa-pro"))
TURNSTILE = "turnstile.rasa.TicketLockStore"


@dataclass
class Variant:
    """One store under test: its pods (name, ``lock_store`` section) and what it counted."""

    label: str
    short: str
    pods: list[tuple[str, dict[str, Any]]]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    bursts: int = 0
    messages: int = 0
    overlapping_bursts: int = 0
    pairs: int = 0
    old_old_pairs: int = 0
    new_pairs: int = 0
    lost: int = 0
    worst_wait: float = 0.0
    samples: list[str] = field(default_factory=list)
    overlap_samples: list[str] = field(default_factory=list)


def section_yaml(section: dict[str, Any], indent: int = 2) -> list[str]:
    pad, lines = " " * indent, []
    for key, value in section.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key}:", *section_yaml(value, indent + 2)]
        else:
            lines.append(f"{pad}{key}: {value}")
    return lines


def variants(redis: RedisServer) -> list[Variant]:
    def keys(kind: str) -> dict[str, Any]:
        # Rasa's concurrent store wants an alphanumeric prefix.
        prefix = kind.rsplit(".", maxsplit=1)[-1].replace("_", "") + uuid.uuid4().hex[:6]
        return {"type": kind, "host": redis.host, "port": redis.port, "db": 1, "key_prefix": prefix}

    old = keys("concurrent_redis")
    new = {**keys(TURNSTILE), "transition_from": old, "transition_until": "2099-01-01T00:00:00Z"}
    # Every pod of a store shares its section (one prefix): they are replicas of one bot.
    return [
        Variant("Rasa `concurrent_redis`", "concurrent_redis",
                [("pod", keys("concurrent_redis"))] * 2),
        Variant("Rasa `redis`", "redis", [("pod", keys("redis"))] * 2),
        Variant("Turnstile", "turnstile", [("pod", keys(TURNSTILE))] * 2),
        Variant("`concurrent_redis` old pods + Turnstile new pods in transition", "transition",
                [("old", old), ("old", old), ("new", new), ("new", new)]),
    ]


def start(variant: Variant, workdir: Path) -> None:
    """Start the variant's pods (they load Rasa in parallel; ``ready`` waits for them)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        sys.exit(f"{python} is missing: run `bash hack/rasa-venvs.sh pro` first")
    for i, (role, section) in enumerate(variant.pods):
        path = workdir / f"{uuid.uuid4().hex[:8]}.yml"
        path.write_text("\n".join(["lock_store:", *section_yaml(section)]) + "\n")
        variant.procs.append(subprocess.Popen(
            [str(python), "-m", "bench.overlap_pod", str(path), f"{role}{i}"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        ))


def ready(variant: Variant) -> None:
    for i, proc in enumerate(variant.procs):
        if reply(proc) != "READY":
            sys.exit(f"pod {i} of {variant.label} did not start (exit {proc.poll()})")


def reply(proc: subprocess.Popen[str]) -> str:
    """The pod's next protocol line (``@@ ...``); whatever else it prints (Rasa logs) is shown."""
    assert proc.stdout is not None
    while line := proc.stdout.readline():
        if line.startswith("@@ "):
            return line[3:].strip()
        print(f"    pod: {line.rstrip()}"[:300], flush=True)
    return ""


def stop_pods(procs: list[subprocess.Popen[str]]) -> None:
    """Close each pod's stdin (its signal to stop) and wait for it, bounded; kill a laggard."""
    for proc in procs:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop(variant: Variant) -> None:
    stop_pods(variant.procs)


def overlaps(held: list[list[Any]]) -> list[tuple[str, str]]:
    spans = sorted(held, key=lambda s: s[2])
    pairs = []
    for i, (_, a, a0, a1) in enumerate(spans):
        for _, b, b0, b1 in spans[i + 1:]:
            if b0 >= a1:
                break
            if a0 < b1:
                pairs.append((a, b))
    return pairs


def run_round(variant: Variant, messages: int, parallel: int, hold: float) -> None:
    conversations = [f"c{uuid.uuid4().hex[:12]}" for _ in range(parallel)]
    at = time.monotonic() + 0.3
    burst = json.dumps({"at": at, "messages": messages, "conversations": conversations,
                        "wait": 1.0, "hold": hold})
    for proc in variant.procs:
        assert proc.stdin is not None
        proc.stdin.write(burst + "\n")
        proc.stdin.flush()
    held: list[list[Any]] = []
    for proc in variant.procs:
        answer = json.loads(reply(proc))
        held += answer["held"]
        variant.lost += len(answer["lost"])
        variant.samples += [" ".join(lost[1:]) for lost in answer["lost"]][:2]
    variant.bursts += parallel
    variant.messages += parallel * messages * len(variant.procs)
    variant.worst_wait = max([variant.worst_wait, *(end - at for _, _, _, end in held)])
    for conversation in conversations:
        sections = [h for h in held if h[0] == conversation]
        pairs = overlaps(sections)
        if pairs and len(variant.overlap_samples) < 5:
            first = min(h[2] for h in sections)
            variant.overlap_samples.append(", ".join(
                f"{name} {1000 * (a - first):.0f}-{1000 * (b - first):.0f} ms"
                for _, name, a, b in sorted(sections, key=lambda h: h[2])))
        variant.pairs += len(pairs)
        variant.overlapping_bursts += bool(pairs)
        old_old = [p for p in pairs if p[0].startswith("old") and p[1].startswith("old")]
        variant.old_old_pairs += len(old_old)
        variant.new_pairs += sum(1 for p in pairs if "new" in p[0] + p[1])


def per_thousand(count: int, bursts: int) -> str:
    return f"{1000 * count / bursts:.1f}" if bursts else "-"


def rows(results: list[Variant]) -> list[list[str]]:
    out = []
    for v in results:
        transition = len({role for role, _ in v.pods}) > 1
        out.append([
            v.label, str(len(v.pods)), f"{v.bursts:,}", f"{v.messages:,}",
            per_thousand(v.overlapping_bursts, v.bursts), str(v.pairs),
            f"{v.old_old_pairs} old-old, {v.new_pairs} with a new pod" if transition else "-",
            str(v.lost), f"{v.worst_wait:.2f}",
        ])
    return out


HEADER = ["store", "pods", "bursts", "messages", "bursts with an overlap per 1,000",
          "overlapping pairs", "of which", "lost", "slowest burst s"]


def measure(  # noqa: PLR0917 - the run's settings, each from its own flag
    rounds: int, messages: int, parallel: int, hold: float, workdir: Path,
    only: list[str] | None = None,
) -> list[Variant]:
    with RedisServer(name="bench-overlaps") as redis:
        results = [v for v in variants(redis) if not only or v.short in only]
        try:
            for variant in results:
                start(variant, workdir)
            for variant in results:
                ready(variant)
            for r in range(rounds):
                for variant in results:
                    run_round(variant, messages, parallel, hold)
                if (r + 1) % max(1, rounds // 5) == 0:
                    print(f"  round {r + 1}/{rounds}: " + "; ".join(
                        f"{v.short} {v.overlapping_bursts}/{v.bursts}" for v in results),
                        flush=True)
        finally:
            for variant in results:
                stop(variant)
    return results


def write_doc(
    results: list[Variant], command: str, elapsed: float, args: argparse.Namespace
) -> None:
    samples = [f"- {v.label}: {s}" for v in results for s in v.samples[:2]]
    overlapping = [f"- {v.label}: {s}" for v in results for s in v.overlap_samples[:2]]
    text = "\n\n".join([
        "# Two pods in one conversation: Rasa's lock stores and Turnstile",
        f"Command: `{command}`  \nDate: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"run took {elapsed:.0f} s  \nMachine: {machine_note()}, one redis-server on loopback; "
        "load average " + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " at the end.",
        f"Each pod is a process running Rasa Pro 3.21's own loader. A burst is one new "
        f"conversation getting {args.messages} message(s) on every pod at the same instant; "
        f"{args.parallel} bursts run at once on distinct conversations; the stores take turns "
        f"round by round ({args.rounds} rounds). Handlers use Rasa's default poll "
        f"(`wait_time_in_seconds=1`) and hold {args.hold * 1000:.0f} ms. An overlap is two "
        "messages of one conversation handled at the same time; lost is a message that never "
        "got the lock (Rasa drops it). See `bench/lock_overlaps.py`.",
        markdown_table(HEADER, rows(results)),
        "Why Rasa's stores overlap: `ConcurrentRedisLockStore.issue_ticket` draws a number "
        "(INCR) and writes the ticket (SET) in two round trips, and a waiter finds the head by "
        "listing the keys (KEYS); a pod whose INCR came first but whose SET lands after the "
        "other pod listed the keys finds itself at the head too "
        "(`tests/rasa/test_transition_rasa.py::test_rasas_concurrent_store_lets_two_old_pods_in"
        "_by_itself` stages it with Rasa's methods alone). `RedisLockStore` reads, changes and "
        "writes back one JSON document (GET, then SET), so concurrent writers erase each other's "
        "tickets. Turnstile draws and checks a ticket in one Lua script each.",
        *(["Examples of overlaps (each burst's sections, ms from its first entry):",
           "\n".join(overlapping)] if overlapping else []),
        *(["Examples of lost messages:", "\n".join(samples)] if samples else []),
    ])
    DOC.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 rounds instead of 40")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--messages", type=int, default=1, help="messages per pod per burst")
    parser.add_argument("--parallel", type=int, default=25, help="bursts at once")
    parser.add_argument("--hold", type=float, default=0.005, help="seconds each message holds")
    parser.add_argument("--only", choices=["concurrent_redis", "redis", "turnstile", "transition"],
                        action="append", help="run only these stores (repeatable)")
    parser.add_argument("--no-docs", action="store_true", help="do not write the doc")
    args = parser.parse_args()
    args.rounds = args.rounds or (10 if args.quick else 40)
    started = time.perf_counter()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-overlaps-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    results = measure(args.rounds, args.messages, args.parallel, args.hold, workdir, args.only)
    print(markdown_table(HEADER, rows(results)))
    for v in results:
        for sample in v.overlap_samples:
            print(f"  overlap, {v.short}: {sample}")
    if not args.no_docs:
        command = "python -m bench.lock_overlaps " + " ".join(sys.argv[1:])
        write_doc(results, command.strip(), time.perf_counter() - started, args)


if __name__ == "__main__":
    main()
