"""``spec.configMap.base`` against a real API server and operator: the file the bots mount is
composed from the user's base and the stores' sections, and each change rolls the bot once.

The base is a ConfigMap the user owns (no chart hashes it into its pods); the composed one is
the operator's. The three orders of change a user meets (the base changed first, a store
changed first, both in one ``kubectl apply``) each give exactly one new ReplicaSet, onto a
file that holds the new base and both sections. A base that does not exist yet is a condition
naming the field; it holds the bot, and creating it composes the file and rolls once. A hand
edit of the composed file is undone without a rollout.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.k8s import test_rollout
from tests.k8s.test_rollout import (
    BY_NAME,
    QUIET,
    Operator,
    apply,
    assert_replica_sets_stay,
    deployment,
    managed_config_map,
    replica_sets,
    store,
    template_checksum,
    wait_for,
)
from tests.platform.control_plane import ControlPlane
from tests.platform.redis_servers import RedisServer

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

rollout_ns = test_rollout.rollout_ns
operator = test_rollout.operator

BASE = """\
# the bot team's sections (a ConfigMap of their own; no chart hashes it)
tracker_store:
  type: redis
  url: "${TRACKER_HOST}"
  port: 06379
  record_exp: 3600
action_endpoint:
  url: http://actions:5055/webhook
"""


def _base(ns: str, text: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "bot-base", "namespace": ns}, "data": {"endpoints.yml": text}}


def _stores(ns: str, redis: RedisServer, lock_prefix: str, timer_prefix: str) -> list[Any]:
    out = []
    for kind, name, prefix in (("LockStore", "locks", lock_prefix),
                               ("TimerStore", "timers", timer_prefix)):  # fmt: skip
        body = store(kind, name, ns, redis, prefix=prefix, rollout=BY_NAME)
        body["spec"]["configMap"]["base"] = {"name": "bot-base"}
        out.append(body)
    return out


def _composed(cp: ControlPlane, ns: str, base: str) -> str | None:
    """The composed file once it is ``base`` followed by both stores' sections."""
    text = (managed_config_map(cp, ns, "bot-endpoints") or {}).get("endpoints.yml")
    if text is None or not text.startswith(base):
        return None
    loaded = yaml.safe_load(text)
    return text if {"lock_store", "timer_store"} <= set(loaded) else None


def _rendered(cp: ControlPlane, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    status = (cp.get_json("-n", ns, kind, name) or {}).get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "ConfigRendered":
            return dict(condition)
    return None


def test_the_base_a_store_and_both_in_one_apply_each_roll_the_bot_once(
    control_plane: ControlPlane, rollout_ns: str, redis_server: RedisServer, operator: Operator
) -> None:
    cp, ns = control_plane, rollout_ns

    # The stores come first; their base does not exist yet.
    apply(cp, deployment(ns, "bot"), *_stores(ns, redis_server, "one", "one"))
    missing = wait_for("BaseNotFound on the LockStore", lambda: (
        c if (c := _rendered(cp, ns, "lockstore", "locks")) and c["reason"] == "BaseNotFound"
        else None))  # fmt: skip
    assert missing["status"] == "False"
    assert missing["message"].startswith(
        f"spec.configMap.base.name: ConfigMap {ns}/bot-base does not exist"
    )
    assert managed_config_map(cp, ns, "bot-endpoints") is None  # nothing half-composed
    assert template_checksum(cp, ns, "bot") is None  # and no rollout onto nothing

    # The base appears: the file is composed and the bot rolled once.
    apply(cp, _base(ns, BASE))
    wait_for("the composed file", lambda: _composed(cp, ns, BASE))
    wait_for("the LockStore Rendered again", lambda: (
        _rendered(cp, ns, "lockstore", "locks") or {}).get("reason") == "Rendered" or None)
    status = (cp.get_json("-n", ns, "lockstore", "locks") or {})["status"]
    assert status["configMap"]["base"] == {"name": "bot-base", "key": "endpoints.yml"}
    assert status["configMap"]["owned"] is True  # the operator's; garbage-collected with them
    count = 2  # the Deployment's first template, then the one with the checksum
    assert_replica_sets_stay(cp, ns, {"bot": count})

    rolled: list[str] = []

    def one_rollout(what: str, base: str) -> None:
        nonlocal count
        count += 1
        assert_replica_sets_stay(cp, ns, {"bot": count})
        text = wait_for(f"the file composed after {what}", lambda: _composed(cp, ns, base))
        checksum = template_checksum(cp, ns, "bot")
        assert checksum is not None and checksum not in rolled
        rolled.append(checksum)
        assert text == managed_config_map(cp, ns, "bot-endpoints")["endpoints.yml"]  # type: ignore[index]

    # 1. The base changes first (the user's pipeline applies their ConfigMap).
    second = BASE.replace("record_exp: 3600", "record_exp: 7200")
    apply(cp, _base(ns, second))
    one_rollout("the base changed", second)

    # 2. A store changes first.
    apply(cp, _stores(ns, redis_server, "two", "one")[0])
    one_rollout("the LockStore changed", second)
    assert yaml.safe_load(_composed(cp, ns, second) or "")["lock_store"]["key_prefix"] == "two"

    # 3. Both in one apply.
    third = second.replace("url: http://actions:5055", "url: http://actions-v2:5055")
    apply(cp, _base(ns, third), _stores(ns, redis_server, "two", "three")[1])
    one_rollout("both changed in one apply", third)
    assert yaml.safe_load(_composed(cp, ns, third) or "")["timer_store"]["key_prefix"] == "three"

    # A hand edit of the composed file (or a chart writing into it) is undone, rolling nothing.
    before = managed_config_map(cp, ns, "bot-endpoints") or {}
    cp.kubectl("-n", ns, "patch", "configmap", "bot-endpoints", "--type", "merge", "-p",
               yaml.safe_dump({"data": {"endpoints.yml": third}}))  # fmt: skip
    wait_for("the composed file restored", lambda: (
        managed_config_map(cp, ns, "bot-endpoints") == before or None))
    assert_replica_sets_stay(cp, ns, {"bot": count})
    assert len(replica_sets(cp, ns, "bot")) == count
    print(f"composed from a base: {count - 2} changes, {count - 2} rollouts "
          f"(each watched {QUIET:.1f} s for a second one)")
