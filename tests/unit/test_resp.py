"""The RESP2 encoder and incremental parser, and how error replies become redis-py errors."""

from __future__ import annotations

from typing import Any

import pytest
from redis import exceptions as rex

from turnstile.stores._redis.connection import is_retryable
from turnstile.stores._redis.multiplexed import error_for
from turnstile.stores._redis.resp import INCOMPLETE, ErrorReply, ProtocolError, ReplyParser, encode


def test_encode_writes_an_array_of_bulk_strings() -> None:
    assert encode(("EVALSHA", b"ab", 1, "k{é}", 2.5)) == (
        b"*5\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$5\r\nk{\xc3\xa9}\r\n$3\r\n2.5\r\n"
    )
    assert encode(["PING"]) == b"*1\r\n$4\r\nPING\r\n"
    assert encode(("SET", "k", "")) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"


@pytest.mark.parametrize("bad", [True, None, object(), ["list"]])
def test_encode_refuses_what_redis_cannot_take(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"bool|must be bytes, str, int or float"):
        encode(("SET", "k", bad))


STREAM = (
    b"+OK\r\n"
    b":-42\r\n"
    b"$5\r\nh\xc3\xa9l\r\r\n"  # a bulk string may hold \r
    b"$-1\r\n"
    b"*-1\r\n"
    b"*0\r\n"
    b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n$0\r\n\r\n-ERR inner\r\n"
    b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
    b"$2\r\n\r\n\r\n"
)
REPLIES = [
    "OK",
    -42,
    "hél\r",
    None,
    None,
    [],
    [1, ["a", ""], ErrorReply("ERR inner")],
    ErrorReply("NOSCRIPT No matching script. Please use EVAL."),
    "\r\n",
]


def _drain(parser: ReplyParser) -> list[Any]:
    out = []
    while (reply := parser.next()) is not INCOMPLETE:
        out.append(reply)
    return out


def test_parser_reads_every_reply_type_at_once() -> None:
    parser = ReplyParser()
    parser.feed(STREAM)
    assert _drain(parser) == REPLIES


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_parser_gives_the_same_replies_whatever_the_packets(cut: int) -> None:
    """TCP cuts the stream anywhere: two pieces, at every byte, give the same replies."""
    parser = ReplyParser()
    parser.feed(STREAM[:cut])
    got = _drain(parser)
    parser.feed(STREAM[cut:])
    got += _drain(parser)
    assert got == REPLIES


def test_parser_byte_by_byte() -> None:
    parser = ReplyParser()
    got: list[Any] = []
    for i in range(len(STREAM)):
        parser.feed(STREAM[i : i + 1])
        got += _drain(parser)
    assert got == REPLIES


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"%3\r\n", "unknown reply type byte"),
        (b":12x\r\n", "not an integer"),
        (b"$3\r\nabcd\r\n", "without its terminator"),
        (b"\r\n", "empty line"),
    ],
)
def test_parser_refuses_what_is_not_resp2(data: bytes, message: str) -> None:
    parser = ReplyParser()
    parser.feed(data)
    with pytest.raises(ProtocolError, match=message):
        parser.next()


def test_error_codes() -> None:
    assert ErrorReply("WRONGTYPE Operation against a key").code == "WRONGTYPE"
    assert ErrorReply("UNBLOCKED").code == "UNBLOCKED"


@pytest.mark.parametrize(
    ("message", "cls", "retry"),
    [
        ("NOSCRIPT No matching script.", rex.NoScriptError, False),
        ("READONLY You can't write against a read only replica.", rex.ReadOnlyError, True),
        ("LOADING Redis is loading the dataset in memory", rex.BusyLoadingError, True),
        ("MASTERDOWN Link with MASTER is down", rex.MasterDownError, True),
        ("CLUSTERDOWN The cluster is down", rex.ClusterDownError, True),
        ("TRYAGAIN Multiple keys request during rehashing", rex.TryAgainError, True),
        ("MOVED 3999 127.0.0.1:6381", rex.MovedError, True),
        ("ASK 3999 127.0.0.1:6381", rex.AskError, True),
        ("UNBLOCKED force unblock", rex.ResponseError, True),
        ("WRONGPASS invalid username-password pair", rex.AuthenticationError, False),
        ("NOAUTH Authentication required.", rex.AuthenticationError, False),
        ("NOPERM this user has no permissions", rex.NoPermissionError, False),
        ("ERR Error running script", rex.ResponseError, False),
        # Every key a script touches is declared, so this is a bug to surface, not a move.
        ("ERR Script attempted to access a non local key in a cluster node script: 1f, on "
         "@user_script:71.", rex.ResponseError, False),
        ("WRONGTYPE Operation against a key", rex.ResponseError, False),
    ],
)
def test_error_replies_become_redis_py_errors(message: str, cls: type, retry: bool) -> None:
    """The same classes redis-py raises, so one ``is_retryable`` decides for both paths."""
    error = error_for(ErrorReply(message))
    assert type(error) is cls
    assert is_retryable(error) is retry


def test_moved_keeps_where_the_slot_went() -> None:
    error = error_for(ErrorReply("MOVED 3999 127.0.0.1:6381"))
    assert isinstance(error, rex.MovedError)
    assert (error.slot_id, error.host, error.port) == (3999, "127.0.0.1", 6381)
