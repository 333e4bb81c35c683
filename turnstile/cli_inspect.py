"""``turnstile locks``: look at a Redis ticket lock store and free a stuck holder.

::

    turnstile locks show CONVERSATION             holder (number = fencing token) and waiters
    turnstile locks ls [--prefix P] [--limit N]   conversations with live tickets (SCAN, bounded)
    turnstile locks release CONVERSATION --ticket N   remove ticket N; the next waiter goes in

Each reads the ``lock_store`` section of ``--endpoints`` (default ``endpoints.yml``) the way
``turnstile check`` does, and accepts only Turnstile's store type. The reading is
``turnstile.stores.locks.inspect``; this module prints it, as aligned text or ``--json``.
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

#: The lock_store types whose data ``turnstile locks`` knows how to read.
LOCK_TYPES = frozenset({"turnstile.rasa.TicketLockStore"})


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


def _positive_int(name: str, raw: str, *, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1 or (maximum is not None and value > maximum):
        bound = f" up to {maximum}" if maximum is not None else ""
        raise _UsageError(f"{name}: a whole number >= 1{bound} (got {raw!r})")
    return value


def _lock_store(path: str) -> RedisTicketLockStore:
    from turnstile.stores.errors import ConfigurationError  # noqa: PLC0415
    from turnstile.stores.locks.redis import RedisTicketLockStore  # noqa: PLC0415

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise _UsageError(f"--endpoints {path}: {exc.strerror or exc}") from None
    values = read_endpoints(text).get("lock_store")
    if not isinstance(values, dict):
        raise _UsageError(f"{path}: no lock_store section")
    kind = str(values.get("type") or "in_memory")
    if kind not in LOCK_TYPES:
        raise _UsageError(
            f"{path}: lock_store type {kind} is not Turnstile's "
            f"(accepted: {', '.join(sorted(LOCK_TYPES))})"
        )
    kwargs = {k: v for k, v in values.items() if k != "url"}
    url = values.get("url")
    try:
        return RedisTicketLockStore.from_kwargs(kwargs, url=None if url is None else str(url))
    except ConfigurationError as exc:
        raise _UsageError(f"{path}: lock_store: {exc}") from None


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
        role = "holder" if i == 0 else f"waiter {i}"
        rows.append([role, str(t.number), _when(t.drawn_at), f"{t.expires - view.now:.1f}s"])
    _table(rows, out)


async def _run(args: argparse.Namespace, store: RedisTicketLockStore, out: TextIO) -> int:
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
        out.write(f"ticket {args.ticket} is not in the queue of conversation "
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
            return await _run(args, store, out)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except TurnstileError as exc:
        err.write(f"turnstile locks {args.verb}: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILED
