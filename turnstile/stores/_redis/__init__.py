"""The Redis plumbing both stores share; the lowest layer of the store library.

* ``connection``: :class:`RedisConnection` (one logical connection in any deployment mode, with
  failover-aware retries), :class:`PerLoop` and ``close_with_loop`` (one connection per event
  loop, closed with its loop);
* ``scripts``: :class:`LuaScript`, a script run by ``EVALSHA`` with an ``EVAL`` fallback;
* ``multiplexed`` and ``resp``: one pipelined connection per Redis node for the scripts, and the
  RESP2 codec it speaks;
* ``cancellation``: awaiting a store operation so a cancellation neither loses nor repeats it.

It knows nothing of locks or timers: ``locks`` and ``timers`` import it, never the reverse (an
import-linter contract).
"""
