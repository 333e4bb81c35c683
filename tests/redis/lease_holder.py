"""A stand-in for a bot pod that dies while it holds a conversation on a lease.

``python -m tests.redis.lease_holder KWARGS_JSON CONVERSATION LOOP`` builds the Redis lock store
from the ``endpoints.yml`` keys in ``KWARGS_JSON`` (as a pod does), enters
``store.lock(conversation)`` on ``LOOP`` (``asyncio`` or ``uvloop``), prints
``HELD <fencing token>`` and sleeps with the lock held, its lease renewed in the background,
until it is killed. The test kills it with SIGKILL: no ``finally``, no release; the ticket
stays in Redis until its lease runs out.
"""

from __future__ import annotations

import asyncio
import json
import sys

from turnstile.stores.locks.redis import RedisTicketLockStore


async def hold(kwargs: str, conversation: str) -> None:
    store = RedisTicketLockStore.from_kwargs(json.loads(kwargs))
    async with store.lock(conversation) as held:
        print(f"HELD {held.fencing_token}", flush=True)
        await asyncio.sleep(600)  # killed long before this


if __name__ == "__main__":
    if sys.argv[3] == "uvloop":
        import uvloop

        uvloop.run(hold(sys.argv[1], sys.argv[2]))
    else:
        asyncio.run(hold(sys.argv[1], sys.argv[2]))
