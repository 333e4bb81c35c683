"""A whole cluster on this machine: the control plane plus one real node, as one object.

:class:`Cluster` gives the node tier's tests the verbs pytest-kind's ``KindCluster`` has
(``kubeconfig_path``, ``kubectl(...)``, ``load_image(...)``), so a test written against it reads
the same whichever made the cluster.

For people and scripts::

    python -m tests.platform.cluster up [--redis] [--dns]   # prints the kubeconfig path
    python -m tests.platform.cluster down           # stops it all, restores the host

``up`` leaves the processes running (each in its own process group) and records them in
``STATE_DIR/cluster.json``; ``down`` stops them, removes the temp dirs and puts the host back
as it was before ``up`` (see :mod:`tests.platform.host_state`), and exits non-zero naming
anything it could not put back. ``down`` with nothing running cleans up after a killed run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.platform import node as node_mod
from tests.platform.control_plane import ControlPlane, free_port
from tests.platform.images import Image
from tests.platform.node import Node

__all__ = ["Cluster", "main"]

CLUSTER_STATE = node_mod.STATE_DIR / "cluster.json"


class Cluster:
    """A started control plane and node; stop() stops both and restores the host."""

    def __init__(self, *, start_timeout: float = 240.0, dns: bool = False) -> None:
        self.control_plane = ControlPlane(start_timeout=min(start_timeout, 120.0))
        self.node = Node(self.control_plane, start_timeout=start_timeout, dns=dns)
        self.start_seconds: float | None = None

    @property
    def kubeconfig_path(self) -> Path:
        return self.control_plane.kubeconfig

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """kubectl as cluster admin; see :meth:`ControlPlane.kubectl`."""
        return self.control_plane.kubectl(*args, **kwargs)

    def load_image(self, image: Image) -> None:
        """Make an image archive available to pods (``imagePullPolicy: Never``)."""
        self.node.load_image(image)

    def start(self) -> Cluster:
        began = time.monotonic()
        self.control_plane.start()
        try:
            self.node.start()
        except BaseException:
            self.control_plane.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        # The node first: kubelet talks to the API server while it stops pods.
        try:
            self.node.stop()
        finally:
            self.control_plane.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ------------------------------------------------------------------------------ up / down


def up(with_redis: bool, dns: bool = False) -> int:
    if CLUSTER_STATE.exists():
        print(f"a cluster is already up ({CLUSTER_STATE}); run `down` first", file=sys.stderr)
        return 1
    cluster = Cluster(dns=dns).start()
    cp = cluster.control_plane
    state: dict[str, Any] = {
        "process_groups": [[pgid, str(cp.workdir)] for pgid in cp.process_groups],
        "remove": [str(cp.workdir)],
        "kubeconfig": str(cp.kubeconfig),
    }
    if with_redis:
        port = free_port()
        redis_dir = cp.workdir / "redis"
        redis_dir.mkdir()
        with (redis_dir / "redis.log").open("wb") as log:
            proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                 "--appendonly", "no", "--dir", str(redis_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        state["process_groups"].append([proc.pid, str(redis_dir)])
        state["redis"] = f"127.0.0.1:{port}"
    CLUSTER_STATE.parent.mkdir(parents=True, exist_ok=True)
    CLUSTER_STATE.write_text(json.dumps(state))
    cluster.node.detach()
    cp.detach()
    print(
        f"node {cluster.node.name} Ready; control plane and node up in {cluster.start_seconds:.0f}s"
    )
    if with_redis:
        print(f"redis: {state['redis']}")
    print(f"kubectl: {cp.bin_dir / 'kubectl'}")
    print("stop it all with: python -m tests.platform.cluster down")
    print(state["kubeconfig"])
    return 0


def down() -> int:
    lock = node_mod._HostLock()
    lock.acquire(timeout=60)
    try:
        state: dict[str, Any] = {}
        if CLUSTER_STATE.exists():
            state = json.loads(CLUSTER_STATE.read_text())
        # The node before the control plane, as Cluster.stop does.
        left = node_mod.clean_leftovers()
        node_mod._kill_groups(state.get("process_groups", []), grace=15)
        for path in state.get("remove", []):
            shutil.rmtree(path, ignore_errors=True)
        CLUSTER_STATE.unlink(missing_ok=True)
        if not left:
            with contextlib.suppress(OSError):
                CLUSTER_STATE.parent.rmdir()
    finally:
        lock.release()
    if left:
        print("the host could not be fully restored:", *left, sep="\n  ", file=sys.stderr)
        return 1
    print("stopped; the host is as it was before the node started")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.platform.cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start control plane + node, print the kubeconfig path")
    up_parser.add_argument("--redis", action="store_true", help="also a redis-server on loopback")
    up_parser.add_argument("--dns", action="store_true",
                           help="also CoreDNS for the pods (Service names resolve)")  # fmt: skip
    sub.add_parser("down", help="stop everything `up` started and restore the host")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the node tier runs as root (kubelet, containerd)", file=sys.stderr)
        return 1
    return up(args.redis, args.dns) if args.command == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
