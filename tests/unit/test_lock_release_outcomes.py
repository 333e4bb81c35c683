"""What a release that finds its ticket gone reports (``locks.api.Released``), without Redis.

The in-memory store below answers every release with one outcome, the way the Redis store's
RELEASE script and connection classify it (``docs/locks.md``, "A release whose reply was
lost"); the holder's exit must then warn for an expired or removed ticket, each with its own
words, and only log (and count apart) a release whose earlier attempt returned it. The real
thing, on real Redis and both event loops: tests/redis/test_locks_reentry.py.
"""

from __future__ import annotations

import logging

import pytest

from turnstile.stores.locks.api import Released, release_outcome
from turnstile.stores.locks.memory import InMemoryTicketLockStore


@pytest.mark.parametrize(("found", "reply_lost", "outcome"), [
    (1, False, Released.RELEASED),
    (1, True, Released.RELEASED),  # the retry found it: the first attempt did not run
    (2, True, Released.REPLY_LOST),
    (2, False, Released.REMOVED),
    (0, True, Released.GONE),  # past its expiry: it may have expired whatever else happened
    (0, False, Released.GONE),
])
def test_the_script_answer_and_the_retry_make_the_outcome(
    found: int, reply_lost: bool, outcome: Released
) -> None:
    assert release_outcome(found, reply_lost=reply_lost) is outcome


def test_only_a_returned_ticket_is_truthy() -> None:
    assert [bool(o) for o in Released] == [False, True, False, True]


class _Answers(InMemoryTicketLockStore):
    """Releases for real, then answers ``outcome`` (what Redis would have said)."""

    outcome = Released.RELEASED

    async def _release(self, conversation_id: str, **how: object) -> Released:
        await super()._release(conversation_id, **how)  # type: ignore[arg-type]
        return self.outcome


@pytest.mark.parametrize(("outcome", "level", "words"), [
    (Released.GONE, logging.WARNING, "held longer than its lock_lifetime"),
    (Released.REMOVED, logging.WARNING, "before it could expire"),
    (Released.REPLY_LOST, logging.INFO, "reply to releasing ticket"),
])
async def test_a_holders_exit_says_what_happened_to_its_ticket(
    outcome: Released, level: int, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = _Answers(lock_lifetime=30, lock_lease=None)
    store.outcome = outcome
    with caplog.at_level(logging.INFO, logger="turnstile.stores.locks.api"):
        async with store.lock("c"):
            pass
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(records) == 1 and records[0][0] == level and words in records[0][1], records
