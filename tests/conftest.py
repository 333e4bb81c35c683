"""Test tiers.

A test's tier is the folder it lives in, applied here as a marker so ``-m`` selects tiers:
``tests/unit`` needs nothing, ``tests/redis`` starts real Redis processes, ``tests/k8s`` starts
a real control plane, ``tests/e2e`` needs Docker and kind. ``make test`` runs the first three.

In CI (``CI`` set) or with ``TURNSTILE_REQUIRE_ALL_TIERS=1`` a tier whose binaries are missing
fails instead of skipping: a green run must mean every tier ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.platform.redis_fixtures",
    "tests.platform.kube_fixtures",
]

_TIERS = ("unit", "redis", "k8s", "e2e")
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
