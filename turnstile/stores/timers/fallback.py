"""What a Redis timer store remembers while Redis is unreachable, to write back when it returns.

The store keeps serving from memory during an outage. Memory holds the timers written during
the outage (records) and the deletions made during it (tombstones), each with a *version*: the
writer's wall clock for a store or an unconditional delete, the claimed record's own version for
a claim. When Redis answers again, every entry is merged into Redis with "newer wins": an entry
replaces (or deletes) what Redis holds for that conversation only if Redis holds nothing or a
record whose ``written_at`` is not greater than the entry's version. A conversation another pod
wrote to Redis after this pod lost Redis keeps that pod's timer.

This module is pure bookkeeping; :mod:`turnstile.stores.timers.redis` does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from turnstile.stores.timers.api import SessionTimer, TimerRecord


@dataclass(frozen=True)
class Tombstone:
    """A deletion made during the outage: delete Redis' record if it is not newer."""

    sender_id: str
    version: float


Entry = TimerRecord | Tombstone


def entry_sender(entry: Entry) -> str:
    return entry.timer.sender_id if isinstance(entry, TimerRecord) else entry.sender_id


class FallbackJournal:
    """Timers and deletions since Redis became unreachable, one entry per conversation."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def put(self, record: TimerRecord) -> None:
        self._entries[record.timer.sender_id] = record

    def delete(
        self, sender_id: str, only_if_scheduled_time: float | None, *, now: float
    ) -> bool:
        """Delete from memory; returns whether a remembered timer was deleted.

        An unconditional delete always leaves a tombstone (the conversation may have a timer
        in Redis this pod cannot see). A claim leaves one only when it won, versioned with the
        claimed record so that it removes exactly that timer or an older one.
        """
        entry = self._entries.get(sender_id)
        record = entry if isinstance(entry, TimerRecord) else None
        if only_if_scheduled_time is not None:
            if record is None or record.timer.scheduled_time != only_if_scheduled_time:
                return False
            self._entries[sender_id] = Tombstone(sender_id, record.written_at)
            return True
        self._entries[sender_id] = Tombstone(sender_id, now)
        return record is not None

    def restore(self, entry: Entry) -> None:
        """Take back an entry whose write-back failed."""
        self._entries[entry_sender(entry)] = entry

    def known(self, sender_id: str) -> bool:
        """Whether memory has the answer for ``sender_id`` (a record or a tombstone)."""
        return sender_id in self._entries

    def get(self, sender_id: str) -> SessionTimer | None:
        entry = self._entries.get(sender_id)
        return entry.timer if isinstance(entry, TimerRecord) else None

    def expired(self, cutoff: float) -> list[SessionTimer]:
        return [
            e.timer
            for e in self._entries.values()
            if isinstance(e, TimerRecord) and e.timer.scheduled_time <= cutoff
        ]

    def entries(self) -> list[Entry]:
        """A snapshot to write back."""
        return list(self._entries.values())

    def forget(self, written: Iterable[Entry]) -> None:
        """Drop entries that were written back, unless they changed in the meantime."""
        for entry in written:
            sender = entry_sender(entry)
            if self._entries.get(sender) is entry:
                del self._entries[sender]
