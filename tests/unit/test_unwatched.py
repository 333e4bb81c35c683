"""Stores in namespaces nobody watches get one readable condition, written once."""

from __future__ import annotations

from typing import Any

import pytest

from turnstile.operator.config import OperatorConfig
from turnstile.operator.decide.unwatched import REASON, message, status_patch, watches
from turnstile.operator.handlers.unwatched import report_once
from turnstile.operator.model.errors import SpecError
from turnstile.operator.model.kinds import FINALIZER, KINDS

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def _store(ns: str = "elsewhere", **meta: Any) -> dict[str, Any]:
    return {"kind": "LockStore", "metadata": {"name": "locks", "namespace": ns, "generation": 2,
                                              **meta}}  # fmt: skip


@pytest.mark.parametrize(
    ("namespace", "patterns", "watched"),
    [
        ("bots", ["bots"], True),
        ("bots-a", ["bots-*"], True),
        ("payments", ["bots", "team-*"], False),
        ("team-x", ["team-*", "!team-x"], False),
        ("anything", ["!kube-*"], True),
        ("kube-system", ["!kube-*"], False),
    ],
)
def test_watched_namespaces_follow_kopf_globs(
    namespace: str, patterns: list[str], watched: bool
) -> None:
    assert watches(namespace, patterns) is watched


def test_an_unserved_store_gets_ready_false_with_the_fix() -> None:
    patch = status_patch(_store(), now=T0)
    assert patch is not None
    [ready] = patch["status"]["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", REASON)
    assert "'elsewhere'" in ready["message"] and "watchNamespaces" in ready["message"]
    assert ready["lastTransitionTime"] == T0 and ready["observedGeneration"] == 2
    assert patch["status"]["observedGeneration"] == 2


def test_the_condition_is_written_once() -> None:
    store = _store()
    patch = status_patch(store, now=T0)
    assert patch is not None
    store["status"] = patch["status"]
    assert status_patch(store, now=T1) is None


def test_a_store_another_operator_serves_or_that_is_going_is_left_alone() -> None:
    assert status_patch(_store(finalizers=[FINALIZER]), now=T0) is None
    assert status_patch(_store(deletionTimestamp=T0), now=T0) is None


def test_the_message_is_the_same_from_every_release() -> None:
    assert message("x") == message("x")
    assert "release" not in message("x")


class FakeKube:
    def __init__(self, stores: dict[str, list[dict[str, Any]]]) -> None:
        self.stores = stores
        self.patches: list[tuple[str, str, str]] = []

    async def list_everywhere(self, plural: str) -> list[dict[str, Any]]:
        return self.stores.get(plural, [])

    async def patch_store_status(self, namespace: str, kind: str, name: str, patch: Any) -> None:
        self.patches.append((namespace, KINDS[kind].plural, name))


async def test_only_stores_outside_the_watched_namespaces_are_patched() -> None:
    kube = FakeKube({
        "lockstores": [_store("bots"), _store("elsewhere")],
        "timerstores": [_store("team-a"), _store("other", finalizers=[FINALIZER])],
    })  # fmt: skip
    assert await report_once(kube, ["bots", "team-*"], now=T0) == 1  # type: ignore[arg-type]
    assert kube.patches == [("elsewhere", "lockstores", "locks")]


def test_reporting_is_configured_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {"TURNSTILE_REPORT_UNWATCHED": "true", "TURNSTILE_WATCHED_NAMESPACES": "a, b-*"}
    )
    assert config.report_unwatched and config.watched_namespaces == ("a", "b-*")
    assert not OperatorConfig.from_env({}).report_unwatched
    with pytest.raises(SpecError, match="TURNSTILE_REPORT_UNWATCHED"):
        OperatorConfig.from_env({"TURNSTILE_REPORT_UNWATCHED": "yes please"})
