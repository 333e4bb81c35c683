"""Pytest plugin: a real cluster (control plane + one node running pods) for the ``node`` tier.

Registered from ``tests/conftest.py``. Fixtures:

``node_cluster`` (session)
    A started :class:`~tests.platform.cluster.Cluster`. One per session: a start costs about
    20 s, and tests isolate by namespace.

``node_namespace`` (function)
    A fresh namespace on that cluster, deleted (without waiting) afterwards.

``node_images`` (session)
    The images built here from the repo and Debian packages (:mod:`tests.platform.images`),
    cached by the hash of their inputs; built before the node starts (the build's private
    dockerd and the node never run at once) and loaded into the node.

A missing prerequisite (binaries, Debian packages, root) skips loudly on a laptop and fails
when ``CI`` is set or ``TURNSTILE_REQUIRE_ALL_TIERS=1`` (``make test-node`` sets it).
After the session the host must be as it was before: a restore that left anything behind
fails the session's last test teardown with the list.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.platform import images
from tests.platform.cluster import Cluster
from tests.platform.control_plane import ControlPlaneError
from tests.platform.kube_fixtures import temporary_namespace, tier_required


@dataclass(frozen=True)
class NodeImages:
    """The images a node tier session has loaded, and how long making them took."""

    busybox: images.Image
    base: images.Image
    operator: images.Image
    redis: images.Image
    build_seconds: float


#: Timings of this session, printed at its end (what the lead and the docs quote).
FIGURES: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.write_sep("-", "node tier figures")
        for what, seconds in FIGURES.items():
            terminalreporter.write_line(f"{what}: {seconds:.1f} s")


def _unavailable(reason: str) -> None:
    message = f"node tier unavailable: {reason}"
    if tier_required():
        pytest.fail(
            f"{message}\n(failing, not skipping, because CI / TURNSTILE_REQUIRE_ALL_TIERS=1)",
            pytrace=False,
        )
    pytest.skip(f"NODE TIER SKIPPED -- {message}")


@pytest.fixture(scope="session")
def _built_images() -> NodeImages:
    began = time.monotonic()
    try:
        busybox = images.busybox_image()
        base, operator, redis = images.tier_images()
    except (images.ImageBuildError, OSError) as exc:
        _unavailable(f"images could not be built: {exc}")
    built = NodeImages(busybox, base, operator, redis, time.monotonic() - began)
    FIGURES["images built or found in the cache"] = built.build_seconds
    return built


@pytest.fixture(scope="session")
def node_images(node_cluster: Cluster, _built_images: NodeImages) -> NodeImages:
    """The tier's images, loaded into the node."""
    began = time.monotonic()
    for image in (_built_images.busybox, _built_images.operator, _built_images.redis):
        node_cluster.load_image(image)
    FIGURES["images imported into the node"] = time.monotonic() - began
    return _built_images


@pytest.fixture(scope="session")
def node_cluster(_built_images: NodeImages) -> Iterator[Cluster]:
    """A running control plane with one Ready node, shared by the session."""
    cluster = Cluster()
    try:
        cluster.start()
    except ControlPlaneError as exc:
        _unavailable(str(exc))
    FIGURES["control plane + node started"] = cluster.start_seconds or 0.0
    FIGURES["node Ready after containerd started"] = cluster.node.ready_seconds or 0.0
    try:
        yield cluster
    finally:
        cluster.stop()
    if cluster.node.restore_errors:
        pytest.fail(f"the host was not fully restored: {cluster.node.restore_errors}")


@pytest.fixture
def node_namespace(node_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    with temporary_namespace(node_cluster, request.node.name) as name:
        yield name
