"""The Rasa drop-in tier: which Rasa is installed, and ``endpoints.yml`` for a real Redis.

These tests run in ``.venv-rasa-pro`` (Rasa Pro 3.21) and ``.venv-rasa36`` (Rasa Open Source
3.6), built by ``hack/rasa-venvs.sh``; ``make test-rasa`` runs them in both. They carry the
``rasa`` marker and no tier marker, so ``make test`` (``-m "unit or redis or k8s"``) collects and
deselects them.

Without Rasa (the main ``.venv``) they skip with a loud reason. Inside a ``.venv-rasa*`` venv, or
with ``TURNSTILE_REQUIRE_RASA=1`` (``make test-rasa`` sets it), a missing Rasa is an error, never
a skip: a green run there must mean Rasa's own code loaded and drove the stores.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.platform.redis_fixtures import REDIS_PASSWORD

#: This interpreter is one of the drop-in venvs: Rasa must be importable here.
IN_RASA_VENV = Path(sys.prefix).name.startswith(".venv-rasa")
RASA_REQUIRED = IN_RASA_VENV or os.environ.get("TURNSTILE_REQUIRE_RASA") == "1"

RASA_VERSION: str | None
RASA_IMPORT_ERROR: str | None = None
with warnings.catch_warnings():
    # Rasa 3.6's own imports (pkg_resources, ruamel's namespace package) warn on import.
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        from rasa.core.lock_store import LockStore  # noqa: F401
        from rasa.utils.endpoints import read_endpoint_config  # noqa: F401
        from rasa.version import __version__ as RASA_VERSION
    except ImportError as exc:
        RASA_VERSION = None
        RASA_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    else:
        # Rasa 3.6's read_endpoint_config imports pkg_resources inside a function
        # (rasa/shared/utils/validation.py), which warns on import with the setuptools Rasa
        # pins; pyproject turns warnings into errors. Import it once here, warnings off.
        warnings.simplefilter("ignore", DeprecationWarning)  # Rasa's import reset the filters
        with contextlib.suppress(ImportError):
            import pkg_resources  # noqa: F401

#: Rasa Pro (3.8+) has timer stores; Rasa Open Source 3.6 has none.
HAS_TIMER_STORES = (
    RASA_VERSION is not None and importlib.util.find_spec("rasa.core.timer_stores") is not None
)
RASA_FLAVOUR = "none" if RASA_VERSION is None else ("pro" if HAS_TIMER_STORES else "open-source")
NO_RASA_REASON = (
    "RASA DROP-IN TESTS NOT RUN: Rasa is not importable in this interpreter "
    f"({sys.prefix}: {RASA_IMPORT_ERROR}). Run `make test-rasa` "
    "(hack/rasa-venvs.sh builds .venv-rasa-pro and .venv-rasa36)."
)
#: Files whose every test needs Rasa Pro's timer stores: not collected under Rasa 3.6.
PRO_ONLY_FILES = ("test_dropin_pro.py", "test_timer_manager_pro.py", "test_integrations_yml.py")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "rasa: Turnstile's Rasa stores driven by real Rasa code (run by `make test-rasa` in "
        ".venv-rasa-pro and .venv-rasa36)",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    if RASA_VERSION is None:
        return [f"rasa: not importable ({RASA_IMPORT_ERROR}); rasa-marked tests skip"]
    timers = (
        "timer stores included"
        if HAS_TIMER_STORES
        else f"no timer stores in this Rasa: {', '.join(PRO_ONLY_FILES)} not collected"
    )
    return [f"rasa: {RASA_VERSION} ({RASA_FLAVOUR}), redis-py {redis.__version__}; {timers}"]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # Rasa 3.6 has no timer store contract to drop into: those tests do not exist there.
    if RASA_VERSION is not None and not HAS_TIMER_STORES and collection_path.name in PRO_ONLY_FILES:
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here not in Path(str(item.path)).parents:
            continue
        item.add_marker(pytest.mark.rasa)
        if RASA_VERSION is None and not RASA_REQUIRED:
            item.add_marker(pytest.mark.skip(reason=NO_RASA_REASON))


def require_rasa() -> None:
    """Fail loudly where Rasa must be present; called by every module of this tier."""
    if RASA_VERSION is None and RASA_REQUIRED:
        why = "drop-in venv" if IN_RASA_VENV else "TURNSTILE_REQUIRE_RASA=1"
        pytest.fail(
            f"Rasa must be importable here ({why}) but is not: {RASA_IMPORT_ERROR}. "
            "Rebuild with hack/rasa-venvs.sh --force.",
            pytrace=False,
        )


# ---- endpoints.yml against a real Redis ------------------------------------------------------

PASSWORD_ENV = "TURNSTILE_DROPIN_REDIS_PASSWORD"
PORT_ENV = "TURNSTILE_DROPIN_REDIS_PORT"


@dataclass
class Topology:
    """A running Redis topology and the ``endpoints.yml`` keys that reach it."""

    mode: str
    keys: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    key_prefix: str = field(default_factory=lambda: "dropin" + uuid.uuid4().hex[:10])

    def section(self, store_type: str, **extra: Any) -> str:
        """One ``endpoints.yml`` section body (indented two spaces), ``${VAR}`` kept verbatim.

        Values are written as plain YAML scalars, as users write them: Rasa expands ``${VAR}``
        only in plain scalars, never in quoted ones (``test_quoted_env_reference_...``).
        """
        lines = [f"  type: {store_type}", f"  key_prefix: {self.key_prefix}"]
        for key, value in {**self.keys, **extra}.items():
            if isinstance(value, list):
                lines.append(f"  {key}:")
                lines.extend(f"    - {_plain(item)}" for item in value)
            else:
                lines.append(f"  {key}: {_plain(value)}")
        return "\n".join(lines)


def _plain(value: Any) -> str:
    text = str(value)
    if not _PLAIN.match(text):
        raise ValueError(f"not safe as a plain YAML scalar: {text!r}")
    return text


_PLAIN = re.compile(r"^[A-Za-z0-9_.\-${}:/@]+$")


@pytest.fixture(params=["standard", "cluster", "sentinel"])
def topology(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Topology:
    """Each real Redis deployment mode, as Rasa users write it in ``endpoints.yml``.

    Standalone is the password-protected server, with the password *and* the port given as
    ``${VAR}`` references that Rasa's reader expands from the environment.
    """
    return make_topology(request.param, request, monkeypatch)


@pytest.fixture
def standard_topology(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Topology:
    """The standalone topology alone, for what one mode proves (shared protocol code)."""
    return make_topology("standard", request, monkeypatch)


@pytest.fixture(params=["standard", "cluster", "sentinel"] if HAS_TIMER_STORES else ["standard"])
def rasa_lock_topology(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Topology:
    """Each mode the installed Rasa's Redis lock stores speak (Rasa 3.6: standalone only)."""
    return make_topology(request.param, request, monkeypatch)


def make_topology(
    mode: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Topology:
    """The ``mode`` topology (see :func:`topology`), its env vars set for the test."""
    if mode == "standard":
        server = request.getfixturevalue("redis_password_server")
        host, port = server.address
        topo = Topology(
            mode,
            {"host": host, "port": f"${{{PORT_ENV}}}", "password": f"${{{PASSWORD_ENV}}}"},
            env={PORT_ENV: str(port), PASSWORD_ENV: REDIS_PASSWORD},
        )
    elif mode == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        topo = Topology(mode, {"deployment_mode": "cluster", "endpoints": list(cluster.endpoints)})
    else:
        group = request.getfixturevalue("redis_sentinel")
        topo = Topology(
            mode,
            {
                "deployment_mode": "sentinel",
                "endpoints": list(group.endpoints),
                "sentinel_service": group.service_name,
            },
        )
    for name, value in topo.env.items():
        monkeypatch.setenv(name, value)
    return topo


@pytest.fixture
def endpoints_file(tmp_path: Path) -> Callable[..., Path]:
    """Write an ``endpoints.yml`` from section bodies: ``endpoints_file(lock_store=...)``."""

    def write(name: str = "endpoints.yml", **sections: str) -> Path:
        path = tmp_path / name
        path.write_text("".join(f"{key}:\n{body}\n" for key, body in sections.items()))
        return path

    return write
