"""A LockStore's keyPrefix change against a real API server: the transition is rendered, the
bots roll once, an operator restart keeps the transition, and its end rolls nothing.

The Deployment controller creates one ReplicaSet per distinct pod template, so counting them
counts rollouts (as in ``tests/k8s/test_rollout.py``, whose helpers this reuses).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import yaml

from tests.k8s import test_rollout as _rollout
from tests.k8s.test_rollout import (
    BY_NAME,
    apply,
    assert_replica_sets_stay,
    deployment,
    managed_config_map,
    replica_sets,
    secret,
    settled,
    store,
    template_checksum,
    wait_for,
)
from tests.platform.control_plane import ControlPlane
from tests.platform.operator_process import OperatorProcess
from tests.platform.redis_servers import RedisServer

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

#: test_rollout.py's fixture: a namespace with the CRDs and the Secret.
rollout_ns = _rollout.rollout_ns
#: Re-checks far apart, so the transition's end is proven to come from its own timer.
RECHECK = 300.0


@pytest.fixture
def operator(control_plane: ControlPlane, rollout_ns: str) -> Iterator[OperatorProcess]:
    op = OperatorProcess(control_plane.kubeconfig, namespaces=[rollout_ns],
                         recheck_interval=RECHECK)  # fmt: skip
    op.start()
    try:
        yield op
    finally:
        op.stop()
    log = op.logs()
    assert "Traceback" not in log, f"the operator logged a traceback:\n{log[-5000:]}"

#: spec.transition.durationSeconds here: long enough to restart the operator inside it.
DURATION = 12
#: Seconds after transition_until within which the keys must be gone (1 s timer + a render).
END_BOUND = 6.0


def _locks(ns: str, redis: RedisServer, prefix: str) -> dict[str, Any]:
    body = store("LockStore", "locks", ns, redis, prefix=prefix, rollout=BY_NAME)
    body["spec"]["transition"] = {"durationSeconds": DURATION}
    return body


def _lock_section(cp: ControlPlane, ns: str) -> dict[str, Any]:
    text = (managed_config_map(cp, ns, "bot-endpoints") or {}).get("endpoints.yml") or ""
    return (yaml.safe_load(text) or {}).get("lock_store") or {}


def _status(cp: ControlPlane, ns: str) -> dict[str, Any]:
    return dict((cp.get_json("-n", ns, "lockstore", "locks") or {}).get("status") or {})


def _reasons(cp: ControlPlane, ns: str, reason: str) -> int:
    got = cp.get_json("-n", ns, "events", "--field-selector", f"reason={reason}") or {}
    return len(got.get("items", []))


def _events(cp: ControlPlane, ns: str, reason: str, count: int) -> int:
    """How many ``reason`` Events the store has once ``count`` of them are there (kopf posts
    Events from a queue of its own, so one may land a moment after the status that caused it)."""
    wait_for(f"{count} {reason} Event(s)", lambda: _reasons(cp, ns, reason) >= count or None,
             timeout=60)  # fmt: skip
    return _reasons(cp, ns, reason)


def test_key_prefix_change_transitions_rolls_once_and_ends_without_a_rollout(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer,
    operator: OperatorProcess,
) -> None:
    cp, ns = control_plane, rollout_ns
    apply(cp, deployment(ns, "bot"), _locks(ns, redis_server, "bot"))
    counts = settled(cp, ns, "bot")
    assert "transition_from" not in _lock_section(cp, ns)  # a first render has nothing to keep
    before = template_checksum(cp, ns, "bot")

    apply(cp, _locks(ns, redis_server, "botv2"))
    lock = wait_for(
        "the transition to be rendered",
        lambda: _lock_section(cp, ns).get("transition_from") and _lock_section(cp, ns),
    )
    assert lock["key_prefix"] == "botv2"
    assert lock["transition_from"]["key_prefix"] == "bot"
    assert lock["transition_from"]["password"] == "${TURNSTILE_LOCK_STORE_PASSWORD}"
    until = lock["transition_until"]
    end = datetime.fromisoformat(until.replace("Z", "+00:00"))
    status = wait_for("status.transition", lambda: _status(cp, ns).get("transition"))
    assert status["until"] == until and status["from"]["key_prefix"] == "bot"
    wait_for("the bot to roll", lambda: template_checksum(cp, ns, "bot") != before or None)
    rolled = {"bot": counts["bot"] + 1}

    # An operator restart in the middle keeps the transition as it was, and rolls nothing.
    operator.restart()
    assert len(replica_sets(cp, ns, "bot")) == rolled["bot"]
    assert _lock_section(cp, ns).get("transition_until") == until
    assert _status(cp, ns).get("transition", {}).get("until") == until
    assert datetime.now(timezone.utc) < end, "the restart outlasted the transition"

    def ended() -> bool:
        return "transition_from" not in _lock_section(cp, ns) and not _status(cp, ns).get(
            "transition"
        )

    wait_for("the transition to end", ended, timeout=DURATION + END_BOUND + 10)
    late = (datetime.now(timezone.utc) - end).total_seconds()
    assert late <= END_BOUND, f"the keys were removed {late:.1f} s after transition_until"
    assert _lock_section(cp, ns)["key_prefix"] == "botv2"
    assert_replica_sets_stay(cp, ns, rolled)  # the removal rolled nothing
    assert _events(cp, ns, "TransitionStarted", 1) == 1
    assert _events(cp, ns, "TransitionEnded", 1) == 1
    assert _events(cp, ns, "WorkloadRolled", 2) == 2  # the first checksum, then the prefix change


def test_a_password_secret_changed_with_the_lock_settings_reaches_pods_as_its_own_variable(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer,
    operator: OperatorProcess,
) -> None:
    cp, ns = control_plane, rollout_ns
    inject = {**BY_NAME, "injectEnv": True}
    first = store("LockStore", "locks", ns, redis_server, prefix="bot", rollout=inject)
    first["spec"]["transition"] = {"durationSeconds": 5}
    apply(cp, deployment(ns, "bot"), first)
    counts = settled(cp, ns, "bot")
    moved = store("LockStore", "locks", ns, redis_server, prefix="botv2", rollout=inject)
    moved["spec"]["transition"] = {"durationSeconds": 5}
    moved["spec"]["redis"]["passwordSecretRef"] = {"name": "redis-auth-2", "key": "password"}
    second = {**secret(ns, "second-password")}
    second["metadata"] = {**second["metadata"], "name": "redis-auth-2"}
    apply(cp, second, moved)

    lock = wait_for(
        "the transition to be rendered",
        lambda: _lock_section(cp, ns).get("transition_from") and _lock_section(cp, ns),
    )
    assert lock["password"] == "${TURNSTILE_LOCK_STORE_PASSWORD}"
    assert lock["transition_from"]["password"] == "${TURNSTILE_LOCK_PREVIOUS_PASSWORD}"

    def env() -> dict[str, Any]:
        got = cp.get_json("-n", ns, "deployment", "bot") or {}
        containers = got["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("valueFrom") for e in containers[0].get("env") or []}

    injected = wait_for("the previous password's variable",
                        lambda: env().get("TURNSTILE_LOCK_PREVIOUS_PASSWORD"))  # fmt: skip
    assert injected == {"secretKeyRef": {"name": "redis-auth", "key": "password",
                                         "optional": True}}  # fmt: skip
    assert env()["TURNSTILE_LOCK_STORE_PASSWORD"]["secretKeyRef"]["name"] == "redis-auth-2"
    wait_for("the transition to end", lambda: "transition_from" not in _lock_section(cp, ns),
             timeout=5 + END_BOUND + 10)  # fmt: skip
    assert_replica_sets_stay(cp, ns, {"bot": counts["bot"] + 1})  # one rollout in all


#: Long enough to see the held change stay held for QUIET s after the first rollout.
HELD_DURATION = 40


def _pin(cp: ControlPlane, ns: str) -> str | None:
    got = cp.get_json("-n", ns, "deployment", "bot") or {}
    containers = got["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in containers[0].get("env") or []}
    return env.get("TURNSTILE_EXPECT_LOCK_STORE")


def test_a_change_made_during_a_transition_is_held_then_rolled_once_onto_its_file(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer,
    operator: OperatorProcess,
) -> None:
    """bot -> botv2 starts a transition; botv3 asked for inside it is held: the file, the pods'
    pin (``TURNSTILE_EXPECT_LOCK_STORE``) and the ReplicaSets stay as they are, the status says
    ``pending``. When the transition ends, the held change starts its own, from botv2, within
    END_BOUND, and rolls the bot once, pinned to the section the file then holds."""
    cp, ns = control_plane, rollout_ns
    inject = {**BY_NAME, "injectEnv": True}

    def locks(prefix: str) -> dict[str, Any]:
        body = store("LockStore", "locks", ns, redis_server, prefix=prefix, rollout=inject)
        body["spec"]["transition"] = {"durationSeconds": HELD_DURATION}
        return body

    apply(cp, deployment(ns, "bot"), locks("bot"))
    counts = settled(cp, ns, "bot")
    apply(cp, locks("botv2"))
    first = wait_for("the first transition", lambda: _lock_section(cp, ns).get(
        "transition_until"))  # fmt: skip
    wait_for("the bot to roll", lambda: len(replica_sets(cp, ns, "bot")) == counts["bot"] + 1)
    pinned = wait_for("the pin of botv2", lambda: _pin(cp, ns))
    rolled = {"bot": counts["bot"] + 1}

    apply(cp, locks("botv3"))
    held = wait_for("the change held", lambda: _status(cp, ns).get("transition", {}).get(
        "pending"))  # fmt: skip
    assert held is True
    assert _lock_section(cp, ns)["key_prefix"] == "botv2"
    assert_replica_sets_stay(cp, ns, rolled)  # nothing rolled onto a section not in the file
    assert _pin(cp, ns) == pinned
    end = datetime.fromisoformat(first.replace("Z", "+00:00"))

    lock = wait_for("the held change rendered", lambda: (
        _lock_section(cp, ns).get("key_prefix") == "botv3" and _lock_section(cp, ns)),
        timeout=HELD_DURATION + END_BOUND + 10)  # fmt: skip
    late = (datetime.now(timezone.utc) - end).total_seconds()
    assert late <= END_BOUND, f"the held change came {late:.1f} s after transition_until"
    assert lock["transition_from"]["key_prefix"] == "botv2"
    wait_for("the status without pending", lambda: not _status(cp, ns).get(
        "transition", {}).get("pending"), timeout=END_BOUND)  # fmt: skip
    wait_for("the bot to roll", lambda: _pin(cp, ns) != pinned or None)
    assert_replica_sets_stay(cp, ns, {"bot": rolled["bot"] + 1})  # once
    assert _events(cp, ns, "TransitionPending", 1) == 1
