"""Awaiting a Redis client so that a cancellation always reaches the caller.

Sanic cancels a request handler on timeout or client disconnect, and the lock it holds or
waits for must then be given back at once. A cancellation that lands inside redis-py's read of
a reply can be swallowed on the way: ``asyncio.wait_for`` on Python 3.11 (redis-py 8) returns
the reply when it completes together with the cancellation, ``async_timeout`` (redis-py 4 on
Python 3.10) likewise. The message would then go on waiting for, or running under, a lock its
request no longer wants. :func:`cancel_safe` closes that gap for one await.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: Inner tasks left running after their caller was cancelled (Python 3.10), kept referenced
#: until done because the event loop holds tasks only weakly.
_ORPHANS: set[asyncio.Future[Any]] = set()


async def cancel_safe(coro: Coroutine[Any, Any, T], *, settle: bool) -> T:
    """Await ``coro``; if the calling task was cancelled meanwhile, raise CancelledError even
    when something inside swallowed it.

    Python 3.11+ counts cancellation requests per task (``Task.cancelling``), so a request that
    arrived and was not answered is visible after the await. Python 3.10 has no count: there
    ``coro`` runs in a task of its own and the caller waits through ``shield``, so the
    cancellation interrupts only the caller's wait. ``settle=True`` then lets the inner task
    finish before raising (an issue whose outcome the caller's release must see); otherwise it
    finishes in the background (a blocking wait that ends by its own timeout).
    """
    if sys.version_info >= (3, 11):
        task = asyncio.current_task()
        assert task is not None
        before = task.cancelling()
        result = await coro
        if task.cancelling() > before:
            raise asyncio.CancelledError()
        return result
    inner = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        if settle:
            await asyncio.wait({inner})
        elif not inner.done():
            _ORPHANS.add(inner)
            inner.add_done_callback(_forget)
        raise


def _forget(task: asyncio.Future[Any]) -> None:
    _ORPHANS.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a failed orphan is not "never retrieved" noise
