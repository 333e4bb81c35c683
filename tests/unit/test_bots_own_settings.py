"""Ready means what the bots will use: their database, labels Kubernetes accepts, a missing
workload said once (issue 26). Pure functions only; the k8s tier proves the same end to end."""

from __future__ import annotations

from typing import Any

import pytest

from turnstile.operator.decide import conditions as cond
from turnstile.operator.decide.credentials import Credentials
from turnstile.operator.decide.render import section
from turnstile.operator.decide.rollout import store_rollout
from turnstile.operator.model.errors import SpecError
from turnstile.operator.model.specs import parse_spec
from turnstile.operator.probes import settings_for
from turnstile.stores.config import RedisSettings, SettingsReader, default_db

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def _store(kind: str, redis: dict[str, Any], **spec: Any) -> Any:
    return parse_spec(kind, {"redis": redis, **spec}, namespace="bots", name="s")


# ---------------------------------------------------------------------------- the database


@pytest.mark.parametrize(
    ("kind", "implementation", "db"),
    [("LockStore", "turnstile", 1), ("LockStore", "rasa", 1),
     ("TimerStore", "turnstile", 2), ("TimerStore", "rasa", 2)],
)
def test_the_probe_uses_the_database_a_bot_built_from_the_section_uses(
    kind: str, implementation: str, db: int
) -> None:
    store = _store(kind, {"host": "redis"}, implementation=implementation)
    rendered = section(store)
    assert "db" not in rendered  # the section leaves it to the class's default
    bot = RedisSettings.read(
        SettingsReader(rendered, section=store.info.section),
        default_db=default_db(store.info.section, rendered["type"]),
    )
    probed = settings_for(store, Credentials())
    assert probed.db == bot.db == db
    assert probed.where == bot.where == f"redis:6379/{db}"


def test_an_explicit_db_and_cluster_mode_are_probed_as_written() -> None:
    assert settings_for(_store("TimerStore", {"host": "r", "db": 0}), Credentials()).db == 0
    cluster = _store("LockStore", {"deploymentMode": "cluster", "endpoints": ["n1:7000"]})
    assert settings_for(cluster, Credentials()).db == 0


def test_check_reads_a_timer_section_with_the_timer_stores_database() -> None:
    assert default_db("timer_store", "redis") == 2
    assert default_db("lock_store", "concurrent_redis") == 1
    assert default_db("lock_store", "redis") == 0  # Rasa Pro's RedisLockStoreConfig


# ------------------------------------------------------------------------------ the labels


@pytest.mark.parametrize(
    "key",
    ["app", "app.kubernetes.io/name", "a", "A_b-c.D", "x" * 63, "a" * 253 + "/n"],
)
def test_label_keys_kubernetes_accepts_are_accepted(key: str) -> None:
    store_rollout({"spec": {"rollout": {"selector": {"matchLabels": {key: "v"}}}}})


@pytest.mark.parametrize(
    "key",
    ["", "-app", "app-", "x" * 64, "Upper.Case/app", "a/b/c", "a" * 254 + "/n", "has space",
     "/name", "prefix/"],
)
def test_label_keys_kubernetes_refuses_are_refused_naming_the_field(key: str) -> None:
    with pytest.raises(SpecError) as raised:
        store_rollout({"spec": {"rollout": {"selector": {"matchLabels": {key: "v"}}}}})
    assert raised.value.field == "spec.rollout.selector.matchLabels"
    assert "label key" in raised.value.message


@pytest.mark.parametrize("value", ["", "bot", "a.b_c-d", "x" * 63])
def test_label_values_kubernetes_accepts_are_accepted(value: str) -> None:
    store_rollout({"spec": {"rollout": {"selector": {"matchLabels": {"app": value}}}}})


def test_a_huge_label_value_is_refused_with_the_value_cut_short() -> None:
    with pytest.raises(SpecError) as raised:
        store_rollout({"spec": {"rollout": {"selector": {"matchLabels": {"app": "b" * 10_000}}}}})
    message = raised.value.message
    assert message.startswith("spec.rollout.selector.matchLabels.app: a label value")
    assert "at most 63 characters" in message
    assert "(10000 characters)" in message
    assert len(message) < 400


@pytest.mark.parametrize("value", ["-bot", "bot-", "b" * 64, "b/c", "bé"])
def test_label_values_kubernetes_refuses_are_refused(value: str) -> None:
    with pytest.raises(SpecError, match="a label value Kubernetes accepts"):
        store_rollout({"spec": {"rollout": {"selector": {"matchLabels": {"app": value}}}}})


def test_match_expressions_keys_and_values_follow_the_same_rules() -> None:
    def expr(key: str, values: list[str]) -> dict[str, Any]:
        return {"spec": {"rollout": {"selector": {"matchExpressions": [
            {"key": key, "operator": "In", "values": values}]}}}}

    store_rollout(expr("app.kubernetes.io/name", ["bot", ""]))
    with pytest.raises(SpecError) as raised:
        store_rollout(expr("bad key", ["bot"]))
    assert raised.value.field == "spec.rollout.selector.matchExpressions[0].key"
    with pytest.raises(SpecError) as raised:
        store_rollout(expr("app", ["ok", "-bad"]))
    assert raised.value.field == "spec.rollout.selector.matchExpressions[0].values[1]"


# ----------------------------------------------------------------------------- the timeout


@pytest.mark.parametrize("timeout", [0.0001, 0.05, 0.099])
def test_a_socket_timeout_below_the_floor_is_refused(timeout: float) -> None:
    with pytest.raises(SpecError) as raised:
        _store("LockStore", {"host": "r", "socketTimeout": timeout})
    assert raised.value.field == "spec.redis.socketTimeout"
    assert "from 0.1 to 300" in raised.value.message


def test_the_floor_itself_is_accepted() -> None:
    assert _store("LockStore", {"host": "r", "socketTimeout": 0.1}).redis.socket_timeout == 0.1


# --------------------------------------------------------------------- the missing workload

OK = cond.Condition(cond.CONNECTED, cond.TRUE, "Connected", "PING answered")
RENDERED = cond.Condition(cond.CONFIG_RENDERED, cond.TRUE, "Rendered", "in ns/bot")


def _status(rollout: cond.Condition, old: Any = None, connected: cond.Condition = OK,
            now: str = T0) -> dict[str, Any]:
    observation = cond.Observation(connected=connected, rendered=RENDERED, rollout=rollout)
    return cond.build_status(observation, old, generation=1, now=now)


def _by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_a_missing_workload_is_rollout_false_naming_it() -> None:
    condition = cond.rollout(None, ["Deployment/bots-typo"], namespace="bots")
    assert (condition.status, condition.reason) == (cond.FALSE, "WorkloadNotFound")
    assert "Deployment/bots-typo" in condition.message and "bots" in condition.message
    ready = _by_type(_status(condition))["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "WorkloadNotFound")


def test_a_missing_workload_is_one_warning_event_not_one_per_recheck() -> None:
    missing = cond.rollout(None, ["Deployment/bots-typo"], namespace="bots")
    first = _status(missing)
    said = [e for e in cond.events(None, first) if e.type == "Warning"]
    assert [e.reason for e in said] == ["WorkloadNotFound"]
    again = _status(missing, old=first, now=T1)
    assert cond.events(first, again) == []
    found = _status(cond.rollout(None), old=again, now=T1)
    assert [e.reason for e in cond.events(again, found)] == ["Ready"]


def test_a_missing_workload_is_said_even_while_redis_is_down() -> None:
    down = cond.Condition(cond.CONNECTED, cond.FALSE, "Unreachable", "no answer")
    before = _status(cond.rollout(None), connected=down)
    after = _status(cond.rollout(None, ["StatefulSet/bot"], namespace="bots"), old=before,
                    connected=down, now=T1)
    assert [e.reason for e in cond.events(before, after)] == ["WorkloadNotFound"]
