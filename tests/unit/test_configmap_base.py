"""``spec.configMap.base``: the key the stores render into is composed from a base the user
owns (their own sections, byte for byte) with every store's section merged in; anything else
written into the composed key is undone, and a base that is missing or does not load writes
nothing."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import yaml

from turnstile.operator.decide.configmaps import (
    Owner,
    Writer,
    base_of,
    base_text,
    composed,
    corrected,
    section_for,
    with_section,
    without_section,
)
from turnstile.operator.decide.render import section
from turnstile.operator.model.crds import crd
from turnstile.operator.model.errors import BaseError, SpecError
from turnstile.operator.model.kinds import KINDS
from turnstile.operator.model.specs import (
    RULES,
    BaseRef,
    StoreSpec,
    configmap_base_name,
    parse_spec,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
REDIS = {"deploymentMode": "standard", "host": "redis.bots.svc"}
LOCKS = Owner("turnstile.dev/v1alpha1", "LockStore", "locks", "uid-1")
TIMERS = Owner("turnstile.dev/v1alpha1", "TimerStore", "timers", "uid-2")
#: The user's own sections as they wrote them: comments, quoting and YAML 1.2 details stay.
BASE = """\
# the bot team's sections
tracker_store:
  type: redis
  url: "${TRACKER_HOST}"
  port: 06379
  record_exp: 3600
action_endpoint:
  url: http://actions:5055/webhook   # the action server
"""


def _store(kind: str = "LockStore", name: str = "locks", **config_map: Any) -> StoreSpec:
    spec = {"redis": REDIS, "configMap": {"name": "bot", **config_map}}
    return parse_spec(kind, spec, namespace="bots", name=name)


def _writers(*stores: tuple[StoreSpec, Owner]) -> list[Writer]:
    return [
        Writer("endpoints.yml", s.info.section, section(s), owner, s) for s, owner in stores
    ]


def _compose(existing: Any, base: str, *stores: tuple[StoreSpec, Owner]) -> Any:
    return corrected(
        existing, namespace="bots", name="bot", sections=_writers(*stores), now=NOW,
        bases={"endpoints.yml": base},
    )  # fmt: skip


# ------------------------------------------------------------------------------ the spec


def test_the_base_key_defaults_to_the_key_the_stores_render() -> None:
    store = _store(base={"name": "bot-base"})
    assert store.config_map is not None
    assert store.config_map.base == BaseRef("bot-base", "endpoints.yml")
    engine = _store(format="integrations", base={"name": "bot-base", "key": "mine.yml"})
    assert engine.config_map is not None
    assert engine.config_map.base == BaseRef("bot-base", "mine.yml")
    assert configmap_base_name({"name": "bot", "base": {"name": "bot-base"}}) == "bot-base"
    assert configmap_base_name({"name": "bot", "base": "bot-base"}) is None  # lenient reader


@pytest.mark.parametrize(
    ("base", "message"),
    [
        ({"name": "bot"}, "spec.configMap.base.name: " + RULES["configmap_base"] + " (got 'bot')"),
        ({"name": "Bot_Base"}, "spec.configMap.base.name: a ConfigMap name (lowercase DNS "
         "subdomain) (got 'Bot_Base')"),
        ({}, "spec.configMap.base.name: a ConfigMap name"),
        ({"name": "bot-base", "key": ".."}, "spec.configMap.base.key: "
         + RULES["configmap_base_key"] + " (got '..')"),
        ({"name": "bot-base", "key": "a/b"}, "spec.configMap.base.key: "),
    ],
)  # fmt: skip
def test_a_bad_base_names_the_field_the_value_and_what_is_accepted(
    base: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as bad:
        _store(base=base)
    assert message in str(bad.value)


def test_the_crd_declares_the_base_and_refuses_the_target_itself() -> None:
    for info in KINDS.values():
        config_map = crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
            "properties"]["spec"]["properties"]["configMap"]  # fmt: skip
        base = config_map["properties"]["base"]
        assert base["required"] == ["name"]
        assert set(base["properties"]) == {"name", "key"}
        (rule,) = [r for r in config_map["x-kubernetes-validations"]
                   if r["fieldPath"] == ".base.name"]  # fmt: skip
        assert rule["rule"] == "!has(self.base) || self.base.name != self.name"
        assert rule["message"] == RULES["configmap_base"]


# ------------------------------------------------------------------------ composition


def test_a_new_configmap_is_the_base_with_the_sections_and_every_base_byte_kept() -> None:
    locks = _store(base={"name": "bot-base"})
    body = with_section(None, namespace="bots", name="bot", key="endpoints.yml",
                        section="lock_store", content=section(locks), owner=LOCKS,
                        base=BASE)  # fmt: skip
    assert body is not None
    text = body["data"]["endpoints.yml"]
    assert text.startswith(BASE)  # the user's bytes, comments and 06379 included
    assert yaml.safe_load(text)["lock_store"] == section(locks)


def test_the_composed_key_follows_the_base_and_keeps_every_stores_section() -> None:
    locks, timers = _store(base={"name": "bot-base"}), _store("TimerStore", "timers")
    first = _compose(None, BASE, (locks, LOCKS), (timers, TIMERS))
    assert first is not None
    assert list(yaml.safe_load(first["data"]["endpoints.yml"])) == [
        "tracker_store", "action_endpoint", "lock_store", "timer_store",
    ]  # fmt: skip
    assert _compose(first, BASE, (locks, LOCKS), (timers, TIMERS)) is None  # nothing to do

    changed = BASE.replace("record_exp: 3600", "record_exp: 7200")
    second = _compose(first, changed, (locks, LOCKS), (timers, TIMERS))
    assert second is not None
    text = second["data"]["endpoints.yml"]
    assert text.startswith(changed)
    loaded = yaml.safe_load(text)
    assert loaded["lock_store"] == section(locks) and loaded["timer_store"] == section(timers)


def test_a_hand_edit_of_the_composed_key_is_undone_from_the_base() -> None:
    locks = _store(base={"name": "bot-base"})
    body = _compose(None, BASE, (locks, LOCKS))
    assert body is not None
    edited = {**body, "data": {"endpoints.yml": body["data"]["endpoints.yml"].replace(
        "record_exp: 3600", "record_exp: 1") + "event_broker:\n  type: pika\n"}}  # fmt: skip
    undone = _compose(edited, BASE, (locks, LOCKS))
    assert undone is not None
    assert undone["data"]["endpoints.yml"] == body["data"]["endpoints.yml"]


def test_a_section_in_the_base_is_replaced_by_the_stores_and_returns_when_it_goes() -> None:
    base = BASE + "lock_store:\n  type: redis\n  url: old-redis\n"
    locks = _store(base={"name": "bot-base"})
    body = _compose(None, base, (locks, LOCKS))
    assert body is not None
    assert yaml.safe_load(body["data"]["endpoints.yml"])["lock_store"]["type"] == (
        "turnstile.rasa.TicketLockStore"
    )
    gone = without_section(body, key="endpoints.yml", section="lock_store", owner=LOCKS,
                           base=base)  # fmt: skip
    assert gone is not None
    assert gone["data"]["endpoints.yml"] == base


def test_removing_one_store_keeps_the_others_section_on_the_base() -> None:
    locks, timers = _store(base={"name": "bot-base"}), _store("TimerStore", "timers")
    body = _compose(None, BASE, (locks, LOCKS), (timers, TIMERS))
    gone = without_section(body, key="endpoints.yml", section="lock_store", owner=LOCKS,
                           base=BASE)  # fmt: skip
    assert gone is not None
    loaded = yaml.safe_load(gone["data"]["endpoints.yml"])
    assert "lock_store" not in loaded and loaded["timer_store"] == section(timers)
    assert gone["data"]["endpoints.yml"].startswith(BASE)


def test_a_store_section_missing_from_an_unparseable_key_is_written_again() -> None:
    assert composed(BASE, "lock_store: [unclosed", ["lock_store"]) == BASE


def test_adopting_a_base_whose_lock_store_is_rasas_starts_a_transition_from_it() -> None:
    base = BASE + "lock_store:\n  type: redis\n  url: old-redis\n"
    locks = _store(base={"name": "bot-base"})
    content, decision = section_for(locks, None, "endpoints.yml", NOW, base=base)
    assert decision is not None and decision.started
    assert content["transition_from"] == {"type": "redis", "url": "old-redis"}


# --------------------------------------------------------------- the base and its faults


def test_the_base_text_is_read_from_its_key() -> None:
    ref = BaseRef("bot-base", "endpoints.yml")
    assert base_text(ref, {"endpoints.yml": BASE}, namespace="bots", composes="x") == BASE


@pytest.mark.parametrize(
    ("data", "reason", "message"),
    [
        (None, "BaseNotFound", "spec.configMap.base.name: ConfigMap bots/bot-base does not "
         "exist; ConfigMap bots/bot is composed from it and stays as it is until it does"),
        ({"other.yml": "", "credentials.yml": ""}, "BaseNotFound",
         "spec.configMap.base.key: ConfigMap bots/bot-base has no key 'endpoints.yml' (it has "
         "credentials.yml, other.yml)"),
        ({"endpoints.yml": "tracker_store:\n  password: \"s3cret\n  port: 1\n"}, "BaseInvalid",
         "spec.configMap.base: ConfigMap bots/bot-base key endpoints.yml is not valid YAML"),
        ({"endpoints.yml": "- a list\n"}, "BaseInvalid", "not a mapping of sections"),
    ],
)  # fmt: skip
def test_a_base_that_is_missing_or_does_not_load_names_what_is_wrong(
    data: dict[str, str] | None, reason: str, message: str
) -> None:
    with pytest.raises(BaseError) as bad:
        base_text(BaseRef("bot-base", "endpoints.yml"), data, namespace="bots",
                  composes="ConfigMap bots/bot")  # fmt: skip
    assert bad.value.reason == reason
    assert message in bad.value.message
    assert "s3cret" not in bad.value.message  # the base's text is never quoted


def test_stores_of_one_key_must_name_one_base_and_one_naming_none_follows() -> None:
    locks = _store(base={"name": "bot-base"})
    follower = _store("TimerStore", "timers")
    other = _store("TimerStore", "timers", base={"name": "elsewhere"})
    assert base_of(_writers((locks, LOCKS), (follower, TIMERS)), "endpoints.yml") == BaseRef(
        "bot-base", "endpoints.yml"
    )
    assert base_of(_writers((follower, TIMERS)), "endpoints.yml") is None
    with pytest.raises(BaseError) as bad:
        base_of(_writers((locks, LOCKS), (other, TIMERS)), "endpoints.yml")
    assert bad.value.reason == "BaseConflict"
    assert "bot-base" in bad.value.message and "elsewhere" in bad.value.message
