"""The classes Rasa loads from ``endpoints.yml``.

``type: turnstile.rasa.TicketLockStore`` under ``lock_store`` and
``type: turnstile.rasa.TimerStore`` under ``timer_store``. Each subclasses Rasa's own base class
when Rasa is importable, and still imports (on a plain base) when it is not.
"""

from turnstile.rasa.locks import TicketLockStore
from turnstile.rasa.timers import TimerStore

__all__ = ["TicketLockStore", "TimerStore"]
