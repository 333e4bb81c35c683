"""One "pod" of ``bench.lock_overlaps`` and ``bench.lock_failover``: a lock store loaded the way
Rasa loads it, serving bursts.

``python -m bench.overlap_pod ENDPOINTS_YML NAME`` (in a venv with Rasa Pro, ``.venv-rasa-pro``)
filters Rasa's logs at INFO as ``rasa run`` does, builds the ``lock_store`` section with
Rasa's own ``read_endpoint_config`` and ``LockStore.create``, prints ``@@ READY`` and then reads
one burst per line on standard input::

    {"at": <time.monotonic() to start at>, "messages": 2, "conversations": ["c1", ...],
     "wait": 1.0, "hold": 0.005, "holds": {"c1": [4.2, 0.003]}}

For each conversation it starts ``messages`` handlers at ``at`` (CLOCK_MONOTONIC is one clock for
every process on the machine, so all pods start together), each entering
``lock_store.lock(conversation, wait_time_in_seconds=wait)`` as Rasa's processor does around a
message, holding ``hold`` seconds (or, if ``holds`` lists the conversation, the i-th message
holds ``holds[conversation][i]``: ``bench.lock_failover`` mixes short and long holds). It
answers one line, ``@@ `` and JSON: every critical section as ``[conversation, name, start,
end]`` (monotonic seconds) and every message that failed to get the lock (``LockError``, any
other error out of the store, such as a Redis connection error during a failover, or 30 s
without it), which Rasa would drop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import warnings
from typing import Any

#: A message that has not got the lock after this long counts as lost.
GIVE_UP = 30.0


async def handle(  # noqa: PLR0917 - one call site, below
    store: Any, conversation: str, name: str, burst: dict[str, Any], out: dict[str, list[Any]],
    index: int = 0,
) -> None:
    holds = burst.get("holds", {}).get(conversation)
    hold = holds[index] if holds else burst["hold"]
    try:
        async with asyncio.timeout(GIVE_UP):
            async with store.lock(conversation, wait_time_in_seconds=burst["wait"]):
                start = time.monotonic()
                await asyncio.sleep(hold)
                out["held"].append([conversation, name, start, time.monotonic()])
    except Exception as exc:  # LockError, the timeout, or a Redis error: Rasa fails the message
        out["lost"].append([conversation, name, f"{type(exc).__name__}: {exc}"[:200]])


async def serve(endpoints: str, pod: str) -> None:
    with warnings.catch_warnings():  # Rasa's imports warn (pkg_resources); not ours
        warnings.simplefilter("ignore")
        import structlog  # noqa: PLC0415 - Rasa's logging library
        from rasa.core.lock_store import LockStore  # noqa: PLC0415
        from rasa.utils.endpoints import read_endpoint_config  # noqa: PLC0415

    # `rasa run` filters Rasa's structlog output at its --log-level (INFO); the minimal venv
    # lacks what Rasa's own configure_structlog imports (Sentry), so the same filter directly.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    store = LockStore.create(read_endpoint_config(endpoints, "lock_store"))
    print("@@ READY", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        burst = json.loads(line)
        out: dict[str, list[Any]] = {"held": [], "lost": []}
        await asyncio.sleep(max(0.0, burst["at"] - time.monotonic()))
        await asyncio.gather(*(
            handle(store, conversation, f"{pod}:{i}", burst, out, i)
            for conversation in burst["conversations"]
            for i in range(burst["messages"])
        ))
        print("@@", json.dumps(out), flush=True)
    close = getattr(store, "close", None)
    if close is not None:
        await close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
