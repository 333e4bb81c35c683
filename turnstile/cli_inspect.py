"""``turnstile locks`` and ``turnstile timers``: look at the Redis stores; free a stuck holder.

::

    turnstile locks show CONVERSATION             holder (number = fencing token) and waiters
    turnstile locks ls [--prefix P] [--limit N]   conversations with live tickets (SCAN, bounded)
    turnstile locks release CONVERSATION --ticket N   remove ticket N; the next waiter goes in
    turnstile timers show CONVERSATION            its pending timer (metadata keys, not values)
    turnstile timers ls [--limit N]               pending timers, soonest first (bounded)

Each reads the ``lock_store`` (or ``timer_store``) section of ``--endpoints`` (default
``endpoints.yml``) the way ``turnstile check`` does, and accepts only Turnstile's store type.
The reading is ``turnstile.stores.locks.inspect`` and ``timers.inspect``; this module prints
it, as aligned text or ``--json``.
Exit status: 0, 1 when ``release`` finds no such ticket or the store fails, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from turnstile.cli import EXIT_FAILED, EXIT_OK, _UsageError, read_endpoints

if TYPE_CHECKING:
    from turnstile.stores.locks.inspect import QueueView
    from turnstile.stores.locks.redis import RedisTicketLockStore
    from turnstile.stores.timers.inspect import TimerView
    from turnstile.stores.timers.redis import RedisTimerStore

#: The lock_store types whose data ``turnstile locks`` knows how to read.
LOCK_TYPES = frozenset({"turnstile.rasa.TicketLockStore"})
#: The timer_store types whose data ``turnstile timers`` knows how to read.
TIMER_TYPES = frozenset({"turnstile.rasa.TimerStore"})


def add_parsers(sub: Any) -> None:
    """Add ``locks`` and its subcommands to the ``turnstile`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--endpoints", default="endpoints.yml", metavar="ENDPOINTS_YML",
                        help="the bot's endpoints.yml (default: ./endpoints.yml)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    locks = sub.add_parser("locks", help="look at conversations' ticket locks; free a stuck one")
    verbs = locks.add_subparsers(dest="verb", required=True)
    show = verbs.add_parser("show", parents=[common], help="a conversation's holder and waiters")
    show.add_argument("conversation", metavar="CONVERSATION")
    ls = verbs.add_parser("ls", parents=[common], help="conversations with live tickets (SCAN)")
    ls.add_argument("--prefix", default="", help="only conversation ids starting with this")
    ls.add_argument("--limit", default="100", help="look at no more than N keys (default 100)")
    rel = verbs.add_parser("release", parents=[common],
                           help="remove ticket N of a conversation, letting the next one in")
    rel.add_argument("conversation", metavar="CONVERSATION")
    rel.add_argument("--ticket", required=True, metavar="N", help="the ticket number to remove")

    timers = sub.add_parser("timers", help="look at pending session timers")
    tverbs = timers.add_subparsers(dest="verb", required=True)
    tshow = tverbs.add_parser("show", parents=[common], help="a conversation's pending timer")
    tshow.add_argument("conversation", metavar="CONVERSATION")
    tls = tverbs.add_parser("ls", parents=[common], help="pending timers, soonest first")
    tls.add_argument("--limit", default="100", help="list no more than N timers (default 100)")


def _positive_int(name: str, raw: str, *, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1 or (maximum is not None and value > maximum):
        bound = f" up to {maximum}" if maximum is not None else ""
        raise _UsageError(f"{name}: a whole number >= 1{bound} (got {raw!r})")
    return value


def _section(path: str, name: str, types: frozenset[str]) -> tuple[dict[str, Any], str | None]:
    """The section's keys (``url`` apart, as Rasa's EndpointConfig takes it), if the type is
    one of ``types``; a usage error otherwise."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise _UsageError(f"--endpoints {path}: {exc.strerror or exc}") from None
    values = read_endpoints(text).get(name)
    if not isinstance(values, dict):
        raise _UsageError(f"{path}: no {name} section")
    kind = str(values.get("type") or "in_memory")
    if kind not in types:
        raise _UsageError(
            f"{path}: {name} type {kind} is not Turnstile's (accepted: {', '.join(sorted(types))})"
        )
    url = values.get("url")
    return {k: v for k, v in values.items() if k != "url"}, None if url is None else str(url)


def _lock_store(path: str) -> RedisTicketLockStore:
    from turnstile.stores.errors import ConfigurationError  # noqa: PLC0415
    from turnstile.stores.locks.redis import RedisTicketLockStore  # noqa: PLC0415

    kwargs, url = _section(path, "lock_store", LOCK_TYPES)
    try:
        return RedisTicketLockStore.from_kwargs(kwargs, url=url)
    except ConfigurationError as exc:
        raise _UsageError(f"{path}: lock_store: {exc}") from None


def _timer_store(path: str) -> RedisTimerStore:
    from turnstile.stores.errors import ConfigurationError  # noqa: PLC0415
    from turnstile.stores.timers.redis import RedisTimerStore  # noqa: PLC0415

    kwargs, url = _section(path, "timer_store", TIMER_TYPES)
    try:
        return RedisTimerStore.from_kwargs(kwargs, url=url)
    except ConfigurationError as exc:
        raise _UsageError(f"{path}: timer_store: {exc}") from None


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _print_queue(view: QueueView, out: TextIO) -> None:
    out.write(f"conversation {view.conversation_id!r} (key {view.key})\n")
    if not view.tickets:
        out.write("  free: no live ticket\n")
        return
    rows = [["", "ticket", "drawn at", "expires in"]]
    for i, t in enumerate(view.tickets):
        role, what = ("holder", "lifetime") if i == 0 else (f"waiter {i}", "lease, renewed")
        if t.deadline is not None:
            what = f"lease, renewed up to {t.deadline - view.now:.1f}s"
        rows.append([role, str(t.number), _when(t.drawn_at),
                     f"{t.expires - view.now:.1f}s ({what})"])
    _table(rows, out)


async def _run(
    args: argparse.Namespace, store: RedisTicketLockStore, out: TextIO, err: TextIO
) -> int:
    from turnstile.stores.locks import inspect  # noqa: PLC0415

    if args.verb == "show":
        view = await inspect.show(store, args.conversation)
        if args.json:
            out.write(json.dumps(view.as_dict(), indent=2) + "\n")
        else:
            _print_queue(view, out)
        return EXIT_OK
    if args.verb == "ls":
        listing = await inspect.list_conversations(store, args.prefix, args.limit)
        if args.json:
            out.write(json.dumps(listing.as_dict(), indent=2) + "\n")
            return EXIT_OK
        stop = (f"stopped at the limit of {listing.limit} keys; more may exist (raise --limit)"
                if listing.stopped_at_limit else "complete")
        out.write(f"scanned {listing.nodes} node(s) for {listing.pattern}: "
                  f"{listing.keys_seen} key(s), {stop}\n")
        rows = [["conversation", "holder", "waiters", "expires in"]]
        for v in listing.conversations:
            assert v.holder is not None
            rows.append([v.conversation_id, str(v.holder.number), str(len(v.waiters)),
                         f"{v.holder.expires - v.now:.1f}s"])
        if len(rows) > 1:
            _table(rows, out)
        else:
            out.write("no conversation with live tickets\n")
        return EXIT_OK
    before = await inspect.show(store, args.conversation)
    numbers = [t.number for t in before.tickets]
    if not await inspect.release(store, args.conversation, args.ticket):
        listed = ", ".join(map(str, numbers)) or "none"
        err.write(f"turnstile locks release: ticket {args.ticket} is not in the queue of "
                  "conversation "
                  f"{args.conversation!r} (live tickets: {listed}); nothing released\n")
        return EXIT_FAILED
    after = await inspect.show(store, args.conversation)
    if args.json:
        out.write(json.dumps({"released": args.ticket, "queue": after.as_dict()}, indent=2) + "\n")
    else:
        out.write(f"released ticket {args.ticket} of conversation {args.conversation!r}\n")
        _print_queue(after, out)
    return EXIT_OK


def locks_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from turnstile.stores.errors import TurnstileError  # noqa: PLC0415

    if args.verb == "ls":
        args.limit = _positive_int("--limit", args.limit, maximum=1_000_000)
    if args.verb == "release":
        args.ticket = _positive_int("--ticket", args.ticket)
    store = _lock_store(args.endpoints)

    async def run() -> int:
        try:
            return await _run(args, store, out, err)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except TurnstileError as exc:
        err.write(f"turnstile locks {args.verb}: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILED


# ---------------------------------------------------------------------------------- timers


def _timer_row(t: TimerView, now: float) -> list[str]:
    state = "leased (firing)" if t.leased else "pending"
    return [t.sender_id, _when(t.due), f"{t.due - now:.1f}s", state, str(t.session_id or "-"),
            ",".join(t.metadata_keys) or "-"]


_TIMER_HEADER = ["conversation", "due at", "due in", "state", "session", "metadata keys"]


async def _run_timers(args: argparse.Namespace, store: RedisTimerStore, out: TextIO) -> int:
    from turnstile.stores.timers import inspect  # noqa: PLC0415

    now = time.time()  # timer scores are on the writers' clocks
    if args.verb == "show":
        view = await inspect.show(store, args.conversation)
        if args.json:
            out.write(json.dumps({"conversation_id": args.conversation,
                                  "timer": None if view is None else view.as_dict(now)},
                                 indent=2) + "\n")
        elif view is None:
            out.write(f"conversation {args.conversation!r}: no pending timer\n")
        else:
            _table([_TIMER_HEADER, _timer_row(view, now)], out)
        return EXIT_OK
    listing = await inspect.list_timers(store, args.limit)
    if args.json:
        out.write(json.dumps({
            "buckets": listing.buckets, "limit": listing.limit,
            "stopped_at_limit": listing.stopped_at_limit,
            "timers": [t.as_dict(now) for t in listing.timers],
        }, indent=2) + "\n")
        return EXIT_OK
    stop = (f"stopped at the limit of {listing.limit}; more are pending (raise --limit)"
            if listing.stopped_at_limit else "complete")
    out.write(f"read {listing.buckets} bucket(s): {len(listing.timers)} timer(s), {stop}\n")
    if listing.timers:
        _table([_TIMER_HEADER, *(_timer_row(t, now) for t in listing.timers)], out)
    return EXIT_OK


def timers_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from turnstile.stores.errors import TurnstileError  # noqa: PLC0415

    if args.verb == "ls":
        args.limit = _positive_int("--limit", args.limit, maximum=100_000)
    store = _timer_store(args.endpoints)

    async def run() -> int:
        try:
            return await _run_timers(args, store, out)
        finally:
            await store.aclose()

    try:
        return asyncio.run(run())
    except TurnstileError as exc:
        err.write(f"turnstile timers {args.verb}: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILED
