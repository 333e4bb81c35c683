"""What the operator renders is what Rasa loads: ``turnstile render`` -> Rasa's reader -> a store.

The rendering runs where the operator runs (the main venv's ``turnstile`` CLI, the same pure
function the operator writes ConfigMaps with); the reading runs here, in a venv with real Rasa
code, as a bot pod does: ``read_endpoint_config`` expands the ``${TURNSTILE_*_PASSWORD}``
references from the environment, Rasa's factory builds the store, and the store works against
real Redis in each mode.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.platform.redis_fixtures import REDIS_PASSWORD
from tests.rasa.conftest import HAS_TIMER_STORES, RASA_VERSION, require_rasa
from turnstile.rasa import TicketLockStore, TimerStore

require_rasa()
if RASA_VERSION is not None:
    from rasa.core.lock_store import LockStore
    from rasa.utils.endpoints import read_endpoint_config
if HAS_TIMER_STORES:  # Rasa Pro only
    from rasa.core.timer_stores.timer_store import SessionTimer, SessionTimerStore

pytestmark = [
    pytest.mark.rasa,
    pytest.mark.filterwarnings("ignore:the load_module.. method is deprecated:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
#: The operator's side: ``make test-rasa`` points this at the main venv's console script.
RENDER_CLI = os.environ.get("TURNSTILE_RENDER_CLI", str(ROOT / ".venv" / "bin" / "turnstile"))


def _redis_block(mode: str, request: pytest.FixtureRequest, prefix: str) -> str:
    if mode == "standard":
        server = request.getfixturevalue("redis_password_server")
        return (
            f"    host: {server.host}\n    port: {server.port}\n    keyPrefix: {prefix}\n"
            "    passwordSecretRef: {name: redis-auth, key: password}\n"
        )
    if mode == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        endpoints = "".join(f"      - {e}\n" for e in cluster.endpoints[:3])
        return f"    deploymentMode: cluster\n    keyPrefix: {prefix}\n    endpoints:\n{endpoints}"
    group = request.getfixturevalue("redis_sentinel")
    endpoints = "".join(f"      - {e}\n" for e in group.endpoints)
    return (
        f"    deploymentMode: sentinel\n    sentinelService: {group.service_name}\n"
        f"    keyPrefix: {prefix}\n    endpoints:\n{endpoints}"
    )


def _render(tmp_path: Path, redis_block: str, *options: str) -> Path:
    if not Path(RENDER_CLI).exists():
        pytest.fail(f"the operator's renderer is missing: {RENDER_CLI} (run `make venv`)")
    manifests = tmp_path / "stores.yaml"
    kinds = ["LockStore", "TimerStore"] if HAS_TIMER_STORES else ["LockStore"]
    manifests.write_text(
        "".join(
            f"---\napiVersion: turnstile.dev/v1alpha1\nkind: {kind}\n"
            f"metadata: {{name: bot-{kind.lower()}, namespace: bots}}\n"
            f"spec:\n  configMap: {{name: bot-endpoints}}\n  redis:\n{redis_block}"
            for kind in kinds
        )
    )
    rendered = subprocess.run(
        [RENDER_CLI, "render", *options, str(manifests)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    path = tmp_path / "endpoints.yml"
    path.write_text(rendered.stdout)
    return path


@pytest.mark.parametrize("mode", ["standard", "cluster", "sentinel"])
async def test_rendered_endpoints_yml_loads_in_rasa_and_works(
    mode: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = "rendered" + uuid.uuid4().hex[:8]
    path = _render(tmp_path, _redis_block(mode, request, prefix))
    text = path.read_text()
    assert REDIS_PASSWORD not in text
    # A bot pod gets these from the Secret (spec.rollout.injectEnv or its own env entries).
    monkeypatch.setenv("TURNSTILE_LOCK_STORE_PASSWORD", REDIS_PASSWORD)
    monkeypatch.setenv("TURNSTILE_TIMER_STORE_PASSWORD", REDIS_PASSWORD)

    lock_store = LockStore.create(read_endpoint_config(str(path), "lock_store"))
    assert isinstance(lock_store, TicketLockStore)
    try:
        async with lock_store.lock("rendered-conversation") as held:
            # Rasa's own (synchronous) contract method sees the ticket in Redis.
            assert lock_store.is_someone_waiting("rendered-conversation") is True
        assert held is not None
        assert lock_store.is_someone_waiting("rendered-conversation") is False
    finally:
        await _close(lock_store)

    if not HAS_TIMER_STORES:
        return  # Rasa 3.6 has no timer stores
    timer_store = SessionTimerStore.create(read_endpoint_config(str(path), "timer_store"))
    assert isinstance(timer_store, TimerStore)
    try:
        await timer_store.store_timer("rendered-conversation", "s1", 1_000.0, {"k": "v"})
        timer = await timer_store.get_timer("rendered-conversation")
        assert isinstance(timer, SessionTimer)
        assert (timer.session_id, timer.scheduled_time) == ("s1", 1_000.0)
        assert await timer_store.delete_timer("rendered-conversation", 1_000.0) is True
    finally:
        timer_store.close()


async def test_a_rendered_transition_loads_in_rasa_and_holds_both_locks(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`turnstile render --transition-from` (the operator's decision) -> Rasa's reader -> a
    store that holds the previous prefix's lock and its own until transition_until."""
    server = request.getfixturevalue("redis_password_server")
    old, new = ("p" + uuid.uuid4().hex[:8] for _ in range(2))
    previous = _render(tmp_path, _redis_block("standard", request, old)).with_suffix(".old")
    previous.write_text(
        (tmp_path / "stores.yaml").read_text()  # the manifests _render just wrote, prefix old
    )
    path = _render(tmp_path, _redis_block("standard", request, new),
                   "--transition-from", str(previous), "--transition-until", "+600")
    monkeypatch.setenv("TURNSTILE_LOCK_STORE_PASSWORD", REDIS_PASSWORD)
    monkeypatch.setenv("TURNSTILE_TIMER_STORE_PASSWORD", REDIS_PASSWORD)
    config = read_endpoint_config(str(path), "lock_store")
    assert config is not None
    assert config.kwargs["transition_from"]["key_prefix"] == old
    assert str(config.kwargs["transition_until"]).endswith("Z")
    lock_store = LockStore.create(config)
    assert isinstance(lock_store, TicketLockStore)
    assert type(lock_store.store).__name__ == "TransitionTicketLockStore"
    keys = redis.Redis(host=server.host, port=server.port, password=REDIS_PASSWORD, db=1)
    try:
        async with lock_store.lock("moving-conversation"):
            held = {k.decode().split(":", 1)[0] for k in keys.keys("*moving-conversation*")}
            assert held == {old, new}, held  # both stores' tickets, each under its own prefix
        assert keys.keys("*moving-conversation*") == []
    finally:
        keys.close()
        await _close(lock_store)


async def _close(store: Any) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        result = close()
        if hasattr(result, "__await__"):
            await result
