"""Ready means what the bots will use: their database (issue 26). Pure functions only; the k8s
tier proves the same end to end."""

from __future__ import annotations

from typing import Any

import pytest

from turnstile.operator.decide.credentials import Credentials
from turnstile.operator.decide.render import section
from turnstile.operator.model.specs import parse_spec
from turnstile.operator.probes import settings_for
from turnstile.stores.config import RedisSettings, SettingsReader, default_db


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
