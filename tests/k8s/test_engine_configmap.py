"""A store with ``spec.configMap.format: integrations`` against a real API server and operator.

A Rasa Pro engine project reads its stores from ``integrations.yml``. The operator writes the
store's section into the bot team's own ``integrations.yml`` key (every other byte kept), says
so in ``status.configMap``, and with ``injectEnv`` puts ``TURNSTILE_STORES_FILE=integrations``
next to the section's fingerprint on the bots, so ``turnstile-rasa`` checks the file Rasa reads.
A writer that puts the key back without the section (a ``helm upgrade``, a ``kubectl apply``)
is undone without a rollout.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from tests.k8s import test_rollout
from tests.k8s.test_rollout import (
    BY_NAME,
    Operator,
    apply,
    assert_replica_sets_stay,
    deployment,
    settled,
    store,
    wait_for,
)
from tests.platform.control_plane import ControlPlane
from tests.platform.redis_servers import RedisServer
from turnstile.stores.fingerprint import section_fingerprint

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

#: The rollout tier's fixtures: a namespace with the CRDs and the Secret, the operator in it.
rollout_ns = test_rollout.rollout_ns
operator = test_rollout.operator

#: The bot team's integrations.yml, as their chart or pipeline writes it.
USER_FILE = """\
# integrations.yml of the bot team
model_groups:
  - id: default
    models:
      - provider: openai
        model: gpt-4o
        api_key: ${OPENAI_API_KEY}
tracker_store:
  type: redis
  host: "${TRACKER_HOST}"
  port: 06379
"""


def _user_configmap(ns: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "bot-integrations", "namespace": ns},
            "data": {"integrations.yml": USER_FILE}}  # fmt: skip


def _engine_store(ns: str, redis: RedisServer) -> dict[str, Any]:
    body = store("LockStore", "locks", ns, redis, prefix="engine",
                 rollout={**BY_NAME, "injectEnv": True})  # fmt: skip
    body["spec"]["configMap"] = {"name": "bot-integrations", "format": "integrations"}
    return body


def test_the_section_goes_into_integrations_yml_and_the_bots_check_that_file(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns
    apply(cp, _user_configmap(ns), deployment(ns, "bot"), _engine_store(ns, redis_server))
    counts = settled(cp, ns, "bot")

    data = (cp.get_json("-n", ns, "configmap", "bot-integrations") or {})["data"]
    assert set(data) == {"integrations.yml"}  # no endpoints.yml appears
    text = data["integrations.yml"]
    assert text.startswith(USER_FILE)  # the team's sections, byte for byte
    section = yaml.safe_load(text)["lock_store"]
    assert section["type"] == "turnstile.rasa.TicketLockStore"

    status = (cp.get_json("-n", ns, "lockstore", "locks") or {})["status"]
    assert status["configMap"] == {"name": "bot-integrations", "key": "integrations.yml",
                                   "format": "integrations", "section": "lock_store",
                                   "owned": False}  # fmt: skip
    assert {"name": "TURNSTILE_STORES_FILE", "value": "integrations"} in status["env"]
    env = (cp.get_json("-n", ns, "deployment", "bot") or {})["spec"]["template"]["spec"][
        "containers"][0]["env"]  # fmt: skip
    assert {"name": "TURNSTILE_STORES_FILE", "value": "integrations"} in env
    assert {"name": "TURNSTILE_EXPECT_LOCK_STORE",
            "value": section_fingerprint(section)} in env  # fmt: skip

    # A helm upgrade writes the team's file back without Turnstile's section.
    started = time.monotonic()
    apply(cp, _user_configmap(ns))
    wait_for(
        "the operator to put lock_store back",
        lambda: "lock_store:" in ((cp.get_json("-n", ns, "configmap", "bot-integrations")
                                   or {}).get("data") or {}).get("integrations.yml", ""),
    )  # fmt: skip
    print(f"lock_store back in integrations.yml {time.monotonic() - started:.1f} s after")
    assert_replica_sets_stay(cp, ns, counts)  # no rollout for the rewrite or its repair


def test_stores_written_for_different_files_hold_the_bot_and_say_why(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    """A TimerStore for ``integrations.yml`` joins a LockStore for ``endpoints.yml`` on one bot:
    Rasa reads its stores from one file, so new pods would start without one section (and the
    launcher would refuse them). The operator rolls nothing, says why in a MixedStoreFiles
    Warning and in ``status.rollout`` of both stores; one format then rolls the bot once."""
    cp, ns = control_plane, rollout_ns
    locks = store("LockStore", "locks", ns, redis_server, prefix="mixed",
                  rollout={**BY_NAME, "injectEnv": True})  # fmt: skip
    apply(cp, deployment(ns, "bot"), locks)
    counts = settled(cp, ns, "bot")
    timers = store("TimerStore", "timers", ns, redis_server, prefix="mixed",
                   rollout={**BY_NAME, "injectEnv": True})  # fmt: skip
    timers["spec"]["configMap"] = {"name": "bot-integrations", "format": "integrations"}
    apply(cp, _user_configmap(ns), timers)

    def held(kind: str, name: str) -> str | None:
        status = (cp.get_json("-n", ns, kind, name) or {}).get("status") or {}
        for entry in (status.get("rollout") or {}).get("workloads") or []:
            if entry.get("name") == "bot" and entry.get("held"):
                return str(entry["held"])
        return None

    said = wait_for("the TimerStore's status saying the bot is held", lambda: held(
        "timerstore", "timers"))  # fmt: skip
    assert "LockStore/locks: endpoints" in said and "TimerStore/timers: integrations" in said
    assert wait_for("the LockStore's status saying so", lambda: held("lockstore", "locks"))
    events = wait_for("MixedStoreFiles Events", lambda: (cp.get_json(
        "-n", ns, "events", "--field-selector", "reason=MixedStoreFiles") or {}).get("items"))
    assert {e["involvedObject"]["kind"] for e in events} >= {"Deployment", "TimerStore"}
    assert_replica_sets_stay(cp, ns, counts)  # nothing rolled onto pods that would refuse

    timers["spec"]["configMap"] = {"name": "bot-endpoints"}  # both for endpoints.yml now
    apply(cp, timers)
    wait_for("the hold lifted", lambda: held("timerstore", "timers") is None or None)
    assert_replica_sets_stay(cp, ns, {"bot": counts["bot"] + 1})  # one rollout
