"""The ``rasa_server`` tier: two real ``rasa run`` servers sharing Redis, in each Redis mode.

Runs in ``.venv-rasa-server`` (Rasa Open Source 3.6.21 installed whole, Python 3.10; built by
``hack/rasa-server-venv.sh``); ``make test-rasa-server`` runs it. The tests carry the
``rasa_server`` marker (added here) and no other tier marker, so ``make test``'s ``-m "unit or
redis or k8s"`` collects and deselects them.

Where that venv is missing the tests skip with a loud reason, except inside the venv itself or
with ``TURNSTILE_REQUIRE_RASA=1`` / ``TURNSTILE_REQUIRE_ALL_TIERS=1`` / ``CI`` (the Makefile
sets them), where a missing Rasa fails: a green run must mean real Rasa servers answered.

Costs: the bot is trained once per session (about 15 s); the two servers of a mode start once
per module (``pair``) and every check of that mode reuses them, the clean stop last.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.platform.redis_fixtures import REDIS_PASSWORD
from tests.rasa_server.servers import (
    LOCK_PASSWORD_ENV,
    ROOT,
    VENV,
    RasaServer,
    render_lock_store,
    start_all,
    tracker_store_section,
    train_bot,
)

RASA_VERSION = "3.6.21"
IN_SERVER_VENV = Path(sys.prefix).resolve() == VENV.resolve()
REQUIRED = IN_SERVER_VENV or any(
    os.environ.get(name) for name in ("TURNSTILE_REQUIRE_RASA", "TURNSTILE_REQUIRE_ALL_TIERS", "CI")
)
#: The operator's side: ``make test-rasa-server`` points this at the main venv's console script.
RENDER_CLI = os.environ.get("TURNSTILE_RENDER_CLI", str(ROOT / ".venv" / "bin" / "turnstile"))
#: Every server of this tier holds a conversation at most this long (``spec.lockLifetime``):
#: short, so a dead holder's ticket frees within the test's bound.
LOCK_LIFETIME = 10
MODES = ("standard", "cluster", "sentinel")
#: Lines the tests measured (start-up, the dead holder's delay), printed after the run.
MEASURED: list[str] = []


def _missing_rasa() -> str | None:
    python = VENV / "bin" / "python"
    found = list(VENV.glob(f"lib/python3.*/site-packages/rasa-{RASA_VERSION}.dist-info"))
    if not python.exists() or not found:
        return (
            f"RASA-SERVER TIER NOT RUN: no Rasa {RASA_VERSION} venv at {VENV} "
            "(run `make test-rasa-server`; hack/rasa-server-venv.sh builds it)"
        )
    return None


def pytest_report_header(config: pytest.Config) -> list[str]:
    missing = _missing_rasa()
    return [f"rasa_server: {missing or f'Rasa {RASA_VERSION} servers from {VENV}'}"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASURED:
        terminalreporter.write_sep("-", "rasa_server measurements")
        for line in MEASURED:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    missing = _missing_rasa()
    for item in items:
        if here not in Path(str(item.path)).parents:
            continue
        item.add_marker(pytest.mark.rasa_server)
        if missing and not REQUIRED:
            item.add_marker(pytest.mark.skip(reason=missing))


@pytest.fixture(scope="session")
def rasa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bot, trained by real ``rasa train`` once per session."""
    missing = _missing_rasa()
    if missing:
        pytest.fail(missing + " -- required here", pytrace=False)
    return train_bot(tmp_path_factory.mktemp("bot"))


@dataclass
class Pair:
    """Two servers of one Redis mode sharing a lock store and a tracker store."""

    mode: str
    a: RasaServer
    b: RasaServer
    endpoints: Path
    #: Environment a process needs to load ``endpoints`` (the ``${VAR}`` references).
    env: dict[str, str]

    @property
    def servers(self) -> tuple[RasaServer, RasaServer]:
        return (self.a, self.b)

    def other(self, server: RasaServer) -> RasaServer:
        return self.b if server is self.a else self.a


def redis_spec(
    mode: str, request: pytest.FixtureRequest, prefix: str
) -> tuple[str, dict[str, str]]:
    """``spec.redis`` of a LockStore manifest for ``mode`` (indented four spaces) and the
    environment the rendered ``${VAR}`` references need."""
    if mode == "standard":
        server = request.getfixturevalue("redis_password_server")
        spec = (
            f"    host: {server.host}\n    port: {server.port}\n    keyPrefix: {prefix}\n"
            "    passwordSecretRef: {name: redis-auth, key: password}\n"
        )
        return spec, {LOCK_PASSWORD_ENV: REDIS_PASSWORD}
    if mode == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        endpoints = "".join(f"      - {e}\n" for e in cluster.endpoints[:3])
        return (
            f"    deploymentMode: cluster\n    keyPrefix: {prefix}\n    endpoints:\n{endpoints}"
        ), {}
    group = request.getfixturevalue("redis_sentinel")
    endpoints = "".join(f"      - {e}\n" for e in group.endpoints)
    return (
        f"    deploymentMode: sentinel\n    sentinelService: {group.service_name}\n"
        f"    keyPrefix: {prefix}\n    endpoints:\n{endpoints}"
    ), {}


@pytest.fixture(scope="module", params=MODES)
def pair(
    request: pytest.FixtureRequest,
    rasa_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    """Two ``rasa run --enable-api`` servers (uvloop, warnings on) for one Redis mode, with
    ``endpoints.yml`` from ``turnstile render`` of a LockStore manifest plus a shared Redis
    tracker store."""
    mode = request.param
    if not Path(RENDER_CLI).exists():
        pytest.fail(f"the operator's renderer is missing: {RENDER_CLI} (run `make venv`)")
    workdir = tmp_path_factory.mktemp(f"rasa-{mode}")
    prefix = "rs" + uuid.uuid4().hex[:8]
    spec, env = redis_spec(mode, request, prefix)
    lock_store = render_lock_store(RENDER_CLI, spec, workdir, lock_lifetime=LOCK_LIFETIME)
    tracker = request.getfixturevalue("redis_server")
    endpoints = workdir / "endpoints.yml"
    endpoints.write_text(
        lock_store + tracker_store_section(tracker.host, tracker.port, key_prefix=f"{prefix}tr")
    )
    servers = [
        RasaServer(name, rasa_model, endpoints, workdir / name, env=env) for name in ("a", "b")
    ]
    start_all(servers)
    MEASURED.append(
        f"{mode}: servers ready in "
        + ", ".join(f"{s.name} {s.ready_seconds:.1f} s" for s in servers)
    )
    try:
        yield Pair(mode, servers[0], servers[1], endpoints, env)
    finally:
        for server in servers:
            server.kill()

