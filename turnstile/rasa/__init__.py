"""The classes Rasa loads from ``endpoints.yml``, and the timer manager Rasa Pro needs for them.

``type: turnstile.rasa.TicketLockStore`` under ``lock_store`` and
``type: turnstile.rasa.TimerStore`` under ``timer_store``. Each subclasses Rasa's own base class
when Rasa is importable, and still imports (on a plain base) when it is not.

Rasa Pro wraps custom timer stores in a manager that loses timers on rollouts and dead pods;
start Rasa with ``turnstile-rasa`` (:mod:`turnstile.rasa.launcher`) or call :func:`install`
first, and Rasa runs :class:`RasaTimerManager` on Turnstile's store instead.
"""

from turnstile.rasa.launcher import install, installed, uninstall
from turnstile.rasa.locks import TicketLockStore
from turnstile.rasa.timer_manager import RasaTimerManager
from turnstile.rasa.timers import TimerStore

__all__ = [
    "RasaTimerManager",
    "TicketLockStore",
    "TimerStore",
    "install",
    "installed",
    "uninstall",
]
