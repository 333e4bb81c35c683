"""One TCP (or TLS) connection to one Redis node that carries many callers' scripts at once.

The lock and timer scripts are short, non-blocking commands. Sent through redis-py, each one
borrows a pooled connection, runs a read under a timeout task and returns the connection: about
six event-loop iterations and a task per command, and a cancellation that lands inside the read
can be swallowed (``asyncio.wait_for`` on Python 3.11) or leave a connection out of step with
its replies (redis-py's CVE-2023-28858 class of bugs). A :class:`MultiplexedConnection` instead:

* **writes** each command as soon as it is called and queues a future for its reply; Redis
  answers in order on one connection, so the n-th reply belongs to the n-th queued future.
  Concurrent callers are pipelined for free (one connection per node per event loop);
* **reads** in ``data_received``: one loop iteration resolves every reply that arrived;
* **cancels cleanly**: a caller that stops waiting leaves its future cancelled in the queue; its
  reply is read and dropped when it comes, so the stream never gets out of step. Whether the
  command ran is unknown, exactly as with a lost reply; the stores' scripts are idempotent;
* **fails loudly**: a reply slower than ``socket_timeout`` fails that call with a TimeoutError
  and closes the connection, which fails every other queued call with a ConnectionError
  (``RedisConnection`` retries them; a failover looks like this). Redis error replies become
  the same ``redis.exceptions`` classes redis-py raises, so retry decisions stay in one place.

Blocking commands (``BLPOP``) must not use it: they would hold up every reply behind them.
The protocol is RESP2 (``resp``); the handshake is ``AUTH`` / ``SELECT`` / ``CLIENT SETNAME``,
with the credentials from the connection's ``CredentialProvider`` (``credentials``), the one the
redis-py client uses too.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from typing import Any, Final, cast

from redis import exceptions as rex
from redis.credentials import CredentialProvider

from turnstile.stores._redis.credentials import credential_provider, current_credentials
from turnstile.stores._redis.resp import INCOMPLETE, ErrorReply, ProtocolError, ReplyParser, encode
from turnstile.stores.config import RedisSettings

logger = logging.getLogger(__name__)

#: Redis error codes and the redis-py exception each one becomes (message without the code),
#: as redis-py's own parser maps them. Other codes become ``ResponseError(whole message)``.
_ERRORS: Final[dict[str, type[rex.RedisError]]] = {
    "NOSCRIPT": rex.NoScriptError,
    "READONLY": rex.ReadOnlyError,
    "LOADING": rex.BusyLoadingError,
    "MASTERDOWN": rex.MasterDownError,
    "CLUSTERDOWN": rex.ClusterDownError,
    "TRYAGAIN": rex.TryAgainError,
    "MOVED": rex.MovedError,
    "ASK": rex.AskError,
    "NOPERM": rex.NoPermissionError,
    "WRONGPASS": rex.AuthenticationError,
    "NOAUTH": rex.AuthenticationError,
    "EXECABORT": rex.ExecAbortError,
}


def error_for(reply: ErrorReply) -> rex.RedisError:
    """The redis-py exception for an error reply."""
    cls = _ERRORS.get(reply.code)
    if cls is None:
        return rex.ResponseError(reply.message)
    return cls(reply.message[len(reply.code) + 1 :])


_CERT_REQS: Final = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}


def tls_context(settings: RedisSettings) -> ssl.SSLContext:
    """The TLS context redis-py makes from the same keys (``RedisSSLContext``).

    The server's certificate and host name are verified by default: against ``ssl_ca_certs``
    when given, and against the system trust store always (``ssl.create_default_context``,
    which honours ``SSL_CERT_FILE``/``SSL_CERT_DIR``). ``ssl_cert_reqs: none`` or
    ``ssl_check_hostname: false`` turn that off (``RedisSettings.warn_weak_tls`` logs it). A
    client certificate is presented when one is given.
    """
    context = ssl.create_default_context()
    context.check_hostname = settings.verifies_hostname
    context.verify_mode = _CERT_REQS[settings.ssl_cert_reqs]
    if settings.ssl_ca_certs:
        context.load_verify_locations(settings.ssl_ca_certs)
    if settings.ssl_certfile:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    return context


def tls_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind ``exc`` (redis-py wraps it), if any."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain: ours or redis-py's ConnectionError, then the cause
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class TLSVerificationError(rex.ConnectionError):
    """The server's TLS certificate (or its host name) was refused; retrying cannot help."""


class MultiplexedConnection(asyncio.Protocol):
    """See the module doc. Made by :func:`open_multiplexed`; used through :meth:`call`."""

    def __init__(self, address: tuple[str, int], *, timeout: float) -> None:
        self.address = address
        self._timeout = timeout
        self._parser = ReplyParser()
        #: Callers waiting for a reply, oldest first, each with its deadline (``loop.time()``).
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        #: One timer for the whole queue, due at the oldest call's deadline (see ``_watch``).
        self._watchdog: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._lost: str | None = None
        #: The periodic re-AUTH of a provider whose tokens limit a connection's life (IAM).
        self._reauth: asyncio.TimerHandle | None = None
        self._reauth_tasks: set[asyncio.Task[None]] = set()
        #: How many re-AUTHs Redis accepted on this connection; the tests watch it.
        self.reauths = 0
        #: SHA1s of the scripts Redis confirmed it holds, as seen on this connection (a new
        #: connection, as after a failover, starts empty: see ``LuaScript.run_on``).
        self.scripts: set[str] = set()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Duck-typed: uvloop's TCPTransport (the loop Rasa serves on) is not an
        # ``asyncio.Transport`` subclass, and only write/abort/is_closing are used.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser, pending = self._parser, self._pending
        parser.feed(data)
        while True:
            try:
                reply = parser.next()
            except ProtocolError as exc:
                self._abort(f"Redis sent bytes that are not RESP2 ({exc})")
                return
            if reply is INCOMPLETE:
                return
            if not pending:
                self._abort("Redis sent a reply nobody asked for")
                return
            future, _ = pending.popleft()
            if not future.done():  # a cancelled or timed-out caller's reply is dropped
                future.set_result(reply)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost fails what is pending

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is None:
            self._lost = "the connection to Redis was closed"
        if self._reauth is not None:
            self._reauth.cancel()
            self._reauth = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending, self._pending = self._pending, deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(rex.ConnectionError(f"{self._lost} ({self._where})"))

    # -- use --------------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    @property
    def is_open(self) -> bool:
        return self._lost is None and self._transport is not None

    async def call(self, *args: Any) -> Any:
        """Send one command and wait for its reply; an error reply is raised as redis-py's."""
        transport = self._transport
        if self._lost is not None or transport is None or transport.is_closing():
            raise rex.ConnectionError(f"{self._lost or 'not connected'} ({self._where})")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        transport.write(encode(args))
        deadline = loop.time() + self._timeout
        self._pending.append((future, deadline))
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._watch, loop)
        reply = await future
        if isinstance(reply, ErrorReply):
            raise error_for(reply)
        return reply

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the oldest call if it is past its deadline, else look again at that deadline.

        Replies come in order, so only the oldest call can be the first one overdue; one timer
        per connection replaces a timer per call.
        """
        self._watchdog = None
        if not self._pending:
            return
        future, deadline = self._pending[0]
        if loop.time() < deadline:
            self._watchdog = loop.call_at(deadline, self._watch, loop)
            return
        if not future.done():
            future.set_exception(
                rex.TimeoutError(f"Redis did not reply within {self._timeout:g}s ({self._where})")
            )
        # Replies behind a lost one cannot be trusted to come: start over on a new connection.
        self._abort(f"a reply took longer than socket_timeout ({self._timeout:g}s)")

    def reauth_every(self, credentials: CredentialProvider, interval: float) -> None:
        """Send ``AUTH`` with fresh credentials every ``interval`` seconds while open.

        ElastiCache closes an IAM-authenticated connection 12 hours after its last ``AUTH``;
        an ``AUTH`` with a new token prolongs it. A refused re-AUTH leaves the connection as it
        was (Redis keeps the earlier authentication) and is logged without the credentials.
        """
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self._reauth = None
            if not self.is_open:
                return
            task = loop.create_task(self._send_reauth(credentials))
            self._reauth_tasks.add(task)
            task.add_done_callback(self._reauth_tasks.discard)
            self._reauth = loop.call_later(interval, tick)

        self._reauth = loop.call_later(interval, tick)

    async def _send_reauth(self, credentials: CredentialProvider) -> None:
        try:
            await self.call("AUTH", *await current_credentials(credentials))
            self.reauths += 1
        except rex.ConnectionError:
            return  # the connection is gone; the next one authenticates afresh
        except Exception as exc:
            logger.warning("re-AUTH on %s was refused (%s); the connection keeps its earlier "
                           "authentication", self._where, type(exc).__name__)

    def _abort(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            logger.debug("closing a connection to %s: %s", self._where, why)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        """Close now; calls still waiting fail with a ConnectionError (they are retried)."""
        self._abort("the connection was closed by Turnstile")


async def open_multiplexed(
    address: tuple[str, int],
    settings: RedisSettings,
    *,
    db: int,
    client_name: str,
    credentials: CredentialProvider | None = None,
) -> MultiplexedConnection:
    """Connect to one node and authenticate, select ``db`` and name the client."""
    host, port = address
    loop = asyncio.get_running_loop()
    context = tls_context(settings) if settings.use_ssl else None
    try:
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: MultiplexedConnection(address, timeout=settings.socket_timeout),
                host,
                port,
                ssl=context,
                server_hostname=host if context is not None else None,
            ),
            timeout=settings.connect_timeout,
        )
    except asyncio.TimeoutError:
        raise rex.TimeoutError(f"connecting to {host}:{port} timed out") from None
    except ssl.SSLCertVerificationError as exc:
        raise TLSVerificationError(
            f"the TLS certificate of {host}:{port} was refused: {exc.verify_message}"
        ) from exc
    except OSError as exc:
        raise rex.ConnectionError(f"cannot connect to {host}:{port}: {exc.strerror}") from exc
    try:
        if credentials is None:  # a caller without a provider of its own: the settings'
            credentials = credential_provider(settings)
        await _handshake(conn, credentials, db=db, client_name=client_name)
    except BaseException:
        conn.close()
        raise
    interval = getattr(credentials, "reauth_every", None)
    if credentials is not None and isinstance(interval, (int, float)) and interval > 0:
        conn.reauth_every(credentials, float(interval))
    return conn


#: Redis' answers to AUTH when the default user has no password (7+, then 5 and older).
_NO_PASSWORD_SET: Final = ("called without any password configured",
                           "Client sent AUTH, but no password is set")
_warned_no_password: set[tuple[str, int]] = set()


def _no_password_set(reply: object) -> bool:
    return isinstance(reply, rex.RedisError) and any(t in str(reply) for t in _NO_PASSWORD_SET)


def _warn_no_password_once(address: tuple[str, int]) -> None:
    if address not in _warned_no_password:
        _warned_no_password.add(address)
        logger.warning(
            "Redis %s:%d has no password for its default user: the configured password is not "
            "used (redis-py ignores it too); set requirepass or remove the password",
            *address,
        )


async def _handshake(
    conn: MultiplexedConnection,
    credentials: CredentialProvider | None,
    *,
    db: int,
    client_name: str,
) -> None:
    commands: list[tuple[Any, ...]] = []
    if credentials is not None:  # asked per connection: a rotated secret reaches new ones
        commands.append(("AUTH", *await current_credentials(credentials)))
    if db:
        commands.append(("SELECT", db))
    commands.append(("CLIENT", "SETNAME", client_name))
    # Pipelined: every command is written before the first reply is read.
    results = await asyncio.gather(*(conn.call(*c) for c in commands), return_exceptions=True)
    if credentials is not None and _no_password_set(results[0]):
        # A password sent to a Redis whose default user has none: redis-py connects anyway,
        # and so Rasa's stores and our own redis-py paths work; so must the scripts' lane.
        _warn_no_password_once(conn.address)
        results[0] = "OK"
    if credentials is not None and isinstance(
        results[0], (rex.ResponseError, rex.AuthenticationError)
    ):
        # Any refusal of AUTH (WRONGPASS, or "ERR invalid password" from old servers) is about
        # the credentials; the message names neither of them.
        raise rex.AuthenticationError("Redis refused the username or password")
    for result in results:
        if isinstance(result, BaseException):
            raise result
