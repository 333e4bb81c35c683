"""Readable causes from the exception chains redis-py raises (``stores._redis.causes``).

The chains are built the way redis-py builds them (its ``ConnectionError`` raised ``from`` the
socket error): a DNS lookup cannot run in a test that talks only to 127.0.0.0/8. Refused ports,
silent hosts and TLS mismatches are proven on real sockets in tests/redis/test_probe_permissions.py.
"""

from __future__ import annotations

import socket

import pytest
from redis import exceptions as rex

from turnstile.stores._redis.causes import describe, host_with_port, permission_denied
from turnstile.stores.locks.lua import RELEASE

pytestmark = pytest.mark.unit


def _redis_error(cause: BaseException, text: str) -> rex.ConnectionError:
    try:
        raise rex.ConnectionError(text) from cause
    except rex.ConnectionError as exc:
        return exc


def test_a_name_that_does_not_resolve_says_dns() -> None:
    exc = _redis_error(socket.gaierror(-2, "Name or service not known"),
                       "Error -2 connecting to redis-master:6379. Name or service not known.")
    assert describe(exc, host="redis-master") == (
        "the host name does not resolve (DNS: Name or service not known)")


def test_a_port_inside_host_is_named() -> None:
    exc = _redis_error(socket.gaierror(-2, "Name or service not known"),
                       "Error -2 connecting to redis:6379:6379. Name or service not known.")
    text = describe(exc, host="redis:6379")
    assert "host 'redis:6379' does not resolve: it contains a port" in text
    assert host_with_port("redis:6379") and not host_with_port("redis")
    assert not host_with_port("::1") and not host_with_port("[::1]")


def test_refused_and_unreachable_are_told_apart() -> None:
    refused = _redis_error(ConnectionRefusedError(111, "Connection refused"), "Error 111")
    assert describe(refused).startswith("connection refused: nothing listens")
    no_route = _redis_error(OSError(113, "No route to host"), "Error 113")
    assert describe(no_route) == "no route to the host (No route to host)"


def test_a_timeout_hints_at_tls_only_when_tls_is_on() -> None:
    exc = rex.TimeoutError("Timeout connecting to server")
    assert "does not speak Redis" in describe(exc)
    assert "never answers the handshake" in describe(exc, use_ssl=True)


def test_an_unknown_error_keeps_its_class_and_text() -> None:
    assert describe(rex.ResponseError("LOADING")) == "ResponseError: LOADING"


def test_a_command_refused_inside_a_script_is_named_from_the_source() -> None:
    line = next(i for i, text in enumerate(RELEASE.source.splitlines(), 1) if "'RPUSH'" in text)
    exc = rex.ResponseError(
        "ERR The user executing the script can't run this command or subcommand script: "
        f"{RELEASE.sha}, on @user_script:{line}."
    )
    assert permission_denied(exc) == (
        f"a script calls RPUSH (script 'ticket release', line {line}), which this user may "
        "not run")
    unknown = rex.ResponseError(
        "ERR The user executing the script can't access at least one of the keys script: "
        f"{'0' * 40}, on @user_script:3."
    )
    assert permission_denied(unknown) == (
        "a script calls a command (script '000000000000', line 3) on a key this user may not "
        "access")
    assert permission_denied(rex.NoPermissionError("this user has no permissions")) == (
        "NOPERM this user has no permissions")
    assert permission_denied(rex.ResponseError("ERR something else")) is None


def test_valkey_refusals_read_as_redis_7_ones() -> None:
    # Valkey 8 names the command and the script; Valkey 9 the command and the line only
    # (tests/redis/test_probe_permissions.py shows both on the real servers).
    line = next(i for i, text in enumerate(RELEASE.source.splitlines(), 1) if "'RPUSH'" in text)
    expected = (f"a script calls RPUSH (script 'ticket release', line {line}), which this user "
                "may not run")
    for sha in (f"{RELEASE.sha}, ", ""):
        exc = rex.ResponseError(
            "ERR ACL failure in script: User bot has no permissions to run the 'rpush' command "
            f"script: {sha}on @user_script:{line}."
        )
        assert permission_denied(exc) == expected
    key = rex.ResponseError(
        f"ERR ACL failure in script: No permissions to access a key script: on @user_script:{line}."
    )
    assert permission_denied(key) == (
        f"a script calls RPUSH (script 'ticket release', line {line}) on a key this user may "
        "not access")
    for words in ("this user has no permissions to access one of the keys used as arguments",
                  "No permissions to access a key"):
        assert permission_denied(rex.NoPermissionError(words)) == (
            f"NOPERM {words}: a key this user may not access (check key_prefix against the "
            "rule's ~pattern)")
