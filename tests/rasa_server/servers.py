"""Real ``rasa run`` servers for the ``rasa-server`` tier and ``bench/rasa_server.py``.

Rasa Open Source 3.6.21 is installed whole in ``.venv-rasa-server`` (``hack/rasa-server-venv.sh``);
this module runs its ``rasa`` there as subprocesses on free loopback ports, so a lock store is
proven inside the host program doing its job: Sanic on uvloop (Rasa's default, kept), the REST
channel, Rasa's processor taking ``lock_store.lock(sender_id)`` around every message, a Redis
tracker store shared by the servers (without a shared tracker store a lock has nothing to
protect).

The bot (``bot/``) is keyword and regex only: "note m17" is answered "echo m17", so each reply
names the message it answers and the tracker shows which reply followed which message.

Plain Python plus aiohttp, importable without pytest, Rasa or redis-py (the benchmark runs in
the main venv, which has aiohttp through kopf, and drives the servers over HTTP). Every wait is
bounded and names what it waited for; every process runs in its own session and is SIGKILLed at
exit if still alive.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.platform.redis_servers import HOST, free_port

ROOT = Path(__file__).resolve().parents[2]
BOT = Path(__file__).resolve().parent / "bot"
#: The venv with the whole Rasa 3.6.21 (``hack/rasa-server-venv.sh``).
VENV = Path(os.environ.get("RASA_SERVER_VENV", ROOT / ".venv-rasa-server"))
#: Rasa's own lock store password variable name is ours; see ``turnstile.operator.render``.
LOCK_PASSWORD_ENV = "TURNSTILE_LOCK_STORE_PASSWORD"
TRACKER_PASSWORD_ENV = "TURNSTILE_TRACKER_STORE_PASSWORD"
#: What a clean stop must not leave in a server's stderr.
UNCLOSED = "ResourceWarning: unclosed"

_TAG = re.compile(r"\bm\d+\b")


class RasaServerError(RuntimeError):
    """A Rasa process did not start, answer or stop as expected (with its log tail)."""


def venv_python() -> Path:
    """The server venv's interpreter (this one, when the tests run inside that venv)."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return Path(sys.executable)
    return VENV / "bin" / "python"


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A Rasa process environment: no telemetry, no network, the given variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env.update(
        RASA_TELEMETRY_ENABLED="false",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------------------------
# process registry
# --------------------------------------------------------------------------------------------

_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _spawn(args: Sequence[str], *, cwd: Path, env: dict[str, str], out: Path, err: Path
           ) -> subprocess.Popen[bytes]:
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            list(args), cwd=cwd, env=env, stdout=stdout, stderr=stderr,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    _LIVE.add(proc)
    return proc


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} unreadable)"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# the bot
# --------------------------------------------------------------------------------------------


def train_bot(workdir: Path, *, python: Path | None = None, timeout: float = 300.0) -> Path:
    """Train ``bot/`` with real ``rasa train`` (about 15 s: no TensorFlow model); the model."""
    workdir.mkdir(parents=True, exist_ok=True)
    python = python or venv_python()
    args = [
        str(python), "-m", "rasa", "train", "--fixed-model-name", "bot",
        "--out", str(workdir / "models"), "--data", str(BOT / "data"),
        "--config", str(BOT / "config.yml"), "--domain", str(BOT / "domain.yml"),
    ]  # fmt: skip
    log = workdir / "train.log"
    with log.open("wb") as out:
        done = subprocess.run(
            args, cwd=workdir, env=base_env(), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, timeout=timeout, check=False,
        )  # fmt: skip
    model = workdir / "models" / "bot.tar.gz"
    if done.returncode != 0 or not model.exists():
        raise RasaServerError(f"rasa train failed (rc={done.returncode}):\n{_tail(log)}")
    return model


# --------------------------------------------------------------------------------------------
# endpoints.yml
# --------------------------------------------------------------------------------------------


def render_lock_store(render_cli: str | Sequence[str], redis_spec: str, workdir: Path,
                      *, lock_lifetime: int | None = None) -> str:
    """``turnstile render`` of one LockStore manifest whose ``spec.redis`` is ``redis_spec``
    (YAML lines indented four spaces): the ``lock_store`` section exactly as the operator
    writes it."""
    lifetime = f"  lockLifetime: {lock_lifetime}\n" if lock_lifetime is not None else ""
    manifest = workdir / "lockstore.yaml"
    manifest.write_text(
        "apiVersion: turnstile.dev/v1alpha1\nkind: LockStore\n"
        "metadata: {name: bot-locks, namespace: bots}\n"
        f"spec:\n  configMap: {{name: bot-endpoints}}\n{lifetime}  redis:\n{redis_spec}"
    )
    cli = [render_cli] if isinstance(render_cli, str) else list(render_cli)
    done = subprocess.run(
        [*cli, "render", str(manifest)], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RasaServerError(f"turnstile render failed (rc={done.returncode}): {done.stderr}")
    return done.stdout


def tracker_store_section(host: str, port: int, *, key_prefix: str, db: int = 0) -> str:
    """Rasa's ``redis`` tracker store, shared by every server of a pair."""
    return (
        "tracker_store:\n  type: redis\n"
        f"  url: {host}\n  port: {port}\n  db: {db}\n  key_prefix: {key_prefix}\n"
        "  record_exp: 3600\n"
    )


# --------------------------------------------------------------------------------------------
# a server
# --------------------------------------------------------------------------------------------


@dataclass
class RasaServer:
    """One ``rasa run --enable-api`` process serving ``model`` with ``endpoints``."""

    name: str
    model: Path
    endpoints: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    #: ``-W always::ResourceWarning -X dev``: what the tests run with; the benchmark does not.
    dev_warnings: bool = True
    python: Path = field(default_factory=venv_python)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def stdout_path(self) -> Path:
        return self.workdir / f"{self.name}.out"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"{self.name}.err"

    def start(self) -> RasaServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        credentials = self.workdir / "credentials.yml"
        credentials.write_text("rest:\n")
        flags = ["-W", "always::ResourceWarning", "-X", "dev"] if self.dev_warnings else []
        args = [
            str(self.python), *flags, "-m", "rasa", "run", "--enable-api",
            "--model", str(self.model), "--endpoints", str(self.endpoints),
            "--credentials", str(credentials), "--interface", HOST, "--port", str(self.port),
        ]  # fmt: skip
        self.started_at = time.monotonic()
        self.proc = _spawn(
            args, cwd=self.workdir, env=base_env(self.env),
            out=self.stdout_path, err=self.stderr_path,
        )  # fmt: skip
        return self

    def wait_ready(self, timeout: float = 180.0) -> RasaServer:
        """Bounded wait until ``GET /status`` answers with the model loaded."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RasaServerError(
                    f"{self.name} exited (rc={code}) before it served:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/status", timeout=2) as reply:
                    status = json.loads(reply.read())
                if status.get("model_file"):
                    self.ready_seconds = time.monotonic() - self.started_at
                    return self
                last = f"status without a model: {status}"
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise RasaServerError(
            f"{self.name} on {self.url} not ready within {timeout:.0f} s ({last}):\n"
            f"{self.log_tail()}"
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` to the server (not its group: Rasa's own shutdown is what is tested)
        and wait a bounded time for it to exit; SIGKILL after that. Its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RasaServerError(
                    f"{self.name} did not exit within {timeout:.0f} s of "
                    f"{signal.Signals(sig).name}:\n{self.log_tail()}"
                ) from None
        _LIVE.discard(self.proc)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the server's whole process group, as a crashed pod dies."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        _LIVE.discard(self.proc)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return (
            f"--- {self.stderr_path} (tail)\n{_tail(self.stderr_path, lines)}\n"
            f"--- {self.stdout_path} (tail)\n{_tail(self.stdout_path, lines)}"
        )


def start_all(servers: Iterable[RasaServer], timeout: float = 180.0) -> list[RasaServer]:
    """Start servers side by side and wait until all serve; stop them all if one fails."""
    started = [s.start() for s in servers]
    try:
        for server in started:
            server.wait_ready(timeout)
    except BaseException:
        for server in started:
            server.kill()
        raise
    return started


# --------------------------------------------------------------------------------------------
# talking to the servers (aiohttp: in Rasa's venv and in the main venv, which has it via kopf)
# --------------------------------------------------------------------------------------------


def message(tag: str) -> str:
    """The user text whose reply is ``echo <tag>``."""
    return f"note {tag}"


def expected_reply(tag: str) -> str:
    return f"echo {tag}"


@dataclass
class Sent:
    """One REST message: what was sent, where, what came back and how long it took."""

    sender: str
    tag: str
    server: str
    replies: list[str]
    seconds: float
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.replies == [expected_reply(self.tag)]


async def send(session: aiohttp.ClientSession, server: RasaServer, sender: str, tag: str,
               *, timeout: float = 120.0) -> Sent:
    """POST one message to the REST channel and wait (bounded) for its replies."""
    started = time.perf_counter()
    try:
        async with session.post(
            f"{server.url}/webhooks/rest/webhook",
            json={"sender": sender, "message": message(tag)},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as reply:
            body = await reply.json(content_type=None)
            status = reply.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return Sent(sender, tag, server.name, [], time.perf_counter() - started,
                    f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - started
    if status != 200 or not isinstance(body, list):
        return Sent(sender, tag, server.name, [], seconds, f"HTTP {status}: {body!r}")
    return Sent(sender, tag, server.name, [str(m.get("text")) for m in body], seconds)


async def tracker_events(session: aiohttp.ClientSession, server: RasaServer, sender: str,
                         *, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The conversation's events as Rasa's HTTP API returns them."""
    async with session.get(
        f"{server.url}/conversations/{sender}/tracker",
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as reply:
        if reply.status != 200:
            raise RasaServerError(f"GET tracker of {sender} on {server.name}: HTTP {reply.status}")
        tracker = await reply.json(content_type=None)
    return list(tracker.get("events") or [])


@dataclass
class Audit:
    """What the tracker says about the messages that were sent."""

    sent: int
    #: Tags sent that never appear as a user message.
    lost: list[str]
    #: Tags that appear more than once as a user message.
    duplicated: list[str]
    #: User messages not followed by their own reply before the next user message.
    out_of_order: list[str]
    #: The user/bot sequence, for a failure message.
    sequence: list[str]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order)

    def describe(self) -> str:
        return (
            f"{self.sent} sent: lost {self.lost}, duplicated {self.duplicated}, "
            f"out of order {self.out_of_order}; user/bot sequence: {self.sequence}"
        )


def audit(events: list[dict[str, Any]], tags: Iterable[str]) -> Audit:
    """Check every tag appears once as a user message, each followed by its own reply
    (``echo <tag>``) before the next user message."""
    wanted = list(tags)
    talk = [e for e in events if e.get("event") in ("user", "bot")]
    sequence = [f"{e['event']}:{e.get('text')}" for e in talk]
    seen: dict[str, int] = {}
    out_of_order: list[str] = []
    for i, event in enumerate(talk):
        if event["event"] != "user":
            continue
        found = _TAG.search(str(event.get("text") or ""))
        tag = found.group(0) if found else str(event.get("text"))
        seen[tag] = seen.get(tag, 0) + 1
        following = talk[i + 1] if i + 1 < len(talk) else None
        if following is None or following["event"] != "bot" or (
            following.get("text") != expected_reply(tag)
        ):
            out_of_order.append(tag)
    return Audit(
        sent=len(wanted),
        lost=[t for t in wanted if t not in seen],
        duplicated=sorted(t for t, n in seen.items() if n > 1),
        out_of_order=out_of_order,
        sequence=sequence,
    )
