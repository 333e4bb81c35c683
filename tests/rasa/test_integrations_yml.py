"""An engine project's ``integrations.yml`` rendered by Turnstile is what Rasa Pro loads.

``turnstile render --base integrations.yml`` (the operator's pure renderer, run where the
operator runs) writes the stores of ``spec.configMap.format: integrations`` into the project's
own file; here, with real Rasa Pro 3.21 code, Rasa's ``integrations.yml`` path
(``apply_integration_runtime_endpoints``: section-local ``${VAR}`` expansion, its pydantic
validation with the subclass checks) overlays the endpoints, Rasa's factories build the stores
and they work against real Redis in each mode. The user's own sections come through as Rasa
reads them (YAML 1.2), and ``turnstile-rasa``'s start-up check reads the same file, in the
project root Rasa reads it from.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.platform.redis_fixtures import REDIS_PASSWORD
from tests.rasa.conftest import HAS_TIMER_STORES, require_rasa
from tests.rasa.test_rendered import _close, _redis_block
from turnstile.rasa import TicketLockStore, TimerStore
from turnstile.rasa.startup import StartRefused, layout_problem, wait_until_safe

require_rasa()
if HAS_TIMER_STORES:  # Rasa Pro only (the file is not collected under Rasa 3.6)
    from rasa.core.config.available_endpoints import AvailableEndpoints
    from rasa.core.lock_store import LockStore
    from rasa.core.timer_managers.timer_manager import create_timer_manager
    from rasa.mantle.config.runtime_endpoints import apply_integration_runtime_endpoints
    from rasa.shared.project_structure import has_mantle_project_layout

pytestmark = [
    pytest.mark.rasa,
    pytest.mark.filterwarnings("ignore:the load_module.. method is deprecated:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
RENDER_CLI = os.environ.get("TURNSTILE_RENDER_CLI", str(ROOT / ".venv" / "bin" / "turnstile"))
#: The project's own integrations.yml: an LLM key that is not set in this process (Rasa expands
#: ``${VAR}`` per section, so it must not stop the stores), and a tracker store whose port is
#: ``06379`` (YAML 1.2, as Rasa reads it: 6379; a YAML 1.1 re-dump would make it 3327).
USER_FILE = """\
# integrations.yml of the bot team
model_groups:
  - id: default
    models:
      - provider: openai
        model: gpt-4o
        api_key: ${TURNSTILE_TEST_UNSET_LLM_KEY}
tracker_store:
  type: redis
  host: localhost
  port: 06379
"""


def _engine_project(tmp_path: Path, redis_block: str) -> Path:
    if not Path(RENDER_CLI).exists():
        pytest.fail(f"the operator's renderer is missing: {RENDER_CLI} (run `make venv`)")
    manifests = tmp_path / "stores.yaml"
    manifests.write_text(
        "".join(
            f"---\napiVersion: turnstile.dev/v1alpha1\nkind: {kind}\n"
            f"metadata: {{name: bot-{kind.lower()}, namespace: bots}}\n"
            "spec:\n  configMap: {name: bot-integrations, format: integrations}\n"
            f"  redis:\n{redis_block}"
            for kind in ("LockStore", "TimerStore")
        )
    )
    project = tmp_path / "bot"
    (project / "skills" / "greet").mkdir(parents=True)
    (project / "skills" / "greet" / "skill.md").write_text("# greet\n")
    (project / "agent.yml").write_text("name: bot\n")
    base = tmp_path / "integrations.base.yml"
    base.write_text(USER_FILE)
    rendered = subprocess.run(
        [RENDER_CLI, "render", "--base", str(base), str(manifests)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert rendered.stdout.startswith(USER_FILE)  # the team's sections, byte for byte
    (project / "integrations.yml").write_text(rendered.stdout)
    # A stray endpoints.yml: an engine project ignores it (and so must the start-up check).
    (project / "endpoints.yml").write_text("lock_store:\n  type: in_memory\n")
    return project


@pytest.mark.parametrize("mode", ["standard", "cluster", "sentinel"])
async def test_rendered_integrations_yml_loads_in_rasa_pro_and_works(
    mode: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = "engine" + uuid.uuid4().hex[:8]
    project = _engine_project(tmp_path, _redis_block(mode, request, prefix))
    assert REDIS_PASSWORD not in (project / "integrations.yml").read_text()
    monkeypatch.setenv("TURNSTILE_LOCK_STORE_PASSWORD", REDIS_PASSWORD)
    monkeypatch.setenv("TURNSTILE_TIMER_STORE_PASSWORD", REDIS_PASSWORD)
    monkeypatch.delenv("TURNSTILE_TEST_UNSET_LLM_KEY", raising=False)
    assert has_mantle_project_layout(project)  # Rasa Pro reads integrations.yml here

    # turnstile-rasa's check, as the operator's injected env and the pod's workdir set it up
    env = {"TURNSTILE_STORES_FILE": "integrations", "RASA_PROJECT_FOLDER": str(project),
           "TURNSTILE_REQUIRE_SECTIONS": "lock_store,timer_store",
           "TURNSTILE_STARTUP_WAIT_SECONDS": "0"}  # fmt: skip
    wait_until_safe(["run", "--enable-api"], env)

    endpoints = AvailableEndpoints()
    apply_integration_runtime_endpoints(endpoints, project)
    assert endpoints.tracker_store.kwargs["port"] == 6379  # 06379 as YAML 1.2 reads it
    lock_store = LockStore.create(endpoints.lock_store)
    assert type(lock_store) is TicketLockStore
    try:
        async with lock_store.lock("engine-conversation") as held:
            assert lock_store.is_someone_waiting("engine-conversation") is True
        assert held is not None
    finally:
        await _close(lock_store)
    manager = create_timer_manager(endpoints.timer_store)
    store = manager.store
    assert type(store) is TimerStore
    try:
        await store.store_timer("engine-conversation", "s1", 1_000.0, {"k": "v"})
        timer = await store.get_timer("engine-conversation")
        assert timer is not None and timer.scheduled_time == 1_000.0
        assert await store.delete_timer("engine-conversation", 1_000.0) is True
    finally:
        store.close()


def test_the_start_up_check_reads_the_file_rasa_pro_reads(tmp_path: Path) -> None:
    """Without Turnstile's sections in integrations.yml the pod does not start, whatever the
    ignored endpoints.yml holds; checked as ``endpoints`` the project is refused too."""
    project = tmp_path / "bot"
    (project / "skills" / "greet").mkdir(parents=True)
    (project / "skills" / "greet" / "skill.md").write_text("# greet\n")
    (project / "agent.yml").write_text("name: bot\n")
    (project / "integrations.yml").write_text(USER_FILE)  # a writer without our sections
    (project / "endpoints.yml").write_text(
        "lock_store:\n  type: turnstile.rasa.TicketLockStore\n  host: localhost\n"
    )
    assert has_mantle_project_layout(project)
    env = {"RASA_PROJECT_FOLDER": str(project), "TURNSTILE_REQUIRE_SECTIONS": "lock_store",
           "TURNSTILE_STARTUP_WAIT_SECONDS": "0",
           "TURNSTILE_TERMINATION_LOG": str(tmp_path / "log")}  # fmt: skip
    with pytest.raises(StartRefused, match=r"integrations\.yml has no lock_store section"):
        wait_until_safe(["run"], {**env, "TURNSTILE_STORES_FILE": "integrations"})
    with pytest.raises(StartRefused, match="is a Rasa Pro engine project"):
        wait_until_safe(["run", "--endpoints", str(project / "endpoints.yml")], env)
    # Rasa's own layout rule and the launcher's agree on a CALM project
    calm = tmp_path / "calm"
    calm.mkdir()
    (calm / "domain.yml").write_text("version: '3.1'\n")
    (calm / "integrations.yml").write_text(USER_FILE)
    assert not has_mantle_project_layout(calm)
    assert layout_problem("integrations", calm) is not None
    assert layout_problem("endpoints", calm) is None
