"""The Turnstile operator as a real subprocess, for k8s tests, benchmarks and the demo.

Tests that exercise the operator run it the way a Pod does (``python -m turnstile.operator``),
in its own process group, against the throw-away control plane: restarts, kills and RSS are
then the real thing. Free of pytest, like the rest of ``tests.platform``::

    op = OperatorProcess(cp.kubeconfig, namespaces=["demo"], recheck_interval=2)
    with op:
        ...
        op.restart()            # SIGTERM + start; op.kill() for SIGKILL
        print(op.logs())        # everything it logged so far

Logs go to a file (``log_path``) so a long run never blocks on a full pipe. ``wait_for_log``
and ``wait_ready`` are bounded and raise :class:`OperatorProcessError` with the log's tail.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["OperatorProcess", "OperatorProcessError", "free_port"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class OperatorProcessError(RuntimeError):
    """The operator did not start, stop or reach a state in time."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """``python -m turnstile.operator`` against ``kubeconfig``; see the module doc."""

    def __init__(
        self,
        kubeconfig: Path | str,
        *,
        namespaces: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        recheck_interval: float | None = 2.0,
        probe_timeout: float | None = 3.0,
        metrics_port: int | None = None,
        liveness_port: int | None = None,
        standalone: bool = True,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        name: str = "operator",
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.namespaces = list(namespaces)
        self.env = dict(env or {})
        self.recheck_interval = recheck_interval
        self.probe_timeout = probe_timeout
        self.metrics_port = metrics_port if metrics_port is not None else free_port()
        self.liveness_port = liveness_port if liveness_port is not None else free_port()
        self.standalone = standalone
        self.extra_args = list(extra_args)
        self.python = python
        self.name = name
        self._dir = Path(tempfile.mkdtemp(prefix=f"turnstile-{name}-"))
        self.log_path = self._dir / "operator.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.starts = 0

    # ------------------------------------------------------------------------ lifecycle

    def argv(self) -> list[str]:
        args = [self.python, "-m", "turnstile.operator"]
        if self.namespaces:
            for ns in self.namespaces:
                args += ["--namespace", ns]
        else:
            args.append("--all-namespaces")
        args += ["--metrics-port", str(self.metrics_port)]
        args += ["--liveness-port", str(self.liveness_port)]
        if self.recheck_interval is not None:
            args += ["--recheck-interval", str(self.recheck_interval)]
        if self.probe_timeout is not None:
            args += ["--probe-timeout", str(self.probe_timeout)]
        if self.standalone:
            args.append("--standalone")
        return args + self.extra_args

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> OperatorProcess:
        if self.running:
            raise OperatorProcessError("the operator is already running")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        env.pop("KUBERNETES_SERVICE_HOST", None)  # never mistake the test host for a Pod
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            log.write(f"==== start #{self.starts + 1}: {' '.join(self.argv())}\n".encode())
            self._proc = subprocess.Popen(
                self.argv(),
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.starts += 1
        if wait:
            self.wait_ready(timeout=timeout)
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Bounded wait until kopf's liveness endpoint answers (handlers are registered)."""
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise OperatorProcessError(f"the operator exited early:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise OperatorProcessError(f"the operator was not live within {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (kopf finishes in-flight handlers), SIGKILL after ``timeout``."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL: a crash, as far as the API server can tell."""
        return self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: int, timeout: float) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        return proc.returncode

    def restart(self, *, hard: bool = False, wait: bool = True) -> OperatorProcess:
        self.kill() if hard else self.stop()
        return self.start(wait=wait)

    def __enter__(self) -> OperatorProcess:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------------- observation

    def logs(self, *, since_start: bool = False) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            if since_start:
                log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = regex.search(self.logs())
            if match:
                return match
            time.sleep(0.1)
        raise OperatorProcessError(
            f"no log line matching {pattern!r} in {timeout}s:\n{self.tail()}"
        )

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def rss_bytes(self) -> int:
        """Resident memory of the operator process (Linux ``/proc``)."""
        if self.pid is None:
            return 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0
