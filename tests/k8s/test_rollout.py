"""Config rollout against a real API server and kube-controller-manager.

The Deployment controller creates a ReplicaSet for every distinct pod template, so the number of
ReplicaSets a Deployment owns counts its rollouts exactly. Each test arranges a namespace with a
store pointing at the real Redis fixture, runs the operator as a subprocess restricted to that
namespace, waits for the first rollout to settle, then proves the number of *new* ReplicaSets
an action causes -- and, after the settle window, that no extra one appears.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.platform.control_plane import ControlPlane, free_port
from tests.platform.control_plane import wait_for as _wait_for
from tests.platform.redis_servers import RedisServer
from turnstile.operator.model.kinds import CHECKSUM_ANNOTATION

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
#: The settle window the operator runs with here (its default).
SETTLE = 1.5

#: Upper bound for the operator + controllers to react; generous for 2-core CI.
REACT = 60.0


def wait_for(what: str, probe: Callable[[], Any], timeout: float = REACT) -> Any:
    return _wait_for(what, probe, timeout)
#: How long "nothing more happens" is watched after the expected outcome.
QUIET = SETTLE + 4.0


# ------------------------------------------------------------------------------ support


class Operator:
    """The operator as a subprocess watching ``namespaces`` (also used by ``bench.rollout``).

    Uses the shared ``tests.platform.operator_process.OperatorProcess`` when it exists;
    otherwise runs ``kopf run --standalone`` on the operator's entry module itself.
    """

    def __init__(self, cp: ControlPlane, namespaces: Sequence[str]) -> None:
        self.cp = cp
        self.namespaces = list(namespaces)
        self._shared: Any = None
        self._popen: subprocess.Popen[bytes] | None = None
        # Outside the control plane's workdir, so the log survives for post-mortems.
        self._log = (
            Path(tempfile.gettempdir()) / f"turnstile-operator-{'-'.join(namespaces)[:80]}.log"
        )
        self._liveness = 0

    def start(self) -> None:
        if importlib.util.find_spec("tests.platform.operator_process") is not None:
            from tests.platform.operator_process import OperatorProcess  # noqa: PLC0415

            self._shared = OperatorProcess(self.cp.kubeconfig, namespaces=self.namespaces)
            self._shared.start()
            return
        self._liveness = free_port()
        if importlib.util.find_spec("turnstile.operator.handlers") is not None:
            # The real entry point: store handlers and rollout handlers together.
            ports = [f"--liveness-port={self._liveness}", f"--metrics-port={free_port()}"]
            argv = [sys.executable, "-m", "turnstile.cli", "operator", "--standalone", *ports]
        else:
            argv = [sys.executable, "-m", "kopf", "run", "--standalone",
                    f"--liveness=http://127.0.0.1:{self._liveness}/healthz",
                    "-m", "turnstile.operator.handlers.rollout"]  # fmt: skip
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        env = {**self.cp.env(), "PYTHONPATH": str(REPO)}
        with self._log.open("ab") as log:
            self._popen = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise AssertionError(f"operator exited at start:\n{self.log()[-3000:]}")
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{self._liveness}/healthz"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            time.sleep(0.2)
        raise AssertionError(f"operator not live after 60s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self._shared is not None:
            self._shared.stop()
            self._shared = None
            return
        popen, self._popen = self._popen, None
        if popen is None or popen.poll() is not None:
            return
        os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)

    def restart(self) -> None:
        if self._shared is not None and hasattr(self._shared, "restart"):
            self._shared.restart()
            return
        self.stop()
        self.start()

    def log(self) -> str:
        if self._shared is not None:
            for attr in ("log", "logs", "output"):
                value = getattr(self._shared, attr, None)
                if callable(value):
                    return str(value())
            return ""
        try:
            return self._log.read_text(errors="replace")
        except OSError:
            return ""


_CRDS_INSTALLED: set[str] = set()


def install_crds(cp: ControlPlane) -> None:
    """Apply ``crds/`` once per control plane and wait until the API serves them."""
    if cp.server in _CRDS_INSTALLED:
        return
    cp.kubectl("apply", "-f", str(REPO / "crds"))
    for plural in ("lockstores", "timerstores"):
        cp.kubectl("wait", "--for=condition=Established", f"crd/{plural}.turnstile.dev",
                   "--timeout=60s", timeout=90)  # fmt: skip
    _CRDS_INSTALLED.add(cp.server)


def managed_config_map(cp: ControlPlane, ns: str, name: str) -> dict[str, str] | None:
    got = cp.get_json("-n", ns, "configmap", name)
    return None if got is None else dict(got.get("data") or {})






def apply(cp: ControlPlane, *objects: dict[str, Any]) -> None:
    """One ``kubectl apply`` for all objects (one List), like a user's single manifest."""
    cp.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": list(objects)}))  # fmt: skip


def replica_sets(cp: ControlPlane, ns: str, deployment: str) -> list[str]:
    """Names of the ReplicaSets the Deployment controller created for ``deployment``."""
    items = (cp.get_json("-n", ns, "replicasets") or {}).get("items", [])
    return sorted(
        rs["metadata"]["name"]
        for rs in items
        if any(
            o.get("kind") == "Deployment" and o.get("name") == deployment
            for o in rs["metadata"].get("ownerReferences", [])
        )
    )


def template_checksum(cp: ControlPlane, ns: str, deployment: str) -> str | None:
    got = cp.get_json("-n", ns, "deployment", deployment) or {}
    annotations = got.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations")
    return (annotations or {}).get(CHECKSUM_ANNOTATION)


def assert_replica_sets_stay(cp: ControlPlane, ns: str, counts: dict[str, int]) -> None:
    """Wait for ``counts`` (Deployment -> ReplicaSets), then prove they hold for QUIET s."""
    for name, count in counts.items():
        wait_for(
            f"{name} to own {count} ReplicaSets",
            lambda name=name, count=count: len(replica_sets(cp, ns, name)) == count or None,
        )
    deadline = time.monotonic() + QUIET
    while time.monotonic() < deadline:
        now = {name: len(replica_sets(cp, ns, name)) for name in counts}
        assert now == counts, f"an extra rollout happened: {now} != {counts}"
        time.sleep(0.5)


def store(
    kind: str,
    name: str,
    ns: str,
    redis: RedisServer,
    *,
    prefix: str,
    rollout: dict[str, Any],
    config_map: str = "bot-endpoints",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "turnstile.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {
            "redis": {
                "host": redis.host,
                "port": redis.port,
                "keyPrefix": prefix,
                "passwordSecretRef": {"name": "redis-auth", "key": "password"},
            },
            "configMap": {"name": config_map},
            "rollout": rollout,
        },
    }


def secret(ns: str, password: str, **extra: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "redis-auth", "namespace": ns,
                     "labels": {"turnstile.dev/store-secret": "true"}},
        "stringData": {"password": password, **extra},
    }


def deployment(ns: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 50,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                # No kubelet: the image is never pulled.
                "spec": {"containers": [{"name": "rasa", "image": "registry.invalid/rasa:1"}]},
            },
        },
    }


BY_NAME = {"workloads": [{"kind": "Deployment", "name": "bot"}]}


@pytest.fixture
def rollout_ns(control_plane: ControlPlane, kube_namespace: str) -> str:
    install_crds(control_plane)
    apply(control_plane, secret(kube_namespace, "first-password"))
    return kube_namespace


@pytest.fixture
def operator(control_plane: ControlPlane, rollout_ns: str) -> Iterator[Operator]:
    op = Operator(control_plane, [rollout_ns])
    op.start()
    try:
        yield op
    finally:
        op.stop()
    log = op.log()
    assert "rollout sync of" not in log, f"a rollout sync failed:\n{log[-5000:]}"
    assert "Traceback" not in log, f"the operator logged a traceback:\n{log[-5000:]}"


def settled(cp: ControlPlane, ns: str, *deployments: str) -> dict[str, int]:
    """Wait for every Deployment to carry a checksum, and return its ReplicaSet count."""
    for name in deployments:
        wait_for(
            f"{name} to get a config checksum", lambda name=name: template_checksum(cp, ns, name)
        )
    counts = {name: 2 for name in deployments}  # the initial template, then the annotated one
    assert_replica_sets_stay(cp, ns, counts)
    return counts


def test_key_prefix_change_rolls_each_targeted_deployment_exactly_once(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    rollout = {**BY_NAME, "selector": {"matchLabels": {"bot.example/uses": "locks"}}}
    apply(
        cp,
        deployment(ns, "bot"),
        deployment(ns, "actions", {"bot.example/uses": "locks"}),
        deployment(ns, "web"),
        store("LockStore", "locks", ns, redis_server, prefix="one", rollout=rollout),
    )
    counts = settled(cp, ns, "bot", "actions")
    before = template_checksum(cp, ns, "bot")

    apply(cp, store("LockStore", "locks", ns, redis_server, prefix="two", rollout=rollout))

    assert_replica_sets_stay(cp, ns, {"bot": counts["bot"] + 1, "actions": counts["actions"] + 1})
    assert template_checksum(cp, ns, "bot") != before
    assert replica_sets(cp, ns, "web") and template_checksum(cp, ns, "web") is None
    status = (cp.get_json("-n", ns, "lockstore", "locks") or {}).get("status", {})
    entries = status.get("rollout", {}).get("workloads", [])
    assert [(e["kind"], e["name"]) for e in entries] == [
        ("Deployment", "actions"),
        ("Deployment", "bot"),
    ]
    assert all(e["checksum"] == template_checksum(cp, ns, e["name"]) for e in entries)
    assert all(e.get("appliedAt") for e in entries)
    def rolled_events() -> set[str]:
        events = cp.get_json("-n", ns, "events", "--field-selector", "reason=ConfigRollout") or {}
        return {e["involvedObject"]["name"] for e in events.get("items", [])}

    # Events are posted after the rollout they tell of: wait for them, bounded.
    wait_for("ConfigRollout Events", lambda: rolled_events() >= {"bot", "actions"} or None,
             timeout=30)  # fmt: skip


def test_secret_rotation_rolls_once_and_a_noop_secret_update_does_not(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    apply(
        cp,
        deployment(ns, "bot"),
        store("LockStore", "locks", ns, redis_server, prefix="one",
              rollout={**BY_NAME, "injectEnv": True}),
    )  # fmt: skip
    counts = settled(cp, ns, "bot")
    env = (cp.get_json("-n", ns, "deployment", "bot") or {})["spec"]["template"]["spec"][
        "containers"
    ][0].get("env", [])
    ref = {"secretKeyRef": {"name": "redis-auth", "key": "password"}}
    assert {"name": "TURNSTILE_LOCK_STORE_PASSWORD", "valueFrom": ref} in env

    apply(cp, secret(ns, "first-password", unrelated="added"))  # same password: no rollout
    assert_replica_sets_stay(cp, ns, counts)

    apply(cp, secret(ns, "rotated-password", unrelated="added"))
    assert_replica_sets_stay(cp, ns, {"bot": counts["bot"] + 1})


def test_operator_restarts_and_unrelated_changes_roll_nothing(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    locks = store("LockStore", "locks", ns, redis_server, prefix="one", rollout=BY_NAME)
    apply(cp, deployment(ns, "bot"), locks)
    counts = settled(cp, ns, "bot")
    checksum = template_checksum(cp, ns, "bot")

    for _ in range(3):
        operator.restart()
        time.sleep(SETTLE + 1)
    cp.kubectl("-n", ns, "label", "lockstore", "locks", "team=bots")
    cp.kubectl("-n", ns, "annotate", "lockstore", "locks", "note=unrelated")
    cp.kubectl("-n", ns, "label", "deployment", "bot", "tier=rasa")
    cp.kubectl("-n", ns, "scale", "deployment", "bot", "--replicas=2")
    cp.kubectl("-n", ns, "create", "configmap", "unrelated", "--from-literal=a=b")
    operator.restart()

    assert_replica_sets_stay(cp, ns, counts)
    assert template_checksum(cp, ns, "bot") == checksum


def test_two_stores_changed_in_one_apply_roll_once(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns

    def both(prefix: str) -> list[dict[str, Any]]:
        return [
            store("LockStore", "locks", ns, redis_server, prefix=prefix, rollout=BY_NAME),
            store("TimerStore", "timers", ns, redis_server, prefix=prefix, rollout=BY_NAME),
        ]

    apply(cp, deployment(ns, "bot"), *both("one"))
    settled(cp, ns, "bot")
    endpoints = wait_for("both sections rendered", lambda: _has_sections(cp, ns))
    # The two first renders may land in one rollout or, on a loaded machine, in two: count
    # what the first apply left once it is quiet; the claim is about the change below.
    counts = {"bot": _quiet_replica_sets(cp, ns, "bot")}

    apply(cp, *both("two"))

    assert_replica_sets_stay(cp, ns, {"bot": counts["bot"] + 1})
    assert _has_sections(cp, ns) != endpoints


def _quiet_replica_sets(cp: ControlPlane, ns: str, name: str) -> int:
    """The Deployment's ReplicaSet count once it has not changed for SETTLE + 2 s."""
    deadline = time.monotonic() + REACT
    count, since = len(replica_sets(cp, ns, name)), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = len(replica_sets(cp, ns, name))
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= SETTLE + 2.0:
            return count
    raise AssertionError(f"{name}'s ReplicaSets never settled (last {count})")


def _has_sections(cp: ControlPlane, ns: str) -> str | None:
    text = (managed_config_map(cp, ns, "bot-endpoints") or {}).get("endpoints.yml", "")
    return text if "lock_store" in text and "timer_store" in text else None


def test_selector_picks_up_a_deployment_created_later_and_forgets_a_deleted_one(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    rollout = {"selector": {"matchLabels": {"bot.example/uses": "locks"}}}
    apply(cp, store("LockStore", "locks", ns, redis_server, prefix="one", rollout=rollout))
    wait_for("the ConfigMap to be rendered", lambda: managed_config_map(cp, ns, "bot-endpoints"))

    apply(cp, deployment(ns, "late", {"bot.example/uses": "locks"}))
    counts = settled(cp, ns, "late")

    def status_names() -> list[str]:
        status = (cp.get_json("-n", ns, "lockstore", "locks") or {}).get("status", {})
        return [e["name"] for e in status.get("rollout", {}).get("workloads", [])]

    wait_for("the store status to list the late Deployment", lambda: status_names() == ["late"])
    assert_replica_sets_stay(cp, ns, counts)

    cp.kubectl("-n", ns, "delete", "deployment", "late", "--wait=true")
    wait_for("the store status to forget the deleted Deployment", lambda: status_names() == [])
    assert "Traceback" not in operator.log()


def test_change_made_while_the_operator_was_down_rolls_once_when_it_is_back(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    locks = store("LockStore", "locks", ns, redis_server, prefix="one", rollout=BY_NAME)
    apply(cp, deployment(ns, "bot"), locks)
    counts = settled(cp, ns, "bot")

    operator.stop()
    apply(cp, store("LockStore", "locks", ns, redis_server, prefix="two", rollout=BY_NAME))
    apply(cp, secret(ns, "rotated-while-down"))
    time.sleep(2)
    assert len(replica_sets(cp, ns, "bot")) == counts["bot"]  # nobody rolls while it is down
    operator.start()

    assert_replica_sets_stay(cp, ns, {"bot": counts["bot"] + 1})


def test_statefulset_is_rolled_through_its_pod_template(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    sts = deployment(ns, "worker")
    sts["kind"] = "StatefulSet"
    sts["spec"]["serviceName"] = "worker"
    del sts["spec"]["revisionHistoryLimit"]
    rollout = {"workloads": [{"kind": "StatefulSet", "name": "worker"}]}
    apply(cp, sts, store("LockStore", "locks", ns, redis_server, prefix="one", rollout=rollout))

    def revision() -> str | None:
        got = cp.get_json("-n", ns, "statefulset", "worker") or {}
        annotations = got["spec"]["template"]["metadata"].get("annotations") or {}
        return annotations.get(CHECKSUM_ANNOTATION)

    def revisions() -> int:
        return len((cp.get_json("-n", ns, "controllerrevisions") or {}).get("items", []))

    first = wait_for("the StatefulSet checksum", revision)
    wait_for("2 ControllerRevisions (as created, then annotated)", lambda: revisions() == 2)
    apply(cp, store("LockStore", "locks", ns, redis_server, prefix="two", rollout=rollout))
    wait_for("a new StatefulSet checksum", lambda: (revision() or first) != first)
    wait_for("a third ControllerRevision", lambda: revisions() == 3)
    time.sleep(QUIET)
    assert revisions() == 3


def test_a_second_operator_replica_does_not_roll_twice(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    apply(
        cp,
        deployment(ns, "bot"),
        store("LockStore", "locks", ns, redis_server, prefix="one", rollout=BY_NAME),
    )
    counts = settled(cp, ns, "bot")
    second = Operator(cp, [ns])  # both standalone: no peering to keep one of them idle
    second.start()
    try:
        assert_replica_sets_stay(cp, ns, counts)
        apply(cp, store("LockStore", "locks", ns, redis_server, prefix="two", rollout=BY_NAME))
        assert_replica_sets_stay(cp, ns, {"bot": counts["bot"] + 1})
    finally:
        second.stop()


# ------------------------------------------------------------- the launcher check (issue 12)
#
# A bot that loads Turnstile's timer store through plain ``rasa`` is reported: a Warning Event
# on the workload and on the TimerStore, and a note in the store's ``status.rollout``; a bot
# run by ``turnstile-rasa`` is not, and fixing the command clears the note.


def bot(ns: str, name: str, container: dict[str, Any]) -> dict[str, Any]:
    body = deployment(ns, name)
    body["spec"]["template"]["spec"]["containers"] = [{"name": "rasa", **container}]
    return body


def notes(cp: ControlPlane, ns: str) -> dict[str, str | None]:
    got = cp.get_json("-n", ns, "timerstore", "timers") or {}
    entries = ((got.get("status") or {}).get("rollout") or {}).get("workloads") or []
    return {e["name"]: e.get("note") for e in entries}


def warnings(cp: ControlPlane, ns: str) -> list[dict[str, Any]]:
    events = cp.get_json(
        "-n", ns, "events", "--field-selector", "reason=TimerManagerMissing"
    ) or {}
    return list(events.get("items", []))


def test_a_bot_running_plain_rasa_with_turnstiles_timer_store_is_reported(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    rollout = {"workloads": [{"kind": "Deployment", "name": "plain"},
                             {"kind": "Deployment", "name": "launched"}]}  # fmt: skip
    apply(
        cp,
        bot(ns, "plain", {"image": "rasa/rasa-pro:3.21.0", "args": ["run"]}),
        bot(ns, "launched", {"image": "rasa/rasa-pro:3.21.0", "command": ["turnstile-rasa"],
                             "args": ["run"]}),
        store("TimerStore", "timers", ns, redis_server, prefix="bot", rollout=rollout),
    )
    seen = wait_for(
        "a note on the plain bot",
        lambda: (n := notes(cp, ns)).get("plain") and "launched" in n and n,
    )
    assert seen["launched"] is None
    assert "turnstile-rasa" in seen["plain"] and "TimerStore/timers" in seen["plain"]
    events = wait_for("the Warning Events", lambda: len(warnings(cp, ns)) >= 2 and warnings(cp, ns))
    assert {(e["involvedObject"]["kind"], e["involvedObject"]["name"]) for e in events} == {
        ("Deployment", "plain"), ("TimerStore", "timers")
    }
    assert all(e["type"] == "Warning" for e in events)
    assert "pending session timers are lost" in events[0]["message"]

    # The user fixes the command: the note goes (the Events stay as history).
    cp.kubectl("-n", ns, "patch", "deployment", "plain", "--type=json", "-p", json.dumps([
        {"op": "add", "path": "/spec/template/spec/containers/0/command",
         "value": ["turnstile-rasa"]},
    ]))  # fmt: skip
    wait_for("the note to clear", lambda: notes(cp, ns).get("plain", "x") is None)
    assert len({e["involvedObject"]["name"] for e in warnings(cp, ns)}) == 2  # no new ones


# ------------------------------------------------ never roll onto a broken file (issue 16)


def unparseable_events(cp: ControlPlane, ns: str) -> list[dict[str, Any]]:
    events = cp.get_json(
        "-n", ns, "events", "--field-selector", "reason=EndpointsUnparseable"
    ) or {}
    return list(events.get("items", []))


def test_a_hand_edit_that_breaks_endpoints_yml_rolls_nothing_until_it_is_fixed(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    apply(
        cp,
        deployment(ns, "bot"),
        store("LockStore", "locks", ns, redis_server, prefix="one", rollout=BY_NAME),
    )
    counts = settled(cp, ns, "bot")
    running = template_checksum(cp, ns, "bot")
    good = (managed_config_map(cp, ns, "bot-endpoints") or {})["endpoints.yml"]

    def set_file(text: str) -> None:
        cp.kubectl("-n", ns, "patch", "configmap", "bot-endpoints", "--type=merge",
                   "-p", json.dumps({"data": {"endpoints.yml": text}}))  # fmt: skip

    set_file(good + "action_endpoint: {url: http://actions\n")  # an unclosed flow mapping

    events = wait_for("an EndpointsUnparseable Warning", lambda: unparseable_events(cp, ns))
    on_bot = [e for e in events if e["involvedObject"]["kind"] == "Deployment"]
    assert on_bot and on_bot[0]["involvedObject"]["name"] == "bot"
    assert on_bot[0]["type"] == "Warning"
    assert "bot-endpoints/endpoints.yml is not valid YAML at line" in on_bot[0]["message"]

    def held() -> str | None:
        status = (cp.get_json("-n", ns, "lockstore", "locks") or {}).get("status", {})
        entries = (status.get("rollout") or {}).get("workloads") or []
        return next((e.get("held") for e in entries if e["name"] == "bot"), None)

    assert "not rolling" in wait_for("the hold in the store's status", held)
    assert_replica_sets_stay(cp, ns, counts)  # no rollout onto the broken file
    assert template_checksum(cp, ns, "bot") == running

    set_file(good + "action_endpoint: {url: http://actions}\n")  # fixed: one rollout
    assert_replica_sets_stay(cp, ns, {"bot": counts["bot"] + 1})
    assert template_checksum(cp, ns, "bot") != running
    wait_for("the hold to clear", lambda: held() is None)
    assert len([e for e in unparseable_events(cp, ns)
                if e["involvedObject"]["kind"] == "Deployment"]) == 1  # fmt: skip


# ------------------------------------------------- a bad selector affects only its store


def _crds_without_selector_rules() -> str:
    """``crds/`` as a CRD from before the selector rules: bad selectors get in."""
    import yaml  # noqa: PLC0415

    docs = []
    for path in sorted((REPO / "crds").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for version in doc["spec"]["versions"]:
            rollout = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
                "rollout"
            ]
            items = rollout["properties"]["selector"]["properties"]["matchExpressions"]["items"]
            items.pop("x-kubernetes-validations", None)
            items["properties"]["key"].pop("x-kubernetes-validations", None)
        docs.append(doc)
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


def test_a_store_with_an_invalid_selector_stops_only_its_own_rollouts(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    bad_selector = {"matchExpressions": [{"key": "bot.example/uses", "operator": "In"}]}
    cp.kubectl("apply", "-f", "-", stdin=_crds_without_selector_rules())
    try:
        apply(
            cp,
            deployment(ns, "bot"),
            deployment(ns, "other", {"bot.example/uses": "timers"}),
            store("LockStore", "locks", ns, redis_server, prefix="one", rollout=BY_NAME),
            store("TimerStore", "timers", ns, redis_server, prefix="one",
                  config_map="other-endpoints",
                  rollout={"workloads": [{"kind": "Deployment", "name": "other"}],
                           "selector": bad_selector}),
        )  # fmt: skip

        def rollout_condition() -> dict[str, Any] | None:
            got = cp.get_json("-n", ns, "timerstore", "timers") or {}
            conditions = (got.get("status") or {}).get("conditions") or []
            by_type = {c["type"]: c for c in conditions}
            return by_type if "Rollout" in by_type else None

        conditions = wait_for("the timers store to report its selector", rollout_condition)
        assert conditions["Rollout"]["status"] == "False"
        assert conditions["Rollout"]["reason"] == "InvalidSelector"
        assert conditions["Ready"]["status"] == "False"
        assert conditions["Ready"]["reason"] == "InvalidSelector", conditions
        message = conditions["Rollout"]["message"]
        assert "spec.rollout.selector.matchExpressions[0].values" in message
        assert "In and NotIn need at least one value" in message

        counts = settled(cp, ns, "bot")  # the good store's workload rolls
        apply(cp, store("LockStore", "locks", ns, redis_server, prefix="two", rollout=BY_NAME))
        assert_replica_sets_stay(cp, ns, {"bot": counts["bot"] + 1, "other": 1})
        assert template_checksum(cp, ns, "other") is None  # the bad store's: untouched
        invalid = cp.get_json("-n", ns, "events", "--field-selector", "reason=RolloutInvalid")
        assert any(e["involvedObject"]["name"] == "timers" for e in (invalid or {})["items"])
    finally:
        cp.kubectl("-n", ns, "delete", "timerstore", "timers", "--wait=false", check=False)
        cp.kubectl("apply", "-f", str(REPO / "crds"))


#: A missing workload is said once, then watched for this long (several 2 s re-checks) to
#: prove no Event is repeated per re-check.
MISSING_WATCH = 3 * 2.0 + SETTLE


def test_a_named_workload_that_does_not_exist_is_a_condition_and_one_event_until_it_appears(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    typo = {"workloads": [{"kind": "Deployment", "name": "bot"}]}
    apply(cp, store("LockStore", "locks", ns, redis_server, prefix="one", rollout=typo))

    def rollout_condition(status: str) -> dict[str, Any] | None:
        got = cp.get_json("-n", ns, "lockstore", "locks") or {}
        by_type = {c["type"]: c for c in (got.get("status") or {}).get("conditions") or []}
        found = by_type.get("Rollout")
        return found if found and found["status"] == status else None

    missing = wait_for("Rollout=False", lambda: rollout_condition("False"))
    assert missing["reason"] == "WorkloadNotFound", missing
    assert f"Deployment/bot, which does not exist in namespace {ns}" in missing["message"]

    def warnings() -> list[dict[str, Any]]:
        got = cp.get_json("-n", ns, "events", "--field-selector",
                          "involvedObject.name=locks,reason=WorkloadNotFound") or {}
        return list(got.get("items") or [])

    wait_for("the WorkloadNotFound Event", lambda: warnings() or None)
    time.sleep(MISSING_WATCH)  # re-checks run every 2 s meanwhile: none may repeat it
    said = warnings()
    assert len(said) == 1 and said[0].get("count", 1) == 1, said
    assert said[0]["type"] == "Warning" and "Deployment/bot" in said[0]["message"]

    created = time.monotonic()
    apply(cp, deployment(ns, "bot"))
    wait_for("Rollout=True once the Deployment exists", lambda: rollout_condition("True"))
    cleared = time.monotonic() - created
    settled(cp, ns, "bot")
    rolled = time.monotonic() - created
    print(f"\nmissing workload: Rollout=True {cleared:.1f} s after the Deployment was created;"
          f" rolled and settled within {rolled:.1f} s")
    assert cleared < 15.0, cleared  # an event away (a re-check is 2 s here; 30 s by default)
    assert len(warnings()) == 1


# --------------------------------------------------------- drift: hand edits, hand-set checksums

#: The operator here re-checks every 2 s (OperatorProcess' default); a hand-set checksum is
#: put back within one re-check interval plus the settle window; this allows generous slack.
RESYNC_BOUND = 2.0 + SETTLE + 6.5


def test_a_hand_edit_of_the_stores_section_is_reverted_without_a_rollout(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    apply(
        cp,
        deployment(ns, "bot"),
        store("LockStore", "locks", ns, redis_server, prefix="one", rollout=BY_NAME),
    )
    counts = settled(cp, ns, "bot")
    running = template_checksum(cp, ns, "bot")
    good = (managed_config_map(cp, ns, "bot-endpoints") or {})["endpoints.yml"]
    assert "key_prefix: one" in good
    edited = good.replace("key_prefix: one", "key_prefix: edited-by-hand")
    started = time.monotonic()
    cp.kubectl("-n", ns, "patch", "configmap", "bot-endpoints", "--type=merge",
               "-p", json.dumps({"data": {"endpoints.yml": edited}}))  # fmt: skip

    def reverted() -> bool | None:
        now = (managed_config_map(cp, ns, "bot-endpoints") or {}).get("endpoints.yml")
        return now == good or None

    wait_for("the hand edit to be reverted", reverted)
    print(f"hand edit reverted after {time.monotonic() - started:.2f} s")
    assert_replica_sets_stay(cp, ns, counts)  # 0 rollouts for the edit and its revert
    assert template_checksum(cp, ns, "bot") == running
    # Said in the log by whichever put it back first: the rollout sync or the store's re-check.
    assert "put back" in operator.log()


def test_a_hand_set_checksum_annotation_is_put_back(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    apply(
        cp,
        deployment(ns, "bot"),
        store("LockStore", "locks", ns, redis_server, prefix="one", rollout=BY_NAME),
    )
    settled(cp, ns, "bot")
    running = template_checksum(cp, ns, "bot")
    forged = "sha256:" + "0" * 64
    started = time.monotonic()
    patch = {"spec": {"template": {"metadata": {"annotations": {CHECKSUM_ANNOTATION: forged}}}}}
    # What the API server stored for this patch (its reply), not a later read: the operator may
    # already have put the checksum back by then (a CI run read it back reverted).
    reply = cp.kubectl("-n", ns, "patch", "deployment", "bot", "--type=merge", "-p",
                       json.dumps(patch), "-o", "json").stdout  # fmt: skip
    stored = json.loads(reply)["spec"]["template"]["metadata"]["annotations"]
    assert stored[CHECKSUM_ANNOTATION] == forged

    def put_back() -> bool | None:
        return template_checksum(cp, ns, "bot") == running or None

    wait_for("the checksum to be put back", put_back, timeout=RESYNC_BOUND)
    print(f"hand-set checksum put back after {time.monotonic() - started:.2f} s")
