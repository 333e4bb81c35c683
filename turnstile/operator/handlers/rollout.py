"""kopf handlers that keep bot workloads rolled to the config they load.

Every event that could change what a workload loads -- a rendered ConfigMap, a referenced
Secret, a store's spec, a Deployment/StatefulSet appearing or changing its labels -- does one
thing: it *pokes* the event's namespace. A :class:`Debouncer` waits until that namespace has
been quiet for a settle window (``TURNSTILE_ROLLOUT_SETTLE_SECONDS``, default 1.5 s; never
longer than ``TURNSTILE_ROLLOUT_MAX_DELAY_SECONDS``, default 10 s, after the first poke) and
then runs :func:`sync_rollouts` once.

:func:`sync_rollouts` is level-triggered: it reads the namespace's current state, asks
:mod:`turnstile.operator.decide.rollout` for each workload's checksum and patch, and applies
only the patches that change something. Because it never depends on which events arrived (or were
missed while the operator was down), it can run any number of times: an operator restart or a
re-list finds every checksum already in place and patches nothing, and the stores of one
``kubectl apply`` land inside one settle window and roll each workload once.

Handlers here only filter events and poke; no handler writes to the object it watches, and
none uses kopf's persisted progress, so watching Deployments and Secrets leaves no
annotations on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Final

import kopf

from turnstile.operator.config import OperatorConfig
from turnstile.operator.decide import render, transition
from turnstile.operator.decide.configmaps import (
    Owner,
    Writer,
    base_of,
    base_text,
    corrected,
    recorded_secrets,
    writers,
)
from turnstile.operator.decide.launcher import plain_rasa_containers
from turnstile.operator.decide.rollout import (
    Snapshot,
    StoreRollout,
    Workload,
    WorkloadPlan,
    invalid_store,
    plan_namespace,
    referenced_secrets,
    status_entries,
    status_patch,
    store_rollout,
)
from turnstile.operator.handlers.debounce import DEFAULT_MAX_DELAY, DEFAULT_SETTLE, Debouncer
from turnstile.operator.kube.client import Kube
from turnstile.operator.model.errors import (
    ApiUnreachableError,
    BaseError,
    EndpointsYamlError,
    SpecError,
)
from turnstile.operator.model.kinds import (
    API_VERSION,
    GROUP,
    LOCK_STORE,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    OPT_IN_LABEL,
    OPT_IN_VALUE,
    TIMER_STORE,
    VERSION,
    WORKLOAD_API_VERSION,
)
from turnstile.operator.model.specs import configmap_base_name, parse_spec, parse_store

__all__ = ["Debouncer", "sync_rollouts"]

logger = logging.getLogger(__name__)


#: The Event reason for a workload kept on its config because a file it loads does not parse.
EVENT_UNPARSEABLE: Final = "EndpointsUnparseable"
SETTLE_ENV: Final = "TURNSTILE_ROLLOUT_SETTLE_SECONDS"
MAX_DELAY_ENV: Final = "TURNSTILE_ROLLOUT_MAX_DELAY_SECONDS"


def _seconds(env: str, default: float) -> float:
    raw = os.environ.get(env)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(env, "a number of seconds, e.g. 1.5", raw) from None
    if value < 0:
        raise SpecError(env, "a number of seconds >= 0", raw)
    return value


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------- sync


def _read_store(body: Mapping[str, Any]) -> StoreRollout:
    kind = str(body.get("kind", ""))
    parsed = parse_spec(kind, body.get("spec") or {})  # once, for the three renderings below
    return store_rollout(
        body,
        render.secret_env(kind, parsed),
        files=render.secret_files(kind, parsed),
        values=render.plain_env(kind, parsed),
    )


class _Referenced:
    """Which Secrets and ConfigMaps the stores of each namespace reference (event filters)."""

    def __init__(self) -> None:
        self.secrets: dict[str, set[str]] = {}
        self.config_maps: dict[str, set[str]] = {}

    def remember(
        self, namespace: str, stores: Iterable[tuple[Mapping[str, Any], StoreRollout]]
    ) -> None:
        stores = list(stores)
        self.secrets[namespace] = {r.name for _, s in stores for r in s.secrets}
        self.config_maps[namespace] = {s.config_map for _, s in stores if s.config_map} | {
            name for body, _ in stores if (name := _base_name(body.get("spec") or {}))
        }

    def namespaces(self) -> set[str]:
        """Every namespace a store has been seen in (a sync there is cheap when it has none)."""
        return set(self.secrets) | set(self.config_maps)

    def add_store(self, namespace: str, spec: Mapping[str, Any]) -> None:
        # Cheap and pessimistic: adding names never loses an event; the next sync trims.
        names = {r.name for r in referenced_secrets(spec)}
        cm = (spec.get("configMap") or {}).get("name")
        self.secrets.setdefault(namespace, set()).update(names)
        for name in (cm, _base_name(spec)):
            if isinstance(name, str):
                self.config_maps.setdefault(namespace, set()).add(name)


def _base_name(spec: Mapping[str, Any]) -> str | None:
    return configmap_base_name(spec.get("configMap"))


REFERENCED = _Referenced()


async def sync_rollouts(
    namespace: str, kube: Kube, *, now: str | None = None
) -> list[WorkloadPlan]:
    """Bring every workload selected by a store in ``namespace`` to its checksum.

    Returns the plans that were applied (for tests and the benchmark). Idempotent: a second
    call with unchanged state patches nothing and writes no status.
    """
    now = now or _now()
    stores = await _read_stores(kube, namespace)
    if stores is None:
        return []
    REFERENCED.remember(namespace, stores)
    if not any(s.workloads or s.selector is not None for _, s in stores):
        await _write_status(kube, namespace, stores, [], now, None)  # clears stale entries only
        return []

    listed = await kube.list_workloads(namespace)
    workloads = [Workload.from_body(kind, body) for kind, body in listed]
    notes = await _check_launchers(kube, namespace, stores, listed)
    config_maps = await _read_config_maps(kube, namespace, stores)
    transition_env: dict[tuple[str, str], tuple[tuple[str, str, str], ...]] = {}
    config_maps.update(await _revert_drift(kube, namespace, stores, transition_env))
    secrets, unmarked = await _read_secrets(kube, namespace, stores)
    snapshot = Snapshot(
        stores=tuple(s for _, s in stores),
        workloads=tuple(workloads),
        config_maps=config_maps,
        secrets=secrets,
        unmarked=frozenset(unmarked),
        transition_env=transition_env,
    )
    applied: list[WorkloadPlan] = []
    plans = plan_namespace(snapshot, now)
    await _warn_held(kube, namespace, plans, listed, stores)
    for plan in plans:
        if plan.patch is not None:
            result = await kube.patch_workload(
                namespace, plan.workload.kind, plan.workload.name, plan.patch
            )
            if result is None:
                logger.info(
                    "%s vanished before it could be rolled; forgetting it", plan.workload.ref
                )
                continue
            if plan.rolls:
                await _announce(kube, namespace, plan, result, stores)
        applied.append(plan)

    await _write_status(kube, namespace, stores, applied, now, notes)
    return applied


_Stores = list[tuple[Mapping[str, Any], StoreRollout]]


async def _read_stores(kube: Kube, namespace: str) -> _Stores | None:
    """The namespace's stores as ``(body, rollout)``; an invalid one (with an Event) as
    :func:`~turnstile.operator.decide.rollout.invalid_store`."""
    stores: _Stores = []
    for body in await kube.list_stores(namespace):
        uid = str((body.get("metadata") or {}).get("uid"))
        try:
            store = _read_store(body)
            _invalid_said.pop(uid, None)
        except SpecError as exc:
            # Only this store's rollouts stop: the workloads it could touch are held on what
            # they run (decide.rollout.invalid_store), the rest of the namespace keeps rolling.
            # Said once per problem: the periodic re-sync meets the same spec every interval.
            if _invalid_said.get(uid) != str(exc):
                _invalid_said[uid] = str(exc)
                meta = body.get("metadata") or {}
                logger.error(
                    "%s/%s: %s; not rolling the workloads it selects until fixed",
                    body.get("kind"),
                    meta.get("name"),
                    exc,
                )
                await kube.post_event(
                    namespace, body, "RolloutInvalid", str(exc), type_="Warning"
                )
            store = invalid_store(body, str(exc))
        stores.append((body, store))
    return stores


#: Store uid -> the spec problem already logged and posted as a ``RolloutInvalid`` Event.
_invalid_said: dict[str, str] = {}


async def _read_config_maps(
    kube: Kube, namespace: str, stores: _Stores
) -> dict[str, dict[str, str]]:
    config_maps: dict[str, dict[str, str]] = {}
    for name in sorted({s.config_map for _, s in stores if s.config_map}):
        data = await kube.config_map_data(namespace, name)
        if data is not None:
            config_maps[name] = data
    return config_maps


def _section_writers(stores: _Stores) -> dict[str, list[Writer]]:
    """The sections this namespace's stores write, as they render them now."""
    valid = []
    moved: dict[str, tuple[tuple[str, str, str], ...]] = {}
    for body, store in stores:
        if store.invalid is not None or (body.get("metadata") or {}).get("deletionTimestamp"):
            continue  # a store being deleted gets its section removed by its finalizer
        try:
            spec = parse_store(body)
        except SpecError:
            continue  # the store's reconcile reports it (InvalidSpec) and writes nothing
        meta = body.get("metadata") or {}
        owner = Owner(API_VERSION, spec.kind, spec.name, str(meta.get("uid") or spec.uid))
        valid.append((spec, owner))
        # The status still names the Secrets running pods were given until this change's
        # reconcile rewrites it; by then the transition (and what it renamed) is recorded.
        moved[owner.uid] = transition.moved_secrets(
            (body.get("status") or {}).get("secretEnv"), render.secret_env(spec.kind, spec)
        )
    return writers(valid, moved)


async def _revert_drift(
    kube: Kube,
    namespace: str,
    stores: _Stores,
    transition_env: dict[tuple[str, str], tuple[tuple[str, str, str], ...]],
) -> dict[str, dict[str, str]]:
    """Put every section a store owns back to what it renders, before any checksum is taken.

    A hand edit of such a section (or a spec change the store's reconcile has not written
    yet) is written as the store renders it, here, and the checksum is computed on what was
    written: bots are never rolled onto an edit that is about to be reverted. Returns the
    data of the ConfigMaps as they are afterwards, and fills ``transition_env`` with the
    previous Secrets' env vars their LockStore transitions name (from the same read).
    """
    after: dict[str, dict[str, str]] = {}
    for name, all_sections in sorted(_section_writers(stores).items()):
        wrote: list[bool] = []
        sections, bases = await _composable(kube, namespace, name, all_sections)
        if not sections:
            continue

        def decide(
            current: Mapping[str, Any] | None,
            name: str = name,
            sections: list[Writer] = sections,
            wrote: list[bool] = wrote,
            bases: dict[str, str] = bases,
        ) -> dict[str, Any] | None:
            if current is None and not bases:
                return None  # not created yet: the store's reconcile creates it
            try:
                new = corrected(
                    current, namespace=namespace, name=name, sections=sections,
                    now=datetime.now(timezone.utc), bases=bases,
                )  # fmt: skip
            except EndpointsYamlError:
                return None  # a file that does not parse is held below, not rewritten here
            wrote.append(new is not None)
            return new

        body = await kube.update_configmap(namespace, name, decide)
        if body is None:
            continue
        after[name] = dict(body.get("data") or {})
        for w in sections:
            named = recorded_secrets(body, w.key)
            if named:
                transition_env[(name, w.key)] = named
        if wrote and wrote[-1]:
            which = ", ".join(sorted({f"{w.key}/{w.section}" for w in sections}))
            logger.warning(
                "%s: ConfigMap %s differed from what its stores render (%s); put back before "
                "any rollout",
                namespace, name, which,
            )  # fmt: skip
    return after


async def _composable(
    kube: Kube, namespace: str, name: str, sections: list[Writer]
) -> tuple[list[Writer], dict[str, str]]:
    """The writers of ConfigMap ``name`` whose key can be written now, and per composed key
    the base's text. A key whose base is missing, does not load, or is disputed keeps what it
    holds (its stores' reconciles say why in ``ConfigRendered``): nothing of it is rolled."""
    keep: list[Writer] = []
    bases: dict[str, str] = {}
    for key in sorted({w.key for w in sections}):
        of_key = [w for w in sections if w.key == key]
        try:
            ref = base_of(of_key, key)
            if ref is not None:
                data = await kube.config_map_data(namespace, ref.name)
                bases[key] = base_text(
                    ref, data, namespace=namespace, composes=f"ConfigMap {name}"
                )
        except BaseError:
            continue
        keep.extend(of_key)
    return keep, bases


async def _read_secrets(
    kube: Kube, namespace: str, stores: _Stores
) -> tuple[dict[str, dict[str, str]], set[str]]:
    """The opted-in Secrets' data, and the names of those without the opt-in label."""
    secrets: dict[str, dict[str, str]] = {}
    unmarked: set[str] = set()
    for name in sorted({r.name for _, s in stores for r in s.secrets}):
        secret = await kube.secret(namespace, name)
        if secret is None:
            continue
        if secret.opted_in:
            secrets[name] = dict(secret.data)
        else:
            unmarked.add(name)
    if unmarked:
        logger.warning(
            "%s: not rolling workloads whose stores use Secrets without the label %s=%s: %s",
            namespace, OPT_IN_LABEL, OPT_IN_VALUE, ", ".join(sorted(unmarked)),
        )  # fmt: skip
    return secrets, unmarked


#: The hold last reported per workload, so a re-sync does not repeat the Events.
_HELD_WARNED: dict[tuple[str, str], str] = {}


async def _warn_held(
    kube: Kube,
    namespace: str,
    plans: Iterable[WorkloadPlan],
    listed: list[tuple[str, dict[str, Any]]],
    stores: _Stores,
) -> None:
    """A Warning Event on each workload kept on its current config, and on its stores, once
    per change: ``EndpointsUnparseable`` when a file it loads does not parse (or a store's
    spec cannot be read), ``MixedStoreFiles`` when its stores are written for different files."""
    bodies = {(kind, str((b.get("metadata") or {}).get("name"))): b for kind, b in listed}
    held_now = set()
    for plan in plans:
        key = (namespace, str(plan.workload.ref))
        if plan.held is None:
            continue
        held_now.add(key)
        if _HELD_WARNED.get(key) == plan.held:
            continue
        _HELD_WARNED[key] = plan.held
        logger.warning("%s/%s: %s", namespace, plan.workload.ref, plan.held)
        body = bodies.get((plan.workload.kind, plan.workload.name)) or {}
        await kube.post_event(
            namespace, {**body, "kind": plan.workload.kind, "apiVersion": WORKLOAD_API_VERSION},
            plan.held_reason or EVENT_UNPARSEABLE, plan.held, type_="Warning",
        )  # fmt: skip
        selected = {s.ref for s in plan.stores}
        for store_body, store in stores:
            if store.ref in selected:
                await kube.post_event(
                    namespace, {**store_body, "apiVersion": API_VERSION},
                    plan.held_reason or EVENT_UNPARSEABLE,
                    f"{plan.workload.ref}: {plan.held}", type_="Warning",
                )  # fmt: skip
    for key in [k for k in _HELD_WARNED if k[0] == namespace and k not in held_now]:
        del _HELD_WARNED[key]


#: The launcher warning last posted per workload, so a re-sync does not repeat the Events.
_LAUNCHER_WARNED: dict[tuple[str, str], str] = {}


async def _check_launchers(
    kube: Kube,
    namespace: str,
    stores: list[tuple[Mapping[str, Any], StoreRollout]],
    listed: list[tuple[str, dict[str, Any]]],
) -> dict[str, str]:
    """Warn (Event on the workload and its TimerStores, once per change) about bots that load
    Turnstile's timer store through plain ``rasa``; the notes go into the stores' status."""
    timer_stores = [(b, s) for b, s in stores if s.kind == "TimerStore"]
    notes: dict[str, str] = {}
    if not timer_stores:
        return notes
    for kind, body in listed:
        workload = Workload.from_body(kind, body)
        ref = str(workload.ref)
        files = {(s.config_map, s.config_key) for _, s in stores if s.selects(workload)}
        loading = [
            (b, s) for b, s in timer_stores
            if s.selects(workload) or (s.config_map, s.config_key) in files
        ]  # fmt: skip
        template = ((body.get("spec") or {}).get("template") or {}).get("spec")
        plain = plain_rasa_containers(template) if loading else []
        if not plain:
            _LAUNCHER_WARNED.pop((namespace, ref), None)
            continue
        message = plain[0].message(ref, [s.ref for _, s in loading])
        notes[ref] = message
        if _LAUNCHER_WARNED.get((namespace, ref)) == message:
            continue
        _LAUNCHER_WARNED[(namespace, ref)] = message
        logger.warning("%s: %s", namespace, message)
        await kube.post_event(
            namespace, {**body, "kind": kind, "apiVersion": WORKLOAD_API_VERSION},
            "TimerManagerMissing", message, type_="Warning",
        )  # fmt: skip
        for store_body, _ in loading:
            await kube.post_event(
                namespace, {**store_body, "apiVersion": API_VERSION},
                "TimerManagerMissing", message, type_="Warning",
            )  # fmt: skip
    return notes


async def _write_status(  # noqa: PLR0917 - one call site each, read in order
    kube: Kube,
    namespace: str,
    stores: list[tuple[Mapping[str, Any], StoreRollout]],
    applied: list[WorkloadPlan],
    now: str,
    notes: Mapping[str, str] | None,
) -> None:
    for store_body, store in stores:
        entries = status_entries(store, applied, now, notes)
        patch = status_patch(store_body.get("status"), entries)
        if patch is not None:
            await kube.patch_store_status(namespace, store.kind, store.name, patch)


async def _announce(
    kube: Kube,
    namespace: str,
    plan: WorkloadPlan,
    workload_body: Mapping[str, Any],
    stores: list[tuple[Mapping[str, Any], StoreRollout]],
) -> None:
    """One Event on the workload and one on each store that selects it."""
    short = plan.checksum.removeprefix("sha256:")[:12]
    before = (plan.workload.checksum or "none").removeprefix("sha256:")[:12]
    by = ", ".join(s.ref for s in plan.stores)
    what = f"config checksum {before} -> {short}" if plan.new_checksum else "injected env"
    logger.info("%s/%s: rolling %s for %s: %s", namespace, plan.workload.name,
                plan.workload.kind, by, what)  # fmt: skip
    await kube.post_event(
        namespace,
        {**workload_body, "kind": plan.workload.kind, "apiVersion": WORKLOAD_API_VERSION},
        "ConfigRollout",
        f"Rolling for {by}: {what}",
    )
    selected = {s.ref for s in plan.stores}
    for body, store in stores:
        if store.ref in selected:
            await kube.post_event(
                namespace,
                {**body, "apiVersion": API_VERSION},
                "WorkloadRolled",
                f"Rolled {plan.workload.ref}: {what}",
            )


# ------------------------------------------------------------------------------- wiring


class _Runtime:
    """The operator-lifetime state: one API client, one debouncer."""

    def __init__(self) -> None:
        self._kube: Kube | None = None
        self._debouncer: Debouncer | None = None

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = Kube.from_environment()
        return self._kube

    @property
    def debouncer(self) -> Debouncer:
        if self._debouncer is None:
            self._debouncer = Debouncer(
                self._sync,
                settle=_seconds(SETTLE_ENV, DEFAULT_SETTLE),
                max_delay=_seconds(MAX_DELAY_ENV, DEFAULT_MAX_DELAY),
                outage=lambda exc: isinstance(exc, ApiUnreachableError),
                reachable=self._answers,
            )
        return self._debouncer

    async def _answers(self) -> bool:
        return await self.kube.answers()

    async def _sync(self, namespace: str) -> None:
        try:
            await sync_rollouts(namespace, self.kube)
        except SpecError as exc:
            logger.error("rollout in %s: %s", namespace, exc)

    async def close(self) -> None:
        if self._debouncer is not None:
            await self._debouncer.close()
            self._debouncer = None


RUNTIME = _Runtime()


class _ChangeFilter:
    """Remembers one value per object (by uid) to tell a structural change from churn.

    Stores are remembered by ``metadata.generation`` (spec changes only, not status or kopf's
    own annotations), workloads by their labels and container start lines (not the replica
    counts a rollout updates).
    Used as a kopf ``when=`` filter so churn does not even invoke a handler. The decision is
    memoised per ``resourceVersion``, so evaluating the filter twice for one event is harmless.
    """

    def __init__(self, value: Callable[[Mapping[str, Any]], Any]) -> None:
        self._value = value
        self._seen: dict[str, tuple[Any, str, bool]] = {}

    def __call__(
        self,
        event: Mapping[str, Any],
        body: Mapping[str, Any],
        namespace: str | None,
        uid: str | None,
        **_: Any,
    ) -> bool:
        if not namespace:
            return False
        key = uid or ""
        kind = event.get("type")
        if kind == "DELETED":
            self._seen.pop(key, None)
            return True
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        value = self._value(body)
        previous = self._seen.get(key)
        if previous is not None and previous[1] == version:
            return previous[2]
        decision = kind in (None, "ADDED") or previous is None or previous[0] != value
        self._seen[key] = (value, version, decision)
        return decision


def _store_identity(body: Mapping[str, Any]) -> Any:
    spec = body.get("spec") or {}
    namespace = (body.get("metadata") or {}).get("namespace")
    if namespace:
        REFERENCED.add_store(namespace, spec)
    return ((body.get("metadata") or {}).get("generation"), json.dumps(spec, sort_keys=True))


def _workload_identity(body: Mapping[str, Any]) -> Any:
    """What a sync reads of a workload besides its checksum: its labels (selectors) and how
    its containers start (the launcher check), not the status churn of a rollout."""
    template = ((body.get("spec") or {}).get("template") or {}).get("spec") or {}
    starts = [
        (c.get("name"), c.get("image"), c.get("command"), c.get("args"))
        for c in template.get("containers") or [] if isinstance(c, Mapping)
    ]  # fmt: skip
    return (dict((body.get("metadata") or {}).get("labels") or {}), starts)


_store_changed = _ChangeFilter(_store_identity)
_workload_changed = _ChangeFilter(_workload_identity)


@kopf.on.event(GROUP, VERSION, LOCK_STORE.plural, when=_store_changed)
@kopf.on.event(GROUP, VERSION, TIMER_STORE.plural, when=_store_changed)
async def store_event(namespace: str | None, **_: Any) -> None:
    """A store appeared, changed its spec, or went away."""
    if namespace:
        RUNTIME.debouncer.poke(namespace)


def _config_map_relevant(
    labels: Mapping[str, str], name: str | None, namespace: str | None, **_: Any
) -> bool:
    if labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:
        return True
    return bool(namespace and name in REFERENCED.config_maps.get(namespace, ()))


@kopf.on.event("v1", "configmaps", when=_config_map_relevant)
async def config_map_event(namespace: str | None, **_: Any) -> None:
    """A rendered ConfigMap changed (or appeared, or went away)."""
    if namespace:
        RUNTIME.debouncer.poke(namespace)


def _secret_referenced(name: str | None, namespace: str | None, **_: Any) -> bool:
    return bool(namespace and name in REFERENCED.secrets.get(namespace, ()))


@kopf.on.event("v1", "secrets", when=_secret_referenced)
async def secret_event(namespace: str | None, **_: Any) -> None:
    """A Secret a store references changed: a rotated password rolls its workloads."""
    if namespace:
        RUNTIME.debouncer.poke(namespace)


@kopf.on.event("apps", "v1", "deployments", when=_workload_changed)
@kopf.on.event("apps", "v1", "statefulsets", when=_workload_changed)
async def workload_event(namespace: str | None, **_: Any) -> None:
    """A workload appeared, went away, or changed labels (selectors may now match it)."""
    if namespace:
        RUNTIME.debouncer.poke(namespace)


async def _resync_forever(interval: float) -> None:
    """Poke every namespace with stores once per re-check interval.

    Events say when something changed, not that something was changed back by hand: a
    hand-set checksum annotation on a workload (not a change the workload filter reacts to)
    or a hand edit nobody's event reached is corrected by this periodic sync, within one
    interval plus the settle window.
    """
    while True:
        await asyncio.sleep(interval)
        for namespace in sorted(REFERENCED.namespaces()):
            RUNTIME.debouncer.poke(namespace, change=False)


_resync: asyncio.Task[None] | None = None


@kopf.on.startup()
async def start_resync(**_: Any) -> None:
    global _resync  # noqa: PLW0603  (one loop per process)
    if _resync is None:
        interval = OperatorConfig.from_env().recheck_interval
        _resync = asyncio.create_task(_resync_forever(interval), name="turnstile-rollout-resync")


@kopf.on.cleanup()
async def stop_rollouts(**_: Any) -> None:
    """Cancel pending syncs; the next operator picks up from current state."""
    global _resync  # noqa: PLW0603
    if _resync is not None:
        _resync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _resync
        _resync = None
    await RUNTIME.close()
