"""Rasa Pro timer pods on the node: timers through a rollout and a pod killed with grace 0.

Each pod of a 3-replica Deployment runs ``tests/rasa/timer_pods.py`` in the Rasa Pro 3.21 image
(:func:`tests.platform.rasa_image.rasa_pro_timer_image`; Rasa Pro's ``rasa run`` needs a
licence): Rasa Pro's own ``AvailableEndpoints.read_endpoints`` on the ``endpoints.yml`` the
operator renders for a ``TimerStore`` (mounted from its ConfigMap; the Redis password from the
env the operator injects), Rasa's ``create_timer_manager`` with ``turnstile.rasa.install()``,
``set_callback`` and ``start()``, and ``stop()`` on SIGTERM. Each callback stands in for
Rasa's ``handle_session_timeout`` and takes :data:`CALLBACK` seconds (a slow tracker store), so
a stopping or killed pod always has callbacks running. Every step is appended to one file in a
hostPath directory the pods share (one node), with the pod's name and the time.

The test schedules the timers as Rasa does on each message (``store_timer(sender_id,
session_id, now + session timeout)``, :meth:`RasaTimerManager.schedule_timer`), through the
store library from this host, against the same Redis and key prefix as the pods: the
``timer_store`` section the operator rendered.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.platform import workloads
from tests.platform.cluster import Cluster
from tests.platform.control_plane import REPO_ROOT, wait_for
from tests.platform.images import Image
from tests.platform.node_fixtures import FIGURES, NodeImages
from tests.platform.workloads import apply, is_ready, password_secret, pods, wait_store_ready
from tests.rasa.timer_pods import Fired, Recorder
from turnstile.stores import RedisTimerStore
from turnstile.stores.timers.api import DEFAULT_LEASE

#: Printed after the run (``Rasa Pro timer pods``) and quoted in the docs: one row per case.
ROWS: dict[str, str] = {}

HARNESS = REPO_ROOT / "tests" / "rasa" / "timer_pods.py"
APP = "timers"
STORE = "bot-timers"
CONFIGMAP = "timer-endpoints"
PASSWORD_ENV = "TURNSTILE_TIMER_STORE_PASSWORD"
PIN_ENV = "TURNSTILE_EXPECT_TIMER_STORE"
RECORDS = "/records"
#: Seconds each callback runs.
CALLBACK = 6.0
#: A conversation's session timer is due this long after its message; a new conversation
#: arrives every ARRIVAL seconds.
SESSION_TIMEOUT, ARRIVAL = 3.0, 0.25
#: The TimerStore's pollInterval before and after the change that rolls the pods.
POLL, ROLLED_POLL = 1.0, 0.5
#: A TimerStore has no lease setting: the pods run with the store's default.
LEASE = DEFAULT_LEASE
#: docs/timers.md: a timer whose pod died holding it fires elsewhere at most
#: lease + 2 x poll_interval + the callback time the dead pod spent on it after it was due
#: (claimed within one poll, its lease renewed while the callback ran, due again when the lease
#: ran out, claimed by the next poll). SLACK: a claim's round trips and a loaded 2-core node.
SLACK = 2.0
BOUND = LEASE + 2 * POLL + CALLBACK + SLACK


@dataclass(frozen=True)
class TimerStack:
    cluster: Cluster
    ns: str
    redis_ip: str
    password: str
    records: Recorder

    def pods(self) -> list[dict[str, Any]]:
        return pods(self.cluster, self.ns, f"app={APP}")


def timer_store(redis_ip: str, poll: float) -> dict[str, Any]:
    """The TimerStore: the LockStore's sibling, with the same spec and a ``pollInterval``."""
    store = workloads.lock_store(
        STORE, redis_ip, "timerpods", CONFIGMAP, password_secret="redis-auth", pollInterval=poll,
        rollout={"workloads": [{"kind": "Deployment", "name": APP}], "injectEnv": True},
    )  # fmt: skip
    return {**store, "kind": "TimerStore"}


def harness_configmap() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "timer-harness"},
        "data": {"timer_pods.py": HARNESS.read_text()},
    }


def harness_deployment(image: Image, records: Path) -> dict[str, Any]:
    """Three harness pods; Ready once their timer manager has started."""
    container = {
        "name": "timers",
        "image": image.name,
        "imagePullPolicy": "Never",
        "args": ["/app/harness/timer_pods.py", "/app/config/endpoints.yml",
                 f"{RECORDS}/fired.log", "$(POD_NAME)", "0", "0", str(CALLBACK)],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "TURNSTILE_REQUIRE_SECTIONS", "value": "timer_store"},
            {"name": "TURNSTILE_HARNESS_READY", "value": "/tmp/timer-manager-started"},
        ],
        "readinessProbe": {
            "exec": {"command": ["test", "-e", "/tmp/timer-manager-started"]},
            "periodSeconds": 1, "timeoutSeconds": 5, "failureThreshold": 3,
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/app/config"},
            {"name": "harness", "mountPath": "/app/harness"},
            {"name": "records", "mountPath": RECORDS},
        ],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": APP}},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {
                    # stop() waits up to 10 s (stop_timeout) for the callbacks running.
                    "terminationGracePeriodSeconds": 20,
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": CONFIGMAP}},
                        {"name": "harness", "configMap": {"name": "timer-harness"}},
                        {"name": "records",
                         "hostPath": {"path": str(records), "type": "Directory"}},
                    ],
                },
            },
        },
    }  # fmt: skip


def pin(pod: dict[str, Any]) -> str | None:
    for env in pod["spec"]["containers"][0].get("env") or []:
        if env["name"] == PIN_ENV:
            return str(env.get("value"))
    return None


def template_pin(cluster: Cluster, ns: str) -> str | None:
    found = cluster.control_plane.get_json("deployment", APP, "-n", ns)
    return pin((found or {}).get("spec", {}).get("template", {"spec": {"containers": [{}]}}))


def wait_pods_on(stack: TimerStack, want: str, *, not_before: Collection[str] = ()
                 ) -> list[dict[str, Any]]:  # fmt: skip
    """Exactly three Ready harness pods, all on fingerprint ``want``, none in ``not_before``."""

    def rolled() -> list[dict[str, Any]] | None:
        found = stack.pods()
        if len(found) == 3 and all(is_ready(p) and pin(p) == want
                                   and p["metadata"]["uid"] not in not_before for p in found):
            return found
        return None

    try:
        return wait_for(f"3 harness pods on {want}", rolled, timeout=240, interval=0.5)
    except Exception:
        print(stack.cluster.kubectl("-n", stack.ns, "get", "pods,rs,events", "-o", "wide",
                                    check=False).stdout)  # fmt: skip
        raise


@pytest.fixture(scope="module")
def stack(node_cluster: Cluster, node_images: NodeImages, rasa_pro_timer_image: Image
          ) -> Iterator[TimerStack]:  # fmt: skip
    records = Path(tempfile.mkdtemp(prefix="turnstile-timer-pods-", dir="/var/tmp"))
    records.chmod(0o777)  # the pods run as uid 1001
    try:
        with workloads.install_chart(node_cluster, node_images.operator) as release:
            ns, password = release.bots, "pw-" + uuid.uuid4().hex
            password_secret(node_cluster, ns, "redis-auth", password)
            redis_ip = workloads.start_redis(
                node_cluster, node_images.redis, ns, password_secret="redis-auth"
            )
            stack = TimerStack(node_cluster, ns, redis_ip, password,
                               Recorder(records / "fired.log"))  # fmt: skip
            began = time.monotonic()
            apply(node_cluster, ns, timer_store(redis_ip, POLL), harness_configmap())
            wait_store_ready(node_cluster, ns, STORE, condition="ConfigRendered",
                             kind="timerstore")  # fmt: skip
            apply(node_cluster, ns, harness_deployment(rasa_pro_timer_image, records))
            wait_store_ready(node_cluster, ns, STORE, timeout=180, kind="timerstore")
            want = wait_for("the harness template on the section's fingerprint",
                            lambda: template_pin(node_cluster, ns), timeout=120)  # fmt: skip
            wait_pods_on(stack, str(want))
            FIGURES["TimerStore applied -> 3 Rasa Pro timer pods Ready"] = (
                time.monotonic() - began
            )
            yield stack
    finally:
        shutil.rmtree(records, ignore_errors=True)


def rendered_store(stack: TimerStack) -> RedisTimerStore:
    """The store library on the section the operator rendered (host, port, prefix, db), with
    the password the pods get from their env; the ClusterIP reaches Redis from this host."""
    configmap = stack.cluster.control_plane.get_json("configmap", CONFIGMAP, "-n", stack.ns)
    assert configmap is not None
    section = dict(yaml.safe_load(configmap["data"]["endpoints.yml"])["timer_store"])
    assert section.pop("type") == "turnstile.rasa.TimerStore", section
    assert section["password"] == f"${{{PASSWORD_ENV}}}", section  # a reference, never a value
    section["password"] = stack.password
    return RedisTimerStore.from_kwargs(section)


def schedule(stack: TimerStack, tag: str, due: list[float]) -> dict[str, float]:
    """One session timer per conversation ``<tag>-<i>``, due at ``due[i]``; sender -> due."""

    async def run() -> dict[str, float]:
        store = rendered_store(stack)
        try:
            timers = {f"{tag}-{i}": when for i, when in enumerate(due)}
            for sender, when in timers.items():
                await store.store_timer(sender, "s1", when)
            return timers
        finally:
            await store.aclose()

    return asyncio.run(run())


class Conversations:
    """New conversations arriving every :data:`ARRIVAL` seconds until stopped, each setting
    its session timer (due :data:`SESSION_TIMEOUT` seconds later), as Rasa does on a message."""

    def __init__(self, stack: TimerStack, tag: str) -> None:
        self.stack, self.tag = stack, tag
        self.scheduled: dict[str, float] = {}
        self._stop = asyncio.Event()

    async def run(self) -> None:
        store = rendered_store(self.stack)
        try:
            for i in range(10_000):  # bounded; stopped long before
                if self._stop.is_set():
                    return
                sender, when = f"{self.tag}-{i}", time.time() + SESSION_TIMEOUT
                await store.store_timer(sender, "s1", when)
                self.scheduled[sender] = when
                await asyncio.sleep(ARRIVAL)
        finally:
            await store.aclose()

    def stop(self) -> None:
        self._stop.set()


@dataclass(frozen=True)
class Outcome:
    """What became of the timers of one case, from the pods' records."""

    scheduled: dict[str, float]
    done: list[Fired]  # callbacks that ran to the end
    begun: list[Fired]

    @property
    def counts(self) -> Counter[str]:
        return Counter(f.sender_id for f in self.done)

    @property
    def twice(self) -> list[str]:
        return sorted(s for s, n in self.counts.items() if n > 1)

    @property
    def missed(self) -> list[str]:
        return sorted(set(self.scheduled) - set(self.counts))

    def lateness(self) -> dict[str, float]:
        """Per timer: when its completed firing began (Rasa's callback called), after due."""
        began = {(f.pod, f.sender_id): f.at for f in self.begun}
        return {f.sender_id: began[(f.pod, f.sender_id)] - self.scheduled[f.sender_id]
                for f in self.done}  # fmt: skip

    def row(self) -> str:
        late = self.lateness()
        return (
            f"timers scheduled {len(self.scheduled)}, fired {len(self.counts)}, "
            f"fired twice {len(self.twice)}, missed {len(self.missed)}, "
            f"latest lateness {max(late.values(), default=0.0):.1f} s"
        )


def pending(stack: TimerStack, senders: Collection[str]) -> list[str]:
    """The timers Redis still holds (due, or leased to a pod whose callback has not been
    acknowledged): only these could still fire, once or again."""

    async def run() -> list[str]:
        store = rendered_store(stack)
        try:
            return [s for s in senders if await store.get_timer(s) is not None]
        finally:
            await store.aclose()

    return asyncio.run(run())


def collect(stack: TimerStack, scheduled: dict[str, float]) -> Outcome:
    """Wait (bounded) until every timer's callback finished and Redis holds none of them: each
    acknowledged, none left to fire again (a callback that finished on a killed pod without its
    acknowledgement stays leased and fires again when the lease runs out)."""
    deadline = max(scheduled.values()) + BOUND + CALLBACK + 30

    def settled() -> bool:
        return set(scheduled) <= set(stack.records.counts("done")) and not pending(
            stack, scheduled
        )

    wait_for("every timer fired and acknowledged", settled,
             timeout=max(deadline - time.time(), 1), interval=1)  # fmt: skip
    time.sleep(3 * POLL)  # a record written as the last acknowledgement went out
    return Outcome(
        scheduled,
        [f for f in stack.records.read("done") if f.sender_id in scheduled],
        [f for f in stack.records.read("begin") if f.sender_id in scheduled],
    )


def check(outcome: Outcome) -> None:
    assert outcome.missed == [], outcome.missed
    assert outcome.twice == [], {s: outcome.counts[s] for s in outcome.twice}
    late = outcome.lateness()
    assert max(late.values()) <= BOUND, sorted(late.items(), key=lambda kv: -kv[1])[:5]
    for fired in outcome.done:  # Rasa's arguments, as the timer was stored
        assert (fired.session_id, fired.scheduled_time) == (
            "s1", outcome.scheduled[fired.sender_id]), fired  # fmt: skip


def test_a_timerstore_change_rolls_the_pods_while_timers_come_due_and_each_fires_once(
    stack: TimerStack,
) -> None:
    """pollInterval 1 -> 0.5 s while conversations keep setting session timers (3 s): the
    operator rolls the 3 pods (SIGTERM, Rasa's stop(), new pods start); every timer fires once,
    old pods fire the first, new pods the last, none later than the documented bound."""
    cluster, ns = stack.cluster, stack.ns
    old = {p["metadata"]["uid"]: p["metadata"]["name"] for p in stack.pods()}
    old_pin = pin(stack.pods()[0])

    def new_pin() -> str | None:
        found = template_pin(cluster, ns)
        return found if found != old_pin else None

    async def run() -> tuple[Conversations, float, float, list[dict[str, Any]]]:
        conversations = Conversations(stack, "roll")
        task = asyncio.create_task(conversations.run())
        await asyncio.sleep(SESSION_TIMEOUT + 2)  # timers coming due on the old pods
        changed = time.time()
        await asyncio.to_thread(apply, cluster, ns, timer_store(stack.redis_ip, ROLLED_POLL))
        want = await asyncio.to_thread(wait_for, "the template on the new fingerprint", new_pin,
                                       120)  # fmt: skip
        new = await asyncio.to_thread(wait_pods_on, stack, str(want), not_before=set(old))
        rolled = time.time()
        await asyncio.sleep(SESSION_TIMEOUT + 2)  # timers set and due on the new pods alone
        conversations.stop()
        await asyncio.wait_for(task, 60)
        return conversations, changed, rolled, new

    conversations, changed, rolled, new = asyncio.run(run())
    scheduled = conversations.scheduled
    outcome = collect(stack, scheduled)
    by_pod = Counter(f.pod for f in outcome.done)
    old_names, new_names = set(old.values()), {p["metadata"]["name"] for p in new}
    during = sum(1 for t in scheduled.values() if changed <= t <= rolled)
    ROWS["TimerStore change rolls the 3 pods"] = (
        f"{outcome.row()}; due during the rollout {during}; fired by old pods "
        f"{sum(n for p, n in by_pod.items() if p in old_names)}, by new pods "
        f"{sum(n for p, n in by_pod.items() if p in new_names)}; change -> 3 new pods Ready "
        f"{rolled - changed:.1f} s"
    )
    FIGURES["TimerStore change -> 3 new timer pods Ready"] = rolled - changed
    check(outcome)
    assert during > 0, (changed, rolled)
    assert set(by_pod) & old_names, by_pod
    assert set(by_pod) & new_names, by_pod
    assert set(by_pod) <= old_names | new_names, by_pod


def test_a_pod_killed_with_grace_0_mid_callback_leaves_its_timers_to_the_others_in_bound(
    stack: TimerStack,
) -> None:
    """30 timers due at once (fewer than a pod's 32 callback slots, so none waits for a slot)
    are claimed by one pod's poll; that pod is deleted with ``--grace-period=0 --force`` (the
    kubelet's SIGTERM, then SIGKILL 2 s later) while its 6 s callbacks run: each of its timers
    fires once on another pod after its lease ran out, within lease + 2 x poll + callback."""
    cluster, ns = stack.cluster, stack.ns
    due = time.time() + 4
    scheduled = schedule(stack, "kill", [due] * 30)

    def claimer() -> str | None:
        begun = Counter(f.pod for f in stack.records.read("begin") if f.sender_id in scheduled)
        return begun.most_common(1)[0][0] if begun else None

    victim = str(wait_for("a pod firing the burst", claimer, timeout=60, interval=0.05))
    killed = time.time()
    cluster.kubectl("-n", ns, "delete", "pod", victim, "--grace-period=0", "--force")
    outcome = collect(stack, scheduled)
    begun_on_victim = {f.sender_id for f in outcome.begun if f.pod == victim}
    done_on_victim = {f.sender_id for f in outcome.done if f.pod == victim}
    late = outcome.lateness()
    cut = begun_on_victim - done_on_victim
    ROWS["a pod killed with grace 0 mid-callback"] = (
        f"{outcome.row()}; begun on the killed pod {len(begun_on_victim)}, finished there "
        f"{len(done_on_victim)}; its cut timers fired elsewhere "
        f"{min((late[s] for s in cut), default=0):.1f}-{max((late[s] for s in cut), default=0):.1f}"
        f" s late (bound {BOUND:.0f} s)"
    )
    FIGURES["killed pod's timers: latest lateness"] = max(late.values())
    check(outcome)
    assert cut, "the pod was killed with none of its callbacks running"
    assert all(f.at >= killed for f in outcome.done if f.sender_id in cut and f.pod != victim)
    # The Deployment replaced the pod; three run again.
    wait_for("3 Ready harness pods", lambda: len([p for p in stack.pods() if is_ready(p)]) == 3,
             timeout=120)  # fmt: skip
