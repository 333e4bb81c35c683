"""Fail closed: ``turnstile-rasa`` starts Rasa only on a file that holds its stores.

Rasa falls back to its in-memory lock store when ``endpoints.yml`` has no ``lock_store`` section
(and to no timer store without ``timer_store``), silently: two pods of one bot then serve one
conversation at once. A pod can meet such a file when it starts before the operator first
rendered the ConfigMap, or while another writer (a ``helm upgrade`` of the bot's chart) has put
the file back without Turnstile's sections and the operator has not yet restored them.

Before ``run``, the launcher reads the file Rasa will read the stores from and checks it against
what the pod was told to expect. Which file that is, ``TURNSTILE_STORES_FILE`` says (set by the
operator for ``spec.configMap.format: integrations``, or in the bot's manifest):

* ``endpoints`` (the default): the ``--endpoints`` file, default ``endpoints.yml``;
* ``integrations``: ``integrations.yml`` in Rasa's project root (``$RASA_PROJECT_FOLDER``, else
  the working directory, as ``rasa run`` resolves it). A Rasa Pro 3.21 engine project reads
  ``lock_store`` and ``timer_store`` from there and ignores ``endpoints.yml``.

The launcher also refuses a choice that contradicts the project's layout as Rasa Pro tells it
apart (:func:`layout_problem`): ``endpoints`` in an engine project (two of ``agent.yml``,
``integrations.yml``, ``skills/<id>/skill.md``), where the checked file is not the one Rasa
reads, and ``integrations`` in a CALM project (``domain.yml``).

What the file must hold:

* ``TURNSTILE_REQUIRE_SECTIONS`` (set in the bot's own manifest): these sections must be there,
  each a mapping with a ``type``; this covers pods started before the operator touched the bot;
* ``TURNSTILE_EXPECT_LOCK_STORE`` / ``TURNSTILE_EXPECT_TIMER_STORE`` (injected by the operator
  with every rollout, :mod:`turnstile.stores.fingerprint`): the section must be the one the
  operator rendered for this pod template, not one written by someone else or an older copy.

While the file is not right the launcher waits, re-reading it every second (a ConfigMap mounted
as a directory is updated in place by the kubelet), logs why every ten seconds, and after
``TURNSTILE_STARTUP_WAIT_SECONDS`` (default 60) writes the reason to the container's termination
message (``/dev/termination-log``, shown in the pod's status) and exits 78 (``EX_CONFIG``); the
kubelet restarts the container, which reads the file again (a ``subPath`` mount is only updated
by a restart). Nothing is checked when neither variable is set.

The messages name sections, files and fingerprints, never a value of the file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from turnstile.stores.errors import ConfigurationError
from turnstile.stores.fingerprint import (
    EXPECT_ENV,
    REQUIRE_ENV,
    SECTIONS,
    STORES_FILE_ENV,
    STORES_FILES,
    load_file,
    section_fingerprint,
)

WAIT_ENV: Final = "TURNSTILE_STARTUP_WAIT_SECONDS"
DEFAULT_WAIT: Final = 60.0
#: Where the kubelet reads a container's termination message (``terminationMessagePath``).
TERMINATION_LOG_ENV: Final = "TURNSTILE_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG: Final = "/dev/termination-log"
#: ``sysexits.h``: a configuration error.
EX_CONFIG: Final = 78
#: Where ``rasa run`` takes its project root from (else the working directory).
PROJECT_ENV: Final = "RASA_PROJECT_FOLDER"
INTEGRATIONS_FILE: Final = "integrations.yml"


class StartRefused(SystemExit):
    """Rasa was not started: the stores' file never held what the pod must find."""

    def __init__(self, reason: str) -> None:
        super().__init__(EX_CONFIG)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Expected:
    """What the endpoints file must hold before Rasa starts."""

    required: frozenset[str] = frozenset()
    pins: Mapping[str, str] = field(default_factory=dict)

    @property
    def sections(self) -> list[str]:
        return [s for s in SECTIONS if s in self.required or s in self.pins]

    def __bool__(self) -> bool:
        return bool(self.required or self.pins)


def expected_from_env(env: Mapping[str, str]) -> Expected:
    """Read :data:`REQUIRE_ENV` and the :data:`EXPECT_ENV` pins; a bad value names the variable."""
    required: set[str] = set()
    for name in (env.get(REQUIRE_ENV) or "").replace(" ", ",").split(","):
        if not name:
            continue
        if name not in SECTIONS:
            raise ConfigurationError(
                REQUIRE_ENV, env.get(REQUIRE_ENV), f"comma-separated section names of {SECTIONS}"
            )
        required.add(name)
    pins: dict[str, str] = {}
    for section, var in EXPECT_ENV.items():
        value = (env.get(var) or "").strip()
        if not value:
            continue
        if not value.startswith("sha256:") or len(value) <= len("sha256:"):
            raise ConfigurationError(var, value, "a fingerprint 'sha256:<hex>' set by the operator")
        pins[section] = value
    return Expected(frozenset(required), pins)


def endpoints_path(args: Sequence[str]) -> str:
    """The file ``rasa run ARGS`` reads: ``--endpoints X`` or ``--endpoints=X``, else Rasa's
    default ``endpoints.yml`` (relative to the working directory, as Rasa takes it)."""
    for i, arg in enumerate(args):
        if arg == "--endpoints" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--endpoints="):
            return arg.split("=", 1)[1]
    return "endpoints.yml"


def project_root(env: Mapping[str, str]) -> Path:
    """Rasa's project root for ``rasa run``: ``$RASA_PROJECT_FOLDER``, else the working
    directory (Rasa Pro 3.21, ``rasa.cli.project_env.resolve_project_dir``)."""
    folder = (env.get(PROJECT_ENV) or "").strip()
    return Path(folder) if folder else Path.cwd()


def stores_file(args: Sequence[str], env: Mapping[str, str]) -> tuple[str, str]:
    """``(path, format)``: the file ``rasa ARGS`` reads the stores from, by
    :data:`STORES_FILE_ENV`; a bad value names the variable and what it accepts."""
    raw = (env.get(STORES_FILE_ENV) or "").strip() or "endpoints"
    if raw not in STORES_FILES:
        raise ConfigurationError(
            STORES_FILE_ENV,
            env.get(STORES_FILE_ENV),
            "endpoints (the --endpoints file) or integrations (integrations.yml in Rasa's "
            f"project root: ${PROJECT_ENV}, else the working directory)",
        )
    if raw == "integrations":
        return str(project_root(env) / INTEGRATIONS_FILE), raw
    return endpoints_path(args), raw


def _is_engine_project(root: Path) -> bool:
    """Rasa Pro 3.21's engine ("Mantle") layout: two of ``agent.yml``, ``integrations.yml``
    and a ``skills/<id>/skill.md`` (a skill directory named ``_...`` does not count)."""
    skills = root / "skills"
    has_skill = skills.is_dir() and any(
        f.is_file() and not f.parent.name.startswith("_") for f in skills.glob("*/skill.md")
    )
    markers = ((root / "agent.yml").is_file(), (root / INTEGRATIONS_FILE).is_file(), has_skill)
    return sum(markers) >= 2


def layout_problem(fmt: str, root: Path) -> str | None:
    """Why the file of ``fmt`` is not the one Rasa reads in project ``root`` (``None``: it is,
    or the layout does not tell)."""
    if fmt == "endpoints" and _is_engine_project(root):
        return (
            f"{root} is a Rasa Pro engine project (two of agent.yml, integrations.yml, "
            f"skills/<id>/skill.md), which reads lock_store and timer_store from "
            f"{root / INTEGRATIONS_FILE} and ignores the endpoints file: set "
            f"{STORES_FILE_ENV}=integrations (and render the stores with "
            "spec.configMap.format: integrations)"
        )
    if fmt == "integrations" and not _is_engine_project(root) and (root / "domain.yml").is_file():
        return (
            f"{root} is a CALM project (domain.yml), which reads the stores from the "
            f"--endpoints file, not {INTEGRATIONS_FILE}: unset {STORES_FILE_ENV} (and render "
            "the stores with spec.configMap.format: endpoints)"
        )
    return None


def problems(
    path: str, expected: Expected, *, load: Callable[[str], Any] = load_file
) -> list[str]:
    """Why the file at ``path`` must not be handed to Rasa (empty: it may)."""
    if not expected:
        return []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return [f"{path} does not exist (is the ConfigMap mounted, and rendered yet?)"]
    except OSError as exc:
        return [f"{path} cannot be read: {type(exc).__name__}"]
    try:
        data = load(text)
    except Exception as exc:  # any parser error: the file is not usable
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return [f"{path} is not valid YAML{where}"]
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        return [f"{path} is not a mapping of sections"]
    found: list[str] = []
    for section in expected.sections:
        content = data.get(section)
        if not isinstance(content, Mapping) or not content.get("type"):
            why = "has no" if content is None else "has an unusable"
            found.append(
                f"{path} {why} {section} section, which this pod must load "
                f"({_source(section, expected)}); without it Rasa would run "
                + ("its in-memory lock store" if section == "lock_store" else "no timer store")
            )
            continue
        pin = expected.pins.get(section)
        if pin is not None and section_fingerprint(content) != pin:
            found.append(
                f"the {section} section of {path} is not the one the operator rendered for this "
                f"pod (fingerprint {section_fingerprint(content)}, {EXPECT_ENV[section]}={pin}): "
                "another writer replaced it or the file is stale"
            )
    return found


def _source(section: str, expected: Expected) -> str:
    if section in expected.pins:
        return f"{EXPECT_ENV[section]} is set"
    return f"{REQUIRE_ENV} names it"


def _say(line: str) -> None:
    """A line on stderr, the container's log (Rasa has not configured logging yet)."""
    print(line, file=sys.stderr, flush=True)


def _held(expected: Expected) -> str:
    return ", ".join(
        f"{s} ({expected.pins[s]})" if s in expected.pins else s for s in expected.sections
    )


def _wait_seconds(env: Mapping[str, str]) -> float:
    raw = env.get(WAIT_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ConfigurationError(WAIT_ENV, raw, "seconds, from 0 to 3600")
    return value


def _write_termination_message(env: Mapping[str, str], reason: str) -> None:
    path = Path(env.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG)
    if not path.parent.is_dir():
        return
    with contextlib.suppress(OSError):  # not in a pod: the log line says it anyway
        path.write_text(reason[:4000] + "\n", encoding="utf-8")


def wait_until_safe(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 1.0,
    log_every: float = 10.0,
) -> None:
    """Return once the file ``rasa ARGS`` reads the stores from holds what the pod expects; raise
    :class:`StartRefused` (exit 78, reason in the termination message) after the wait."""
    env = os.environ if env is None else env
    if not args or args[0] != "run" or (len(args) > 1 and args[1] == "actions"):
        return
    expected = expected_from_env(env)
    if not expected:
        return
    path, fmt = stores_file(args[1:], env)
    wait = _wait_seconds(env)
    root = project_root(env)
    began = clock()
    logged_at: float | None = None
    for _ in range(int(wait / max(interval, 0.01)) + 2):  # bounded: the deadline ends it sooner
        wrong_file = layout_problem(fmt, root)
        found = [wrong_file] if wrong_file else problems(path, expected)
        if not found:
            _say(f"turnstile-rasa: {path} holds {_held(expected)}; starting Rasa")
            return
        now = clock()
        if now - began >= wait:
            break
        if logged_at is None or now - logged_at >= log_every:
            _say(
                f"turnstile-rasa: not starting Rasa yet (waited {now - began:.0f} of "
                f"{wait:.0f} s): " + "; ".join(found)
            )
            logged_at = now
        sleep(interval)
    reason = f"turnstile-rasa refused to start Rasa after {wait:.0f} s: " + "; ".join(found)
    _say(reason)
    _write_termination_message(env, reason)
    raise StartRefused(reason)
