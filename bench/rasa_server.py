"""Real ``rasa run`` servers: Turnstile's lock store against Rasa's built-in ``redis`` one.

Run ``python -m bench.rasa_server`` (about 5 minutes; ``--quick`` about 2) in the main venv
after ``hack/rasa-server-venv.sh``. It starts one standalone Redis
(``tests.platform.redis_servers``), trains the test bot (``tests/rasa_server/bot``: "note m17"
is answered "echo m17"), and runs two ``rasa run --enable-api`` servers of Rasa Open Source
3.6.21 (``.venv-rasa-server``, Sanic on uvloop, no ``-X dev``) per lock store:

* ``turnstile``: ``endpoints.yml`` from ``turnstile render`` of a LockStore manifest
  (``turnstile.rasa.TicketLockStore``);
* ``rasa-redis``: Rasa's built-in ``lock_store: type: redis`` (``RedisLockStore``: waiters poll
  the lock every second).

Both pairs share the Redis (locks in db 1, each pair's Redis tracker store in db 0 under its own
prefix). The stores take turns inside every scenario, so load drift on the machine hits both:

* burst: 20 concurrent messages on one new conversation, alternating between the pair's
  servers; wall time, per-request median and p95, ordering violations and lost messages (read
  back from the tracker: each user message once, followed by its own reply);
* sequential: 50 messages one after another on one conversation, alternating servers, the
  two stores taking turns message by message;
* concurrent: 50 conversations x 4 messages, 20 requests in flight;
* all three again with 200,000 unrelated keys in the lock stores' db.

It prints a table and writes ``docs/bench-rasa-server.md`` and ``docs/bench-rasa-server.png``.
Numbers depend on the machine and its load; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from bench._common import fill_keys, machine_note, markdown_table, percentile
from tests.platform.redis_servers import RedisServer
from tests.rasa_server.servers import (
    VENV,
    Audit,
    RasaServer,
    Sent,
    audit,
    render_lock_store,
    send,
    start_all,
    tracker_events,
    tracker_store_section,
    train_bot,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"
STORES = ("turnstile", "rasa-redis")
FILLER_KEYS = 200_000
LOCK_DB = 1
BURST = 20
SEQUENTIAL = 50
CONVERSATIONS = 50
PER_CONVERSATION = 4
CONCURRENCY = 20
#: A request that takes longer than this counts as unanswered: Rasa's built-in store hangs
#: some bursts until its tickets expire (60 s, Rasa's default lock lifetime, and more).
REQUEST_TIMEOUT = 30.0
SEQUENTIAL_NOTE = (
    "Each message's latency is mostly Rasa's own work (NLU, policies, two tracker round trips, "
    "~35-55 ms here); an uncontended lock is a few Redis round trips of it for either store, "
    "so the sequential ratio sits at about 1 and moves with the load by a few per cent. The "
    "stores differ where messages contend: the burst rows."
)


@dataclass
class Tally:
    """Messages of one store in one scenario."""

    latencies: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    messages: int = 0
    #: Messages without their reply or missing from the tracker.
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0

    def add(self, sent: list[Sent], found: Audit | None) -> None:
        """Count ``sent`` and what the tracker says of them (``None``: it could not be read).
        A message is lost once, whether it got no reply, is missing from the tracker or both."""
        self.messages += len(sent)
        self.latencies += [s.seconds for s in sent]
        unanswered = {s.tag for s in sent if not s.answered}
        missing = {s.tag for s in sent} if found is None else set(found.lost)
        self.lost += len(unanswered | missing)
        if found is not None:
            self.duplicated += len(found.duplicated)
            self.out_of_order += len(found.out_of_order)

    def median_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")

    def p95_ms(self) -> float:
        return percentile(self.latencies, 0.95) * 1000

    def wall_median(self) -> float:
        return statistics.median(self.walls) if self.walls else float("nan")


@dataclass
class Results:
    #: (scenario, filled) -> store -> tally
    tallies: dict[tuple[str, bool], dict[str, Tally]] = field(default_factory=dict)
    startup: dict[str, float] = field(default_factory=dict)
    #: Burst wall-time ratio per round (turnstile / rasa-redis), per filled state.
    burst_ratios: dict[bool, list[float]] = field(default_factory=dict)
    #: Sequential latency ratio per message pair (turnstile / rasa-redis), per filled state.
    seq_ratios: dict[bool, list[float]] = field(default_factory=dict)

    def tally(self, scenario: str, filled: bool, store: str) -> Tally:
        return self.tallies.setdefault((scenario, filled), {}).setdefault(store, Tally())


async def _check(session: aiohttp.ClientSession, server: RasaServer, sender: str,
                 tags: list[str]) -> Audit | None:
    try:
        return audit(await tracker_events(session, server, sender), tags)
    except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError):
        return None


async def burst(session: aiohttp.ClientSession, pair: list[RasaServer], tally: Tally) -> float:
    sender = f"burst-{uuid.uuid4().hex[:10]}"
    tags = [f"m{i}" for i in range(BURST)]
    started = time.perf_counter()
    sent = await asyncio.gather(
        *(send(session, pair[i % 2], sender, t, timeout=REQUEST_TIMEOUT)
          for i, t in enumerate(tags))
    )
    wall = time.perf_counter() - started
    tally.walls.append(wall)
    tally.add(sent, await _check(session, pair[0], sender, tags))
    return wall


async def concurrent(session: aiohttp.ClientSession, pair: list[RasaServer], tally: Tally) -> None:
    run = uuid.uuid4().hex[:8]
    senders = [f"conc-{run}-{c}" for c in range(CONVERSATIONS)]
    tags = [f"m{i}" for i in range(PER_CONVERSATION)]
    gate = asyncio.Semaphore(CONCURRENCY)
    order = [(c, i) for i in range(PER_CONVERSATION) for c in range(CONVERSATIONS)]

    async def one(c: int, i: int) -> Sent:
        async with gate:
            return await send(session, pair[(c + i) % 2], senders[c], tags[i],
                              timeout=REQUEST_TIMEOUT)

    started = time.perf_counter()
    sent = await asyncio.gather(*(one(c, i) for c, i in order))
    tally.walls.append(time.perf_counter() - started)
    for c, sender in enumerate(senders):
        tally.add([s for s in sent if s.sender == sender], await _check(
            session, pair[c % 2], sender, tags))


async def scenarios(pairs: dict[str, list[RasaServer]], results: Results, *, filled: bool,
                    bursts: int, paired: int) -> None:
    """Every scenario, the stores taking turns. The built-in store runs only the first
    ``paired`` bursts (its hung bursts cost ``REQUEST_TIMEOUT`` each); Turnstile runs all."""
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm both pairs (first message loads lazily initialised parts of Rasa).
        for pair in pairs.values():
            for server in pair:
                await send(session, server, f"warm-{uuid.uuid4().hex[:6]}", "m0")
        ratios = results.burst_ratios.setdefault(filled, [])
        for r in range(bursts):
            walls: dict[str, float] = {}
            stores = STORES if r < paired else ("turnstile",)
            for store in stores if r % 2 == 0 else reversed(stores):
                walls[store] = await burst(session, pairs[store],
                                           results.tally("burst", filled, store))
            if len(walls) == 2:
                ratios.append(walls["turnstile"] / walls["rasa-redis"])
        # One message per store in turn (the order flips every message), so a load change
        # on the machine lands on both stores' samples alike.
        seq_sender = {s: f"seq-{uuid.uuid4().hex[:10]}" for s in STORES}
        seq_tags = [f"m{i}" for i in range(SEQUENTIAL)]
        seq_sent: dict[str, list[Sent]] = {s: [] for s in STORES}
        for i, tag in enumerate(seq_tags):
            for store in STORES if i % 2 == 0 else reversed(STORES):
                server = pairs[store][i % 2]
                seq_sent[store].append(
                    await send(session, server, seq_sender[store], tag, timeout=REQUEST_TIMEOUT)
                )
        results.seq_ratios[filled] = [
            t.seconds / b.seconds
            for t, b in zip(seq_sent["turnstile"], seq_sent["rasa-redis"], strict=True)
        ]
        for store in STORES:
            results.tally("sequential", filled, store).add(
                seq_sent[store], await _check(session, pairs[store][0], seq_sender[store],
                                              seq_tags))
        for r in range(2):
            for store in STORES if r % 2 == 0 else reversed(STORES):
                await concurrent(session, pairs[store], results.tally("concurrent", filled, store))


def endpoints_for(store: str, redis: RedisServer, workdir: Path, render_cli: list[str]) -> Path:
    prefix = "b" + uuid.uuid4().hex[:8]
    if store == "turnstile":
        lock = render_lock_store(
            render_cli,
            f"    host: {redis.host}\n    port: {redis.port}\n    db: {LOCK_DB}\n"
            f"    keyPrefix: {prefix}\n",
            workdir,
        )
    else:
        lock = (
            "lock_store:\n  type: redis\n"
            f"  url: {redis.host}\n  port: {redis.port}\n  db: {LOCK_DB}\n  key_prefix: {prefix}\n"
        )
    path = workdir / f"endpoints-{store}.yml"
    path.write_text(lock + tracker_store_section(redis.host, redis.port, key_prefix=prefix + "tr"))
    return path


def run(quick: bool) -> Results:
    results = Results()
    render_cli = [str(Path(sys.prefix) / "bin" / "turnstile")]
    with tempfile.TemporaryDirectory(prefix="bench-rasa-") as tmp, RedisServer(
        name="bench-rasa"
    ) as redis:
        work = Path(tmp)
        print(f"training the bot with {VENV}/bin/python ...", flush=True)
        model = train_bot(work / "bot")
        servers: dict[str, list[RasaServer]] = {}
        for store in STORES:
            endpoints = endpoints_for(store, redis, work, render_cli)
            servers[store] = [
                RasaServer(f"{store}-{n}", model, endpoints, work / f"{store}-{n}",
                           dev_warnings=False)
                for n in ("a", "b")
            ]
        every = [s for pair in servers.values() for s in pair]
        print("starting 4 rasa servers ...", flush=True)
        start_all(every, timeout=300)
        results.startup = {s.name: s.ready_seconds or float("nan") for s in every}
        try:
            for filled in (False, True):
                if filled:
                    print(f"filling db {LOCK_DB} with {FILLER_KEYS:,} unrelated keys ...",
                          flush=True)
                    asyncio.run(_fill(redis))
                print(f"scenarios ({'with' if filled else 'without'} filler keys) ...",
                      flush=True)
                # 25 bursts of 20 (500 messages) on the empty db, fewer with the filler keys.
                bursts = (6 if quick else 10) if filled else (6 if quick else 25)
                paired = (3 if quick else 5) if filled else (3 if quick else 10)
                asyncio.run(scenarios(servers, results, filled=filled, bursts=bursts,
                                      paired=paired))
        finally:
            for server in every:
                server.stop()
    return results


async def _fill(redis: RedisServer) -> None:
    client = aioredis.Redis(host=redis.host, port=redis.port, db=LOCK_DB)
    try:
        await fill_keys(client, FILLER_KEYS, prefix="unrelated")
    finally:
        await client.aclose() if hasattr(client, "aclose") else await client.close()


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _fmt(x: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(x) else f"{x:,.{digits}f}"


def rows(results: Results) -> list[list[str]]:
    out = []
    for (scenario, filled), by_store in results.tallies.items():
        for store, t in by_store.items():
            wall = (
                f"{_fmt(t.wall_median(), 2)} s" if scenario in ("burst", "concurrent") else "-"
            )
            out.append([
                scenario, "200k keys" if filled else "empty", store, str(t.messages), wall,
                _fmt(t.median_ms(), 1), _fmt(t.p95_ms(), 1), str(t.lost),
                str(t.out_of_order), str(t.duplicated),
            ])
    return out


HEADER = ["scenario", "db", "lock store", "messages", "wall (median)", "median ms", "p95 ms",
          "lost", "out of order", "duplicated"]


def ratios(results: Results) -> dict[str, float]:
    out: dict[str, float] = {}
    for filled in (False, True):
        key = "200k keys" if filled else "empty"
        t = results.tallies.get(("burst", filled), {})
        s = results.tallies.get(("sequential", filled), {})
        c = results.tallies.get(("concurrent", filled), {})
        if results.burst_ratios.get(filled):
            out[f"burst wall time, turnstile / rasa-redis ({key}; median of paired rounds)"] = (
                statistics.median(results.burst_ratios[filled])
            )
        if t:
            out[f"burst wall time, medians ({key})"] = (
                t["turnstile"].wall_median() / t["rasa-redis"].wall_median()
            )
        if s:
            out[f"sequential median latency ({key})"] = (
                s["turnstile"].median_ms() / s["rasa-redis"].median_ms()
            )
        if results.seq_ratios.get(filled):
            out[f"sequential latency ({key}; median of paired messages)"] = statistics.median(
                results.seq_ratios[filled]
            )
        if c:
            out[f"concurrent wall time ({key})"] = (
                c["turnstile"].wall_median() / c["rasa-redis"].wall_median()
            )
    return out


def _revision() -> str:
    """The commit the servers' Turnstile (editable install) came from, and whether what they
    load (the store library and the Rasa adapter) had edits."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "turnstile/stores", "turnstile/rasa"],
                               capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    edits = "with uncommitted changes" if dirty.strip() else "as committed"
    return f"{head.strip()} (turnstile/stores and turnstile/rasa {edits})"


def write_report(results: Results, command: str) -> str:
    r = ratios(results)
    turnstile_msgs = sum(
        by["turnstile"].messages for by in results.tallies.values() if "turnstile" in by
    )
    turnstile_bad = sum(
        by["turnstile"].lost + by["turnstile"].out_of_order
        + by["turnstile"].duplicated
        for by in results.tallies.values() if "turnstile" in by
    )
    burst_ratio = r.get(
        "burst wall time, turnstile / rasa-redis (empty; median of paired rounds)", float("nan")
    )
    seq_ratio = r.get("sequential median latency (empty)", float("nan"))
    clean = turnstile_bad == 0 and turnstile_msgs >= 500
    targets = [
        f"- 0 lost and 0 out of order in at least 500 messages: Turnstile {turnstile_bad} bad of "
        f"{turnstile_msgs} -> {'met' if clean else 'NOT met'}",
        f"- burst of 20 in at most 1/4 of the built-in's wall time: {burst_ratio:.3f} -> "
        f"{'met' if burst_ratio <= 0.25 else 'NOT met'}",
        f"- sequential median no higher than the built-in's: {seq_ratio:.3f} -> "
        f"{'met' if seq_ratio <= 1.0 else 'NOT met'}",
    ]
    startup = ", ".join(f"{k} {v:.1f} s" for k, v in results.startup.items())
    text = "\n".join([
        "# Real `rasa run` servers: Turnstile vs Rasa's built-in `redis` lock store",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC  ",
        f"Machine: {machine_note()} (the driver); servers: Rasa Open Source 3.6.21, Python 3.10, "
        "Sanic on uvloop, from `.venv-rasa-server`  ",
        f"Turnstile: {_revision()}  ",
        f"Server start-up (to `/status` with the model): {startup}",
        "",
        "Two servers per lock store, one standalone Redis shared by all four (locks in db "
        f"{LOCK_DB}, Redis tracker stores in db 0). The stores take turns within each scenario. "
        "A message is *lost* when it got no reply or is missing from the tracker (counted "
        f"once); a request is given up after {REQUEST_TIMEOUT:.0f} s, so a hung burst of the "
        "built-in store shows as that wall time and its messages as lost. *Out of order*: a "
        "user message not followed by its own reply before the next user message. The "
        "scenarios are described in the module docstring of `bench/rasa_server.py`.",
        "",
        markdown_table(HEADER, rows(results)),
        "",
        "Ratios (turnstile / rasa-redis; lower is better):",
        "",
        *[f"- {k}: {v:.3f}" for k, v in r.items()],
        "",
        SEQUENTIAL_NOTE,
        "",
        "Targets (issue 11):",
        "",
        *targets,
        "",
        "![bench](bench-rasa-server.png)",
        "",
    ])
    (DOCS / "bench-rasa-server.md").write_text(text)
    return text


def plot(results: Results) -> None:
    try:
        import matplotlib  # noqa: PLC0415 - optional: the table is the result

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    colors = {"turnstile": "#2a7ab0", "rasa-redis": "#c0504d"}
    panels: list[tuple[str, str, Callable[[Tally], float]]] = [
        ("burst", "burst of 20: wall time (s)", lambda t: t.wall_median()),
        ("sequential", "sequential: median latency (ms)", lambda t: t.median_ms()),
        ("concurrent", "50 conv x 4 @20: wall time (s)", lambda t: t.wall_median()),
    ]
    for ax, (scenario, title, value) in zip(axes, panels, strict=True):
        for i, filled in enumerate((False, True)):
            by = results.tallies.get((scenario, filled), {})
            for j, store in enumerate(STORES):
                if store in by:
                    ax.bar(i * 3 + j, value(by[store]), color=colors[store],
                           label=store if i == 0 else None)
        ax.set_xticks([0.5, 3.5], ["empty db", "200k keys"])
        if scenario == "burst":
            ax.set_yscale("log")
        ax.set_title(title)
        ax.legend()
    fig.suptitle("Rasa 3.6.21, two `rasa run` servers per lock store, one Redis")
    fig.tight_layout()
    fig.savefig(DOCS / "bench-rasa-server.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about 2 minutes)")
    args = parser.parse_args(argv)
    if not (VENV / "bin" / "python").exists():
        print(f"no Rasa server venv at {VENV}: run hack/rasa-server-venv.sh", file=sys.stderr)
        return 2
    command = "python -m bench.rasa_server" + (" --quick" if args.quick else "")
    # A plain SIGTERM would skip the finally blocks that stop the servers and Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = run(args.quick)
    print(markdown_table(HEADER, rows(results)))
    text = write_report(results, command)
    print(text.split("Ratios", 1)[1])
    plot(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
