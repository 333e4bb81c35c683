"""A real, throw-away Kubernetes control plane on loopback, for tests and demos.

Turnstile's operator talks to the Kubernetes API, and the behaviours that matter
(CRD validation, RBAC of the operator's ServiceAccount, owner references and
garbage collection, Deployments rolling out) are implemented by the API server
and the controller-manager, not by any client library. Faking them would test
our assumptions rather than Kubernetes, and there is no Docker here for kind.
So this module runs the genuine binaries (built by ``hack/build-kube.sh``):

* etcd, plain HTTP on 127.0.0.1 (loopback only, fsync disabled for speed),
* kube-apiserver, TLS on 127.0.0.1 with a throw-away CA, client-certificate
  authentication, ``Node,RBAC`` authorization and ServiceAccount token signing,
* kube-controller-manager with all default controllers (garbage collector,
  Deployment/ReplicaSet, namespace, ServiceAccount...) using per-controller
  ServiceAccount credentials, exactly like a production cluster.

There is no kubelet or scheduler here: Pods are created but never run. The node tier adds
them (``tests/platform/node.py``).

The module is deliberately free of pytest so the demo and the benchmarks can use
it too::

    with ControlPlane() as cp:
        cp.kubectl("get", "namespaces")

Run ``python -m tests.platform.control_plane`` to get a cluster for manual use.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

__all__ = [
    "REQUIRED_BINARIES",
    "BinariesNotFoundError",
    "ControlPlane",
    "ControlPlaneError",
    "find_bin_dir",
]

_T = TypeVar("_T")

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-kube.sh"

REQUIRED_BINARIES: tuple[str, ...] = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
)

#: Service CIDR handed to the API server; its first address is the
#: ``kubernetes.default`` Service IP and must be in the serving certificate.
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

#: Keep the temp dir (logs, certs, kubeconfigs) after stop() for post-mortems.
KEEP_ENV = "TURNSTILE_KEEP_CONTROL_PLANE"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or operated."""


class BinariesNotFoundError(ControlPlaneError):
    """The Kubernetes binaries have not been built (or KUBEBUILDER_ASSETS is wrong)."""


class _PortInUseError(ControlPlaneError):
    """A component could not bind the port picked for it; start() retries."""


_PORT_ATTEMPTS = 3


def find_bin_dir(timeout: float = 30.0) -> Path:
    """Return the directory holding the control-plane binaries.

    Delegates to ``hack/build-kube.sh --print-dir`` so that there is exactly one
    definition of where binaries live (cache path, pinned version,
    ``KUBEBUILDER_ASSETS`` handling). That mode never builds anything.

    Raises:
        BinariesNotFoundError: if the directory lacks any required binary.
    """
    if not BUILD_SCRIPT.is_file():
        raise BinariesNotFoundError(f"{BUILD_SCRIPT} not found; cannot locate Kubernetes binaries")
    try:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print-dir"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BinariesNotFoundError(
            f"{BUILD_SCRIPT} --print-dir timed out after {timeout}s"
        ) from exc
    if proc.returncode != 0:
        raise BinariesNotFoundError(
            f"{BUILD_SCRIPT} --print-dir failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    bin_dir = Path(proc.stdout.strip())
    _check_binaries(bin_dir)
    return bin_dir


def _check_binaries(bin_dir: Path) -> None:
    missing = [b for b in REQUIRED_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        hint = (
            " (KUBEBUILDER_ASSETS is set; binaries it lacks come from the build cache)"
            if os.environ.get("KUBEBUILDER_ASSETS")
            else ""
        )
        raise BinariesNotFoundError(
            f"Kubernetes binaries missing from {bin_dir}: {', '.join(missing)}{hint}. "
            f"Build them with `hack/build-kube.sh` (one-off, ~20-30 min on 2 cores; "
            f"later runs are no-ops), or point KUBEBUILDER_ASSETS at prebuilt ones."
        )


def free_port() -> int:
    """Ask the kernel for a free loopback TCP port.

    There is an unavoidable window between closing the probe socket and the
    server binding it; on a loopback-only test host it is small enough, and a
    clash surfaces as a clear start-up failure rather than a hang.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- PKI


def _openssl(*args: str, cwd: Path) -> None:
    try:
        proc = subprocess.run(
            ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError as exc:
        raise ControlPlaneError(
            "the openssl CLI is required (Debian: apt-get install openssl)"
        ) from exc
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


@dataclass(frozen=True)
class _Pki:
    """Paths of the throw-away PKI; everything lives in one directory."""

    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"


def _make_pki(pki_dir: Path) -> _Pki:
    """Generate CA, serving and client certificates with the openssl CLI.

    The openssl CLI is used (rather than a Python crypto package) so this
    module needs nothing beyond the standard library. EC P-256 keeps key
    generation fast; the ServiceAccount signing key is RSA because RS256 is
    what every Kubernetes client expects to verify.
    """
    pki_dir.mkdir(parents=True)
    pki = _Pki(pki_dir)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=pki_dir)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=turnstile-test-ca",
        "-days", "7", "-out", "ca.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=pki_dir,
    )  # fmt: skip
    _openssl(
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "sa.key",
        cwd=pki_dir,
    )
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki_dir)

    sans = ",".join(
        [
            "IP:127.0.0.1",
            f"IP:{KUBERNETES_SERVICE_IP}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ]
    )
    _issue(pki, "apiserver", "/CN=kube-apiserver", "serverAuth", sans)
    # Admin: system:masters bypasses RBAC, like kubeadm's admin.conf.
    _issue(pki, "admin", "/O=system:masters/CN=turnstile-admin", "clientAuth")
    # The controller-manager's user is bound by the bootstrap RBAC policy.
    _issue(pki, "controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
    # The API server's identity towards kubelets (logs, exec, port-forward), as kubeadm's
    # apiserver-kubelet-client; unused until a node joins (tests/platform/node.py).
    _issue(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client",
           "clientAuth")  # fmt: skip
    return pki


def _issue(pki: _Pki, name: str, subject: str, usage: str, sans: str | None = None) -> None:
    ext = pki.dir / f"{name}.ext"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if sans:
        lines.append(f"subjectAltName={sans}")
    ext.write_text("\n".join(lines) + "\n")
    key, csr, crt = f"{name}.key", f"{name}.csr", f"{name}.crt"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key, cwd=pki.dir)
    _openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr, cwd=pki.dir)
    _openssl(
        "x509", "-req", "-in", csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "7", "-extfile", ext.name, "-out", crt,
        cwd=pki.dir,
    )  # fmt: skip


def _write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca: Path,
    user: str,
    credentials: Mapping[str, str],
    namespace: str | None = None,
) -> Path:
    """Write a kubeconfig. JSON is valid YAML, so no YAML library is needed."""
    context: dict[str, str] = {"cluster": "turnstile", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "turnstile", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": dict(credentials)}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------------- processes


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class _Ports:
    etcd_client: int = field(default_factory=free_port)
    etcd_peer: int = field(default_factory=free_port)
    apiserver: int = field(default_factory=free_port)
    controller_manager: int = field(default_factory=free_port)


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, in a temp dir.

    Attributes (valid after :meth:`start`):
        bin_dir: directory of the binaries in use.
        server: ``https://127.0.0.1:<port>`` of the API server.
        kubeconfig: admin (system:masters) kubeconfig path.
        ca_file: the cluster CA certificate (also in every kubeconfig).
        workdir: temp dir with logs (``logs/*.log``), certs and kubeconfigs.
    """

    def __init__(
        self,
        bin_dir: Path | str | None = None,
        *,
        start_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        keep_workdir: bool | None = None,
        extra_apiserver_args: Sequence[str] = (),
        extra_controller_manager_args: Sequence[str] = (),
    ) -> None:
        """Configure (but do not start) a control plane.

        Args:
            bin_dir: binary directory; default is ``hack/build-kube.sh --print-dir``.
            start_timeout: upper bound for all of :meth:`start`.
            stop_timeout: per-process grace period before SIGKILL.
            keep_workdir: keep the temp dir after stop (default: env
                ``TURNSTILE_KEEP_CONTROL_PLANE=1``), for reading logs.
            extra_apiserver_args: appended to the kube-apiserver command line
                (e.g. feature gates a test needs); later flags win.
            extra_controller_manager_args: same for kube-controller-manager.
        """
        self._bin_dir_arg = Path(bin_dir) if bin_dir is not None else None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.keep_workdir = (
            os.environ.get(KEEP_ENV) == "1" if keep_workdir is None else keep_workdir
        )
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.extra_controller_manager_args = tuple(extra_controller_manager_args)
        self._procs: list[_Proc] = []
        self._workdir: Path | None = None
        self._bin_dir: Path | None = None
        self._pki: _Pki | None = None
        self._ports: _Ports | None = None
        self._sa_kubeconfigs = 0

    # ------------------------------------------------------------------ public

    @property
    def started(self) -> bool:
        return bool(self._procs)

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = self._bin_dir_arg or find_bin_dir()
            _check_binaries(self._bin_dir)
        return self._bin_dir

    @property
    def workdir(self) -> Path:
        return self._require(self._workdir)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self._require(self._ports).apiserver}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self._require(self._pki).ca_crt

    def binary(self, name: str) -> Path:
        """Path of a binary in :attr:`bin_dir` (e.g. ``"helm"``), checked to exist."""
        path = self.bin_dir / name
        if not os.access(path, os.X_OK):
            raise BinariesNotFoundError(f"{path} not found; run hack/build-kube.sh")
        return path

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """Environment for child processes (kubectl, helm, the operator).

        Puts :attr:`bin_dir` first on PATH, points KUBECONFIG at the admin
        config, and gives kubectl/helm private cache dirs so stale discovery
        from an earlier cluster on a reused port can never leak in.
        """
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["KUBECACHEDIR"] = str(self.workdir / "kubecache")
        env["HELM_CACHE_HOME"] = str(self.workdir / "helm" / "cache")
        env["HELM_CONFIG_HOME"] = str(self.workdir / "helm" / "config")
        env["HELM_DATA_HOME"] = str(self.workdir / "helm" / "data")
        return env

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | str | None = None,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (admin unless ``kubeconfig`` is given).

        ``stdin`` is fed to kubectl, e.g. a manifest for ``apply -f -``.

        Raises:
            ControlPlaneError: if ``check`` and kubectl exits non-zero; the
                message includes stdout/stderr, which is what a test needs.
        """
        cfg = Path(kubeconfig) if kubeconfig is not None else self.kubeconfig
        cmd = [str(self.binary("kubectl")), "--kubeconfig", str(cfg), *args]
        proc = subprocess.run(
            cmd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(cfg),
            check=False,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
            )
        return proc

    def get_json(self, *args: str) -> dict[str, Any] | None:
        """``kubectl get ARGS -o json`` as admin, or None if the object does not exist."""
        proc = self.kubectl("get", *args, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise ControlPlaneError(f"kubectl get {' '.join(args)}: {proc.stderr.strip()}")
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def client_kubeconfig(self, name: str, user: str, groups: Sequence[str] = ()) -> Path:
        """Issue a client certificate for ``user`` in ``groups`` and return its kubeconfig.

        For the components a node runs (kubelet as ``system:node:NAME`` in ``system:nodes``,
        ``system:kube-scheduler``, ``system:kube-proxy``): the bootstrap RBAC policy and the
        Node authorizer give each exactly the rights it has in a kubeadm cluster.
        """
        pki = self._require(self._pki)
        if not re.fullmatch(r"[a-z0-9-]+", name):
            raise ControlPlaneError(f"client_kubeconfig: name must be [a-z0-9-]+ (got {name!r})")
        subject = "".join(f"/O={g}" for g in groups) + f"/CN={user}"
        _issue(pki, name, subject, "clientAuth")
        return _write_kubeconfig(
            self.workdir / f"{name}.kubeconfig",
            server=self.server,
            ca=pki.ca_crt,
            user=user,
            credentials={
                "client-certificate": str(pki.crt(name)),
                "client-key": str(pki.key(name)),
            },
        )

    @property
    def process_groups(self) -> list[int]:
        """Process group ids of the running components (each is its own group)."""
        return [p.popen.pid for p in self._procs if p.popen.poll() is None]

    def detach(self) -> None:
        """Leave the processes and the temp dir running after this Python process exits.

        For ``python -m tests.platform.cluster up``: ``down`` stops them by their process
        groups and removes :attr:`workdir`.
        """
        atexit.unregister(self.stop)
        self._procs.clear()
        self._workdir = None

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        *,
        create: bool = True,
        duration: str = "1h",
    ) -> Path:
        """Return a kubeconfig that authenticates as ServiceAccount ``namespace/name``.

        The token comes from the TokenRequest API (``kubectl create token``),
        i.e. a bound, expiring token signed by the API server's SA key, the
        same kind a Pod gets. Use it to test what the operator's RBAC really
        allows. The ServiceAccount is created first unless ``create=False``.
        """
        if create:
            exists = self.kubectl("-n", namespace, "get", "serviceaccount", name, check=False)
            if exists.returncode != 0:
                self.kubectl("-n", namespace, "create", "serviceaccount", name)
        token = self.kubectl(
            "-n", namespace, "create", "token", name, f"--duration={duration}"
        ).stdout.strip()
        if not token:
            raise ControlPlaneError(f"empty token for serviceaccount {namespace}/{name}")
        self._sa_kubeconfigs += 1
        path = (
            self.workdir
            / "kubeconfigs"
            / f"sa-{namespace}-{name}-{self._sa_kubeconfigs}.kubeconfig"
        )
        path.parent.mkdir(exist_ok=True)
        return _write_kubeconfig(
            path,
            server=self.server,
            ca=self.ca_file,
            user=f"system:serviceaccount:{namespace}:{name}",
            credentials={"token": token},
            namespace=namespace,
        )

    # --------------------------------------------------------------- lifecycle

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start etcd, kube-apiserver and kube-controller-manager; wait until usable.

        On any failure everything already started is torn down and a
        :class:`ControlPlaneError` carrying the relevant log tail is raised.
        If a component lost the race for its port (see :func:`free_port`),
        the whole start is retried on fresh ports, a bounded number of times.
        """
        if self.started:
            raise ControlPlaneError("control plane already started")
        bin_dir = self.bin_dir  # fail fast, before creating anything
        deadline = time.monotonic() + self.start_timeout
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            try:
                self._start_once(bin_dir, deadline)
                return self
            except _PortInUseError:
                self.stop()
                if attempt == _PORT_ATTEMPTS:
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _start_once(self, bin_dir: Path, deadline: float) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="turnstile-kube-"))
        atexit.register(self.stop)
        (self.workdir / "logs").mkdir()
        self._ports = _Ports()
        self._pki = _make_pki(self.workdir / "pki")
        self._write_kubeconfigs()
        self._start_etcd(bin_dir)
        self._wait_etcd(deadline)
        self._start_apiserver(bin_dir)
        self._wait_https(
            "kube-apiserver", self._ports.apiserver, "/readyz", deadline, client_cert="admin"
        )
        self._start_controller_manager(bin_dir)
        self._wait_https(
            "kube-controller-manager", self._ports.controller_manager, "/healthz", deadline
        )

    def stop(self) -> None:
        """Stop all processes (whole process groups) and remove the temp dir. Idempotent."""
        atexit.unregister(self.stop)
        for proc in reversed(self._procs):
            _terminate(proc.popen, self.stop_timeout)
        self._procs.clear()
        if self._workdir is not None and self._workdir.exists():
            if self.keep_workdir:
                print(f"[control_plane] kept {self._workdir} ({KEEP_ENV}=1)")
            else:
                shutil.rmtree(self._workdir, ignore_errors=True)

    def logs(self, lines: int = 30) -> str:
        """Tail of every component's log, for failure messages."""
        return "\n".join(
            f"--- {p.name} (last {lines} lines) ---\n{p.tail(lines)}" for p in self._procs
        )

    # ---------------------------------------------------------------- internals

    @staticmethod
    def _require(value: _T | None) -> _T:
        if value is None:
            raise ControlPlaneError("control plane not started")
        return value

    def _write_kubeconfigs(self) -> None:
        pki = self._require(self._pki)
        for name, cfg in (
            ("admin", "admin.kubeconfig"),
            ("controller-manager", "controller-manager.kubeconfig"),
        ):
            _write_kubeconfig(
                self.workdir / cfg,
                server=self.server,
                ca=pki.ca_crt,
                user=name,
                credentials={
                    "client-certificate": str(pki.crt(name)),
                    "client-key": str(pki.key(name)),
                },
            )

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        log = self.workdir / "logs" / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # Own process group: stop() can kill the component and anything
                # it spawned without touching the test runner.
                start_new_session=True,
            )
        self._procs.append(_Proc(name, popen, log))

    def _start_etcd(self, bin_dir: Path) -> None:
        ports = self._require(self._ports)
        client = f"http://127.0.0.1:{ports.etcd_client}"
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        self._spawn(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=turnstile",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=turnstile={peer}",
                "--initial-cluster-state=new",
                # Test data is disposable; fsync dominates etcd latency on CI disks.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self, bin_dir: Path) -> None:
        ports = self._require(self._ports)
        pki = self._require(self._pki)
        self._spawn(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports.apiserver}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.crt('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca_crt}",
                # Front-proxy (aggregation) authentication, as kubeadm sets it up.
                # Without it every delegating component (the controller-manager
                # included) logs "missing content for CA bundle" forever. No
                # cert with CN front-proxy-client is ever issued, so this
                # grants nothing.
                f"--requestheader-client-ca-file={pki.ca_crt}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                "--authorization-mode=Node,RBAC",
                "--anonymous-auth=false",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # The lease reconciler would publish 127.0.0.1 as the endpoint of
                # the `kubernetes` Service, which validation rejects (loopback).
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                # For a node (tests/platform/node.py): reach kubelets by their Hostname address,
                # which the node tier makes `localhost`, with a client certificate they accept.
                "--kubelet-preferred-address-types=Hostname",
                f"--kubelet-client-certificate={pki.crt('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                *self.extra_apiserver_args,
            ],
        )

    def _start_controller_manager(self, bin_dir: Path) -> None:
        ports = self._require(self._ports)
        pki = self._require(self._pki)
        kubeconfig = self.workdir / "controller-manager.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports.controller_manager}",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}",
                f"--cluster-signing-cert-file={pki.ca_crt}",
                f"--cluster-signing-key-file={pki.ca_key}",
                # Single instance: skip the leader-election round trip on start.
                "--leader-elect=false",
                "--profiling=false",
                *self.extra_controller_manager_args,
            ],
        )

    def _check_alive(self) -> None:
        for proc in self._procs:
            code = proc.popen.poll()
            if code is not None:
                tail = proc.tail()
                error = _PortInUseError if "address already in use" in tail else ControlPlaneError
                raise error(f"{proc.name} exited with code {code} during start-up:\n{tail}")

    def _wait_etcd(self, deadline: float) -> None:
        port = self._require(self._ports).etcd_client
        last = "no attempt"
        for _ in _poll(deadline):
            self._check_alive()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                try:
                    conn.request("GET", "/health")
                    resp = conn.getresponse()
                    body = resp.read().decode(errors="replace")
                finally:
                    conn.close()
                if resp.status == 200 and '"health":"true"' in body.replace(" ", ""):
                    return
                last = f"HTTP {resp.status}: {body[:200]}"
            except OSError as exc:
                last = repr(exc)
        raise ControlPlaneError(f"etcd not healthy before deadline (last: {last})\n{self.logs()}")

    def _wait_https(
        self,
        name: str,
        port: int,
        path: str,
        deadline: float,
        client_cert: str | None = None,
    ) -> None:
        pki = self._require(self._pki)
        if client_cert:
            ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
            ctx.load_cert_chain(str(pki.crt(client_cert)), str(pki.key(client_cert)))
        else:
            # The controller-manager serves a self-signed cert from its cert dir;
            # /healthz is an always-allowed path, so only liveness is checked.
            ctx = ssl._create_unverified_context()
        last = "no attempt"
        for _ in _poll(deadline):
            self._check_alive()
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    body = resp.read().decode(errors="replace")
                finally:
                    conn.close()
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}: {body[-500:]}"
            except (OSError, ssl.SSLError) as exc:
                last = repr(exc)
        raise ControlPlaneError(
            f"{name} {path} not OK before deadline (last: {last})\n{self.logs()}"
        )


def _poll(deadline: float, interval: float = 0.25) -> Iterator[None]:
    """Yield until ``deadline`` (monotonic), sleeping ``interval`` between tries."""
    while True:
        yield
        if time.monotonic() + interval > deadline:
            return
        time.sleep(interval)


def _terminate(popen: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
    if popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=grace)


def main() -> None:
    """Run a control plane until interrupted, printing how to reach it."""
    with ControlPlane() as cp:
        print(f"server:     {cp.server}")
        print(f"kubeconfig: {cp.kubeconfig}")
        print(f"logs:       {cp.workdir / 'logs'}")
        print(f"try:        KUBECONFIG={cp.kubeconfig} {cp.bin_dir / 'kubectl'} get ns")
        print("Ctrl-C to stop.")
        with contextlib.suppress(KeyboardInterrupt):
            while cp.started:
                time.sleep(1)
                cp._check_alive()  # surface crashes while idling


if __name__ == "__main__":
    main()


def wait_for(
    what: str, probe: Callable[[], _T | None], timeout: float = 90.0, interval: float = 0.25
) -> _T:
    """Poll ``probe`` until it returns something truthy; raise after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: _T | None = None
    for _ in _poll(deadline, interval):
        last = probe()
        if last:
            return last
    raise ControlPlaneError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
