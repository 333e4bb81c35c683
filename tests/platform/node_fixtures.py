"""Pytest plugin: a real cluster (control plane + one node running pods) for the ``node`` tier.

Registered from ``tests/conftest.py``. Fixtures:

``node_cluster`` (session)
    A started :class:`~tests.platform.cluster.Cluster`. One per session: a start costs about
    20 s, and tests isolate by namespace.

``node_namespace`` (function)
    A fresh namespace on that cluster, deleted (without waiting) afterwards.

A missing prerequisite (binaries, Debian packages, root) skips loudly on a laptop and fails
when ``CI`` is set or ``TURNSTILE_REQUIRE_ALL_TIERS=1`` (``make test-node`` sets it).
After the session the host must be as it was before: a restore that left anything behind
fails the session's last test teardown with the list.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.platform.cluster import Cluster
from tests.platform.control_plane import ControlPlaneError
from tests.platform.kube_fixtures import _namespace_name, tier_required


def _unavailable(reason: str) -> None:
    message = f"node tier unavailable: {reason}"
    if tier_required():
        pytest.fail(
            f"{message}\n(failing, not skipping, because CI / TURNSTILE_REQUIRE_ALL_TIERS=1)",
            pytrace=False,
        )
    pytest.skip(f"NODE TIER SKIPPED -- {message}")


@pytest.fixture(scope="session")
def node_cluster() -> Iterator[Cluster]:
    """A running control plane with one Ready node, shared by the session."""
    cluster = Cluster()
    try:
        cluster.start()
    except ControlPlaneError as exc:
        _unavailable(str(exc))
    print(
        f"\n[node tier] cluster up in {cluster.start_seconds:.1f}s "
        f"(node Ready {cluster.node.ready_seconds:.1f}s after containerd started)"
    )
    try:
        yield cluster
    finally:
        cluster.stop()
    if cluster.node.restore_errors:
        pytest.fail(f"the host was not fully restored: {cluster.node.restore_errors}")


@pytest.fixture
def node_namespace(node_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _namespace_name(request.node.name)
    node_cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        node_cluster.kubectl(
            "delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False
        )
