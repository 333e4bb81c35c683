"""Prove that a store's Redis works, in the mode it declares, and say what was seen.

One probe serves three callers: the operator (a store's ``Connected`` condition),
``turnstile check`` (a person at a terminal) and bot images (a readiness check). All of them
must agree on what "works" means, so it lives here, next to the connection code it exercises,
and imports nothing but redis-py:

* ``standard``: the configured server answers ``PING`` (with the configured credentials, TLS
  and database).
* ``cluster``: a node reports ``cluster_state:ok``, all 16384 slots are covered by nodes that
  are not failing, and every primary answers ``PING``. ``nodes`` counts the nodes the cluster
  sees as healthy, so a node that leaves shows up as a smaller number.
* ``sentinel``: the sentinels name a master for the service, ``SENTINEL CKQUORUM`` says they
  can still elect a new one, and the master they name answers ``PING`` through
  :class:`~turnstile.stores._redis.connection.RedisConnection` (the same path a store takes).

With ``store`` (``lock_store`` or ``timer_store``) the probe then does what a bot will do: it runs
the store's own operations once on a key of its own (``turnstile-probe-<random>``), so an ACL user
that may PING but not run the store's scripts, or not on the store's keys, fails here with
``MissingPermission`` naming what Redis refused, not at a bot's first message:

* ``lock_store``: a lock cycle with a second message waiting behind it (ISSUE, the waiter's
  wake-up BLPOP, RELEASE, CHECK);
* ``timer_store``: a timer written and deleted, and one poll of every bucket that can claim
  nothing (its cutoff is 1970), so no bot's timer is touched.

If the user may also run ``ACL DRYRUN`` on itself, every command of the store's rule is checked
too (``turnstile.stores.acl``) and each missing one is named.

A probe never raises for a Redis problem: it returns a :class:`ProbeReport` with ``ok=False``,
a short ``reason`` (a CamelCase word the operator uses as a condition reason) and a
``message`` a person can act on. Messages never contain a password.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Final

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS

from turnstile.stores import metrics
from turnstile.stores._redis.causes import describe
from turnstile.stores._redis.connection import FATAL, NO_RETRY, RedisConnection, close_client
from turnstile.stores._redis.multiplexed import tls_failure
from turnstile.stores.acl import Store, missing_permissions
from turnstile.stores.config import RedisSettings
from turnstile.stores.errors import (
    ConfigurationError,
    PermissionDeniedError,
    StoreUnavailableError,
    TurnstileError,
)
from turnstile.stores.locks.redis import RedisTicketLockStore
from turnstile.stores.timers.api import TimerSettings
from turnstile.stores.timers.redis import RedisTimerStore

__all__ = ["CLUSTER_SLOTS", "ProbeReport", "probe"]

CLUSTER_SLOTS: Final = REDIS_CLUSTER_HASH_SLOTS
#: A plain Redis waits for a newline that a TLS handshake never sends: it looks like silence.
_TLS_SILENCE: Final = (
    "; with use_ssl on, a Redis that does not speak TLS on this port never answers the TLS "
    "handshake: check use_ssl and the port"
)
#: How long one probe may take by default; a probe is a check, not a store operation.
DEFAULT_TIMEOUT: Final = 5.0


@dataclass(frozen=True)
class ProbeReport:
    """What a probe found. ``reason`` is a CamelCase word, ``message`` a sentence."""

    ok: bool
    mode: str
    master: str | None = None
    nodes: int = 0
    latency_ms: float | None = None
    message: str = ""
    reason: str = "Connected"
    sentinels: int = 0


class _ProbeFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def probe(
    settings: RedisSettings,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    client_name: str = "turnstile-probe",
    store: Store | None = None,
    db_key: str = "db",
) -> ProbeReport:
    """Connect as a store would and prove the declared mode works, and with ``store`` that the
    store's own operations run (see the module doc).

    ``db_key`` is what a person sets to choose the database (``lock_store.db`` in a file,
    ``spec.redis.db`` on a store): a database the server does not have is ``DatabaseOutOfRange``
    naming it.
    """
    budget = max(timeout, 0.1)
    settings = replace(
        settings,
        failover_timeout=min(settings.failover_timeout, budget * 0.8),
        socket_timeout=min(settings.socket_timeout, budget),
    )
    mode = settings.deployment_mode
    connection = RedisConnection(settings, client_name=client_name)
    started = time.perf_counter()
    try:
        checker = {"cluster": _probe_cluster, "sentinel": _probe_sentinel}.get(
            mode, _probe_standard
        )
        report = await asyncio.wait_for(checker(connection), timeout=budget)
        if store is not None:
            left = max(budget - (time.perf_counter() - started), 0.1)
            done = await asyncio.wait_for(_exercise(settings, store, connection), timeout=left)
            report = replace(report, message=f"{report.message}; {done}")
    except _ProbeFailed as failed:
        return ProbeReport(ok=False, mode=mode, message=failed.message, reason=failed.reason)
    except (TimeoutError, asyncio.TimeoutError):
        return ProbeReport(
            ok=False,
            mode=mode,
            reason="Unreachable",
            message=f"Redis ({settings.where}) did not answer within {budget:g}s"
            + (_TLS_SILENCE if settings.use_ssl else ""),
        )
    except ConfigurationError as exc:
        return ProbeReport(ok=False, mode=mode, reason="InvalidSettings", message=str(exc))
    except PermissionDeniedError as exc:
        return ProbeReport(ok=False, mode=mode, reason="MissingPermission", message=str(exc))
    except StoreUnavailableError as exc:
        text = str(exc)
        reason = (
            "TLSVerificationFailed" if "TLS certificate refused" in text
            else "AuthenticationFailed" if "credentials" in text
            else "Unreachable"
        )
        return ProbeReport(ok=False, mode=mode, reason=reason, message=str(exc))
    except TurnstileError as exc:
        if _no_such_database(exc):
            return ProbeReport(
                ok=False, mode=mode, reason="DatabaseOutOfRange",
                message=(
                    f"Redis ({settings.where}) has no database {settings.db} (it answered "
                    f"{_root(exc)}): set {db_key} to a database the server has (0 always "
                    f"exists; its `databases` setting says how many)"
                ),
            )  # fmt: skip
        return ProbeReport(ok=False, mode=mode, reason="RedisError", message=str(exc))
    finally:
        await connection.close()
    latency = round((time.perf_counter() - started) * 1000.0, 3)
    return replace(report, latency_ms=latency)


def _root(exc: BaseException) -> str:
    """The innermost cause's text (what Redis itself said)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"


def _no_such_database(exc: BaseException) -> bool:
    """Whether Redis refused the ``SELECT`` of the configured database (``databases`` is lower)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, rex.ResponseError) and "DB index is out of range" in str(cause):
            return True
        cause = cause.__cause__
    return False


async def _probe_standard(connection: RedisConnection) -> ProbeReport:
    s = connection.settings
    await connection.run(lambda client: client.ping(), what="PING")
    return ProbeReport(
        ok=True,
        mode="standard",
        master=f"{s.host}:{s.port}",
        nodes=1,
        message=f"PING to {s.where} answered",
    )


def _text(reply: Any) -> str:
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, dict):  # redis-py may already have parsed it; take it back to lines
        return "\n".join(f"{k}:{v}" for k, v in reply.items())
    return str(reply)


def _cluster_info(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict) and all(isinstance(v, (str, int)) for v in reply.values()):
        return {str(k): str(v) for k, v in reply.items()}
    info: dict[str, str] = {}
    for line in _text(reply).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def _node_rows(reply: Any) -> list[tuple[set[str], bool, list[tuple[int, int]]]]:
    """``(flags, link connected, slot ranges)`` per node of a ``CLUSTER NODES`` reply.

    redis-py parses the reply into a dict keyed by address; a raw text reply is read too.
    """
    rows: list[tuple[set[str], bool, list[tuple[int, int]]]] = []
    if isinstance(reply, dict):
        for node in reply.values():
            flags = set(str(node.get("flags", "")).split(","))
            ranges = [
                (int(r[0]), int(r[-1])) for r in node.get("slots", []) if r and str(r[0]).isdigit()
            ]
            rows.append((flags, bool(node.get("connected")), ranges))
        return rows
    for line in _text(reply).splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        ranges = []
        for slot_range in fields[8:]:
            if slot_range.startswith("["):  # a slot being migrated, counted at its source
                continue
            first, _, last = slot_range.partition("-")
            ranges.append((int(first), int(last or first)))
        rows.append((set(fields[2].split(",")), fields[7] == "connected", ranges))
    return rows


def _healthy_cluster_nodes(reply: Any) -> tuple[int, int]:
    """``(healthy nodes, slots covered by healthy primaries)`` from ``CLUSTER NODES``."""
    healthy = 0
    covered = 0
    for flags, connected, ranges in _node_rows(reply):
        if flags & {"fail", "fail?", "handshake", "noaddr"} or not (connected or "myself" in flags):
            continue
        healthy += 1
        if "master" in flags:
            covered += sum(last - first + 1 for first, last in ranges)
    return healthy, covered


async def _probe_cluster(connection: RedisConnection) -> ProbeReport:
    s = connection.settings

    async def look(client: Any) -> tuple[dict[str, str], Any, int]:
        cluster: RedisCluster = client
        await cluster.initialize()  # a no-op once the slot map is loaded
        node = cluster.get_random_node()
        info = await cluster.execute_command("CLUSTER INFO", target_nodes=node)
        nodes = await cluster.execute_command("CLUSTER NODES", target_nodes=node)
        primaries = cluster.get_primaries()
        for primary in primaries:
            await cluster.execute_command("PING", target_nodes=primary)
        return _cluster_info(info), nodes, len(primaries)

    info, raw_nodes, primaries = await connection.run(look, what="CLUSTER INFO")
    healthy, covered = _healthy_cluster_nodes(raw_nodes)
    state = info.get("cluster_state", "unknown")
    slots_ok = int(info.get("cluster_slots_ok", "0") or 0)
    if state != "ok":
        raise _ProbeFailed(
            "ClusterUnhealthy",
            f"Redis cluster ({s.where}) reports cluster_state:{state} "
            f"({slots_ok}/{CLUSTER_SLOTS} slots ok)",
        )
    if min(slots_ok, covered) < CLUSTER_SLOTS:
        raise _ProbeFailed(
            "SlotsNotCovered",
            f"Redis cluster ({s.where}) covers {min(slots_ok, covered)} of {CLUSTER_SLOTS} slots",
        )
    return ProbeReport(
        ok=True,
        mode="cluster",
        nodes=healthy,
        message=(
            f"cluster_state:ok, {CLUSTER_SLOTS}/{CLUSTER_SLOTS} slots covered, "
            f"{primaries} primaries answered PING, {healthy} healthy nodes"
        ),
    )


async def _ask_sentinel(
    host: str, port: int, settings: RedisSettings
) -> tuple[tuple[str, int] | None, str | None, int]:
    """``(master, quorum problem or None, healthy replicas)`` according to one sentinel."""
    client: Any = aioredis.Redis(
        host=host, port=port, decode_responses=True, retry=NO_RETRY, **settings.sentinel_kwargs()
    )
    try:
        address = await client.execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", settings.sentinel_service
        )
        if not address:
            return None, None, 0
        master = (str(address[0]), int(address[1]))
        problem: str | None = None
        try:
            await client.execute_command("SENTINEL", "CKQUORUM", settings.sentinel_service)
        except rex.ResponseError as exc:
            problem = str(exc)
        replicas = await client.execute_command(
            "SENTINEL", "REPLICAS", settings.sentinel_service
        )
        healthy = 0
        for replica in replicas or []:
            fields = (
                replica
                if isinstance(replica, dict)
                else dict(zip(replica[::2], replica[1::2], strict=False))
            )
            flags = str(fields.get("flags", ""))
            if "s_down" not in flags and "o_down" not in flags and "disconnected" not in flags:
                healthy += 1
        return master, problem, healthy
    finally:
        await close_client(client)


async def _probe_sentinel(connection: RedisConnection) -> ProbeReport:
    s = connection.settings
    answers: list[tuple[tuple[str, int] | None, str | None, int]] = []
    errors: list[str] = []
    refused = 0
    for host, port in s.endpoints:
        try:
            answers.append(await _ask_sentinel(host, port, s))
        except FATAL:
            refused += 1
            errors.append(
                f"{host}:{port}: refused sentinel_username/sentinel_password "
                f"(sentinel_password is {'set' if s.sentinel_password is not None else 'not set'})"
            )
        except (rex.RedisError, OSError) as exc:
            if tls_failure(exc) is not None:
                errors.append(f"{host}:{port}: TLS certificate refused: {tls_failure(exc)}")
            else:
                errors.append(f"{host}:{port}: {describe(exc, host=host)}")
    if not answers and refused:
        raise _ProbeFailed(
            "AuthenticationFailed",
            f"no sentinel accepted the credentials for {s.sentinel_service!r} "
            f"({'; '.join(errors)})",
        )
    if not answers:
        raise _ProbeFailed(
            "Unreachable",
            f"no sentinel answered for {s.sentinel_service!r} ({'; '.join(errors)})",
        )
    masters = {master for master, _, _ in answers if master is not None}
    if not masters:
        raise _ProbeFailed(
            "MasterUnknown",
            f"{len(answers)} sentinel(s) answered but none knows a master named "
            f"{s.sentinel_service!r}",
        )
    problems = [problem for _, problem, _ in answers if problem]
    if len(problems) == len(answers):
        raise _ProbeFailed(
            "NoQuorum",
            f"SENTINEL CKQUORUM {s.sentinel_service}: {problems[0]}",
        )
    await connection.run(lambda client: client.ping(), what="PING to the master")
    address = connection.master_address
    master = f"{address[0]}:{address[1]}" if address else None
    replicas = max(healthy for _, _, healthy in answers)
    note = f"; unreachable sentinels: {'; '.join(errors)}" if errors else ""
    return ProbeReport(
        ok=True,
        mode="sentinel",
        master=master,
        nodes=1 + replicas,
        sentinels=len(answers),
        message=(
            f"master {master} of {s.sentinel_service!r} answered PING; {len(answers)} "
            f"sentinel(s) agree a failover has quorum; {replicas} healthy replica(s){note}"
        ),
    )


# ---- the store's own operations --------------------------------------------------------------

#: How many times the probe looks whether its second message has drawn its ticket (10 ms apart).
_DRAW_CHECKS: Final = 50


async def _exercise(settings: RedisSettings, store: Store, connection: RedisConnection) -> str:
    """Run ``store``'s operations once (see the module doc); what ran, as a phrase."""
    probe_id = f"turnstile-probe-{uuid.uuid4().hex[:12]}"
    if store == "lock_store":
        done = await _lock_cycle(settings, probe_id)
    else:
        done = await _timer_cycle(settings, probe_id)
    missing = await _dryrun(settings, store, connection)
    if missing:
        raise PermissionDeniedError(
            f"Redis ({settings.where}): {done}, but ACL DRYRUN finds more the store will need: "
            + "; ".join(missing)
        )
    return done


async def _lock_cycle(settings: RedisSettings, probe_id: str) -> str:
    locks = RedisTicketLockStore(settings, lock_lifetime=10.0, wait_connections=1)
    locks.metrics = metrics.OFF  # the probe's cycles are not a bot's messages
    waiter: asyncio.Future[None] | None = None
    try:
        async with locks.lock(probe_id):
            waiter = asyncio.ensure_future(_hold_once(locks, probe_id))
            for _ in range(_DRAW_CHECKS):  # let it draw, so it waits on the wake-up list
                lock = await locks.get_lock(probe_id)
                if waiter.done() or (lock is not None and len(lock.tickets) > 1):
                    break
                await asyncio.sleep(0.01)
        await waiter
    finally:
        if waiter is not None and not waiter.done():
            waiter.cancel()
        if waiter is not None:  # the holder's error is the one to report; the waiter's is seen
            await asyncio.gather(waiter, return_exceptions=True)
        await locks.close()
    return "a lock cycle with a waiter ran (the lock scripts and BLPOP)"


async def _hold_once(locks: RedisTicketLockStore, probe_id: str) -> None:
    async with locks.lock(probe_id):
        pass


async def _timer_cycle(settings: RedisSettings, probe_id: str) -> str:
    timers = RedisTimerStore(TimerSettings(redis=settings), client_name="turnstile-probe",
                             fallback=False)
    try:
        far = time.time() + 86_400.0
        await timers.store_timer(probe_id, None, far)
        await timers.delete_timer(probe_id, only_if_scheduled_time=far)
        await timers.claim_due(0.0, 1)  # nothing is due before 1970: claims nothing
    finally:
        await timers.aclose()
    return "a timer was written and deleted and every bucket polled (the timer scripts)"


async def _dryrun(settings: RedisSettings, store: Store, connection: RedisConnection) -> list[str]:
    """What ``ACL DRYRUN`` finds missing for the store's own user; [] if it may not ask."""

    user = settings.username or "default"

    async def ask(client: Any) -> list[str]:
        if isinstance(client, RedisCluster):  # ACL is per node; the rule is the same on all
            client = _OneNode(client)
        try:  # may this user ask at all (Redis 7+, and a rule that allows ACL DRYRUN)?
            await client.execute_command("ACL", "DRYRUN", user, "PING")
        except rex.ResponseError:  # NOPERM, or an older Redis: the operations above tell
            return []
        return await missing_permissions(
            client, user, store, settings.key_prefix,
            cluster=settings.deployment_mode == "cluster",
        )

    return await connection.run(ask, what="ACL DRYRUN")


class _OneNode:
    """A Cluster client's ``execute_command`` sent to one primary (keyless admin commands)."""

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._node = cluster.get_default_node()

    async def execute_command(self, *args: Any) -> Any:
        return await self._cluster.execute_command(*args, target_nodes=self._node)
