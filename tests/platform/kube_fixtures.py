"""Pytest plugin: a real Kubernetes control plane for the ``k8s`` test tier.

Registered from ``tests/conftest.py`` via ``pytest_plugins``. Fixtures:

``control_plane`` (session)
    A started :class:`~tests.platform.control_plane.ControlPlane` (etcd,
    kube-apiserver, kube-controller-manager on loopback). One per session,
    because a cold start costs seconds and tests isolate by namespace anyway.

``kube_namespace`` (function)
    Name of a fresh namespace, deleted (asynchronously) after the test.

When the binaries are missing or the control plane cannot start, the tier is
skipped loudly, unless ``CI`` is set or ``TURNSTILE_REQUIRE_ALL_TIERS=1``, in
which case the tests fail: a green CI run must mean the tier actually ran.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.platform.control_plane import ControlPlane, ControlPlaneError

if TYPE_CHECKING:
    from tests.platform.cluster import Cluster

_SKIPPED: list[str] = []


def tier_required() -> bool:
    """True when missing infrastructure must fail the run instead of skipping.

    Same rule as the Redis tier: ``CI`` non-empty, or ``TURNSTILE_REQUIRE_ALL_TIERS=1``.
    """
    return bool(os.environ.get("CI")) or os.environ.get("TURNSTILE_REQUIRE_ALL_TIERS") == "1"


def _unavailable(reason: str) -> None:
    message = f"k8s tier unavailable: {reason}"
    if tier_required():
        pytest.fail(
            f"{message}\n(failing, not skipping, because CI / TURNSTILE_REQUIRE_ALL_TIERS=1)",
            pytrace=False,
        )
    _SKIPPED.append(reason)
    pytest.skip(f"K8S TIER SKIPPED -- {message}")


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A running control plane shared by the whole session."""
    cp = ControlPlane()
    try:
        cp.start()
    except ControlPlaneError as exc:
        _unavailable(str(exc))
    try:
        yield cp
    finally:
        cp.stop()


def _namespace_name(node_name: str) -> str:
    # DNS-1123 label: lowercase alnum and '-', <= 63 chars, alnum at both ends.
    stem = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:40].strip("-") or "test"
    return f"t-{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def kube_namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty namespace named after the test; deleted afterwards.

    Deletion does not wait: the namespace controller finalises it in the
    background, and waiting would add seconds per test for no isolation gain
    (every test gets a unique name).
    """
    with temporary_namespace(control_plane, request.node.name) as name:
        yield name


@contextlib.contextmanager
def temporary_namespace(cluster: ControlPlane | Cluster, test_name: str) -> Iterator[str]:
    """A namespace named after ``test_name`` on ``cluster`` (anything with ``kubectl``),
    deleted without waiting when the block ends."""
    name = _namespace_name(test_name)
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl(
            "delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Repeat the skip reason at the end: a silently skipped tier looks like a pass."""
    if _SKIPPED:
        terminalreporter.write_sep("!", "k8s tier SKIPPED", red=True, bold=True)
        terminalreporter.write_line(_SKIPPED[0])
        terminalreporter.write_line("Build the binaries with: hack/build-kube.sh")
