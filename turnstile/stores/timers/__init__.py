"""Session timers: stored per conversation, fired once by whichever pod claims them.

* ``api``: the values (:class:`SessionTimer`, :class:`Claimed`), Rasa's store contract
  :class:`BaseTimerStore` and :class:`TimerSettings`;
* ``memory``: :class:`InMemoryTimerStore`, the single-process default and the Redis fallback;
* ``redis``, ``lua`` and ``buckets``: :class:`RedisTimerStore`, its Lua scripts and key layout,
  and which bucket (hash tag, Cluster slot) a conversation's timer lives in;
* ``fallback``: the bookkeeping of timers kept in memory while Redis is unreachable;
* ``manager``: :class:`TimerManager`, which fires due timers once across any number of pods.

A layer above ``_redis``; independent of ``locks`` (neither imports the other, an import-linter
contract).
"""
