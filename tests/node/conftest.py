"""Helpers for the node tier's tests: pods that really run on the tier's one node."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.platform.cluster import Cluster
from tests.platform.images import Image, ImageBuildError
from tests.platform.node_fixtures import FIGURES, NodeImages
from tests.platform.rasa_image import rasa_bot_image
from tests.platform.rasa_image import rasa_pro_timer_image as rasa_pro_timer_image_of
from tests.rasa_server.servers import VENV as RASA_VENV
from tests.rasa_server.servers import RasaServerError, train_bot

#: The first test's setup builds the images on a cold cache (about 3 min on 2 busy cores) and
#: starts the cluster; the per-test default (180 s) is for tests, not for that.
NODE_TEST_TIMEOUT = 600
#: Rasa Pro 3.21's minimal pinned install on Python 3.11 (``hack/rasa-venvs.sh pro311``).
RASA_PRO_VENV = Path(
    os.environ.get("RASA_PRO311_VENV") or Path(__file__).parents[2] / ".venv-rasa-pro311"
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Only modules the session ran: importing one here would collect it anew (and an import in
    # this hook can trip CPython 3.11's parser: "AST constructor recursion depth mismatch").
    for title, module in (("Rasa pods: messages per case", "test_rasa_pods"),
                          ("Rasa Pro timer pods: timers per case", "test_timer_pods")):  # fmt: skip
        rows = getattr(sys.modules.get(f"tests.node.{module}"), "ROWS", None)
        if rows:
            terminalreporter.write_sep("-", title)
            for case, row in rows.items():
                terminalreporter.write_line(f"{case}: {row}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(NODE_TEST_TIMEOUT))


@pytest.fixture(scope="session")
def busybox(node_images: NodeImages) -> Image:
    """The busybox test image, loaded into the node."""
    return node_images.busybox


def busybox_container(image: Image, script: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "main",
        "image": image.name,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
        **extra,
    }


def bot_deployment(container: dict[str, Any], **pod_spec: Any) -> dict[str, Any]:
    """A two-replica Deployment ``bot`` (pods labelled ``app=bot``) of ``container``; extra
    pod-spec fields (``volumes``) as keywords. Pods stop within a second."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bot"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "bot"}},
            "template": {
                "metadata": {"labels": {"app": "bot"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [container], **pod_spec},
            },
        },
    }


def _loaded(cluster: Cluster, what: str, build: Callable[[], Image]) -> Image:
    """A Rasa image built (or found in the cache) and imported into the node, timed."""
    began = time.monotonic()
    try:
        image = build()
    except (ImageBuildError, OSError) as exc:
        pytest.fail(f"the {what} could not be built: {exc}", pytrace=False)
    FIGURES[f"{what} built or found in the cache"] = time.monotonic() - began
    began = time.monotonic()
    cluster.load_image(image)
    FIGURES[f"{what} imported into the node"] = time.monotonic() - began
    return image


@pytest.fixture(scope="session")
def rasa_image(node_cluster: Cluster, node_images: NodeImages) -> Image:
    """The Rasa 3.6.21 bot image (:mod:`tests.platform.rasa_image`), loaded into the node."""
    return _loaded(node_cluster, "Rasa bot image",
                   lambda: rasa_bot_image(node_images.base, RASA_VENV))  # fmt: skip


@pytest.fixture(scope="session")
def rasa_pro_timer_image(node_cluster: Cluster, node_images: NodeImages) -> Image:
    """The Rasa Pro 3.21 timer-harness image (``.venv-rasa-pro311``), loaded into the node."""
    return _loaded(node_cluster, "Rasa Pro timer image",
                   lambda: rasa_pro_timer_image_of(node_images.base, RASA_PRO_VENV))  # fmt: skip


@pytest.fixture(scope="session")
def bot_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tests/rasa_server/bot`` trained by real ``rasa train`` (Rasa 3.6.21, about 15 s)."""
    began = time.monotonic()
    try:
        model = train_bot(tmp_path_factory.mktemp("bot"), python=RASA_VENV / "bin" / "python")
    except (RasaServerError, OSError) as exc:
        pytest.fail(f"the bot could not be trained: {exc}", pytrace=False)
    FIGURES["bot trained"] = time.monotonic() - began
    return model
