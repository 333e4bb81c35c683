"""Rollout decisions, without a cluster: selection, checksum, patch, status."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from turnstile.operator.decide.render import plain_env
from turnstile.operator.decide.rollout import (
    MIXED_FILES,
    EnvFromSecret,
    LabelSelector,
    Requirement,
    SecretRef,
    Snapshot,
    Workload,
    WorkloadRef,
    checksum,
    plan_namespace,
    referenced_secrets,
    status_entries,
    status_patch,
    store_rollout,
    workload_patch,
)
from turnstile.operator.model.errors import SpecError
from turnstile.operator.model.kinds import (
    APPLIED_AT_ANNOTATION,
    CHECKSUM_ANNOTATION,
    INJECTED_ENV_ANNOTATION,
)
from turnstile.operator.model.specs import parse_spec
from turnstile.stores.fingerprint import EXPECT_ENV, file_fingerprint

NOW = "2026-11-23T07:00:00Z"
LATER = "2026-11-23T08:00:00Z"
LOCK_ENV = ("TURNSTILE_LOCK_STORE_PASSWORD", "redis-auth", "password")
TIMER_ENV = ("TURNSTILE_TIMER_STORE_PASSWORD", "redis-auth", "password")


def store_body(
    kind: str = "LockStore",
    name: str = "locks",
    rollout: dict[str, Any] | None = None,
    *,
    config_map: str = "bot-endpoints",
    password: dict[str, str] | None = None,
    tls: dict[str, Any] | None = None,
) -> dict[str, Any]:
    redis: dict[str, Any] = {"host": "redis", "port": 6379, "keyPrefix": "bot"}
    if password is not None:
        redis["passwordSecretRef"] = password
    if tls is not None:
        redis["tls"] = tls
    spec: dict[str, Any] = {"redis": redis, "configMap": {"name": config_map}}
    if rollout is not None:
        spec["rollout"] = rollout
    return {"kind": kind, "metadata": {"name": name, "namespace": "ns"}, "spec": spec}


def deployment(
    name: str = "bot",
    labels: dict[str, str] | None = None,
    *,
    checksum_value: str | None = None,
    containers: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    kind: str = "Deployment",
) -> Workload:
    template_meta: dict[str, Any] = {"labels": {"app": name}}
    if checksum_value is not None:
        template_meta["annotations"] = {CHECKSUM_ANNOTATION: checksum_value}
    body = {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {
            "template": {
                "metadata": template_meta,
                "spec": {"containers": containers or [{"name": "rasa", "image": "rasa"}]},
            }
        },
    }
    return Workload.from_body(kind, body)


ENDPOINTS = {"endpoints.yml": "lock_store:\n  type: turnstile.rasa.TicketLockStore\n"}


def snapshot(stores, workloads, config_maps=None, secrets=None) -> Snapshot:
    return Snapshot(
        stores=tuple(stores),
        workloads=tuple(workloads),
        config_maps={"bot-endpoints": ENDPOINTS} if config_maps is None else config_maps,
        secrets={} if secrets is None else secrets,
    )


def by_name(*names: str) -> dict[str, Any]:
    return {"workloads": [{"kind": "Deployment", "name": n} for n in names]}


# ---------------------------------------------------------------------------- selection


def test_store_selects_named_workloads_of_the_named_kind_only() -> None:
    store = store_rollout(store_body(rollout=by_name("bot")))
    assert store is not None
    assert store.selects(deployment("bot"))
    assert not store.selects(deployment("bot", kind="StatefulSet"))
    assert not store.selects(deployment("other"))


def test_store_selects_by_match_labels_and_expressions() -> None:
    rollout = {
        "selector": {
            "matchLabels": {"app.kubernetes.io/part-of": "bot"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["rasa", "actions"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    }
    store = store_rollout(store_body(rollout=rollout))
    assert store is not None
    part_of = {"app.kubernetes.io/part-of": "bot"}
    assert store.selects(deployment("a", {**part_of, "tier": "rasa"}))
    assert store.selects(deployment("b", {**part_of, "tier": "actions"}, kind="StatefulSet"))
    assert not store.selects(deployment("c", {**part_of, "tier": "web"}))
    assert not store.selects(deployment("d", {**part_of, "tier": "rasa", "canary": "1"}))
    assert not store.selects(deployment("e", {"tier": "rasa"}))


@pytest.mark.parametrize(
    ("operator", "values", "labels", "expected"),
    [
        ("In", ["a"], {"k": "a"}, True),
        ("In", ["a"], {}, False),
        ("NotIn", ["a"], {"k": "b"}, True),
        ("NotIn", ["a"], {}, True),
        ("NotIn", ["a"], {"k": "a"}, False),
        ("Exists", [], {"k": ""}, True),
        ("Exists", [], {}, False),
        ("DoesNotExist", [], {}, True),
    ],
)
def test_requirement_operators_follow_kubernetes(operator, values, labels, expected) -> None:
    assert Requirement("k", operator, frozenset(values)).matches(labels) is expected


def test_empty_selector_selects_nothing_rather_than_the_whole_namespace() -> None:
    assert not LabelSelector().matches({"anything": "x"})
    store = store_rollout(store_body(rollout={"selector": {}}))
    assert store is not None and not store.selects(deployment("bot", {"app": "bot"}))


def test_store_without_rollout_selects_nothing_itself() -> None:
    store = store_rollout(store_body())
    assert (store.workloads, store.selector, store.inject_env) == ((), None, False)
    assert not store.selects(deployment("bot"))


@pytest.mark.parametrize(
    ("rollout", "field"),
    [
        ({"workloads": [{"kind": "DaemonSet", "name": "x"}]}, "spec.rollout.workloads[0].kind"),
        ({"workloads": [{"kind": "Deployment"}]}, "spec.rollout.workloads[0].name"),
        ({"selector": {"matchExpressions": [{"key": "k", "operator": "Near"}]}},
         "spec.rollout.selector.matchExpressions[0].operator"),
        ({"selector": {"matchExpressions": [{"key": "k", "operator": "In"}]}},
         "spec.rollout.selector.matchExpressions[0].values"),
        ({"injectEnv": "yes"}, "spec.rollout.injectEnv"),
    ],
)  # fmt: skip
def test_bad_rollout_spec_names_the_field(rollout: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        store_rollout(store_body(rollout=rollout))
    assert caught.value.field == field
    assert str(caught.value).startswith(field)


def test_referenced_secrets_include_password_and_tls_material() -> None:
    spec = store_body(
        password={"name": "redis-auth", "key": "password"},
        tls={"enabled": True, "caSecretRef": {"name": "redis-ca"},
             "clientCertSecretRef": {"name": "redis-client"}},
    )["spec"]  # fmt: skip
    assert referenced_secrets(spec) == (
        SecretRef("redis-auth", "password"),
        SecretRef("redis-ca"),
        SecretRef("redis-client"),
    )


# ----------------------------------------------------------------------------- checksum


def test_checksum_is_stable_and_order_independent() -> None:
    config = [("cm", "endpoints.yml", "a: 1\n"), ("cm2", "endpoints.yml", "b: 2\n")]
    secrets = [("s1", "password", "d1"), ("s2", None, "d2")]
    first = checksum(config, secrets)
    assert first == checksum(list(reversed(config)), list(reversed(secrets)))
    assert first == checksum(config + config[:1], secrets + secrets)  # duplicates do not count
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    # Pinned: a change here changes every workload's checksum and rolls every bot once.
    assert checksum([("cm", "k", "x")], []) == checksum([("cm", "k", "x")], [])


@pytest.mark.parametrize(
    ("config", "secrets"),
    [
        ([("cm", "endpoints.yml", "a: 2\n")], [("s1", "password", "d1")]),
        ([("cm", "other.yml", "a: 1\n")], [("s1", "password", "d1")]),
        ([("cm", "endpoints.yml", "a: 1\n")], [("s1", "password", "rotated")]),
        ([("cm", "endpoints.yml", "a: 1\n")], [("s1", "password", None)]),
        ([("cm", "endpoints.yml", "a: 1\n")], [("s9", "password", "d1")]),
    ],
)
def test_checksum_changes_with_any_input(config, secrets) -> None:
    base = checksum([("cm", "endpoints.yml", "a: 1\n")], [("s1", "password", "d1")])
    assert checksum(config, secrets) != base


def test_workload_checksum_ignores_store_order_and_unrendered_keys() -> None:
    lock = store_rollout(store_body(rollout=by_name("bot")), [LOCK_ENV])
    timer = store_rollout(store_body("TimerStore", "timers", by_name("bot")), [TIMER_ENV])
    bot = deployment("bot")
    secrets = {"redis-auth": {"password": "cHcx"}}
    cms = {"bot-endpoints": {**ENDPOINTS}}
    a = plan_namespace(snapshot([lock, timer], [bot], cms, secrets), NOW)
    b = plan_namespace(snapshot([timer, lock], [bot], cms, secrets), NOW)
    assert [p.checksum for p in a] == [p.checksum for p in b]
    # A key the stores do not render is not something the workload loads from Turnstile.
    other = {"bot-endpoints": {**ENDPOINTS, "credentials.yml": "rest: {}\n"}}
    assert plan_namespace(snapshot([lock, timer], [bot], other, secrets), NOW)[0].checksum == (
        a[0].checksum
    )


def test_secret_rotation_changes_checksum_but_a_noop_secret_update_does_not() -> None:
    store = store_rollout(
        store_body(rollout=by_name("bot"), password={"name": "redis-auth", "key": "password"}),
        [LOCK_ENV],
    )
    bot = deployment("bot")

    def digest(secret_data: dict[str, str]) -> str:
        plans = plan_namespace(snapshot([store], [bot], secrets={"redis-auth": secret_data}), NOW)
        return plans[0].checksum

    base = digest({"password": "b2xk"})
    assert digest({"password": "b2xk", "unrelated": "eA=="}) == base
    assert digest({"password": "bmV3"}) != base


def test_tls_secret_content_is_hashed_whole() -> None:
    store = store_rollout(
        store_body(
            rollout=by_name("bot"), tls={"enabled": True, "clientCertSecretRef": {"name": "c"}}
        )
    )
    bot = deployment("bot")
    one = plan_namespace(snapshot([store], [bot], secrets={"c": {"tls.crt": "QQ=="}}), NOW)
    two = plan_namespace(snapshot([store], [bot], secrets={"c": {"tls.crt": "Qg=="}}), NOW)
    assert one[0].checksum != two[0].checksum


# -------------------------------------------------------------------------------- plans


def test_unselected_and_deleting_workloads_are_never_touched() -> None:
    store = store_rollout(store_body(rollout=by_name("bot", "gone")))
    gone_body = {"metadata": {"name": "gone", "deletionTimestamp": NOW}, "spec": {}}
    plans = plan_namespace(
        snapshot([store], [deployment("web"), Workload.from_body("Deployment", gone_body)]), NOW
    )
    assert plans == []


def test_workload_waits_until_its_config_map_key_is_rendered() -> None:
    store = store_rollout(store_body(rollout=by_name("bot")))
    assert plan_namespace(snapshot([store], [deployment("bot")], config_maps={}), NOW) == []
    empty = {"bot-endpoints": {"other": "x"}}
    assert plan_namespace(snapshot([store], [deployment("bot")], config_maps=empty), NOW) == []


def test_patch_only_sets_the_checksum_when_it_differs() -> None:
    store = store_rollout(store_body(rollout=by_name("bot")))
    (plan,) = plan_namespace(snapshot([store], [deployment("bot")]), NOW)
    assert plan.rolls and plan.new_checksum
    assert plan.patch == {
        "metadata": {"annotations": {APPLIED_AT_ANNOTATION: NOW}},
        "spec": {"template": {"metadata": {"annotations": {CHECKSUM_ANNOTATION: plan.checksum}}}},
    }
    # Re-list, restart, second replica: the same state yields no patch at all.
    rolled = deployment(
        "bot", checksum_value=plan.checksum, annotations={APPLIED_AT_ANNOTATION: NOW}
    )
    (again,) = plan_namespace(snapshot([store], [rolled]), LATER)
    assert again.checksum == plan.checksum
    assert again.patch is None and not again.rolls


def test_two_stores_changing_together_give_one_checksum_change() -> None:
    lock = store_rollout(store_body(rollout=by_name("bot")))
    timer = store_rollout(store_body("TimerStore", "timers", by_name("bot")))
    before = plan_namespace(snapshot([lock, timer], [deployment("bot")]), NOW)[0]
    changed = {"bot-endpoints": {"endpoints.yml": "lock_store: {a: 2}\ntimer_store: {b: 2}\n"}}
    after = plan_namespace(
        snapshot([lock, timer], [deployment("bot", checksum_value=before.checksum)], changed), NOW
    )
    assert len(after) == 1 and after[0].rolls  # one workload, one patch, for both stores
    assert {s.ref for s in after[0].stores} == {"LockStore/locks", "TimerStore/timers"}


# -------------------------------------------------------------------------- env injection


def containers_of(workload: Workload, patch: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Apply a strategic-merge patch's containers/env the way the API server merges by name."""
    result = {name: [dict(e) for e in env] for name, env in workload.containers}
    patch_containers = (
        patch.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    )
    for container in patch_containers:
        env = result.setdefault(container["name"], [])
        for entry in container.get("env", []):
            for i, have in enumerate(env):
                if have["name"] == entry["name"]:
                    env[i] = {**have, **entry}
                    break
            else:
                env.append(entry)
    return result


def apply(workload: Workload, patch: dict[str, Any] | None, kind: str = "Deployment") -> Workload:
    """A new Workload with ``patch`` applied (annotations merged, env merged by name)."""
    if patch is None:
        return workload
    annotations = {**workload.annotations, **patch.get("metadata", {}).get("annotations", {})}
    template_annotations = {
        **workload.template_annotations,
        **patch.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {}),
    }
    containers = containers_of(workload, patch)
    body = {
        "metadata": {"name": workload.name, "labels": dict(workload.labels),
                     "annotations": annotations},
        "spec": {"template": {"metadata": {"annotations": template_annotations},
                              "spec": {"containers": [{"name": n, "env": e}
                                                      for n, e in containers.items()]}}},
    }  # fmt: skip
    return Workload.from_body(kind, body)


def inject_store() -> Any:
    return store_rollout(
        store_body(rollout={**by_name("bot"), "injectEnv": True},
                   password={"name": "redis-auth", "key": "password"}),
        [LOCK_ENV],
    )  # fmt: skip


def test_inject_env_adds_secret_refs_to_every_container_in_the_same_patch() -> None:
    bot = deployment("bot", containers=[{"name": "rasa"}, {"name": "actions"}])
    (plan,) = plan_namespace(snapshot([inject_store()], [bot]), NOW)
    assert plan.patch is not None
    template = plan.patch["spec"]["template"]
    assert CHECKSUM_ANNOTATION in template["metadata"]["annotations"]
    entry = EnvFromSecret(*LOCK_ENV).entry()
    assert template["spec"]["containers"] == [
        {"name": "rasa", "env": [entry]},
        {"name": "actions", "env": [entry]},
    ]
    assert plan.patch["metadata"]["annotations"][INJECTED_ENV_ANNOTATION] == LOCK_ENV[0]


def test_inject_env_is_idempotent() -> None:
    store = inject_store()
    bot = deployment("bot", containers=[{"name": "rasa", "env": [{"name": "A", "value": "1"}]}])
    (first,) = plan_namespace(snapshot([store], [bot]), NOW)
    rolled = apply(bot, first.patch)
    (second,) = plan_namespace(snapshot([store], [rolled]), LATER)
    assert second.patch is None
    assert containers_of(rolled, {})["rasa"] == [
        {"name": "A", "value": "1"},
        EnvFromSecret(*LOCK_ENV).entry(),
    ]


def test_inject_env_never_clobbers_or_duplicates_a_user_entry() -> None:
    user_entry = {"name": LOCK_ENV[0], "valueFrom": {"secretKeyRef": {"name": "mine", "key": "pw"}}}
    bot = deployment("bot", containers=[{"name": "rasa", "env": [user_entry]}])
    (plan,) = plan_namespace(snapshot([inject_store()], [bot]), NOW)
    assert plan.patch is not None
    assert "spec" not in plan.patch["spec"]["template"]  # no env change at all
    assert INJECTED_ENV_ANNOTATION not in plan.patch["metadata"]["annotations"]


def test_injected_entry_follows_a_changed_secret_ref() -> None:
    bot = deployment("bot")
    (first,) = plan_namespace(snapshot([inject_store()], [bot]), NOW)
    rolled = apply(bot, first.patch)
    moved = store_rollout(
        store_body(rollout={**by_name("bot"), "injectEnv": True},
                   password={"name": "redis-auth-2", "key": "password"}),
        [(LOCK_ENV[0], "redis-auth-2", "password")],
    )  # fmt: skip
    (second,) = plan_namespace(snapshot([moved], [rolled]), LATER)
    assert second.patch is not None
    assert second.patch["spec"]["template"]["spec"]["containers"] == [
        {"name": "rasa", "env": [EnvFromSecret(LOCK_ENV[0], "redis-auth-2", "password").entry()]}
    ]


def test_patch_is_minimal_json() -> None:
    bot = deployment("bot", checksum_value="sha256:old", annotations={APPLIED_AT_ANNOTATION: NOW})
    patch = workload_patch(bot, "sha256:new", [], LATER)
    assert patch == {
        "metadata": {"annotations": {APPLIED_AT_ANNOTATION: LATER}},
        "spec": {"template": {"metadata": {"annotations": {CHECKSUM_ANNOTATION: "sha256:new"}}}},
    }
    json.dumps(patch)  # serialisable as is
    assert workload_patch(bot, "sha256:old", [], LATER) is None


# ------------------------------------------------------------------------------- status


def test_status_entries_report_checksum_and_when_it_was_applied() -> None:
    lock = store_rollout(store_body(rollout=by_name("bot", "api")))
    timer = store_rollout(store_body("TimerStore", "timers", by_name("api")))
    api = deployment("api", checksum_value="x", annotations={APPLIED_AT_ANNOTATION: NOW})
    plans = plan_namespace(snapshot([lock, timer], [deployment("bot"), api]), LATER)
    entries = status_entries(lock, plans, LATER)
    assert [(e["kind"], e["name"], e["appliedAt"]) for e in entries] == [
        ("Deployment", "api", LATER),
        ("Deployment", "bot", LATER),
    ]
    # bot loads the file timers renders into, so timers reports it too (and rolls it on change)
    assert [e["name"] for e in status_entries(timer, plans, LATER)] == ["api", "bot"]
    settled = [apply(p.workload, p.patch) for p in plans]
    again = plan_namespace(snapshot([lock, timer], settled), "2026-11-23T09:00:00Z")
    assert status_entries(lock, again, "2026-11-23T09:00:00Z") == entries


def test_status_patch_touches_only_status_rollout_and_only_when_different() -> None:
    entries = [{"kind": "Deployment", "name": "bot", "checksum": "sha256:1", "appliedAt": NOW}]
    patch = status_patch({"conditions": [{"type": "Ready"}]}, entries)  # type: ignore[arg-type]
    assert patch == {"status": {"rollout": {"workloads": entries}}}
    current = {"conditions": [{"type": "Ready"}], "rollout": {"workloads": copy.deepcopy(entries)}}
    assert status_patch(current, entries) is None  # type: ignore[arg-type]


def test_workload_ref_orders_and_prints() -> None:
    refs = sorted([WorkloadRef("StatefulSet", "a"), WorkloadRef("Deployment", "b")])
    assert [str(r) for r in refs] == ["Deployment/b", "StatefulSet/a"]


def test_plain_env_counts_in_the_checksum_and_is_injected_as_a_value() -> None:
    def store(lifetime: str) -> Any:
        return store_rollout(
            store_body(rollout={**by_name("bot"), "injectEnv": True}),
            values=[("TICKET_LOCK_LIFETIME", lifetime)],
        )

    (one,) = plan_namespace(snapshot([store("60")], [deployment("bot")]), NOW)
    (two,) = plan_namespace(snapshot([store("90")], [deployment("bot")]), NOW)
    assert one.checksum != two.checksum
    assert one.patch is not None
    assert one.patch["spec"]["template"]["spec"]["containers"] == [
        {"name": "rasa", "env": [{"name": "TICKET_LOCK_LIFETIME", "value": "60"}]}
    ]


def test_tls_files_from_the_renderer_reference_exact_keys() -> None:
    store = store_rollout(
        store_body(rollout=by_name("bot")),
        files=[("/etc/turnstile/lock_store/ca.crt", "redis-ca", "ca.crt")],
    )
    assert store is not None and store.secrets == (SecretRef("redis-ca", "ca.crt"),)


def test_a_workload_rolls_when_a_store_it_does_not_name_changes_the_file_it_loads() -> None:
    # bot names only the LockStore, but it loads endpoints.yml whole, timer_store section and
    # ${TURNSTILE_TIMER_STORE_PASSWORD} included: the timer store's Secret must count too.
    lock = store_rollout(
        store_body(rollout={**by_name("bot"), "injectEnv": True},
                   password={"name": "redis-auth", "key": "password"}),
        [LOCK_ENV],
    )  # fmt: skip
    timer = store_rollout(
        store_body("TimerStore", "timers", password={"name": "timer-auth", "key": "password"}),
        [("TURNSTILE_TIMER_STORE_PASSWORD", "timer-auth", "password")],
    )
    bot = deployment("bot")

    def plan(timer_password: str) -> Any:
        secrets = {
            "redis-auth": {"password": "bG9jaw=="},
            "timer-auth": {"password": timer_password},
        }
        (only,) = plan_namespace(snapshot([lock, timer], [bot], secrets=secrets), NOW)
        return only

    before = plan("dGltZXI=")
    assert {s.ref for s in before.stores} == {lock.ref, timer.ref}
    assert plan("cm90YXRlZA==").checksum != before.checksum
    env = before.patch["spec"]["template"]["spec"]["containers"][0]["env"]
    assert sorted(e["name"] for e in env) == [
        "TURNSTILE_LOCK_STORE_PASSWORD",
        "TURNSTILE_TIMER_STORE_PASSWORD",
    ]


# --------------------------------------------------------- never roll onto a broken file


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("lock_store: [unclosed\n", "not valid YAML at line"),
        ("- just\n- a list\n", "a list, not a mapping of sections"),
        ("lock_store:\n\ttype: x\n", "not valid YAML at line 2"),
    ],
)
def test_a_workload_is_held_on_its_config_while_the_file_does_not_parse(
    text: str, problem: str
) -> None:
    store = store_rollout(store_body(rollout=by_name("bot")))
    running = deployment("bot", checksum_value="sha256:running")
    broken = {"bot-endpoints": {"endpoints.yml": text}}
    [plan] = plan_namespace(snapshot([store], [running], config_maps=broken), NOW)
    assert plan.patch is None and not plan.rolls
    assert plan.checksum == "sha256:running"
    assert plan.held is not None
    assert "bot-endpoints/endpoints.yml" in plan.held and problem in plan.held
    [entry] = status_entries(store, [plan], NOW)
    assert entry["held"] == plan.held and entry["checksum"] == "sha256:running"

    fixed = plan_namespace(snapshot([store], [running]), NOW)
    assert fixed[0].held is None and fixed[0].rolls


def test_a_never_rolled_workload_held_on_a_broken_file_has_no_checksum_in_status() -> None:
    store = store_rollout(store_body(rollout=by_name("bot")))
    broken = {"bot-endpoints": {"endpoints.yml": "{"}}
    [plan] = plan_namespace(snapshot([store], [deployment("bot")], config_maps=broken), NOW)
    assert plan.patch is None and plan.held
    [entry] = status_entries(store, [plan], NOW)
    assert "checksum" not in entry


def test_an_invalid_store_holds_only_the_workloads_it_could_touch() -> None:
    from turnstile.operator.decide.rollout import invalid_store  # noqa: PLC0415

    bad_body = store_body("TimerStore", "timers", by_name("shared", "mine"))
    bad = invalid_store(bad_body, "spec.rollout.selector.matchExpressions[0].values: ...")
    good = store_rollout(store_body(rollout=by_name("bot", "shared"), config_map="good"))
    config_maps = {"good": ENDPOINTS, "bot-endpoints": ENDPOINTS}
    workloads = [deployment("bot"), deployment("shared"), deployment("mine")]
    plans = {p.workload.name: p for p in plan_namespace(
        snapshot([good, bad], workloads, config_maps=config_maps), NOW)}
    assert plans["bot"].rolls and plans["bot"].held is None  # the rest keeps rolling
    assert not plans["shared"].rolls and "TimerStore/timers" in (plans["shared"].held or "")
    assert "mine" not in plans  # only the invalid store selects it: nothing happens


def test_the_injected_fingerprint_is_the_one_of_the_section_in_the_file() -> None:
    """The pin a pod gets (``TURNSTILE_EXPECT_LOCK_STORE``) is taken from the file it will
    mount, not from the store's spec: while a change is held back (a lock-affecting change
    during an earlier transition keeps the file as it is), pinning the spec's new section
    rolled the bots onto pods that refused their file until the transition ended."""
    body = store_body(rollout={**by_name("bot"), "injectEnv": True})
    body["spec"]["redis"]["keyPrefix"] = "second"  # the spec moved on ...
    spec_pins = plain_env("LockStore", parse_spec("LockStore", body["spec"]))
    store = store_rollout(body, values=spec_pins)
    held = ("lock_store:\n  type: turnstile.rasa.TicketLockStore\n  deployment_mode: standard\n"
            "  host: redis\n  port: 6379\n  key_prefix: first\n")  # ... the file did not yet
    (plan,) = plan_namespace(snapshot([store], [deployment()],
                                      {"bot-endpoints": {"endpoints.yml": held}}), NOW)
    assert plan.patch is not None
    env = {e["name"]: e.get("value")
           for c in plan.patch["spec"]["template"]["spec"]["containers"] for e in c["env"]}
    pin = env[EXPECT_ENV["lock_store"]]
    assert pin == file_fingerprint(held, "lock_store")
    assert pin != dict(spec_pins)[EXPECT_ENV["lock_store"]]

    # Once the file holds the spec's section, the pin is the spec's too (no rollout of its own).
    rendered = held.replace("key_prefix: first", "key_prefix: second")
    (after,) = plan_namespace(snapshot([store], [deployment()],
                                       {"bot-endpoints": {"endpoints.yml": rendered}}), NOW)
    assert after.patch is not None
    env = {e["name"]: e.get("value")
           for c in after.patch["spec"]["template"]["spec"]["containers"] for e in c["env"]}
    assert env[EXPECT_ENV["lock_store"]] == dict(spec_pins)[EXPECT_ENV["lock_store"]]


def test_stores_written_for_different_files_hold_the_workload_and_say_why() -> None:
    """A LockStore for ``endpoints.yml`` and a TimerStore for an engine project's
    ``integrations.yml`` on one bot: Rasa reads its stores from one of the two, so new pods
    would start without the other's section (the launcher refuses them). The workload is held
    on what it runs, with a reason naming both stores and the fix; one format rolls it."""
    locks = store_body(rollout=by_name("bot"))
    timers = store_body("TimerStore", "timers", by_name("bot"), config_map="bot-integrations")
    timers["spec"]["configMap"]["format"] = "integrations"

    def rollout_of(body: dict[str, Any]) -> Any:
        return store_rollout(body, values=plain_env(body["kind"], parse_spec(body["kind"],
                                                                             body["spec"])))

    config_maps = {"bot-endpoints": ENDPOINTS,
                   "bot-integrations": {"integrations.yml": "timer_store:\n  type: x\n"}}
    running = deployment("bot", checksum_value="sha256:running")
    [plan] = plan_namespace(snapshot([rollout_of(locks), rollout_of(timers)], [running],
                                     config_maps=config_maps), NOW)  # fmt: skip
    assert plan.patch is None and not plan.rolls and plan.checksum == "sha256:running"
    assert plan.held_reason == MIXED_FILES
    assert plan.held is not None
    assert "LockStore/locks: endpoints" in plan.held
    assert "TimerStore/timers: integrations" in plan.held
    assert "spec.configMap.format" in plan.held
    [entry] = status_entries(rollout_of(locks), [plan], NOW)
    assert entry["held"] == plan.held

    timers["spec"]["configMap"] = {"name": "bot-endpoints"}  # both for endpoints.yml
    [fixed] = plan_namespace(snapshot([rollout_of(locks), rollout_of(timers)], [running],
                                      config_maps=config_maps), NOW)  # fmt: skip
    assert fixed.held is None and fixed.rolls
