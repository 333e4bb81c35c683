"""``make e2e-node``: the end-to-end suite (``tests/e2e``) on the node tier instead of kind.

The suite runs against any kubeconfig (``TURNSTILE_E2E_KUBECONFIG``). This brings up what it
needs on this machine, without Docker:

1. the node tier's cluster with CoreDNS (``Cluster(dns=True)``): the e2e manifests address
   Redis by Service and StatefulSet pod names (``redis-cluster-0.redis-cluster``), as on kind;
2. the images the node tier builds: the operator from the ``Dockerfile``, Debian's Redis 7.0
   (standing in for ``redis:7.4.2-bookworm``; the manifests' image names are replaced, nothing
   else of them), the pause binary for the stand-in bot;
3. the chart, as ``hack/e2e-kind.sh`` installs it (release ``turnstile`` in
   ``turnstile-system``, watching ``turnstile-e2e``), then Redis in all three modes and the bot;
4. ``pytest -m e2e tests/e2e`` against that kubeconfig; then everything stops and the host is
   put back as it was.

Runs as root (the node). Exit status: pytest's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.platform import images
from tests.platform.cluster import Cluster
from tests.platform.workloads import install_chart

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "tests" / "e2e" / "manifests"
NAMESPACE = "turnstile-e2e"  # fixed: stores.yaml names Redis <service>.turnstile-e2e.svc
OPERATOR_NAMESPACE = "turnstile-system"
#: What the kind run pulls, and what stands in for it here.
KIND_REDIS = "docker.io/library/redis:7.4.2-bookworm"
KIND_PAUSE = "registry.k8s.io/pause:3.10"
#: ``kubectl`` waits as hack/e2e-kind.sh does them, in order.
WAITS = (
    ("rollout", "status", "deployment/redis-standalone"),
    ("rollout", "status", "statefulset/redis-cluster"),
    ("wait", "--for=condition=complete", "job/redis-cluster-create"),
    ("rollout", "status", "statefulset/redis-node"),
    ("rollout", "status", "deployment/redis-sentinel"),
    ("rollout", "status", "deployment/bot"),
)


def say(line: str) -> None:
    print(f"[e2e-node] {line}", flush=True)


def manifest(name: str, redis: str, pause: str) -> str:
    """An e2e manifest with the kind run's image names replaced by the node tier's."""
    text = (MANIFESTS / f"{name}.yaml").read_text()
    for doc in yaml.safe_load_all(text):  # fail here, not in kubectl, on a broken file
        assert doc is None or isinstance(doc, dict), name
    return text.replace(KIND_REDIS, redis).replace(KIND_PAUSE, pause)


def main() -> int:
    if os.geteuid() != 0:
        say("the node tier runs as root (kubelet, containerd)")
        return 1
    began = time.monotonic()
    say("building or finding the images (the operator from the Dockerfile, Debian's Redis)")
    _base, operator, redis = images.tier_images()
    say("starting the control plane, the node and CoreDNS")
    returncode = 1
    with Cluster(dns=True) as cluster:
        assert cluster.node.pause is not None
        for image in (operator, redis):
            cluster.load_image(image)
        cp = cluster.control_plane
        say(f"cluster up in {time.monotonic() - began:.0f} s; installing the chart")
        with install_chart(cluster, operator, bots=NAMESPACE, namespace=OPERATOR_NAMESPACE):
            say("Redis in all three modes and the stand-in bot")
            for name in ("redis-standalone", "redis-cluster", "redis-sentinel", "bot"):
                cp.kubectl("-n", NAMESPACE, "apply", "-f", "-",
                           stdin=manifest(name, redis.name, cluster.node.pause.name))  # fmt: skip
            for wait in WAITS:
                cp.kubectl("-n", NAMESPACE, *wait, "--timeout=300s", timeout=330)
            say(f"ready after {time.monotonic() - began:.0f} s; running tests/e2e")
            env = {
                **os.environ,
                "TURNSTILE_E2E_KUBECONFIG": str(cluster.kubeconfig_path),
                "TURNSTILE_E2E_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
                "TURNSTILE_E2E_KUBECTL": str(cp.binary("kubectl")),
                "TURNSTILE_E2E_WHERE": "node tier (tests/platform, CoreDNS)",
            }
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "e2e",
                 str(ROOT / "tests" / "e2e"), "-v"],
                env=env, cwd=ROOT, check=False,
            )  # fmt: skip
            returncode = result.returncode
            if returncode != 0:
                shown = cp.kubectl("-n", NAMESPACE, "get", "pods,events", "-o", "wide",
                                   check=False)  # fmt: skip
                print(shown.stdout)
                print(json.dumps({"e2e": "failed", "exit": returncode}))
    say(f"stopped; the host is as it was ({time.monotonic() - began:.0f} s in all)")
    return returncode


if __name__ == "__main__":
    sys.exit(main())
