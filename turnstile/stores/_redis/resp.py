"""The Redis wire protocol (RESP2), as much of it as the stores' scripts need: pure functions.

:func:`encode` turns a command into bytes; :class:`ReplyParser` turns bytes, fed in pieces as
they arrive, back into replies: ``+OK`` is a ``str``, ``:1`` an ``int``, ``$3 abc`` a ``str``
(UTF-8, or ``None`` for ``$-1``), ``*2 ...`` a ``list`` (``None`` for ``*-1``) and ``-ERR ...``
a :class:`ErrorReply`, returned, not raised, so that one error does not stop the replies
behind it. No I/O here; ``multiplexed`` owns the socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

_CRLF: Final = b"\r\n"
#: Marks "no complete reply in the buffer yet".
INCOMPLETE: Final = object()
#: RESP2 type bytes.
_SIMPLE, _ERROR, _INTEGER, _BULK, _ARRAY = 43, 45, 58, 36, 42  # + - : $ *


class ProtocolError(Exception):
    """The bytes from the server are not RESP2; the connection cannot be trusted any more."""


@dataclass(frozen=True)
class ErrorReply:
    """A ``-`` reply: the error code (first word, e.g. ``NOSCRIPT``) and the whole message."""

    message: str

    @property
    def code(self) -> str:
        return self.message.split(" ", 1)[0]


def _as_bytes(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool):  # a bool is an int; refuse it like redis-py does
        raise TypeError("a Redis argument cannot be a bool")
    if isinstance(arg, (int, float)):
        return repr(arg).encode()
    raise TypeError(f"a Redis argument must be bytes, str, int or float, not {type(arg).__name__}")


def encode(args: tuple[Any, ...] | list[Any]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        data = arg.encode() if kind is str else b"%d" % arg if kind is int else _as_bytes(arg)
        parts += (b"$%d\r\n" % len(data), data, _CRLF)
    return b"".join(parts)


class ReplyParser:
    """Incremental RESP2 reply parser: :meth:`feed` bytes, then :meth:`next` until INCOMPLETE."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next(self) -> Any:
        """The next complete reply, or :data:`INCOMPLETE` (then nothing was consumed)."""
        result = self._parse(self._pos)
        if result is INCOMPLETE:
            return INCOMPLETE
        value, self._pos = result
        return value

    def _parse(self, pos: int) -> Any:  # noqa: C901, PLR0912 -- one branch per RESP2 type, read best flat
        buf = self._buf
        end = buf.find(_CRLF, pos)
        if end < 0:
            return INCOMPLETE
        if end == pos:
            raise ProtocolError("an empty line where a reply was expected")
        kind = buf[pos]
        line = bytes(buf[pos + 1 : end])
        pos = end + 2
        if kind == _INTEGER:
            return _int(line), pos
        if kind == _BULK:
            size = _int(line)
            if size < 0:
                return None, pos
            if len(buf) < pos + size + 2:
                return INCOMPLETE
            if buf[pos + size : pos + size + 2] != _CRLF:
                raise ProtocolError("a bulk string without its terminator")
            return buf[pos : pos + size].decode("utf-8", "surrogateescape"), pos + size + 2
        if kind == _ARRAY:
            count = _int(line)
            if count < 0:
                return None, pos
            items: list[Any] = []
            for _ in range(count):
                item = self._parse(pos)
                if item is INCOMPLETE:
                    return INCOMPLETE
                items.append(item[0])
                pos = item[1]
            return items, pos
        if kind == _SIMPLE:
            return line.decode("utf-8", "surrogateescape"), pos
        if kind == _ERROR:
            return ErrorReply(line.decode("utf-8", "replace")), pos
        raise ProtocolError(f"unknown reply type byte {kind!r}")


def _int(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise ProtocolError(f"not an integer: {line[:20]!r}") from None
