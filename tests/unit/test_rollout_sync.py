"""``sync_rollouts`` end to end on an in-memory API: idempotent, status merged, Events once."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from turnstile.operator.decide.credentials import SecretObject
from turnstile.operator.handlers import rollout as rollout_handlers
from turnstile.operator.handlers.rollout import sync_rollouts
from turnstile.operator.model.kinds import CHECKSUM_ANNOTATION, OPT_IN_LABEL

NS = "bots"


def merge(target: dict[str, Any], patch: dict[str, Any], *, strategic: bool = True) -> None:
    """Merge enough for these tests: dicts deep; lists replaced (JSON merge patch) or, for a
    strategic merge, lists of named items merged by name."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            merge(target.setdefault(key, {}), value, strategic=strategic)
        elif (
            strategic
            and isinstance(value, list)
            and all(isinstance(v, dict) and "name" in v for v in value)
        ):
            items = target.setdefault(key, [])
            for item in value:
                for have in items:
                    if have["name"] == item["name"]:
                        merge(have, item)
                        break
                else:
                    items.append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


class FakeKube:
    """The :class:`~turnstile.operator.kube.client.Kube` surface, over dicts."""

    def __init__(self) -> None:
        self.stores: list[dict[str, Any]] = []
        self.workloads: dict[tuple[str, str], dict[str, Any]] = {}
        self.config_maps: dict[str, dict[str, str]] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        #: Secrets that do not carry the store opt-in label (all others do).
        self.unlabelled: set[str] = set()
        self.workload_patches: list[tuple[str, dict[str, Any]]] = []
        self.status_patches: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str]] = []
        self.config_map_meta: dict[str, dict[str, Any]] = {}
        self.config_map_writes: list[str] = []

    async def list_stores(self, namespace: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.stores)

    async def list_workloads(self, namespace: str) -> list[tuple[str, dict[str, Any]]]:
        return [(kind, copy.deepcopy(body)) for (kind, _), body in self.workloads.items()]

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        return copy.deepcopy(self.config_maps.get(name))

    async def update_configmap(self, namespace: str, name: str, decide: Any) -> Any:
        if name not in self.config_maps:
            return None  # the sync never creates one (the reconcile does)
        meta = self.config_map_meta.setdefault(name, {"name": name, "namespace": namespace})
        current = {"metadata": copy.deepcopy(meta), "data": copy.deepcopy(self.config_maps[name])}
        desired = decide(copy.deepcopy(current))
        if desired is None:
            return current
        self.config_map_writes.append(name)
        self.config_map_meta[name] = desired["metadata"]
        self.config_maps[name] = dict(desired["data"])
        return copy.deepcopy(desired)

    async def secret(self, namespace: str, name: str) -> SecretObject | None:
        if name not in self.secrets:
            return None
        labels = {} if name in self.unlabelled else {OPT_IN_LABEL: "true"}
        return SecretObject(labels=labels, data=copy.deepcopy(self.secrets[name]))

    async def patch_workload(self, namespace, kind, name, patch) -> dict[str, Any] | None:
        body = self.workloads.get((kind, name))
        if body is None:
            return None
        self.workload_patches.append((name, patch))
        merge(body, patch)
        return copy.deepcopy(body)

    async def patch_store_status(self, namespace, kind, name, patch) -> None:
        self.status_patches.append((name, patch))
        for store in self.stores:
            if store["kind"] == kind and store["metadata"]["name"] == name:
                merge(store, copy.deepcopy(patch), strategic=False)

    async def post_event(self, namespace, involved, reason, message, *, type_="Normal") -> None:
        self.events.append((involved["kind"], involved["metadata"]["name"], reason))


def lock_store(prefix: str = "one") -> dict[str, Any]:
    return {
        "kind": "LockStore",
        "metadata": {"name": "locks", "namespace": NS},
        "spec": {
            "redis": {"host": "redis", "keyPrefix": prefix,
                      "passwordSecretRef": {"name": "auth", "key": "password"}},
            "configMap": {"name": "bot-endpoints"},
            "rollout": {"workloads": [{"kind": "Deployment", "name": "bot"}], "injectEnv": True},
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }  # fmt: skip


def bot() -> dict[str, Any]:
    return {
        "metadata": {"name": "bot", "labels": {"app": "bot"}},
        "spec": {"template": {"metadata": {}, "spec": {"containers": [{"name": "rasa"}]}}},
    }


def cluster() -> FakeKube:
    kube = FakeKube()
    kube.stores = [lock_store()]
    kube.workloads[("Deployment", "bot")] = bot()
    kube.config_maps["bot-endpoints"] = {"endpoints.yml": "lock_store: {key_prefix: one}\n"}
    kube.secrets["auth"] = {"password": "cHcx"}
    return kube


async def test_first_sync_rolls_once_and_the_second_changes_nothing() -> None:
    kube = cluster()
    applied = await sync_rollouts(NS, kube, now="2026-11-23T07:00:00Z")  # type: ignore[arg-type]
    assert [p.workload.name for p in applied] == ["bot"]
    assert len(kube.workload_patches) == 1
    template = kube.workloads[("Deployment", "bot")]["spec"]["template"]
    assert template["metadata"]["annotations"][CHECKSUM_ANNOTATION] == applied[0].checksum
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    assert env["TURNSTILE_LOCK_STORE_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "auth"
    # What turnstile-rasa checks the file against before it starts Rasa (fail closed).
    assert env["TURNSTILE_EXPECT_LOCK_STORE"]["value"].startswith("sha256:")
    assert sorted(kube.events) == [
        ("Deployment", "bot", "ConfigRollout"),
        ("LockStore", "locks", "WorkloadRolled"),
    ]
    status = kube.stores[0]["status"]
    assert status["conditions"] == [{"type": "Ready", "status": "True"}]  # left alone
    assert status["rollout"]["workloads"] == [
        {"kind": "Deployment", "name": "bot", "checksum": applied[0].checksum,
         "appliedAt": "2026-11-23T07:00:00Z"},
    ]  # fmt: skip

    await sync_rollouts(NS, kube, now="2026-11-23T07:05:00Z")  # type: ignore[arg-type]
    assert len(kube.workload_patches) == 1
    assert len(kube.status_patches) == 1
    assert len(kube.events) == 2


async def test_rotation_rolls_and_a_vanished_workload_is_forgotten() -> None:
    kube = cluster()
    await sync_rollouts(NS, kube)  # type: ignore[arg-type]
    kube.secrets["auth"] = {"password": "bmV3"}
    await sync_rollouts(NS, kube)  # type: ignore[arg-type]
    assert len(kube.workload_patches) == 2

    del kube.workloads[("Deployment", "bot")]
    await sync_rollouts(NS, kube)  # type: ignore[arg-type]
    assert "rollout" not in kube.stores[0]["status"]  # forgotten: no entry left


async def test_removing_spec_rollout_clears_status_rollout() -> None:
    kube = cluster()
    await sync_rollouts(NS, kube)  # type: ignore[arg-type]
    del kube.stores[0]["spec"]["rollout"]
    patches = len(kube.workload_patches)
    await sync_rollouts(NS, kube)  # type: ignore[arg-type]
    assert "rollout" not in kube.stores[0]["status"]
    assert len(kube.workload_patches) == patches  # nothing rolled, nothing undone


async def test_an_invalid_store_stops_rollouts_in_its_namespace_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rollout_handlers, "_invalid_said", {})  # a fresh operator process
    kube = cluster()
    kube.stores[0]["spec"]["rollout"]["workloads"][0]["kind"] = "DaemonSet"
    assert await sync_rollouts(NS, kube) == []  # type: ignore[arg-type]
    assert kube.workload_patches == []
    assert kube.events == [("LockStore", "locks", "RolloutInvalid")]
    # The periodic re-sync meets the same spec again: said once, not once per interval.
    assert await sync_rollouts(NS, kube) == []  # type: ignore[arg-type]
    assert kube.events == [("LockStore", "locks", "RolloutInvalid")]


async def test_a_secret_without_the_store_label_is_never_injected_or_hashed() -> None:
    kube = cluster()
    kube.unlabelled.add("auth")
    assert await sync_rollouts(NS, kube, now="2026-11-23T07:00:00Z") == []  # type: ignore[arg-type]
    assert kube.workload_patches == []
    template = kube.workloads[("Deployment", "bot")]["spec"]["template"]
    assert "annotations" not in template["metadata"]
    # Labelling the Secret is the fix: the next sync rolls the bot with the env injected.
    kube.unlabelled.clear()
    applied = await sync_rollouts(NS, kube, now="2026-11-23T07:01:00Z")  # type: ignore[arg-type]
    assert [p.workload.name for p in applied] == ["bot"]
    env = kube.workloads[("Deployment", "bot")]["spec"]["template"]["spec"]["containers"][0]["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["TURNSTILE_LOCK_STORE_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "auth"


async def test_a_hand_edit_of_the_stores_section_is_put_back_and_rolls_nothing() -> None:
    kube = cluster()
    await sync_rollouts(NS, kube)  # type: ignore[arg-type]
    rendered = kube.config_maps["bot-endpoints"]["endpoints.yml"]
    assert "key_prefix: one" in rendered
    patches = len(kube.workload_patches)
    kube.config_maps["bot-endpoints"]["endpoints.yml"] = rendered.replace(
        "key_prefix: one", "key_prefix: edited-by-hand"
    )
    await sync_rollouts(NS, kube)  # type: ignore[arg-type]
    assert kube.config_maps["bot-endpoints"]["endpoints.yml"] == rendered  # put back
    assert len(kube.workload_patches) == patches  # the bot was not rolled onto the edit


async def test_a_hand_edit_of_a_users_section_is_kept_and_rolls() -> None:
    kube = cluster()
    await sync_rollouts(NS, kube)  # type: ignore[arg-type]
    edited = kube.config_maps["bot-endpoints"]["endpoints.yml"] + "action_endpoint:\n  url: x\n"
    kube.config_maps["bot-endpoints"]["endpoints.yml"] = edited
    patches = len(kube.workload_patches)
    await sync_rollouts(NS, kube)  # type: ignore[arg-type]
    assert kube.config_maps["bot-endpoints"]["endpoints.yml"] == edited
    assert len(kube.workload_patches) == patches + 1


async def test_a_store_being_deleted_gets_no_section_written_back() -> None:
    kube = cluster()
    kube.stores[0]["metadata"]["deletionTimestamp"] = "2026-11-23T07:00:00Z"
    kube.config_maps["bot-endpoints"] = {"endpoints.yml": "action_endpoint:\n  url: x\n"}
    await sync_rollouts(NS, kube)  # type: ignore[arg-type]
    assert kube.config_map_writes == []
