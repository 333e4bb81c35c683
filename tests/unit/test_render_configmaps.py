"""The ConfigMap object a store writes: ownership, labels, annotations, other keys kept."""

from __future__ import annotations

import json
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from turnstile.operator.decide.configmaps import (
    Owner,
    is_owned,
    with_section,
    without_section,
    writer_of,
)
from turnstile.operator.kube.client import Kube
from turnstile.operator.model.errors import KubeError
from turnstile.operator.model.kinds import MANAGED_BY, PRE_EXISTING, SECTIONS

LOCKS = Owner("turnstile.dev/v1alpha1", "LockStore", "locks", "uid-1")
OTHER = Owner("turnstile.dev/v1alpha1", "LockStore", "other", "uid-2")
TIMERS = Owner("turnstile.dev/v1alpha1", "TimerStore", "timers", "uid-3")
SECTION = {"type": "turnstile.rasa.TicketLockStore", "host": "r", "port": 6379}


def _write(existing: Any, owner: Owner = LOCKS, section: str = "lock_store") -> Any:
    return with_section(existing, namespace="ns", name="bot", key="endpoints.yml",
                        section=section, content=SECTION, owner=owner)


def test_a_new_configmap_is_owned_labelled_and_annotated() -> None:
    body = _write(None)
    meta = body["metadata"]
    assert meta["labels"] == MANAGED_BY
    assert meta["ownerReferences"][0]["uid"] == "uid-1"
    assert meta["ownerReferences"][0]["kind"] == "LockStore"
    assert PRE_EXISTING not in meta["annotations"]
    assert writer_of(body, "endpoints.yml", "lock_store") == "LockStore/locks"
    assert is_owned(body)
    assert yaml.safe_load(body["data"]["endpoints.yml"]) == {"lock_store": SECTION}


def test_a_second_store_adds_its_owner_reference() -> None:
    body = _write(_write(None), TIMERS, "timer_store")
    assert [r["uid"] for r in body["metadata"]["ownerReferences"]] == ["uid-1", "uid-3"]
    assert list(yaml.safe_load(body["data"]["endpoints.yml"])) == ["lock_store", "timer_store"]


def test_a_pre_existing_configmap_is_never_owned_and_keeps_everything_else() -> None:
    existing = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "bot", "namespace": "ns", "resourceVersion": "7",
                     "labels": {"app": "bot"}},
        "data": {"endpoints.yml": "action_endpoint:\n  url: http://a\n", "other.txt": "hello"},
    }
    body = _write(existing)
    meta = body["metadata"]
    assert meta["annotations"][PRE_EXISTING] == "true"
    assert "ownerReferences" not in meta
    assert meta["labels"] == {"app": "bot", **MANAGED_BY}
    assert meta["resourceVersion"] == "7"  # a concurrent writer gets a 409
    assert body["data"]["other.txt"] == "hello"
    assert list(yaml.safe_load(body["data"]["endpoints.yml"])) == ["action_endpoint", "lock_store"]
    assert not is_owned(body)
    # and a later write does not start owning it either
    again = _write(body, TIMERS, "timer_store")
    assert "ownerReferences" not in again["metadata"]


def test_nothing_to_write_returns_none() -> None:
    body = _write(None)
    assert _write(body) is None


def test_removal_takes_only_the_stores_own_section() -> None:
    body = _write(_write(None), TIMERS, "timer_store")
    after = without_section(body, key="endpoints.yml", section="lock_store", owner=LOCKS)
    assert after is not None
    assert yaml.safe_load(after["data"]["endpoints.yml"]) == {"timer_store": SECTION}
    assert json.loads(after["metadata"]["annotations"][SECTIONS]) == {
        "endpoints.yml/timer_store": "TimerStore/timers"
    }


def test_removal_leaves_a_section_another_store_wrote() -> None:
    body = _write(None, OTHER)
    assert without_section(body, key="endpoints.yml", section="lock_store", owner=LOCKS) is None


def test_removal_leaves_a_users_section_turnstile_never_wrote() -> None:
    existing = {"metadata": {"name": "bot"}, "data": {"endpoints.yml": "lock_store:\n  type: x\n"}}
    assert without_section(existing, key="endpoints.yml", section="lock_store", owner=LOCKS) is None
    assert without_section(None, key="endpoints.yml", section="lock_store", owner=LOCKS) is None


class _RacingApi:
    """Stands in for the Kubernetes API: the first replace loses a race (HTTP 409)."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.object: dict[str, Any] = {
            "metadata": {"name": "bot", "resourceVersion": "1"},
            "data": {"endpoints.yml": "timer_store:\n  type: t\n"},
        }
        self.reads = 0
        self.writes: list[dict[str, Any]] = []


class _Response:
    """What a typed-API call returns with ``_preload_content=False``."""

    def __init__(self, body: Any) -> None:
        self.data = json.dumps(body).encode()


class _FakeCoreV1:
    """The ``CoreV1Api`` calls ``update_configmap`` makes, answered from ``_RacingApi``."""

    def __init__(self, api: _RacingApi) -> None:
        self.api = api

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> _Response:
        self.api.reads += 1
        return _Response(self.api.object)

    def replace_namespaced_config_map(
        self, name: str, namespace: str, body: Any, **_: Any
    ) -> _Response:
        api = self.api
        if api.conflicts:
            api.conflicts -= 1
            # someone else wrote meanwhile: their change lands, ours is refused
            # (once: a second identical key would be a file Rasa's loader refuses)
            other = "action_endpoint:\n  url: http://a\n"
            if other not in api.object["data"]["endpoints.yml"]:
                api.object["data"]["endpoints.yml"] += other
            version = int(api.object["metadata"]["resourceVersion"]) + 1
            api.object["metadata"]["resourceVersion"] = str(version)
            raise ApiException(status=409, reason="Conflict")
        api.writes.append(body)
        api.object = body
        return _Response(body)


class _FakeKube:
    """``Kube`` with its CoreV1Api replaced; everything above the typed API is the real code
    (the 404/409 policy in ``Kube._send`` included)."""

    def __new__(cls, api: _RacingApi) -> Any:
        kube = Kube(api_client=None)
        kube._core = _FakeCoreV1(api)
        return kube


async def test_a_409_is_retried_on_a_fresh_read_and_keeps_the_other_writers_change() -> None:
    api = _RacingApi(conflicts=2)
    kube = _FakeKube(api)
    after = await kube.update_configmap(
        "ns", "bot",
        lambda current: with_section(current, namespace="ns", name="bot", key="endpoints.yml",
                                     section="lock_store", content=SECTION, owner=LOCKS),
    )
    assert api.reads == 3 and len(api.writes) == 1
    assert list(yaml.safe_load(after["data"]["endpoints.yml"])) == [
        "lock_store", "timer_store", "action_endpoint"
    ]


async def test_conflicts_that_never_end_surface_as_a_kube_error() -> None:
    kube = _FakeKube(_RacingApi(conflicts=100))
    try:
        await kube.update_configmap("ns", "bot", lambda current: with_section(
            current, namespace="ns", name="bot", key="endpoints.yml", section="lock_store",
            content=SECTION, owner=LOCKS))
    except KubeError as exc:
        assert exc.status == 409
        assert exc.reason == "KubernetesError"
    else:
        raise AssertionError("expected a KubeError")
