"""Test tiers.

A test's tier is the folder it lives in, applied here as a marker so ``-m`` selects tiers:
``tests/unit`` needs nothing, ``tests/redis`` starts real Redis processes, ``tests/k8s`` starts
a real control plane, ``tests/node`` adds a real node running pods (root, ``make node-deps``),
``tests/e2e`` needs Docker and kind. ``make test`` runs the first three.

In CI (``CI`` set) or with ``TURNSTILE_REQUIRE_ALL_TIERS=1`` a tier whose binaries are missing
fails instead of skipping: a green run must mean every tier ran.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = [
    "tests.platform.redis_fixtures",
    "tests.platform.kube_fixtures",
    "tests.platform.node_fixtures",
]

_TIERS = ("unit", "redis", "k8s", "node", "e2e")
_ROOT = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects anything by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            tier = Path(str(item.path)).relative_to(_ROOT).parts[0]
        except ValueError:
            continue
        if tier in _TIERS and not any(item.get_closest_marker(t) for t in _TIERS):
            item.add_marker(getattr(pytest.mark, tier))


# ---- event loops ---------------------------------------------------------------------------
#
# Rasa serves on uvloop (Sanic's default), tools and most tests on asyncio's own loop. Every
# async test of the store suite (the ``unit`` and ``redis`` tiers) runs on both, so nothing in
# the stores can depend on one loop's classes. Tests on a fake clock (``looptime``, which patches
# asyncio's loop) and the ``k8s``/``e2e`` tiers (kopf, the operator) run on asyncio only.
# A missing uvloop is an error, not a quiet halving of the suite.
#
# ``TURNSTILE_EVENT_LOOP=uvloop`` (or ``asyncio``) runs the both-loop tests on that loop alone:
# a second server's pass over the suite (``make test-valkey``) halves its time that way; tests
# that run on asyncio only still run.

_BOTH_LOOP_TIERS = ("unit", "redis")
_LOOP_ENV = "TURNSTILE_EVENT_LOOP"


def _uvloop_factory() -> Any:
    # Imported here: the Rasa venvs run other tiers and need not have it.
    import uvloop  # noqa: PLC0415

    return uvloop.new_event_loop()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Any:
    factories: dict[str, Any] = {"asyncio": asyncio.new_event_loop}
    try:
        tier = Path(str(item.path)).relative_to(_ROOT).parts[0]
    except ValueError:
        tier = ""
    asyncio_only = item.get_closest_marker("looptime") or item.get_closest_marker("asyncio_only")
    if tier in _BOTH_LOOP_TIERS and asyncio_only is None:
        factories["uvloop"] = _uvloop_factory
        only = os.environ.get(_LOOP_ENV)
        if only:
            if only not in factories:
                raise pytest.UsageError(f"{_LOOP_ENV}={only!r}: one of {', '.join(factories)}")
            factories = {only: factories[only]}
    return factories
