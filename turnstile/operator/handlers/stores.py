"""kopf handlers for LockStore and TimerStore: reconcile, re-check, clean up.

One function, :func:`reconcile`, does the work for every trigger: a store created, its spec
changed, the operator (re)started (``on.resume``: changes made while it was down are picked up
here), and a timer every ``TURNSTILE_RECHECK_INTERVAL`` seconds that re-probes Redis, notices a
failover or a node that left, and heals what failed before (a Secret that has appeared since, a
Redis that is back, a conflict that went away). A per-store lock keeps two triggers of one
store from interleaving.

A reconcile never raises for a store's problem: an invalid spec, a missing Secret, an
unreachable Redis, an API error all end in a condition with a reason and a message, and the
next timer tick tries again (no hot loop: the interval bounds the retry rate). The status is
written only when it says something new (:func:`turnstile.operator.decide.conditions.needs_update`);
Events are posted for what changed (:func:`turnstile.operator.decide.conditions.events`).

Deleting a store runs :func:`finalize` (a kopf finalizer): it removes the section the store
wrote and nothing else; a ConfigMap the operator created is then garbage-collected by
Kubernetes through its ownerReferences once its last store is gone.

An API server outage stops nothing for good. The status is written by this module's own
client (:meth:`turnstile.operator.kube.client.Kube.patch_store_status`), not handed back to
kopf: kopf
applies a timer's patch after the handler with a bounded number of retries, and when those
run out the timer task ends and that store is never re-checked again. A reconcile that finds
the API server silent (:class:`~turnstile.operator.model.errors.ApiUnreachableError`) writes
nothing, posts no Event, logs once per outage, and the next tick tries again; the first write
that succeeds after an outage logs that re-checks resumed (:class:`ApiHealth`). kopf's own
requests (watches, finalizers, its annotations) retry at most 1 s apart for an hour
(:data:`API_BACKOFFS`), so a change made right after the API returns is seen within about a
second (a 20 s outage once delayed the next change by 15.6 s with kopf's defaults).

A namespaced operator started with ``TURNSTILE_REPORT_UNWATCHED=true`` also marks stores in
namespaces it does not watch (:mod:`turnstile.operator.handlers.unwatched`), on the same interval.

Two stores of one kind naming the same ConfigMap key are found through kopf indexes
(``lockstore_targets``, ``timerstore_targets``) and both report ``ConfigMapConflict``; neither
writes that section until the conflict is resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Final, cast

import aiohttp
import kopf

from turnstile.operator import metrics
from turnstile.operator.config import OperatorConfig
from turnstile.operator.decide import conditions as cond
from turnstile.operator.decide import transition
from turnstile.operator.decide.configmaps import (
    Owner,
    agreed_base,
    base_text,
    is_owned,
    section_for,
    with_section,
    without_section,
)
from turnstile.operator.decide.credentials import (
    Credentials,
    SecretObject,
    auth_hint,
    redact,
    refuse_unmarked,
    resolve,
    secret_names,
)
from turnstile.operator.decide.render import (
    conflict_message,
    plain_env,
    secret_env,
    secret_files,
    target,
)
from turnstile.operator.decide.rollout import store_rollout
from turnstile.operator.handlers import unwatched
from turnstile.operator.kube.client import Kube
from turnstile.operator.model.errors import (
    ApiUnreachableError,
    BaseError,
    KubeError,
    OperatorError,
    SpecError,
)
from turnstile.operator.model.kinds import API_VERSION, FINALIZER, GROUP, KINDS, VERSION
from turnstile.operator.model.specs import (
    BaseRef,
    StoreSpec,
    configmap_base_name,
    configmap_key,
    parse_store,
)
from turnstile.operator.probes import check

CONFIG: Final = OperatorConfig.from_env()
_INDEX_IDS: Final = {"LockStore": "lockstore_targets", "TimerStore": "timerstore_targets"}
#: Per kind, the index of ``(namespace, ConfigMap, key)`` -> ``(store, base name, base key)``:
#: the bases the stores writing one key name (they must agree).
_BASE_INDEX_IDS: Final = {"LockStore": "lockstore_bases", "TimerStore": "timerstore_bases"}

#: kopf's retries of its own API calls: every second for an hour. Its default (about 50 s in
#: all) ends a watch's worker, and with it the operator, in an outage; a longer pause between
#: tries is what a change made just after the API returns waits for (one GET a second from one
#: operator is nothing to an API server).
API_BACKOFFS: Final = (0.5,) + (1.0,) * 3600
#: Seconds between kopf's looks at a stopping timer while its store is being deleted.
TIMER_POLLING: Final = 1.0
#: Seconds a replica's peering record lives without a heartbeat (kopf renews it 5-10 s before
#: it runs out): with peering, a replica killed without a goodbye is replaced within this.
PEERING_LIFETIME: Final = 20

logger = logging.getLogger(__name__)
_locks: dict[str, asyncio.Lock] = {}
#: Reconciles that may probe and write at once (timers would otherwise all fire together).
_slots = asyncio.Semaphore(CONFIG.workers)
#: The last status each store was given. A timer or a queued event may carry a body from
#: before that status was applied; comparing against it would repeat Events and move
#: ``lastTransitionTime``.
_written: dict[str, dict[str, Any]] = {}
#: Store uid -> (where, section text) it last wrote: a later difference there is a hand edit.
_rendered: dict[str, tuple[Any, Any, str | None]] = {}
_kube: Kube | None = None


class ApiHealth:
    """Whether the API server answered the last write; logs the start and end of an outage."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self.down_since: float | None = None

    def failed(self, what: str, exc: OperatorError) -> None:
        if self.down_since is None:
            self.down_since = self._clock()
            logger.warning(
                "the API server did not answer (%s while %s); re-checks go on and write "
                "the stores' status once it answers",
                exc.message,
                what,
            )

    def answered(self) -> None:
        if self.down_since is not None:
            lasted = self._clock() - self.down_since
            self.down_since = None
            logger.warning(
                "the API server answers again after %.0f s without it: re-checks resumed", lasted
            )


API_HEALTH: Final = ApiHealth()


def kube() -> Kube:
    global _kube  # noqa: PLW0603  (one client per process, made on first use)
    if _kube is None:
        _kube = Kube.from_environment()
    return _kube


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf settings: our finalizer and annotation names, quiet Events, /metrics."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    # No settings.queueing.worker_limit: with indexes it deadlocks a cold start (workers wait
    # for the indexes to be complete while holding the slots the indexing needs). Work is
    # bounded by ``_slots`` in :func:`reconcile` instead.
    settings.posting.worker_limit = max(2, CONFIG.workers // 4)
    settings.networking.error_backoffs = API_BACKOFFS
    # A store's finalizer waits for its timer to exit; kopf looks again only every
    # ``cancellation_polling`` seconds (60 by default) if the timer did not exit within a few
    # event-loop cycles of being stopped. :func:`on_timer` exits within CANCEL_GRACE, so look
    # again each second: deleting a store then takes seconds, whatever its Redis does.
    settings.background.cancellation_polling = TIMER_POLLING
    # kopf pauses every peer when two share a priority ("Pausing all operators, including
    # self"), so with replicas > 1 nothing was reconciled. A random priority per process makes
    # exactly one replica (the highest) active; the others pause until its record is gone
    # (at once on a clean stop, within PEERING_LIFETIME after a crash).
    settings.peering.priority = random.SystemRandom().randrange(1, 2**31)
    settings.peering.lifetime = PEERING_LIFETIME
    metrics.serve(CONFIG.metrics_port)


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """kopf's own credentials discovery, on an HTTP session with a bounded connection pool.

    kopf's default session has no connection limit: at a cold start every store's worker
    opens its own TLS connection (each with a 128 KiB buffer), which costs more memory than
    the stores. Requests beyond the limit wait for a free connection instead.
    """
    info = kopf.login_via_client(**kwargs)
    if info is None:
        return None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=CONFIG.api_connections, ssl=info.as_ssl_context(), keepalive_timeout=5
        ),
        headers=info.as_http_headers(),
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        priority=info.priority,
        aiohttp_session=session,
    )


# ------------------------------------------------------------------------------ indexes


def _index_key(spec: Mapping[str, Any], namespace: str | None, section_name: str) -> Any:
    cm = spec.get("configMap") or {}
    name = cm.get("name") if isinstance(cm, Mapping) else None
    if not name:
        return None
    return (namespace or "", str(name), configmap_key(cm), section_name)


def _make_indexer(section_name: str) -> Any:
    def indexer(
        spec: Mapping[str, Any], namespace: str | None, name: str | None, **_: Any
    ) -> dict[Any, str] | None:
        key = _index_key(spec, namespace, section_name)
        return None if key is None else {key: str(name)}

    return indexer


def _base_indexer(kind: str) -> Any:
    def indexer(
        spec: Mapping[str, Any], namespace: str | None, name: str | None, **_: Any
    ) -> dict[Any, tuple[str, str, str]] | None:
        cm = spec.get("configMap")
        base_name = configmap_base_name(cm)
        if base_name is None or not isinstance(cm, Mapping) or not cm.get("name"):
            return None
        key = configmap_key(cm)
        value = (f"{kind}/{name}", base_name, str(cm["base"].get("key") or key))
        return {(namespace or "", str(cm["name"]), key): value}

    return indexer


def _target_bases(store: StoreSpec, indexes: Mapping[str, Any]) -> dict[BaseRef, list[str]]:
    """The bases named by the stores writing the store's key (its own as its spec says now),
    each with the stores naming it."""
    where = target(store)
    if where is None or store.config_map is None:
        return {}
    me = f"{store.kind}/{store.name}"
    found: dict[BaseRef, list[str]] = {}
    if store.config_map.base is not None:
        found[store.config_map.base] = [me]
    for index_id in _BASE_INDEX_IDS.values():
        index = indexes.get(index_id)
        for writer, name, key in (index.get((where.namespace, where.name, where.key), [])
                                  if index is not None else []):  # fmt: skip
            if writer != me:
                found.setdefault(BaseRef(name, key), []).append(writer)
    return found


async def _base(store: StoreSpec, indexes: Mapping[str, Any]) -> tuple[BaseRef, str] | None:
    """The base the store's key is composed from and its text; ``None``: not composed.
    Raises :class:`BaseError` when it is missing or does not load, or the stores disagree."""
    bases = _target_bases(store, indexes)
    for ref in bases:
        _base_readers.setdefault((store.namespace, ref.name), set()).add(store.uid)
    where = target(store)
    agreed = agreed_base(bases, where)
    if agreed is None or where is None:
        return None
    return agreed, await _read_base(store.namespace, agreed, str(where))


async def _read_base(namespace: str, ref: BaseRef, composes: str) -> str:
    """The base's text (:func:`base_text`: :class:`BaseError` if missing or unloadable)."""
    data = await kube().config_map_data(namespace, ref.name)
    return base_text(ref, data, namespace=namespace, composes=composes)


def _claimants(store: StoreSpec, indexes: Mapping[str, Any]) -> list[str]:
    where = target(store)
    index = indexes.get(_INDEX_IDS[store.kind])
    if where is None or index is None:
        return [store.name]
    key = (where.namespace, where.name, where.key, store.info.section)
    names = set(index.get(key, [])) | {store.name}
    return sorted(names)


# ---------------------------------------------------------------------------- reconcile


def _owner(store: StoreSpec) -> Owner:
    return Owner(api_version=API_VERSION, kind=store.kind, name=store.name, uid=store.uid)


async def _render(
    store: StoreSpec,
    old_status: Mapping[str, Any],
    indexes: Mapping[str, Any],
    decided: list[transition.Decision | None],
) -> tuple[cond.Condition, dict[str, Any] | None]:
    """Write the store's section; the ``ConfigRendered`` condition and where it lives.

    ``decided`` receives the LockStore's transition decision for the section written.
    """
    await _leave_old_target(store, old_status)
    where = target(store)
    if where is None:
        return cond.Condition(
            cond.CONFIG_RENDERED, cond.TRUE, "NoConfigMap", "spec.configMap is not set"
        ), None
    names = _claimants(store, indexes)
    if len(names) > 1:
        message = conflict_message(store.kind, where, names)
        return cond.Condition(cond.CONFIG_RENDERED, cond.FALSE, "ConfigMapConflict", message), None
    try:
        composing = await _base(store, indexes)
    except ApiUnreachableError:
        raise
    except OperatorError as exc:
        return cond.Condition(cond.CONFIG_RENDERED, cond.FALSE, exc.reason, exc.message), None
    base = composing[1] if composing else None
    owner = _owner(store)
    drifted: list[bool] = []
    content: Mapping[str, Any] = {}

    moved = transition.moved_secrets(old_status.get("secretEnv"), secret_env(store.kind, store))

    def place(current: Mapping[str, Any] | None) -> dict[str, Any] | None:
        nonlocal content
        content, decision = section_for(
            store, current, where.key, datetime.now(timezone.utc), moved, base=base
        )
        decided[:] = [decision]
        new = with_section(
            current,
            namespace=where.namespace,
            name=where.name,
            key=where.key,
            section=store.info.section,
            content=content,
            owner=owner,
            secrets=decision.secret_env if decision else (),
            base=base,
        )
        # The store renders what it rendered last time, yet the ConfigMap must change (``None``
        # means nothing to write): the section was edited by hand (the rollout sync may have
        # put it back first, or not).
        before = ((current or {}).get("data") or {}).get(where.key)
        now = ((new or {}).get("data") or {}).get(where.key)
        drifted[:] = [new is not None and before is not None and now != before
                      and _rendered.get(store.uid) == (where, content, base)]  # fmt: skip
        return new

    try:
        after = await kube().update_configmap(where.namespace, where.name, place)
    except ApiUnreachableError:
        raise
    except OperatorError as exc:
        return cond.Condition(cond.CONFIG_RENDERED, cond.FALSE, exc.reason, exc.message), None
    _rendered[store.uid] = (where, content, base)
    if drifted and drifted[0]:
        logger.warning(
            "%s/%s: ConfigMap %s differed from what the store renders (%s/%s); put back",
            store.kind, store.name, where.name, where.key, store.info.section,
        )  # fmt: skip
    placed = {
        "name": where.name,
        "key": where.key,
        "format": store.config_map.format if store.config_map else "endpoints",
        "section": store.info.section,
        "owned": is_owned(after),
    }
    if composing is not None:
        placed["base"] = {"name": composing[0].name, "key": composing[0].key}
    return cond.Condition(
        cond.CONFIG_RENDERED,
        cond.TRUE,
        "Rendered",
        f"section {store.info.section} is in {where}",
    ), placed


async def _leave_old_target(store: StoreSpec, old_status: Mapping[str, Any]) -> None:
    """If the store used to render elsewhere, take its section out of there."""
    old = old_status.get("configMap")
    if not isinstance(old, Mapping) or not old.get("name"):
        return
    where = target(store)
    if where is not None and (where.name, where.key) == (old.get("name"), old.get("key")):
        return
    await _remove_section(store, str(old["name"]), configmap_key(old))


async def _remove_section(store: StoreSpec, name: str, key: str) -> None:
    """Take the store's section out of ``name``/``key``; a key composed from the store's base
    is composed again (the base's own section of that name, if any, comes back)."""
    owner = _owner(store)
    base: str | None = None
    cm = store.config_map
    if cm is not None and cm.base is not None and cm.name == name:
        with contextlib.suppress(BaseError):
            base = await _read_base(store.namespace, cm.base, name)
    await kube().update_configmap(
        store.namespace,
        name,
        lambda current: without_section(
            current, key=key, section=store.info.section, owner=owner, base=base
        ),
    )


async def _connect(store: StoreSpec) -> tuple[cond.Condition, Any, Credentials | None]:
    """Resolve Secrets and probe Redis: the ``Connected`` condition and the probe report.

    A Secret that is not marked for stores ends here, before any connection is attempted.
    """
    try:
        found: dict[str, SecretObject | None] = {}
        for name in secret_names(store):
            found[name] = await kube().secret(store.namespace, name)
        refuse_unmarked(store, found)
        credentials = resolve(store, {n: s.data if s else None for n, s in found.items()})
    except ApiUnreachableError:
        raise
    except OperatorError as exc:
        return cond.Condition(cond.CONNECTED, cond.FALSE, exc.reason, exc.message), None, None
    report = await check(store, credentials, timeout=CONFIG.probe_timeout)
    if report.reason == "AuthenticationFailed":
        report = replace(report, message=report.message + auth_hint(credentials))
    return cond.connected(report), report, credentials


async def reconcile(
    body: kopf.Body,
    status: Mapping[str, Any],
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    indexes: Mapping[str, Any],
) -> None:
    """Probe, render, write status and Events for one store (see the module doc)."""
    kind = str(body.get("kind"))
    meta = body.get("metadata") or {}
    uid = str(meta.get("uid"))
    where = f"{kind} {meta.get('namespace')}/{meta.get('name')}"
    lock = _locks.setdefault(uid, asyncio.Lock())
    async with lock, _slots:
        try:
            await _reconcile(body, status, log, indexes)
        except ApiUnreachableError as exc:
            API_HEALTH.failed(f"re-checking {where}", exc)


async def _reconcile(
    body: kopf.Body,
    status: Mapping[str, Any],
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    indexes: Mapping[str, Any],
) -> None:
    kind = str(body.get("kind"))
    meta = body.get("metadata") or {}
    uid = str(meta.get("uid"))
    generation = int(meta.get("generation") or 0)
    started = time.perf_counter()
    old_status = _written.get(uid) or {k: v for k, v in (status or {}).items() if k != "kopf"}
    credentials: Credentials | None = None
    try:
        store = parse_store(body)
    except SpecError as exc:
        invalid = (cond.FALSE, "InvalidSpec", exc.message)
        observation = cond.Observation(
            connected=cond.Condition(cond.CONNECTED, *invalid),
            rendered=cond.Condition(cond.CONFIG_RENDERED, *invalid),
        )
    else:
        # Render first: the section depends on the spec alone, and a probe of a Redis that is
        # down takes its whole timeout; a change must not wait for it to reach the bots.
        decided: list[transition.Decision | None] = []
        try:
            rendered, placed = await _render(store, old_status, indexes, decided)
        except ApiUnreachableError:
            raise
        except OperatorError as exc:
            rendered = cond.Condition(cond.CONFIG_RENDERED, cond.FALSE, exc.reason, exc.message)
            placed = None
        connected, report, credentials = await _connect(store)
        observation = cond.Observation(
            connected=connected,
            rendered=rendered,
            rollout=await _rollout_condition(body),
            mode=store.redis.deployment_mode,
            report=report,
            config_map=placed,
            secret_env=secret_env(kind, store),
            secret_files=secret_files(kind, store),
            plain_env=plain_env(kind, store),
            tls_warning=cond.tls_warning(store),
            transition=transition.status_of(
                decided[0] if decided else None,
                old_status,
                {
                    "secretEnv": _refs(secret_env(kind, store)),
                    "secretFiles": _refs(secret_files(kind, store), "path"),
                },
            ),
        )
    new_status = cond.build_status(
        observation, old_status, generation=generation, now=cond.now_iso()
    )
    for condition in new_status["conditions"]:  # Redis error text may echo a credential
        condition["message"] = redact(condition["message"], credentials)
    if cond.needs_update(old_status, new_status):
        try:
            await kube().patch_store_status(
                str(meta.get("namespace")), kind, str(meta.get("name")),
                {"status": cond.merge_patch(old_status, new_status)},
            )
        except ApiUnreachableError:
            raise
        except KubeError as exc:
            log.warning("could not write the status: %s; the next re-check tries again", exc)
            return
        _written[uid] = new_status
    API_HEALTH.answered()
    for event in cond.events(old_status, new_status):
        message = redact(event.message, credentials)
        kopf.event(body, type=event.type, reason=event.reason, message=message)
        log.info("%s: %s", event.reason, message)
    _account(kind, uid, observation, started)


def _refs(found: Iterable[tuple[str, str, str]], first: str = "name") -> list[dict[str, str]]:
    """``status.secretEnv``/``secretFiles`` entries (as :func:`cond.build_status` writes them)."""
    return [{first: a, "secretName": b, "secretKey": c} for a, b, c in found]


async def _rollout_condition(body: Mapping[str, Any]) -> cond.Condition | None:
    """``Rollout`` for a store with ``spec.rollout``: a selector the CRD should have refused,
    or a named workload that does not exist (a typo would otherwise never roll the bots)."""
    if not (body.get("spec") or {}).get("rollout"):
        return None
    try:
        wanted = store_rollout(body)
    except SpecError as exc:
        return cond.rollout(exc)
    namespace = str((body.get("metadata") or {}).get("namespace"))
    missing = []
    for ref in wanted.workloads:
        exists = await kube().workload_exists(namespace, ref.kind, ref.name)
        _named[(namespace, ref.kind, ref.name)] = exists
        if not exists:
            missing.append(str(ref))
    return cond.rollout(None, missing, namespace=namespace)


#: ``(namespace, kind, name)`` of each workload a store names -> whether the last reconcile
#: found it. Its appearing (or going) re-checks the stores naming it at once, so
#: ``WorkloadNotFound`` clears when the workload is created, not a re-check interval later.
_named: dict[tuple[str, str, str], bool] = {}


def _named_workload_changed(kind: str) -> Any:
    def changed(event: Mapping[str, Any], namespace: str | None, name: str | None,
                **_: Any) -> bool:
        found = _named.get((namespace or "", kind, name or ""))
        return found is not None and found != (event.get("type") != "DELETED")

    return changed


async def on_named_workload(
    namespace: str | None, name: str | None, logger: Any, **kwargs: Any
) -> None:
    """A workload a store names appeared or went: re-check the stores that name it."""
    if not namespace:
        return
    for body in await kube().list_stores(namespace):
        named = ((body.get("spec") or {}).get("rollout") or {}).get("workloads") or []
        if any(isinstance(w, Mapping) and w.get("name") == name for w in named):
            await reconcile(
                kopf.Body(cast(kopf.RawBody, body)), body.get("status") or {}, logger,
                _indexes(kwargs),
            )


#: ``(namespace, ConfigMap)`` of each base a store's key is composed from -> the stores that
#: read it. A change of that ConfigMap (or its appearing) re-checks them at once, so
#: ``BaseNotFound`` clears and the composed file follows the base without waiting for a
#: re-check (the rollout sync rewrites the file and rolls the bots in the same moment).
_base_readers: dict[tuple[str, str], set[str]] = {}


def _is_a_base(namespace: str | None, name: str | None, **_: Any) -> bool:
    return bool(_base_readers.get((namespace or "", name or "")))


async def on_base_changed(
    namespace: str | None, name: str | None, logger: Any, **kwargs: Any
) -> None:
    """A ConfigMap some store's key is composed from changed: re-check those stores."""
    readers = _base_readers.get((namespace or "", name or ""), set())
    if not namespace or not readers:
        return
    for body in await kube().list_stores(namespace):
        if str((body.get("metadata") or {}).get("uid")) in readers:
            await reconcile(
                kopf.Body(cast(kopf.RawBody, body)), body.get("status") or {}, logger,
                _indexes(kwargs),
            )


def _account(kind: str, uid: str, observation: cond.Observation, started: float) -> None:
    parts = [observation.connected, observation.rendered]
    if observation.rollout is not None:
        parts.append(observation.rollout)
    ready = cond.ready(*parts)
    metrics.DURATION.labels(kind=kind).observe(time.perf_counter() - started)
    invalid = observation.connected.reason == "InvalidSpec"
    result = "ready" if ready.is_true else ("invalid" if invalid else "not_ready")
    metrics.RECONCILES.labels(kind=kind, result=result).inc()
    if not ready.is_true:
        metrics.FAILURES.labels(kind=kind, reason=ready.reason).inc()
    report = observation.report
    if report is not None and report.ok and report.latency_ms is not None:
        metrics.PROBE_LATENCY.labels(kind=kind, mode=report.mode).observe(
            report.latency_ms / 1000.0
        )
    metrics.record_ready(kind, uid, ready.is_true)


def _indexes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    ids = (*_INDEX_IDS.values(), *_BASE_INDEX_IDS.values())
    return {key: kwargs[key] for key in ids if key in kwargs}


async def on_change(body: kopf.Body, status: kopf.Status, logger: Any, **kwargs: Any) -> None:
    """Created, spec changed, or found at start-up: reconcile now."""
    await reconcile(body, status, logger, _indexes(kwargs))


#: Seconds a cancelled re-check gets to unwind (close its Redis connection) before the timer
#: stops waiting for it; see :func:`on_timer`.
CANCEL_GRACE: Final = 1.0


async def on_timer(body: kopf.Body, status: kopf.Status, logger: Any, **kwargs: Any) -> None:
    """The periodic re-check; cancelled as soon as kopf stops the timer.

    kopf removes its finalizer only once the store's timer has exited, and it stops a timer by
    setting ``stopped`` and waiting, for as long as the handler runs. A re-check dialling a
    Redis that never answers would so hold ``kubectl delete`` for the whole probe. The
    re-check therefore runs as a task that is cancelled the moment the store is being deleted
    (or the operator pauses or stops); a cancelled re-check writes nothing.
    """
    work = asyncio.ensure_future(reconcile(body, status, logger, _indexes(kwargs)))
    stop = asyncio.ensure_future(_stopped(kwargs["stopped"]))
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work}, timeout=CANCEL_GRACE)
            logger.info("re-check cancelled: the timer is stopping (store deleted or paused)")
    if work.done() and not work.cancelled():
        work.result()  # re-raise what the re-check raised, as before


#: Seconds between looks at a LockStore's ``status.transition.until``: its keys are removed
#: (or a held change rendered) within this, plus a reconcile, after the transition ends.
TRANSITION_POLL: Final = 1.0


def _in_transition(status: Mapping[str, Any], **_: Any) -> bool:
    return isinstance((status or {}).get("transition"), Mapping)


async def on_transition_timer(
    body: kopf.Body, status: kopf.Status, logger: Any, **kwargs: Any
) -> None:
    """A LockStore in transition: reconcile as soon as ``transition_until`` has passed.

    The render then drops the transition keys (no rollout: the checksum leaves them out) or
    starts the change that was held; the periodic re-check is far too coarse for that.
    """
    found = status.get("transition") if status else None
    raw: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    try:
        until = transition.parse_time(raw.get("until"))
    except SpecError:
        until = None  # a status we cannot read: reconcile, which rewrites it
    if until is not None and datetime.now(timezone.utc) < until:
        return
    await on_timer(body, status, logger, **kwargs)


async def _stopped(stopped: Any) -> None:  # kopf.DaemonStopped
    await stopped.wait()


async def finalize(body: kopf.Body, status: kopf.Status, logger: Any, **_: Any) -> None:
    """Remove the section this store wrote (only that), then let the store go."""
    kind = str(body.get("kind"))
    uid = str(body.get("metadata", {}).get("uid"))
    placed = status.get("configMap") if status else None
    try:
        store = parse_store(body)
    except SpecError:
        store = None
    try:
        if store is not None and isinstance(placed, Mapping) and placed.get("name"):
            await _remove_section(store, str(placed["name"]), configmap_key(placed))
    except OperatorError as exc:
        raise kopf.TemporaryError(
            f"could not remove the {kind}'s section: {exc.message}", delay=5
        ) from exc
    metrics.record_ready(kind, uid, None)
    for readers in _base_readers.values():
        readers.discard(uid)
    _locks.pop(uid, None)
    _written.pop(uid, None)
    _rendered.pop(uid, None)
    logger.info("removed the %s section", KINDS[kind].section if kind in KINDS else kind)


# ------------------------------------------------------------------ unwatched namespaces


async def _report_unwatched() -> None:
    while True:
        try:
            await unwatched.report_once(kube(), CONFIG.watched_namespaces)
        except OperatorError as exc:
            logger.warning("could not report stores in unwatched namespaces: %s", exc.message)
        await asyncio.sleep(CONFIG.recheck_interval)


_reporter: asyncio.Task[None] | None = None


@kopf.on.startup()
async def start_reporting_unwatched(**_: Any) -> None:
    """Namespaced and asked to (``TURNSTILE_REPORT_UNWATCHED``): mark stores nobody watches."""
    global _reporter  # noqa: PLW0603  (one loop per process)
    if CONFIG.report_unwatched and CONFIG.watched_namespaces and _reporter is None:
        _reporter = asyncio.create_task(_report_unwatched(), name="turnstile-unwatched-stores")


@kopf.on.cleanup()
async def stop_reporting_unwatched(**_: Any) -> None:
    global _reporter  # noqa: PLW0603
    if _reporter is not None:
        _reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _reporter
        _reporter = None


def _first_recheck(**_: Any) -> float:
    """Spread the stores' re-checks over the interval instead of firing them all at once."""
    return CONFIG.recheck_interval * random.uniform(0.5, 1.0)


def register(kinds: Iterable[str] = tuple(KINDS)) -> None:
    """Register the handlers for each kind with kopf's default registry."""
    kopf.on.event("v1", "configmaps", id="bases", when=_is_a_base)(on_base_changed)
    for workload_kind, plural in (("Deployment", "deployments"), ("StatefulSet", "statefulsets")):
        kopf.on.event(
            "apps", "v1", plural, id=f"named-{plural}",
            when=_named_workload_changed(workload_kind),
        )(on_named_workload)  # fmt: skip
    for kind in kinds:
        info = KINDS[kind]
        resource = (GROUP, VERSION, info.plural)
        kopf.index(*resource, id=_INDEX_IDS[kind])(_make_indexer(info.section))
        kopf.index(*resource, id=_BASE_INDEX_IDS[kind])(_base_indexer(kind))
        kopf.on.resume(*resource, id="reconcile")(on_change)
        kopf.on.create(*resource, id="reconcile")(on_change)
        kopf.on.update(*resource, id="reconcile", field="spec")(on_change)
        kopf.timer(
            *resource,
            id="recheck",
            interval=CONFIG.recheck_interval,
            initial_delay=_first_recheck,
        )(on_timer)
        kopf.on.delete(*resource, id="cleanup")(finalize)
        if info.section == transition.SECTION:
            kopf.timer(
                *resource, id="transition", interval=TRANSITION_POLL, when=_in_transition,
            )(on_transition_timer)  # fmt: skip


register()
