"""A stand-in for a Rasa server that dies while it holds a conversation.

``python -m tests.rasa_server.holder ENDPOINTS_YML CONVERSATION`` loads the lock store exactly as
``rasa run`` does (Rasa's ``read_endpoint_config`` and ``LockStore.create``), enters
``lock_store.lock(conversation)`` as Rasa's processor does around a message, prints
``HELD <ticket expiry, epoch seconds>`` and then sleeps with the lock held until it is killed.
The test kills it with SIGKILL: no ``finally``, no release, the ticket stays in Redis until it
expires, as when a pod dies mid-message.
"""

from __future__ import annotations

import asyncio
import sys
import warnings


async def hold(endpoints: str, conversation: str) -> None:
    with warnings.catch_warnings():  # Rasa's imports warn (pkg_resources); not ours
        warnings.simplefilter("ignore")
        from rasa.core.lock_store import LockStore  # noqa: PLC0415
        from rasa.utils.endpoints import read_endpoint_config  # noqa: PLC0415

    store = LockStore.create(read_endpoint_config(endpoints, "lock_store"))
    async with store.lock(conversation) as lock:
        print(f"HELD {lock.tickets[0].expires:.3f}", flush=True)
        await asyncio.sleep(600)  # killed long before this


if __name__ == "__main__":
    asyncio.run(hold(sys.argv[1], sys.argv[2]))
