"""Status decisions: conditions per the API conventions, Ready's summary, Events, redaction."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from turnstile.operator.decide import conditions as cond
from turnstile.operator.decide.credentials import redact, resolve
from turnstile.operator.model.errors import SecretError
from turnstile.operator.model.specs import parse_store
from turnstile.stores.probe import ProbeReport

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
OK = cond.Condition(cond.CONNECTED, cond.TRUE, "Connected", "PING answered")
RENDERED = cond.Condition(cond.CONFIG_RENDERED, cond.TRUE, "Rendered", "in ConfigMap ns/bot")
PASSWORD = "pa55-w0rd-never-shown"


def _status(connected: cond.Condition = OK, rendered: cond.Condition = RENDERED,
            old: Any = None, now: str = T0, report: ProbeReport | None = None) -> dict[str, Any]:
    obs = cond.Observation(connected=connected, rendered=rendered, mode="sentinel", report=report)
    return cond.build_status(obs, old, generation=3, now=now)


def _get(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_ready_is_true_only_when_connected_and_rendered() -> None:
    status = _status()
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Connected", "ConfigRendered"]
    ready = _get(status, "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "Ready", 3)


def test_ready_takes_the_first_failing_reason() -> None:
    down = cond.Condition(cond.CONNECTED, cond.FALSE, "Unreachable", "no answer from r:6379")
    ready = _get(_status(connected=down), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Unreachable")
    assert ready["message"] == "Connected: no answer from r:6379"
    conflict = cond.Condition(cond.CONFIG_RENDERED, cond.FALSE, "ConfigMapConflict", "a, b")
    assert _get(_status(rendered=conflict), "Ready")["reason"] == "ConfigMapConflict"


def test_last_transition_time_is_kept_while_status_does_not_change() -> None:
    first = _status(now=T0)
    second = _status(old=first, now=T1)
    assert _get(second, "Ready")["lastTransitionTime"] == T0
    down = cond.Condition(cond.CONNECTED, cond.FALSE, "Unreachable", "gone")
    third = _status(connected=down, old=second, now=T1)
    assert _get(third, "Ready")["lastTransitionTime"] == T1
    assert _get(third, "ConfigRendered")["lastTransitionTime"] == T0


def test_a_reason_change_with_the_same_status_keeps_the_transition_time() -> None:
    a = cond.Condition(cond.CONNECTED, cond.FALSE, "Unreachable", "x")
    b = cond.Condition(cond.CONNECTED, cond.FALSE, "SecretNotFound", "y")
    first = _status(connected=a, now=T0)
    second = _status(connected=b, old=first, now=T1)
    assert _get(second, "Connected")["lastTransitionTime"] == T0
    assert _get(second, "Connected")["reason"] == "SecretNotFound"


def test_observed_facts_come_from_a_successful_probe() -> None:
    report = ProbeReport(ok=True, mode="sentinel", master="10.0.0.5:6379", nodes=2,
                         latency_ms=1.5, sentinels=3)
    status = _status(report=report)
    assert (status["master"], status["nodes"], status["sentinels"], status["latencyMs"]) == (
        "10.0.0.5:6379", 2, 3, 1.5)
    failed = _status(report=ProbeReport(ok=False, mode="sentinel", reason="NoQuorum"), old=status)
    assert failed["master"] == "10.0.0.5:6379"  # the last master seen, kept through a failure
    assert failed["latencyMs"] is None  # a merge patch deletes the stale value
    other_mode = cond.build_status(
        cond.Observation(connected=OK, rendered=RENDERED, mode="standard"), status,
        generation=3, now=T0)
    assert other_mode["master"] is None


def test_a_failover_through_a_failed_probe_is_still_a_master_change() -> None:
    before = _status(report=ProbeReport(ok=True, mode="sentinel", master="r1:1", nodes=2))
    down = cond.Condition(cond.CONNECTED, cond.FALSE, "Unreachable", "gone")
    during = _status(connected=down, old=before,
                     report=ProbeReport(ok=False, mode="sentinel", reason="Unreachable"))
    after = _status(old=during, report=ProbeReport(ok=True, mode="sentinel", master="r2:1",
                                                   nodes=2))
    assert "MasterChanged" in [e.reason for e in cond.events(during, after)]


def test_latency_jitter_alone_does_not_rewrite_the_status() -> None:
    report = ProbeReport(ok=True, mode="standard", master="r:1", nodes=1, latency_ms=2.0)
    first = _status(report=report)
    jitter = _status(report=ProbeReport(**{**report.__dict__, "latency_ms": 2.4}), old=first,
                     now=T1)
    assert not cond.needs_update(first, jitter)
    slow = _status(report=ProbeReport(**{**report.__dict__, "latency_ms": 40.0}), old=first)
    assert cond.needs_update(first, slow)
    assert cond.needs_update(None, first)


def test_a_failover_and_a_lost_node_become_events() -> None:
    before = {"master": "r1:6379", "nodes": 3, "conditions": _status()["conditions"]}
    after = {"master": "r2:6379", "nodes": 2, "conditions": _status()["conditions"]}
    found = {(e.type, e.reason): e.message for e in cond.events(before, after)}
    assert found[("Warning", "MasterChanged")] == "Redis master moved from r1:6379 to r2:6379"
    assert found[("Warning", "NodeLeft")] == "healthy Redis nodes went from 3 to 2"
    assert len(found) == 2  # Ready did not change


def test_becoming_ready_or_unready_is_an_event() -> None:
    down = cond.Condition(cond.CONNECTED, cond.FALSE, "Unreachable", "gone")
    unready = _status(connected=down)
    ready = _status(old=unready)
    assert [(e.type, e.reason) for e in cond.events(unready, ready)] == [("Normal", "Ready")]
    assert [(e.type, e.reason) for e in cond.events(ready, unready)] == [
        ("Warning", "Unreachable")
    ]
    assert cond.events(ready, ready) == []


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _pw_store() -> Any:
    return parse_store({
        "kind": "LockStore", "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"redis": {"host": "r", "passwordSecretRef": {"name": "auth"}}},
    })


def test_missing_secret_and_key_are_named_without_values() -> None:
    store = _pw_store()
    with pytest.raises(SecretError) as missing:
        resolve(store, {"auth": None})
    assert missing.value.reason == "SecretNotFound"
    assert "'auth'" in missing.value.message
    with pytest.raises(SecretError) as no_key:
        resolve(store, {"auth": {"other": _b64(PASSWORD)}})
    assert no_key.value.reason == "SecretKeyNotFound"
    assert "'password'" in no_key.value.message and "other" in no_key.value.message
    assert PASSWORD not in no_key.value.message


def test_secret_values_never_reach_status_events_or_repr() -> None:
    credentials = resolve(_pw_store(), {"auth": {"password": _b64(PASSWORD + "\n")}})
    assert credentials.password == PASSWORD + "\n"  # the bytes a pod's env var holds
    assert PASSWORD not in repr(credentials)
    leaked = f"ERR AUTH {PASSWORD} failed"
    down = cond.Condition(cond.CONNECTED, cond.FALSE, "AuthenticationFailed",
                          redact(leaked, credentials))
    status = _status(connected=down)
    assert PASSWORD not in repr(status)
    assert "<redacted>" in _get(status, "Connected")["message"]
    assert all(PASSWORD not in e.message for e in cond.events(None, status))


def test_an_invalid_selector_makes_the_store_not_ready_with_its_own_reason() -> None:
    from turnstile.operator.decide import conditions as c  # noqa: PLC0415
    from turnstile.operator.model.errors import SpecError  # noqa: PLC0415

    problem = SpecError("spec.rollout.selector.matchExpressions[0].key", "needs a key", "")
    ok = c.Condition(c.CONNECTED, c.TRUE, "Connected")
    rendered = c.Condition(c.CONFIG_RENDERED, c.TRUE, "Rendered")
    status = c.build_status(
        c.Observation(connected=ok, rendered=rendered, rollout=c.rollout(problem)),
        None, generation=1, now="2026-01-01T00:00:00Z",
    )  # fmt: skip
    by_type = {x["type"]: x for x in status["conditions"]}
    assert by_type["Ready"]["reason"] == "InvalidSelector"
    assert "matchExpressions[0].key" in by_type["Rollout"]["message"]
    assert c.rollout(None).is_true


def test_the_status_patch_removes_what_the_new_status_no_longer_says() -> None:
    """A merge patch keeps keys it does not name: ``transition.pending`` of a held change must
    be sent as null once the change is rendered, or it outlives it."""
    old = {
        "mode": "standard",
        "transition": {"from": {"key_prefix": "a"}, "until": "T1", "pending": True},
        "configMap": {"name": "bot", "key": "endpoints.yml", "format": "endpoints"},
        "kopf": {"progress": {}},  # another writer's key: left alone
    }
    new = {
        "mode": "standard",
        "transition": {"from": {"key_prefix": "b"}, "until": "T2"},
        "configMap": {"name": "bot", "key": "endpoints.yml"},
        "tlsWarning": None,
    }
    patch = cond.merge_patch(old, new)
    assert patch == {
        "mode": "standard",
        "transition": {"from": {"key_prefix": "b"}, "until": "T2", "pending": None},
        "configMap": {"name": "bot", "key": "endpoints.yml", "format": None},
        "tlsWarning": None,
    }
    assert cond.merge_patch(None, new) == new


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies it."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def test_the_status_patch_applied_as_a_merge_gives_the_new_status() -> None:
    old = {"transition": {"from": {"db": 1, "key_prefix": "a"}, "pending": True, "until": "T"},
           "mode": "cluster", "kopf": {"x": 1}}  # fmt: skip
    new = {"transition": {"from": {"db": 1}, "until": "T"}, "mode": "cluster"}
    assert _merge(old, cond.merge_patch(old, new)) == {**new, "kopf": {"x": 1}}
