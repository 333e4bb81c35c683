"""A bot that loads Turnstile's timer store through plain ``rasa`` is reported, on the real API
server: a Warning Event on the workload and on the TimerStore, and a note in the store's
``status.rollout``; a bot run by ``turnstile-rasa`` is not, and fixing the command clears it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.k8s.test_rollout import (  # noqa: F401 - fixtures used by name
    Operator,
    apply,
    deployment,
    operator,
    rollout_ns,
    store,
    wait_for,
)
from tests.platform.control_plane import ControlPlane
from tests.platform.redis_servers import RedisServer

pytestmark = [pytest.mark.k8s, pytest.mark.slow]


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
                             "args": ["run"]}),  # fmt: skip
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
