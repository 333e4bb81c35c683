"""``turnstile-rasa``: Rasa's own command line, with Turnstile's timer manager installed.

``turnstile-rasa run --endpoints endpoints.yml ...`` is ``rasa run ...``, except that the
timer manager factory ``rasa.core.agent`` calls returns
:class:`~turnstile.rasa.timer_manager.RasaTimerManager` when ``timer_store`` is Turnstile's
(and Rasa's own manager otherwise). This is the convention of ``ddtrace-run`` and
``opentelemetry-instrument``: Rasa has no plugin hook for timer managers, so the launcher puts
the factory in place before Rasa's command line imports its agent.

Before ``run`` it checks that the endpoints file holds the store sections the pod must load
(:mod:`turnstile.rasa.startup`): a pod never serves on Rasa's in-memory lock store by accident.

Programs that embed Rasa call :func:`install` themselves, before they build an ``Agent``.

Sanic may run Rasa in several worker processes started with ``spawn``; each re-imports the
launcher script (as ``__mp_main__``) and so this module, which installs again in every worker
when the environment says the launcher started the server.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from turnstile.rasa.startup import wait_until_safe
from turnstile.rasa.timer_manager import make_factory

logger = logging.getLogger(__name__)

#: Where Rasa Pro defines the factory and where ``rasa.core.agent`` imports it from.
_FACTORY_MODULE = "rasa.core.timer_managers.timer_manager"
_AGENT_MODULE = "rasa.core.agent"
_FACTORY = "create_timer_manager"
#: Set by the launcher for the processes it starts (Sanic's spawned workers inherit it).
LAUNCHED_ENV = "TURNSTILE_RASA_LAUNCHED"


def _rasa_factory_module() -> Any:
    try:
        return __import__(_FACTORY_MODULE, fromlist=[_FACTORY])
    except ImportError:
        return None


def installed() -> bool:
    """Whether Rasa builds its timer manager through Turnstile's factory."""
    module = sys.modules.get(_FACTORY_MODULE)
    factory = getattr(module, _FACTORY, None)
    return hasattr(factory, "__turnstile_rasa_factory__")


def install() -> bool:
    """Make Rasa build Turnstile's timer manager for Turnstile's timer store.

    Replaces ``create_timer_manager`` in Rasa's timer manager module, where
    ``rasa.core.agent`` imports it from, and in ``rasa.core.agent`` itself if that is already
    imported. Idempotent. Returns ``False`` (and changes nothing) when this Rasa has no timer
    managers: Rasa Open Source 3.6, or no Rasa at all.
    """
    module = _rasa_factory_module()
    if module is None:
        return False
    current = getattr(module, _FACTORY)
    if hasattr(current, "__turnstile_rasa_factory__"):
        return True
    factory = make_factory(current)
    setattr(module, _FACTORY, factory)
    agent = sys.modules.get(_AGENT_MODULE)
    if agent is not None and getattr(agent, _FACTORY, None) is current:
        setattr(agent, _FACTORY, factory)
    logger.debug("Turnstile's timer manager factory installed in %s", _FACTORY_MODULE)
    return True


def uninstall() -> None:
    """Put Rasa's own factory back (for tests and embedding programs)."""
    module = sys.modules.get(_FACTORY_MODULE)
    current = getattr(module, _FACTORY, None)
    original = getattr(current, "__turnstile_rasa_factory__", None)
    if original is None:
        return
    setattr(module, _FACTORY, original)
    agent = sys.modules.get(_AGENT_MODULE)
    if agent is not None and getattr(agent, _FACTORY, None) is current:
        setattr(agent, _FACTORY, original)


def main(argv: Sequence[str] | None = None) -> None:
    """``turnstile-rasa ARGS``: run ``rasa ARGS`` with Turnstile's timer manager installed.

    ``run`` first waits until the endpoints file holds the store sections the pod must load
    (:mod:`turnstile.rasa.startup`; exits 78 saying why if it never does).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    wait_until_safe(args)
    if not install():
        logger.warning(
            "turnstile-rasa: this Rasa has no timer managers (Rasa Pro 3.21+ has); running "
            "Rasa's command line unchanged"
        )
    os.environ[LAUNCHED_ENV] = "1"
    try:
        from rasa.__main__ import main as rasa_main  # noqa: PLC0415 - after install()
    except ImportError as exc:
        raise SystemExit(
            f"turnstile-rasa: Rasa's command line (rasa.__main__) cannot be imported: {exc}. "
            "Install Rasa Pro in this environment (pip install rasa-pro)."
        ) from exc
    sys.argv = ["rasa", *args]
    rasa_main()


if os.environ.get(LAUNCHED_ENV) == "1":  # a Sanic worker of a server the launcher started
    install()
