"""Message latency through a bot's Service: Rasa 3.6.21 pods on Turnstile's lock store vs
Rasa's built-in ``redis`` lock store, same image, same Redis pod, same node, interleaved.

Needs root (it runs the node tier's cluster: ``python -m bench.rasa_pods``, or ``make bench``).
Two bots of two pods each run side by side: ``turnstile`` loads the ``lock_store`` the operator
renders from a LockStore; ``rasa-redis`` loads Rasa's own ``type: redis`` lock store on the
same Redis (another db). Each round sends, to one bot then the other (the order alternates),
``--messages`` messages on fresh conversations in two shapes:

* **one at a time**: a conversation's next message after the previous reply (no lock waits);
* **two at once**: two messages of one conversation sent together through the Service, so the
  second waits for the first's lock (on the other pod half of the time).

It reports per bot and shape the median and p95 latency (send to reply), the ratio of medians
from the same rounds, and what the trackers say (lost, doubled, handled two at once); writes
``docs/bench-rasa-pods.md`` and ``docs/bench-rasa-pods.png``. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import machine_note
from tests.platform import images
from tests.platform.cluster import Cluster
from tests.platform.rasa_bots import (
    Message,
    account,
    action_server,
    action_url,
    bot_deployment,
    bot_service,
    endpoints_configmap,
    model_configmap,
    new_session,
    post,
    service_url,
    tracker_store,
    wait_pin,
    wait_rolled,
)
from tests.platform.rasa_image import rasa_bot_image
from tests.platform.workloads import (
    apply,
    install_chart,
    lock_store,
    start_redis,
    wait_ready_pods,
    wait_store_ready,
)
from tests.rasa_server.servers import VENV as RASA_VENV
from tests.rasa_server.servers import train_bot

DOCS = Path(__file__).resolve().parents[1] / "docs"
NAMESPACE = "bench"
BOTS = ("turnstile", "rasa-redis")
SHAPES = ("one at a time", "two at once")
#: What is reported: every message one at a time, and of each pair sent at once the one answered
#: second (it waited for the other's lock: the store's hand-over is what it measures).
SERIES = ("one at a time", "two at once: the one that waited")


@dataclass
class Results:
    latencies: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    audits: dict[str, str] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    sent: dict[str, list[Message]] = field(default_factory=dict)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


async def one_round(url: str, bot: str, shape: str, messages: int, tag: int) -> list[Message]:
    sent: list[Message] = []
    async with new_session() as session:
        if shape == "one at a time":
            for i in range(messages):
                sent.append(await post(session, url, f"{bot}-{tag}-{i % 4}", f"m{tag}{i:03d}"))
        else:
            for i in range(0, messages, 2):
                sender = f"{bot}-{tag}-pair-{i}"
                sent += await asyncio.gather(
                    post(session, url, sender, f"m{tag}{i:03d}"),
                    post(session, url, sender, f"m{tag}{i + 1:03d}"),
                )
    return sent


def _series(shape: str, sent: list[Message]) -> list[float]:
    if shape == "one at a time":
        return [m.seconds for m in sent if m.answered]
    pairs = zip(sent[::2], sent[1::2], strict=True)
    return [max(a.seconds, b.seconds) for a, b in pairs if a.answered and b.answered]


async def measure(urls: dict[str, str], rounds: int, messages: int) -> Results:
    results = Results()
    for r in range(rounds):
        for shape, series in zip(SHAPES, SERIES, strict=True):
            medians: dict[str, float] = {}
            order = BOTS if r % 2 == 0 else tuple(reversed(BOTS))
            for bot in order:
                sent = await one_round(urls[bot], bot, shape, messages, r)
                results.sent.setdefault(bot, []).extend(sent)
                results.errors[bot] = results.errors.get(bot, 0) + sum(
                    1 for m in sent if not m.answered
                )
                values = _series(shape, sent)
                results.latencies.setdefault((bot, series), []).extend(values)
                medians[bot] = statistics.median(values) if values else float("nan")
            ratio = medians["rasa-redis"] / medians["turnstile"]
            results.ratios.setdefault(series, []).append(ratio)
            print(f"round {r + 1}/{rounds} {series}: " + ", ".join(
                f"{b} median {medians[b] * 1000:.0f} ms" for b in BOTS), flush=True)  # fmt: skip
    for bot in BOTS:
        counts = await account(urls[bot], results.sent[bot])
        results.audits[bot] = counts.row()
    return results


def write(results: Results, args: argparse.Namespace, seconds: float) -> None:
    lines = [
        "# Message latency through a bot's Service: Rasa 3.6.21 pods",
        "",
        f"`python -m bench.rasa_pods --rounds {args.rounds} --messages {args.messages}` "
        f"({time.strftime('%Y-%m-%d')}, {machine_note()}; {seconds:.0f} s). Two Rasa 3.6.21 "
        "pods per bot on the node tier's cluster, one Redis pod, the REST channel through each "
        "bot's Service; the bots differ only in `lock_store`: Turnstile's (rendered by the "
        "operator) or Rasa's built-in `type: redis`. Rounds alternate which bot goes first; "
        "latency is send to reply as the client sees it.",
        "",
        "| messages | bot | count | median | p95 | median ratio (rasa-redis / turnstile), "
        "median over rounds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for series in SERIES:
        ratio = statistics.median(results.ratios[series])
        for bot in BOTS:
            values = results.latencies[(bot, series)]
            lines.append(
                f"| {series} | {bot} | {len(values)} | {statistics.median(values) * 1000:.0f} ms "
                f"| {p95(values) * 1000:.0f} ms | {ratio:.2f} |"
            )
    lines += ["", "What the trackers say (every conversation audited after the run):", ""]
    lines += [f"- {bot}: {results.audits[bot]}" for bot in BOTS]
    lines += [
        "",
        "One at a time, a message never waits for a lock: the difference is the store's own "
        "cost per message. Two at once, the message answered second waited for the first's "
        "lock: Turnstile hands it over when the first is released (a wake-up through Redis); "
        "Rasa's `redis` lock store polls once a second, and its read-modify-write of the ticket "
        "list can lose a ticket (two messages handled at once; a message whose tracker update "
        "is overwritten is answered but missing from the tracker: 'lost').",
        "",
        "![latency](bench-rasa-pods.png)",
        "",
    ]
    (DOCS / "bench-rasa-pods.md").write_text("\n".join(lines))
    print("\n".join(lines))


def plot(results: Results) -> None:
    try:
        import matplotlib  # noqa: PLC0415 - optional: the table is the result

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, series in zip(axes, SERIES, strict=True):
        data = [[v * 1000 for v in results.latencies[(bot, series)]] for bot in BOTS]
        ax.boxplot(data, showfliers=False, whis=(5, 95))
        ax.set_xticks(range(1, len(BOTS) + 1), list(BOTS))
        ax.set_title(series)
        ax.set_ylabel("ms, send to reply (whiskers: p5-p95)")
    fig.tight_layout()
    fig.savefig(DOCS / "bench-rasa-pods.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--messages", type=int, default=40, help="per round, bot and shape")
    args = parser.parse_args(argv)
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        base = images.python_base_image()
        with images.DockerBuilder() as builder:
            operator = images.operator_image(base, builder)
            redis = images.redis_image(base, builder)
        bot_image = rasa_bot_image(base, RASA_VENV)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pods-")))
        model = train_bot(workdir, python=RASA_VENV / "bin" / "python")
        cluster = Cluster()
        cluster.start()
        stack.callback(cluster.stop)
        for image in (operator, redis, bot_image):
            cluster.load_image(image)
        stack.enter_context(install_chart(cluster, operator, bots=NAMESPACE))
        redis_ip = start_redis(cluster, redis, NAMESPACE)
        apply(cluster, NAMESPACE, model_configmap(model), *action_server(bot_image))
        actions = action_url(cluster, NAMESPACE)
        rollout = {"workloads": [{"kind": "Deployment", "name": "turnstile"}], "injectEnv": True}
        apply(cluster, NAMESPACE, endpoints_configmap("turnstile-endpoints", redis_ip, actions))
        apply(cluster, NAMESPACE, lock_store("locks", redis_ip, "bench", "turnstile-endpoints",
                                             rollout=rollout))  # fmt: skip
        wait_store_ready(cluster, NAMESPACE, "locks", condition="ConfigRendered")
        rasa_file = tracker_store(redis_ip, actions) + (
            f"lock_store:\n  type: redis\n  url: {redis_ip}\n  port: 6379\n  db: 3\n"
        )
        apply(cluster, NAMESPACE, {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rasa-endpoints"},
            "data": {"endpoints.yml": rasa_file, "credentials.yml": "rest:\n"},
        })  # fmt: skip
        for bot in BOTS:
            configmap = f"{bot.split('-')[0]}-endpoints"
            deployment: dict[str, Any] = bot_deployment(bot_image, configmap, name=bot,
                                                        require=bot == "turnstile")  # fmt: skip
            apply(cluster, NAMESPACE, deployment, bot_service(bot))
        wait_store_ready(cluster, NAMESPACE, "locks", timeout=300)
        wait_rolled(cluster, NAMESPACE, "turnstile", wait_pin(cluster, NAMESPACE, "turnstile"))
        wait_ready_pods(cluster, NAMESPACE, "app=rasa-redis", 2, timeout=300)
        urls = {bot: service_url(cluster, NAMESPACE, bot) for bot in BOTS}
        results = asyncio.run(measure(urls, args.rounds, args.messages))
        write(results, args, time.monotonic() - began)
        plot(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
