"""Ticket locks: one conversation handled by one holder at a time, in arrival order.

* ``api``: the values (:class:`Ticket`, :class:`TicketLock`, :class:`HeldTicket`), lifetimes and
  the async API :class:`TicketLockStore`, whose ``lock()`` is written once for every store;
* ``memory``: :class:`InMemoryTicketLockStore`, the single-process default;
* ``redis`` and ``lua``: :class:`RedisTicketLockStore` and the Lua scripts it runs.

A layer above ``_redis``; independent of ``timers`` (neither imports the other, an import-linter
contract).
"""
