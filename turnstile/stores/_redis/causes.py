"""Readable causes for what goes wrong between a store and Redis.

redis-py reports a DNS failure, a refused port, a silent host and TLS spoken to a plain Redis
alike as ``ConnectionError`` (or ``TimeoutError``); the class name alone tells a person nothing.
:func:`describe` walks the exception chain (redis-py keeps the socket error as the cause) and
answers with one phrase a person can act on. :func:`permission_denied` does the same for
Redis' ``NOPERM`` replies, which name the command or key the ACL user may not use.

Pure functions over exception values: no I/O, no secrets (redis-py's messages hold host and
port, never a password).
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import ssl
from collections.abc import Iterator
from typing import Final

from redis import exceptions as rex

from turnstile.stores._redis.scripts import script_by_sha, scripts_calling_at

#: OpenSSL's words for "the other side does not speak TLS" (a plain Redis on a TLS client).
_NOT_TLS: Final = ("WRONG_VERSION_NUMBER", "record layer failure", "packet length too long",
                   "UNKNOWN_PROTOCOL", "unexpected eof", "EOF occurred")
_UNREACHABLE: Final = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    for _ in range(8):  # redis-py's error, ours around it, then the socket's: a short chain
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def host_with_port(host: str) -> bool:
    """Whether ``host`` looks like ``name:port`` (a common slip; the port has its own key)."""
    name, sep, port = host.rpartition(":")
    return bool(sep and name and port.isdigit() and not name.endswith(":") and "]" not in port)


def describe(exc: BaseException, *, host: str | None = None, use_ssl: bool = False) -> str:
    """One phrase saying why a connection failed (see the module doc)."""
    for seen in _chain(exc):
        if isinstance(seen, socket.gaierror):
            if host is not None and host_with_port(host):
                return (f"host {host!r} does not resolve: it contains a port, which goes in "
                        f"the port key (or the endpoints list) instead")
            return f"the host name does not resolve (DNS: {seen.strerror or seen})"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused: nothing listens on that host and port"
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, ssl.SSLCertVerificationError):
            text = str(seen)
            if any(word.lower() in text.lower() for word in _NOT_TLS):
                return ("the TLS handshake failed: the server does not speak TLS on this port "
                        "(use_ssl is on; turn it off for a plain Redis, or use its TLS port)")
            return f"the TLS handshake failed ({text})"
        if isinstance(seen, OSError) and seen.errno in _UNREACHABLE:
            return f"no route to the host ({seen.strerror or seen})"
    first = exc
    for seen in _chain(exc):
        if isinstance(seen, (rex.TimeoutError, asyncio.TimeoutError, TimeoutError)):
            if use_ssl:
                return ("no answer in time: with use_ssl on, a Redis that does not speak TLS "
                        "on this port never answers the handshake (check use_ssl and the "
                        "port), or a host that drops packets")
            return ("no answer in time: a host that drops packets (firewall, security group), "
                    "or one that accepts connections but does not speak Redis")
    text = str(first)
    reset = any(isinstance(seen, ConnectionResetError) for seen in _chain(exc))
    if not use_ssl and (reset or "closed by server" in text):
        return ("the server closed the connection at once: it may require TLS (set use_ssl), "
                "or it refused this client (maxclients, protected mode)")
    return f"{type(first).__name__}: {text}" if text else type(first).__name__


#: What the server answers when a command *inside* a script is refused: an ``ERR`` naming the
#: script's line rather than the command, in each server's words --
#: Redis 7:   ``The user executing the script can't run this command or subcommand script:
#:            <sha>, on @user_script:<line>.`` (``can't access at least one of the keys``)
#: Valkey 8:  ``ACL failure in script: User u has no permissions to run the 'rpush' command
#:            script: <sha>, on @user_script:<line>.`` (``No permissions to access a key``)
#: Valkey 9:  as Valkey 8 without ``<sha>, `` (the store finds the script by the line).
_SCRIPT_REFUSED: Final = re.compile(r"user executing the script can't|ACL failure in script", re.I)
_SCRIPT_LINE: Final = re.compile(
    r"script: (?:(?P<sha>[0-9a-f]{40}), )?on @user_script:(?P<line>\d+)"
)
#: Valkey names the refused command (Redis 7 does not, inside a script).
_COMMAND_NAMED: Final = re.compile(r"no permissions to run the '(?P<command>[^']+)' command", re.I)
#: A refused key: Redis 7 ``... access one of the keys used as arguments`` (``at least one of the
#: keys`` in a script), Valkey 8 and 9 ``No permissions to access a key``.
_KEY_REFUSED: Final = re.compile(r"access (?:at least )?(?:one of the keys|a key)", re.I)
#: The store's words for a refused key, the same whichever server's words came before them.
KEY_REFUSED: Final = "a key this user may not access"


def permission_denied(exc: BaseException) -> str | None:
    """What Redis refused the ACL user behind ``exc``, or None if it was not a refusal.

    ``NOPERM`` names the command or says a key was refused (then :data:`KEY_REFUSED` is added,
    the same on every server). A command refused inside a script comes back as an ``ERR``
    naming the script's line (see ``_SCRIPT_REFUSED``); the script's source says which command
    that line calls.
    """
    for seen in _chain(exc):
        text = str(seen)
        if isinstance(seen, rex.NoPermissionError):
            text = text if text.upper().startswith("NOPERM") else f"NOPERM {text}"
            if _KEY_REFUSED.search(text):
                return f"{text}: {KEY_REFUSED} (check key_prefix against the rule's ~pattern)"
            return text
        if isinstance(seen, rex.ResponseError) and _SCRIPT_REFUSED.search(text):
            found = _SCRIPT_LINE.search(text)
            if found is not None:
                return _refused_in_script(text, found)
    return None


def _refused_in_script(text: str, found: re.Match[str]) -> str:
    line = int(found["line"])
    named = _COMMAND_NAMED.search(text)
    command = named["command"].upper() if named else None
    if found["sha"]:
        script = script_by_sha(found["sha"])
        name = script.name if script is not None else found["sha"][:12]
    else:
        candidates = scripts_calling_at(line, command)
        script = candidates[0] if len(candidates) == 1 else None
        name = script.name if script is not None else "unknown"
    commands = script.commands_at(line) if script is not None else []
    if command is not None and command not in commands:
        commands = [command]
    called = (" or ".join(commands) or "a command") + f" (script {name!r}, line {line})"
    if _KEY_REFUSED.search(text):
        return f"a script calls {called} on {KEY_REFUSED}"
    return f"a script calls {called}, which this user may not run"
