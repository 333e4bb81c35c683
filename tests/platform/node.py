"""One real Kubernetes node on a :class:`~tests.platform.control_plane.ControlPlane`.

The ``k8s`` tier's control plane has no node: a Deployment gets a ReplicaSet and never a pod.
This module adds the rest of a cluster on the same machine, as real processes, so pods run:

* containerd (Debian's) with runc, with its own config, root, state and socket in the tier's
  temp dir, the CRI's sandbox image a local ``pause`` image (``tests/platform/images.py``);
* the CNI ``bridge`` plugin (Debian's ``containernetworking-plugins``) on :data:`POD_SUBNET`,
  a subnet the tier owns, bridge :data:`BRIDGE`, hairpin mode, no masquerade: pods reach each
  other, the host's bridge address and Services, nothing beyond this machine. A *fence* of two
  iptables rules (:data:`FENCE`), set before any pod or kube-proxy runs, makes that hold even
  before kube-proxy has written its rules: a pod's packet for anything outside the pod network
  is refused rather than routed out, and so is a packet of this host for a Service address that
  kube-proxy has not translated;
* kubelet, kube-scheduler and kube-proxy (iptables mode) built from the control plane's
  pinned ``k8s.io/kubernetes`` module (``hack/build-kube.sh``).

The node is named ``localhost`` and its kubelet listens on 127.0.0.1, so the API server reaches
it for ``logs``/``exec``/``port-forward`` by its Hostname address
(``--kubelet-preferred-address-types=Hostname``, set by the control plane).

kubelet, kube-proxy and containerd change the host (sysctls, iptables, mounts, cgroups, a few
fixed paths); :mod:`tests.platform.host_state` records it before the start and
:meth:`Node.stop` puts it back, also after a failed start. The snapshot is kept in
:data:`STATE_DIR` until the host is restored, so a run killed with ``-9`` is cleaned up by the
next start or by ``python -m tests.platform.cluster down``. One node at a time per machine
(an abstract-socket lock): two would share ``/var/lib/kubelet`` and iptables chains.

The settings that make this work in a container without ``CAP_SYS_RESOURCE`` on a cgroup v1
host (containerd ``restrict_oom_score_adj``, kubelet ``failCgroupV1: false``, ``oomScoreAdj:
0``...) are explained where they are set; see also ``docs/node-tier.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.platform import host_state
from tests.platform.control_plane import (
    SERVICE_CIDR,
    ControlPlane,
    ControlPlaneError,
    _poll,
    _terminate,
    free_port,
)
from tests.platform.images import Image, pause_image

__all__ = [
    "BRIDGE",
    "NODE_NAME",
    "POD_SUBNET",
    "STATE_DIR",
    "Node",
    "NodeError",
    "NodePrerequisiteError",
    "clean_leftovers",
]

NODE_NAME = "localhost"
POD_SUBNET = "10.213.0.0/24"
#: The bridge's own address: pods' gateway, and where they reach the API server.
BRIDGE_IP = "10.213.0.1"
BRIDGE = "tsnode0"
#: Cgroup parent of every pod (under each v1 controller), so the node's cgroups are one tree.
CGROUP_ROOT = "turnstile-node"
#: iptables rules (filter table) the tier inserts before anything runs; ``Node.stop`` takes
#: them out with the rest of its iptables changes (``host_state``). Pods route everything via
#: the host (their default route), and the host's own default route leads off this machine:
#: without these, a pod's packet for an address kube-proxy does not translate (a Service IP
#: before its rules are synced, any other address) would leave the machine, and so would the
#: host's own for such a Service IP.
FENCE: tuple[tuple[str, ...], ...] = (
    ("FORWARD", "-s", POD_SUBNET, "!", "-d", POD_SUBNET, "-j", "REJECT"),
    ("OUTPUT", "-d", SERVICE_CIDR, "-j", "REJECT"),
)
STATE_DIR = Path(os.environ.get("TURNSTILE_NODE_STATE_DIR", "/run/turnstile-node"))
KEEP_ENV = "TURNSTILE_KEEP_NODE"

NODE_BINARIES: tuple[str, ...] = ("kubelet", "kube-scheduler", "kube-proxy", "pause")
#: Debian packages (hack/install-node-deps.sh) and the files that prove each is there.
HOST_PROGRAMS: dict[str, str] = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "ip": "iproute2",
    "socat": "socat",
}
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS: tuple[str, ...] = ("bridge", "host-local", "loopback", "portmap")


class NodeError(ControlPlaneError):
    """The node could not be started, operated or stopped cleanly."""


class NodePrerequisiteError(NodeError):
    """Something the node needs is not installed (run ``make node-deps`` / ``make kube``)."""


def coredns_binary() -> Path:
    """CoreDNS, built once by ``hack/build-coredns.sh`` (``go install``, about 3.5 min cold)."""
    script = Path(__file__).resolve().parents[2] / "hack" / "build-coredns.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1200,
                          check=False)  # fmt: skip
    binary = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    if proc.returncode != 0 or binary is None or not os.access(binary, os.X_OK):
        raise NodePrerequisiteError(f"CoreDNS could not be built: {proc.stderr[-2000:]}")
    return binary


def check_prerequisites(bin_dir: Path) -> None:
    """Raise :class:`NodePrerequisiteError` naming everything missing, and how to get it."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (kubelet and containerd manage mounts, cgroups and iptables)")
    missing += [f"{b} (make kube)" for b in NODE_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    missing += [
        f"{prog} (Debian package {pkg}; make node-deps)"
        for prog, pkg in HOST_PROGRAMS.items()
        if shutil.which(prog) is None
    ]
    missing += [
        f"{CNI_BIN_DIR / p} (Debian package containernetworking-plugins; make node-deps)"
        for p in CNI_PLUGINS
        if not os.access(CNI_BIN_DIR / p, os.X_OK)
    ]
    if not Path("/sys/fs/cgroup/memory").is_dir():
        missing.append("a cgroup v1 memory controller at /sys/fs/cgroup/memory (this tier's setup)")
    if missing:
        raise NodePrerequisiteError("node tier prerequisites missing: " + "; ".join(missing))


def _subnet_clash() -> str | None:
    """The host route that overlaps :data:`POD_SUBNET`, if any (then the tier cannot own it)."""
    proc = subprocess.run(
        ["ip", "-4", "route", "show"], capture_output=True, text=True, timeout=10, check=False
    )
    ours = ipaddress.ip_network(POD_SUBNET)
    for line in proc.stdout.splitlines():
        dest = line.split()[0] if line.split() else ""
        if dest == "default" or f"dev {BRIDGE}" in line:
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dest, strict=False).overlaps(ours):
                return line
    return None


# ------------------------------------------------------------------------ host lock, leftovers


class _HostLock:
    """One node per machine: a bound abstract unix socket, held while a node starts or runs.

    The kernel releases it when the holder dies, and it leaves no file behind.
    """

    NAME = b"\0turnstile-node-host-lock"

    def __init__(self) -> None:
        self._sock: socket.socket | None = None

    def acquire(self, timeout: float) -> None:
        if self._sock is not None:
            return
        for _ in _poll(time.monotonic() + timeout, 0.5):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(self.NAME)
            except OSError:
                sock.close()
                continue
            self._sock = sock
            return
        raise NodeError(
            f"another node tier runs on this machine (one at a time); waited {timeout:g}s"
        )

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _write_state(data: dict[str, Any]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_DIR / "state.json.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, STATE_DIR / "state.json")


def _read_state() -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((STATE_DIR / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def _kill_groups(groups: Sequence[Sequence[Any]], grace: float) -> None:
    """SIGTERM process groups, SIGKILL what is left after ``grace`` s (bounded).

    ``groups`` holds ``[pgid, marker]`` pairs: a group is only signalled while its leader's
    command line still contains ``marker`` (the run's temp dir), so a pid reused since by
    another program is never touched.
    """
    alive = []
    for pgid, marker in groups:
        try:
            cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() not in cmdline:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
            alive.append(pgid)
    deadline = time.monotonic() + grace
    for _ in _poll(deadline, 0.2):
        alive = [g for g in alive if _group_alive(g)]
        if not alive:
            return
    for pgid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still "exists"; it is dead for our purposes once reaped or defunct.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pgid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True


def _kill_shims(socket_path: str) -> None:
    """SIGKILL containerd shims of *our* containerd (they leave its process group on start)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if (
                cmdline
                and cmdline[0].endswith(b"containerd-shim-runc-v2")
                and (socket_path.encode() in cmdline)
            ):
                os.kill(int(proc.name), signal.SIGKILL)


def clean_leftovers(*, with_control_plane: bool = True) -> list[str]:
    """Stop what a previous node left running (killed run, ``cluster up``); restore the host.

    With ``with_control_plane`` the control plane the node was started on is stopped too (a
    test run killed with ``-9`` leaves it running; its temp dir is removed). Returns what could
    not be put back (empty when the host is as before). Does nothing and returns ``[]`` when
    there is no saved state. Must be called holding the host lock, or when no node runs.
    """
    state = _read_state()
    if state is None:
        return []
    _kill_groups(state.get("process_groups", []), grace=10)
    if with_control_plane:
        _kill_groups(state.get("control_plane_groups", []), grace=10)
        if state.get("control_plane_workdir"):
            shutil.rmtree(state["control_plane_workdir"], ignore_errors=True)
    if state.get("containerd_socket"):
        _kill_shims(state["containerd_socket"])
    before = host_state.HostState.from_json(state["host"])
    errors = host_state.restore(
        before, link_names=[BRIDGE], mount_prefixes=[state["workdir"]] if "workdir" in state else []
    )
    for path in state.get("remove", []):
        shutil.rmtree(path, ignore_errors=True)
    left = errors + host_state.diff(before)
    if not left:
        (STATE_DIR / "state.json").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            STATE_DIR.rmdir()  # only when empty: `cluster up` keeps cluster.json there
    return left


# ------------------------------------------------------------------------------------ node


class Node:
    """containerd + kubelet + kube-scheduler + kube-proxy on a started control plane.

    Attributes (valid after :meth:`start`): ``workdir`` (configs, logs in ``logs/``),
    ``name`` (the Node object's name), ``pause`` (the sandbox :class:`Image`),
    ``containerd_socket``.
    """

    name = NODE_NAME

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        start_timeout: float = 180.0,
        stop_timeout: float = 20.0,
        keep_workdir: bool | None = None,
        dns: bool = False,
    ) -> None:
        self.cp = control_plane
        #: CoreDNS (``hack/build-coredns.sh``) on the bridge address, and the kubelet's
        #: ``clusterDNS`` pointing at it: Service and StatefulSet pod names resolve in pods.
        self.dns = dns
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.keep_workdir = (
            os.environ.get(KEEP_ENV) == "1" if keep_workdir is None else keep_workdir
        )
        self._lock = _HostLock()
        self._procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self._workdir: Path | None = None
        self._before: host_state.HostState | None = None
        self.pause: Image | None = None
        self.ready_seconds: float | None = None
        self.restore_errors: list[str] = []

    # ----------------------------------------------------------------- public

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise NodeError("node not started")
        return self._workdir

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def host_before(self) -> host_state.HostState:
        """The host as it was before :meth:`start` (for tests comparing after :meth:`stop`)."""
        if self._before is None:
            raise NodeError("node not started")
        return self._before

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Node:
        """Start the node and wait until the Node object is Ready; on failure stop and raise."""
        bin_dir = self.cp.bin_dir
        check_prerequisites(bin_dir)
        clash = _subnet_clash()
        if clash:
            raise NodePrerequisiteError(f"pod subnet {POD_SUBNET} overlaps host route {clash!r}")
        deadline = time.monotonic() + self.start_timeout
        self._lock.acquire(timeout=min(120.0, self.start_timeout / 2))
        atexit.register(self.stop)
        try:
            if (STATE_DIR / "cluster.json").exists():
                raise NodeError(
                    "a cluster started by `python -m tests.platform.cluster up` is running; "
                    "stop it with `python -m tests.platform.cluster down` first"
                )
            left = clean_leftovers()
            if left:
                raise NodeError(f"a previous node's leftovers could not be removed: {left}")
            self._start(bin_dir, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process, remove pods' cgroups/mounts, restore the host. Idempotent.

        What could not be restored is kept in :attr:`restore_errors` (and the saved state
        stays in :data:`STATE_DIR` for ``cluster down`` to retry).
        """
        atexit.unregister(self.stop)
        if self._workdir is None:
            self._lock.release()
            return
        for name, popen, _log in reversed(self._procs):
            if name != "containerd":
                _terminate(popen, self.stop_timeout)
        # Containers outlive kubelet; kill them through their cgroups before containerd goes.
        for controller in Path("/sys/fs/cgroup").iterdir():
            tree = controller / CGROUP_ROOT
            if tree.is_dir():
                for root, _dirs, _files in os.walk(tree):
                    host_state._kill_cgroup(Path(root))
        _kill_shims(str(self.containerd_socket))
        for name, popen, _log in self._procs:
            if name == "containerd":
                _terminate(popen, self.stop_timeout)
        self._procs.clear()
        self.restore_errors = clean_leftovers(with_control_plane=False)
        workdir, self._workdir = self._workdir, None
        if self.keep_workdir:
            print(f"[node] kept {workdir} ({KEEP_ENV}=1)")
        else:
            _remove_tree(workdir)
        self._lock.release()

    def detach(self) -> None:
        """Leave the node running after this process exits (``cluster up``); keeps the lock file
        state so ``cluster down`` (or the next start) stops it and restores the host."""
        atexit.unregister(self.stop)
        self._procs.clear()
        self._workdir = None
        self._lock.release()

    def logs(self, lines: int = 30) -> str:
        out = []
        for name, _popen, log in self._procs:
            try:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            except OSError:
                tail = "<no log>"
            out.append(f"--- {name} (last {lines} lines) ---\n{tail}")
        return "\n".join(out)

    def ctr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``ctr -n k8s.io ARGS`` against this node's containerd; raises on failure."""
        proc = subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def load_image(self, image: Image) -> None:
        """Import an image archive into the node (pods use it with ``imagePullPolicy: Never``)."""
        self.ctr("images", "import", str(image.archive), timeout=300)

    # -------------------------------------------------------------- internals

    def _start(self, bin_dir: Path, deadline: float) -> None:
        self._before = host_state.snapshot()
        # Under /var/tmp, not /tmp: kubelet and containerd mount below it and some /tmp are tmpfs
        # without room for image layers.
        self._workdir = Path(tempfile.mkdtemp(prefix="turnstile-node-", dir="/var/tmp"))
        (self.workdir / "logs").mkdir()
        self._save_state()
        _fence()
        _make_cgroup_root()
        start = time.monotonic()
        self.pause = pause_image(bin_dir / "pause")
        self._start_containerd()
        self._wait(deadline, "containerd socket", self.containerd_socket.exists)
        self._wait(deadline, "containerd CRI", self._cri_up)
        self.load_image(self.pause)
        self._write_cni_config()
        self._start_api_relay()
        if self.dns:
            self._start_dns()
        self._start_kubelet(bin_dir)
        self._start_scheduler(bin_dir)
        self._start_kube_proxy(bin_dir)
        self._wait(deadline, f"node {self.name} Ready", self._node_ready)
        self.ready_seconds = time.monotonic() - start

    def _save_state(self) -> None:
        _write_state(
            {
                "host": self.host_before.to_json(),
                "process_groups": [[p.pid, str(self.workdir)] for _n, p, _l in self._procs],
                "control_plane_groups": [[g, str(self.cp.workdir)] for g in self.cp.process_groups],
                "control_plane_workdir": str(self.cp.workdir),
                "containerd_socket": str(self.workdir / "containerd" / "containerd.sock"),
                "remove": [] if self.keep_workdir else [str(self.workdir)],
                "workdir": str(self.workdir),
            }
        )

    def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        log = self.workdir / "logs" / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                env=env,
            )
        self._procs.append((name, popen, log))
        self._save_state()

    def _check_alive(self) -> None:
        for name, popen, log in self._procs:
            code = popen.poll()
            if code is not None:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                raise NodeError(f"{name} exited with code {code}:\n{tail}")

    def _wait(self, deadline: float, what: str, probe: Any) -> None:
        for _ in _poll(deadline, 0.5):
            self._check_alive()
            if probe():
                return
        raise NodeError(f"timed out waiting for {what}\n{self.logs()}")

    def _cri_up(self) -> bool:
        proc = subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "plugins", "ls"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return proc.returncode == 0 and any(
            "io.containerd.grpc.v1" in line and "cri" in line and " ok" in line
            for line in proc.stdout.splitlines()
        )

    def _node_ready(self) -> bool:
        node = self.cp.get_json("node", self.name)
        if not node:
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _start_containerd(self) -> None:
        root = self.workdir / "containerd"
        root.mkdir()
        assert self.pause is not None
        config = root / "config.toml"
        config.write_text(
            _CONTAINERD_CONFIG.format(
                root=root / "root",
                state=root / "state",
                socket=self.containerd_socket,
                sandbox=self.pause.name,
                cni_bin=CNI_BIN_DIR,
                cni_conf=self.workdir / "cni" / "net.d",
            )
        )
        self._spawn("containerd", ["containerd", "--config", str(config)])

    def _write_cni_config(self) -> None:
        conf_dir = self.workdir / "cni" / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "turnstile-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    # No masquerade: pod traffic has nowhere to go but this machine.
                    "ipMasq": False,
                    # A pod reaching itself through its own Service comes back on its port.
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.workdir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (conf_dir / "10-turnstile.conflist").write_text(json.dumps(conflist, indent=2))

    def _start_api_relay(self) -> None:
        """Let pods reach the API server, which listens on 127.0.0.1 only.

        The bridge is made now with its gateway address (the CNI plugin adopts it), socat
        relays ``BRIDGE_IP:<port>`` to the API server's loopback port, and the ``kubernetes``
        Service's EndpointSlice names that address (the control plane runs with
        ``--endpoint-reconciler-type=none`` since a loopback endpoint is invalid). In-cluster
        clients then reach ``https://10.0.0.1`` as in any cluster; the serving certificate
        already names that IP.
        """
        for argv in (
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", f"{BRIDGE_IP}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE],
            ["ip", "link", "set", BRIDGE, "up"],
        ):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            if proc.returncode != 0:
                raise NodeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
        port = int(self.cp.server.rsplit(":", 1)[1])
        # Under sh, whose $0 (the temp dir) marks the process group as this node's for a
        # later clean-up of a killed run.
        self._spawn(
            "api-relay",
            [
                "sh", "-c", 'socat "$1" "$2"', str(self.workdir / "api-relay"),
                f"TCP-LISTEN:{port},bind={BRIDGE_IP},reuseaddr,fork", f"TCP:127.0.0.1:{port}",
            ],
        )  # fmt: skip
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "turnstile.dev-node-tier",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [BRIDGE_IP], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
        self.cp.kubectl("apply", "-f", "-", stdin=json.dumps(slice_))

    def _start_dns(self) -> None:
        """CoreDNS on ``BRIDGE_IP:53`` with its ``kubernetes`` plugin (the admin kubeconfig):
        ``<service>.<namespace>.svc.cluster.local`` and a StatefulSet's pod names answer, as in
        any cluster. Nothing else does: no ``forward``, so no query leaves this machine."""
        coredns = coredns_binary()
        corefile = self.workdir / "Corefile"
        corefile.write_text(
            ".:53 {\n"
            f"    bind {BRIDGE_IP}\n"
            "    errors\n"
            "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
            f"        kubeconfig {self.cp.kubeconfig}\n"
            "        pods insecure\n"
            "    }\n"
            "    cache 5\n"
            "}\n"
        )
        self._spawn("coredns", [str(coredns), "-conf", str(corefile)])

    def _start_kubelet(self, bin_dir: Path) -> None:
        kubeconfig = self.cp.client_kubeconfig(
            "kubelet", f"system:node:{self.name}", ["system:nodes"]
        )
        root = self.workdir / "kubelet"
        (root / "manifests").mkdir(parents=True)
        (root / "pod-logs").mkdir()
        port, healthz = free_port(), free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # Loopback only; the API server reaches it as `localhost` (the node's name).
            "address": "127.0.0.1",
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.cp.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            # cgroup v1, no systemd in the container.
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "cgroupRoot": f"/{CGROUP_ROOT}",
            "failSwapOn": False,
            # No CAP_SYS_RESOURCE: kubelet may not lower its own oom_score_adj.
            "oomScoreAdj": 0,
            # A shared disk: evict only when it is really full; never delete our local images.
            "evictionHard": {
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
                "memory.available": "100Mi",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "staticPodPath": str(root / "manifests"),
            "podLogsDir": str(root / "pod-logs"),
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "clusterDomain": "cluster.local",
            **({"clusterDNS": [BRIDGE_IP]} if self.dns else {}),
            "resolvConf": "/etc/resolv.conf",
            "maxPods": 40,
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "2s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
            "volumeStatsAggPeriod": "0s",
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
        }
        (self.workdir / "kubelet-config.json").write_text(json.dumps(config, indent=2))
        self._spawn(
            "kubelet",
            [
                str(bin_dir / "kubelet"),
                f"--config={self.workdir / 'kubelet-config.json'}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={root}",
                f"--hostname-override={self.name}",
                "--v=1",
            ],
        )

    def _start_scheduler(self, bin_dir: Path) -> None:
        kubeconfig = self.cp.client_kubeconfig("scheduler", "system:kube-scheduler")
        self._spawn(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )

    def _start_kube_proxy(self, bin_dir: Path) -> None:
        kubeconfig = self.cp.client_kubeconfig("kube-proxy", "system:kube-proxy")
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": self.name,
            "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "clusterCIDR": POD_SUBNET,
            # NodePorts on loopback only.
            "nodePortAddresses": ["127.0.0.0/8"],
            # Every Service packet leaves with the bridge's address, so the reply from a pod on
            # the same bridge comes back through the host's conntrack (no br_netfilter needed).
            "iptables": {"masqueradeAll": True, "syncPeriod": "10s", "minSyncPeriod": "0s"},
            # Leave the host's conntrack table size and timeouts as they are.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.workdir / "kube-proxy-config.json"
        path.write_text(json.dumps(config, indent=2))
        self._spawn("kube-proxy", [str(bin_dir / "kube-proxy"), f"--config={path}", "--v=1"])


def _fence() -> None:
    """Insert :data:`FENCE` at the top of its chains (see there)."""
    for chain, *match in FENCE:
        argv = ["iptables", "-w", "5", "-I", chain, "1", *match]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
        if proc.returncode != 0:
            raise NodeError(f"{' '.join(argv)}: {proc.stderr.strip()}")


def _make_cgroup_root() -> None:
    """Create :data:`CGROUP_ROOT` in every v1 hierarchy (kubelet requires it to exist)."""
    for controller in Path("/sys/fs/cgroup").iterdir():
        if not controller.is_dir() or controller.is_symlink() or controller.name == "unified":
            continue
        ours = controller / CGROUP_ROOT
        with contextlib.suppress(OSError):
            ours.mkdir(exist_ok=True)
            # A new cpuset cgroup starts with no CPUs and no memory nodes: nothing can join it.
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (controller / name).is_file() and not (ours / name).read_text().strip():
                    (ours / name).write_text((controller / name).read_text())


def _remove_tree(path: Path) -> None:
    """rm -rf that survives read-only bits and files vanishing under it (bounded retries)."""
    for _ in range(3):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.5)


# containerd 1.6, config version 2. Everything of the tier lives under the tier's dir; the
# options that differ from Debian's defaults say why.
_CONTAINERD_CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
# Plugins that would write to /opt or need kernel features a container lacks.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  # No registry: the sandbox image is imported by the tier.
  sandbox_image = "{sandbox}"
  # Without CAP_SYS_RESOURCE runc cannot raise oom_score_adj above the caller's; without this
  # every sandbox fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroupfs: there is no systemd.
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"""
