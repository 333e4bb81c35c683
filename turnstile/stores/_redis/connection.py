"""One logical Redis connection in any deployment mode, that rides out failovers.

Every store, the operator's probe and ``turnstile check`` reach Redis through
:class:`RedisConnection`. It owns four decisions that would otherwise be copied into each store:

* **Which client.** ``standard`` is a plain ``redis.asyncio.Redis``; ``cluster`` is
  ``redis.asyncio.cluster.RedisCluster`` seeded with the configured endpoints; ``sentinel`` asks
  the sentinels for the master address and talks to the master with a plain client.
* **Failover.** :meth:`RedisConnection.run` retries an operation on errors a failover produces
  (refused connections, ``READONLY`` from a demoted master, ``CLUSTERDOWN``, ``TRYAGAIN``,
  ``LOADING``, ``UNBLOCKED``) with capped backoff until ``failover_timeout`` has passed. In
  Sentinel mode every retry asks the sentinels again: redis-py's own Sentinel retries reconnect
  to the address they already had (redis/redis-py#3874), so Turnstile does not lean on them.
  In Cluster mode a client that keeps failing is rebuilt from the configured endpoints, because
  redis-py drops unreachable startup nodes and may otherwise run out of nodes to ask.
* **Scripts.** :meth:`RedisConnection.eval` sends Lua scripts over one multiplexed connection
  per node (``multiplexed``: pipelined, cancellation cannot desynchronise it); everything else,
  blocking pops included, goes through the redis-py client.
* **No CLIENT SETINFO.** redis-py 5+ names its library to every connection it opens with
  ``CLIENT SETINFO`` and ignores a refusal. Redis 7.0 does not know the command; Redis 7.2+
  and Valkey do, so a user limited to the store's ACL rule is refused it and every new
  connection leaves a denial in ``ACL LOG`` (``tests/redis/test_acl.py`` on Valkey). The
  clients are built without it (:data:`NO_SETINFO`), so the rule stays what the stores need.
* **Errors.** Whatever Redis raises leaves this module as a
  :class:`~turnstile.stores.errors.TurnstileError`, chained to the original.
* **Event loops.** redis-py clients and transports belong to the loop that made them, and Rasa
  runs more than one (its server's uvloop, ``asyncio.run`` in worker threads). :class:`PerLoop`
  keeps one connection per loop and closes it when that loop closes, because Rasa never calls a
  store's ``close()``: a stopped server would otherwise leave its sockets to the garbage
  collector (``ResourceWarning: unclosed``).

Operations given to :meth:`RedisConnection.run` must be safe to repeat: a reply lost to a
failover means the caller cannot know whether the command ran. The stores' Lua scripts are
written for that (they take caller-made ids and are idempotent per id).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeAlias, TypeVar

import redis
import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot

from turnstile.stores import metrics
from turnstile.stores._redis.causes import describe, permission_denied
from turnstile.stores._redis.credentials import credential_provider
from turnstile.stores._redis.multiplexed import (
    MultiplexedConnection,
    TLSVerificationError,
    open_multiplexed,
    tls_failure,
)
from turnstile.stores._redis.scripts import LuaScript
from turnstile.stores.config import RedisSettings
from turnstile.stores.errors import PermissionDeniedError, StoreUnavailableError, TurnstileError

logger = logging.getLogger(__name__)

T = TypeVar("T")
AnyRedis: TypeAlias = aioredis.Redis | RedisCluster



def _no_setinfo(client_class: type) -> dict[str, Any]:
    """The keyword that stops ``client_class`` sending ``CLIENT SETINFO`` on connect: redis-py
    8 takes ``driver_info=None`` (``lib_name`` is deprecated there), 5 to 7 ``lib_name=None``
    and ``lib_version=None``; 4.5 never sends it and knows neither."""
    params = inspect.signature(client_class).parameters
    if "driver_info" in params:
        return {"driver_info": None}
    if "lib_name" in params:
        return {"lib_name": None, "lib_version": None}
    return {}


#: Per client class, what to pass so that it does not send ``CLIENT SETINFO``.
NO_SETINFO: dict[type, dict[str, Any]] = {
    cls: _no_setinfo(cls) for cls in (aioredis.Redis, RedisCluster)
}

#: Errors a failover or a restarting node produces; worth another try.
RETRYABLE: tuple[type[BaseException], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ReadOnlyError,
    rex.BusyLoadingError,
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.MasterDownError,
    rex.SlotNotCoveredError,
    rex.RedisClusterException,
    rex.MovedError,
    rex.AskError,
    OSError,
    asyncio.TimeoutError,
)
#: Wrong credentials do not heal by retrying.
FATAL: tuple[type[BaseException], ...] = (
    rex.AuthenticationError,
    rex.AuthorizationError,
    rex.NoPermissionError,
)
_RETRYABLE_REPLIES = (
    "UNBLOCKED", "LOADING", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "TRYAGAIN",
)
_BACKOFF_FIRST = 0.02
#: redis-py 6+ retries a refused connection 3 times with up to 10 s of backoff on its own,
#: hidden inside one command; :meth:`RedisConnection.run` owns retries and their budget.
NO_RETRY = _NO_RETRY = Retry(NoBackoff(), 0)
_BACKOFF_CAP = 0.5


class SentinelAuthenticationError(rex.AuthenticationError):
    """The sentinels (not the data nodes) refused ``sentinel_username``/``sentinel_password``."""


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is what a failover, restart or resharding looks like from a client."""
    if isinstance(exc, FATAL) or tls_failure(exc) is not None:
        return False
    if isinstance(exc, RETRYABLE) or closed_under_a_command(exc):
        return True
    return isinstance(exc, rex.ResponseError) and str(exc).startswith(_RETRYABLE_REPLIES)


_REDIS_PY_DIR = os.path.dirname(redis.__file__) + os.sep


def closed_under_a_command(exc: BaseException) -> bool:
    """Whether ``exc`` is redis-py's asyncio connection writing or reading after another task
    closed it: ``disconnect()`` sets its stream reader and writer to None, and a command (or the
    handshake of a connection being dialled) that was in flight then fails with an
    ``AttributeError`` raised inside redis-py, not a ``ConnectionError``. Seen when a failover's
    refresh closes the pool under a blocked pop on a loaded machine; to the caller it is a lost
    connection, retried like one."""
    if not isinstance(exc, AttributeError) or "'NoneType' object has no attribute" not in str(exc):
        return False
    tb, last = exc.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and last.tb_frame.f_code.co_filename.startswith(_REDIS_PY_DIR)


async def close_client(client: Any) -> None:
    """Close a redis-py client or pubsub; ``aclose`` arrived in redis-py 5, ``close`` before."""
    closer = getattr(client, "aclose", None) or client.close
    try:
        await closer()
    except (rex.RedisError, OSError):  # closing a dead connection is not news
        logger.debug("ignoring an error while closing a Redis client", exc_info=True)


async def _refuse_credentials(sentinel: Sentinel) -> bool:
    """Whether the sentinels refuse the credentials (asked when no master was found).

    redis-py 5+ names each sentinel's error in ``MasterNotFoundError``; 4.5 says only "No master
    found", so one PING per sentinel tells a refused AUTH from sentinels that are down.
    """
    for node in sentinel.sentinels:
        try:
            await node.ping()
        except rex.AuthenticationError:  # WRONGPASS, and NOAUTH from a sentinel with requirepass
            return True
        except (rex.RedisError, OSError):
            continue  # down or unreachable: ask the next one
        return False  # it answers with these credentials: not a credentials problem
    return False


class RedisConnection:
    """The client for one store's settings, with failover-aware retries (see the module doc)."""

    def __init__(self, settings: RedisSettings, *, client_name: str = "turnstile") -> None:
        self.settings = settings
        #: One source of credentials for the redis-py client and the multiplexed lanes.
        self._credentials = credential_provider(settings)
        self._client_name = client_name
        self._client: AnyRedis | None = None
        self._master: tuple[str, int] | None = None
        self._generation = 0
        self._refresh_lock = asyncio.Lock()
        self._sentinel: Sentinel | None = None
        self._closed = False
        # Scripts go over one multiplexed connection per node (``multiplexed``); blocking
        # commands, pipelines and the probe use the redis-py client.
        self._lanes: dict[tuple[str, int], MultiplexedConnection] = {}
        self._dialing: dict[tuple[str, int], asyncio.Lock] = {}
        # Callers queued for a client or a lane. While any are, later callers queue behind
        # them instead of taking the fast path: commands reach Redis in the order they were
        # called, so tickets are drawn in arrival order even while a cold connection dials.
        self._queued = 0
        self._metrics = metrics.connection_recorder(settings.deployment_mode, client_name)

    @property
    def is_cluster(self) -> bool:
        return self.settings.deployment_mode == "cluster"

    @property
    def master_address(self) -> tuple[str, int] | None:
        """The master in use (Sentinel mode), or the configured server (standard mode)."""
        if self.settings.deployment_mode == "standard":
            return (self.settings.host, self.settings.port)
        return self._master

    def _common_kwargs(self) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "credential_provider": self._credentials,
            "socket_timeout": s.socket_timeout,
            "socket_connect_timeout": s.connect_timeout,
            "decode_responses": True,
            "client_name": self._client_name,
        }
        if s.use_ssl:
            kwargs.update(s.tls_kwargs())
        return kwargs

    async def _build(self) -> AnyRedis:
        s = self.settings
        if s.deployment_mode == "cluster":
            nodes = [ClusterNode(host, port) for host, port in s.endpoints]
            cluster = RedisCluster(
                startup_nodes=nodes, **self._common_kwargs(), **NO_SETINFO[RedisCluster]
            )
            # Initialise here, once: when many tasks make a fresh client's first call at
            # the same time, redis-py's async cluster client drops connections that other
            # tasks are still using ('NoneType' object has no attribute 'writelines').
            try:
                await cluster.initialize()
            except BaseException:
                await close_client(cluster)
                raise
            return cluster
        if s.deployment_mode == "sentinel":
            if self._sentinel is None:
                self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
                    list(s.endpoints), sentinel_kwargs={**s.sentinel_kwargs(), "retry": _NO_RETRY}
                )
            try:
                host, port = await self._sentinel.discover_master(s.sentinel_service)
            except MasterNotFoundError as exc:
                # redis-py folds each sentinel's error into one message; a refused AUTH (or
                # NOAUTH from a sentinel with requirepass) does not heal by asking again.
                if "AuthenticationError" in str(exc) or await _refuse_credentials(
                    self._sentinel
                ):
                    raise SentinelAuthenticationError(
                        "the sentinels refused the connection credentials"
                    ) from exc
                raise
            if self._master is not None and self._master != (host, port):
                logger.warning(
                    "Redis master of %r moved from %s:%d to %s:%d",
                    s.sentinel_service, *self._master, host, port,
                )
            self._master = (host, port)
            return aioredis.Redis(
                host=host, port=port, db=s.db, retry=_NO_RETRY, **self._common_kwargs(),
                **NO_SETINFO[aioredis.Redis],
            )
        return aioredis.Redis(
            host=s.host, port=s.port, db=s.db, retry=_NO_RETRY, **self._common_kwargs(),
            **NO_SETINFO[aioredis.Redis],
        )

    async def client(self) -> AnyRedis:
        """The current client, built on first use."""
        if self._closed:
            raise TurnstileError("the Redis connection is closed")
        if self._client is not None and not self._queued:
            return self._client
        self._queued += 1
        try:
            async with self._refresh_lock:  # FIFO: callers leave in the order they came
                if self._client is None:
                    self._client = await self._build()
                return self._client
        finally:
            self._queued -= 1

    async def _refresh(self, seen_generation: int) -> None:
        """Replace the client after a failure, once for all tasks that saw the same failure."""
        if self.settings.deployment_mode == "standard":
            return  # the pool reconnects to the one address there is
        async with self._refresh_lock:
            if self._generation != seen_generation:
                return
            old, self._client = self._client, None
            self._generation += 1
            self._metrics.refreshed()
            self._close_lanes()  # the master may have moved; dial again where scripts go
            try:
                self._client = await self._build()
            finally:
                if old is not None and old is not self._client:
                    await close_client(old)

    async def run(self, op: Callable[[AnyRedis], Awaitable[T]], *, what: str = "command") -> T:
        """Run ``op(client)``, retrying through failovers for up to ``failover_timeout``."""
        deadline = time.monotonic() + self.settings.failover_timeout
        delay = _BACKOFF_FIRST
        attempt = 0
        while True:
            generation = self._generation
            try:
                client = self._client
                if client is None or self._closed or self._queued:
                    client = await self.client()
                return await op(client)
            except TurnstileError:
                raise
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    raise
                if not is_retryable(exc):
                    raise self._translate(exc, what) from exc
                attempt += 1
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailableError(
                        f"Redis ({self.settings.where}) did not complete {what} within "
                        f"{self.settings.failover_timeout:g}s: {self.cause(exc)}"
                    ) from exc
                self._metrics.retried()
                if attempt == 1:
                    logger.info("Redis %s failed (%s); retrying", what, self.cause(exc))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _BACKOFF_CAP)
            try:
                await self._refresh(generation)
            except Exception as exc:  # the sentinels or nodes may still be electing
                if not is_retryable(exc):
                    raise self._translate(exc, what) from exc

    def _translate(self, exc: BaseException, what: str) -> TurnstileError:
        refused = tls_failure(exc)
        if refused is not None or isinstance(exc, TLSVerificationError):
            detail = refused.verify_message if refused is not None else str(exc)
            trust = (
                f"ssl_ca_certs ({self.settings.ssl_ca_certs})"
                if self.settings.ssl_ca_certs
                else "the system trust store (set ssl_ca_certs to a private CA's file)"
            )
            return StoreUnavailableError(
                f"Redis ({self.settings.where}) TLS certificate refused for {what}: {detail}; "
                f"the certificate must be trusted by {trust} and name the host connected to"
            )
        if isinstance(exc, SentinelAuthenticationError):
            given = "set" if self.settings.sentinel_password is not None else "not set"
            return StoreUnavailableError(
                f"Redis ({self.settings.where}) sentinels refused the connection credentials "
                f"for {what}: check sentinel_username/sentinel_password (sentinel_password is "
                f"{given}; the sentinels' requirepass or ACL user, apart from password)"
            )
        denied = permission_denied(exc)
        if denied is not None:
            user = self.settings.username or "default"
            return PermissionDeniedError(
                f"Redis ({self.settings.where}) refused {what} to ACL user {user!r}: {denied}; "
                f"grant the store's ACL rule (docs/managed-redis.md; `turnstile check --acl` "
                f"lists what is missing)"
            )
        if isinstance(exc, FATAL):
            return StoreUnavailableError(
                f"Redis ({self.settings.where}) refused the credentials for {what}: "
                f"{type(exc).__name__}: {exc}"
            )
        return TurnstileError(
            f"Redis ({self.settings.where}) failed {what}: {self.cause(exc)}"
        )

    def cause(self, exc: BaseException) -> str:
        """A readable cause of ``exc`` for this store's settings (``causes.describe``)."""
        return describe(exc, host=self.settings.host, use_ssl=self.settings.use_ssl)

    async def eval(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a Lua script with retries; the script must be idempotent (see the module doc).

        It goes over the multiplexed connection to the node that owns ``keys[0]``.
        """

        async def op(client: AnyRedis) -> Any:
            return await script.run_on(await self._lane(client, keys), keys, args)

        return await self.run(op, what=script.name)

    async def eval_counting(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> tuple[Any, int]:
        """:meth:`eval`, and how many earlier attempts were sent before the one that answered.

        An attempt whose connection failed after it was sent (a routing refresh closing the
        connection, a master dying) may have run on Redis with its reply lost; a script whose
        answer depends on its own earlier effects (RELEASE finding its ticket gone) needs to
        know that.
        """
        sent = 0

        async def op(client: AnyRedis) -> Any:
            nonlocal sent
            lane = await self._lane(client, keys)
            sent += 1
            return await script.run_on(lane, keys, args)

        reply = await self.run(op, what=script.name)
        return reply, sent - 1

    async def eval_then(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        then: Callable[[Any], Sequence[Any] | None],
    ) -> tuple[Any, Any]:
        """:meth:`eval`, then the command ``then(reply)`` (if not None) on the same connection.
        Returns both replies (None for a command not sent); both run again if the connection
        fails. For a command that must follow the script's write on the connection that made
        it, such as ``WAIT`` (the lock store's durable mode): it holds up the replies behind it
        on the multiplexed connection until Redis answers it.
        """

        async def op(client: AnyRedis) -> tuple[Any, Any]:
            lane = await self._lane(client, keys)
            reply = await script.run_on(lane, keys, args)
            command = then(reply)
            if command is None:
                return reply, None
            return reply, await lane.call(*command)

        return await self.run(op, what=script.name)

    def _lane_address(self, client: AnyRedis, keys: Sequence[str]) -> tuple[str, int]:
        if self.is_cluster:
            assert isinstance(client, RedisCluster)
            if keys:
                node = client.nodes_manager.get_node_from_slot(key_slot(keys[0].encode()))
            else:
                node = client.get_default_node()  # a primary
            return (node.host, int(node.port))
        address = self.master_address
        if address is None:  # pragma: no cover - set by _build in Sentinel mode
            raise rex.ConnectionError("no Redis master known yet")
        return address

    async def _lane(self, client: AnyRedis, keys: Sequence[str]) -> MultiplexedConnection:
        """The open multiplexed connection to the node for ``keys``, dialled once on demand."""
        address = self._lane_address(client, keys)
        lane = self._lanes.get(address)
        if lane is not None and lane.is_open and not self._queued:
            return lane
        dialing = self._dialing.setdefault(address, asyncio.Lock())
        self._queued += 1
        try:
            async with dialing:  # one dial per node; FIFO for the callers arriving meanwhile
                lane = self._lanes.get(address)
                if lane is None or not lane.is_open:
                    lane = await open_multiplexed(
                        address,
                        self.settings,
                        db=0 if self.is_cluster else self.settings.db,
                        client_name=self._client_name,
                        credentials=self._credentials,
                    )
                    if self._closed:
                        lane.close()
                        raise TurnstileError("the Redis connection is closed")
                    self._lanes[address] = lane
                return lane
        finally:
            self._queued -= 1

    def _close_lanes(self) -> None:
        lanes, self._lanes = self._lanes, {}
        for lane in lanes.values():
            lane.close()

    async def close(self) -> None:
        self._closed = True
        self._close_lanes()
        client, self._client = self._client, None
        if client is not None:
            await close_client(client)
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await close_client(sentinel)
            self._sentinel = None


# ---- one connection per event loop, closed with its loop ---------------------------------------

#: Cleanups to run on a loop just before it closes, by loop (see :func:`close_with_loop`).
_ON_CLOSE: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, list[Callable[[], Awaitable[None]]]
] = weakref.WeakKeyDictionary()


def close_with_loop(
    loop: asyncio.AbstractEventLoop, cleanup: Callable[[], Awaitable[None]]
) -> bool:
    """Run ``cleanup()`` on ``loop`` just before the loop closes; False if it cannot be hooked.

    asyncio has no "loop closing" callback, and the servers Rasa runs on close their loop with
    ``loop.close()`` without ``shutdown_asyncgens`` (Sanic 21) or after it (``asyncio.run``). So
    the loop's ``close`` is wrapped, once per loop: a closing loop is stopped, so the cleanups
    run to completion with ``run_until_complete`` and the sockets are closed properly, on
    asyncio's loop and on uvloop alike.
    """
    cleanups = _ON_CLOSE.get(loop)
    if cleanups is None:
        original = loop.close
        cleanups = []

        def close() -> None:
            pending = list(cleanups)
            cleanups.clear()
            if pending and not loop.is_closed() and not loop.is_running():
                try:
                    loop.run_until_complete(_run_cleanups(pending))
                except Exception:  # the loop closes whatever happens
                    logger.debug("closing Redis connections with their loop failed",
                                 exc_info=True)
            original()

        try:
            loop.close = close  # type: ignore[method-assign]
        except (AttributeError, TypeError):  # a loop class without instance attributes
            return False
        _ON_CLOSE[loop] = cleanups
    cleanups.append(cleanup)
    return True


async def _run_cleanups(cleanups: list[Callable[[], Awaitable[None]]]) -> None:
    for cleanup in cleanups:
        try:
            await cleanup()
        except Exception:
            logger.debug("a cleanup on loop close failed", exc_info=True)


C = TypeVar("C")


class PerLoop(Generic[C]):
    """One value per event loop (a store's connection), closed with :func:`close_with_loop`."""

    def __init__(
        self, make: Callable[[], C], close: Callable[[C], Awaitable[None]]
    ) -> None:
        self._make = make
        self._close = close
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, C] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> C:
        """The running loop's value, made (and hooked to the loop's close) on first use."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            value = self._values[loop] = self._make()
            ref = weakref.ref(self)
            close_with_loop(loop, lambda: _close_one(ref, loop))
        return value

    async def close_all(self) -> None:
        """Close the running loop's value here and the others on their own loops."""
        values = dict(self._values)
        self._values.clear()
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - a coroutine has a running loop
            current = None
        for loop, value in values.items():
            if loop is current:
                await self._close(value)
            elif loop.is_running():
                fut = asyncio.run_coroutine_threadsafe(_awaited(self._close(value)), loop)
                await asyncio.wrap_future(fut)

    async def close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        value = self._values.pop(loop, None)
        if value is not None:
            await self._close(value)


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


async def _close_one(ref: weakref.ref[PerLoop[Any]], loop: asyncio.AbstractEventLoop) -> None:
    owner = ref()
    if owner is not None:
        await owner.close_loop(loop)
