"""A LockStore's lock-affecting change renders a transition; its end rolls no pod (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import yaml

from turnstile.operator.decide import conditions as cond
from turnstile.operator.decide import transition
from turnstile.operator.decide.configmaps import (
    Owner,
    corrected,
    recorded_secrets,
    section_for,
    writers,
)
from turnstile.operator.decide.render import (
    current_section,
    decided_section,
    merge_section,
    render_files,
    secret_env,
    section,
    without_transition,
)
from turnstile.operator.decide.rollout import Snapshot, Workload, plan_namespace, store_rollout
from turnstile.operator.model.errors import SpecError
from turnstile.operator.model.specs import StoreSpec, parse_store

NOW = datetime(2026, 12, 1, 18, 20, tzinfo=timezone.utc)
USER_FILE = "# the bot's own file\naction_endpoint:\n  url: http://actions:5055/webhook\n"


def _body(kind: str = "LockStore", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "redis": {"host": "redis", "port": 6379, "keyPrefix": "bot"},
        "configMap": {"name": "bot-endpoints"},
        "rollout": {"workloads": [{"kind": "Deployment", "name": "bot"}]},
    }
    for key, value in spec.items():
        if key == "redis":
            base["redis"] = {**base["redis"], **value}
        else:
            base[key] = value
    return {
        "apiVersion": "turnstile.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "locks", "namespace": "bots", "uid": "u1"},
        "spec": base,
    }


def _store(**spec: Any) -> StoreSpec:
    return parse_store(_body(**spec))


def _prev(text: str) -> dict[str, Any] | None:
    return current_section(text, "lock_store")


def _file(store: StoreSpec, text: str = USER_FILE, now: datetime | None = None) -> str:
    content = decided_section(store, _prev(text), now or NOW)[0]
    return merge_section(text, "lock_store", content)


def test_key_prefix_change_renders_the_previous_section_and_the_rollout_deadline() -> None:
    old = _file(_store())
    new = _file(_store(redis={"keyPrefix": "botv2"}), old)
    lock = yaml.safe_load(new)["lock_store"]
    assert lock["key_prefix"] == "botv2"
    assert lock["transition_from"] == section(_store())  # exactly as it was rendered
    assert lock["transition_until"] == "2026-12-01T18:30:00Z"  # now + 600 s (the default)
    assert new.startswith(USER_FILE)  # the user's bytes stay


@pytest.mark.parametrize(
    "change",
    [
        {"redis": {"keyPrefix": "botv2"}},
        {"redis": {"db": 3}},
        {"redis": {"host": "redis-new"}},
        {"redis": {"port": 6380}},
        {"implementation": "rasa"},
        {"redis": {"deploymentMode": "cluster", "host": None,
                   "endpoints": ["r1:7000", "r2:7000", "r3:7000"]}},
    ],
    ids=["keyPrefix", "db", "host", "port", "implementation", "deploymentMode"],
)
def test_each_lock_affecting_setting_starts_a_transition(change: dict[str, Any]) -> None:
    old = _file(_store())
    store = _store(**change)
    content, decision = decided_section(store, _prev(old), NOW)
    assert decision is not None and decision.started
    assert content["transition_from"] == section(_store())


@pytest.mark.parametrize(
    "change",
    [{"lockLifetime": 30}, {"redis": {"socketTimeout": 2}},
     {"redis": {"username": "bots", "passwordSecretRef": {"name": "redis-auth"}}}],
    ids=["lockLifetime", "socketTimeout", "username"],
)
def test_settings_that_move_no_lock_render_no_transition(change: dict[str, Any]) -> None:
    old = _file(_store())
    content, decision = decided_section(_store(**change), _prev(old), NOW)
    assert "transition_from" not in content and "transition_until" not in content
    assert decision is not None and decision.previous is None


def test_first_render_and_duration_zero_switch_at_once() -> None:
    assert "transition_from" not in decided_section(_store(), _prev(USER_FILE), NOW)[0]
    old = _file(_store())
    instant = _store(redis={"keyPrefix": "botv2"}, transition={"durationSeconds": 0})
    assert "transition_from" not in decided_section(instant, _prev(old), NOW)[0]


def test_duration_is_the_spec_field_within_bounds() -> None:
    old = _file(_store())
    quick = _store(redis={"keyPrefix": "botv2"}, transition={"durationSeconds": 5})
    assert decided_section(quick, _prev(old), NOW)[0]["transition_until"] == "2026-12-01T18:20:05Z"
    with pytest.raises(SpecError, match=r"spec\.transition\.durationSeconds"):
        _store(transition={"durationSeconds": 86401})
    with pytest.raises(SpecError, match=r"spec\.transition\.durationSeconds"):
        _store(transition={"durationSeconds": -1})


def test_a_rerender_during_the_transition_keeps_it_and_passes_other_settings() -> None:
    old = _file(_store())
    moved = _file(_store(redis={"keyPrefix": "botv2"}), old)
    later = NOW + timedelta(seconds=100)
    again = _file(_store(redis={"keyPrefix": "botv2"}), moved, later)
    assert again == moved  # an operator restart or a re-check changes nothing
    tuned = yaml.safe_load(_file(_store(redis={"keyPrefix": "botv2"}, lockLifetime=30),
                                 moved, later))["lock_store"]  # fmt: skip
    assert tuned["lock_lifetime"] == 30
    assert tuned["transition_until"] == "2026-12-01T18:30:00Z"


def test_a_second_lock_change_during_a_transition_is_held_until_it_ends() -> None:
    old = _file(_store())
    moved = _file(_store(redis={"keyPrefix": "botv2"}), old)
    third = _store(redis={"keyPrefix": "botv3"})
    content, decision = decided_section(third, _prev(moved), NOW + timedelta(seconds=10))
    assert decision is not None and decision.pending
    assert merge_section(moved, "lock_store", content) == moved  # the file stays as it is
    assert transition.status_of(decision) == {
        "from": {"type": "turnstile.rasa.TicketLockStore", "deployment_mode": "standard",
                 "host": "redis", "port": 6379, "key_prefix": "bot"},
        "until": "2026-12-01T18:30:00Z", "pending": True,
    }  # fmt: skip
    after = NOW + timedelta(seconds=601)
    content, decision = decided_section(third, _prev(moved), after)
    assert content["key_prefix"] == "botv3"
    assert content["transition_from"]["key_prefix"] == "botv2"  # what the pods then run


def test_expired_keys_are_removed_and_the_rollout_checksum_does_not_move() -> None:
    old = _file(_store())
    moved = _file(_store(redis={"keyPrefix": "botv2"}), old)
    ended = _file(_store(redis={"keyPrefix": "botv2"}), moved, NOW + timedelta(seconds=600))
    assert "transition_" not in ended
    assert ended == merge_section(USER_FILE, "lock_store", section(_store(redis={
        "keyPrefix": "botv2"})))  # fmt: skip
    assert without_transition(moved) == ended
    assert without_transition(ended) == ended

    def plan(text: str) -> str:
        body = _body(redis={"keyPrefix": "botv2"})
        workload = Workload.from_body("Deployment", {"metadata": {"name": "bot"}, "spec": {}})
        snap = Snapshot(stores=(store_rollout(body),), workloads=(workload,),
                        config_maps={"bot-endpoints": {"endpoints.yml": text}})  # fmt: skip
        return plan_namespace(snap, "2026-12-01T18:20:00Z")[0].checksum

    assert plan(moved) == plan(ended) != plan(old)


def test_drift_correction_decides_the_same_section_as_the_reconcile() -> None:
    old = _file(_store())
    store = _store(redis={"keyPrefix": "botv2"})
    owner = Owner("turnstile.dev/v1alpha1", "LockStore", "locks", "u1")
    existing = {"metadata": {"name": "bot-endpoints", "namespace": "bots"},
                "data": {"endpoints.yml": old}}  # fmt: skip
    (sections,) = writers([(store, owner)]).values()
    fixed = corrected(existing, namespace="bots", name="bot-endpoints", sections=sections, now=NOW)
    assert fixed is not None
    assert fixed["data"]["endpoints.yml"] == _file(store, old)
    again = corrected(fixed, namespace="bots", name="bot-endpoints", sections=sections, now=NOW)
    assert again is None


def test_a_hand_edit_is_put_back_not_taken_for_what_pods_run() -> None:
    store = _store()
    owner = Owner("turnstile.dev/v1alpha1", "LockStore", "locks", "u1")
    (sections,) = writers([(store, owner)]).values()
    existing = {"metadata": {"name": "bot-endpoints", "namespace": "bots"},
                "data": {"endpoints.yml": USER_FILE}}  # fmt: skip
    first = corrected(existing, namespace="bots", name="bot-endpoints", sections=sections, now=NOW)
    assert first is not None
    rendered = first["data"]["endpoints.yml"]
    first["data"]["endpoints.yml"] = rendered.replace("key_prefix: bot", "key_prefix: byhand")
    fixed = corrected(first, namespace="bots", name="bot-endpoints", sections=sections, now=NOW)
    assert fixed is not None and fixed["data"]["endpoints.yml"] == rendered  # no transition


def test_timer_stores_never_transition() -> None:
    body = _body("TimerStore")
    body["spec"].pop("rollout")
    timers = parse_store(body)
    old = merge_section(USER_FILE, "timer_store", section(timers))
    body["spec"]["redis"]["keyPrefix"] = "botv2"
    content, decision = decided_section(parse_store(body), current_section(old, "timer_store"), NOW)
    assert decision is None and "transition_from" not in content


def test_status_and_events_show_the_transition_start_and_end() -> None:
    old = _file(_store())
    _, decision = decided_section(_store(redis={"keyPrefix": "botv2"}), _prev(old), NOW)
    status = transition.status_of(decision)
    assert status is not None and status["until"] == "2026-12-01T18:30:00Z"
    started = cond._transition_events(None, status)
    assert [e.reason for e in started] == ["TransitionStarted"]
    assert "key_prefix=bot" in started[0].message
    assert cond._transition_events(status, status) == []
    assert [e.reason for e in cond._transition_events(status, None)] == ["TransitionEnded"]


def test_render_files_renders_a_transition_from_a_previous_file() -> None:
    before = render_files([_store()])
    new = render_files([_store(redis={"keyPrefix": "botv2"})], before, now=NOW,
                       until=datetime(2026, 12, 2, tzinfo=timezone.utc))  # fmt: skip
    (text,) = new.values()
    lock = yaml.safe_load(text)["lock_store"]
    assert lock["transition_from"]["key_prefix"] == "bot"
    assert lock["transition_until"] == "2026-12-02T00:00:00Z"
    assert _prev(text) == lock


def test_until_is_rfc3339_or_a_unix_timestamp_and_bad_values_name_the_key() -> None:
    assert transition.parse_time("2026-12-01T18:30:00Z") == NOW + timedelta(minutes=10)
    assert transition.parse_time(NOW.timestamp()) == NOW
    with pytest.raises(SpecError, match="transition_until"):
        transition.parse_time("tomorrow")
    with pytest.raises(SpecError, match="transition_until"):
        transition.parse_time("2026-12-01T18:30:00")  # no zone


def test_a_password_secret_changed_with_the_redis_gets_its_own_variable() -> None:
    auth = {"passwordSecretRef": {"name": "old-auth"}}
    before = _store(redis=auth)
    after = _store(redis={"host": "redis-new", "passwordSecretRef": {"name": "new-auth"}})
    env = [{"name": "TURNSTILE_LOCK_STORE_PASSWORD", "secretName": "old-auth",
            "secretKey": "password"}]  # fmt: skip
    moved = transition.moved_secrets(env, secret_env("LockStore", after))
    assert moved == (("TURNSTILE_LOCK_PREVIOUS_PASSWORD", "old-auth", "password"),)
    assert transition.moved_secrets(env, secret_env("LockStore", before)) == ()

    owner = Owner("turnstile.dev/v1alpha1", "LockStore", "locks", "u1")
    (first,) = writers([(before, owner)]).values()
    cm = corrected({"metadata": {"name": "bot-endpoints", "namespace": "bots"},
                    "data": {"endpoints.yml": USER_FILE}},
                   namespace="bots", name="bot-endpoints", sections=first, now=NOW)  # fmt: skip
    (second,) = writers([(after, owner)], {"u1": moved}).values()
    cm = corrected(cm, namespace="bots", name="bot-endpoints", sections=second, now=NOW)
    assert cm is not None
    lock = yaml.safe_load(cm["data"]["endpoints.yml"])["lock_store"]
    assert lock["password"] == "${TURNSTILE_LOCK_STORE_PASSWORD}"
    assert lock["transition_from"]["password"] == "${TURNSTILE_LOCK_PREVIOUS_PASSWORD}"
    assert recorded_secrets(cm, "endpoints.yml") == moved
    # a later render (status rewritten: nothing "moved" any more) keeps the renamed section
    (again,) = writers([(after, owner)]).values()
    assert corrected(cm, namespace="bots", name="bot-endpoints", sections=again, now=NOW) is None

    body = _body(redis={"host": "redis-new", "passwordSecretRef": {"name": "new-auth"}},
                 rollout={"workloads": [{"kind": "Deployment", "name": "bot"}],
                          "injectEnv": True})  # fmt: skip
    rollout = store_rollout(body, secret_env("LockStore", after))
    workload = Workload.from_body("Deployment", {"metadata": {"name": "bot"}, "spec": {
        "template": {"spec": {"containers": [{"name": "rasa"}]}}}})  # fmt: skip

    def plan(text: str, previous: Any) -> Any:
        snap = Snapshot(stores=(rollout,), workloads=(workload,),
                        config_maps={"bot-endpoints": {"endpoints.yml": text}},
                        transition_env=previous)  # fmt: skip
        return plan_namespace(snap, "2026-12-01T18:20:00Z")[0]

    during = plan(cm["data"]["endpoints.yml"], {("bot-endpoints", "endpoints.yml"): moved})
    (container,) = during.patch["spec"]["template"]["spec"]["containers"]
    assert {"name": "TURNSTILE_LOCK_PREVIOUS_PASSWORD", "valueFrom": {"secretKeyRef": {
        "name": "old-auth", "key": "password", "optional": True}}} in container["env"]
    ended = without_transition(cm["data"]["endpoints.yml"])
    assert plan(ended, {}).checksum == during.checksum  # the end rolls nothing

    _, decision = section_for(after, cm, "endpoints.yml", NOW)
    status = transition.status_of(decision)
    assert status is not None and status["secretEnv"] == [
        {"name": "TURNSTILE_LOCK_PREVIOUS_PASSWORD", "secretName": "old-auth",
         "secretKey": "password"}]  # fmt: skip


def test_a_tls_secret_change_with_the_lock_change_is_warned_once_and_kept() -> None:
    old = _file(_store())
    _, decision = decided_section(_store(redis={"host": "redis-new"}), _prev(old), NOW)
    files = [{"path": "/etc/turnstile/lock_store/ca.crt", "secretName": "ca", "secretKey": "c"}]
    new_files = [{**files[0], "secretName": "new-ca"}]
    same = transition.status_of(decision, {"secretFiles": files}, {"secretFiles": files})
    assert same is not None and "warning" not in same
    status = transition.status_of(decision, {"secretFiles": files}, {"secretFiles": new_files})
    assert status is not None and "TLS" in status["warning"]
    events = cond._transition_events(None, status)
    assert [e.reason for e in events] == ["TransitionStarted", "TransitionCredentialsChanged"]
    later = transition.decide(_prev(_file(_store(redis={"host": "redis-new"}), old)),
                              section(_store(redis={"host": "redis-new"})), now=NOW,
                              duration=600)  # fmt: skip
    kept = transition.status_of(later, {"transition": status}, {"secretFiles": new_files})
    assert kept == status
    assert cond._transition_events(status, kept) == []


def test_a_held_change_is_one_warning_event() -> None:
    running = {"from": {"key_prefix": "bot"}, "until": "2026-12-01T18:30:00Z"}
    held = {**running, "pending": True}
    assert [e.reason for e in cond._transition_events(running, held)] == ["TransitionPending"]
    assert cond._transition_events(held, held) == []


def test_the_crd_bounds_the_duration_as_the_parser_does() -> None:
    from turnstile.operator.model import schema  # noqa: PLC0415
    from turnstile.operator.model.crds import crd  # noqa: PLC0415
    from turnstile.operator.model.kinds import LOCK_STORE, TIMER_STORE  # noqa: PLC0415

    def spec_props(info: Any) -> dict[str, Any]:
        root = crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        return root["properties"]["spec"]["properties"]  # type: ignore[no-any-return]

    field = spec_props(LOCK_STORE)["transition"]["properties"]["durationSeconds"]
    bounds = schema.TRANSITION_DURATION
    assert (field["minimum"], field["maximum"]) == (bounds.minimum, bounds.maximum)
    assert field["default"] == schema.TRANSITION_DURATION_DEFAULT == _store().transition_seconds
    assert "transition" not in spec_props(TIMER_STORE)


def test_adopting_turnstile_transitions_from_rasas_own_section_in_a_users_file() -> None:
    users = ("lock_store:\n  type: concurrent_redis\n  host: redis\n  key_prefix: bot\n"
             + USER_FILE)  # fmt: skip
    existing = {"metadata": {"name": "bot-endpoints", "namespace": "bots"},
                "data": {"endpoints.yml": users}}  # fmt: skip
    owner = Owner("turnstile.dev/v1alpha1", "LockStore", "locks", "u1")
    (sections,) = writers([(_store(), owner)]).values()
    new = corrected(existing, namespace="bots", name="bot-endpoints", sections=sections, now=NOW)
    assert new is not None
    lock = yaml.safe_load(new["data"]["endpoints.yml"])["lock_store"]
    assert lock["type"] == "turnstile.rasa.TicketLockStore"
    assert lock["transition_from"] == {"type": "concurrent_redis", "host": "redis",
                                       "key_prefix": "bot"}  # fmt: skip
    assert new["metadata"]["annotations"]["turnstile.dev/pre-existing"] == "true"
